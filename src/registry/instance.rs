//! The instance record, its id derivation, its limits and TTL clamping (spec 3.1-3.3).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::version::Version;

/// Longest service name, in bytes (64 accepted, 65 refused).
pub const MAX_SERVICE_NAME_BYTES: usize = 64;
/// Longest endpoint value, in bytes.
pub const MAX_ENDPOINT_VALUE_BYTES: usize = 128;
/// Longest status, in bytes (reachable through Eureka only).
pub const MAX_STATUS_BYTES: usize = 32;
/// Largest metadata, in bytes of the raw JSON text as received.
pub const MAX_METADATA_BYTES: usize = 1024;
/// Most tags one registration carries (D38).
pub const MAX_TAGS: usize = 256;
/// Most bytes the tags of one registration add up to (D38).
pub const MAX_TAGS_BYTES: usize = 8192;

/// The status that never expires (spec 3.3, D18).
pub const OUT_OF_SERVICE: &str = "OUT_OF_SERVICE";
pub const UP: &str = "UP";
pub const STARTING: &str = "STARTING";

/// How an instance is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointType {
    Tcp,
    Udp,
    Http,
    Https,
    User,
}

impl EndpointType {
    /// Parses the lowercase names of spec 3.1 (`HTTP` is not accepted).
    pub fn parse(text: &str) -> Option<EndpointType> {
        match text {
            "tcp" => Some(EndpointType::Tcp),
            "udp" => Some(EndpointType::Udp),
            "http" => Some(EndpointType::Http),
            "https" => Some(EndpointType::Https),
            "user" => Some(EndpointType::User),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EndpointType::Tcp => "tcp",
            EndpointType::Udp => "udp",
            EndpointType::Http => "http",
            EndpointType::Https => "https",
            EndpointType::User => "user",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub kind: EndpointType,
    pub value: String,
}

/// Protocol-specific data a store keeps with an instance. It is plain data, so it can be encoded
/// and sent to a replication peer or another reader of a shared store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Extension {
    /// The fields of a Eureka registration. Shared: a status change or a metadata update copies
    /// the instance, not them.
    Eureka(Arc<EurekaFields>),
}

/// A Eureka port as registered: `$` keeps its JSON type, so numbers come back as numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortNumber {
    Number(serde_json::Number),
    Text(Box<str>),
}

impl PortNumber {
    /// The natural text form (`8080`, or a string as given).
    pub fn text(&self) -> String {
        match self {
            PortNumber::Number(n) => n.to_string(),
            PortNumber::Text(t) => t.to_string(),
        }
    }
}

/// A Eureka `port` or `securePort`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Port {
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<PortNumber>,
}

/// JSON text known to be well-formed (it was parsed when it was received or decoded).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonText(Box<RawValue>);

impl JsonText {
    /// `None` when `text` is not one well-formed JSON value.
    pub fn parse(text: String) -> Option<JsonText> {
        RawValue::from_string(text).ok().map(JsonText)
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &JsonText) -> bool {
        self.get() == other.get()
    }
}

/// A Eureka `dataCenterInfo`; a field left `None` is rendered with Netflix's default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DataCenter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Box<str>>,
    /// The `metadata` object, as received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<JsonText>,
}

/// The fields of a Eureka registration that the common record does not hold, in their plain
/// form: what the Eureka decoder builds, and what [`EurekaFields::encode`] writes. A field left
/// `None` was not registered. The lease data (registration, renewal and dirty timestamps, renewal
/// interval) is kept by the record itself, since the store maintains it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EurekaRegistration {
    /// The app name; always the instance's service name.
    pub app: Arc<str>,
    /// The `instanceId` the client gave; `None` when the id was resolved from other fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    pub host_name: String,
    pub ip_addr: String,
    pub vip_address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_vip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_group_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_port: Option<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_page_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_page_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_center: Option<DataCenter>,
}

/// The text fields of [`EurekaFields`], in the order they are laid out.
#[derive(Clone, Copy)]
enum TextField {
    InstanceId,
    HostName,
    IpAddr,
    VipAddress,
    SecureVipAddress,
    AppGroupName,
    HomePageUrl,
    StatusPageUrl,
    HealthCheckUrl,
}

const TEXT_FIELDS: usize = 9;

/// A [`EurekaRegistration`] as an instance keeps it, laid over the defaults when the instance is
/// rendered for Eureka clients (spec 4.5, 4.6 step 2).
///
/// A registry holds a hundred thousand of these, so the nine text fields share one allocation
/// (each a separate string cost its own heap block and three words), the app name shares the
/// record's service name, and the whole is shared by the versions of an instance through an
/// `Arc` (see [`Extension`]). Encoded and decoded in the plain form.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "EurekaRegistration", try_from = "EurekaRegistration")]
pub struct EurekaFields {
    app: Arc<str>,
    /// The text fields one after the other.
    text: Box<str>,
    /// Where each text field ends in `text` ([`TextField`] order); each starts where the one
    /// before it ends.
    ends: [u32; TEXT_FIELDS],
    /// Bit `i` set: text field `i` was registered (an absent field and an empty one differ).
    present: u16,
    country_id: Option<i64>,
    port: Option<Port>,
    secure_port: Option<Port>,
    data_center: Option<Box<DataCenter>>,
}

/// The text fields of a registration add up to more than 4 GiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLong;

impl fmt::Display for TooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the text fields add up to more than 4 GiB")
    }
}

impl TryFrom<EurekaRegistration> for EurekaFields {
    type Error = TooLong;

    fn try_from(registration: EurekaRegistration) -> Result<EurekaFields, TooLong> {
        EurekaFields::new(registration)
    }
}

impl From<EurekaFields> for EurekaRegistration {
    fn from(fields: EurekaFields) -> EurekaRegistration {
        fields.to_registration()
    }
}

impl fmt::Debug for EurekaFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_registration(), f)
    }
}

impl EurekaFields {
    /// Lays out a registration.
    pub fn new(registration: EurekaRegistration) -> Result<EurekaFields, TooLong> {
        let texts: [Option<&str>; TEXT_FIELDS] = [
            registration.instance_id.as_deref(),
            Some(&registration.host_name),
            Some(&registration.ip_addr),
            Some(&registration.vip_address),
            registration.secure_vip_address.as_deref(),
            registration.app_group_name.as_deref(),
            registration.home_page_url.as_deref(),
            registration.status_page_url.as_deref(),
            registration.health_check_url.as_deref(),
        ];
        let mut text = String::with_capacity(texts.iter().flatten().map(|t| t.len()).sum());
        let mut ends = [0u32; TEXT_FIELDS];
        let mut present = 0u16;
        for (slot, field) in texts.iter().enumerate() {
            if let Some(field) = field {
                text.push_str(field);
                present |= 1 << slot;
            }
            ends[slot] = u32::try_from(text.len()).map_err(|_| TooLong)?;
        }
        Ok(EurekaFields {
            app: registration.app,
            text: text.into_boxed_str(),
            ends,
            present,
            country_id: registration.country_id,
            port: registration.port,
            secure_port: registration.secure_port,
            data_center: registration.data_center.map(Box::new),
        })
    }

    /// The plain form.
    pub fn to_registration(&self) -> EurekaRegistration {
        let owned = |field| self.text(field).map(str::to_string);
        EurekaRegistration {
            app: self.app.clone(),
            instance_id: owned(TextField::InstanceId),
            host_name: self.host_name().to_string(),
            ip_addr: self.ip_addr().to_string(),
            vip_address: self.vip_address().to_string(),
            secure_vip_address: owned(TextField::SecureVipAddress),
            app_group_name: owned(TextField::AppGroupName),
            country_id: self.country_id,
            port: self.port.clone(),
            secure_port: self.secure_port.clone(),
            home_page_url: owned(TextField::HomePageUrl),
            status_page_url: owned(TextField::StatusPageUrl),
            health_check_url: owned(TextField::HealthCheckUrl),
            data_center: self.data_center.as_deref().cloned(),
        }
    }

    fn text(&self, field: TextField) -> Option<&str> {
        let slot = field as usize;
        if self.present & (1 << slot) == 0 {
            return None;
        }
        let start = if slot == 0 { 0 } else { self.ends[slot - 1] };
        self.text.get(start as usize..self.ends[slot] as usize)
    }

    pub fn app(&self) -> &str {
        &self.app
    }

    pub fn instance_id(&self) -> Option<&str> {
        self.text(TextField::InstanceId)
    }

    pub fn host_name(&self) -> &str {
        self.text(TextField::HostName).unwrap_or_default()
    }

    pub fn ip_addr(&self) -> &str {
        self.text(TextField::IpAddr).unwrap_or_default()
    }

    pub fn vip_address(&self) -> &str {
        self.text(TextField::VipAddress).unwrap_or_default()
    }

    pub fn secure_vip_address(&self) -> Option<&str> {
        self.text(TextField::SecureVipAddress)
    }

    pub fn app_group_name(&self) -> Option<&str> {
        self.text(TextField::AppGroupName)
    }

    pub fn home_page_url(&self) -> Option<&str> {
        self.text(TextField::HomePageUrl)
    }

    pub fn status_page_url(&self) -> Option<&str> {
        self.text(TextField::StatusPageUrl)
    }

    pub fn health_check_url(&self) -> Option<&str> {
        self.text(TextField::HealthCheckUrl)
    }

    pub fn country_id(&self) -> Option<i64> {
        self.country_id
    }

    pub fn port(&self) -> Option<&Port> {
        self.port.as_ref()
    }

    pub fn secure_port(&self) -> Option<&Port> {
        self.secure_port.as_ref()
    }

    pub fn data_center(&self) -> Option<&DataCenter> {
        self.data_center.as_deref()
    }
}

/// Bytes that are not an encoding of [`EurekaFields`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not encoded Eureka fields: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

impl EurekaFields {
    /// Roughly the heap bytes these fields hold.
    pub fn approximate_bytes(&self) -> usize {
        std::mem::size_of::<EurekaFields>()
            + self.app.len()
            + self.text.len()
            + self.data_center.as_ref().map_or(0, |_| 256)
    }

    /// The fields as compact JSON text (their plain form), for a replication peer or a shared
    /// store.
    pub fn encode(&self) -> Vec<u8> {
        // Strings, numbers, booleans and already-valid JSON text into memory: serde_json has
        // nothing here that it could fail on.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads what [`EurekaFields::encode`] wrote. Fails on anything else; never panics. Unknown
    /// members are skipped (a newer peer may send more); serde_json skips them, and checks the
    /// embedded data-centre metadata, without recursion, so no input can exhaust a stack.
    pub fn decode(bytes: &[u8]) -> Result<EurekaFields, DecodeError> {
        serde_json::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))
    }
}

/// The time of the last heartbeat, in unix nanoseconds. Atomic, so a heartbeat updates an
/// instance that is shared (with the change log, or a listing in progress) without copying it.
#[derive(Default)]
pub struct Heartbeat(AtomicI64);

impl Heartbeat {
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, unix_nanos: i64) {
        self.0.store(unix_nanos, Ordering::Relaxed);
    }
}

impl Clone for Heartbeat {
    fn clone(&self) -> Self {
        Heartbeat(AtomicI64::new(self.get()))
    }
}

impl fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}

/// Lease interval Eureka clients are told when they registered none (spec D11).
pub const DEFAULT_RENEWAL_INTERVAL_SECS: u32 = 30;

/// An instance's status. The three statuses of the Amalgam8 API share one allocation each, so
/// the common case costs no memory per instance; any other text (possible through Eureka) is
/// kept as given.
#[derive(Clone, PartialEq, Eq)]
pub struct Status(Arc<str>);

impl Status {
    pub fn new(text: &str) -> Status {
        use std::sync::OnceLock;
        static KNOWN: OnceLock<[Arc<str>; 3]> = OnceLock::new();
        let known = KNOWN.get_or_init(|| [UP.into(), STARTING.into(), OUT_OF_SERVICE.into()]);
        match known.iter().find(|k| &***k == text) {
            Some(shared) => Status(shared.clone()),
            None => Status(text.into()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The shared text, for maps keyed by status.
    pub fn shared(&self) -> &Arc<str> {
        &self.0
    }
}

impl std::ops::Deref for Status {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Status {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Status {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// One registered instance.
#[derive(Clone, Debug)]
pub struct Instance {
    pub id: Arc<str>,
    pub service_name: Arc<str>,
    pub endpoint: Endpoint,
    pub status: Status,
    /// The clamped TTL.
    pub ttl: Duration,
    /// The metadata's raw JSON text; `None` when absent (JSON `null` is kept as `Some("null")`).
    pub metadata: Option<Arc<RawValue>>,
    pub tags: Vec<String>,
    /// Unix time of the registration, in nanoseconds.
    pub registered_unix_nanos: i64,
    pub last_heartbeat: Heartbeat,
    /// Unix time of the last registration or modification (heartbeats do not count).
    pub updated_unix_nanos: i64,
    /// Unix time the status last became `UP` since the registration; 0 while it has not.
    pub service_up_unix_nanos: i64,
    /// Modified (status or metadata) since it was registered.
    pub modified: bool,
    /// The client's dirty timestamp in unix milliseconds; 0 means the registration time.
    pub dirty_unix_millis: i64,
    /// The lease renewal interval the client registered (Eureka), in seconds.
    pub renewal_interval_secs: u32,
    pub extension: Option<Extension>,
    /// The version of the last change of this record (cluster contract §6); set by the store.
    pub version: Version,
    /// The version of the registration that created this record: a status or metadata change
    /// keeps it, a re-registration starts a new one.
    pub registration: Version,
}

impl Instance {
    /// A new registration with no metadata, tags or extension; the store sets the timestamps.
    pub fn new(
        id: &str,
        service_name: &str,
        endpoint: Endpoint,
        status: &str,
        ttl: Duration,
    ) -> Instance {
        Instance::with_name(id, service_name.into(), endpoint, status, ttl)
    }

    fn with_name(
        id: &str,
        service_name: Arc<str>,
        endpoint: Endpoint,
        status: &str,
        ttl: Duration,
    ) -> Instance {
        Instance {
            id: id.into(),
            service_name,
            endpoint,
            status: Status::new(status),
            ttl,
            metadata: None,
            tags: Vec::new(),
            registered_unix_nanos: 0,
            last_heartbeat: Heartbeat::default(),
            updated_unix_nanos: 0,
            service_up_unix_nanos: 0,
            modified: false,
            dirty_unix_millis: 0,
            renewal_interval_secs: DEFAULT_RENEWAL_INTERVAL_SECS,
            extension: None,
            version: Version::ZERO,
            registration: Version::ZERO,
        }
    }

    /// [`Instance::new`] without its service name, which the store sets when it stores it
    /// ([`super::store::Store::register_named`]): the store shares one copy of a service's name
    /// between its instances, so a registration into a known service makes no copy of its own.
    /// Until then the name is empty.
    pub fn unnamed(id: &str, endpoint: Endpoint, status: &str, ttl: Duration) -> Instance {
        use std::sync::OnceLock;
        static UNNAMED: OnceLock<Arc<str>> = OnceLock::new();
        let unnamed = UNNAMED.get_or_init(|| Arc::from("")).clone();
        Instance::with_name(id, unnamed, endpoint, status, ttl)
    }

    /// The fields of its Eureka registration, if it was registered through Eureka.
    pub fn eureka(&self) -> Option<&EurekaFields> {
        match &self.extension {
            Some(Extension::Eureka(fields)) => Some(fields),
            None => None,
        }
    }

    /// Every part of the id after one of its `:`, longest first (`A:b:c` has `b:c` and `c`): what
    /// Eureka's `GET …/instances/{iid}` matches (spec §4.3).
    pub fn id_suffixes(&self) -> impl Iterator<Item = &str> {
        self.id
            .match_indices(':')
            .map(move |(at, _)| &self.id[at + 1..])
    }

    /// The VIP address and the secure VIP address, for instances registered through Eureka.
    pub fn vip_keys(&self) -> [Option<&str>; 2] {
        match self.eureka() {
            Some(fields) => [Some(fields.vip_address()), fields.secure_vip_address()],
            None => [None, None],
        }
    }

    /// Roughly the heap bytes this instance holds, for byte budgets (the change log's).
    pub fn approximate_bytes(&self) -> usize {
        const FIXED_BYTES: usize = std::mem::size_of::<Instance>() + 64;
        FIXED_BYTES
            + self.id.len()
            + self.service_name.len()
            + self.endpoint.value.len()
            + self.metadata.as_ref().map_or(0, |m| m.get().len())
            + self.tags.iter().map(|t| t.len() + 24).sum::<usize>()
            + self.eureka().map_or(0, EurekaFields::approximate_bytes)
    }
}

/// The id of an Amalgam8 registration: the first 16 lowercase hex characters of SHA-256 over
/// `service/type/value` (spec 3.2).
pub fn derive_id(service_name: &str, endpoint: &Endpoint) -> String {
    derived_id(service_name, endpoint).as_str().to_string()
}

/// [`derive_id`] on the stack, for a caller that copies the id into what it keeps.
pub fn derived_id(service_name: &str, endpoint: &Endpoint) -> DerivedId {
    let mut hasher = Sha256::new();
    hasher.update(service_name.as_bytes());
    hasher.update(b"/");
    hasher.update(endpoint.kind.as_str().as_bytes());
    hasher.update(b"/");
    hasher.update(endpoint.value.as_bytes());
    let digest = hasher.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 16];
    for (pair, byte) in id.chunks_exact_mut(2).zip(&digest[..8]) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
    DerivedId(id)
}

/// A derived id: 16 lowercase hex characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DerivedId([u8; 16]);

impl DerivedId {
    pub fn as_str(&self) -> &str {
        // Hex digits only: always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// The TTL rules of the server: requested TTLs are clamped into `[min, max]`, 0 means `default`.
#[derive(Clone, Copy, Debug)]
pub struct TtlPolicy {
    pub default: Duration,
    pub min: Duration,
    pub max: Duration,
}

impl TtlPolicy {
    /// Clamps a requested TTL in the order of spec 3.3: 0 → default; < min → min; > max → max.
    pub fn clamp(&self, requested: Duration) -> Duration {
        if requested.is_zero() {
            self.default
        } else if requested < self.min {
            self.min
        } else if requested > self.max {
            self.max
        } else {
            requested
        }
    }
}

/// The field whose limit an instance broke (checked by the store, spec 3.4 step 9). The variants
/// are in the order the store checks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LimitError {
    ServiceName,
    EndpointValue,
    Status,
    Metadata,
    /// More than [`MAX_TAGS`] tags, or more than [`MAX_TAGS_BYTES`] bytes of them.
    Tags,
}

/// Gathers a registration's tags one at a time within D38's bound. Once the bound is passed it
/// keeps nothing more, so a decoder holds at most the bound whatever the body carries.
#[derive(Debug, Default)]
pub struct TagCollector {
    tags: Vec<String>,
    bytes: usize,
    exceeded: bool,
}

impl TagCollector {
    /// Adds one tag; false once the bound has been passed.
    pub fn push(&mut self, tag: &str) -> bool {
        if self.exceeded {
            return false;
        }
        self.bytes += tag.len();
        if self.tags.len() == MAX_TAGS || self.bytes > MAX_TAGS_BYTES {
            self.exceeded = true;
            self.tags = Vec::new();
            return false;
        }
        self.tags.push(tag.to_string());
        true
    }

    /// The tags, or [`LimitError::Tags`] if there were too many.
    pub fn finish(mut self) -> Result<Vec<String>, LimitError> {
        if self.exceeded {
            return Err(LimitError::Tags);
        }
        // Kept for the life of the instance: no spare capacity from growing.
        self.tags.shrink_to_fit();
        Ok(self.tags)
    }
}

impl Instance {
    /// Checks the byte-length limits in the store's order.
    pub fn check_limits(&self) -> Result<(), LimitError> {
        if self.service_name.len() > MAX_SERVICE_NAME_BYTES {
            return Err(LimitError::ServiceName);
        }
        if self.endpoint.value.len() > MAX_ENDPOINT_VALUE_BYTES {
            return Err(LimitError::EndpointValue);
        }
        if self.status.len() > MAX_STATUS_BYTES {
            return Err(LimitError::Status);
        }
        self.check_metadata_limit()?;
        self.check_tags_limit()
    }

    /// Checks the tags bound of D38 (count, then bytes).
    pub fn check_tags_limit(&self) -> Result<(), LimitError> {
        let bytes: usize = self.tags.iter().map(String::len).sum();
        if self.tags.len() > MAX_TAGS || bytes > MAX_TAGS_BYTES {
            return Err(LimitError::Tags);
        }
        Ok(())
    }

    /// The limit error of a registration one of whose fields was found over its limit while
    /// it was decoded, and so was not kept: the first limit broken in the store's order.
    pub fn first_limit_error(&self, exceeded: LimitError) -> LimitError {
        match self.check_limits() {
            Err(earlier) if earlier < exceeded => earlier,
            _ => exceeded,
        }
    }

    /// Checks the metadata limit alone: the one limit a modification can break (a status set
    /// through Eureka's status route has no length limit, spec 4.3).
    pub fn check_metadata_limit(&self) -> Result<(), LimitError> {
        if self.metadata.as_ref().map_or(0, |m| m.get().len()) > MAX_METADATA_BYTES {
            return Err(LimitError::Metadata);
        }
        Ok(())
    }

    /// True when the status exempts the instance from expiry (exact match, spec 3.3).
    pub fn never_expires(&self) -> bool {
        self.status == OUT_OF_SERVICE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(kind: EndpointType, value: &str) -> Endpoint {
        Endpoint {
            kind,
            value: value.into(),
        }
    }

    #[test]
    fn ids_match_the_original() {
        assert_eq!(
            derive_id("http", &endpoint(EndpointType::Tcp, "192.168.1.1:8081")),
            "91f13d35039e1efe"
        );
        assert_eq!(
            derive_id("reviews", &endpoint(EndpointType::Http, "10.0.0.5:9080")),
            "26634d9e31ce714e"
        );
        assert_eq!(
            derive_id("Calc", &endpoint(EndpointType::Tcp, "192.168.0.1:9080")),
            "11ac6e3908f1941c"
        );
        assert_eq!(
            derive_id("idt", &endpoint(EndpointType::Tcp, "q")),
            "271e8852916677be"
        );
    }

    #[test]
    fn ttl_clamping_order() {
        let policy = TtlPolicy {
            default: Duration::from_secs(30),
            min: Duration::from_secs(10),
            max: Duration::from_secs(600),
        };
        assert_eq!(policy.clamp(Duration::ZERO), Duration::from_secs(30));
        assert_eq!(
            policy.clamp(Duration::from_secs(5)),
            Duration::from_secs(10)
        );
        assert_eq!(
            policy.clamp(Duration::from_secs(50_000)),
            Duration::from_secs(600)
        );
        assert_eq!(
            policy.clamp(Duration::from_secs(45)),
            Duration::from_secs(45)
        );
    }

    fn full_registration() -> EurekaRegistration {
        EurekaRegistration {
            app: "MYAPP".into(),
            instance_id: Some("host1:myapp:8080".into()),
            host_name: "host1".into(),
            ip_addr: "10.0.0.7".into(),
            vip_address: "myapp".into(),
            secure_vip_address: Some("myapp-secure".into()),
            app_group_name: Some(String::new()),
            country_id: Some(-3),
            port: Some(Port {
                enabled: true,
                number: Some(PortNumber::Number(8080.into())),
            }),
            secure_port: Some(Port {
                enabled: false,
                number: Some(PortNumber::Text("443\"x\u{e9}".into())),
            }),
            home_page_url: Some("http://host1:8080/".into()),
            status_page_url: Some("http://host1:8080/info".into()),
            health_check_url: None,
            data_center: Some(DataCenter {
                class: Some("com.netflix.appinfo.AmazonInfo".into()),
                name: Some("Amazon".into()),
                metadata: JsonText::parse(r#"{"instance-id":"i-1","n":[1,{"x":null}]}"#.into()),
            }),
        }
    }

    fn full_eureka_fields() -> EurekaFields {
        EurekaFields::new(full_registration()).unwrap()
    }

    #[test]
    fn eureka_fields_keep_every_field_apart() {
        let fields = full_eureka_fields();
        assert_eq!(fields.to_registration(), full_registration());
        assert_eq!(fields.instance_id(), Some("host1:myapp:8080"));
        assert_eq!(fields.host_name(), "host1");
        assert_eq!(fields.ip_addr(), "10.0.0.7");
        assert_eq!(fields.vip_address(), "myapp");
        assert_eq!(fields.secure_vip_address(), Some("myapp-secure"));
        assert_eq!(fields.app_group_name(), Some(""), "empty, not absent");
        assert_eq!(fields.home_page_url(), Some("http://host1:8080/"));
        assert_eq!(fields.status_page_url(), Some("http://host1:8080/info"));
        assert_eq!(fields.health_check_url(), None);
        assert_eq!(fields.country_id(), Some(-3));
        assert_eq!(
            fields.data_center().unwrap().name.as_deref(),
            Some("Amazon")
        );
        assert_eq!(
            fields.secure_port().unwrap().number,
            Some(PortNumber::Text("443\"x\u{e9}".into()))
        );
    }

    #[test]
    fn eureka_fields_round_trip_through_their_encoding() {
        let full = full_eureka_fields();
        let encoded = full.encode();
        let text = std::str::from_utf8(&encoded).unwrap();
        assert!(!text.contains(['\n', ' ']), "compact: {text}");
        assert_eq!(EurekaFields::decode(&encoded).unwrap(), full);
        let minimal = EurekaFields::new(EurekaRegistration {
            app: "A".into(),
            instance_id: None,
            host_name: "h".into(),
            ip_addr: "1".into(),
            vip_address: "v".into(),
            secure_vip_address: None,
            app_group_name: None,
            country_id: None,
            port: None,
            secure_port: Some(Port {
                enabled: true,
                number: None,
            }),
            home_page_url: None,
            status_page_url: None,
            health_check_url: None,
            data_center: None,
        })
        .unwrap();
        let encoded = minimal.encode();
        assert_eq!(
            std::str::from_utf8(&encoded).unwrap(),
            r#"{"app":"A","hostName":"h","ipAddr":"1","vipAddress":"v","securePort":{"enabled":true}}"#
        );
        assert_eq!(EurekaFields::decode(&encoded).unwrap(), minimal);
        // Members a newer peer may add are skipped.
        let newer =
            br#"{"app":"A","hostName":"h","ipAddr":"1","vipAddress":"v","sid":{"x":[[1]]}}"#;
        assert_eq!(EurekaFields::decode(newer).unwrap().host_name(), "h");
        // An instance carries them through a clone unchanged and shared.
        let mut instance = Instance::new(
            "A:h",
            "A",
            endpoint(EndpointType::Tcp, "h"),
            "UP",
            Duration::ZERO,
        );
        instance.extension = Some(Extension::Eureka(Arc::new(full.clone())));
        let copy = instance.clone();
        assert_eq!(copy.eureka(), Some(&full));
        match (&instance.extension, &copy.extension) {
            (Some(Extension::Eureka(a)), Some(Extension::Eureka(b))) => assert!(Arc::ptr_eq(a, b)),
            _ => unreachable!("both are Eureka instances"),
        }
    }

    #[test]
    fn decoding_garbage_is_an_error_never_a_panic() {
        let encoded = full_eureka_fields().encode();
        let deep = format!("{{\"app\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        for bad in [
            &b""[..],
            b"null",
            b"[]",
            b"{}",
            b"\xff\xfe",
            br#"{"app":"A"}"#,
            br#"{"app":1,"hostName":"h","ipAddr":"1","vipAddress":"v"}"#,
            br#"{"app":"A","hostName":"h","ipAddr":"1","vipAddress":"v","port":{"number":{"number":1}}}"#,
            br#"{"app":"A","hostName":"h","ipAddr":"1","vipAddress":"v","dataCenter":{"metadata":}}"#,
            br#"{"app":"A","hostName":"h","ipAddr":"1","vipAddress":"v"} trailing"#,
            deep.as_bytes(),
            &encoded[..encoded.len() - 1],
        ] {
            assert!(EurekaFields::decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let mut rng = crate::testing::Rng::new(17);
        for _ in 0..20_000 {
            let _ = EurekaFields::decode(&rng.mutate(&encoded));
        }
    }

    #[test]
    fn tags_are_bounded_by_count_then_bytes() {
        let mut collector = TagCollector::default();
        for _ in 0..MAX_TAGS {
            assert!(collector.push(""));
        }
        assert!(!collector.push(""));
        assert_eq!(collector.finish(), Err(LimitError::Tags));
        let mut collector = TagCollector::default();
        assert!(collector.push(&"b".repeat(MAX_TAGS_BYTES)));
        assert!(!collector.push("b"));
        assert!(!collector.push(""), "nothing more once passed");
        let mut collector = TagCollector::default();
        collector.push("a");
        assert_eq!(collector.finish(), Ok(vec!["a".to_string()]));

        let mut instance = Instance::new(
            "i",
            "s",
            endpoint(EndpointType::Tcp, "v"),
            "UP",
            Duration::ZERO,
        );
        instance.tags = vec![String::new(); MAX_TAGS];
        assert_eq!(instance.check_limits(), Ok(()));
        instance.tags.push(String::new());
        assert_eq!(instance.check_limits(), Err(LimitError::Tags));
        instance.metadata = Some(
            RawValue::from_string(format!("\"{}\"", "m".repeat(2000)))
                .unwrap()
                .into(),
        );
        assert_eq!(
            instance.check_limits(),
            Err(LimitError::Metadata),
            "metadata first"
        );
        assert_eq!(
            instance.first_limit_error(LimitError::Tags),
            LimitError::Metadata
        );
        instance.metadata = None;
        instance.tags.clear();
        assert_eq!(
            instance.first_limit_error(LimitError::Tags),
            LimitError::Tags
        );
        assert_eq!(
            instance.first_limit_error(LimitError::Metadata),
            LimitError::Metadata
        );
        instance.service_name = "s".repeat(65).into();
        assert_eq!(
            instance.first_limit_error(LimitError::Metadata),
            LimitError::ServiceName
        );
    }

    #[test]
    fn endpoint_types_are_lowercase_only() {
        assert_eq!(EndpointType::parse("udp"), Some(EndpointType::Udp));
        assert_eq!(EndpointType::parse("HTTP"), None);
        assert_eq!(EndpointType::parse("icmp"), None);
    }
}
