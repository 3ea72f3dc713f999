//! Eureka registrations: decoding JSON and XML bodies, validating them in the order of spec 4.4,
//! and mapping them to registry instances (spec 4.5), including their store ids.
//!
//! XML bodies are first converted to the JSON model of spec 4.2 (by [`super::xml`]), so both
//! formats share one decoder and one set of rules. Objects are read with [`crate::api::json`]:
//! one pass, only the members the model names are kept.

use super::render::{DEFAULT_DATA_CENTER_CLASS, DEFAULT_DATA_CENTER_NAME};
use super::xml;
use crate::api::json::{self, nesting_within, Members, MAX_JSON_DEPTH};
use crate::registry::instance::{
    DataCenter, Endpoint, EndpointType, EurekaFields, EurekaRegistration, Extension, Instance,
    JsonText, LimitError, Port, PortNumber, TagCollector, DEFAULT_RENEWAL_INTERVAL_SECS,
    MAX_METADATA_BYTES,
};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;

/// TTL of a Eureka registration that gives no `leaseInfo.durationInSecs` (spec 4.5).
const DEFAULT_DURATION_SECS: u32 = 90;

/// Why a registration was refused (spec 4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// 400 `Failed to register instance`.
    Invalid,
    /// 400 `Missing required field(s): hostname, application, vipAddress or IPAddress`.
    MissingFields,
    /// 400 `Application name mismatch`.
    AppMismatch,
    /// A limit found broken while decoding (the store's message for it): the tags derived from
    /// the metadata, or an XML metadata that passed its length while it was read.
    Limit(LimitError),
}

impl From<json::Malformed> for RegisterError {
    fn from(_: json::Malformed) -> RegisterError {
        RegisterError::Invalid
    }
}

/// Escapes `:` and itself in the app part of a store id.
const ID_ESCAPE: char = '~';

/// The store id of a Eureka instance: `<app>:<instanceId>`, with every `:` and `~` of the app
/// written `~:` and `~~`. The app part then never holds a bare `:`, so the first one ends it and
/// no two (app, instanceId) pairs share an id: app `A` with instance `B:c` is `A:B:c`, app `A:B`
/// with instance `c` is `A~:B:c`. Apps without either character, which is all of them in
/// practice, keep the plain `APP:iid` form of the original.
pub fn store_id(app: &str, instance_id: &str) -> StoreId {
    let escapes = app
        .bytes()
        .filter(|&b| b == b':' || b == ID_ESCAPE as u8)
        .count();
    let len = app.len() + escapes + 1 + instance_id.len();
    if escapes == 0 && len <= INLINE_STORE_ID_BYTES {
        // Nearly every id: the app name, `:` and the instance id copied whole onto the stack.
        let mut bytes = [0; INLINE_STORE_ID_BYTES];
        bytes[..app.len()].copy_from_slice(app.as_bytes());
        bytes[app.len()] = b':';
        bytes[app.len() + 1..len].copy_from_slice(instance_id.as_bytes());
        return StoreId::Inline(bytes, len);
    }
    let mut id = if len <= INLINE_STORE_ID_BYTES {
        StoreId::Inline([0; INLINE_STORE_ID_BYTES], 0)
    } else {
        StoreId::Heap(String::with_capacity(len))
    };
    if escapes == 0 {
        // Nearly every app name: copied whole rather than a character at a time.
        id.push_str(app);
    } else {
        for c in app.chars() {
            if c == ':' || c == ID_ESCAPE {
                id.push(ID_ESCAPE);
            }
            id.push(c);
        }
    }
    id.push(':');
    id.push_str(instance_id);
    id
}

/// Store ids up to this long are built on the stack: a renew or a cancel allocates nothing.
const INLINE_STORE_ID_BYTES: usize = 192;

/// A store id ([`store_id`]), read as a `&str`.
#[derive(Clone)]
pub enum StoreId {
    Inline([u8; INLINE_STORE_ID_BYTES], usize),
    Heap(String),
}

impl StoreId {
    fn push(&mut self, c: char) {
        self.push_str(c.encode_utf8(&mut [0; 4]));
    }

    /// Appends `text`; an inline id has the room (`store_id` measured it first).
    fn push_str(&mut self, text: &str) {
        match self {
            StoreId::Inline(bytes, len) => {
                bytes[*len..*len + text.len()].copy_from_slice(text.as_bytes());
                *len += text.len();
            }
            StoreId::Heap(string) => string.push_str(text),
        }
    }
}

impl std::ops::Deref for StoreId {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            // SAFETY: `store_id` copies only whole `&str`s and ASCII bytes into the first `len`
            // bytes, so they are UTF-8. Checking again cost 65 instructions of every renew.
            StoreId::Inline(bytes, len) => unsafe { std::str::from_utf8_unchecked(&bytes[..*len]) },
            StoreId::Heap(string) => string,
        }
    }
}

impl std::fmt::Debug for StoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl PartialEq<&str> for StoreId {
    fn eq(&self, other: &&str) -> bool {
        &**self == *other
    }
}

const TOP_MEMBERS: &[&str] = &["instance"];
const INSTANCE_MEMBERS: &[&str] = &[
    "instanceId",
    "hostName",
    "app",
    "appGroupName",
    "ipAddr",
    "vipAddress",
    "secureVipAddress",
    "status",
    "overriddenstatus",
    "actionType",
    "countryId",
    "port",
    "securePort",
    "homePageUrl",
    "statusPageUrl",
    "healthCheckUrl",
    "dataCenterInfo",
    "leaseInfo",
    "metadata",
    "lastDirtyTimestamp",
];
const PORT_MEMBERS: &[&str] = &["$", "@enabled"];
const DATA_CENTER_MEMBERS: &[&str] = &["@class", "name", "metadata"];
const DATA_CENTER_METADATA_MEMBERS: &[&str] = &["instance-id", "getId"];
const LEASE_MEMBERS: &[&str] = &[
    "renewalIntervalInSecs",
    "durationInSecs",
    "registrationTimestamp",
    "lastRenewalTimestamp",
];
const TAGS_MEMBER: &[&str] = &["amalgam8.tags"];

/// An object, or a one-element array holding one (spec D10); `null` is `None`.
fn one_object<'a>(
    raw: &'a RawValue,
    names: &'static [&'static str],
) -> Result<Option<Members<'a>>, RegisterError> {
    let text = raw.get();
    if text.starts_with('[') {
        return one_object(json::single_element(text)?, names);
    }
    Ok(json::object(text, names)?)
}

/// The raw text of an object given as itself or as a one-element array; `null` is `None`.
fn one_object_text(raw: &RawValue) -> Result<Option<&str>, RegisterError> {
    let text = raw.get();
    if text == "null" {
        Ok(None)
    } else if text.starts_with('[') {
        one_object_text(json::single_element(text)?)
    } else if text.starts_with('{') {
        Ok(Some(text))
    } else {
        Err(RegisterError::Invalid)
    }
}

fn port(members: &Members<'_>, name: &str) -> Result<Option<Port>, RegisterError> {
    let Some(raw) = members.get(name) else {
        return Ok(None);
    };
    let Some(port) = one_object(raw, PORT_MEMBERS)? else {
        return Ok(None);
    };
    let number = match port.get("$").map(RawValue::get) {
        None | Some("null") => None,
        Some(text) => match serde_json::from_slice::<serde_json::Value>(text.as_bytes()) {
            Ok(serde_json::Value::Number(n)) => Some(PortNumber::Number(n)),
            Ok(serde_json::Value::String(s)) => Some(PortNumber::Text(s.into())),
            _ => return Err(RegisterError::Invalid),
        },
    };
    let enabled = match port.get("@enabled").map(RawValue::get) {
        None | Some("null") => false,
        Some(text) => match serde_json::from_slice::<serde_json::Value>(text.as_bytes()) {
            Ok(serde_json::Value::Bool(b)) => b,
            Ok(serde_json::Value::String(s)) => s == "true",
            _ => return Err(RegisterError::Invalid),
        },
    };
    Ok(Some(Port { enabled, number }))
}

/// `dataCenterInfo` as given (spec 4.2).
fn data_center(members: &Members<'_>) -> Result<Option<DataCenter>, RegisterError> {
    let Some(raw) = members.get("dataCenterInfo") else {
        return Ok(None);
    };
    let Some(dc) = one_object(raw, DATA_CENTER_MEMBERS)? else {
        return Ok(None);
    };
    let class: Option<String> = dc.field("@class")?;
    let name: Option<String> = dc.field("name")?;
    let metadata = match dc.get("metadata") {
        None => None,
        Some(raw) => match one_object_text(raw)? {
            None => None,
            Some(text) => Some(JsonText::parse(text.to_string()).ok_or(RegisterError::Invalid)?),
        },
    };
    Ok(Some(DataCenter {
        class: class.map(Into::into),
        name: name.map(Into::into),
        metadata,
    }))
}

/// Decodes and validates a registration body for the app of the path, in the order of spec 4.4.
pub fn decode(body: &[u8], is_xml: bool, path_app: &str) -> Result<Instance, RegisterError> {
    let converted;
    let (body, xml_metadata_exceeded) = if is_xml {
        converted = xml::registration_to_json(body).map_err(|_| RegisterError::Invalid)?;
        (converted.json.as_bytes(), converted.metadata_exceeded)
    } else {
        (body, false)
    };
    if !nesting_within(body, MAX_JSON_DEPTH) || !json::surrogate_escapes_paired(body) {
        return Err(RegisterError::Invalid);
    }
    let text = std::str::from_utf8(body).map_err(|_| RegisterError::Invalid)?;
    let top = json::object(text, TOP_MEMBERS)?.unwrap_or_else(|| Members::empty(TOP_MEMBERS));
    let instance = match top.get("instance") {
        None => None,
        Some(raw) => one_object(raw, INSTANCE_MEMBERS)?,
    };

    // Step 1: every type is checked before any field is judged.
    let present = instance.is_some();
    let members = instance.unwrap_or_else(|| Members::empty(INSTANCE_MEMBERS));
    let instance_id: Option<String> = members.field("instanceId")?;
    let host_name: Option<String> = members.field("hostName")?;
    let app: Option<String> = members.field("app")?;
    let app_group_name: Option<String> = members.field("appGroupName")?;
    let ip_addr: Option<String> = members.field("ipAddr")?;
    let vip_address: Option<String> = members.field("vipAddress")?;
    let secure_vip_address: Option<String> = members.field("secureVipAddress")?;
    let status: Option<String> = members.field("status")?;
    members.field::<String>("overriddenstatus")?;
    members.field::<String>("actionType")?;
    let country_id: Option<i64> = members.field("countryId")?;
    let port_plain = port(&members, "port")?;
    let port_secure = port(&members, "securePort")?;
    let home_page_url: Option<String> = members.field("homePageUrl")?;
    let status_page_url: Option<String> = members.field("statusPageUrl")?;
    let health_check_url: Option<String> = members.field("healthCheckUrl")?;
    let data_center = data_center(&members)?;
    let (renewal_interval, duration) = match members.get("leaseInfo") {
        None => (None, None),
        Some(raw) => match one_object(raw, LEASE_MEMBERS)? {
            None => (None, None),
            Some(lease) => {
                lease.field::<i64>("registrationTimestamp")?;
                lease.field::<i64>("lastRenewalTimestamp")?;
                (
                    lease.field::<u32>("renewalIntervalInSecs")?,
                    lease.field::<u32>("durationInSecs")?,
                )
            }
        },
    };
    let dirty_millis =
        members.get("lastDirtyTimestamp").and_then(|raw| {
            match serde_json::from_slice::<serde_json::Value>(raw.get().as_bytes()) {
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
    let metadata = members.get("metadata").map(one_object_text);

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
    let metadata = metadata.transpose()?.flatten().unwrap_or("{}");
    let metadata =
        RawValue::from_string(metadata.to_string()).map_err(|_| RegisterError::Invalid)?;

    let endpoint = endpoint_of(&host_name, port_plain.as_ref(), port_secure.as_ref());
    let duration = duration.filter(|d| *d > 0).unwrap_or(DEFAULT_DURATION_SECS);
    let mut instance = Instance::new(
        &store_id(&app, &resolved_id),
        &app,
        endpoint,
        status.as_deref().unwrap_or(""),
        Duration::from_secs(u64::from(duration)),
    );
    // Metadata over its limit is refused by the store before the tags are judged, so they are
    // not derived from it (a megabyte of commas would be a million tags).
    let tags = if metadata.get().len() <= MAX_METADATA_BYTES {
        tags_of(metadata.get())
    } else {
        Ok(Vec::new())
    };
    instance.metadata = Some(metadata.into());
    instance.renewal_interval_secs = renewal_interval
        .filter(|r| *r > 0)
        .unwrap_or(DEFAULT_RENEWAL_INTERVAL_SECS);
    instance.dirty_unix_millis = dirty_millis.unwrap_or(0);
    let fields = EurekaFields::new(EurekaRegistration {
        app: instance.service_name.clone(),
        instance_id: instance_id.filter(|i| !i.is_empty()),
        host_name,
        ip_addr: ip_addr.unwrap_or_default(),
        vip_address: vip_address.unwrap_or_default(),
        secure_vip_address,
        app_group_name,
        country_id,
        port: port_plain,
        secure_port: port_secure,
        home_page_url,
        status_page_url,
        health_check_url,
        data_center: data_center.and_then(without_defaults),
    })
    .map_err(|_| RegisterError::Invalid)?;
    instance.extension = Some(Extension::Eureka(Arc::new(fields)));
    if xml_metadata_exceeded {
        return Err(RegisterError::Limit(
            instance.first_limit_error(LimitError::Metadata),
        ));
    }
    match tags {
        Ok(tags) => instance.tags = tags,
        Err(exceeded) => return Err(RegisterError::Limit(instance.first_limit_error(exceeded))),
    }
    Ok(instance)
}

/// The data centre without the fields that equal what the renderer shows by default (the Java
/// client always sends them), so a hundred thousand instances do not each keep a copy.
fn without_defaults(mut dc: DataCenter) -> Option<DataCenter> {
    if dc.class.as_deref() == Some(DEFAULT_DATA_CENTER_CLASS) {
        dc.class = None;
    }
    if dc.name.as_deref() == Some(DEFAULT_DATA_CENTER_NAME) {
        dc.name = None;
    }
    (dc != DataCenter::default()).then_some(dc)
}

/// Spec 4.4 step 6: the id when the registration gives no `instanceId`.
fn resolve_id(data_center: Option<&DataCenter>, host_name: &str) -> Result<String, RegisterError> {
    let Some(dc) = data_center else {
        return Ok(host_name.to_string());
    };
    let name = dc.name.as_deref().unwrap_or("");
    let metadata_value = |key: &str| -> Option<serde_json::Value> {
        let text = dc.metadata.as_ref()?.get();
        let members = json::object(text, DATA_CENTER_METADATA_MEMBERS).ok()??;
        members.field(key).ok()?
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
/// empty pieces kept. Fails, without keeping more, once they pass the bound of D38.
pub fn tags_of(metadata: &str) -> Result<Vec<String>, LimitError> {
    let Ok(Some(members)) = json::object(metadata, TAGS_MEMBER) else {
        return Ok(Vec::new());
    };
    let Some(raw) = members.get("amalgam8.tags") else {
        return Ok(Vec::new());
    };
    let text = match serde_json::from_slice::<serde_json::Value>(raw.get().as_bytes()) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Null) | Err(_) => return Ok(Vec::new()),
        Ok(other) => other.to_string(),
    };
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let mut tags = TagCollector::default();
    for piece in text.split([',', ';']) {
        if !tags.push(piece.trim()) {
            break;
        }
    }
    tags.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const J: &str = r#"{"instance":{"instanceId":"host1:myapp:8080","hostName":"host1","app":"MYAPP","ipAddr":"10.0.0.7","status":"UP","port":{"$":8080,"@enabled":"true"},"securePort":{"$":443,"@enabled":"false"},"dataCenterInfo":{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"},"leaseInfo":{"renewalIntervalInSecs":30,"durationInSecs":90},"metadata":{"amalgam8.tags":"v1; canary"},"vipAddress":"myapp"}}"#;

    #[test]
    fn a_lone_surrogate_escape_anywhere_is_refused() {
        // Found by the eureka_json fuzz target: kept raw, it made the rendered answers documents
        // that strict JSON parsers refuse.
        let dc = J.replace(
            r#""name":"MyOwn"}"#,
            r#""name":"Amazon","metadata":{"a\uDacAb":"x"}}"#,
        );
        let metadata = J.replace(r#""v1; canary""#, r#""v1\uD800""#);
        for body in [dc, metadata] {
            assert!(matches!(
                decode(body.as_bytes(), false, "MYAPP"),
                Err(RegisterError::Invalid)
            ));
        }
        let paired = J.replace(r#""v1; canary""#, r#""v1\uD83D\uDE00""#);
        assert!(decode(paired.as_bytes(), false, "MYAPP").is_ok());
    }

    #[test]
    fn a_metadata_number_beyond_f64_is_kept_as_sent() {
        // Found by the eureka_json fuzz campaign, whose check re-parsed the rendered document
        // into values that refuse it: JSON allows it, and metadata is kept as sent.
        let body = J.replace(r#""v1; canary""#, "5E888888888887888888818888443");
        let decoded = decode(body.as_bytes(), false, "MYAPP").unwrap();
        assert_eq!(
            decoded.metadata.unwrap().get(),
            r#"{"amalgam8.tags":5E888888888887888888818888443}"#
        );
    }

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
        let registration = decoded.eureka().unwrap();
        assert_eq!(registration.vip_address(), "myapp");
        assert_eq!(registration.app(), &*decoded.service_name);
        assert_eq!(
            registration.data_center(),
            None,
            "the defaults are not kept"
        );
        assert_eq!(
            registration.port(),
            Some(&Port {
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
        let tags = |m: &str| tags_of(m).unwrap();
        assert_eq!(tags(r#"{"amalgam8.tags":"v1; canary"}"#), ["v1", "canary"]);
        assert_eq!(tags(r#"{"amalgam8.tags":"a,b;c"}"#), ["a", "b", "c"]);
        assert_eq!(tags(r#"{"amalgam8.tags":"a,,b"}"#), ["a", "", "b"]);
        assert_eq!(tags(r#"{"amalgam8.tags":"  "}"#), Vec::<String>::new());
        assert_eq!(tags(r#"{"amalgam8.tags":5}"#), ["5"]);
        assert_eq!(tags(r#"{"other":"x"}"#), Vec::<String>::new());
        assert_eq!(tags("[1]"), Vec::<String>::new());
        let bound = |n: usize| format!(r#"{{"amalgam8.tags":"{}"}}"#, vec!["t"; n].join(";"));
        assert_eq!(tags(&bound(256)).len(), 256);
        assert_eq!(tags_of(&bound(257)), Err(LimitError::Tags));
        let commas = format!(r#"{{"amalgam8.tags":"{}"}}"#, ",".repeat(100_000));
        assert_eq!(tags_of(&commas), Err(LimitError::Tags));
    }

    /// The inverse of [`store_id`]: the first `:` not escaped ends the app.
    fn split_store_id(id: &str) -> Option<(String, &str)> {
        let mut app = String::new();
        let mut chars = id.char_indices();
        while let Some((at, c)) = chars.next() {
            match c {
                ID_ESCAPE => app.push(chars.next()?.1),
                ':' => return Some((app, &id[at + 1..])),
                c => app.push(c),
            }
        }
        None
    }

    #[test]
    fn store_ids_are_unambiguous_and_plain_when_they_can_be() {
        assert_eq!(
            store_id("MYAPP", "host1:myapp:8080"),
            "MYAPP:host1:myapp:8080"
        );
        assert_eq!(store_id("A", "B:c"), "A:B:c");
        assert_eq!(store_id("A:B", "c"), "A~:B:c");
        assert_eq!(store_id("A~", "c"), "A~~:c");
        // Longer than the inline room: built on the heap, the same id.
        let long_app = "A:".repeat(100);
        let long = store_id(&long_app, "c");
        assert!(matches!(long, StoreId::Heap(_)));
        assert_eq!(&*long, format!("{}:c", "A~:".repeat(100)));
        assert!(matches!(store_id("A", "c"), StoreId::Inline(..)));
        let parts = ["", "A", "B", ":", "~", "::", "~:", ":~", "A:B", "~~", "é:"];
        let mut seen = std::collections::HashMap::new();
        for app in parts {
            for iid in parts {
                let id = String::from(&*store_id(app, iid));
                assert_eq!(split_store_id(&id), Some((app.to_string(), iid)), "{id}");
                if let Some(other) = seen.insert(id.clone(), (app, iid)) {
                    panic!("{id} is both {other:?} and {:?}", (app, iid));
                }
            }
        }
        let decoded = decode(
            br#"{"instance":{"instanceId":"c","hostName":"h","ipAddr":"1","vipAddress":"v"}}"#,
            false,
            "A:B",
        )
        .unwrap();
        assert_eq!(&*decoded.id, "A~:B:c");
        assert_eq!(decoded.eureka().unwrap().instance_id(), Some("c"));
    }

    #[test]
    fn limits_found_while_decoding_keep_the_store_order() {
        let body = |metadata: &str, host: &str| {
            format!(
                r#"{{"instance":{{"hostName":"{host}","ipAddr":"1","vipAddress":"v","port":{{"$":1,"@enabled":true}},"metadata":{metadata}}}}}"#
            )
        };
        let many = format!(r#"{{"amalgam8.tags":"{}"}}"#, ",".repeat(300));
        assert_eq!(
            decode(body(&many, "h").as_bytes(), false, "A").unwrap_err(),
            RegisterError::Limit(LimitError::Tags)
        );
        let long_host = "h".repeat(200);
        assert_eq!(
            decode(body(&many, &long_host).as_bytes(), false, "A").unwrap_err(),
            RegisterError::Limit(LimitError::EndpointValue)
        );
        let mut huge = String::from("{\"amalgam8.tags\":\"");
        huge.push_str(&",".repeat(500_000));
        huge.push_str("\"}");
        let decoded = decode(body(&huge, "h").as_bytes(), false, "A").unwrap();
        assert!(
            decoded.tags.is_empty(),
            "left to the store's metadata check"
        );
        assert_eq!(decoded.check_limits(), Err(LimitError::Metadata));
        let mut xml = String::from("<instance><hostName>h</hostName><ipAddr>1</ipAddr><vipAddress>v</vipAddress><metadata>");
        for i in 0..1_000 {
            xml.push_str(&format!("<key{i}/>"));
        }
        xml.push_str("</metadata></instance>");
        assert_eq!(
            decode(xml.as_bytes(), true, "A").unwrap_err(),
            RegisterError::Limit(LimitError::Metadata)
        );
        let xml = xml.replace(
            "<hostName>h</hostName>",
            &format!("<hostName>{long_host}</hostName>"),
        );
        assert_eq!(
            decode(xml.as_bytes(), true, "A").unwrap_err(),
            RegisterError::Limit(LimitError::EndpointValue)
        );
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
        assert_eq!(from_xml.eureka(), from_json.eureka());
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
