//! Reading Kubernetes objects (catalogs contract §3.4–§3.6): list bodies, watch event lines,
//! EndpointSlices, core/v1 Endpoints and Pods, turned into the little the catalog keeps of them.
//! No I/O: bytes in, values out, so hostile objects are tested without a server.
//!
//! Everything here is lenient about what it does not use and strict about what it does: an
//! object whose used fields have the wrong types is skipped (with the reason), never a panic.

use crate::nesting::nesting_within;
use crate::registry::instance::EndpointType;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;

/// Deepest JSON nesting read from the API server (D15).
pub const MAX_NESTING: usize = 64;

/// The label that names an EndpointSlice's service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Deserialize, Default)]
struct MetaJson {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default, rename = "resourceVersion")]
    resource_version: Option<Box<RawValue>>,
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<Box<RawValue>>,
}

/// A resourceVersion, kept verbatim when it is a string (W13: never compared or parsed).
fn version_of(raw: &Option<Box<RawValue>>) -> Option<String> {
    raw.as_ref()
        .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
}

#[derive(Deserialize)]
struct ListJson {
    #[serde(default)]
    metadata: Option<MetaJson>,
    #[serde(default)]
    items: Option<Vec<Box<RawValue>>>,
}

/// One page of a list.
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
    let list: ListJson = serde_json::from_slice(body).map_err(|e| format!("not a list: {e}"))?;
    let metadata = list.metadata.unwrap_or_default();
    Ok(Page {
        items: list.items.unwrap_or_default(),
        resource_version: version_of(&metadata.resource_version),
        continue_token: metadata.continue_token.filter(|c| !c.is_empty()),
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

#[derive(Deserialize)]
struct EventJson {
    #[serde(rename = "type")]
    kind: String,
    object: Box<RawValue>,
}

#[derive(Deserialize)]
struct StatusJson {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct ObjectMetaOnly {
    #[serde(default)]
    metadata: Option<MetaJson>,
}

/// Reads one line of a watch stream: the event and the resourceVersion of its object.
/// `Err` when the line is not a watch event (which breaks the watch).
pub fn parse_event(line: &[u8]) -> Result<(Event, Option<String>), String> {
    if !nesting_within(line, MAX_NESTING) {
        return Err(format!("JSON nested deeper than {MAX_NESTING} levels"));
    }
    let event: EventJson =
        serde_json::from_slice(line).map_err(|e| format!("not a watch event: {e}"))?;
    if !event.object.get().starts_with('{') {
        return Err("the event's object is not an object".into());
    }
    let version = serde_json::from_str::<ObjectMetaOnly>(event.object.get())
        .ok()
        .and_then(|o| o.metadata)
        .and_then(|m| version_of(&m.resource_version));
    let parsed = match event.kind.as_str() {
        "ADDED" | "MODIFIED" => Event::Upsert(event.object),
        "DELETED" => Event::Deleted(event.object),
        "BOOKMARK" => Event::Bookmark,
        "ERROR" => {
            let status: StatusJson = serde_json::from_str(event.object.get())
                .map_err(|e| format!("an ERROR event without a Status: {e}"))?;
            Event::Error {
                code: status.code.unwrap_or(0),
                message: status.message.unwrap_or_default(),
            }
        }
        other => Event::Unknown(other.chars().take(64).collect()),
    };
    Ok((parsed, version))
}

/// The name of an object (`metadata.name`), when it has one.
pub fn name_of(object: &RawValue) -> Option<String> {
    serde_json::from_str::<ObjectMetaOnly>(object.get())
        .ok()?
        .metadata?
        .name
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
    pub annotations: Box<RawValue>,
    pub size: usize,
}

#[derive(Deserialize)]
struct TargetRefJson {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    uid: Option<String>,
}

#[derive(Deserialize)]
struct PortJson {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    port: Option<i64>,
    #[serde(default)]
    protocol: Option<String>,
}

#[derive(Deserialize)]
struct ConditionsJson {
    #[serde(default)]
    ready: Option<bool>,
}

#[derive(Deserialize)]
struct SliceEndpointJson {
    #[serde(default)]
    addresses: Option<Vec<String>>,
    #[serde(default)]
    conditions: Option<ConditionsJson>,
    #[serde(default, rename = "targetRef")]
    target_ref: Option<TargetRefJson>,
}

#[derive(Deserialize)]
struct SliceJson {
    #[serde(default)]
    metadata: Option<MetaJson>,
    #[serde(default, rename = "addressType")]
    address_type: Option<String>,
    #[serde(default)]
    endpoints: Option<Vec<SliceEndpointJson>>,
    #[serde(default)]
    ports: Option<Vec<PortJson>>,
}

#[derive(Deserialize)]
struct AddressJson {
    #[serde(default)]
    ip: Option<String>,
    #[serde(default, rename = "targetRef")]
    target_ref: Option<TargetRefJson>,
}

#[derive(Deserialize)]
struct SubsetJson {
    #[serde(default)]
    addresses: Option<Vec<AddressJson>>,
    #[serde(default)]
    ports: Option<Vec<PortJson>>,
}

#[derive(Deserialize)]
struct EndpointsJson {
    #[serde(default)]
    metadata: Option<MetaJson>,
    #[serde(default)]
    subsets: Option<Vec<SubsetJson>>,
}

#[derive(Deserialize)]
struct PodJson {
    #[serde(default)]
    metadata: Option<MetaJson>,
}

fn pod_uid(target: Option<&TargetRefJson>) -> Option<String> {
    let target = target?;
    (target.kind.as_deref() == Some("Pod"))
        .then(|| target.uid.clone())
        .flatten()
        .filter(|uid| !uid.is_empty())
}

/// Maps ports; a port of an unsupported protocol is skipped and told to `skipped` (W11).
fn map_ports(ports: Option<Vec<PortJson>>, skipped: &mut Vec<String>) -> Vec<Port> {
    let mut mapped = Vec::new();
    for port in ports.unwrap_or_default() {
        let Some(number) = port.port else {
            continue;
        };
        let Some(number) = u16::try_from(number).ok().filter(|n| *n > 0) else {
            skipped.push(format!("port {number} is out of range"));
            continue;
        };
        let protocol = port.protocol.filter(|p| !p.is_empty());
        let kind = match protocol.as_deref().unwrap_or("TCP") {
            "UDP" => EndpointType::Udp,
            "TCP" => match port.name.map(|n| n.to_ascii_lowercase()).as_deref() {
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
        mapped.push(Port { number, kind });
    }
    mapped
}

/// Reads an EndpointSlice. `skipped` receives why ports were left out; `Err` when the object
/// cannot be used at all.
pub fn parse_slice(object: &RawValue, skipped: &mut Vec<String>) -> Result<Source, String> {
    let slice: SliceJson =
        serde_json::from_str(object.get()).map_err(|e| format!("not an EndpointSlice: {e}"))?;
    let metadata = slice.metadata.unwrap_or_default();
    let name = metadata
        .name
        .filter(|n| !n.is_empty())
        .ok_or("an EndpointSlice without a name")?;
    let service = metadata
        .labels
        .and_then(|mut labels| labels.remove(SERVICE_NAME_LABEL))
        .filter(|s| !s.is_empty());
    let family = match slice.address_type.as_deref() {
        Some("IPv4") => Family::Ipv4,
        Some("IPv6") => Family::Ipv6,
        Some("FQDN") => Family::Fqdn,
        other => {
            let shown: String = other.unwrap_or("").chars().take(32).collect();
            return Err(format!("unsupported addressType {shown:?}"));
        }
    };
    let ports = map_ports(slice.ports, skipped);
    let mut targets = Vec::new();
    for endpoint in slice.endpoints.unwrap_or_default() {
        let ready = endpoint.conditions.and_then(|c| c.ready).unwrap_or(true);
        let Some(address) = endpoint.addresses.and_then(|a| a.into_iter().next()) else {
            continue;
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
            pod_uid: pod_uid(endpoint.target_ref.as_ref()),
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
        size: object.get().len(),
    })
}

/// Reads a core/v1 Endpoints object (the fallback, contract §3.6).
pub fn parse_endpoints(object: &RawValue, skipped: &mut Vec<String>) -> Result<Source, String> {
    let endpoints: EndpointsJson =
        serde_json::from_str(object.get()).map_err(|e| format!("not an Endpoints object: {e}"))?;
    let name = endpoints
        .metadata
        .unwrap_or_default()
        .name
        .filter(|n| !n.is_empty())
        .ok_or("an Endpoints object without a name")?;
    let mut groups = Vec::new();
    for subset in endpoints.subsets.unwrap_or_default() {
        let ports = map_ports(subset.ports, skipped);
        let targets = subset
            .addresses
            .unwrap_or_default()
            .into_iter()
            .filter_map(|a| {
                let address = a.ip.filter(|ip| !ip.is_empty())?;
                let host = if address.contains(':') {
                    format!("[{address}]")
                } else {
                    address.clone()
                };
                Some(Target {
                    host,
                    pod_uid: pod_uid(a.target_ref.as_ref()),
                    address,
                })
            })
            .collect();
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
        size: object.get().len(),
    })
}

/// Reads a Pod: its uid, labels and annotations.
pub fn parse_pod(object: &RawValue) -> Result<Pod, String> {
    let pod: PodJson = serde_json::from_str(object.get()).map_err(|e| format!("not a Pod: {e}"))?;
    let metadata = pod.metadata.unwrap_or_default();
    let name = metadata
        .name
        .filter(|n| !n.is_empty())
        .ok_or("a Pod without a name")?;
    let uid = metadata
        .uid
        .filter(|u| !u.is_empty())
        .ok_or("a Pod without a uid")?;
    let tags = metadata
        .labels
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    let annotations = match metadata.annotations {
        Some(raw) if raw.get().starts_with('{') => raw,
        Some(raw) if raw.get() != "null" => return Err("annotations are not an object".into()),
        _ => RawValue::from_string("{}".into()).map_err(|e| e.to_string())?,
    };
    Ok(Pod {
        name,
        uid,
        tags,
        annotations,
        size: object.get().len(),
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
