//! What both Eureka registration targets check of an accepted registration: its rendered JSON
//! document is JSON, its rendered XML document is well-formed (our own reader accepts it), and
//! the string fields mean the same in both.

use a8registry::api::cache::Format;
use a8registry::api::eureka::render::instance_document;
use a8registry::api::eureka::xml::registration_to_json;
use a8registry::registry::instance::Instance;
use serde_json::Value;

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
    let json: Value = serde_json::from_slice(&json).expect("the JSON document is JSON");
    let xml = instance_document(Format::Xml, instance);
    let converted = registration_to_json(&xml).unwrap_or_else(|_| {
        panic!(
            "the XML document is refused: {}",
            String::from_utf8_lossy(&xml)
        )
    });
    let from_xml: Value = serde_json::from_str(&converted.json).expect("converted XML is JSON");
    for field in STRING_FIELDS {
        assert_eq!(
            from_xml["instance"][field],
            as_xml_carries_it(&json["instance"][field]),
            "{field} differs between the XML and the JSON document"
        );
    }
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
