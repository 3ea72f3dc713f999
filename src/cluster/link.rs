//! One link: the socket shell around the codec, on plain threads (blocking std sockets with
//! deadlines; never on a `may` worker).
//!
//! A link runs the handshake on the thread that opened or accepted it, then one reader (this
//! thread) and one writer thread. The writer sends what the link's [`Outbox`] holds, a ping after
//! [`PING_INTERVAL`] of silence, coalesced leases every [`LEASE_FLUSH_INTERVAL`], snapshots and
//! digests. Either side closes the link after [`READ_DEADLINE`] without a line, or when a write
//! makes no progress for as long.

use super::codec::{self, Hello, LineDecoder, Message, NONCE_BYTES, PROTOCOL_VERSION};
use super::Cluster;
use crate::registry::store::{Lease, Origin, Record};
use crate::registry::version::Version;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::{HashMap, VecDeque};
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

/// What the writer has to send; filled by the store listeners (never blocking them) and by the
/// reader.
#[derive(Default)]
pub struct Queue {
    lines: VecDeque<Arc<str>>,
    /// Repair answers: bounded by the store's size, not by the queue bound.
    bulk: VecDeque<String>,
    /// (namespace, id) → (registration, deadline): one entry per instance, the latest wins.
    leases: HashMap<(Arc<str>, Arc<str>), (Version, Instant)>,
    snapshot_requested: bool,
    /// The queue overflowed: send every record with its lease (a full repair).
    full_repair: bool,
    digest_due: bool,
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
            queue.lines.clear();
            queue.full_repair = true;
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
        let deadline = now + lease.remaining;
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
        queue.lines.is_empty() && queue.bulk.is_empty() && !queue.snapshot_requested
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

/// Reads the next message within `deadline` (the handshake's reads).
fn read_message(
    socket: &mut TcpStream,
    decoder: &mut LineDecoder,
    buffer: &mut [u8],
) -> Result<Message, String> {
    loop {
        match decoder.next_line() {
            Ok(Some(line)) => return codec::decode(&line).map_err(|e| e.to_string()),
            Ok(None) => {}
            Err(_) => return Err("line too long".into()),
        }
        match socket.read(buffer) {
            Ok(0) => return Err("connection closed".into()),
            Ok(n) => decoder.push(&buffer[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
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
    let mut decoder = LineDecoder::default();
    let mut buffer = vec![0u8; READ_CHUNK_BYTES];
    let peer = match read_message(&mut socket, &mut decoder, &mut buffer) {
        Ok(Message::Hello(hello)) => hello,
        Ok(_) => return refuse("the first line is not a hello"),
        Err(e) => return refuse(&format!("no hello: {e}")),
    };
    if peer.version != PROTOCOL_VERSION {
        return refuse(&format!("unsupported protocol version {}", peer.version));
    }
    if peer.member == cluster.id {
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
        let theirs = match read_message(&mut socket, &mut decoder, &mut buffer) {
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
    let mut reader = Reader {
        cluster,
        peer: peer.member,
        outbox: &outbox,
        digest: HashMap::new(),
    };
    let reason = loop {
        let line = match decoder.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => {
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
            Err(_) => break format!("a line over {} bytes", codec::MAX_LINE_BYTES),
        };
        match codec::decode(&line) {
            Ok(Message::Goodbye) => {
                cluster.goodbye(peer.member);
                break "the peer left".into();
            }
            Ok(message) => reader.handle(message),
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
    /// The peer's digest being received: namespace → id → version.
    digest: HashMap<String, HashMap<String, Version>>,
}

impl Reader<'_> {
    fn handle(&mut self, message: Message) {
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
            Message::Digest { namespace, entries } => {
                self.digest.entry(namespace).or_default().extend(entries);
            }
            Message::DigestEnd => {
                let theirs = std::mem::take(&mut self.digest);
                let answers = repair_lines(self.cluster, &theirs);
                if !answers.is_empty() {
                    self.outbox.set(|q| q.bulk.extend(answers));
                }
            }
        }
    }
}

/// The records this node holds at a higher version than the peer's digest, or that the peer
/// lacks, as repair lines.
fn repair_lines(
    cluster: &Cluster,
    theirs: &HashMap<String, HashMap<String, Version>>,
) -> Vec<String> {
    let mut lines = Vec::new();
    let Ok(namespaces) = cluster.store.namespaces() else {
        return lines;
    };
    for namespace in namespaces {
        let Ok(records) = cluster.store.records(&namespace) else {
            continue;
        };
        let peer = theirs.get(&*namespace);
        for record in records {
            let (id, version) = match &record {
                Record::Live { instance, .. } => (instance.id.clone(), instance.version),
                Record::Tombstone(t) => (t.id.clone(), t.version),
            };
            let held = peer.and_then(|p| p.get(&*id));
            if held.is_none_or(|v| *v < version) {
                lines.push(codec::record_line(&namespace, &record, true));
            }
        }
    }
    lines
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
        let (lines, bulk, leases, snapshot, full, digest, closed, goodbye) = {
            let mut queue = outbox.lock();
            if queue.lines.is_empty()
                && queue.bulk.is_empty()
                && !queue.snapshot_requested
                && !queue.full_repair
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
            let bulk: Vec<String> = queue.bulk.drain(..).collect();
            (
                lines,
                bulk,
                leases,
                std::mem::take(&mut queue.snapshot_requested),
                std::mem::take(&mut queue.full_repair),
                std::mem::take(&mut queue.digest_due),
                queue.closed,
                queue.goodbye,
            )
        };
        let mut batch = String::new();
        for line in &lines {
            batch.push_str(line);
        }
        for line in &bulk {
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
        if (snapshot || full) && !send_snapshot(cluster, &mut socket, full, &mut last_write) {
            break;
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

/// Streams every record, shard by shard through the store's listing, then `END`; with
/// `with_leases` each live record is followed by its lease (a repair after an overflow).
fn send_snapshot(
    cluster: &Cluster,
    socket: &mut TcpStream,
    with_leases: bool,
    last_write: &mut Instant,
) -> bool {
    const BATCH_BYTES: usize = 256 * 1024;
    let mut count = 0u64;
    let mut batch = String::new();
    for namespace in cluster.store.namespaces().unwrap_or_default() {
        for record in cluster.store.records(&namespace).unwrap_or_default() {
            count += 1;
            batch.push_str(&codec::record_line(&namespace, &record, true));
            if let (
                true,
                Record::Live {
                    instance,
                    remaining: Some(remaining),
                },
            ) = (with_leases, &record)
            {
                batch.push_str(&codec::lease_line(&Lease {
                    namespace: namespace.clone(),
                    id: instance.id.clone(),
                    registration: instance.registration,
                    remaining: *remaining,
                }));
            }
            if batch.len() >= BATCH_BYTES {
                *last_write = Instant::now();
                if socket.write_all(batch.as_bytes()).is_err() {
                    return false;
                }
                batch.clear();
            }
        }
    }
    if !with_leases {
        batch.push_str(&codec::encode(&Message::SnapshotEnd(count)));
    }
    *last_write = Instant::now();
    socket.write_all(batch.as_bytes()).is_ok()
}

fn send_digest(cluster: &Cluster, socket: &mut TcpStream, last_write: &mut Instant) -> bool {
    let mut batch = String::new();
    for namespace in cluster.store.namespaces().unwrap_or_default() {
        let entries: Vec<(Arc<str>, Version)> = cluster
            .store
            .records(&namespace)
            .unwrap_or_default()
            .iter()
            .map(|record| match record {
                Record::Live { instance, .. } => (instance.id.clone(), instance.version),
                Record::Tombstone(t) => (t.id.clone(), t.version),
            })
            .collect();
        for line in codec::digest_lines(&namespace, &entries) {
            batch.push_str(&line);
        }
    }
    batch.push_str(&codec::encode(&Message::DigestEnd));
    *last_write = Instant::now();
    socket.write_all(batch.as_bytes()).is_ok()
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
        for _ in 0..=MAX_QUEUED_MESSAGES {
            outbox.push("PING\n".into());
        }
        let queue = outbox.lock();
        assert!(queue.lines.is_empty());
        assert!(queue.full_repair);
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
