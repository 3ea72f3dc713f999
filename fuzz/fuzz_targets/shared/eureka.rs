//! What both Eureka registration targets check of an accepted registration: its rendered JSON
//! document is JSON, its rendered XML document is well-formed (our own reader accepts it), and
//! the string fields mean the same in both.

use a8registry::api::cache::Format;
use a8registry::api::eureka::render::instance_document;
use a8registry::api::eureka::xml::registration_to_json;
use a8registry::registry::instance::Instance;
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::HashMap;

const STRING_FIELDS: [&str; 6] = [
    "instanceId",
    "hostName",
    "app",
    "ipAddr",
    "vipAddress",
    "status",
];

pub fn check_rendering(instance: &Instance) {
    let json = instance_document(Format::Json, instance);
    let json = instance_fields(&json).expect("the JSON document is JSON");
    let xml = instance_document(Format::Xml, instance);
    let converted = registration_to_json(&xml).unwrap_or_else(|_| {
        panic!(
            "the XML document is refused: {}",
            String::from_utf8_lossy(&xml)
        )
    });
    let from_xml = instance_fields(converted.json.as_bytes()).expect("converted XML is JSON");
    for field in STRING_FIELDS {
        assert_eq!(
            field_value(&from_xml, field),
            as_xml_carries_it(&field_value(&json, field)),
            "{field} differs between the XML and the JSON document"
        );
    }
}

type Fields = HashMap<String, Box<RawValue>>;

/// The fields of the document's `instance`, each kept as raw JSON: metadata is passed on as the
/// client sent it (the contract), and JSON allows numbers no `f64` holds (`5E888`), which a
/// `Value` refuses although the document is well-formed.
fn instance_fields(document: &[u8]) -> Result<Fields, serde_json::Error> {
    let mut outer: HashMap<String, Fields> = serde_json::from_slice(document)?;
    Ok(outer.remove("instance").unwrap_or_default())
}

fn field_value(fields: &Fields, field: &str) -> Value {
    fields.get(field).map_or(Value::Null, |raw| {
        serde_json::from_str(raw.get()).expect("a rendered field is JSON")
    })
}

/// A JSON string as XML 1.0 can carry it: the characters it forbids become U+FFFD.
fn as_xml_carries_it(value: &Value) -> Value {
    match value {
        Value::String(text) => Value::String(
            text.chars()
                .map(|c| {
                    let allowed = matches!(c, '\t' | '\n' | '\r')
                        || (c >= ' ' && c != '\u{fffe}' && c != '\u{ffff}');
                    if allowed {
                        c
                    } else {
                        '\u{fffd}'
                    }
                })
                .collect(),
        ),
        other => other.clone(),
    }
}
