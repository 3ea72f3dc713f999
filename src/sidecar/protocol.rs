//! The registry protocols as pure functions (sidecar contract §3 and §5): what to send to
//! register, renew and deregister, and what an answer means. No I/O happens here; the agent
//! sends the [`Request`]s through its HTTP client and hands the status and body back.
//!
//! The bodies are checked in the unit tests against the library's own decoders, the ones the
//! registry answers with, so the sidecar and the server cannot drift apart.

use super::settings::{Protocol, SidecarConfig};
use crate::api::json::push_string;
use crate::registry::instance::{derive_id, Endpoint, EndpointType};
use std::net::IpAddr;
use std::time::Duration;

/// The shortest heartbeat period, in milliseconds.
const MIN_HEARTBEAT_PERIOD_MILLIS: u64 = 100;

/// Eureka's `dataCenterInfo` class for instances outside a cloud.
const DEFAULT_DATA_CENTER_CLASS: &str = "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo";
/// The secure port sent (disabled) when the endpoint is not `https`.
const DEFAULT_SECURE_PORT: u16 = 443;

/// One request to the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: &'static str,
    pub url: String,
    /// `Content-Type: application/json` and this body; `None`: an empty body.
    pub json_body: Option<String>,
}

/// The registration that the registry accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    /// The id heartbeats and the deregistration address.
    pub id: String,
    /// The heartbeat period: the answered TTL / 3 (Amalgam8) or `--ttl` / 3 (Eureka).
    pub period: Duration,
    /// The TTL in force, in seconds, for the log line.
    pub ttl_secs: u64,
}

/// What a heartbeat answer means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// 200: the next one a period later.
    Renewed,
    /// The registry does not know the instance (410; Eureka 404 or 410): register at once.
    Unknown(u16),
    /// Anything else: the registry counts as unreachable.
    Failed(String),
}

/// The identity of this instance for one registration attempt: the endpoint host is looked up
/// at each attempt, and the Eureka instance id follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub host: String,
    /// Eureka's `ipAddr`: the host when it is an IP address, else its resolved address.
    pub ip_addr: String,
}

/// The protocol in use with its fixed names.
#[derive(Clone, Debug)]
pub struct Codec {
    protocol: Protocol,
    base: String,
    service_name: String,
    tags: Vec<String>,
    port: u16,
    endpoint_type: EndpointType,
    ttl_secs: u32,
    eureka_app: String,
    eureka_instance_id: Option<String>,
}

impl Codec {
    pub fn new(config: &SidecarConfig) -> Codec {
        let base = match config.protocol {
            Protocol::Amalgam8 => config.registry_url.clone(),
            Protocol::Eureka => eureka_base(&config.registry_url),
        };
        Codec {
            protocol: config.protocol,
            base,
            service_name: config.service_name.clone(),
            tags: config.tags.clone(),
            port: config.endpoint_port,
            endpoint_type: config.endpoint_type,
            ttl_secs: config.ttl_secs,
            eureka_app: config.eureka_app.clone(),
            eureka_instance_id: config.eureka_instance_id.clone(),
        }
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The Eureka instance id for this identity.
    fn instance_id(&self, identity: &Identity) -> String {
        match &self.eureka_instance_id {
            Some(id) => id.clone(),
            None => format!("{}:{}:{}", identity.host, self.service_name, self.port),
        }
    }

    /// The id the registry will give this registration (the deterministic Amalgam8 id of
    /// `http-api.md` §3.2, or the Eureka instance id), for log lines written before it answers.
    pub fn expected_id(&self, identity: &Identity) -> String {
        match self.protocol {
            Protocol::Amalgam8 => derive_id(
                &self.service_name,
                &Endpoint {
                    kind: self.endpoint_type,
                    value: self.endpoint_value(&identity.host),
                },
            ),
            Protocol::Eureka => self.instance_id(identity),
        }
    }

    /// `host:port`, an IPv6 host in brackets (S2).
    fn endpoint_value(&self, host: &str) -> String {
        if host.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The heartbeat period for a TTL in seconds: a third of it (S4), never below
    /// [`MIN_HEARTBEAT_PERIOD_MILLIS`] so that a TTL of 0 cannot make the agent spin.
    fn period_of(ttl_secs: u64) -> Duration {
        Duration::from_millis((ttl_secs.saturating_mul(1000) / 3).max(MIN_HEARTBEAT_PERIOD_MILLIS))
    }

    /// `POST <url>/api/v1/instances` or `POST <base>/apps/<app>`.
    pub fn register(&self, identity: &Identity) -> Request {
        match self.protocol {
            Protocol::Amalgam8 => {
                let mut body = String::from("{\"service_name\":");
                push_string(&mut body, &self.service_name);
                body.push_str(",\"endpoint\":{\"type\":");
                push_string(&mut body, self.endpoint_type.as_str());
                body.push_str(",\"value\":");
                push_string(&mut body, &self.endpoint_value(&identity.host));
                body.push_str(&format!("}},\"ttl\":{}", self.ttl_secs));
                if !self.tags.is_empty() {
                    body.push_str(",\"tags\":[");
                    for (i, tag) in self.tags.iter().enumerate() {
                        if i > 0 {
                            body.push(',');
                        }
                        push_string(&mut body, tag);
                    }
                    body.push(']');
                }
                body.push('}');
                Request {
                    method: "POST",
                    url: format!("{}/api/v1/instances", self.base),
                    json_body: Some(body),
                }
            }
            Protocol::Eureka => Request {
                method: "POST",
                url: format!("{}/apps/{}", self.base, path_segment(&self.eureka_app)),
                json_body: Some(self.eureka_instance(identity)),
            },
        }
    }

    /// The Eureka registration body of §5.
    fn eureka_instance(&self, identity: &Identity) -> String {
        let secure = self.endpoint_type == EndpointType::Https;
        let (port, secure_port) = if secure {
            (self.port, self.port)
        } else {
            (self.port, DEFAULT_SECURE_PORT)
        };
        let text = |value: &str| {
            let mut out = String::new();
            push_string(&mut out, value);
            out
        };
        let mut body = String::from("{\"instance\":{");
        body.push_str(&format!(
            "\"instanceId\":{},\"hostName\":{},\"app\":{},\"ipAddr\":{},\"vipAddress\":{},",
            text(&self.instance_id(identity)),
            text(&identity.host),
            text(&self.eureka_app),
            text(&identity.ip_addr),
            text(&self.service_name),
        ));
        if secure {
            body.push_str(&format!(
                "\"secureVipAddress\":{},",
                text(&self.service_name)
            ));
        }
        body.push_str(&format!(
            "\"status\":\"UP\",\"port\":{{\"$\":{port},\"@enabled\":\"{}\"}},\
             \"securePort\":{{\"$\":{secure_port},\"@enabled\":\"{}\"}},\
             \"dataCenterInfo\":{{\"@class\":{},\"name\":\"MyOwn\"}},\
             \"leaseInfo\":{{\"renewalIntervalInSecs\":{},\"durationInSecs\":{}}},\"metadata\":{{",
            !secure,
            secure,
            text(DEFAULT_DATA_CENTER_CLASS),
            (self.ttl_secs / 3).max(1),
            self.ttl_secs,
        ));
        if !self.tags.is_empty() {
            body.push_str(&format!("\"amalgam8.tags\":{}", text(&self.tags.join(","))));
        }
        body.push_str("}}}");
        body
    }

    /// What a registration answer means; `Err` is the reason of a failed attempt.
    pub fn registered(
        &self,
        identity: &Identity,
        status: u16,
        body: &[u8],
    ) -> Result<Registered, String> {
        match self.protocol {
            Protocol::Amalgam8 => {
                if status != 201 {
                    return Err(format!("registry answered {status}{}", excerpt(body)));
                }
                let answer: serde_json::Value = serde_json::from_slice(body)
                    .map_err(|e| format!("unreadable registration answer: {e}"))?;
                let id = answer
                    .get("id")
                    .and_then(|id| id.as_str())
                    .filter(|id| !id.is_empty())
                    .ok_or("the registration answer has no id")?
                    .to_string();
                // A 201 without a numeric TTL counts as the requested one.
                let ttl_secs = answer
                    .get("ttl")
                    .and_then(|ttl| ttl.as_f64())
                    .filter(|ttl| *ttl >= 1.0)
                    .map_or(u64::from(self.ttl_secs), |ttl| ttl as u64);
                Ok(Registered {
                    id,
                    period: Codec::period_of(ttl_secs),
                    ttl_secs,
                })
            }
            Protocol::Eureka => {
                if !(200..300).contains(&status) {
                    return Err(format!("registry answered {status}{}", excerpt(body)));
                }
                Ok(Registered {
                    id: self.instance_id(identity),
                    period: Codec::period_of(u64::from(self.ttl_secs)),
                    ttl_secs: u64::from(self.ttl_secs),
                })
            }
        }
    }

    /// `PUT .../heartbeat` or `PUT <base>/apps/<app>/<id>`.
    pub fn heartbeat(&self, id: &str) -> Request {
        Request {
            method: "PUT",
            url: self.instance_url(id, "/heartbeat"),
            json_body: None,
        }
    }

    pub fn renewal(&self, status: u16) -> Renewal {
        match (self.protocol, status) {
            (_, 200) => Renewal::Renewed,
            (Protocol::Amalgam8, 410) | (Protocol::Eureka, 404 | 410) => Renewal::Unknown(status),
            _ => Renewal::Failed(format!("registry answered {status}")),
        }
    }

    /// `DELETE /api/v1/instances/<id>` or `DELETE <base>/apps/<app>/<id>`.
    pub fn deregister(&self, id: &str) -> Request {
        Request {
            method: "DELETE",
            url: self.instance_url(id, ""),
            json_body: None,
        }
    }

    /// Whether a deregistration answer means done: 200 and 410 (Eureka: any 2xx, 404, 410).
    pub fn deregistered(&self, status: u16) -> bool {
        match self.protocol {
            Protocol::Amalgam8 => status == 200 || status == 410,
            Protocol::Eureka => (200..300).contains(&status) || status == 404 || status == 410,
        }
    }

    fn instance_url(&self, id: &str, amalgam8_suffix: &str) -> String {
        match self.protocol {
            Protocol::Amalgam8 => format!(
                "{}/api/v1/instances/{}{amalgam8_suffix}",
                self.base,
                path_segment(id)
            ),
            Protocol::Eureka => format!(
                "{}/apps/{}/{}",
                self.base,
                path_segment(&self.eureka_app),
                path_segment(id)
            ),
        }
    }
}

/// The Eureka base: a URL without a path (or with `/` only) means `/eureka/v2`.
fn eureka_base(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    if url[after_scheme..].contains('/') {
        url.trim_end_matches('/').to_string()
    } else {
        format!("{url}/eureka/v2")
    }
}

/// A path segment as sent: letters, digits and `-._~!$&'()*+,;=:@` raw, everything else
/// percent-encoded (so a `:` goes raw, which the original registry requires).
pub fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The start of an error answer's body, for the log line.
fn excerpt(body: &[u8]) -> String {
    /// Bytes of an error body quoted in a log line.
    const EXCERPT_BYTES: usize = 200;
    if body.is_empty() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_BYTES)]);
    format!(": {}", text.trim())
}

/// The host address of this machine (S2): its first non-loopback IPv4 address, else its first
/// non-loopback, non-link-local IPv6 address, among `addresses` in interface order.
pub fn pick_host_address(addresses: &[IpAddr]) -> Option<IpAddr> {
    let v4 = addresses
        .iter()
        .find(|a| matches!(a, IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_unspecified()));
    let v6 = || {
        addresses.iter().find(|a| match a {
            IpAddr::V6(v6) => {
                !v6.is_loopback()
                    && !v6.is_unspecified()
                    // fe80::/10
                    && (v6.segments()[0] & 0xffc0) != 0xfe80
            }
            IpAddr::V4(_) => false,
        })
    };
    v4.or_else(v6).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LogFormat, LogLevel, Secret};

    fn config(protocol: Protocol) -> SidecarConfig {
        SidecarConfig {
            service_name: "reviews".into(),
            tags: vec!["v1".into(), "canary".into()],
            endpoint_host: Some("10.0.0.5".into()),
            endpoint_port: 9080,
            endpoint_type: EndpointType::Http,
            registry_url: "http://registry:8080".into(),
            registry_token: Secret::default(),
            protocol,
            ttl_secs: 60,
            eureka_app: "REVIEWS".into(),
            eureka_instance_id: None,
            health_checks: vec![],
            commands: vec![],
            log_level: LogLevel::Info,
            log_format: LogFormat::Text,
            warnings: vec![],
        }
    }

    fn identity(host: &str) -> Identity {
        Identity {
            host: host.into(),
            ip_addr: host.into(),
        }
    }

    #[test]
    fn amalgam8_registration_is_the_contract_body() {
        let codec = Codec::new(&config(Protocol::Amalgam8));
        let request = codec.register(&identity("10.0.0.5"));
        assert_eq!(request.method, "POST");
        assert_eq!(request.url, "http://registry:8080/api/v1/instances");
        assert_eq!(
            request.json_body.as_deref(),
            Some(
                r#"{"service_name":"reviews","endpoint":{"type":"http","value":"10.0.0.5:9080"},"ttl":60,"tags":["v1","canary"]}"#
            )
        );
        let mut untagged = config(Protocol::Amalgam8);
        untagged.tags.clear();
        let body = Codec::new(&untagged)
            .register(&identity("fd00::5"))
            .json_body
            .unwrap();
        assert_eq!(
            body,
            r#"{"service_name":"reviews","endpoint":{"type":"http","value":"[fd00::5]:9080"},"ttl":60}"#
        );
    }

    #[test]
    fn the_registry_decodes_what_the_sidecar_sends() {
        // The server's own decoder and id derivation: the id the registry will answer.
        let codec = Codec::new(&config(Protocol::Amalgam8));
        let body = codec.register(&identity("10.0.0.5")).json_body.unwrap();
        let decoded = crate::api::amalgam8::decode_for_tests(body.as_bytes());
        assert_eq!(decoded.0, "reviews");
        assert_eq!(decoded.1, "26634d9e31ce714e");
        assert_eq!(codec.expected_id(&identity("10.0.0.5")), decoded.1);
        assert_eq!(decoded.2, Some(60));
        assert_eq!(decoded.3, ["v1", "canary"]);
    }

    #[test]
    fn answers_set_the_period_from_the_answered_ttl() {
        let codec = Codec::new(&config(Protocol::Amalgam8));
        let me = identity("h");
        let ok = codec
            .registered(&me, 201, br#"{"id":"abc","ttl":3,"links":{}}"#)
            .unwrap();
        assert_eq!((ok.id.as_str(), ok.period), ("abc", Duration::from_secs(1)));
        let ok = codec
            .registered(&me, 201, br#"{"id":"abc","ttl":"x"}"#)
            .unwrap();
        assert_eq!(ok.period, Duration::from_secs(20), "the requested TTL");
        assert!(codec.registered(&me, 200, br#"{"id":"abc"}"#).is_err());
        assert!(codec.registered(&me, 201, b"nope").is_err());
        assert!(codec.registered(&me, 201, br#"{"ttl":3}"#).is_err());
        assert_eq!(codec.renewal(200), Renewal::Renewed);
        assert_eq!(codec.renewal(410), Renewal::Unknown(410));
        assert!(matches!(codec.renewal(404), Renewal::Failed(_)));
        assert!(matches!(codec.renewal(500), Renewal::Failed(_)));
        assert!(codec.deregistered(410) && !codec.deregistered(500));
        assert_eq!(
            codec.heartbeat("a b").url,
            "http://registry:8080/api/v1/instances/a%20b/heartbeat"
        );
    }

    #[test]
    fn eureka_registration_decodes_to_the_documented_instance() {
        let codec = Codec::new(&config(Protocol::Eureka));
        let me = Identity {
            host: "app.local".into(),
            ip_addr: "10.0.0.5".into(),
        };
        let request = codec.register(&me);
        assert_eq!(request.url, "http://registry:8080/eureka/v2/apps/REVIEWS");
        let body = request.json_body.unwrap();
        let instance = crate::api::eureka::model::decode(body.as_bytes(), false, "REVIEWS")
            .expect("the registry accepts the sidecar's body");
        assert_eq!(&*instance.id, "REVIEWS:app.local:reviews:9080");
        assert_eq!(&*instance.service_name, "REVIEWS");
        assert_eq!(instance.endpoint.kind, EndpointType::Tcp);
        assert_eq!(instance.endpoint.value, "app.local:9080");
        assert_eq!(instance.tags, ["v1", "canary"]);
        let json: serde_json::Value = serde_json::from_slice(body.as_bytes()).unwrap();
        assert_eq!(json["instance"]["leaseInfo"]["renewalIntervalInSecs"], 20);
        assert_eq!(json["instance"]["ipAddr"], "10.0.0.5");
        assert_eq!(json["instance"]["securePort"]["@enabled"], "false");
        assert_eq!(
            codec.heartbeat("app.local:reviews:9080").url,
            "http://registry:8080/eureka/v2/apps/REVIEWS/app.local:reviews:9080"
        );
        assert_eq!(codec.renewal(404), Renewal::Unknown(404));
        assert_eq!(codec.renewal(410), Renewal::Unknown(410));
        assert!(codec.registered(&me, 204, b"").is_ok());
        assert!(codec.deregistered(404));

        let mut secure = config(Protocol::Eureka);
        secure.endpoint_type = EndpointType::Https;
        secure.tags.clear();
        secure.registry_url = "http://r/api/eureka/default/v2/".into();
        let codec = Codec::new(&secure);
        let request = codec.register(&me);
        assert_eq!(request.url, "http://r/api/eureka/default/v2/apps/REVIEWS");
        let instance = crate::api::eureka::model::decode(
            request.json_body.unwrap().as_bytes(),
            false,
            "REVIEWS",
        )
        .unwrap();
        assert_eq!(instance.endpoint.kind, EndpointType::Https);
        assert!(instance.tags.is_empty());
    }

    #[test]
    fn path_segments_keep_colons_raw() {
        assert_eq!(path_segment("h:svc:80"), "h:svc:80");
        assert_eq!(path_segment("a b/c?é"), "a%20b%2Fc%3F%C3%A9");
    }

    #[test]
    fn the_host_address_prefers_ipv4_and_skips_loopback_and_link_local() {
        let parse =
            |list: &[&str]| -> Vec<IpAddr> { list.iter().map(|a| a.parse().unwrap()).collect() };
        assert_eq!(
            pick_host_address(&parse(&[
                "127.0.0.1",
                "::1",
                "fe80::1",
                "fd00::5",
                "10.0.0.5"
            ])),
            Some("10.0.0.5".parse().unwrap())
        );
        assert_eq!(
            pick_host_address(&parse(&["127.0.0.1", "fe80::1", "fd00::5"])),
            Some("fd00::5".parse().unwrap())
        );
        assert_eq!(
            pick_host_address(&parse(&["127.0.0.1", "::1", "fe80::2"])),
            None
        );
    }
}
