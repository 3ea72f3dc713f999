//! Eureka registrations: decoding JSON and XML bodies, validating them in the order of spec 4.4,
//! and mapping them to registry instances (spec 4.5).
//!
//! XML bodies are first converted to the JSON model of spec 4.2, so both formats share one decoder
//! and one set of rules.

use super::super::amalgam8::{nesting_within, MAX_JSON_DEPTH};
use crate::registry::instance::{Endpoint, EndpointType, Extension, Instance};
use quick_xml::events::Event;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// TTL of a Eureka registration that gives no `leaseInfo.durationInSecs` (spec 4.5).
const DEFAULT_DURATION_SECS: u32 = 90;

/// A port as registered: `$` keeps its JSON type, so numbers come back as numbers.
#[derive(Clone, Debug, PartialEq)]
pub enum PortNumber {
    Number(serde_json::Number),
    Text(String),
}

impl PortNumber {
    /// The natural text form (`8080`, or a string as given).
    pub fn text(&self) -> String {
        match self {
            PortNumber::Number(n) => n.to_string(),
            PortNumber::Text(t) => t.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Port {
    pub enabled: bool,
    pub number: Option<PortNumber>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct DataCenter {
    pub class: Option<String>,
    pub name: Option<String>,
    /// The raw JSON text of the `metadata` object.
    pub metadata: Option<String>,
}

/// The registration fields kept with a Eureka-registered instance and laid over the defaults when
/// it is rendered (spec 4.6 step 2). Kept in the instance's [`Extension`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Registration {
    pub instance_id: Option<String>,
    pub host_name: String,
    pub app: String,
    pub app_group_name: Option<String>,
    pub ip_addr: String,
    pub vip_address: String,
    pub secure_vip_address: Option<String>,
    pub country_id: Option<i64>,
    pub port: Option<Port>,
    pub secure_port: Option<Port>,
    pub home_page_url: Option<String>,
    pub status_page_url: Option<String>,
    pub health_check_url: Option<String>,
    pub data_center: Option<DataCenter>,
}

impl Registration {
    /// The registration kept in an instance, if it was registered through Eureka.
    pub fn of(instance: &Instance) -> Option<&Registration> {
        instance
            .extension
            .as_ref()?
            .0
            .downcast_ref::<Registration>()
    }
}

/// Why a registration was refused (spec 4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// 400 `Failed to register instance`.
    Invalid,
    /// 400 `Missing required field(s): hostname, application, vipAddress or IPAddress`.
    MissingFields,
    /// 400 `Application name mismatch`.
    AppMismatch,
}

type Members<'a> = HashMap<String, &'a RawValue>;

/// An object, or a one-element array holding one (spec D10); `null` is `None`.
fn one_object(raw: &RawValue) -> Result<Option<Members<'_>>, RegisterError> {
    let text = raw.get();
    if text == "null" {
        return Ok(None);
    }
    if text.starts_with('[') {
        let items: Vec<&RawValue> =
            serde_json::from_str(text).map_err(|_| RegisterError::Invalid)?;
        return match items.as_slice() {
            [only] => one_object(only),
            _ => Err(RegisterError::Invalid),
        };
    }
    serde_json::from_str::<Members<'_>>(text)
        .map(Some)
        .map_err(|_| RegisterError::Invalid)
}

/// The raw text of an object given as itself or as a one-element array; `Err(())` otherwise.
fn one_object_text(raw: &RawValue) -> Result<Option<String>, ()> {
    let text = raw.get();
    if text == "null" {
        return Ok(None);
    }
    if text.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|_| ())?;
        return match items.as_slice() {
            [only] => one_object_text(only),
            _ => Err(()),
        };
    }
    if text.starts_with('{') {
        Ok(Some(text.to_string()))
    } else {
        Err(())
    }
}

fn field<'a, T: serde::Deserialize<'a>>(
    members: &Members<'a>,
    key: &str,
) -> Result<Option<T>, RegisterError> {
    match members.get(key) {
        None => Ok(None),
        Some(raw) => {
            serde_json::from_str::<Option<T>>(raw.get()).map_err(|_| RegisterError::Invalid)
        }
    }
}

fn port(members: &Members<'_>, key: &str) -> Result<Option<Port>, RegisterError> {
    let Some(raw) = members.get(key) else {
        return Ok(None);
    };
    let Some(port) = one_object(raw)? else {
        return Ok(None);
    };
    let number = match port.get("$").map(|r| r.get()) {
        None | Some("null") => None,
        Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Number(n)) => Some(PortNumber::Number(n)),
            Ok(serde_json::Value::String(s)) => Some(PortNumber::Text(s)),
            _ => return Err(RegisterError::Invalid),
        },
    };
    let enabled = match port.get("@enabled").map(|r| r.get()) {
        None | Some("null") => false,
        Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Bool(b)) => b,
            Ok(serde_json::Value::String(s)) => s == "true",
            _ => return Err(RegisterError::Invalid),
        },
    };
    Ok(Some(Port { enabled, number }))
}

/// Decodes and validates a registration body for the app of the path, in the order of spec 4.4.
pub fn decode(body: &[u8], is_xml: bool, path_app: &str) -> Result<Instance, RegisterError> {
    let json;
    let body = if is_xml {
        json = xml_to_json(body)?;
        json.as_bytes()
    } else {
        body
    };
    if !nesting_within(body, MAX_JSON_DEPTH) {
        return Err(RegisterError::Invalid);
    }
    let text = std::str::from_utf8(body).map_err(|_| RegisterError::Invalid)?;
    let top: Members<'_> = serde_json::from_str::<Option<Members<'_>>>(text)
        .map_err(|_| RegisterError::Invalid)?
        .unwrap_or_default();
    let instance = match top.get("instance") {
        None => None,
        Some(raw) => one_object(raw)?,
    };

    // Step 1: every type is checked before any field is judged.
    let present = instance.is_some();
    let members = instance.unwrap_or_default();
    let instance_id: Option<String> = field(&members, "instanceId")?;
    let host_name: Option<String> = field(&members, "hostName")?;
    let app: Option<String> = field(&members, "app")?;
    let app_group_name: Option<String> = field(&members, "appGroupName")?;
    let ip_addr: Option<String> = field(&members, "ipAddr")?;
    let vip_address: Option<String> = field(&members, "vipAddress")?;
    let secure_vip_address: Option<String> = field(&members, "secureVipAddress")?;
    let status: Option<String> = field(&members, "status")?;
    field::<String>(&members, "overriddenstatus")?;
    field::<String>(&members, "actionType")?;
    let country_id: Option<i64> = field(&members, "countryId")?;
    let port_plain = port(&members, "port")?;
    let port_secure = port(&members, "securePort")?;
    let home_page_url: Option<String> = field(&members, "homePageUrl")?;
    let status_page_url: Option<String> = field(&members, "statusPageUrl")?;
    let health_check_url: Option<String> = field(&members, "healthCheckUrl")?;
    let data_center = match members.get("dataCenterInfo") {
        None => None,
        Some(raw) => match one_object(raw)? {
            None => None,
            Some(dc) => Some(DataCenter {
                class: field(&dc, "@class")?,
                name: field(&dc, "name")?,
                metadata: match dc.get("metadata") {
                    None => None,
                    Some(raw) => one_object_text(raw).map_err(|_| RegisterError::Invalid)?,
                },
            }),
        },
    };
    let (renewal_interval, duration) = match members.get("leaseInfo") {
        None => (None, None),
        Some(raw) => match one_object(raw)? {
            None => (None, None),
            Some(lease) => {
                field::<i64>(&lease, "registrationTimestamp")?;
                field::<i64>(&lease, "lastRenewalTimestamp")?;
                (
                    field::<u32>(&lease, "renewalIntervalInSecs")?,
                    field::<u32>(&lease, "durationInSecs")?,
                )
            }
        },
    };
    let dirty_millis =
        members.get("lastDirtyTimestamp").and_then(|raw| {
            match serde_json::from_str::<serde_json::Value>(raw.get()) {
                Ok(serde_json::Value::Number(n)) => n.as_i64(),
                Ok(serde_json::Value::String(s))
                    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    s.parse().ok()
                }
                _ => None,
            }
        });
    // Metadata of the wrong type is judged at step 8, after the required fields.
    let metadata = match members.get("metadata") {
        None => Ok(None),
        Some(raw) => one_object_text(raw),
    };

    // Steps 2 to 5.
    if !present {
        return Err(RegisterError::MissingFields);
    }
    let app = app
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| path_app.to_string());
    let required = [&host_name, &ip_addr, &vip_address];
    if app.is_empty()
        || required
            .iter()
            .any(|f| f.as_deref().unwrap_or("").is_empty())
    {
        return Err(RegisterError::MissingFields);
    }
    if app != path_app {
        return Err(RegisterError::AppMismatch);
    }
    let host_name = host_name.unwrap_or_default();

    // Step 6: the instance id.
    let resolved_id = match instance_id.as_deref() {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => resolve_id(data_center.as_ref(), &host_name)?,
    };

    // Step 8: metadata must be an object, null or absent.
    let metadata = metadata
        .map_err(|_| RegisterError::Invalid)?
        .unwrap_or_else(|| "{}".into());
    let metadata = RawValue::from_string(metadata).map_err(|_| RegisterError::Invalid)?;
    let tags = tags_of(&metadata);

    let endpoint = endpoint_of(&host_name, port_plain.as_ref(), port_secure.as_ref());
    let duration = duration.filter(|d| *d > 0).unwrap_or(DEFAULT_DURATION_SECS);
    let id = format!("{app}:{resolved_id}");
    let mut instance = Instance::new(
        &id,
        &app,
        endpoint,
        status.as_deref().unwrap_or(""),
        Duration::from_secs(u64::from(duration)),
    );
    instance.metadata = Some(metadata);
    instance.tags = tags;
    instance.renewal_interval_secs = renewal_interval.filter(|r| *r > 0).unwrap_or(30);
    instance.dirty_unix_millis = dirty_millis.unwrap_or(0);
    instance.extension = Some(Extension(Arc::new(Registration {
        instance_id: instance_id.filter(|i| !i.is_empty()),
        host_name,
        app,
        app_group_name,
        ip_addr: ip_addr.unwrap_or_default(),
        vip_address: vip_address.unwrap_or_default(),
        secure_vip_address,
        country_id,
        port: port_plain,
        secure_port: port_secure,
        home_page_url,
        status_page_url,
        health_check_url,
        data_center,
    })));
    Ok(instance)
}

/// Spec 4.4 step 6: the id when the registration gives no `instanceId`.
fn resolve_id(data_center: Option<&DataCenter>, host_name: &str) -> Result<String, RegisterError> {
    let Some(dc) = data_center else {
        return Ok(host_name.to_string());
    };
    let name = dc.name.as_deref().unwrap_or("");
    let metadata_value = |key: &str| -> Option<serde_json::Value> {
        let metadata: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(dc.metadata.as_deref()?).ok()?;
        metadata.get(key).cloned()
    };
    if name.eq_ignore_ascii_case("MyOwn") || name.eq_ignore_ascii_case("Netflix") {
        Ok(host_name.to_string())
    } else if name.eq_ignore_ascii_case("Amazon") {
        Ok(match metadata_value("instance-id") {
            Some(serde_json::Value::String(id)) if !id.is_empty() => id,
            _ => host_name.to_string(),
        })
    } else if name.eq_ignore_ascii_case("SoftLayer") {
        Ok(match metadata_value("getId") {
            Some(serde_json::Value::String(id)) => id,
            Some(serde_json::Value::Number(n)) => match n.as_i64() {
                Some(i) => i.to_string(),
                None => format!("{:.0}", n.as_f64().unwrap_or(0.0)),
            },
            _ => host_name.to_string(),
        })
    } else {
        Err(RegisterError::Invalid)
    }
}

/// Spec 4.5: `https host:securePort` if the secure port is enabled, else `tcp host:port` if the
/// port is, else `tcp host`. Built from `hostName`, as the original did.
fn endpoint_of(host_name: &str, port: Option<&Port>, secure_port: Option<&Port>) -> Endpoint {
    let with_port = |p: &Port| match &p.number {
        Some(n) => format!("{host_name}:{}", n.text()),
        None => host_name.to_string(),
    };
    match (
        secure_port.filter(|p| p.enabled),
        port.filter(|p| p.enabled),
    ) {
        (Some(secure), _) => Endpoint {
            kind: EndpointType::Https,
            value: with_port(secure),
        },
        (None, Some(plain)) => Endpoint {
            kind: EndpointType::Tcp,
            value: with_port(plain),
        },
        (None, None) => Endpoint {
            kind: EndpointType::Tcp,
            value: host_name.to_string(),
        },
    }
}

/// Tags from `metadata["amalgam8.tags"]` (spec 4.5): trimmed; `;` counts as `,`; pieces trimmed;
/// empty pieces kept.
pub fn tags_of(metadata: &RawValue) -> Vec<String> {
    let Ok(members) = serde_json::from_str::<Members<'_>>(metadata.get()) else {
        return Vec::new();
    };
    let Some(raw) = members.get("amalgam8.tags") else {
        return Vec::new();
    };
    let text = match serde_json::from_str::<serde_json::Value>(raw.get()) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Null) | Err(_) => return Vec::new(),
        Ok(other) => other.to_string(),
    };
    let text = text.trim();
    if text.is_empty() {
        return Vec::new();
    }
    text.replace(';', ",")
        .split(',')
        .map(|piece| piece.trim().to_string())
        .collect()
}

/// The deepest element nesting accepted in an XML body (spec D15).
const MAX_XML_DEPTH: usize = 64;

/// One element of an XML body.
#[derive(Default)]
struct Element {
    name: String,
    attributes: Vec<(String, String)>,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The last child with this name (a repeated element: the last one wins).
    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().rev().find(|c| c.name == name)
    }
}

fn xml_error<E>(_: E) -> RegisterError {
    RegisterError::Invalid
}

/// Parses an XML body into its root element, refusing DTDs, foreign encodings, entities other than
/// the five predefined ones and nesting deeper than [`MAX_XML_DEPTH`].
fn parse_xml(body: &[u8]) -> Result<Element, RegisterError> {
    let text = std::str::from_utf8(body).map_err(xml_error)?;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let event = reader.read_event().map_err(xml_error)?;
        match event {
            Event::Decl(decl) => {
                if let Some(encoding) = decl.encoding() {
                    let encoding = encoding.map_err(xml_error)?;
                    if !encoding.eq_ignore_ascii_case("utf-8") {
                        return Err(RegisterError::Invalid);
                    }
                }
            }
            Event::DocType(_) => return Err(RegisterError::Invalid),
            Event::Start(start) | Event::Empty(start) if root.is_some() => {
                let _ = start;
                return Err(RegisterError::Invalid);
            }
            Event::Start(start) => {
                if stack.len() >= MAX_XML_DEPTH {
                    return Err(RegisterError::Invalid);
                }
                stack.push(element_of(&start)?);
            }
            Event::Empty(start) => {
                if stack.len() >= MAX_XML_DEPTH {
                    return Err(RegisterError::Invalid);
                }
                let element = element_of(&start)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Event::End(_) => {
                let element = stack.pop().ok_or(RegisterError::Invalid)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Event::Text(text) => {
                let content = text.xml10_content();
                match stack.last_mut() {
                    Some(current) => current.text.push_str(&content),
                    None if content.trim().is_empty() => {}
                    None => return Err(RegisterError::Invalid),
                }
            }
            Event::CData(data) => {
                let content = data.xml10_content();
                stack
                    .last_mut()
                    .ok_or(RegisterError::Invalid)?
                    .text
                    .push_str(&content);
            }
            Event::GeneralRef(reference) => {
                let resolved = if reference.is_char_ref() {
                    reference
                        .resolve_char_ref()
                        .map_err(xml_error)?
                        .ok_or(RegisterError::Invalid)?
                } else {
                    match reference.xml10_content().as_ref() {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        _ => return Err(RegisterError::Invalid),
                    }
                };
                stack
                    .last_mut()
                    .ok_or(RegisterError::Invalid)?
                    .text
                    .push(resolved);
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(RegisterError::Invalid);
    }
    root.ok_or(RegisterError::Invalid)
}

fn element_of(start: &quick_xml::events::BytesStart<'_>) -> Result<Element, RegisterError> {
    let name = start.name().as_ref().to_string();
    let mut attributes = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(xml_error)?;
        let key = attribute.key.as_ref().to_string();
        let value = attribute
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(xml_error)?
            .into_owned();
        attributes.push((key, value));
    }
    Ok(Element {
        name,
        attributes,
        ..Element::default()
    })
}

/// Writes a JSON string literal.
fn push_json_string(out: &mut String, text: &str) {
    out.push_str(&serde_json::Value::from(text).to_string());
}

/// The text of a leaf element; an element with children is a type mismatch.
fn leaf_text(element: &Element) -> Result<&str, RegisterError> {
    if element.children.is_empty() {
        Ok(&element.text)
    } else {
        Err(RegisterError::Invalid)
    }
}

fn decimal(text: &str) -> Result<i64, RegisterError> {
    let trimmed = text.trim();
    let digits = trimmed.strip_prefix('-').unwrap_or(trimmed);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RegisterError::Invalid);
    }
    trimmed.parse().map_err(xml_error)
}

/// Decodes a metadata element name as Netflix codes it: `__` → `_`, `_-` → `$`.
fn decode_xml_name(name: &str) -> String {
    name.replace("_-", "$").replace("__", "_")
}

/// `<metadata>` → a JSON object of strings in document order.
fn metadata_json(element: &Element) -> Result<String, RegisterError> {
    let mut entries: Vec<(String, String)> = Vec::new();
    for child in &element.children {
        let key = decode_xml_name(&child.name);
        let value = leaf_text(child)?.to_string();
        match entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => entries.push((key, value)),
        }
    }
    let mut out = String::from("{");
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, key);
        out.push(':');
        push_json_string(&mut out, value);
    }
    out.push('}');
    Ok(out)
}

fn port_json(element: &Element, enabled_by_default: bool) -> Result<String, RegisterError> {
    let text = leaf_text(element)?.trim();
    let mut out = String::from("{\"$\":");
    match decimal(text) {
        Ok(n) => out.push_str(&n.to_string()),
        Err(_) => push_json_string(&mut out, text),
    }
    out.push_str(",\"@enabled\":");
    let enabled = element
        .attribute("enabled")
        .map_or(enabled_by_default, |v| v == "true");
    out.push_str(if enabled { "true" } else { "false" });
    out.push('}');
    Ok(out)
}

/// Converts an XML registration to the JSON model of spec 4.2 (`{"instance":{…}}`); a root other
/// than `<instance>` gives `{}`, which the decoder answers as a body without `instance`.
fn xml_to_json(body: &[u8]) -> Result<String, RegisterError> {
    let root = parse_xml(body)?;
    if root.name != "instance" {
        return Ok("{}".into());
    }
    const STRINGS: [&str; 15] = [
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
    let mut members: Vec<(&str, String)> = Vec::new();
    for name in STRINGS {
        if let Some(element) = root.child(name) {
            let mut value = String::new();
            push_json_string(&mut value, leaf_text(element)?);
            members.push((name, value));
        }
    }
    if let Some(element) = root.child("countryId") {
        members.push(("countryId", decimal(leaf_text(element)?)?.to_string()));
    }
    if let Some(element) = root.child("port") {
        members.push(("port", port_json(element, true)?));
    }
    if let Some(element) = root.child("securePort") {
        members.push(("securePort", port_json(element, false)?));
    }
    if let Some(element) = root.child("dataCenterInfo") {
        let mut value = String::from("{");
        let mut parts = Vec::new();
        if let Some(class) = element.attribute("class") {
            let mut part = String::from("\"@class\":");
            push_json_string(&mut part, class);
            parts.push(part);
        }
        if let Some(name) = element.child("name") {
            let mut part = String::from("\"name\":");
            push_json_string(&mut part, leaf_text(name)?);
            parts.push(part);
        }
        if let Some(metadata) = element.child("metadata") {
            parts.push(format!("\"metadata\":{}", metadata_json(metadata)?));
        }
        value.push_str(&parts.join(","));
        value.push('}');
        members.push(("dataCenterInfo", value));
    }
    if let Some(element) = root.child("leaseInfo") {
        let mut parts = Vec::new();
        for name in [
            "renewalIntervalInSecs",
            "durationInSecs",
            "registrationTimestamp",
            "lastRenewalTimestamp",
        ] {
            if let Some(child) = element.child(name) {
                parts.push(format!("\"{name}\":{}", decimal(leaf_text(child)?)?));
            }
        }
        members.push(("leaseInfo", format!("{{{}}}", parts.join(","))));
    }
    if let Some(element) = root.child("metadata") {
        members.push(("metadata", metadata_json(element)?));
    }
    let body: Vec<String> = members
        .iter()
        .map(|(name, value)| format!("\"{name}\":{value}"))
        .collect();
    Ok(format!("{{\"instance\":{{{}}}}}", body.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const J: &str = r#"{"instance":{"instanceId":"host1:myapp:8080","hostName":"host1","app":"MYAPP","ipAddr":"10.0.0.7","status":"UP","port":{"$":8080,"@enabled":"true"},"securePort":{"$":443,"@enabled":"false"},"dataCenterInfo":{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"},"leaseInfo":{"renewalIntervalInSecs":30,"durationInSecs":90},"metadata":{"amalgam8.tags":"v1; canary"},"vipAddress":"myapp"}}"#;

    #[test]
    fn java_style_registration_maps_as_the_original() {
        let decoded = decode(J.as_bytes(), false, "MYAPP").unwrap();
        assert_eq!(&*decoded.id, "MYAPP:host1:myapp:8080");
        assert_eq!(&*decoded.service_name, "MYAPP");
        assert_eq!(decoded.endpoint.kind, EndpointType::Tcp);
        assert_eq!(decoded.endpoint.value, "host1:8080");
        assert_eq!(decoded.ttl, Duration::from_secs(90));
        assert_eq!(decoded.tags, ["v1", "canary"]);
        assert_eq!(decoded.status, "UP");
        let registration = Registration::of(&decoded).unwrap();
        assert_eq!(registration.vip_address, "myapp");
        assert_eq!(
            registration.port,
            Some(Port {
                enabled: true,
                number: Some(PortNumber::Number(8080.into()))
            })
        );
    }

    #[test]
    fn validation_order_and_messages() {
        let body = |instance: &str| format!("{{\"instance\":{instance}}}");
        let base = r#""hostName":"h","ipAddr":"1.2.3.4","vipAddress":"v""#;
        assert_eq!(decode(b"", false, "A").unwrap_err(), RegisterError::Invalid);
        assert_eq!(
            decode(b"{\"foo\":1}", false, "A").unwrap_err(),
            RegisterError::MissingFields
        );
        assert_eq!(
            decode(b"{\"instance\":null}", false, "A").unwrap_err(),
            RegisterError::MissingFields
        );
        let missing_vip = body(r#"{"hostName":"h","ipAddr":"1"}"#);
        assert_eq!(
            decode(missing_vip.as_bytes(), false, "A").unwrap_err(),
            RegisterError::MissingFields
        );
        let mismatch = body(&format!("{{{base},\"app\":\"B\"}}"));
        assert_eq!(
            decode(mismatch.as_bytes(), false, "A").unwrap_err(),
            RegisterError::AppMismatch
        );
        let country = body(&format!("{{{base},\"countryId\":\"1\"}}"));
        assert_eq!(
            decode(country.as_bytes(), false, "A").unwrap_err(),
            RegisterError::Invalid
        );
        let enabled = body(&format!("{{{base},\"port\":{{\"@enabled\":5}}}}"));
        assert_eq!(
            decode(enabled.as_bytes(), false, "A").unwrap_err(),
            RegisterError::Invalid
        );
        let azure = body(&format!(
            "{{{base},\"dataCenterInfo\":{{\"name\":\"Azure\"}}}}"
        ));
        assert_eq!(
            decode(azure.as_bytes(), false, "A").unwrap_err(),
            RegisterError::Invalid
        );
        let metadata_array = body(&format!("{{{base},\"metadata\":[1]}}"));
        assert_eq!(
            decode(metadata_array.as_bytes(), false, "A").unwrap_err(),
            RegisterError::Invalid
        );
        let no_metadata = body(&format!("{{{base}}}"));
        let decoded = decode(no_metadata.as_bytes(), false, "A").unwrap();
        assert_eq!(decoded.metadata.unwrap().get(), "{}");
        assert_eq!(&*decoded.id, "A:h");
        let array =
            format!("{{\"instance\":[{{{base},\"port\":[{{\"$\":\"80\",\"@enabled\":true}}]}}]}}");
        let decoded = decode(array.as_bytes(), false, "A").unwrap();
        assert_eq!(decoded.endpoint.value, "h:80");
    }

    #[test]
    fn data_center_id_resolution() {
        let with_dc = |dc: &str| {
            let body = format!(
                r#"{{"instance":{{"hostName":"h","ipAddr":"1","vipAddress":"v","dataCenterInfo":{dc}}}}}"#
            );
            decode(body.as_bytes(), false, "A").map(|d| d.id.to_string())
        };
        assert_eq!(
            with_dc(r#"{"name":"Amazon","metadata":{"foo":"bar"}}"#).unwrap(),
            "A:h"
        );
        assert_eq!(
            with_dc(r#"{"name":"amazon","metadata":{"instance-id":"i-123"}}"#).unwrap(),
            "A:i-123"
        );
        assert_eq!(with_dc(r#"{"name":"Amazon"}"#).unwrap(), "A:h");
        assert_eq!(
            with_dc(r#"{"name":"SoftLayer","metadata":{}}"#).unwrap(),
            "A:h"
        );
        assert_eq!(
            with_dc(r#"{"name":"SoftLayer","metadata":{"getId":42.0}}"#).unwrap(),
            "A:42"
        );
        assert_eq!(with_dc(r#"{"name":"Netflix"}"#).unwrap(), "A:h");
    }

    #[test]
    fn tags_follow_the_original_rules() {
        let tags = |m: &str| tags_of(&RawValue::from_string(m.into()).unwrap());
        assert_eq!(tags(r#"{"amalgam8.tags":"v1; canary"}"#), ["v1", "canary"]);
        assert_eq!(tags(r#"{"amalgam8.tags":"a,b;c"}"#), ["a", "b", "c"]);
        assert_eq!(tags(r#"{"amalgam8.tags":"a,,b"}"#), ["a", "", "b"]);
        assert_eq!(tags(r#"{"amalgam8.tags":"  "}"#), Vec::<String>::new());
        assert_eq!(tags(r#"{"amalgam8.tags":5}"#), ["5"]);
        assert_eq!(tags(r#"{"other":"x"}"#), Vec::<String>::new());
    }

    #[test]
    fn both_ports_enabled_prefers_https() {
        let body = r#"{"instance":{"hostName":"h6","app":"A","ipAddr":"1","vipAddress":"v","status":"STARTING","port":{"$":80,"@enabled":"true"},"securePort":{"$":8443,"@enabled":"true"},"leaseInfo":{"durationInSecs":5000},"metadata":{"amalgam8.tags":"a,b;c"}}}"#;
        let decoded = decode(body.as_bytes(), false, "A").unwrap();
        assert_eq!(
            decoded.endpoint,
            Endpoint {
                kind: EndpointType::Https,
                value: "h6:8443".into()
            }
        );
        assert_eq!(
            decoded.ttl,
            Duration::from_secs(5000),
            "clamped later by the store"
        );
        assert_eq!(decoded.status, "STARTING");
    }

    #[test]
    fn xml_registration_matches_json() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<instance>
  <instanceId>host1:myapp:8080</instanceId>
  <hostName>host1</hostName>
  <app>MYAPP</app>
  <ipAddr>10.0.0.7</ipAddr>
  <status>UP</status>
  <port enabled="true">8080</port>
  <securePort enabled="false">443</securePort>
  <dataCenterInfo class="com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"><name>MyOwn</name></dataCenterInfo>
  <leaseInfo><renewalIntervalInSecs>30</renewalIntervalInSecs><durationInSecs>90</durationInSecs></leaseInfo>
  <metadata><amalgam8.tags>v1; canary</amalgam8.tags><management__port>8081</management__port></metadata>
  <vipAddress>myapp</vipAddress>
</instance>"#;
        let from_xml = decode(xml.as_bytes(), true, "MYAPP").unwrap();
        let from_json = decode(J.as_bytes(), false, "MYAPP").unwrap();
        assert_eq!(from_xml.id, from_json.id);
        assert_eq!(from_xml.endpoint, from_json.endpoint);
        assert_eq!(from_xml.tags, from_json.tags);
        assert_eq!(Registration::of(&from_xml), Registration::of(&from_json));
        assert_eq!(
            from_xml.metadata.unwrap().get(),
            r#"{"amalgam8.tags":"v1; canary","management_port":"8081"}"#
        );
    }

    #[test]
    fn hostile_xml_is_refused() {
        let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><instance><hostName>&lol2;</hostName></instance>"#;
        for bad in [
            laughs,
            "<instance><hostName>&ext;</hostName></instance>",
            "<instance><hostName>h</instance>",
            "<instance>",
            "not xml",
            r#"<?xml version="1.0" encoding="ISO-8859-1"?><instance/>"#,
            "<instance><countryId>x</countryId></instance>",
            "<instance><metadata><a><b/></a></metadata></instance>",
            "<instance/><instance/>",
        ] {
            assert_eq!(
                decode(bad.as_bytes(), true, "A").unwrap_err(),
                RegisterError::Invalid,
                "{bad}"
            );
        }
        let deep = format!(
            "<instance>{}{}</instance>",
            "<x>".repeat(64),
            "</x>".repeat(64)
        );
        assert_eq!(
            decode(deep.as_bytes(), true, "A").unwrap_err(),
            RegisterError::Invalid
        );
        assert_eq!(
            decode(b"<other/>", true, "A").unwrap_err(),
            RegisterError::MissingFields
        );
        let escaped = "<instance><hostName>a&amp;b&#65;</hostName><ipAddr>1</ipAddr><vipAddress>v</vipAddress></instance>";
        let decoded = decode(escaped.as_bytes(), true, "A").unwrap();
        assert_eq!(&*decoded.id, "A:a&bA");
    }

    #[test]
    fn hostile_registration_bodies_never_panic() {
        let xml = br#"<instance><instanceId>i</instanceId><hostName>h</hostName><app>A</app><ipAddr>1</ipAddr><port enabled="true">80</port><dataCenterInfo class="c"><name>Amazon</name><metadata><instance-id>x</instance-id></metadata></dataCenterInfo><leaseInfo><durationInSecs>9</durationInSecs></leaseInfo><metadata><a__b>&amp;</a__b></metadata><vipAddress>v</vipAddress></instance>"#;
        let mut rng = crate::testing::Rng::new(13);
        for _ in 0..10_000 {
            let _ = decode(&rng.mutate(J.as_bytes()), false, "MYAPP");
            let _ = decode(&rng.mutate(xml), true, "A");
        }
    }
}
