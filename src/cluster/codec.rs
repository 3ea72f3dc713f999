//! The replication line protocol, sans I/O: bytes in, messages out, and messages to lines.
//!
//! The protocol is described for people in `docs/replication-protocol.md` (version
//! [`PROTOCOL_VERSION`]). Every message is one line of UTF-8 text ending in `\n`: a verb, and for
//! most verbs one space and an argument (space-separated tokens, or one JSON object). A line longer
//! than [`MAX_LINE_BYTES`] is refused before it is buffered whole, so a peer cannot make a node
//! hold more than that per link.

use crate::registry::instance::{Endpoint, EndpointType, Extension, Instance, Status};
use crate::registry::store::{Lease, Record, Tombstone};
use crate::registry::version::Version;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The protocol's name in the hello line.
pub const PROTOCOL_NAME: &str = "a8registry-replication";
/// The version this build speaks; a hello with another one closes the link.
pub const PROTOCOL_VERSION: u32 = 1;
/// The longest line, newline included: far above the largest record the API accepts (about
/// 10 KiB for an Amalgam8 record; a Eureka record is bounded by `--max_body_size`, 1 MiB by
/// default, which JSON escaping can at most double), and a digest line is cut well below it.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;
/// Records named by one detail line.
pub const DETAIL_ENTRIES_PER_LINE: usize = 2_000;
/// The longest line of the handshake (a hello or a proof; a hello with a 64-digit nonce and a
/// 255-character DNS name is under 400 bytes). Until a peer has proved itself it can make a node
/// hold no more than this.
pub const MAX_HANDSHAKE_LINE_BYTES: usize = 1024;
/// The longest TTL or lease time a line may carry (about 31 years, far above any `--max_ttl`):
/// a larger one is refused, so no deadline computed from it can overflow.
pub const MAX_WIRE_DURATION: Duration = Duration::from_secs(1_000_000_000);
/// Bytes of a nonce in the hello.
pub const NONCE_BYTES: usize = 32;

/// The first line in each direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u32,
    /// The sender's member id.
    pub member: u64,
    /// The sender's advertised address (`host:port`, IPv6 bracketed).
    pub address: String,
    /// With a secret: the sender's fresh nonce.
    pub nonce: Option<[u8; NONCE_BYTES]>,
}

/// One line of the protocol.
#[derive(Clone, Debug)]
pub enum Message {
    Hello(Hello),
    /// HMAC-SHA256 proof that the sender knows the secret (see `link.rs`).
    Proof([u8; 32]),
    Ping,
    /// Asks for a full snapshot; answered with `Fix` lines and one `SnapshotEnd`.
    Sync,
    /// The end of a snapshot, with the number of records it carried.
    SnapshotEnd(u64),
    /// A record: `repair` is true for records of a snapshot or a digest repair.
    Record {
        namespace: String,
        record: Record,
        repair: bool,
    },
    Lease(Lease),
    /// Part of a digest: the summary of the sender's records of one namespace.
    Digest {
        namespace: String,
        summary: Summary,
    },
    /// The sender's digest is complete.
    DigestEnd,
    /// Part of a detail: the ids and versions of the sender's records of one namespace in these
    /// buckets (the buckets where the receiver's digest differed).
    Detail {
        namespace: String,
        buckets: Vec<u8>,
        entries: Vec<(String, Version)>,
    },
    /// The sender's detail is complete: the receiver answers with repairs.
    DetailEnd,
    /// The sender leaves the cluster.
    Goodbye,
}

/// Why a line is not a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

fn bad(why: impl Into<String>) -> DecodeError {
    DecodeError(why.into())
}

/// A line over [`MAX_LINE_BYTES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineTooLong;

/// Cuts a byte stream into lines, holding at most [`MAX_LINE_BYTES`] of an unfinished one.
pub struct LineDecoder {
    buffer: Vec<u8>,
    /// Bytes of `buffer` already searched for a newline.
    scanned: usize,
    max_line_bytes: usize,
}

impl Default for LineDecoder {
    fn default() -> Self {
        LineDecoder::new(MAX_LINE_BYTES)
    }
}

impl LineDecoder {
    pub fn new(max_line_bytes: usize) -> LineDecoder {
        LineDecoder {
            buffer: Vec::new(),
            scanned: 0,
            max_line_bytes,
        }
    }

    /// Changes the longest line accepted from now on (the handshake's limit is lower than the
    /// link's); bytes already buffered are kept.
    pub fn set_limit(&mut self, max_line_bytes: usize) {
        self.max_line_bytes = max_line_bytes;
    }

    /// Bytes of an unfinished line (or of lines not taken yet) held.
    pub fn pending(&self) -> usize {
        self.buffer.len()
    }

    /// Adds bytes received.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete line without its `\n` (and a `\r` before it), `None` when no complete
    /// line is buffered; fails once the unfinished line is longer than the limit.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, LineTooLong> {
        match self.buffer[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(at) => {
                let end = self.scanned + at;
                if end + 1 > self.max_line_bytes {
                    return Err(LineTooLong);
                }
                let mut line: Vec<u8> = self.buffer.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.scanned = 0;
                Ok(Some(line))
            }
            None => {
                self.scanned = self.buffer.len();
                if self.buffer.len() >= self.max_line_bytes {
                    return Err(LineTooLong);
                }
                Ok(None)
            }
        }
    }
}

/// FNV-1a, 64 bits: a hash every build of every version computes the same way (the standard
/// library's hasher promises no such thing), so two nodes bucket and hash records alike.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A 64-bit finaliser (splitmix64's), so that close inputs give unrelated outputs.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The digest bucket of a record id (one of 256).
pub fn bucket_of(id: &str) -> u8 {
    (mix(fnv1a(id.as_bytes())) >> 56) as u8
}

/// One record's contribution to its bucket's hash.
fn record_hash(id: &str, version: Version) -> u64 {
    mix(fnv1a(id.as_bytes()) ^ mix(version.clock ^ mix(version.node)))
}

/// The summary of a namespace's records that a digest carries: for every non-empty bucket, its
/// record count and the wrapping sum of its records' hashes. Two nodes holding the same ids at
/// the same versions have equal summaries; a bucket whose summary differs names the records to
/// compare one by one. A summary is at most 256 entries whatever the namespace's size, so the
/// digest exchanged every 10 s costs next to nothing when nodes agree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// bucket → (records, sum of their hashes).
    pub buckets: BTreeMap<u8, (u64, u64)>,
}

impl Summary {
    /// The summary of these (id, version) pairs.
    pub fn of<'a>(entries: impl IntoIterator<Item = (&'a str, Version)>) -> Summary {
        let mut summary = Summary::default();
        for (id, version) in entries {
            let slot = summary.buckets.entry(bucket_of(id)).or_insert((0, 0));
            slot.0 += 1;
            slot.1 = slot.1.wrapping_add(record_hash(id, version));
        }
        summary
    }

    /// The buckets where the two summaries differ (including buckets only one side has).
    pub fn differing(&self, other: &Summary) -> Vec<u8> {
        let mut out: Vec<u8> = self
            .buckets
            .iter()
            .filter(|(bucket, held)| other.buckets.get(bucket) != Some(held))
            .map(|(bucket, _)| *bucket)
            .chain(
                other
                    .buckets
                    .keys()
                    .filter(|bucket| !self.buckets.contains_key(bucket))
                    .copied(),
            )
            .collect();
        out.sort_unstable();
        out
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A member id as 16 lowercase hex digits.
pub fn member_text(member: u64) -> String {
    format!("{member:016x}")
}

/// The inverse of [`member_text`].
pub fn parse_member(text: &str) -> Option<u64> {
    if text.len() != 16 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

#[derive(Serialize, Deserialize)]
struct WireInstance {
    id: String,
    service: String,
    endpoint_type: String,
    endpoint: String,
    status: String,
    ttl_ms: u64,
    /// Absent when there is none; JSON `null` is metadata too (kept as given).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_json"
    )]
    metadata: Option<Arc<RawValue>>,
    #[serde(default)]
    tags: Vec<String>,
    registered: i64,
    updated: i64,
    service_up: i64,
    modified: bool,
    dirty_ms: i64,
    renewal_secs: u32,
    #[serde(default)]
    extension: Option<Extension>,
    version: String,
    registration: String,
}

/// A member that is present, `null` included.
fn present_json<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Arc<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(|raw| Some(raw.into()))
}

#[derive(Serialize, Deserialize)]
struct WireTombstone {
    id: String,
    service: String,
    version: String,
    registration: String,
    #[serde(default)]
    expired_ms: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct WireRecord {
    ns: String,
    #[serde(default)]
    live: Option<WireInstance>,
    #[serde(default)]
    remaining_ms: Option<u64>,
    #[serde(default)]
    tombstone: Option<WireTombstone>,
}

#[derive(Serialize, Deserialize)]
struct WireLease {
    ns: String,
    id: String,
    registration: String,
    remaining_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct WireDigest {
    ns: String,
    /// [bucket, records, hash sum in hex] for every non-empty bucket.
    buckets: Vec<(u8, u64, String)>,
}

#[derive(Serialize, Deserialize)]
struct WireDetail {
    ns: String,
    buckets: Vec<u8>,
    entries: Vec<(String, String)>,
}

fn wire_instance(instance: &Instance) -> WireInstance {
    WireInstance {
        id: instance.id.to_string(),
        service: instance.service_name.to_string(),
        endpoint_type: instance.endpoint.kind.as_str().to_string(),
        endpoint: instance.endpoint.value.clone(),
        status: instance.status.as_str().to_string(),
        ttl_ms: instance.ttl.as_millis() as u64,
        metadata: instance.metadata.clone(),
        tags: instance.tags.clone(),
        registered: instance.registered_unix_nanos,
        updated: instance.updated_unix_nanos,
        service_up: instance.service_up_unix_nanos,
        modified: instance.modified,
        dirty_ms: instance.dirty_unix_millis,
        renewal_secs: instance.renewal_interval_secs,
        extension: instance.extension.clone(),
        version: instance.version.encode(),
        registration: instance.registration.encode(),
    }
}

fn version(text: &str) -> Result<Version, DecodeError> {
    Version::decode(text).ok_or_else(|| bad(format!("not a version: {text:?}")))
}

fn wire_millis(millis: u64) -> Result<Duration, DecodeError> {
    let duration = Duration::from_millis(millis);
    if duration > MAX_WIRE_DURATION {
        return Err(bad(format!("{millis} ms is beyond any TTL")));
    }
    Ok(duration)
}

fn instance_of(wire: WireInstance) -> Result<Instance, DecodeError> {
    let kind = EndpointType::parse(&wire.endpoint_type)
        .ok_or_else(|| bad(format!("unknown endpoint type {:?}", wire.endpoint_type)))?;
    let mut instance = Instance::new(
        &wire.id,
        &wire.service,
        Endpoint {
            kind,
            value: wire.endpoint,
        },
        &wire.status,
        wire_millis(wire.ttl_ms)?,
    );
    instance.status = Status::new(&wire.status);
    instance.metadata = wire.metadata;
    instance.tags = wire.tags;
    instance.registered_unix_nanos = wire.registered;
    instance.updated_unix_nanos = wire.updated;
    instance.service_up_unix_nanos = wire.service_up;
    instance.modified = wire.modified;
    instance.dirty_unix_millis = wire.dirty_ms;
    instance.renewal_interval_secs = wire.renewal_secs;
    instance.extension = wire.extension;
    instance.version = version(&wire.version)?;
    instance.registration = version(&wire.registration)?;
    if instance.id.is_empty() || instance.service_name.is_empty() {
        return Err(bad("a record needs an id and a service"));
    }
    Ok(instance)
}

/// An instance as compact JSON: the form the Redis store keeps records in (the replication
/// line's own encoding, so both stores read one format).
pub fn instance_json(instance: &Instance) -> String {
    // Strings, numbers and already-valid JSON text into memory: nothing here can fail.
    serde_json::to_string(&wire_instance(instance)).unwrap_or_default()
}

/// Reads what [`instance_json`] wrote; fails on anything else, never panics (serde_json bounds
/// its own recursion).
pub fn instance_from_json(bytes: &[u8]) -> Result<Instance, DecodeError> {
    let wire: WireInstance = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    instance_of(wire)
}

fn json_line(verb: &str, value: &impl Serialize) -> String {
    // Strings, numbers and already-valid JSON text into memory: nothing here can fail.
    let mut line = String::with_capacity(256);
    line.push_str(verb);
    line.push(' ');
    line.push_str(&serde_json::to_string(value).unwrap_or_default());
    line.push('\n');
    line
}

/// The line of a record of `namespace`.
pub fn record_line(namespace: &str, record: &Record, repair: bool) -> String {
    let wire = match record {
        Record::Live {
            instance,
            remaining,
        } => WireRecord {
            ns: namespace.to_string(),
            live: Some(wire_instance(instance)),
            remaining_ms: remaining.map(|r| r.as_millis() as u64),
            tombstone: None,
        },
        Record::Tombstone(t) => WireRecord {
            ns: namespace.to_string(),
            live: None,
            remaining_ms: None,
            tombstone: Some(WireTombstone {
                id: t.id.to_string(),
                service: t.service_name.to_string(),
                version: t.version.encode(),
                registration: t.registration.encode(),
                expired_ms: t.expired_at_unix_millis,
            }),
        },
    };
    json_line(if repair { "FIX" } else { "REC" }, &wire)
}

/// The line of a lease update.
pub fn lease_line(lease: &Lease) -> String {
    json_line(
        "LEASE",
        &WireLease {
            ns: lease.namespace.to_string(),
            id: lease.id.to_string(),
            registration: lease.registration.encode(),
            remaining_ms: lease.remaining.as_millis() as u64,
        },
    )
}

/// The digest line of a namespace's summary.
pub fn digest_line(namespace: &str, summary: &Summary) -> String {
    json_line(
        "DIGEST",
        &WireDigest {
            ns: namespace.to_string(),
            buckets: summary
                .buckets
                .iter()
                .map(|(bucket, (count, hash))| (*bucket, *count, format!("{hash:016x}")))
                .collect(),
        },
    )
}

/// The detail lines of a namespace's records in `buckets`, at most [`DETAIL_ENTRIES_PER_LINE`]
/// entries each; one line (with no entries) when there are none.
pub fn detail_lines(
    namespace: &str,
    buckets: &[u8],
    entries: &[(Arc<str>, Version)],
) -> Vec<String> {
    let line = |chunk: &[(Arc<str>, Version)]| {
        json_line(
            "DETAIL",
            &WireDetail {
                ns: namespace.to_string(),
                buckets: buckets.to_vec(),
                entries: chunk
                    .iter()
                    .map(|(id, v)| (id.to_string(), v.encode()))
                    .collect(),
            },
        )
    };
    if entries.is_empty() {
        return vec![line(&[])];
    }
    entries.chunks(DETAIL_ENTRIES_PER_LINE).map(line).collect()
}

/// The line of any message.
pub fn encode(message: &Message) -> String {
    match message {
        Message::Hello(hello) => format!(
            "HELLO {PROTOCOL_NAME} {} {} {} {}\n",
            hello.version,
            member_text(hello.member),
            hello.address,
            hello.nonce.as_ref().map_or("-".to_string(), |n| hex(n))
        ),
        Message::Proof(proof) => format!("PROOF {}\n", hex(proof)),
        Message::Ping => "PING\n".into(),
        Message::Sync => "SYNC\n".into(),
        Message::SnapshotEnd(n) => format!("END {n}\n"),
        Message::Record {
            namespace,
            record,
            repair,
        } => record_line(namespace, record, *repair),
        Message::Lease(lease) => lease_line(lease),
        Message::Digest { namespace, summary } => digest_line(namespace, summary),
        Message::DigestEnd => "DIGESTEND\n".into(),
        Message::Detail {
            namespace,
            buckets,
            entries,
        } => {
            let entries: Vec<(Arc<str>, Version)> = entries
                .iter()
                .map(|(id, v)| (id.as_str().into(), *v))
                .collect();
            detail_lines(namespace, buckets, &entries).concat()
        }
        Message::DetailEnd => "DETAILEND\n".into(),
        Message::Goodbye => "BYE\n".into(),
    }
}

fn decode_hello(args: &str) -> Result<Hello, DecodeError> {
    let parts: Vec<&str> = args.split(' ').collect();
    let [name, version, member, address, nonce] = parts[..] else {
        return Err(bad("a hello has five fields"));
    };
    if name != PROTOCOL_NAME {
        return Err(bad(format!("not the {PROTOCOL_NAME} protocol: {name:?}")));
    }
    let version: u32 = version
        .parse()
        .map_err(|_| bad(format!("not a protocol version: {version:?}")))?;
    let member = parse_member(member).ok_or_else(|| bad(format!("not a member id: {member:?}")))?;
    // The advertised address is shown in /uptime and compared with dialed addresses: it must
    // be of the options' form (IPv6 bracketed), and is kept as the peer wrote it.
    if let Err(why) = super::address::HostPort::parse(address) {
        return Err(bad(format!("not an address: {why}")));
    }
    let nonce = match nonce {
        "-" => None,
        text => Some(unhex(text).ok_or_else(|| bad("not a nonce"))?),
    };
    Ok(Hello {
        version,
        member,
        address: address.to_string(),
        nonce,
    })
}

fn decode_record(args: &str, repair: bool) -> Result<Message, DecodeError> {
    let wire: WireRecord =
        serde_json::from_slice(args.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let record = match (wire.live, wire.tombstone) {
        (Some(live), None) => Record::Live {
            instance: instance_of(live)?,
            remaining: wire.remaining_ms.map(wire_millis).transpose()?,
        },
        (None, Some(t)) => {
            if t.id.is_empty() {
                return Err(bad("a tombstone needs an id"));
            }
            Record::Tombstone(Tombstone {
                id: t.id.into(),
                service_name: t.service.into(),
                version: version(&t.version)?,
                registration: version(&t.registration)?,
                expired_at_unix_millis: t.expired_ms,
            })
        }
        _ => return Err(bad("a record is live or a tombstone")),
    };
    Ok(Message::Record {
        namespace: namespace(wire.ns)?,
        record,
        repair,
    })
}

/// A namespace name as a peer sent it: one the API could have made (non-empty, at most
/// `MAX_NAMESPACE_BYTES`), so a peer cannot make a node keep names of any length.
fn namespace(ns: String) -> Result<String, DecodeError> {
    if ns.is_empty() || ns.len() > crate::registry::namespace::MAX_NAMESPACE_BYTES {
        return Err(bad(format!("not a namespace name ({} bytes)", ns.len())));
    }
    Ok(ns)
}

/// Reads one line (without its newline).
pub fn decode(line: &[u8]) -> Result<Message, DecodeError> {
    let line = std::str::from_utf8(line).map_err(|_| bad("not UTF-8"))?;
    let (verb, args) = line.split_once(' ').unwrap_or((line, ""));
    let no_args = |message: Message| {
        if args.is_empty() {
            Ok(message)
        } else {
            Err(bad(format!("{verb} takes no argument")))
        }
    };
    match verb {
        "HELLO" => decode_hello(args).map(Message::Hello),
        "PROOF" => unhex(args)
            .map(Message::Proof)
            .ok_or_else(|| bad("not a proof")),
        "PING" => no_args(Message::Ping),
        "SYNC" => no_args(Message::Sync),
        "END" => args
            .parse()
            .map(Message::SnapshotEnd)
            .map_err(|_| bad("END takes a count")),
        "REC" => decode_record(args, false),
        "FIX" => decode_record(args, true),
        "LEASE" => {
            let wire: WireLease =
                serde_json::from_slice(args.as_bytes()).map_err(|e| bad(e.to_string()))?;
            Ok(Message::Lease(Lease {
                namespace: namespace(wire.ns)?.into(),
                id: wire.id.into(),
                registration: version(&wire.registration)?,
                remaining: wire_millis(wire.remaining_ms)?,
            }))
        }
        "DIGEST" => {
            let wire: WireDigest =
                serde_json::from_slice(args.as_bytes()).map_err(|e| bad(e.to_string()))?;
            let mut summary = Summary::default();
            for (bucket, count, hash) in wire.buckets {
                let hash = unhex::<8>(&hash)
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| bad(format!("not a bucket hash: {hash:?}")))?;
                if summary.buckets.insert(bucket, (count, hash)).is_some() {
                    return Err(bad(format!("bucket {bucket} twice in a digest")));
                }
            }
            Ok(Message::Digest {
                namespace: namespace(wire.ns)?,
                summary,
            })
        }
        "DIGESTEND" => no_args(Message::DigestEnd),
        "DETAIL" => {
            let wire: WireDetail =
                serde_json::from_slice(args.as_bytes()).map_err(|e| bad(e.to_string()))?;
            let entries = wire
                .entries
                .into_iter()
                .map(|(id, v)| Ok((id, version(&v)?)))
                .collect::<Result<_, DecodeError>>()?;
            Ok(Message::Detail {
                namespace: namespace(wire.ns)?,
                buckets: wire.buckets,
                entries,
            })
        }
        "DETAILEND" => no_args(Message::DetailEnd),
        "BYE" => no_args(Message::Goodbye),
        _ => Err(bad(format!(
            "unknown verb {:?}",
            verb.chars().take(32).collect::<String>()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(clock: u64, node: u64) -> Version {
        Version { clock, node }
    }

    fn sample() -> Instance {
        let mut instance = Instance::new(
            "0123456789abcdef",
            "orders",
            Endpoint {
                kind: EndpointType::Http,
                value: "10.0.0.1:80".into(),
            },
            "UP",
            Duration::from_secs(30),
        );
        instance.tags = vec!["a b".into(), "ü\n".into()];
        instance.metadata = RawValue::from_string(r#"{"k":[1,2,{"x":null}]}"#.into())
            .ok()
            .map(Arc::from);
        instance.version = v(0x1234_0000, 7);
        instance.registration = v(0x1233_0000, 7);
        instance.registered_unix_nanos = 1_700_000_000_000_000_000;
        instance
    }

    fn one(line: &str) -> Message {
        let bytes = line.as_bytes();
        assert_eq!(bytes.last(), Some(&b'\n'), "{line:?} ends its line");
        assert!(
            !bytes[..bytes.len() - 1].contains(&b'\n'),
            "{line:?} is one line"
        );
        decode(&bytes[..bytes.len() - 1]).expect("decodes")
    }

    #[test]
    fn a_live_record_round_trips_with_its_versions_and_lease() {
        let line = record_line(
            "tenant-a",
            &Record::Live {
                instance: sample(),
                remaining: Some(Duration::from_millis(12_345)),
            },
            false,
        );
        let Message::Record {
            namespace,
            record:
                Record::Live {
                    instance,
                    remaining,
                },
            repair,
        } = one(&line)
        else {
            panic!("not a live record: {line}");
        };
        assert_eq!(namespace, "tenant-a");
        assert!(!repair);
        assert_eq!(remaining, Some(Duration::from_millis(12_345)));
        let original = sample();
        assert_eq!(instance.id, original.id);
        assert_eq!(instance.tags, original.tags);
        assert_eq!(
            instance.metadata.as_ref().map(|m| m.get()),
            original.metadata.as_ref().map(|m| m.get())
        );
        assert_eq!(instance.version, original.version);
        assert_eq!(instance.registration, original.registration);
        assert_eq!(instance.ttl, original.ttl);
        assert_eq!(instance.endpoint, original.endpoint);
    }

    #[test]
    fn tombstones_leases_and_small_messages_round_trip() {
        let tombstone = Tombstone {
            id: "x".into(),
            service_name: "s".into(),
            version: v(9, 1),
            registration: v(8, 1),
            expired_at_unix_millis: Some(42),
        };
        let line = record_line("ns", &Record::Tombstone(tombstone.clone()), true);
        match one(&line) {
            Message::Record {
                record: Record::Tombstone(t),
                repair: true,
                ..
            } => assert_eq!(t, tombstone),
            other => panic!("{other:?}"),
        }
        let lease = Lease {
            namespace: "ns".into(),
            id: "x".into(),
            registration: v(8, 1),
            remaining: Duration::from_millis(999),
        };
        match one(&lease_line(&lease)) {
            Message::Lease(l) => {
                assert_eq!(
                    (l.id, l.registration, l.remaining),
                    (lease.id, lease.registration, lease.remaining)
                )
            }
            other => panic!("{other:?}"),
        }
        let hello = Hello {
            version: PROTOCOL_VERSION,
            member: 0x1f0c_6e2a_9b3d_4c57,
            address: "[::1]:6100".into(),
            nonce: Some([7; NONCE_BYTES]),
        };
        match one(&encode(&Message::Hello(hello.clone()))) {
            Message::Hello(h) => assert_eq!(h, hello),
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(one(&encode(&Message::Proof([3; 32]))), Message::Proof(p) if p == [3; 32])
        );
        assert!(matches!(one("PING\n"), Message::Ping));
        assert!(matches!(one("END 12\n"), Message::SnapshotEnd(12)));
        assert!(matches!(one("BYE\n"), Message::Goodbye));
        let summary = Summary::of([("a", v(1, 2)), ("b", v(3, 4))]);
        match one(&digest_line("ns", &summary)) {
            Message::Digest {
                namespace,
                summary: decoded,
            } => {
                assert_eq!(namespace, "ns");
                assert_eq!(decoded, summary);
            }
            other => panic!("{other:?}"),
        }
        let detail = detail_lines("ns", &[3, 9], &[("a".into(), v(1, 2))]);
        assert_eq!(detail.len(), 1);
        match one(&detail[0]) {
            Message::Detail {
                namespace,
                buckets,
                entries,
            } => {
                assert_eq!((namespace.as_str(), buckets), ("ns", vec![3, 9]));
                assert_eq!(entries, vec![("a".into(), v(1, 2))]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(one("DIGESTEND\n"), Message::DigestEnd));
        assert!(matches!(one("DETAILEND\n"), Message::DetailEnd));
    }

    #[test]
    fn details_are_cut_into_bounded_lines_and_an_empty_one_still_names_its_buckets() {
        let entries: Vec<(Arc<str>, Version)> = (0..DETAIL_ENTRIES_PER_LINE * 2 + 1)
            .map(|i| (format!("id-{i}").into(), v(i as u64, 1)))
            .collect();
        let lines = detail_lines("ns", &[1], &entries);
        assert_eq!(lines.len(), 3);
        assert!(lines.iter().all(|l| l.len() < MAX_LINE_BYTES));
        let empty = detail_lines("ns", &[7], &[]);
        assert!(
            matches!(one(&empty[0]), Message::Detail { buckets, entries, .. } if buckets == [7] && entries.is_empty())
        );
    }

    #[test]
    fn summaries_differ_exactly_in_the_buckets_whose_records_differ() {
        let ids: Vec<String> = (0..5_000).map(|i| format!("{i:016x}")).collect();
        let mine: Vec<(&str, Version)> = ids.iter().map(|id| (id.as_str(), v(10, 1))).collect();
        let same = Summary::of(mine.iter().copied());
        assert_eq!(
            same,
            Summary::of(mine.iter().rev().copied()),
            "order does not matter"
        );
        assert!(same.differing(&same).is_empty());
        assert!(same.buckets.len() > 200, "ids spread over the buckets");
        // One newer version, one missing record, one extra record: exactly their buckets.
        let mut theirs = mine.clone();
        theirs[10].1 = v(11, 1);
        theirs.remove(20);
        theirs.push(("extra", v(1, 2)));
        let mut expected = vec![bucket_of(&ids[10]), bucket_of(&ids[20]), bucket_of("extra")];
        expected.sort_unstable();
        expected.dedup();
        let other = Summary::of(theirs.iter().copied());
        assert_eq!(same.differing(&other), expected);
        assert_eq!(other.differing(&same), expected);
        // A namespace one side lacks differs in every bucket the other has.
        assert_eq!(
            Summary::default().differing(&same).len(),
            same.buckets.len()
        );
        // Buckets and hashes are fixed by the protocol (FNV-1a), not by this build's hasher.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn malformed_lines_are_refused() {
        for line in [
            "",
            "HELLO",
            "HELLO other-protocol 1 1f0c6e2a9b3d4c57 a:1 -",
            "HELLO a8registry-replication x 1f0c6e2a9b3d4c57 a:1 -",
            "HELLO a8registry-replication 1 1F0C6E2A9B3D4C57 a:1 -",
            "HELLO a8registry-replication 1 1f0c6e2a9b3d4c57 a:1 zz",
            "HELLO a8registry-replication 1 1f0c6e2a9b3d4c57 a:1 - extra",
            "HELLO a8registry-replication 1 1f0c6e2a9b3d4c57 ::1:6100 -",
            "HELLO a8registry-replication 1 1f0c6e2a9b3d4c57 10.0.0.5 -",
            "PING now",
            "PROOF 00",
            "END -1",
            "REC",
            "REC {",
            "REC {\"ns\":\"a\"}",
            "REC {\"ns\":\"a\",\"tombstone\":{\"id\":\"\",\"service\":\"s\",\"version\":\"1.0000000000000001\",\"registration\":\"1.0000000000000001\"}}",
            "FIX {\"ns\":\"a\",\"live\":{\"id\":\"x\"}}",
            "LEASE {\"ns\":\"a\",\"id\":\"x\",\"registration\":\"nope\",\"remaining_ms\":1}",
            "DETAIL {\"ns\":\"a\",\"buckets\":[1],\"entries\":[[\"x\",\"bad\"]]}",
            "DETAIL {\"ns\":\"a\",\"buckets\":[256],\"entries\":[]}",
            "DIGEST {\"ns\":\"a\",\"buckets\":[[1,1,\"xyz\"]]}",
            "DIGEST {\"ns\":\"a\",\"buckets\":[[1,1,\"0000000000000001\"],[1,2,\"0000000000000002\"]]}",
            "DIGESTEND now",
            "LEASE {\"ns\":\"a\",\"id\":\"x\",\"registration\":\"1.0000000000000001\",\"remaining_ms\":18446744073709551615}",
            "DIGEST {\"ns\":\"\",\"buckets\":[]}",
            "WHAT",
        ] {
            assert!(decode(line.as_bytes()).is_err(), "{line:?} is refused");
        }
        assert!(decode(&[0xff, 0xfe]).is_err(), "not UTF-8");
        let long = format!(
            "LEASE {{\"ns\":\"{}\",\"id\":\"x\",\"registration\":\"1.0000000000000001\",\"remaining_ms\":1}}",
            "n".repeat(257)
        );
        assert!(
            decode(long.as_bytes()).is_err(),
            "a namespace over 256 bytes is refused"
        );
        let deep = format!("REC {}", "[".repeat(100_000));
        assert!(decode(deep.as_bytes()).is_err(), "deep nesting is refused");
    }

    #[test]
    fn lines_are_cut_across_reads_and_bounded() {
        let mut decoder = LineDecoder::new(16);
        decoder.push(b"PI");
        assert_eq!(decoder.next_line(), Ok(None));
        decoder.push(b"NG\r\nSY");
        assert_eq!(decoder.next_line(), Ok(Some(b"PING".to_vec())));
        assert_eq!(decoder.next_line(), Ok(None));
        decoder.push(b"NC\n");
        assert_eq!(decoder.next_line(), Ok(Some(b"SYNC".to_vec())));
        assert_eq!(
            decoder.next_line(),
            Ok(None),
            "a truncated stream yields nothing"
        );
        decoder.push(&[b'x'; 15]);
        assert_eq!(decoder.next_line(), Ok(None));
        decoder.push(b"x");
        assert_eq!(
            decoder.next_line(),
            Err(LineTooLong),
            "oversized without a newline"
        );
        let mut decoder = LineDecoder::new(8);
        decoder.push(b"123456789\n");
        assert_eq!(
            decoder.next_line(),
            Err(LineTooLong),
            "oversized with a newline"
        );
    }
}
