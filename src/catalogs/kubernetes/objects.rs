//! Reading Kubernetes objects (catalogs contract §3.4–§3.6): list bodies, watch event lines,
//! EndpointSlices, core/v1 Endpoints and Pods, turned into the little the catalog keeps of them.
//! No I/O: bytes in, values out, so hostile objects are tested without a server.
//!
//! Everything here is lenient about what it does not use and strict about what it does: an
//! object whose used fields have the wrong types is skipped (with the reason), never a panic.

use crate::nesting::nesting_within;
use crate::registry::instance::EndpointType;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Deepest JSON nesting read from the API server (D15).
pub const MAX_NESTING: usize = 64;

/// The label that names an EndpointSlice's service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

// Objects are read as `serde_json::Value` and looked into by hand rather than through derived
// deserializers: one generic parser in the binary instead of one per struct keeps the static
// binary smaller, and the checks below say exactly which types are accepted.

/// The members of a JSON object, each left unparsed.
type RawMembers = BTreeMap<String, Box<RawValue>>;

/// A string member: `Ok(None)` when absent or `null`, `Err` when of another type.
fn text<'a>(object: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(format!("{key} is not a string")),
    }
}

/// An object member: `Ok(None)` when absent or `null`, `Err` when of another type.
fn object<'a>(
    parent: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, String> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(object)) => Ok(Some(object)),
        Some(_) => Err(format!("{key} is not an object")),
    }
}

/// An array member: empty when absent or `null`, `Err` when of another type.
fn array<'a>(parent: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], String> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(format!("{key} is not an array")),
    }
}

/// An array member whose entries must all be objects.
fn objects<'a>(
    parent: &'a Map<String, Value>,
    key: &str,
) -> Result<Vec<&'a Map<String, Value>>, String> {
    array(parent, key)?
        .iter()
        .map(|item| {
            item.as_object()
                .ok_or_else(|| format!("an entry of {key} is not an object"))
        })
        .collect()
}

/// A JSON object, or why not.
fn parse_object(raw: &RawValue) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(raw.get().as_bytes()) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err("not an object".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// The longest resourceVersion or continue token kept. Both go back to the API server in a
/// query string; real ones are an etcd revision and a few hundred bytes of base64, and a longer
/// one would only make every later request line that long.
const MAX_TOKEN_BYTES: usize = 4096;

/// A resourceVersion or continue token inside raw `metadata`, kept verbatim when it is a
/// string (W13: never compared or parsed); `Err` when it is longer than [`MAX_TOKEN_BYTES`].
fn raw_text(members: &RawMembers, key: &str) -> Result<Option<String>, String> {
    let text = members
        .get(key)
        .and_then(|raw| serde_json::from_slice::<String>(raw.get().as_bytes()).ok());
    match text {
        Some(text) if text.len() > MAX_TOKEN_BYTES => Err(format!(
            "a metadata.{key} of {} bytes (at most {MAX_TOKEN_BYTES})",
            text.len()
        )),
        text => Ok(text),
    }
}

fn raw_members(raw: &RawValue) -> Option<RawMembers> {
    if !raw.get().starts_with('{') {
        return None;
    }
    serde_json::from_slice(raw.get().as_bytes()).ok()
}

/// One page of a list.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Box<RawValue>>,
    pub resource_version: Option<String>,
    /// `metadata.continue`, when non-empty.
    pub continue_token: Option<String>,
}

/// Reads a list body; `Err` when it is no list at all.
pub fn parse_page(body: &[u8]) -> Result<Page, String> {
    if !nesting_within(body, MAX_NESTING) {
        return Err(format!("JSON nested deeper than {MAX_NESTING} levels"));
    }
    if !body.trim_ascii_start().starts_with(b"{") {
        return Err("not a JSON object".into());
    }
    let list: RawMembers = serde_json::from_slice(body).map_err(|e| format!("not a list: {e}"))?;
    let metadata = list
        .get("metadata")
        .and_then(|raw| raw_members(raw))
        .unwrap_or_default();
    let items = match list.get("items").map(|raw| raw.get()) {
        None | Some("null") => Vec::new(),
        Some(items) => serde_json::from_slice::<Vec<Box<RawValue>>>(items.as_bytes())
            .map_err(|_| "items is not an array".to_string())?,
    };
    Ok(Page {
        items,
        resource_version: raw_text(&metadata, "resourceVersion")?,
        continue_token: raw_text(&metadata, "continue")?.filter(|c| !c.is_empty()),
    })
}

/// What a watch event says.
#[derive(Debug)]
pub enum Event {
    /// `ADDED` or `MODIFIED`: the object replaces the one of its name.
    Upsert(Box<RawValue>),
    Deleted(Box<RawValue>),
    /// Nothing changes but the resourceVersion.
    Bookmark,
    /// A `Status` with this code (0 when it has none).
    Error {
        code: i64,
        message: String,
    },
    /// An event type this version does not know: skipped.
    Unknown(String),
}

/// The raw `metadata` members of an object.
fn metadata_of(object: &RawValue) -> RawMembers {
    raw_members(object)
        .and_then(|members| members.get("metadata").and_then(|raw| raw_members(raw)))
        .unwrap_or_default()
}

/// Reads one line of a watch stream: the event and the resourceVersion of its object.
/// `Err` when the line is not a watch event (which breaks the watch).
pub fn parse_event(line: &[u8]) -> Result<(Event, Option<String>), String> {
    if !nesting_within(line, MAX_NESTING) {
        return Err(format!("JSON nested deeper than {MAX_NESTING} levels"));
    }
    let mut event: RawMembers =
        serde_json::from_slice(line).map_err(|e| format!("not a watch event: {e}"))?;
    let kind = event
        .get("type")
        .and_then(|raw| serde_json::from_slice::<String>(raw.get().as_bytes()).ok())
        .ok_or("a watch event without a type")?;
    let object = event
        .remove("object")
        .filter(|raw| raw.get().starts_with('{'))
        .ok_or("a watch event without an object")?;
    let version = raw_text(&metadata_of(&object), "resourceVersion")?;
    let parsed = match kind.as_str() {
        "ADDED" | "MODIFIED" => Event::Upsert(object),
        "DELETED" => Event::Deleted(object),
        "BOOKMARK" => Event::Bookmark,
        "ERROR" => {
            let status = parse_object(&object)?;
            Event::Error {
                code: status.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: text(&status, "message")?.unwrap_or_default().to_string(),
            }
        }
        other => Event::Unknown(other.chars().take(64).collect()),
    };
    Ok((parsed, version))
}

/// The name of an object (`metadata.name`), when it has one (of at most [`MAX_TOKEN_BYTES`]:
/// Kubernetes names have at most 253).
pub fn name_of(object: &RawValue) -> Option<String> {
    raw_text(&metadata_of(object), "name")
        .ok()
        .flatten()
        .filter(|n| !n.is_empty())
}

/// How an address is written, and its rank among duplicates (contract §3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    Ipv4 = 0,
    Ipv6 = 1,
    Fqdn = 2,
}

/// One ready endpoint: its address as written in an endpoint value, and its pod.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// `10.1.0.5`, `[fd00::5]` or `db-0.example`.
    pub host: String,
    /// `targetRef.uid` when `targetRef.kind` is `Pod` and the uid is non-empty.
    pub pod_uid: Option<String>,
    /// The address as given, for ids of endpoints without a pod.
    pub address: String,
}

/// One mapped port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    pub number: u16,
    pub kind: EndpointType,
}

/// Endpoints that share their ports: a slice, or a subset of an Endpoints object.
#[derive(Debug)]
pub struct Group {
    pub family: Family,
    pub targets: Vec<Target>,
    pub ports: Vec<Port>,
}

/// What the catalog keeps of one EndpointSlice or Endpoints object.
#[derive(Debug)]
pub struct Source {
    pub name: String,
    /// `None`: a slice without the service label, ignored.
    pub service: Option<String>,
    pub groups: Vec<Group>,
    /// Size of the object as read, for the memory bound.
    pub size: usize,
}

/// What the catalog keeps of one pod.
#[derive(Debug)]
pub struct Pod {
    pub name: String,
    pub uid: String,
    /// `key=value`, sorted by key.
    pub tags: Vec<String>,
    /// `metadata.annotations`, verbatim; `{}` when absent.
    pub annotations: Arc<RawValue>,
    pub size: usize,
}

/// The object's `metadata.name`, required.
fn required_name(object: &Map<String, Value>, what: &str) -> Result<String, String> {
    let metadata = object.get("metadata").and_then(Value::as_object);
    metadata
        .map(|m| text(m, "name"))
        .transpose()?
        .flatten()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .ok_or_else(|| format!("{what} without a name"))
}

/// `targetRef.uid` when `targetRef.kind` is `Pod` and the uid is non-empty.
fn pod_uid(endpoint: &Map<String, Value>) -> Result<Option<String>, String> {
    let Some(target) = object(endpoint, "targetRef")? else {
        return Ok(None);
    };
    if text(target, "kind")? != Some("Pod") {
        return Ok(None);
    }
    Ok(text(target, "uid")?
        .filter(|uid| !uid.is_empty())
        .map(str::to_string))
}

/// Maps ports; a port of an unsupported protocol is skipped and told to `skipped` (W11).
fn map_ports(parent: &Map<String, Value>, skipped: &mut Vec<String>) -> Result<Vec<Port>, String> {
    let mut mapped: Vec<Port> = Vec::new();
    // A repeated number would give the same ids again (the first one wins): kept once, so that
    // repeated ports cannot multiply the work of mapping.
    let mut numbers = std::collections::HashSet::new();
    for port in objects(parent, "ports")? {
        let number = match port.get("port") {
            None | Some(Value::Null) => continue,
            Some(Value::Number(n)) => n.as_i64().ok_or("port is not an integer")?,
            Some(_) => return Err("port is not a number".into()),
        };
        let Some(number) = u16::try_from(number).ok().filter(|n| *n > 0) else {
            skipped.push(format!("port {number} is out of range"));
            continue;
        };
        let kind = match text(port, "protocol")?
            .filter(|p| !p.is_empty())
            .unwrap_or("TCP")
        {
            "UDP" => EndpointType::Udp,
            "TCP" => match text(port, "name")?.map(str::to_ascii_lowercase).as_deref() {
                Some("http") => EndpointType::Http,
                Some("https") => EndpointType::Https,
                _ => EndpointType::Tcp,
            },
            other => {
                let shown: String = other.chars().take(32).collect();
                skipped.push(format!("port {number}: unsupported protocol {shown:?}"));
                continue;
            }
        };
        if numbers.insert(number) {
            mapped.push(Port { number, kind });
        }
    }
    Ok(mapped)
}

/// Reads an EndpointSlice. `skipped` receives why ports were left out; `Err` when the object
/// cannot be used at all.
pub fn parse_slice(raw: &RawValue, skipped: &mut Vec<String>) -> Result<Source, String> {
    let slice = parse_object(raw).map_err(|e| format!("an EndpointSlice {e}"))?;
    let name = required_name(&slice, "an EndpointSlice")?;
    let metadata = object(&slice, "metadata")?;
    let labels = metadata.map(|m| object(m, "labels")).transpose()?.flatten();
    let service = labels
        .map(|l| text(l, SERVICE_NAME_LABEL))
        .transpose()?
        .flatten()
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let family = match text(&slice, "addressType")? {
        Some("IPv4") => Family::Ipv4,
        Some("IPv6") => Family::Ipv6,
        Some("FQDN") => Family::Fqdn,
        other => {
            let shown: String = other.unwrap_or("").chars().take(32).collect();
            return Err(format!("unsupported addressType {shown:?}"));
        }
    };
    let ports = map_ports(&slice, skipped)?;
    let mut targets = Vec::new();
    for endpoint in objects(&slice, "endpoints")? {
        let conditions = object(endpoint, "conditions")?;
        let ready = match conditions.and_then(|c| c.get("ready")) {
            None | Some(Value::Null) => true,
            Some(Value::Bool(ready)) => *ready,
            Some(_) => return Err("conditions.ready is not a boolean".into()),
        };
        let address = match array(endpoint, "addresses")?.first() {
            None => continue,
            Some(Value::String(address)) => address.clone(),
            Some(_) => return Err("an address is not a string".into()),
        };
        if !ready || address.is_empty() {
            continue;
        }
        let host = match family {
            Family::Ipv6 => format!("[{address}]"),
            _ => address.clone(),
        };
        targets.push(Target {
            host,
            pod_uid: pod_uid(endpoint)?,
            address,
        });
    }
    Ok(Source {
        name,
        service,
        groups: vec![Group {
            family,
            targets,
            ports,
        }],
        size: raw.get().len(),
    })
}

/// Reads a core/v1 Endpoints object (the fallback, contract §3.6).
pub fn parse_endpoints(raw: &RawValue, skipped: &mut Vec<String>) -> Result<Source, String> {
    let endpoints = parse_object(raw).map_err(|e| format!("an Endpoints object {e}"))?;
    let name = required_name(&endpoints, "an Endpoints object")?;
    let mut groups = Vec::new();
    for subset in objects(&endpoints, "subsets")? {
        let ports = map_ports(subset, skipped)?;
        let mut targets = Vec::new();
        for address in objects(subset, "addresses")? {
            let Some(ip) = text(address, "ip")?.filter(|ip| !ip.is_empty()) else {
                continue;
            };
            let host = if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip.to_string()
            };
            targets.push(Target {
                host,
                pod_uid: pod_uid(address)?,
                address: ip.to_string(),
            });
        }
        groups.push(Group {
            family: Family::Ipv4,
            targets,
            ports,
        });
    }
    Ok(Source {
        service: Some(name.clone()),
        name,
        groups,
        size: raw.get().len(),
    })
}

/// Reads a Pod: its uid, labels and annotations.
pub fn parse_pod(raw: &RawValue) -> Result<Pod, String> {
    let members = raw_members(raw).ok_or("a Pod that is not an object")?;
    let metadata = members
        .get("metadata")
        .map(|raw| parse_object(raw))
        .transpose()?
        .unwrap_or_default();
    let name = text(&metadata, "name")?
        .filter(|n| !n.is_empty())
        .ok_or("a Pod without a name")?
        .to_string();
    let uid = text(&metadata, "uid")?
        .filter(|u| !u.is_empty())
        .ok_or("a Pod without a uid")?
        .to_string();
    let mut tags = Vec::new();
    if let Some(labels) = object(&metadata, "labels")? {
        // serde_json's map is sorted by key: the tags come out in key order.
        for (key, value) in labels {
            let value = value.as_str().ok_or("a label value is not a string")?;
            tags.push(format!("{key}={value}"));
        }
    }
    // The annotations verbatim, as the server wrote them (not re-serialised).
    let raw_metadata = members.get("metadata").and_then(|raw| raw_members(raw));
    let annotations = match raw_metadata.and_then(|mut m| m.remove("annotations")) {
        Some(raw) if raw.get().starts_with('{') => raw,
        Some(raw) if raw.get() != "null" => return Err("annotations are not an object".into()),
        _ => RawValue::from_string("{}".into()).map_err(|e| e.to_string())?,
    };
    Ok(Pod {
        name,
        uid,
        tags,
        annotations: annotations.into(),
        size: raw.get().len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    #[test]
    fn slices_keep_ready_endpoints_and_supported_ports() {
        let slice = raw(
            r#"{"metadata":{"name":"web-abc","labels":{"kubernetes.io/service-name":"web"}},
            "addressType":"IPv6","endpoints":[
              {"addresses":["fd00::1","fd00::9"],"targetRef":{"kind":"Pod","uid":"u1"}},
              {"addresses":["fd00::2"],"conditions":{"ready":false}},
              {"addresses":["fd00::3"],"conditions":{"ready":true,"serving":false},"targetRef":{"kind":"Node","uid":"n"}}],
            "ports":[{"name":"HTTP","port":8080},{"name":"x","port":53,"protocol":"UDP"},
                     {"name":"s","port":9,"protocol":"SCTP"},{"name":"none"},{"port":70000}]}"#,
        );
        let mut skipped = Vec::new();
        let source = parse_slice(&slice, &mut skipped).unwrap();
        assert_eq!(source.service.as_deref(), Some("web"));
        let group = &source.groups[0];
        assert_eq!(group.family, Family::Ipv6);
        assert_eq!(
            group.targets,
            [
                Target {
                    host: "[fd00::1]".into(),
                    pod_uid: Some("u1".into()),
                    address: "fd00::1".into()
                },
                Target {
                    host: "[fd00::3]".into(),
                    pod_uid: None,
                    address: "fd00::3".into()
                }
            ]
        );
        assert_eq!(
            group.ports,
            [
                Port {
                    number: 8080,
                    kind: EndpointType::Http
                },
                Port {
                    number: 53,
                    kind: EndpointType::Udp
                }
            ]
        );
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped[0].contains("SCTP"), "{skipped:?}");
    }

    #[test]
    fn hostile_objects_are_errors_not_panics() {
        let mut skipped = Vec::new();
        for bad in [
            r#"{"metadata":{"name":"a"},"addressType":"IPv4","ports":[{"port":"80"}]}"#,
            r#"{"metadata":{"name":"a"},"addressType":"Carrier-Pigeon"}"#,
            r#"{"metadata":{"name":7}}"#,
            r#"{"addressType":"IPv4"}"#,
            r#"[]"#,
            r#""text""#,
        ] {
            assert!(parse_slice(&raw(bad), &mut skipped).is_err(), "{bad}");
        }
        assert!(parse_pod(&raw(r#"{"metadata":{"name":"p"}}"#)).is_err());
        assert!(parse_pod(&raw(
            r#"{"metadata":{"name":"p","uid":"u","annotations":[1]}}"#
        ))
        .is_err());
        assert!(parse_page(b"[]").is_err());
        assert!(parse_page(b"{\"items\":{}}").is_err());
        let deep = format!("{{\"items\":[{}{}]}}", "[".repeat(100), "]".repeat(100));
        assert!(parse_page(deep.as_bytes()).is_err());
        assert!(parse_event(b"{\"type\":\"ADDED\"}").is_err());
        assert!(parse_event(b"{\"type\":\"ADDED\",\"object\":3}").is_err());
        assert!(parse_event(b"not json").is_err());
    }

    #[test]
    fn an_oversized_resource_version_or_continue_token_is_refused() {
        let long = "7".repeat(MAX_TOKEN_BYTES + 1);
        let page = format!(r#"{{"metadata":{{"resourceVersion":"{long}"}},"items":[]}}"#);
        assert!(parse_page(page.as_bytes())
            .unwrap_err()
            .contains("resourceVersion"));
        let page = format!(r#"{{"metadata":{{"continue":"{long}"}},"items":[]}}"#);
        assert!(parse_page(page.as_bytes())
            .unwrap_err()
            .contains("continue"));
        let event = format!(
            r#"{{"type":"BOOKMARK","object":{{"metadata":{{"resourceVersion":"{long}"}}}}}}"#
        );
        assert!(parse_event(event.as_bytes()).is_err());
        let fits = "7".repeat(MAX_TOKEN_BYTES);
        let page = format!(r#"{{"metadata":{{"resourceVersion":"{fits}"}},"items":[]}}"#);
        assert_eq!(
            parse_page(page.as_bytes()).unwrap().resource_version,
            Some(fits)
        );
    }

    #[test]
    fn events_carry_their_resource_version_verbatim() {
        let (event, version) = parse_event(
            br#"{"type":"MODIFIED","object":{"metadata":{"name":"p","resourceVersion":"abc-007"}}}"#,
        )
        .unwrap();
        assert!(matches!(event, Event::Upsert(_)));
        assert_eq!(version.as_deref(), Some("abc-007"));
        let (event, version) = parse_event(
            br#"{"type":"ERROR","object":{"kind":"Status","code":410,"message":"too old"}}"#,
        )
        .unwrap();
        assert!(matches!(event, Event::Error { code: 410, .. }));
        assert_eq!(version, None);
        let (event, _) =
            parse_event(br#"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"9"}}}"#)
                .unwrap();
        assert!(matches!(event, Event::Bookmark));
        let page =
            parse_page(br#"{"metadata":{"resourceVersion":"12","continue":""},"items":null}"#)
                .unwrap();
        assert!(page.items.is_empty() && page.continue_token.is_none());
        assert_eq!(page.resource_version.as_deref(), Some("12"));
    }

    #[test]
    fn pods_give_sorted_tags_and_verbatim_annotations() {
        let pod = parse_pod(&raw(
            r#"{"metadata":{"name":"p","uid":"u","labels":{"version":"v1","app":"web"},"annotations":{"b":"2","a":"1"}}}"#,
        ))
        .unwrap();
        assert_eq!(pod.tags, ["app=web", "version=v1"]);
        assert_eq!(pod.annotations.get(), r#"{"b":"2","a":"1"}"#);
        let bare = parse_pod(&raw(r#"{"metadata":{"name":"p","uid":"u"}}"#)).unwrap();
        assert_eq!(bare.annotations.get(), "{}");
        assert!(bare.tags.is_empty());
    }
}
