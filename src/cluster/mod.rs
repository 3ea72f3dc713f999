//! Clustered mode: in-memory replication between registry nodes over TCP (contract
//! `cluster.md`).
//!
//! - `address`: the `host:port` syntax of the options, IPv6 always bracketed.
//! - `codec`: the line protocol, sans I/O (described in `docs/replication-protocol.md`).
//! - `membership`: the cluster directory (own file, liveness by the reader's clock).
//! - `link`: one link on plain threads: handshake (hello, HMAC proofs), reader, writer with its
//!   bounded queue, pings, coalesced leases, snapshots and digest repair.
//! - this file: the node's view of the cluster: the link table (one link per pair), members,
//!   the dialers with capped backoff, `--peers` resolution, the initial sync, graceful leave and
//!   the `/uptime` components.
//!
//! The store's change listener turns every local change into one line queued for every link
//! (never waiting: a full queue is dropped and repaired); changes from peers are never sent on.

pub mod address;
pub mod codec;
pub mod link;
pub mod membership;

use crate::registry::store::{Change, ChangeKind, Lease, Origin, Record, Store};
use address::{socket_text, HostPort};
use link::{LinkHandle, Outcome, Role, STOPPING};
use membership::Directory;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// First pause before redialing after a failure; doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Random jitter of every pause: up to this fraction either way.
const BACKOFF_JITTER: f64 = 0.2;
/// A link that stayed up this long resets its dialer's backoff.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// Longest wait for a TCP connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// `--peers` names are resolved again this often.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(10);
/// A member whose link went down stays in the member set this long.
const LINK_MEMBER_GRACE: Duration = Duration::from_secs(30);
/// A peer disconnected this long makes REPLICATION unhealthy.
const UNHEALTHY_AFTER: Duration = Duration::from_secs(600);
/// How often the membership loop runs (dialers, sizes, files).
const MEMBERSHIP_TICK: Duration = Duration::from_millis(250);
/// At graceful leave, queued changes get this long to go out before the goodbye.
const LEAVE_DRAIN: Duration = Duration::from_secs(2);
/// A member that left (goodbye), or whose link has been down this long and that no member file
/// names, is forgotten: a peer that makes up ids cannot grow the node's bookkeeping without bound.
const FORGET_DEPARTED_AFTER: Duration = Duration::from_secs(120);
/// Incoming replication connections at once (a cluster has a few members).
const MAX_REPLICATION_CONNECTIONS: usize = 256;

/// The cluster options, validated.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub bind: IpAddr,
    pub port: u16,
    pub advertised: Option<HostPort>,
    /// Masked in `Debug`, like every secret option.
    pub secret: crate::config::Secret,
    pub peers: Vec<HostPort>,
    pub dir: Option<PathBuf>,
    pub size: i64,
    pub sync_timeout: Duration,
}

#[derive(Default)]
struct Member {
    address: String,
    connected: bool,
    last_seen: Option<SystemTime>,
    down_since: Option<Instant>,
    listed_since: Option<Instant>,
    repairs: u64,
}

#[derive(Default)]
struct View {
    /// Members known from links, by id.
    linked: HashMap<u64, Member>,
    /// Alive, non-stale member files.
    files: Vec<(u64, String)>,
    /// Ids whose file address answered with another id.
    stale: HashSet<u64>,
    /// Ids that said goodbye, with when (forgotten after [`FORGET_DEPARTED_AFTER`]).
    left: HashMap<u64, Instant>,
    /// Dialed address → the member that answered there.
    answered: HashMap<String, u64>,
    /// Addresses that are this node.
    own: HashSet<String>,
    /// Resolved `--peers` addresses, with when each was first listed.
    resolved: HashMap<String, Instant>,
    /// Addresses with a dialer running.
    dialing: HashSet<String>,
    size: usize,
    beneath_since: Option<Instant>,
}

#[derive(Default)]
struct Sync {
    active: bool,
    /// Candidate address → the member found there, until it delivered a snapshot or failed.
    pending: HashMap<String, Option<u64>>,
    finished: HashSet<u64>,
    records: u64,
    peers: usize,
}

/// This node's part of the cluster.
pub struct Cluster {
    pub id: u64,
    pub advertised: String,
    config: ClusterConfig,
    store: Arc<dyn Store>,
    links: Mutex<HashMap<u64, LinkHandle>>,
    view: Mutex<View>,
    sync: Mutex<Sync>,
    synced: Condvar,
    connections: AtomicU64,
    directory: Mutex<Option<Directory>>,
    /// When the node began to join (the initial sync's start).
    joined: Instant,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn jitter(pause: Duration) -> Duration {
    let [byte] = link::random_bytes::<1>();
    let factor = 1.0 + BACKOFF_JITTER * (f64::from(byte) / 127.5 - 1.0);
    pause.mul_f64(factor)
}

/// The address other nodes reach this node at (contract §2.2).
fn advertised(config: &ClusterConfig, bound: SocketAddr) -> String {
    if let Some(given) = &config.advertised {
        return given.text();
    }
    if !bound.ip().is_unspecified() {
        return socket_text(bound);
    }
    let v4_only = bound.is_ipv4();
    let mut found: Option<IpAddr> = None;
    // SAFETY: getifaddrs fills a list we walk read-only and free with freeifaddrs.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) == 0 {
            let mut cursor = list;
            while !cursor.is_null() && found.is_none() {
                let entry = &*cursor;
                if !entry.ifa_addr.is_null() {
                    let family = i32::from((*entry.ifa_addr).sa_family);
                    let ip = if family == libc::AF_INET {
                        let sin = &*(entry.ifa_addr as *const libc::sockaddr_in);
                        Some(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ))
                    } else if family == libc::AF_INET6 && !v4_only {
                        let sin6 = &*(entry.ifa_addr as *const libc::sockaddr_in6);
                        Some(IpAddr::from(sin6.sin6_addr.s6_addr))
                    } else {
                        None
                    };
                    let link_local = |ip: &IpAddr| match ip {
                        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
                        IpAddr::V4(_) => false,
                    };
                    if let Some(ip) = ip.filter(|ip| !ip.is_loopback() && !link_local(ip)) {
                        found = Some(ip);
                    }
                }
                cursor = entry.ifa_next;
            }
            libc::freeifaddrs(list);
        }
    }
    let ip = found.unwrap_or(if v4_only {
        IpAddr::from([127, 0, 0, 1])
    } else {
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
    });
    socket_text(SocketAddr::new(ip, bound.port()))
}

/// Binds the replication listener (std, without SO_REUSEPORT, so a port in use fails).
pub fn bind(config: &ClusterConfig) -> std::io::Result<std::net::TcpListener> {
    std::net::TcpListener::bind(SocketAddr::new(config.bind, config.port))
}

impl Cluster {
    /// Joins: writes the own member file, reads the directory, resolves `--peers`, subscribes to
    /// the store's changes and starts the membership loop and the dialers. Fails with a line for
    /// the operator (exit 1).
    pub fn start(
        config: ClusterConfig,
        id: u64,
        store: Arc<dyn Store>,
        bound: SocketAddr,
    ) -> Result<Arc<Cluster>, String> {
        let advertised = advertised(&config, bound);
        let directory = match &config.dir {
            Some(path) => {
                let started = crate::log::rfc3339(
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as i128),
                    3,
                );
                let mut directory = Directory::open(path, id, &advertised, started)?;
                directory.write_own(true)?;
                directory.read();
                Some(directory)
            }
            None => None,
        };
        if config.secret.expose().is_empty() {
            crate::warn!("replication is not authenticated: set --replication_secret");
        }
        if config.dir.is_none() && config.peers.is_empty() {
            crate::warn!("replication has no peer source (--cluster_dir \"\" and no --peers): a cluster of one");
        }
        crate::info!("cluster member", "id" => codec::member_text(id), "address" => advertised);
        let cluster = Arc::new(Cluster {
            id,
            advertised,
            config,
            store: store.clone(),
            links: Mutex::new(HashMap::new()),
            view: Mutex::new(View {
                size: 1,
                ..View::default()
            }),
            sync: Mutex::new(Sync {
                active: true,
                ..Sync::default()
            }),
            synced: Condvar::new(),
            connections: AtomicU64::new(0),
            directory: Mutex::new(directory),
            joined: Instant::now(),
        });
        cluster.resolve_peers();
        cluster.refresh_files();
        {
            let candidates = cluster.candidates();
            let mut sync = lock(&cluster.sync);
            sync.pending = candidates.into_iter().map(|a| (a, None)).collect();
        }
        let weak = Arc::downgrade(&cluster);
        store.subscribe(Box::new(move |change| {
            if let Some(cluster) = weak.upgrade() {
                cluster.on_change(change);
            }
        }));
        let weak = Arc::downgrade(&cluster);
        store.subscribe_leases(Box::new(move |lease| {
            if let Some(cluster) = weak.upgrade() {
                cluster.on_lease(lease);
            }
        }));
        let looping = cluster.clone();
        std::thread::Builder::new()
            .name("membership".into())
            .spawn(move || looping.membership_loop())
            .map_err(|e| format!("cannot start the membership thread: {e}"))?;
        Ok(cluster)
    }

    /// Serves an accepted replication connection on a plain thread of its own.
    pub fn accept(self: &Arc<Cluster>, link: crate::net::Link) {
        let Ok(detached) = link.detach() else { return };
        let cluster = self.clone();
        let _ = std::thread::Builder::new()
            .name("replication-link".into())
            .spawn(move || {
                let socket = detached.socket.try_clone();
                if let Ok(socket) = socket {
                    link::run(&cluster, socket, Role::Listener, None);
                }
                drop(detached);
            });
    }

    /// The most incoming replication connections at once.
    pub fn max_connections() -> usize {
        MAX_REPLICATION_CONNECTIONS
    }

    /// Waits for the initial sync (contract §4 step 5), at most `--sync_timeout`, and logs the
    /// outcome.
    pub fn wait_initial_sync(&self) {
        let began = self.joined;
        let deadline = began + self.config.sync_timeout;
        let mut sync = lock(&self.sync);
        let total = sync.pending.len();
        while !sync.pending.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            sync = self
                .synced
                .wait_timeout(sync, deadline - now)
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        sync.active = false;
        let took = crate::config::format_go_duration(began.elapsed());
        if sync.pending.is_empty() {
            crate::info!(&format!(
                "initial sync complete: {} records from {} peers in {took}",
                sync.records, sync.peers
            ));
        } else {
            crate::warn!(&format!(
                "initial sync incomplete after sync_timeout ({}): serving with {} records from {} of {} peers",
                crate::config::format_go_duration(self.config.sync_timeout),
                sync.records,
                sync.peers,
                total.max(sync.peers)
            ));
            sync.pending.clear();
        }
    }

    /// Graceful leave (contract §11): the member file goes, queued changes get up to 2 s, then a
    /// goodbye on every link.
    pub fn leave(&self) {
        STOPPING.store(true, Ordering::SeqCst);
        if let Some(directory) = lock(&self.directory).as_ref() {
            directory.remove_own();
        }
        let deadline = Instant::now() + LEAVE_DRAIN;
        while Instant::now() < deadline && !lock(&self.links).values().all(|l| l.outbox.drained()) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let outboxes: Vec<_> = lock(&self.links)
            .values()
            .map(|l| l.outbox.clone())
            .collect();
        for outbox in &outboxes {
            outbox.close(true);
        }
        // Let the writers send their goodbye.
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline && !lock(&self.links).is_empty() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn on_change(&self, change: &Change) {
        if change.origin != Origin::Local || change.kind == ChangeKind::Expired {
            return;
        }
        let instance = &change.instance;
        let record = if change.kind == ChangeKind::Deregistered {
            Record::Tombstone(crate::registry::store::Tombstone {
                id: instance.id.clone(),
                service_name: instance.service_name.clone(),
                version: instance.version,
                registration: instance.registration,
                expired_at_unix_millis: None,
            })
        } else {
            Record::Live {
                instance: (**instance).clone(),
                remaining: (!instance.never_expires()).then_some(instance.ttl),
            }
        };
        let line: Arc<str> = codec::record_line(&change.namespace, &record, false).into();
        for link in lock(&self.links).values() {
            link.outbox.push(line.clone());
        }
    }

    fn on_lease(&self, lease: &Lease) {
        let now = Instant::now();
        for link in lock(&self.links).values() {
            link.outbox.note_lease(lease, now);
        }
    }

    fn next_connection(&self) -> u64 {
        self.connections.fetch_add(1, Ordering::Relaxed)
    }

    fn syncing(&self) -> bool {
        lock(&self.sync).active
    }

    /// True once the initial sync has finished or `--sync_timeout` has passed (`/ready`).
    pub fn initial_sync_ended(&self) -> bool {
        !self.syncing()
    }

    /// Installs an authenticated link unless the pair rule keeps another one: of two
    /// connections between the same two nodes, both keep the one dialed by the lower id.
    fn install(
        &self,
        member: u64,
        address: &str,
        dialed: Option<&str>,
        handle: LinkHandle,
    ) -> bool {
        if let Some(dialed) = dialed {
            self.learn(dialed, member);
        }
        let mut links = lock(&self.links);
        if let Some(existing) = links.get(&member) {
            let preferred = self.id.min(member);
            if handle.dialer == preferred && existing.dialer != preferred {
                existing.shut();
            } else {
                return false;
            }
        }
        links.insert(member, handle);
        drop(links);
        let mut view = lock(&self.view);
        view.left.remove(&member);
        let entry = view.linked.entry(member).or_default();
        entry.address = address.to_string();
        entry.connected = true;
        entry.down_since = None;
        entry.listed_since.get_or_insert_with(Instant::now);
        entry.last_seen = Some(SystemTime::now());
        drop(view);
        crate::info!("replication link up", "peer" => address, "id" => codec::member_text(member));
        true
    }

    fn uninstall(&self, member: u64, connection: u64) {
        let mut links = lock(&self.links);
        if links
            .get(&member)
            .is_some_and(|l| l.connection == connection)
        {
            links.remove(&member);
            drop(links);
            if let Some(entry) = lock(&self.view).linked.get_mut(&member) {
                entry.connected = false;
                entry.down_since = Some(Instant::now());
            }
        }
    }

    fn seen(&self, member: u64) {
        if let Some(entry) = lock(&self.view).linked.get_mut(&member) {
            entry.last_seen = Some(SystemTime::now());
        }
    }

    fn goodbye(&self, member: u64) {
        let mut view = lock(&self.view);
        view.left.insert(member, Instant::now());
        view.linked.remove(&member);
        view.files.retain(|(id, _)| *id != member);
        drop(view);
        self.log_size();
    }

    fn repaired(&self, member: u64) {
        if let Some(entry) = lock(&self.view).linked.get_mut(&member) {
            entry.repairs += 1;
        }
    }

    /// A dialed address answered with `member`.
    fn learn(&self, address: &str, member: u64) {
        let mut view = lock(&self.view);
        view.answered.insert(address.to_string(), member);
        let stale: Vec<u64> = view
            .files
            .iter()
            .filter(|(id, a)| a == address && *id != member)
            .map(|(id, _)| *id)
            .collect();
        view.stale.extend(stale);
        // A member last seen at this address that is not linked now was the process before a
        // restart: the address answering with another id ends it at once (contract §11), in
        // `--peers` mode as in the directory.
        let replaced: Vec<u64> = view
            .linked
            .iter()
            .filter(|(id, m)| **id != member && !m.connected && m.address == address)
            .map(|(id, _)| *id)
            .collect();
        for id in &replaced {
            view.linked.remove(id);
        }
        drop(view);
        if !replaced.is_empty() {
            self.log_size();
        }
        let mut sync = lock(&self.sync);
        if sync.finished.contains(&member) {
            sync.pending.remove(address);
        } else if let Some(slot) = sync.pending.get_mut(address) {
            *slot = Some(member);
        }
        self.synced.notify_all();
    }

    fn sync_done(&self, member: u64, records: u64) {
        let mut sync = lock(&self.sync);
        if !sync.finished.insert(member) {
            return;
        }
        sync.records += records;
        sync.peers += 1;
        sync.pending.retain(|_, m| *m != Some(member));
        self.synced.notify_all();
    }

    /// An address failed before delivering a snapshot.
    fn sync_failed_address(&self, address: &str) {
        let mut sync = lock(&self.sync);
        sync.pending.remove(address);
        self.synced.notify_all();
    }

    /// The link to `member` ended: its addresses fail unless another link to it is up.
    fn sync_failed_member(&self, member: u64) {
        if lock(&self.links).contains_key(&member) {
            return;
        }
        let mut sync = lock(&self.sync);
        sync.pending.retain(|_, m| *m != Some(member));
        self.synced.notify_all();
    }

    /// Addresses to dial: alive files (not stale, not left, not this node) and resolved peers.
    fn candidates(&self) -> Vec<String> {
        let view = lock(&self.view);
        let mut out: Vec<String> = view
            .files
            .iter()
            .filter(|(id, _)| {
                *id != self.id && !view.stale.contains(id) && !view.left.contains_key(id)
            })
            .map(|(_, a)| a.clone())
            .chain(view.resolved.keys().cloned())
            .filter(|a| *a != self.advertised && !view.own.contains(a))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    fn resolve_peers(&self) {
        let mut resolved = HashMap::new();
        for peer in &self.config.peers {
            match peer {
                HostPort::Ip(address) => {
                    resolved.insert(socket_text(*address), ());
                }
                HostPort::Name(name, port) => match (name.as_str(), *port).to_socket_addrs() {
                    Ok(addresses) => {
                        for address in addresses {
                            resolved.insert(socket_text(address), ());
                        }
                    }
                    Err(e) => {
                        crate::warn!("cannot resolve a peer", "peer" => peer.text(), "error" => e)
                    }
                },
            }
        }
        let mut view = lock(&self.view);
        let now = Instant::now();
        let previous = std::mem::take(&mut view.resolved);
        view.resolved = resolved
            .into_keys()
            .map(|a| {
                let since = previous.get(&a).copied().unwrap_or(now);
                (a, since)
            })
            .collect();
    }

    fn refresh_files(&self) {
        let mut directory = lock(&self.directory);
        let Some(directory) = directory.as_mut() else {
            return;
        };
        if let Err(e) = directory.write_own(false) {
            crate::warn!(&e);
        }
        directory.read();
        let alive = directory.alive();
        let mut view = lock(&self.view);
        let left: HashSet<u64> = view.left.keys().copied().collect();
        view.files = alive
            .into_iter()
            .filter(|(id, _)| !left.contains(id))
            .collect();
    }

    fn member_set(&self) -> Vec<(u64, String)> {
        let view = lock(&self.view);
        let mut members: HashMap<u64, String> = HashMap::new();
        members.insert(self.id, self.advertised.clone());
        for (id, address) in &view.files {
            if !view.stale.contains(id) && !view.left.contains_key(id) {
                members.insert(*id, address.clone());
            }
        }
        for (id, member) in &view.linked {
            let counts = member.connected
                || member
                    .down_since
                    .is_some_and(|at| at.elapsed() < LINK_MEMBER_GRACE);
            if counts && !view.left.contains_key(id) {
                members.insert(*id, member.address.clone());
            }
        }
        let mut members: Vec<(u64, String)> = members.into_iter().collect();
        members.sort();
        members
    }

    /// Forgets departed members (see [`FORGET_DEPARTED_AFTER`]).
    fn forget_departed(&self) {
        let mut view = lock(&self.view);
        let View {
            linked,
            files,
            left,
            ..
        } = &mut *view;
        linked.retain(|id, member| {
            member.connected
                || member
                    .down_since
                    .is_none_or(|at| at.elapsed() < FORGET_DEPARTED_AFTER)
                || files.iter().any(|(file, _)| file == id)
        });
        left.retain(|_, at| at.elapsed() < FORGET_DEPARTED_AFTER);
    }

    fn log_size(&self) {
        let size = self.member_set().len();
        let mut view = lock(&self.view);
        if view.size != size {
            crate::info!(&format!(
                "Number of members in the cluster has been changed. prevSize: {}, currSize: {size}",
                view.size
            ));
            view.size = size;
        }
        let threshold = self.config.size;
        if (size as i64) < threshold {
            view.beneath_since.get_or_insert_with(Instant::now);
        } else {
            view.beneath_since = None;
        }
    }

    fn membership_loop(self: Arc<Cluster>) {
        let mut last_read = Instant::now();
        let mut last_resolve = Instant::now();
        let mut last_warning = Instant::now();
        loop {
            if STOPPING.load(Ordering::SeqCst) {
                return;
            }
            if last_read.elapsed() >= membership::READ_INTERVAL {
                last_read = Instant::now();
                self.refresh_files();
            }
            if last_resolve.elapsed() >= RESOLVE_INTERVAL {
                last_resolve = Instant::now();
                self.resolve_peers();
            }
            for address in self.candidates() {
                if lock(&self.view).dialing.insert(address.clone()) {
                    let cluster = self.clone();
                    let spawned = std::thread::Builder::new()
                        .name("replication-dialer".into())
                        .spawn(move || cluster.dial_loop(address.clone()));
                    if let Err(e) = spawned {
                        crate::warn!("cannot start a dialer thread", "error" => e);
                    }
                }
            }
            self.forget_departed();
            self.log_size();
            let size = lock(&self.view).size;
            if (size as i64) < self.config.size && last_warning.elapsed() >= Duration::from_secs(60)
            {
                last_warning = Instant::now();
                crate::warn!(&format!(
                    "Cluster size ({size}) is beneath threshold ({})",
                    self.config.size
                ));
            }
            std::thread::sleep(MEMBERSHIP_TICK);
        }
    }

    fn wanted(&self, address: &str) -> bool {
        self.candidates().iter().any(|a| a == address)
    }

    /// Dials one candidate address for as long as it is one, with capped, jittered backoff.
    fn dial_loop(self: Arc<Cluster>, address: String) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            if STOPPING.load(Ordering::SeqCst) || !self.wanted(&address) {
                break;
            }
            let answered = lock(&self.view).answered.get(&address).copied();
            if answered.is_some_and(|m| lock(&self.links).contains_key(&m)) {
                std::thread::sleep(MEMBERSHIP_TICK);
                continue;
            }
            let target = address
                .to_socket_addrs()
                .ok()
                .and_then(|mut addresses| addresses.next());
            let connected = target.map(|t| TcpStream::connect_timeout(&t, CONNECT_TIMEOUT));
            let outcome = match connected {
                Some(Ok(socket)) => link::run(&self, socket, Role::Dialer, Some(&address)),
                _ => {
                    self.sync_failed_address(&address);
                    Outcome::HandshakeFailed
                }
            };
            match outcome {
                Outcome::OwnAddress => {
                    lock(&self.view).own.insert(address.clone());
                    self.sync_failed_address(&address);
                    break;
                }
                Outcome::Duplicate(member) => {
                    self.learn(&address, member);
                    std::thread::sleep(MEMBERSHIP_TICK);
                    continue;
                }
                Outcome::HandshakeFailed => self.sync_failed_address(&address),
                Outcome::Ended(_, up) if up >= BACKOFF_RESET_AFTER => backoff = FIRST_BACKOFF,
                Outcome::Ended(..) => {}
            }
            std::thread::sleep(jitter(backoff));
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        lock(&self.view).dialing.remove(&address);
    }

    /// The replication series of `/metrics`: one per peer address of `/uptime`'s REPLICATION
    /// component (entries of one address, such as a peer that restarted with a new id, merged:
    /// up when any is connected, their queues and repairs added), sorted by address.
    pub fn peer_metrics(&self) -> Vec<crate::metrics::PeerMetrics> {
        let mut merged: std::collections::BTreeMap<String, crate::metrics::PeerMetrics> =
            std::collections::BTreeMap::new();
        for (name, _, properties) in self.health() {
            if name != "REPLICATION" {
                continue;
            }
            for peer in properties["peers"].as_array().into_iter().flatten() {
                let address = peer["address"].as_str().unwrap_or_default().to_string();
                let entry = merged.entry(address.clone()).or_default();
                entry.address = address;
                entry.up |= peer["connected"] == true;
                entry.queue_depth += peer["queue"].as_u64().unwrap_or(0);
                entry.repairs += peer["repairs"].as_u64().unwrap_or(0);
            }
        }
        merged.into_values().collect()
    }

    /// `/uptime`'s CLUSTER and REPLICATION components: (name, healthy, properties).
    pub fn health(&self) -> Vec<(&'static str, bool, Value)> {
        let members = self.member_set();
        let size = members.len();
        let view = lock(&self.view);
        let mut cluster = json!({
            "self": codec::member_text(self.id),
            "address": self.advertised,
            "size": size,
            "threshold": self.config.size,
            "members": members.iter().map(|(id, a)| json!({"id": codec::member_text(*id), "address": a})).collect::<Vec<_>>(),
        });
        if let Some(since) = view
            .beneath_since
            .filter(|s| s.elapsed() >= UNHEALTHY_AFTER)
        {
            cluster["message"] = format!(
                "Cluster size ({size}) is beneath threshold ({}) for {}",
                self.config.size,
                crate::config::format_go_duration(since.elapsed())
            )
            .into();
        }
        let links = lock(&self.links);
        let mut peers: Vec<(String, Option<u64>, Value)> = Vec::new();
        let mut disconnected = 0usize;
        let mut longest = Duration::ZERO;
        let mut named_addresses = HashSet::new();
        for (id, address) in members.iter().filter(|(id, _)| *id != self.id) {
            named_addresses.insert(address.clone());
            let linked = view.linked.get(id);
            let connected = links.contains_key(id);
            let queue = links
                .get(id)
                .map_or(0, |l| l.outbox.waiting.load(Ordering::Relaxed));
            if !connected {
                let since = linked.and_then(|m| m.down_since.or(m.listed_since));
                let down = since.map_or(Duration::ZERO, |s| s.elapsed());
                if down > UNHEALTHY_AFTER {
                    disconnected += 1;
                    longest = longest.max(down);
                }
            }
            peers.push((
                address.clone(),
                Some(*id),
                json!({
                    "id": codec::member_text(*id),
                    "address": address,
                    "connected": connected,
                    "last_seen": linked.and_then(|m| m.last_seen).map(|t| crate::log::rfc3339(
                        t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128), 3)),
                    "queue": queue,
                    "repairs": linked.map_or(0, |m| m.repairs),
                }),
            ));
        }
        for (address, since) in &view.resolved {
            let identified = view.answered.contains_key(address) || view.own.contains(address);
            if identified || named_addresses.contains(address) || *address == self.advertised {
                continue;
            }
            if since.elapsed() > UNHEALTHY_AFTER {
                disconnected += 1;
                longest = longest.max(since.elapsed());
            }
            peers.push((
                address.clone(),
                None,
                json!({"id": null, "address": address, "connected": false, "last_seen": null, "queue": 0, "repairs": 0}),
            ));
        }
        peers.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let total = peers.len();
        let mut replication =
            json!({ "peers": peers.into_iter().map(|p| p.2).collect::<Vec<_>>() });
        let healthy = disconnected == 0;
        if !healthy {
            replication["message"] = format!(
                "{disconnected}/{total} replication clients disconnected for at least {}",
                crate::config::format_go_duration(longest)
            )
            .into();
        }
        vec![
            ("CLUSTER", true, cluster),
            ("REPLICATION", healthy, replication),
        ]
    }
}
