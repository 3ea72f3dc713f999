//! One link: the socket shell around the codec, on plain threads (blocking std sockets with
//! deadlines; never on a `may` worker).
//!
//! A link runs the handshake on the thread that opened or accepted it, then one reader (this
//! thread) and one writer thread. The writer sends what the link's [`Outbox`] holds, a ping after
//! [`PING_INTERVAL`] of silence, coalesced leases every [`LEASE_FLUSH_INTERVAL`], snapshots and
//! digests. Either side closes the link after [`READ_DEADLINE`] without a line, or when a write
//! makes no progress for as long.

use super::codec::{
    self, Hello, LineDecoder, Message, Summary, MAX_HANDSHAKE_LINE_BYTES, MAX_LINE_BYTES,
    NONCE_BYTES, PROTOCOL_VERSION,
};
use super::Cluster;
use crate::registry::store::{Lease, Origin};
use crate::registry::version::Version;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A ping goes out after this much silence on the sending side.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);
/// A link on which nothing arrived for this long is closed (and a write stuck this long).
pub const READ_DEADLINE: Duration = Duration::from_secs(5);
/// Leases are sent at most this often per instance (they are coalesced in between).
pub const LEASE_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Digest repair runs this often on every link (and at once when a link comes up).
pub const DIGEST_INTERVAL: Duration = Duration::from_secs(10);
/// Messages an outgoing queue holds; one more drops the queue and marks the peer for repair.
pub const MAX_QUEUED_MESSAGES: usize = 10_000;
/// An unfinished line must be complete this long after the previous line (or the link's start):
/// a peer that drips bytes without a newline cannot hold a link and its buffer for ever.
pub const LINE_DEADLINE: Duration = Duration::from_secs(10);
/// Namespaces one digest or one detail may name (each at most 256 bytes); more closes the link,
/// so a peer that invents namespaces without end cannot grow the receiver's bookkeeping.
pub const MAX_DIGEST_NAMESPACES: usize = 50_000;
/// Bytes of a peer's detail (ids and versions) kept to compare with; entries beyond are dropped,
/// and the records they would have spared are sent anyway (the receiver ignores what it already
/// holds), so the bound costs bandwidth, never correctness.
pub const MAX_DETAIL_BYTES: usize = 8 * 1024 * 1024;
/// What one detail entry costs besides its id's bytes (the version and the map's share).
const DETAIL_ENTRY_OVERHEAD_BYTES: usize = 48;
/// Bytes read from the socket at once.
const READ_CHUNK_BYTES: usize = 64 * 1024;

type HmacSha256 = Hmac<Sha256>;

/// Which end of the connection a node is: part of what a proof covers, so a proof cannot be
/// reflected back to its maker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Dialer,
    Listener,
}

impl Role {
    fn text(self) -> &'static str {
        match self {
            Role::Dialer => "dialer",
            Role::Listener => "listener",
        }
    }
}

/// The proof a node of `role` sends: HMAC-SHA256 keyed with the secret over the protocol, the
/// role, both nonces and both member ids, the sender's first.
pub fn proof(
    secret: &[u8],
    role: Role,
    own_nonce: &[u8; NONCE_BYTES],
    peer_nonce: &[u8; NONCE_BYTES],
    own_id: u64,
    peer_id: u64,
) -> [u8; 32] {
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return [0; 32];
    };
    mac.update(codec::PROTOCOL_NAME.as_bytes());
    mac.update(&PROTOCOL_VERSION.to_be_bytes());
    mac.update(role.text().as_bytes());
    mac.update(own_nonce);
    mac.update(peer_nonce);
    mac.update(&own_id.to_be_bytes());
    mac.update(&peer_id.to_be_bytes());
    mac.finalize().into_bytes().into()
}

fn verify(
    secret: &[u8],
    role: Role,
    nonces: (&[u8; NONCE_BYTES], &[u8; NONCE_BYTES]),
    ids: (u64, u64),
    given: &[u8; 32],
) -> bool {
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(codec::PROTOCOL_NAME.as_bytes());
    mac.update(&PROTOCOL_VERSION.to_be_bytes());
    mac.update(role.text().as_bytes());
    mac.update(nonces.0);
    mac.update(nonces.1);
    mac.update(&ids.0.to_be_bytes());
    mac.update(&ids.1.to_be_bytes());
    // Constant-time comparison.
    mac.verify_slice(given).is_ok()
}

/// A fresh random nonce from the kernel.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: getrandom writes at most `N - filled` bytes into the rest of our buffer.
        let n = unsafe { libc::getrandom(bytes[filled..].as_mut_ptr().cast(), N - filled, 0) };
        if n <= 0 {
            break;
        }
        filled += n as usize;
    }
    bytes
}

/// What a peer's detail said about one namespace: the buckets it covers and the versions it
/// holds there (at most [`MAX_DETAIL_BYTES`] per detail in all).
#[derive(Default)]
pub struct PeerDetail {
    buckets: BTreeSet<u8>,
    versions: HashMap<String, Version>,
}

/// What the writer has to send; filled by the store listeners (never blocking them) and by the
/// reader. Everything but `lines` is a flag or one pending answer that a newer request replaces,
/// so a peer that asks again and again without reading costs no more memory than one asking once.
#[derive(Default)]
pub struct Queue {
    lines: VecDeque<Arc<str>>,
    /// (namespace, id) → (registration, deadline): one entry per instance, the latest wins.
    leases: HashMap<(Arc<str>, Arc<str>), (Version, Instant)>,
    snapshot_requested: bool,
    /// Send this node's digest (at the link's start, every 10 s, after an overflow).
    digest_due: bool,
    /// The buckets, per namespace, where the peer's digest differed: send our detail of them.
    detail_due: Option<Vec<(String, Vec<u8>)>>,
    /// The peer's detail: answer with the records it lacks or holds at a lower version.
    repair_due: Option<HashMap<String, PeerDetail>>,
    closed: bool,
    goodbye: bool,
}

/// One link's outgoing queue and its wake-up.
pub struct Outbox {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Messages waiting (for `/uptime`).
    pub waiting: std::sync::atomic::AtomicUsize,
}

impl Outbox {
    fn new() -> Outbox {
        Outbox {
            queue: Mutex::new(Queue {
                digest_due: true,
                ..Queue::default()
            }),
            ready: Condvar::new(),
            waiting: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a change; on overflow drops the queue and marks the peer for repair. Never blocks
    /// beyond the queue's short lock.
    pub fn push(&self, line: Arc<str>) {
        let mut queue = self.lock();
        if queue.closed {
            return;
        }
        if queue.lines.len() >= MAX_QUEUED_MESSAGES {
            // The peer cannot keep up: what was queued is repaired by the digest exchange.
            queue.lines.clear();
            queue.digest_due = true;
        } else {
            queue.lines.push_back(line);
        }
        self.waiting.store(queue.lines.len(), Ordering::Relaxed);
        drop(queue);
        self.ready.notify_one();
    }

    /// Notes a lease; the writer sends the latest one per instance at its next flush.
    pub fn note_lease(&self, lease: &Lease, now: Instant) {
        let mut queue = self.lock();
        if queue.closed {
            return;
        }
        // A record from a peer may carry any TTL: never let a sum overflow (a panic aborts).
        let deadline = now
            .checked_add(lease.remaining)
            .unwrap_or(now + codec::MAX_WIRE_DURATION);
        let slot = queue
            .leases
            .entry((lease.namespace.clone(), lease.id.clone()))
            .or_insert((lease.registration, deadline));
        // A re-registration starts a new lease; within one registration the later deadline wins.
        if slot.0 != lease.registration || slot.1 < deadline {
            *slot = (lease.registration, deadline);
        }
    }

    fn set(&self, edit: impl FnOnce(&mut Queue)) {
        edit(&mut self.lock());
        self.ready.notify_one();
    }

    /// Stops the writer (after a goodbye when `goodbye`).
    pub fn close(&self, goodbye: bool) {
        self.set(|q| {
            q.closed = true;
            q.goodbye = goodbye;
        });
    }

    /// True once nothing but leases is waiting.
    pub fn drained(&self) -> bool {
        let queue = self.lock();
        queue.lines.is_empty() && queue.repair_due.is_none() && !queue.snapshot_requested
    }
}

/// An installed link as the cluster's link table holds it.
pub struct LinkHandle {
    pub connection: u64,
    /// The member id of the node that dialed this connection (the pair rule keeps the one
    /// dialed by the lower id).
    pub dialer: u64,
    pub outbox: Arc<Outbox>,
    socket: TcpStream,
}

impl LinkHandle {
    /// Closes the connection at once (both threads wake up with an error).
    pub fn shut(&self) {
        self.outbox.close(false);
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// How a link ended, for the dialer's backoff.
pub enum Outcome {
    /// The address is this node itself.
    OwnAddress,
    /// The hello or the proof failed, or the connection broke before them.
    HandshakeFailed,
    /// The pair rule kept another connection to this member.
    Duplicate(u64),
    /// The link was up for this long with this member.
    Ended(u64, Duration),
}

fn write_all(socket: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    socket.write_all(bytes)
}

/// Reads the next message of the handshake, before `deadline`: a peer that says nothing, or
/// drips its hello, is dropped when the deadline passes.
fn read_message(
    socket: &mut TcpStream,
    decoder: &mut LineDecoder,
    buffer: &mut [u8],
    deadline: Instant,
) -> Result<Message, String> {
    loop {
        match decoder.next_line() {
            Ok(Some(line)) => return codec::decode(&line).map_err(|e| e.to_string()),
            Ok(None) => {}
            Err(_) => return Err("line too long".into()),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("nothing complete within {READ_DEADLINE:?}"));
        }
        let _ = socket.set_read_timeout(Some(left));
        match socket.read(buffer) {
            Ok(0) => return Err("connection closed".into()),
            Ok(n) => decoder.push(&buffer[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!("nothing complete within {READ_DEADLINE:?}"));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Runs one connection to its end: handshake, then the link. `dialed` is the address dialed
/// (`None` for an accepted connection).
pub fn run(
    cluster: &Arc<Cluster>,
    mut socket: TcpStream,
    role: Role,
    dialed: Option<&str>,
) -> Outcome {
    let peer_text = dialed.map(str::to_string).unwrap_or_else(|| {
        socket
            .peer_addr()
            .map(super::address::socket_text)
            .unwrap_or_else(|_| "unknown".into())
    });
    let _ = socket.set_nodelay(true);
    let _ = socket.set_read_timeout(Some(READ_DEADLINE));
    let _ = socket.set_write_timeout(Some(READ_DEADLINE));
    let secret = cluster.config.secret.expose().as_bytes();
    let own_nonce: Option<[u8; NONCE_BYTES]> = (!secret.is_empty()).then(random_bytes);
    let hello = Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        member: cluster.id,
        address: cluster.advertised.clone(),
        nonce: own_nonce,
    });
    let refuse = |why: &str| {
        crate::warn!("replication link refused", "peer" => peer_text, "reason" => why);
        Outcome::HandshakeFailed
    };
    if let Err(e) = write_all(&mut socket, codec::encode(&hello).as_bytes()) {
        return refuse(&e.to_string());
    }
    // Until the peer has proved itself, its lines are short and must come soon.
    let mut decoder = LineDecoder::new(MAX_HANDSHAKE_LINE_BYTES);
    let mut buffer = vec![0u8; READ_CHUNK_BYTES];
    let handshake_deadline = Instant::now() + READ_DEADLINE;
    let peer = match read_message(&mut socket, &mut decoder, &mut buffer, handshake_deadline) {
        Ok(Message::Hello(hello)) => hello,
        Ok(_) => return refuse("the first line is not a hello"),
        Err(e) => return refuse(&format!("no hello: {e}")),
    };
    if peer.version != PROTOCOL_VERSION {
        return refuse(&format!("unsupported protocol version {}", peer.version));
    }
    if peer.member == cluster.id {
        // This node reached itself (its own address among the peers): silent. Anyone else
        // claiming its id is logged.
        if peer.address != cluster.advertised {
            crate::warn!("replication link refused", "peer" => peer_text, "reason" => format!("the peer claims this node's member id, from {}", peer.address));
        }
        return Outcome::OwnAddress;
    }
    if let Some(own_nonce) = own_nonce {
        let Some(peer_nonce) = peer.nonce else {
            return refuse("the peer sent no nonce: it has no --replication_secret");
        };
        let mine = proof(
            secret,
            role,
            &own_nonce,
            &peer_nonce,
            cluster.id,
            peer.member,
        );
        if let Err(e) = write_all(&mut socket, codec::encode(&Message::Proof(mine)).as_bytes()) {
            return refuse(&e.to_string());
        }
        let theirs = match read_message(&mut socket, &mut decoder, &mut buffer, handshake_deadline)
        {
            Ok(Message::Proof(p)) => p,
            Ok(_) => return refuse("no proof of the secret"),
            Err(e) => return refuse(&format!("no proof of the secret: {e}")),
        };
        let peer_role = match role {
            Role::Dialer => Role::Listener,
            Role::Listener => Role::Dialer,
        };
        if !verify(
            secret,
            peer_role,
            (&peer_nonce, &own_nonce),
            (peer.member, cluster.id),
            &theirs,
        ) {
            return refuse("wrong proof: the peer does not know the secret");
        }
    } else if peer.nonce.is_some() {
        // The peer has a secret and we do not: it will refuse us; say why here too.
        return refuse("the peer requires a --replication_secret");
    }

    let dialer = match role {
        Role::Dialer => cluster.id,
        Role::Listener => peer.member,
    };
    let outbox = Arc::new(Outbox::new());
    let Ok(shutter) = socket.try_clone() else {
        return refuse("cannot share the socket");
    };
    let connection = cluster.next_connection();
    let handle = LinkHandle {
        connection,
        dialer,
        outbox: outbox.clone(),
        socket: shutter,
    };
    if !cluster.install(peer.member, &peer.address, dialed, handle) {
        return Outcome::Duplicate(peer.member);
    }
    let began = Instant::now();
    if cluster.syncing() {
        outbox.push(codec::encode(&Message::Sync).into());
    }
    let writer = {
        let cluster = cluster.clone();
        let outbox = outbox.clone();
        let socket = socket.try_clone();
        std::thread::Builder::new()
            .name("replication-writer".into())
            .spawn(move || {
                if let Ok(socket) = socket {
                    write_loop(&cluster, socket, &outbox);
                }
            })
    };
    if writer.is_err() {
        cluster.uninstall(peer.member, connection);
        return refuse("cannot start the writer thread");
    }
    let _ = socket.set_read_timeout(Some(READ_DEADLINE));
    decoder.set_limit(MAX_LINE_BYTES);
    let mut reader = Reader {
        cluster,
        peer: peer.member,
        outbox: &outbox,
        summarised: HashSet::new(),
        differing: Vec::new(),
        detail: HashMap::new(),
        detail_bytes: 0,
    };
    let mut last_line = Instant::now();
    let reason = loop {
        let line = match decoder.next_line() {
            Ok(Some(line)) => {
                last_line = Instant::now();
                line
            }
            Ok(None) => {
                if decoder.pending() > 0 && last_line.elapsed() > LINE_DEADLINE {
                    break format!("a line unfinished after {LINE_DEADLINE:?}");
                }
                match socket.read(&mut buffer) {
                    Ok(0) => break "closed by the peer".to_string(),
                    Ok(n) => {
                        decoder.push(&buffer[..n]);
                        cluster.seen(peer.member);
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        break format!("nothing received for {READ_DEADLINE:?}");
                    }
                    Err(e) => break e.to_string(),
                }
                continue;
            }
            Err(_) => break format!("a line over {MAX_LINE_BYTES} bytes"),
        };
        match codec::decode(&line) {
            Ok(Message::Goodbye) => {
                cluster.goodbye(peer.member);
                break "the peer left".into();
            }
            Ok(message) => {
                if let Err(why) = reader.handle(message) {
                    break why;
                }
            }
            Err(e) => break format!("malformed line: {e}"),
        }
    };
    outbox.close(false);
    let _ = socket.shutdown(Shutdown::Both);
    cluster.uninstall(peer.member, connection);
    cluster.sync_failed_member(peer.member);
    crate::info!("replication link down", "peer" => peer.address, "id" => codec::member_text(peer.member), "reason" => reason);
    Outcome::Ended(peer.member, began.elapsed())
}

struct Reader<'a> {
    cluster: &'a Arc<Cluster>,
    peer: u64,
    outbox: &'a Outbox,
    /// Namespaces of the peer's digest being received.
    summarised: HashSet<String>,
    /// Buckets where the peer's digest differs from this node's records, per namespace.
    differing: Vec<(String, Vec<u8>)>,
    /// The peer's detail being received.
    detail: HashMap<String, PeerDetail>,
    detail_bytes: usize,
}

/// This node's summary of a namespace.
fn own_summary(cluster: &Cluster, namespace: &str) -> Summary {
    let versions = cluster.store.versions(namespace).unwrap_or_default();
    Summary::of(versions.iter().map(|(id, v)| (&**id, *v)))
}

impl Reader<'_> {
    /// Applies one message; an error closes the link.
    fn handle(&mut self, message: Message) -> Result<(), String> {
        let store = &self.cluster.store;
        match message {
            Message::Hello(_) | Message::Proof(_) | Message::Ping | Message::Goodbye => {}
            Message::Sync => self.outbox.set(|q| q.snapshot_requested = true),
            Message::SnapshotEnd(records) => self.cluster.sync_done(self.peer, records),
            Message::Record {
                namespace,
                record,
                repair,
            } => {
                if let Ok(crate::registry::store::Applied::Accepted) =
                    store.apply(&namespace, record, Origin::Peer)
                {
                    if repair {
                        self.cluster.repaired(self.peer);
                    }
                }
            }
            Message::Lease(lease) => {
                let _ = store.apply_lease(&lease);
            }
            Message::Digest { namespace, summary } => {
                if self.summarised.len() >= MAX_DIGEST_NAMESPACES {
                    return Err(format!(
                        "a digest of over {MAX_DIGEST_NAMESPACES} namespaces"
                    ));
                }
                if !self.summarised.insert(namespace.clone()) {
                    return Ok(());
                }
                let buckets = own_summary(self.cluster, &namespace).differing(&summary);
                if !buckets.is_empty() {
                    self.differing.push((namespace, buckets));
                }
            }
            Message::DigestEnd => {
                // Namespaces the peer does not have at all differ in every bucket.
                for namespace in store.namespaces().unwrap_or_default() {
                    if !self.summarised.contains(&*namespace) {
                        let mine = own_summary(self.cluster, &namespace);
                        let buckets: Vec<u8> = mine.buckets.keys().copied().collect();
                        if !buckets.is_empty() {
                            self.differing.push((namespace.to_string(), buckets));
                        }
                    }
                }
                self.summarised.clear();
                let differing = std::mem::take(&mut self.differing);
                if !differing.is_empty() {
                    self.outbox.set(|q| q.detail_due = Some(differing));
                }
            }
            Message::Detail {
                namespace,
                buckets,
                entries,
            } => {
                if !self.detail.contains_key(&namespace)
                    && self.detail.len() >= MAX_DIGEST_NAMESPACES
                {
                    return Err(format!(
                        "a detail of over {MAX_DIGEST_NAMESPACES} namespaces"
                    ));
                }
                let detail = self.detail.entry(namespace).or_default();
                detail.buckets.extend(buckets);
                for (id, version) in entries {
                    let cost = id.len() + DETAIL_ENTRY_OVERHEAD_BYTES;
                    if self.detail_bytes + cost > MAX_DETAIL_BYTES {
                        break;
                    }
                    if detail.versions.insert(id, version).is_none() {
                        self.detail_bytes += cost;
                    }
                }
            }
            Message::DetailEnd => {
                let detail = std::mem::take(&mut self.detail);
                self.detail_bytes = 0;
                self.outbox.set(|q| q.repair_due = Some(detail));
            }
        }
        Ok(())
    }
}

fn write_loop(cluster: &Arc<Cluster>, mut socket: TcpStream, outbox: &Outbox) {
    let mut last_write = Instant::now();
    let mut last_flush = Instant::now();
    let mut last_digest = Instant::now();
    let send = |socket: &mut TcpStream, bytes: &[u8], last: &mut Instant| -> bool {
        *last = Instant::now();
        socket.write_all(bytes).is_ok()
    };
    loop {
        let now = Instant::now();
        // Take what is due under the lock, write it without the lock.
        let (lines, leases, snapshot, digest, detail, repair, closed, goodbye) = {
            let mut queue = outbox.lock();
            if queue.lines.is_empty()
                && queue.repair_due.is_none()
                && queue.detail_due.is_none()
                && !queue.snapshot_requested
                && !queue.digest_due
                && !queue.closed
            {
                let next = [
                    last_write + PING_INTERVAL,
                    last_flush + LEASE_FLUSH_INTERVAL,
                    last_digest + DIGEST_INTERVAL,
                ]
                .into_iter()
                .min()
                .unwrap_or(now);
                let wait = next.saturating_duration_since(now);
                if !wait.is_zero() {
                    queue = outbox
                        .ready
                        .wait_timeout(queue, wait)
                        .map(|(q, _)| q)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
            }
            let now = Instant::now();
            let leases = if now >= last_flush + LEASE_FLUSH_INTERVAL || queue.closed {
                last_flush = now;
                std::mem::take(&mut queue.leases)
            } else {
                HashMap::new()
            };
            if now >= last_digest + DIGEST_INTERVAL {
                queue.digest_due = true;
            }
            let lines: Vec<Arc<str>> = queue.lines.drain(..).collect();
            outbox.waiting.store(0, Ordering::Relaxed);
            (
                lines,
                leases,
                std::mem::take(&mut queue.snapshot_requested),
                std::mem::take(&mut queue.digest_due),
                queue.detail_due.take(),
                queue.repair_due.take(),
                queue.closed,
                queue.goodbye,
            )
        };
        let mut batch = String::new();
        for line in &lines {
            batch.push_str(line);
        }
        let now = Instant::now();
        for ((namespace, id), (registration, deadline)) in leases {
            let remaining = deadline.saturating_duration_since(now);
            if remaining.is_zero() {
                continue;
            }
            batch.push_str(&codec::lease_line(&Lease {
                namespace,
                id,
                registration,
                remaining,
            }));
        }
        if !batch.is_empty() && !send(&mut socket, batch.as_bytes(), &mut last_write) {
            break;
        }
        if snapshot && !send_snapshot(cluster, &mut socket, &mut last_write) {
            break;
        }
        if let Some(repair) = repair {
            if !send_repairs(cluster, &mut socket, &repair, &mut last_write) {
                break;
            }
        }
        if let Some(detail) = detail {
            if !send_detail(cluster, &mut socket, &detail, &mut last_write) {
                break;
            }
        }
        if digest {
            last_digest = Instant::now();
            if !send_digest(cluster, &mut socket, &mut last_write) {
                break;
            }
        }
        if closed {
            if goodbye {
                let _ = socket.write_all(codec::encode(&Message::Goodbye).as_bytes());
                let _ = socket.flush();
            }
            break;
        }
        if last_write.elapsed() >= PING_INTERVAL
            && !send(
                &mut socket,
                codec::encode(&Message::Ping).as_bytes(),
                &mut last_write,
            )
        {
            break;
        }
    }
    let _ = socket.shutdown(Shutdown::Both);
}

/// Lines are written in batches of about this many bytes.
const BATCH_BYTES: usize = 256 * 1024;

/// Writes `batch` once it is large (or when `force`); false when the socket failed.
fn flush_batch(
    socket: &mut TcpStream,
    batch: &mut String,
    force: bool,
    last_write: &mut Instant,
) -> bool {
    if batch.is_empty() || (!force && batch.len() < BATCH_BYTES) {
        return true;
    }
    *last_write = Instant::now();
    let written = socket.write_all(batch.as_bytes()).is_ok();
    batch.clear();
    written
}

/// Streams every record, shard by shard through the store's listing, then `END`.
fn send_snapshot(cluster: &Cluster, socket: &mut TcpStream, last_write: &mut Instant) -> bool {
    let mut count = 0u64;
    let mut batch = String::new();
    for namespace in cluster.store.namespaces().unwrap_or_default() {
        for record in cluster.store.records(&namespace).unwrap_or_default() {
            count += 1;
            batch.push_str(&codec::record_line(&namespace, &record, true));
            if !flush_batch(socket, &mut batch, false, last_write) {
                return false;
            }
        }
    }
    batch.push_str(&codec::encode(&Message::SnapshotEnd(count)));
    flush_batch(socket, &mut batch, true, last_write)
}

/// This node's digest: one summary line per namespace, then `DIGESTEND`.
fn send_digest(cluster: &Cluster, socket: &mut TcpStream, last_write: &mut Instant) -> bool {
    let mut batch = String::new();
    for namespace in cluster.store.namespaces().unwrap_or_default() {
        let summary = own_summary(cluster, &namespace);
        if !summary.buckets.is_empty() {
            batch.push_str(&codec::digest_line(&namespace, &summary));
        }
        if !flush_batch(socket, &mut batch, false, last_write) {
            return false;
        }
    }
    batch.push_str(&codec::encode(&Message::DigestEnd));
    flush_batch(socket, &mut batch, true, last_write)
}

/// This node's ids and versions in the buckets where the peer's digest differed, then
/// `DETAILEND`.
fn send_detail(
    cluster: &Cluster,
    socket: &mut TcpStream,
    differing: &[(String, Vec<u8>)],
    last_write: &mut Instant,
) -> bool {
    let mut batch = String::new();
    for (namespace, buckets) in differing {
        let wanted: BTreeSet<u8> = buckets.iter().copied().collect();
        let entries: Vec<(Arc<str>, Version)> = cluster
            .store
            .versions(namespace)
            .unwrap_or_default()
            .into_iter()
            .filter(|(id, _)| wanted.contains(&codec::bucket_of(id)))
            .collect();
        for line in codec::detail_lines(namespace, buckets, &entries) {
            batch.push_str(&line);
            if !flush_batch(socket, &mut batch, false, last_write) {
                return false;
            }
        }
    }
    batch.push_str(&codec::encode(&Message::DetailEnd));
    flush_batch(socket, &mut batch, true, last_write)
}

/// The repairs a peer's detail asks for: every record of the buckets it covers that the peer
/// lacks or holds at a lower version, tombstones included, with its current deadline.
fn send_repairs(
    cluster: &Cluster,
    socket: &mut TcpStream,
    detail: &HashMap<String, PeerDetail>,
    last_write: &mut Instant,
) -> bool {
    let mut batch = String::new();
    for (namespace, peer) in detail {
        for (id, version) in cluster.store.versions(namespace).unwrap_or_default() {
            if !peer.buckets.contains(&codec::bucket_of(&id))
                || peer.versions.get(&*id).is_some_and(|held| *held >= version)
            {
                continue;
            }
            if let Ok(Some(record)) = cluster.store.record(namespace, &id) {
                batch.push_str(&codec::record_line(namespace, &record, true));
                if !flush_batch(socket, &mut batch, false, last_write) {
                    return false;
                }
            }
        }
    }
    flush_batch(socket, &mut batch, true, last_write)
}

/// Set by the process at shutdown: dialers stop.
pub static STOPPING: AtomicBool = AtomicBool::new(false);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_checks_only_with_the_same_secret_nonces_ids_and_role() {
        let (a, b) = ([1u8; NONCE_BYTES], [2u8; NONCE_BYTES]);
        let made = proof(b"s3cret", Role::Dialer, &a, &b, 10, 20);
        assert!(verify(b"s3cret", Role::Dialer, (&a, &b), (10, 20), &made));
        assert!(!verify(b"other", Role::Dialer, (&a, &b), (10, 20), &made));
        assert!(
            !verify(b"s3cret", Role::Listener, (&a, &b), (10, 20), &made),
            "not reflectable"
        );
        assert!(!verify(b"s3cret", Role::Dialer, (&b, &a), (10, 20), &made));
        assert!(!verify(b"s3cret", Role::Dialer, (&a, &b), (20, 10), &made));
    }

    #[test]
    fn an_overflowing_queue_is_dropped_and_marked_for_repair() {
        let outbox = Outbox::new();
        outbox.set(|q| q.digest_due = false);
        for _ in 0..=MAX_QUEUED_MESSAGES {
            outbox.push("PING\n".into());
        }
        let queue = outbox.lock();
        assert!(queue.lines.is_empty());
        assert!(
            queue.digest_due,
            "the digest exchange repairs what was dropped"
        );
    }

    #[test]
    fn leases_coalesce_to_the_latest_deadline_per_instance() {
        let outbox = Outbox::new();
        let now = Instant::now();
        for ms in [100, 300, 200] {
            outbox.note_lease(
                &Lease {
                    namespace: "ns".into(),
                    id: "x".into(),
                    registration: Version::ZERO,
                    remaining: Duration::from_millis(ms),
                },
                now,
            );
        }
        let queue = outbox.lock();
        assert_eq!(queue.leases.len(), 1);
        assert_eq!(
            queue.leases.values().next().map(|v| v.1),
            Some(now + Duration::from_millis(300))
        );
    }
}
