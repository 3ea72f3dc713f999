//! Netflix's XML for Eureka (spec 4.7): reading a registration body into the JSON model of spec
//! 4.2, and the primitives the renderer writes with (escaping, metadata element names).
//!
//! The reader streams: it keeps no element tree, only the fields a registration has, each
//! repeated element replacing the one before (the last one wins). Every element, attribute and
//! reference is still checked, so a document that is not well-formed is refused wherever the
//! fault is. Metadata entries go into an indexed map, so a duplicate key costs constant time, and
//! once the keys alone make the metadata longer than [`MAX_METADATA_BYTES`] the entries are
//! dropped and no more are kept: the registration will be refused for its metadata whatever
//! follows.

use crate::api::json::{ordered_members, push_string, write_string, OrderedObject};
use crate::registry::instance::MAX_METADATA_BYTES;
use quick_xml::events::{BytesStart, Event};

/// The deepest element nesting accepted in an XML body (spec D15).
const MAX_XML_DEPTH: usize = 64;

/// The body is not an acceptable XML registration (400 `Failed to register instance`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid;

fn invalid<E>(_: E) -> Invalid {
    Invalid
}

/// A registration body converted to the JSON model.
#[derive(Debug)]
pub struct Converted {
    /// `{"instance":{…}}`, or `{}` for a root other than `<instance>`.
    pub json: String,
    /// The `<metadata>` was longer than its limit; it is left out of `json`.
    pub metadata_exceeded: bool,
}

/// The `<instance>` children whose text is a JSON string.
const STRING_FIELDS: [&str; 15] = [
    "instanceId",
    "hostName",
    "app",
    "appGroupName",
    "ipAddr",
    "vipAddress",
    "secureVipAddress",
    "status",
    "overriddenstatus",
    "homePageUrl",
    "statusPageUrl",
    "healthCheckUrl",
    "actionType",
    "lastDirtyTimestamp",
    "lastUpdatedTimestamp",
];

/// The `<leaseInfo>` children, all decimal integers.
const LEASE_FIELDS: [&str; 4] = [
    "renewalIntervalInSecs",
    "durationInSecs",
    "registrationTimestamp",
    "lastRenewalTimestamp",
];

/// The text of one occurrence of a leaf element; `Err` when it had child elements (a type
/// mismatch, which only counts if no later occurrence replaces it).
type LeafText = Result<String, Invalid>;

/// The text of the occurrence that counts, or the type mismatch it had.
fn leaf(value: &LeafText) -> Result<&str, Invalid> {
    value.as_deref().map_err(|e| *e)
}

/// What a leaf element's text is for.
#[derive(Debug)]
enum LeafKind {
    String(usize),
    CountryId,
    Port { secure: bool, enabled: bool },
    Lease(usize),
    DataCenterName,
    MetadataEntry(String),
}

/// The entries of one `<metadata>` element.
#[derive(Debug, Default)]
struct Metadata {
    entries: OrderedObject<String>,
    /// A lower bound of the JSON object's length: its keys with empty values.
    keys_bytes: usize,
    /// An entry had child elements.
    invalid: bool,
    /// The keys alone passed the limit; `entries` was dropped.
    exceeded: bool,
}

impl Metadata {
    fn insert(&mut self, key: String, value: String, bounded: bool) {
        if self.exceeded {
            return;
        }
        if self.entries.get(&key).is_none() {
            // `"key":""` and a separator, at the least; escapes only make it longer.
            self.keys_bytes += key.len() + 5;
            if bounded && 1 + self.keys_bytes > MAX_METADATA_BYTES {
                self.exceeded = true;
                self.entries = OrderedObject::default();
                return;
            }
        }
        self.entries.insert(&key, value);
    }

    /// `{"key":"value",…}` in document order.
    fn json(&self) -> Result<String, Invalid> {
        if self.invalid {
            return Err(Invalid);
        }
        Ok(self
            .entries
            .to_json_with(|out, value| write_string(out, value)))
    }
}

#[derive(Debug, Default)]
struct DataCenter {
    class: Option<String>,
    name: Option<LeafText>,
    metadata: Option<Metadata>,
}

/// An open element.
#[derive(Debug)]
enum Frame {
    Instance,
    /// Content that does not matter (unknown elements, a root other than `<instance>`).
    Ignored,
    Leaf {
        kind: LeafKind,
        text: String,
        has_children: bool,
    },
    DataCenter(DataCenter),
    Lease([Option<LeafText>; 4]),
    /// `in_data_center`: the data centre's metadata, which has no length limit.
    Metadata {
        metadata: Metadata,
        in_data_center: bool,
    },
}

/// The last occurrence of every field of the `<instance>`.
#[derive(Debug, Default)]
struct Fields {
    is_instance: bool,
    strings: [Option<LeafText>; 15],
    country_id: Option<LeafText>,
    port: Option<(LeafText, bool)>,
    secure_port: Option<(LeafText, bool)>,
    data_center: Option<DataCenter>,
    lease: Option<[Option<LeafText>; 4]>,
    metadata: Option<Metadata>,
}

/// Converts an XML registration to the JSON model of spec 4.2, refusing documents that are not
/// well-formed, DTDs, encodings other than UTF-8, entities other than the five predefined ones and
/// nesting deeper than 64. One pass; memory for the fields kept, not for the document.
pub fn registration_to_json(body: &[u8]) -> Result<Converted, Invalid> {
    let text = std::str::from_utf8(body).map_err(invalid)?;
    // A document holding a character XML 1.0 forbids (NUL, most C0 controls, U+FFFE, U+FFFF) is
    // not well-formed; the reader below does not check the characters of text and attributes.
    if !text.chars().all(is_xml_char) {
        return Err(Invalid);
    }
    let mut reader = quick_xml::Reader::from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut fields = Fields::default();
    let mut root_seen = false;
    loop {
        match reader.read_event().map_err(invalid)? {
            Event::Decl(decl) => {
                if let Some(encoding) = decl.encoding() {
                    let encoding = encoding.map_err(invalid)?;
                    if !encoding.eq_ignore_ascii_case("utf-8") {
                        return Err(Invalid);
                    }
                }
            }
            Event::DocType(_) => return Err(Invalid),
            Event::Start(start) => {
                open(&mut stack, &mut fields, &mut root_seen, &start)?;
            }
            Event::Empty(start) => {
                open(&mut stack, &mut fields, &mut root_seen, &start)?;
                close(&mut stack, &mut fields)?;
            }
            Event::End(_) => close(&mut stack, &mut fields)?,
            Event::Text(text) => {
                let content = text.xml10_content();
                match stack.last_mut() {
                    Some(frame) => append_text(frame, &content),
                    None if content.trim().is_empty() => {}
                    None => return Err(Invalid),
                }
            }
            Event::CData(data) => {
                let content = data.xml10_content();
                append_text(stack.last_mut().ok_or(Invalid)?, &content);
            }
            Event::GeneralRef(reference) => {
                let resolved = if reference.is_char_ref() {
                    reference
                        .resolve_char_ref()
                        .map_err(invalid)?
                        .filter(|c| is_xml_char(*c))
                        .ok_or(Invalid)?
                } else {
                    match reference.xml10_content().as_ref() {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        _ => return Err(Invalid),
                    }
                };
                let mut buffer = [0u8; 4];
                append_text(
                    stack.last_mut().ok_or(Invalid)?,
                    resolved.encode_utf8(&mut buffer),
                );
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() || !root_seen {
        return Err(Invalid);
    }
    fields.to_json()
}

/// A character of XML 1.0's `Char` production.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{fffe}' && c != '\u{ffff}')
}

fn append_text(frame: &mut Frame, content: &str) {
    if let Frame::Leaf { text, .. } = frame {
        text.push_str(content);
    }
}

/// Checks every attribute of an element; returns the value of `wanted`, if asked and present.
fn attributes(start: &BytesStart<'_>, wanted: Option<&str>) -> Result<Option<String>, Invalid> {
    let mut found = None;
    for attribute in start.attributes() {
        let attribute = attribute.map_err(invalid)?;
        let value = attribute
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(invalid)?;
        if wanted.is_some_and(|w| attribute.key.as_ref() == w) {
            found = Some(value.into_owned());
        }
    }
    Ok(found)
}

fn open(
    stack: &mut Vec<Frame>,
    fields: &mut Fields,
    root_seen: &mut bool,
    start: &BytesStart<'_>,
) -> Result<(), Invalid> {
    if stack.len() >= MAX_XML_DEPTH {
        return Err(Invalid);
    }
    let name = start.name();
    let name: &str = name.as_ref();
    let wanted = match (stack.last(), name) {
        (Some(Frame::Instance), "port" | "securePort") => Some("enabled"),
        (Some(Frame::Instance), "dataCenterInfo") => Some("class"),
        _ => None,
    };
    let attribute = attributes(start, wanted)?;
    let leaf_frame = |kind| Frame::Leaf {
        kind,
        text: String::new(),
        has_children: false,
    };
    let frame = match stack.last_mut() {
        None if *root_seen => return Err(Invalid),
        None => {
            *root_seen = true;
            if name == "instance" {
                fields.is_instance = true;
                Frame::Instance
            } else {
                Frame::Ignored
            }
        }
        Some(Frame::Instance) => match name {
            "countryId" => leaf_frame(LeafKind::CountryId),
            "port" | "securePort" => {
                let secure = name == "securePort";
                // Without the attribute Netflix's reader takes `port` as enabled and
                // `securePort` as disabled.
                let enabled = attribute.map_or(!secure, |v| v == "true");
                leaf_frame(LeafKind::Port { secure, enabled })
            }
            "dataCenterInfo" => Frame::DataCenter(DataCenter {
                class: attribute,
                ..DataCenter::default()
            }),
            "leaseInfo" => Frame::Lease(Default::default()),
            "metadata" => Frame::Metadata {
                metadata: Metadata::default(),
                in_data_center: false,
            },
            _ => match STRING_FIELDS.iter().position(|f| *f == name) {
                Some(slot) => leaf_frame(LeafKind::String(slot)),
                None => Frame::Ignored,
            },
        },
        Some(Frame::DataCenter(_)) => match name {
            "name" => leaf_frame(LeafKind::DataCenterName),
            "metadata" => Frame::Metadata {
                metadata: Metadata::default(),
                in_data_center: true,
            },
            _ => Frame::Ignored,
        },
        Some(Frame::Lease(_)) => match LEASE_FIELDS.iter().position(|f| *f == name) {
            Some(slot) => leaf_frame(LeafKind::Lease(slot)),
            None => Frame::Ignored,
        },
        Some(Frame::Metadata { .. }) => leaf_frame(LeafKind::MetadataEntry(decode_name(name))),
        Some(Frame::Leaf { has_children, .. }) => {
            *has_children = true;
            Frame::Ignored
        }
        Some(Frame::Ignored) => Frame::Ignored,
    };
    stack.push(frame);
    Ok(())
}

fn close(stack: &mut Vec<Frame>, fields: &mut Fields) -> Result<(), Invalid> {
    let frame = stack.pop().ok_or(Invalid)?;
    let parent = stack.last_mut();
    match frame {
        Frame::Instance | Frame::Ignored => {}
        Frame::Leaf {
            kind,
            text,
            has_children,
        } => {
            let value = if has_children { Err(Invalid) } else { Ok(text) };
            match (kind, parent) {
                (LeafKind::String(slot), _) => fields.strings[slot] = Some(value),
                (LeafKind::CountryId, _) => fields.country_id = Some(value),
                (LeafKind::Port { secure, enabled }, _) => {
                    let port = Some((value, enabled));
                    if secure {
                        fields.secure_port = port;
                    } else {
                        fields.port = port;
                    }
                }
                (LeafKind::Lease(slot), Some(Frame::Lease(lease))) => lease[slot] = Some(value),
                (LeafKind::DataCenterName, Some(Frame::DataCenter(dc))) => dc.name = Some(value),
                (
                    LeafKind::MetadataEntry(key),
                    Some(Frame::Metadata {
                        metadata,
                        in_data_center,
                    }),
                ) => match value {
                    Ok(value) => metadata.insert(key, value, !*in_data_center),
                    Err(_) => metadata.invalid = true,
                },
                _ => return Err(Invalid),
            }
        }
        Frame::DataCenter(dc) => fields.data_center = Some(dc),
        Frame::Lease(lease) => fields.lease = Some(lease),
        Frame::Metadata {
            metadata,
            in_data_center,
        } => match (in_data_center, parent) {
            (true, Some(Frame::DataCenter(dc))) => dc.metadata = Some(metadata),
            (false, _) => fields.metadata = Some(metadata),
            _ => return Err(Invalid),
        },
    }
    Ok(())
}

/// A decimal integer (surrounding whitespace allowed), as JSON text.
fn decimal(text: &str) -> Result<String, Invalid> {
    let trimmed = text.trim();
    let digits = trimmed.strip_prefix('-').unwrap_or(trimmed);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Invalid);
    }
    trimmed
        .parse::<i64>()
        .map(|n| n.to_string())
        .map_err(invalid)
}

fn port_json(text: &str, enabled: bool) -> String {
    let text = text.trim();
    let mut out = String::from("{\"$\":");
    match decimal(text) {
        Ok(number) => out.push_str(&number),
        Err(_) => push_string(&mut out, text),
    }
    out.push_str(if enabled {
        ",\"@enabled\":true}"
    } else {
        ",\"@enabled\":false}"
    });
    out
}

impl Fields {
    fn to_json(&self) -> Result<Converted, Invalid> {
        if !self.is_instance {
            return Ok(Converted {
                json: "{}".into(),
                metadata_exceeded: false,
            });
        }
        let mut members: OrderedObject<String> = OrderedObject::default();
        for (name, value) in STRING_FIELDS.iter().zip(&self.strings) {
            if let Some(value) = value {
                let mut text = String::new();
                push_string(&mut text, leaf(value)?);
                members.insert(name, text);
            }
        }
        if let Some(country) = &self.country_id {
            members.insert("countryId", decimal(leaf(country)?)?);
        }
        for (name, port) in [("port", &self.port), ("securePort", &self.secure_port)] {
            if let Some((text, enabled)) = port {
                members.insert(name, port_json(leaf(text)?, *enabled));
            }
        }
        if let Some(dc) = &self.data_center {
            let mut parts: OrderedObject<String> = OrderedObject::default();
            if let Some(class) = &dc.class {
                let mut text = String::new();
                push_string(&mut text, class);
                parts.insert("@class", text);
            }
            if let Some(name) = &dc.name {
                let mut text = String::new();
                push_string(&mut text, leaf(name)?);
                parts.insert("name", text);
            }
            if let Some(metadata) = &dc.metadata {
                parts.insert("metadata", metadata.json()?);
            }
            members.insert("dataCenterInfo", parts.to_json());
        }
        if let Some(lease) = &self.lease {
            let mut parts: OrderedObject<String> = OrderedObject::default();
            for (name, value) in LEASE_FIELDS.iter().zip(lease) {
                if let Some(value) = value {
                    parts.insert(name, decimal(leaf(value)?)?);
                }
            }
            members.insert("leaseInfo", parts.to_json());
        }
        let mut metadata_exceeded = false;
        if let Some(metadata) = &self.metadata {
            let json = metadata.json()?;
            if metadata.exceeded {
                metadata_exceeded = true;
            } else {
                members.insert("metadata", json);
            }
        }
        Ok(Converted {
            json: format!("{{\"instance\":{}}}", members.to_json()),
            metadata_exceeded,
        })
    }
}

/// Decodes a metadata element name as Netflix codes it, left to right: `__` → `_`, `_-` → `$`.
pub fn decode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('_', Some('_')) => {
                chars.next();
                out.push('_');
            }
            ('_', Some('-')) => {
                chars.next();
                out.push('$');
            }
            _ => out.push(c),
        }
    }
    out
}

/// A metadata key as a Netflix XML element name (`_` → `__`, `$` → `_-`), or `None` when the
/// result is still not a valid XML name.
pub fn encode_name(key: &str) -> Option<String> {
    let coded = key.replace('_', "__").replace('$', "_-");
    let mut chars = coded.chars();
    let first = chars.next()?;
    let name_start = |c: char| c.is_alphabetic() || c == '_';
    let name_char = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
    (name_start(first) && chars.all(name_char)).then_some(coded)
}

/// Escapes XML text, replacing characters XML 1.0 forbids with U+FFFD. Tab, LF and CR are
/// written as character references: a parser normalises them when they stand raw (CR LF and CR
/// become LF, and in attributes all three become spaces), and the value must read back whole.
pub fn escape_text(out: &mut Vec<u8>, text: &str) {
    escape(out, text, false);
}

/// Escapes an attribute value (as text, plus `"`).
pub fn escape_attribute(out: &mut Vec<u8>, text: &str) {
    escape(out, text, true);
}

fn escape(out: &mut Vec<u8>, text: &str, attribute: bool) {
    for c in text.chars() {
        match c {
            '&' => out.extend_from_slice(b"&amp;"),
            '<' => out.extend_from_slice(b"&lt;"),
            '>' => out.extend_from_slice(b"&gt;"),
            '"' if attribute => out.extend_from_slice(b"&quot;"),
            '\t' => out.extend_from_slice(b"&#9;"),
            '\n' => out.extend_from_slice(b"&#10;"),
            '\r' => out.extend_from_slice(b"&#13;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {
                out.extend_from_slice("\u{fffd}".as_bytes())
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// `<name>text</name>`, the text escaped.
pub fn element(out: &mut Vec<u8>, name: &str, text: &str) {
    out.push(b'<');
    out.extend_from_slice(name.as_bytes());
    out.push(b'>');
    escape_text(out, text);
    out.extend_from_slice(b"</");
    out.extend_from_slice(name.as_bytes());
    out.push(b'>');
}

/// The XML form of a metadata object (one element per key, in the object's order); nothing for a
/// value that is not an object, Netflix's empty-map marker for an empty one.
pub fn write_metadata(out: &mut Vec<u8>, json: &str) {
    let Some(members) = ordered_members(json) else {
        return;
    };
    if members.is_empty() {
        out.extend_from_slice(b"<metadata class=\"java.util.Collections$EmptyMap\"/>");
        return;
    }
    out.extend_from_slice(b"<metadata>");
    for (key, value) in members.iter() {
        let Some(name) = encode_name(key) else {
            continue;
        };
        match serde_json::from_slice::<String>(value.as_bytes()) {
            Ok(text) => element(out, &name, &text),
            Err(_) => element(out, &name, value),
        }
    }
    out.extend_from_slice(b"</metadata>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(xml: &str) -> Result<Converted, Invalid> {
        registration_to_json(xml.as_bytes())
    }

    #[test]
    fn fields_become_the_json_model() {
        let converted = convert(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<instance>
  <hostName>h&amp;<![CDATA[<x>]]>&#65;</hostName>
  <unknown a="1"><deep><er/></deep></unknown>
  <port>80</port>
  <securePort>x43</securePort>
  <countryId> 7 </countryId>
  <dataCenterInfo class="c"><name>Amazon</name><metadata><instance-id>i-1</instance-id></metadata></dataCenterInfo>
  <leaseInfo><durationInSecs>9</durationInSecs><evictionTimestamp>x</evictionTimestamp></leaseInfo>
  <metadata class="java.util.Collections$EmptyMap"><a__b>1</a__b><c_-d/><a__b>2</a__b></metadata>
</instance>"#,
        )
        .unwrap();
        assert!(!converted.metadata_exceeded);
        let value: serde_json::Value = serde_json::from_slice(converted.json.as_bytes()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"instance":{
                "hostName":"h&<x>A",
                "countryId":7,
                "port":{"$":80,"@enabled":true},
                "securePort":{"$":"x43","@enabled":false},
                "dataCenterInfo":{"@class":"c","name":"Amazon","metadata":{"instance-id":"i-1"}},
                "leaseInfo":{"durationInSecs":9},
                "metadata":{"a_b":"2","c$d":""}
            }})
        );
        assert!(converted
            .json
            .contains(r#""metadata":{"a_b":"2","c$d":""}"#));
    }

    #[test]
    fn the_last_occurrence_wins() {
        let converted =
            convert("<instance><hostName><x/></hostName><hostName>h</hostName><metadata><a><b/></a></metadata><metadata/></instance>")
                .unwrap();
        assert_eq!(
            converted.json,
            r#"{"instance":{"hostName":"h","metadata":{}}}"#
        );
        for bad in [
            "<instance><hostName>h</hostName><hostName><x/></hostName></instance>",
            "<instance><metadata><a>1</a><a><b/></a></metadata></instance>",
            "<instance><leaseInfo><durationInSecs>1.5</durationInSecs></leaseInfo></instance>",
        ] {
            assert_eq!(convert(bad).unwrap_err(), Invalid, "{bad}");
        }
    }

    #[test]
    fn other_roots_give_an_empty_object() {
        assert_eq!(
            convert("<application><x/></application>").unwrap().json,
            "{}"
        );
        assert_eq!(convert("<application>").unwrap_err(), Invalid);
    }

    #[test]
    fn metadata_past_its_limit_is_dropped_early() {
        let mut xml = String::from("<instance><metadata>");
        for i in 0..200_000 {
            xml.push_str(&format!("<k{i}/>"));
        }
        xml.push_str("</metadata></instance>");
        let converted = convert(&xml).unwrap();
        assert!(converted.metadata_exceeded);
        assert_eq!(converted.json, r#"{"instance":{}}"#);
        // Keys that repeat are one key: this one is small.
        let repeated = format!(
            "<instance><metadata>{}</metadata></instance>",
            "<same>v</same>".repeat(100_000)
        );
        let converted = convert(&repeated).unwrap();
        assert!(!converted.metadata_exceeded);
        assert_eq!(converted.json, r#"{"instance":{"metadata":{"same":"v"}}}"#);
        // A type mismatch after the limit still makes the body invalid.
        let mismatch = xml.replace("</metadata>", "<bad><x/></bad></metadata>");
        assert_eq!(convert(&mismatch).unwrap_err(), Invalid);
        // The data centre's metadata has no limit.
        let dc = xml
            .replace("<metadata>", "<dataCenterInfo><metadata>")
            .replace("</metadata>", "</metadata></dataCenterInfo>");
        let converted = convert(&dc).unwrap();
        assert!(!converted.metadata_exceeded);
        assert!(converted.json.contains("\"k199999\":\"\""));
    }

    #[test]
    fn hostile_documents_are_refused() {
        let deep = format!(
            "<instance>{}{}</instance>",
            "<x>".repeat(64),
            "</x>".repeat(64)
        );
        for bad in [
            r#"<!DOCTYPE x [<!ENTITY e "e">]><instance>&e;</instance>"#,
            "<instance>&ext;</instance>",
            "<instance><x a=\"&ext;\"/></instance>",
            "<instance><x a=\"1\" a=\"2\"/></instance>",
            "<instance><hostName>h</instance>",
            "<instance>",
            "not xml",
            "<instance/>x",
            r#"<?xml version="1.0" encoding="ISO-8859-1"?><instance/>"#,
            "<instance/><instance/>",
            deep.as_str(),
        ] {
            assert_eq!(convert(bad).unwrap_err(), Invalid, "{bad}");
        }
        assert_eq!(
            convert(&deep.replacen("<x>", "", 1).replacen("</x>", "", 1))
                .unwrap()
                .json,
            r#"{"instance":{}}"#
        );
    }

    #[test]
    fn names_are_coded_as_netflix_codes_them() {
        assert_eq!(
            encode_name("management_port").as_deref(),
            Some("management__port")
        );
        assert_eq!(encode_name("a$b").as_deref(), Some("a_-b"));
        assert_eq!(
            encode_name("amalgam8.tags").as_deref(),
            Some("amalgam8.tags")
        );
        for bad in ["", "1a", "-a", ".a", "a b", "a:b"] {
            assert_eq!(encode_name(bad), None, "{bad}");
        }
        for key in ["management_port", "a$b", "_-", "a___-b", "$_$", "__"] {
            let coded = encode_name(&format!("k{key}")).unwrap();
            assert_eq!(decode_name(&coded), format!("k{key}"), "{coded}");
        }
    }

    #[test]
    fn metadata_is_written_in_order() {
        let mut out = Vec::new();
        write_metadata(&mut out, r#"{"z":"1","a":{"n":2},"bad key":"x","e":"<&>"}"#);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"<metadata><z>1</z><a>{"n":2}</a><e>&lt;&amp;&gt;</e></metadata>"#
        );
        let mut empty = Vec::new();
        write_metadata(&mut empty, "{}");
        assert_eq!(
            empty,
            br#"<metadata class="java.util.Collections$EmptyMap"/>"#
        );
        let mut none = Vec::new();
        write_metadata(&mut none, "[1]");
        assert!(none.is_empty());
    }

    #[test]
    fn control_characters_are_replaced() {
        let mut out = Vec::new();
        escape_attribute(&mut out, "a\u{1}b\tc\"");
        assert_eq!(String::from_utf8(out).unwrap(), "a\u{fffd}b&#9;c&quot;");
    }

    #[test]
    fn characters_xml_forbids_make_the_document_invalid() {
        for xml in [
            "<instance><hostName>a\u{0}b</hostName></instance>",
            "<instance><hostName>a\u{1}b</hostName></instance>",
            "<instance a=\"\u{0}\"><hostName>h</hostName></instance>",
            "<instance><hostName>a&#0;b</hostName></instance>",
            "<instance><hostName>a&#xFFFE;b</hostName></instance>",
            "<instance><!-- \u{0} --></instance>",
        ] {
            assert!(convert(xml).is_err(), "{xml:?} was accepted");
        }
        let kept = convert("<instance><hostName>a&#9;b\tc</hostName></instance>").unwrap();
        assert_eq!(kept.json, r#"{"instance":{"hostName":"a\tb\tc"}}"#);
    }

    #[test]
    fn tab_line_feed_and_carriage_return_are_character_references() {
        let mut text = Vec::new();
        escape_text(&mut text, "a\tb\nc\rd\r\n");
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "a&#9;b&#10;c&#13;d&#13;&#10;"
        );
        let mut attribute = Vec::new();
        escape_attribute(&mut attribute, "x\ty\nz\r");
        assert_eq!(String::from_utf8(attribute).unwrap(), "x&#9;y&#10;z&#13;");
    }
}
