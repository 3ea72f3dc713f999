//! Registry instances as Eureka renders them: JSON (spec 4.6) and Netflix's XML (spec 4.7), the
//! application documents around them, and the hash code (spec 4.8).

use super::xml::{element as xml_element, escape_attribute, escape_text, write_metadata};
use crate::api::json::write_string as json_str;
use crate::http::response::{More, Producer};
use crate::registry::instance::{EndpointType, EurekaFields, Instance, Port, PortNumber};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A response body format (defined beside the cache, which keeps one body per format).
pub use crate::api::cache::Format;

/// The `dataCenterInfo` shown when none was registered (and not kept when one equals it).
pub const DEFAULT_DATA_CENTER_CLASS: &str =
    "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo";
pub const DEFAULT_DATA_CENTER_NAME: &str = "MyOwn";
const UNKNOWN: &str = "UNKNOWN";

/// `actionType` of a rendered instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Added,
    Modified,
    Deleted,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Added => "ADDED",
            Action::Modified => "MODIFIED",
            Action::Deleted => "DELETED",
        }
    }

    /// The action a live instance shows: MODIFIED once its status or metadata changed.
    pub fn of(instance: &Instance) -> Action {
        if instance.modified {
            Action::Modified
        } else {
            Action::Added
        }
    }
}

/// A port as rendered.
struct PortView<'a> {
    enabled: bool,
    value: Option<PortValue<'a>>,
}

enum PortValue<'a> {
    /// As registered: a JSON number stays a number.
    Registered(&'a PortNumber),
    /// Taken from the endpoint value (a URL or `host:port`): rendered as a JSON string.
    FromEndpoint(&'a str),
}

impl PortValue<'_> {
    fn text(&self) -> String {
        match self {
            PortValue::Registered(number) => number.text(),
            PortValue::FromEndpoint(text) => text.to_string(),
        }
    }
}

/// Every field of spec 4.6, defaults overlaid with the registration.
struct View<'a> {
    instance_id: &'a str,
    host_name: &'a str,
    app: &'a str,
    app_group_name: &'a str,
    ip_addr: &'a str,
    vip_address: &'a str,
    secure_vip_address: Option<&'a str>,
    status: Option<&'a str>,
    country_id: i64,
    port: Option<PortView<'a>>,
    secure_port: Option<PortView<'a>>,
    home_page_url: Option<&'a str>,
    status_page_url: Option<&'a str>,
    health_check_url: Option<&'a str>,
    data_center_class: &'a str,
    data_center_name: &'a str,
    data_center_metadata: Option<&'a str>,
    renewal_interval: u32,
    duration: u64,
    registered_ms: i64,
    renewed_ms: i64,
    service_up_ms: i64,
    metadata: Option<&'a RawValue>,
    updated_ms: i64,
    dirty_ms: i64,
    action: Action,
}

fn millis(unix_nanos: i64) -> i64 {
    if unix_nanos <= 0 {
        0
    } else {
        unix_nanos / 1_000_000
    }
}

/// `scheme://host:port…` → (scheme, host, port); anything else → `None` (spec 4.6).
fn split_url(value: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = value.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (host, port) = authority.rsplit_once(':')?;
    if host.is_empty() || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((scheme, host, port))
}

/// The most digits a `host:port` port may have (65535).
const MAX_PORT_DIGITS: usize = 5;

/// `host:port` → (host, port) when `host` is a name, an IPv4 literal or a bracketed IPv6 literal
/// (returned without its brackets) and `port` a decimal 1..65535 (returned without leading
/// zeros); anything else → `None`, and the value is rendered whole (spec D37, 4.6).
fn split_host_port(value: &str) -> Option<(&str, &str)> {
    let (host, port) = match value.strip_prefix('[') {
        Some(bracketed) => {
            let (literal, rest) = bracketed.split_once(']')?;
            literal.parse::<std::net::Ipv6Addr>().ok()?;
            (literal, rest.strip_prefix(':')?)
        }
        None => {
            let (host, port) = value.split_once(':')?;
            let name_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
            if host.is_empty() || !host.bytes().all(name_byte) {
                return None;
            }
            (host, port)
        }
    };
    let digits = !port.is_empty()
        && port.len() <= MAX_PORT_DIGITS
        && port.bytes().all(|b| b.is_ascii_digit());
    if !digits || port.parse::<u16>().map_or(true, |p| p == 0) {
        return None;
    }
    Some((host, port.trim_start_matches('0')))
}

fn view<'a>(instance: &'a Instance, action: Action) -> View<'a> {
    let value = instance.endpoint.value.as_str();
    let mut host = value;
    let mut port = None;
    let mut secure_port = None;
    // D37 is about instances registered through `/api/v1` (or mirrored): a Eureka registration
    // brings its own host and ports, and gets no port it did not register.
    let registered_through_eureka = instance.eureka().is_some();
    let split = split_url(value)
        .map(|(scheme, host, port)| (scheme.eq_ignore_ascii_case("https"), host, port))
        .or_else(|| split_host_port(value).map(|(host, port)| (false, host, port)))
        .filter(|_| !registered_through_eureka);
    if let Some((https_url, endpoint_host, endpoint_port)) = split {
        host = endpoint_host;
        let rendered = Some(PortView {
            enabled: true,
            value: Some(PortValue::FromEndpoint(endpoint_port)),
        });
        if https_url || instance.endpoint.kind == EndpointType::Https {
            secure_port = rendered;
        } else {
            port = rendered;
        }
    }
    let mut view = View {
        // D37: the registry id keeps two instances on one host apart in a client's map; a
        // Eureka registration's own `instanceId` replaces it (step 2).
        instance_id: &instance.id,
        ip_addr: host,
        host_name: host,
        app: &instance.service_name,
        app_group_name: UNKNOWN,
        vip_address: &instance.service_name,
        secure_vip_address: None,
        status: Some(instance.status.as_str()).filter(|s| !s.is_empty()),
        country_id: 1,
        port,
        secure_port,
        home_page_url: None,
        status_page_url: None,
        health_check_url: None,
        data_center_class: DEFAULT_DATA_CENTER_CLASS,
        data_center_name: DEFAULT_DATA_CENTER_NAME,
        data_center_metadata: None,
        renewal_interval: instance.renewal_interval_secs,
        duration: instance.ttl.as_secs(),
        registered_ms: millis(instance.registered_unix_nanos),
        renewed_ms: millis(instance.last_heartbeat.get()),
        service_up_ms: millis(instance.service_up_unix_nanos),
        metadata: instance.metadata.as_deref(),
        updated_ms: millis(instance.updated_unix_nanos),
        dirty_ms: instance.dirty_unix_millis,
        action,
    };
    if let Some(fields) = instance.eureka() {
        overlay(&mut view, fields);
    }
    view
}

/// The instance id of a Eureka store id `APP:iid`: what follows the first `:` of the app part,
/// whose own `:` and `~` are escaped with `~`.
fn resolved_instance_id(store_id: &str) -> &str {
    let mut escaped = false;
    for (at, byte) in store_id.bytes().enumerate() {
        match (escaped, byte) {
            (true, _) => escaped = false,
            (false, b'~') => escaped = true,
            (false, b':') => return &store_id[at + 1..],
            _ => {}
        }
    }
    store_id
}

fn overlay<'a>(view: &mut View<'a>, fields: &'a EurekaFields) {
    // Its own `instanceId`, or the one resolved at registration (the store id after the app), so
    // that a client renewing by the id it reads reaches the record.
    view.instance_id = fields
        .instance_id()
        .unwrap_or_else(|| resolved_instance_id(view.instance_id));
    view.host_name = fields.host_name();
    view.app = fields.app();
    if let Some(group) = fields.app_group_name() {
        view.app_group_name = group;
    }
    view.ip_addr = fields.ip_addr();
    view.vip_address = fields.vip_address();
    view.secure_vip_address = fields.secure_vip_address();
    if let Some(country) = fields.country_id() {
        view.country_id = country;
    }
    let port_view = |p: &'a Port| PortView {
        enabled: p.enabled,
        value: p.number.as_ref().map(PortValue::Registered),
    };
    if let Some(port) = fields.port() {
        view.port = Some(port_view(port));
    }
    if let Some(port) = fields.secure_port() {
        view.secure_port = Some(port_view(port));
    }
    view.home_page_url = fields.home_page_url();
    view.status_page_url = fields.status_page_url();
    view.health_check_url = fields.health_check_url();
    if let Some(dc) = fields.data_center() {
        if let Some(class) = &dc.class {
            view.data_center_class = class;
        }
        if let Some(name) = &dc.name {
            view.data_center_name = name;
        }
        view.data_center_metadata = dc.metadata.as_ref().map(|m| m.get());
    }
}

fn json_key_str(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    json_str(out, value);
}

fn json_port(out: &mut Vec<u8>, key: &str, port: &PortView) {
    out.extend_from_slice(format!(",\"{key}\":{{\"@enabled\":\"{}\"", port.enabled).as_bytes());
    match &port.value {
        Some(PortValue::Registered(PortNumber::Number(n))) => {
            out.extend_from_slice(format!(",\"$\":{n}").as_bytes())
        }
        Some(PortValue::Registered(PortNumber::Text(t))) => {
            out.extend_from_slice(b",\"$\":");
            json_str(out, t);
        }
        Some(PortValue::FromEndpoint(t)) => {
            out.extend_from_slice(b",\"$\":");
            json_str(out, t);
        }
        None => {}
    }
    out.push(b'}');
}

/// Writes the JSON instance object (without a wrapper), keys in the order of spec 4.6.
fn write_json(out: &mut Vec<u8>, v: &View<'_>) {
    out.extend_from_slice(b"{\"instanceId\":");
    json_str(out, v.instance_id);
    json_key_str(out, "hostName", v.host_name);
    json_key_str(out, "app", v.app);
    json_key_str(out, "appGroupName", v.app_group_name);
    json_key_str(out, "ipAddr", v.ip_addr);
    json_key_str(out, "vipAddress", v.vip_address);
    if let Some(svip) = v.secure_vip_address {
        json_key_str(out, "secureVipAddress", svip);
    }
    if let Some(status) = v.status {
        json_key_str(out, "status", status);
    }
    json_key_str(out, "overriddenstatus", UNKNOWN);
    out.extend_from_slice(format!(",\"countryId\":{}", v.country_id).as_bytes());
    if let Some(port) = &v.port {
        json_port(out, "port", port);
    }
    if let Some(port) = &v.secure_port {
        json_port(out, "securePort", port);
    }
    for (key, value) in [
        ("homePageUrl", v.home_page_url),
        ("statusPageUrl", v.status_page_url),
        ("healthCheckUrl", v.health_check_url),
    ] {
        if let Some(value) = value {
            json_key_str(out, key, value);
        }
    }
    out.extend_from_slice(b",\"dataCenterInfo\":{\"@class\":");
    json_str(out, v.data_center_class);
    json_key_str(out, "name", v.data_center_name);
    if let Some(metadata) = v.data_center_metadata {
        out.extend_from_slice(b",\"metadata\":");
        out.extend_from_slice(metadata.as_bytes());
    }
    out.push(b'}');
    out.extend_from_slice(
        format!(
            ",\"leaseInfo\":{{\"renewalIntervalInSecs\":{},\"durationInSecs\":{},\"registrationTimestamp\":{},\"lastRenewalTimestamp\":{},\"evictionTimestamp\":0,\"serviceUpTimestamp\":{}}}",
            v.renewal_interval, v.duration, v.registered_ms, v.renewed_ms, v.service_up_ms
        )
        .as_bytes(),
    );
    if let Some(metadata) = v.metadata {
        out.extend_from_slice(b",\"metadata\":");
        out.extend_from_slice(metadata.get().as_bytes());
    }
    out.extend_from_slice(
        format!(
            ",\"isCoordinatingDiscoveryServer\":\"false\",\"lastUpdatedTimestamp\":\"{}\",\"lastDirtyTimestamp\":\"{}\",\"actionType\":\"{}\"}}",
            v.updated_ms,
            v.dirty_ms,
            v.action.as_str()
        )
        .as_bytes(),
    );
}

fn xml_port(out: &mut Vec<u8>, name: &str, port: &PortView) {
    out.extend_from_slice(format!("<{name} enabled=\"{}\">", port.enabled).as_bytes());
    if let Some(value) = &port.value {
        escape_text(out, &value.text());
    }
    out.extend_from_slice(format!("</{name}>").as_bytes());
}

/// Writes the `<instance>` element, children in Netflix's order (spec 4.7).
fn write_xml(out: &mut Vec<u8>, v: &View<'_>) {
    out.extend_from_slice(b"<instance>");
    xml_element(out, "instanceId", v.instance_id);
    xml_element(out, "hostName", v.host_name);
    xml_element(out, "app", v.app);
    xml_element(out, "ipAddr", v.ip_addr);
    if let Some(status) = v.status {
        xml_element(out, "status", status);
    }
    xml_element(out, "overriddenstatus", UNKNOWN);
    if let Some(port) = &v.port {
        xml_port(out, "port", port);
    }
    if let Some(port) = &v.secure_port {
        xml_port(out, "securePort", port);
    }
    xml_element(out, "countryId", &v.country_id.to_string());
    out.extend_from_slice(b"<dataCenterInfo class=\"");
    escape_attribute(out, v.data_center_class);
    out.extend_from_slice(b"\">");
    xml_element(out, "name", v.data_center_name);
    if let Some(metadata) = v.data_center_metadata {
        write_metadata(out, metadata);
    }
    out.extend_from_slice(b"</dataCenterInfo>");
    out.extend_from_slice(
        format!(
            "<leaseInfo><renewalIntervalInSecs>{}</renewalIntervalInSecs><durationInSecs>{}</durationInSecs><registrationTimestamp>{}</registrationTimestamp><lastRenewalTimestamp>{}</lastRenewalTimestamp><evictionTimestamp>0</evictionTimestamp><serviceUpTimestamp>{}</serviceUpTimestamp></leaseInfo>",
            v.renewal_interval, v.duration, v.registered_ms, v.renewed_ms, v.service_up_ms
        )
        .as_bytes(),
    );
    if let Some(metadata) = v.metadata {
        write_metadata(out, metadata.get());
    }
    xml_element(out, "appGroupName", v.app_group_name);
    for (name, value) in [
        ("homePageUrl", v.home_page_url),
        ("statusPageUrl", v.status_page_url),
        ("healthCheckUrl", v.health_check_url),
    ] {
        if let Some(value) = value {
            xml_element(out, name, value);
        }
    }
    xml_element(out, "vipAddress", v.vip_address);
    if let Some(svip) = v.secure_vip_address {
        xml_element(out, "secureVipAddress", svip);
    }
    out.extend_from_slice(
        format!(
            "<isCoordinatingDiscoveryServer>false</isCoordinatingDiscoveryServer><lastUpdatedTimestamp>{}</lastUpdatedTimestamp><lastDirtyTimestamp>{}</lastDirtyTimestamp><actionType>{}</actionType></instance>",
            v.updated_ms,
            v.dirty_ms,
            v.action.as_str()
        )
        .as_bytes(),
    );
}

/// Writes one instance (no wrapper) in `format`.
pub fn write_instance(out: &mut Vec<u8>, format: Format, instance: &Instance, action: Action) {
    let v = view(instance, action);
    match format {
        Format::Json => write_json(out, &v),
        Format::Xml => write_xml(out, &v),
    }
}

/// `{"instance":{…}}` or `<instance>…</instance>`.
pub fn instance_document(format: Format, instance: &Instance) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    if format == Format::Json {
        out.extend_from_slice(b"{\"instance\":");
    }
    write_instance(&mut out, format, instance, Action::of(instance));
    if format == Format::Json {
        out.push(b'}');
    }
    out
}

/// Instances grouped by app, each already rendered, for the application documents.
#[derive(Default)]
pub struct Apps {
    apps: BTreeMap<String, Vec<Vec<u8>>>,
    statuses: BTreeMap<String, usize>,
}

impl Apps {
    /// Renders and adds one instance.
    pub fn add(&mut self, format: Format, instance: &Instance, action: Action) {
        let mut body = Vec::with_capacity(1024);
        write_instance(&mut body, format, instance, action);
        match self.apps.get_mut(&*instance.service_name) {
            Some(instances) => instances.push(body),
            None => {
                self.apps
                    .insert(instance.service_name.to_string(), vec![body]);
            }
        }
        self.count_status(&instance.status);
    }

    /// Counts a status toward the hash code without rendering an instance.
    pub fn count_status(&mut self, status: &str) {
        let status = if status.is_empty() { "UP" } else { status };
        match self.statuses.get_mut(status) {
            Some(count) => *count += 1,
            None => {
                self.statuses.insert(status.to_string(), 1);
            }
        }
    }

    /// The hash code of the instances counted: `<STATUS>_<count>_` per status, sorted by status.
    pub fn hash_code(&self) -> String {
        self.statuses
            .iter()
            .map(|(status, count)| format!("{status}_{count}_"))
            .collect()
    }

    /// `{"application":{…}}` or `<application>…</application>` for the single app held.
    pub fn application_document(&self, format: Format) -> Vec<u8> {
        let mut out = Vec::new();
        if format == Format::Json {
            out.extend_from_slice(b"{\"application\":");
        }
        for (name, instances) in &self.apps {
            write_application(&mut out, format, name, instances);
        }
        if format == Format::Json {
            out.push(b'}');
        }
        out
    }

    /// The application list, with the given version and hash code.
    pub fn applications_document(&self, format: Format, version: u64, hash_code: &str) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(256 + self.apps.values().flatten().map(Vec::len).sum::<usize>());
        match format {
            Format::Json => {
                out.extend_from_slice(format!("{{\"applications\":{{\"versions__delta\":\"{version}\",\"apps__hashcode\":").as_bytes());
                json_str(&mut out, hash_code);
                if !self.apps.is_empty() {
                    out.extend_from_slice(b",\"application\":[");
                    for (i, (name, instances)) in self.apps.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        write_application(&mut out, format, name, instances);
                    }
                    out.push(b']');
                }
                out.extend_from_slice(b"}}");
            }
            Format::Xml => {
                out.extend_from_slice(
                    format!("<applications><versions__delta>{version}</versions__delta>")
                        .as_bytes(),
                );
                xml_element(&mut out, "apps__hashcode", hash_code);
                for (name, instances) in &self.apps {
                    write_application(&mut out, format, name, instances);
                }
                out.extend_from_slice(b"</applications>");
            }
        }
        out
    }
}

/// The instances of a namespace grouped by app for an [`AppsListing`], with the version and hash
/// code of its head: made once from a snapshot and shared by the listings of every client that
/// fetches the namespace meanwhile ([`crate::api::listing::SharedSnapshots`]), whatever their
/// format.
pub struct GroupedApps {
    version: u64,
    hash_code: String,
    /// Instances by app, apps sorted by name, each app's in the order they were given.
    apps: Vec<(Arc<str>, Vec<Arc<Instance>>)>,
}

impl GroupedApps {
    /// Groups `instances` by app (and counts their statuses for the hash code); `between` runs
    /// every few instances.
    pub fn new(version: u64, instances: Vec<Arc<Instance>>, between: &dyn Fn(usize)) -> Self {
        let mut statuses = Apps::default();
        let mut apps: Vec<(Arc<str>, Vec<Arc<Instance>>)> = Vec::new();
        let mut by_name: BTreeMap<Arc<str>, usize> = BTreeMap::new();
        // A snapshot gives the instances of a service together (per shard): most instances
        // belong to the app of the one before.
        let mut last: Option<usize> = None;
        for (i, instance) in instances.into_iter().enumerate() {
            statuses.count_status(&instance.status);
            let slot = match last.filter(|&slot| apps[slot].0 == instance.service_name) {
                Some(slot) => slot,
                None => *by_name
                    .entry(instance.service_name.clone())
                    .or_insert_with(|| {
                        apps.push((instance.service_name.clone(), Vec::new()));
                        apps.len() - 1
                    }),
            };
            apps[slot].1.push(instance);
            last = Some(slot);
            between(i);
        }
        apps.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (_, instances) in &mut apps {
            instances.shrink_to_fit();
        }
        GroupedApps {
            version,
            hash_code: statuses.hash_code(),
            apps,
        }
    }
}

/// The application list of a namespace made a piece at a time (a listing too large to hold
/// whole, [`crate::api::listing`]): the same bytes as [`Apps::applications_document`] for the same
/// instances, each instance rendered when its piece is made. The version and hash code of the
/// head are those of the instances held, which are all that is sent.
pub struct AppsListing {
    format: Format,
    grouped: Arc<GroupedApps>,
    stage: ListingStage,
    /// The next app to write, and the next of its instances.
    app: usize,
    instance: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ListingStage {
    Head,
    Apps,
    Tail,
}

impl AppsListing {
    /// The listing of `grouped` in `format`, from its head.
    pub fn new(format: Format, grouped: Arc<GroupedApps>) -> AppsListing {
        AppsListing {
            format,
            grouped,
            stage: ListingStage::Head,
            app: 0,
            instance: 0,
        }
    }

    fn write_head(&self, out: &mut Vec<u8>) {
        let version = self.grouped.version;
        let hash_code = &self.grouped.hash_code;
        match self.format {
            Format::Json => {
                out.extend_from_slice(format!("{{\"applications\":{{\"versions__delta\":\"{version}\",\"apps__hashcode\":").as_bytes());
                json_str(out, hash_code);
                if !self.grouped.apps.is_empty() {
                    out.extend_from_slice(b",\"application\":[");
                }
            }
            Format::Xml => {
                out.extend_from_slice(
                    format!("<applications><versions__delta>{version}</versions__delta>")
                        .as_bytes(),
                );
                xml_element(out, "apps__hashcode", hash_code);
            }
        }
    }

    fn write_tail(&self, out: &mut Vec<u8>) {
        match self.format {
            Format::Json if self.grouped.apps.is_empty() => out.extend_from_slice(b"}}"),
            Format::Json => out.extend_from_slice(b"]}}"),
            Format::Xml => out.extend_from_slice(b"</applications>"),
        }
    }
}

impl Producer for AppsListing {
    fn produce(&mut self, out: &mut Vec<u8>, fill_to: usize) -> More {
        if self.stage == ListingStage::Head {
            self.write_head(out);
            self.stage = ListingStage::Apps;
        }
        while self.stage == ListingStage::Apps && out.len() < fill_to {
            let Some((name, instances)) = self.grouped.apps.get(self.app) else {
                self.stage = ListingStage::Tail;
                break;
            };
            let json = self.format == Format::Json;
            if self.instance == 0 {
                if json {
                    if self.app > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(b"{\"name\":");
                    json_str(out, name);
                    out.extend_from_slice(b",\"instance\":[");
                } else {
                    out.extend_from_slice(b"<application>");
                    xml_element(out, "name", name);
                }
            } else if json {
                out.push(b',');
            }
            let instance = &instances[self.instance];
            write_instance(out, self.format, instance, Action::of(instance));
            self.instance += 1;
            if self.instance == instances.len() {
                out.extend_from_slice(if json { b"]}" } else { b"</application>" });
                self.app += 1;
                self.instance = 0;
            }
        }
        if self.stage == ListingStage::Tail {
            self.write_tail(out);
            return More::Done;
        }
        More::Yes
    }
}

fn write_application(out: &mut Vec<u8>, format: Format, name: &str, instances: &[Vec<u8>]) {
    match format {
        Format::Json => {
            out.extend_from_slice(b"{\"name\":");
            json_str(out, name);
            out.extend_from_slice(b",\"instance\":[");
            for (i, instance) in instances.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(instance);
            }
            out.extend_from_slice(b"]}");
        }
        Format::Xml => {
            out.extend_from_slice(b"<application>");
            xml_element(out, "name", name);
            for instance in instances {
                out.extend_from_slice(instance);
            }
            out.extend_from_slice(b"</application>");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::instance::{Endpoint, EndpointType};
    use std::time::Duration;

    fn a8_instance(kind: EndpointType, value: &str) -> Instance {
        let mut i = Instance::new(
            "id",
            "s0",
            Endpoint {
                kind,
                value: value.into(),
            },
            "UP",
            Duration::from_secs(30),
        );
        i.registered_unix_nanos = 1_795_355_906_245_000_000;
        i.last_heartbeat.set(1_795_355_931_118_000_000);
        i.updated_unix_nanos = i.registered_unix_nanos;
        i.service_up_unix_nanos = i.registered_unix_nanos;
        i.dirty_unix_millis = 1_795_355_906_245;
        i
    }

    fn rendered(format: Format, i: &Instance) -> String {
        let mut out = Vec::new();
        write_instance(&mut out, format, i, Action::Added);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn amalgam8_instance_renders_as_the_contract_example() {
        let i = a8_instance(EndpointType::Tcp, "x:1");
        assert_eq!(
            rendered(Format::Json, &i),
            r#"{"instanceId":"id","hostName":"x","app":"s0","appGroupName":"UNKNOWN","ipAddr":"x","vipAddress":"s0","status":"UP","overriddenstatus":"UNKNOWN","countryId":1,"port":{"@enabled":"true","$":"1"},"dataCenterInfo":{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"},"leaseInfo":{"renewalIntervalInSecs":30,"durationInSecs":30,"registrationTimestamp":1795355906245,"lastRenewalTimestamp":1795355931118,"evictionTimestamp":0,"serviceUpTimestamp":1795355906245},"isCoordinatingDiscoveryServer":"false","lastUpdatedTimestamp":"1795355906245","lastDirtyTimestamp":"1795355906245","actionType":"ADDED"}"#
        );
        assert_eq!(
            rendered(Format::Xml, &i),
            r#"<instance><instanceId>id</instanceId><hostName>x</hostName><app>s0</app><ipAddr>x</ipAddr><status>UP</status><overriddenstatus>UNKNOWN</overriddenstatus><port enabled="true">1</port><countryId>1</countryId><dataCenterInfo class="com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"><name>MyOwn</name></dataCenterInfo><leaseInfo><renewalIntervalInSecs>30</renewalIntervalInSecs><durationInSecs>30</durationInSecs><registrationTimestamp>1795355906245</registrationTimestamp><lastRenewalTimestamp>1795355931118</lastRenewalTimestamp><evictionTimestamp>0</evictionTimestamp><serviceUpTimestamp>1795355906245</serviceUpTimestamp></leaseInfo><appGroupName>UNKNOWN</appGroupName><vipAddress>s0</vipAddress><isCoordinatingDiscoveryServer>false</isCoordinatingDiscoveryServer><lastUpdatedTimestamp>1795355906245</lastUpdatedTimestamp><lastDirtyTimestamp>1795355906245</lastDirtyTimestamp><actionType>ADDED</actionType></instance>"#
        );
    }

    #[test]
    fn host_port_values_are_split_into_host_and_port() {
        for (value, host, port) in [
            ("10.0.0.5:9080", "10.0.0.5", "9080"),
            ("reviews.default.svc:80", "reviews.default.svc", "80"),
            ("my_host-1:65535", "my_host-1", "65535"),
            ("[2001:db8::5]:9080", "2001:db8::5", "9080"),
            ("[::1]:1", "::1", "1"),
            ("h:0080", "h", "80"),
        ] {
            assert_eq!(split_host_port(value), Some((host, port)), "{value}");
        }
        for value in [
            "justahost",
            "h:99999",
            "h:65536",
            "h:0",
            "h:000",
            "h:x",
            "h:",
            ":80",
            "h:+80",
            "h:8 0",
            "a:b:80",
            "2001:db8::5:9080",
            "[2001:db8::5]",
            "[2001:db8::5]9080",
            "[not-ipv6]:80",
            "[fe80::1%eth0]:80",
            "h o:80",
            "h/x:80",
            "",
        ] {
            assert_eq!(split_host_port(value), None, "{value}");
        }
    }

    #[test]
    fn values_that_are_not_host_port_stay_whole_without_a_port() {
        for value in ["justahost", "h:99999", "h:x"] {
            let text = rendered(Format::Json, &a8_instance(EndpointType::Tcp, value));
            let host = format!(r#""hostName":"{value}","#);
            assert!(text.contains(&host), "{text}");
            assert!(text.contains(&format!(r#""ipAddr":"{value}","#)), "{text}");
            assert!(!text.contains("Port\""), "{text}");
            assert!(!text.contains("\"port\""), "{text}");
        }
    }

    #[test]
    fn ipv6_and_https_endpoints() {
        let i = a8_instance(EndpointType::Http, "[2001:db8::5]:9080");
        let text = rendered(Format::Json, &i);
        assert!(text.contains(r#""hostName":"2001:db8::5","#), "{text}");
        assert!(text.contains(r#""ipAddr":"2001:db8::5","#), "{text}");
        assert!(
            text.contains(r#""port":{"@enabled":"true","$":"9080"}"#),
            "{text}"
        );

        let i = a8_instance(EndpointType::Https, "10.0.0.5:8443");
        let json = rendered(Format::Json, &i);
        assert!(
            json.contains(r#""securePort":{"@enabled":"true","$":"8443"}"#),
            "{json}"
        );
        assert!(!json.contains("\"port\""), "{json}");
        let xml = rendered(Format::Xml, &i);
        assert!(
            xml.contains(r#"<securePort enabled="true">8443</securePort>"#),
            "{xml}"
        );
        assert!(xml.contains("<hostName>10.0.0.5</hostName>"), "{xml}");
        assert!(!xml.contains("<port "), "{xml}");
    }

    #[test]
    fn url_endpoints_give_host_and_port() {
        let i = a8_instance(EndpointType::Https, "https://web.example.com:8443");
        let mut out = Vec::new();
        write_instance(&mut out, Format::Json, &i, Action::Added);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(r#""hostName":"web.example.com","#), "{text}");
        assert!(text.contains(r#""ipAddr":"web.example.com","#));
        assert!(text.contains(r#""securePort":{"@enabled":"true","$":"8443"}"#));
    }

    #[test]
    fn a_eureka_registration_with_a_url_shaped_host_name_gets_no_port_from_it() {
        let body = br#"{"instance":{"hostName":"http://web.example.com:8080","app":"WEB","ipAddr":"10.0.0.1","vipAddress":"web","dataCenterInfo":{"@class":"c","name":"MyOwn"}}}"#;
        let i = crate::api::eureka::model::decode(body, false, "WEB").unwrap();
        for format in [Format::Json, Format::Xml] {
            let text = rendered(format, &i);
            assert!(
                !text.contains("8080\"}") && !text.contains(">8080<"),
                "{text}"
            );
            assert!(
                !text.contains("\"port\"") && !text.contains("<port "),
                "{text}"
            );
        }
    }

    /// A namespace of three apps, registered out of order, one instance down and one without a
    /// status.
    fn namespace() -> Vec<Arc<Instance>> {
        let mut instances = Vec::new();
        for (i, (app, status)) in [
            ("b", "UP"),
            ("a", "UP"),
            ("b", "DOWN"),
            ("c", ""),
            ("a", "UP"),
            ("b", "UP"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut instance = a8_instance(EndpointType::Http, &format!("10.0.0.{i}:80"));
            instance.id = format!("{app}-{i}").into();
            instance.service_name = app.into();
            instance.status = crate::registry::instance::Status::new(status);
            instances.push(Arc::new(instance));
        }
        instances
    }

    fn streamed(
        format: Format,
        version: u64,
        instances: Vec<Arc<Instance>>,
        piece: usize,
    ) -> Vec<u8> {
        let grouped = GroupedApps::new(version, instances, &|_| {});
        let listing = AppsListing::new(format, Arc::new(grouped));
        crate::http::response::Streamed(Box::new(listing)).collect(piece)
    }

    #[test]
    fn a_streamed_listing_is_the_whole_document_byte_for_byte() {
        for format in [Format::Json, Format::Xml] {
            for instances in [namespace(), Vec::new(), namespace()[..1].to_vec()] {
                let mut apps = Apps::default();
                for instance in &instances {
                    apps.add(format, instance, Action::of(instance));
                }
                let whole = apps.applications_document(format, 42, &apps.hash_code());
                // Pieces of one byte (an instance each) up to the whole in one.
                for piece in [1, 700, 1 << 20] {
                    let text = streamed(format, 42, instances.clone(), piece);
                    assert_eq!(
                        String::from_utf8(text).unwrap(),
                        String::from_utf8(whole.clone()).unwrap(),
                        "{format:?}, piece {piece}"
                    );
                }
            }
        }
        let json = String::from_utf8(streamed(Format::Json, 7, namespace(), 1)).unwrap();
        assert!(
            json.starts_with(r#"{"applications":{"versions__delta":"7","apps__hashcode":"DOWN_1_UP_5_","application":[{"name":"a","#),
            "{json}"
        );
    }

    #[test]
    fn hash_code_sorts_statuses_and_counts_missing_as_up() {
        let mut apps = Apps::default();
        for status in ["UP", "UP", "", "DOWN"] {
            apps.count_status(status);
        }
        assert_eq!(apps.hash_code(), "DOWN_1_UP_3_");
        assert_eq!(Apps::default().hash_code(), "");
    }
}
