//! The Redis store (spec `redis.md`): every piece of registry state lives in Redis, so any
//! number of registry processes on one Redis are interchangeable.
//!
//! - [`settings`]: the options (address forms, credentials, mode), parsed without I/O.
//! - [`link`]: the connection layer: plain worker threads own the connections, callers park on a
//!   channel with a deadline; batching, timeouts, capped-backoff reconnects, Sentinel and Cluster
//!   (`cluster`: the slot map and redirects); `resp`: the wire protocol, bounded.
//! - [`keys`]: the key layout, one hash tag per namespace.
//! - `store.lua`: the one script every operation runs, so every write (record, indexes,
//!   deadline, capacity, change log, version) is applied atomically, judged by Redis's clock.
//! - [`events`]: the change channel: other nodes' changes move this node's change index and
//!   free its cached responses within milliseconds.
//!
//! Every script call also reaps what expired in its namespace (each expired instance is removed
//! and recorded once, by whichever script sees it first), and a reaper thread walks the
//! namespaces that hold instances every [`REAP_INTERVAL`], so an expiry is recorded within a
//! second even in a namespace nobody reads. The reaper's walk is also the health probe.

mod cluster;
pub mod events;
pub mod keys;
pub mod link;
mod overdue;
/// Public for the fuzz crate, which feeds it arbitrary replies.
pub mod resp;
pub mod settings;

use crate::cluster::codec::{instance_from_json, instance_json};
use crate::registry::error::Error;
use crate::registry::instance::{Instance, TtlPolicy, UP};
use crate::registry::store::{
    Applied, Call, Change, ChangeKind, ChangeLog, Clock, Lease, LeaseListener, Listener, Lookup,
    Origin, Record, Result, ResyncListener, Snapshot, Store, SystemClock,
};
use crate::registry::version::HybridClock;
use keys::{
    hex, namespace_key, namespace_key_of_hex, unhex, DEADLINES, DUE_NAMESPACES, LIVE_NAMESPACES,
    RECORDS,
};
use link::{Command, Health, Link, Reply};
use resp::Value;
use settings::RedisSettings;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The script every operation runs.
const SCRIPT: &str = include_str!("store.lua");
/// How often the reaper (and health probe) walks the namespaces.
pub const REAP_INTERVAL: Duration = Duration::from_millis(250);
/// Longest wait of one reaper or probe call.
const BACKGROUND_DEADLINE: Duration = Duration::from_millis(1500);
/// Most namespaces one reaper pass visits (the rest wait for the next pass).
const REAP_NAMESPACES_PER_PASS: usize = 1000;
/// Connections (worker threads) to Redis.
const WORKERS: usize = 4;
/// Attempts of a modification whose record changed under it before it gives up.
const MODIFY_ATTEMPTS: usize = 8;
/// How often a command refused while its slot migrates is sent again, and for how long.
const IN_TRANSIT_RETRY: Duration = Duration::from_millis(10);
const IN_TRANSIT_PATIENCE: Duration = Duration::from_secs(1);
/// How long a change stays in the Eureka change log (as the script keeps it).
const LOG_RETENTION_MILLIS: i64 = 180_000;

/// Store-wide settings.
#[derive(Clone, Copy, Debug)]
pub struct RedisConfig {
    pub ttl: TtlPolicy,
    pub capacity: Option<usize>,
    pub node_id: u64,
}

/// The Redis backend.
pub struct RedisStore {
    link: Link,
    config: RedisConfig,
    /// This node's id in change messages, so it skips its own.
    node: String,
    versions: HybridClock,
    clock: SystemClock,
    listeners: RwLock<Vec<Listener>>,
    /// Told when a new subscription starts: changes made meanwhile were not heard.
    resync_listeners: RwLock<Vec<ResyncListener>>,
    /// True while the change channel is subscribed: only then may responses be cached.
    subscribed: AtomicBool,
    /// Moves whenever the subscription is made again (changes may have been missed).
    generation: AtomicU64,
}

fn unavailable(why: impl Into<String>) -> Error {
    Error::unavailable(why)
}

fn strange(what: &str) -> Error {
    unavailable(format!("Redis answered something unexpected ({what})"))
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// Redis's clock in milliseconds, from the reply to `TIME`.
fn redis_millis(time: &Value) -> Option<i64> {
    match time {
        Value::Array(parts) if parts.len() == 2 => {
            let seconds = int(&parts[0])?;
            let micros = int(&parts[1])?;
            Some(seconds.saturating_mul(1000).saturating_add(micros / 1000))
        }
        _ => None,
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()?
            .parse::<f64>()
            .ok()
            .map(|f| f as i64),
        _ => None,
    }
}

fn array(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) => Some(items),
        Value::Nil => Some(&[]),
        _ => None,
    }
}

/// A stored value: `<hex service> <hex status> <ttl ms>\n<record JSON>`.
fn value_of(instance: &Instance) -> Vec<u8> {
    let mut value = format!(
        "{} {} {}\n",
        hex(instance.service_name.as_bytes()),
        hex(instance.status.as_bytes()),
        ttl_millis(instance)
    )
    .into_bytes();
    value.extend_from_slice(instance_json(instance).as_bytes());
    value
}

/// The TTL in whole milliseconds, rounded up (spec §3).
fn ttl_millis(instance: &Instance) -> u64 {
    let nanos = instance.ttl.as_nanos();
    nanos.div_ceil(1_000_000).min(u64::MAX as u128 / 2) as u64
}

/// The TTL argument of the script: -1 for an instance that never expires.
fn ttl_arg(instance: &Instance) -> String {
    if instance.never_expires() {
        "-1".into()
    } else {
        ttl_millis(instance).to_string()
    }
}

/// Reads a stored value; `deadline` (Redis ms, -1 none) gives the last heartbeat.
fn decode(value: &[u8], deadline: i64) -> Result<Instance> {
    let at = value
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| strange("a record without its header"))?;
    let header = std::str::from_utf8(&value[..at]).map_err(|_| strange("a record header"))?;
    let ttl: i64 = header
        .rsplit(' ')
        .next()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| strange("a record header"))?;
    let instance = instance_from_json(&value[at + 1..]).map_err(|e| strange(&e.0))?;
    if deadline >= 0 {
        instance
            .last_heartbeat
            .set(deadline.saturating_sub(ttl).saturating_mul(1_000_000));
    }
    Ok(instance)
}

/// The set of index keys an instance is a member of.
fn index_keys(instance: &Instance) -> String {
    let mut keys = vec![keys::service_index(&instance.service_name)];
    if instance
        .id_suffixes()
        .nth(keys::MAX_INDEXED_SUFFIXES)
        .is_some()
    {
        keys.push(keys::DEEP_SUFFIXES.to_string());
    } else {
        for suffix in instance.id_suffixes() {
            let key = keys::suffix_index(suffix);
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    let [vip, secure_vip] = instance.vip_keys();
    if let Some(vip) = vip {
        keys.push(keys::vip_index(vip));
    }
    if let Some(vip) = secure_vip {
        keys.push(keys::secure_vip_index(vip));
    }
    keys.join(" ")
}

fn kind_of(letter: u8) -> Option<ChangeKind> {
    Some(match letter {
        b'R' => ChangeKind::Registered,
        b'P' => ChangeKind::Replaced,
        b'M' => ChangeKind::Modified,
        b'D' => ChangeKind::Deregistered,
        b'E' => ChangeKind::Expired,
        // A read-only catalog of another node changed the service: its watchers and cached
        // bodies follow as for a modification.
        b'C' => ChangeKind::Modified,
        _ => return None,
    })
}

impl RedisStore {
    /// The store over `settings`; starts the connection workers, the reaper and the change
    /// subscriber. Redis need not be reachable: calls fail with `Unavailable` until it is.
    pub fn start(settings: RedisSettings, config: RedisConfig) -> std::io::Result<Arc<RedisStore>> {
        let health = Arc::new(Health::default());
        health.fail("not connected yet");
        let connector =
            link::Connector::new(settings, SCRIPT, health).map_err(std::io::Error::other)?;
        let link = Link::start(connector, WORKERS)?;
        let store = Arc::new(RedisStore {
            link,
            config,
            node: format!("{:016x}", config.node_id),
            versions: HybridClock::new(config.node_id),
            clock: SystemClock::default(),
            listeners: RwLock::new(Vec::new()),
            resync_listeners: RwLock::new(Vec::new()),
            subscribed: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        });
        let reaped = Arc::downgrade(&store);
        std::thread::Builder::new()
            .name("redis-reaper".into())
            .spawn(move || loop {
                std::thread::sleep(REAP_INTERVAL);
                let Some(store) = reaped.upgrade() else {
                    return;
                };
                store.reap_due();
            })?;
        events::start(&store)?;
        Ok(store)
    }

    /// Sends a `PING`, waiting at most `wait`: true when Redis answered (and the health says so).
    pub fn probe(&self, wait: Duration) -> bool {
        let ping = Command::plain(&[b"PING"]);
        self.link.call(vec![ping], Instant::now() + wait).is_ok() && self.link.health.healthy()
    }

    /// Whether Redis works, for `/uptime`.
    pub fn health(&self) -> &Health {
        &self.link.health
    }

    pub fn settings(&self) -> &RedisSettings {
        self.link.connector.settings()
    }

    /// Tells the listeners of a change; `index` is the namespace's change index after it.
    fn emit(
        &self,
        namespace: &str,
        instance: Arc<Instance>,
        kind: ChangeKind,
        origin: Origin,
        index: Option<u64>,
    ) {
        let change = Change {
            namespace: namespace.into(),
            instance,
            kind,
            origin,
            at: self.clock.monotonic_nanos(),
            index,
        };
        let listeners = self.listeners.read().unwrap_or_else(|e| e.into_inner());
        for listener in listeners.iter() {
            listener(&change);
        }
    }

    /// Runs the script's `op` on the namespace (with `more` commands after it in the same
    /// batch), emits the expiries it reaped, and returns its result.
    fn script(&self, call: &Call, op: &str, args: &[&[u8]], more: Vec<Command>) -> Result<Value> {
        self.script_on(call.namespace, call.eureka, call.deadline, op, args, more)
            .map(|(result, _)| result)
    }

    /// [`RedisStore::script`], with the namespace's change index after it (`None` from an
    /// operation that answers without it).
    fn script_indexed(
        &self,
        call: &Call,
        op: &str,
        args: &[&[u8]],
    ) -> Result<(Value, Option<u64>)> {
        self.script_on(
            call.namespace,
            call.eureka,
            call.deadline,
            op,
            args,
            Vec::new(),
        )
    }

    fn script_on(
        &self,
        namespace: &str,
        eureka: bool,
        deadline: Instant,
        op: &str,
        args: &[&[u8]],
        more: Vec<Command>,
    ) -> Result<(Value, Option<u64>)> {
        let mut commands = vec![self.script_command(namespace, eureka, op, args)];
        commands.extend(more);
        let mut replies = self.call_through_migrations(commands, deadline)?;
        if replies.is_empty() {
            return Err(strange("no reply"));
        }
        self.script_reply(namespace, replies.swap_remove(0))
    }

    /// The script's `op` on the namespace, as a command.
    fn script_command(&self, namespace: &str, eureka: bool, op: &str, args: &[&[u8]]) -> Command {
        let mut full: Vec<Vec<u8>> = Vec::with_capacity(args.len() + 3);
        full.push(op.as_bytes().to_vec());
        full.push(self.node.as_bytes().to_vec());
        full.push(if eureka { b"1".to_vec() } else { b"0".to_vec() });
        full.extend(args.iter().map(|a| a.to_vec()));
        Command::Script {
            namespace: namespace_key(namespace),
            args: full,
        }
    }

    /// A script's reply: its result and the index after it; the expiries it reaped are emitted.
    fn script_reply(&self, namespace: &str, reply: Reply) -> Result<(Value, Option<u64>)> {
        let value = match reply {
            Reply::Value(value) => value,
            Reply::Error { code, detail } => {
                return Err(unavailable(format!("Redis: {code} {detail}")));
            }
        };
        let Value::Array(mut parts) = value else {
            return Err(strange("a script result"));
        };
        // The result, the expiries reaped, and (but for heartbeats) the index after them.
        let index = match parts.len() {
            2 => None,
            3 => match parts.pop().as_ref().and_then(int) {
                Some(index) if index >= 0 => Some(index as u64),
                _ => return Err(strange("a change index")),
            },
            _ => return Err(strange("a script result")),
        };
        let gone = parts.pop().unwrap_or(Value::Nil);
        let result = parts.pop().unwrap_or(Value::Nil);
        for value in array(&gone).unwrap_or_default() {
            if let Some(Ok(instance)) = bytes(value).map(|b| decode(b, -1)) {
                self.emit(
                    namespace,
                    Arc::new(instance),
                    ChangeKind::Expired,
                    Origin::Local,
                    index,
                );
            }
        }
        Ok((result, index))
    }

    /// Runs the commands, again every [`IN_TRANSIT_RETRY`] while their slot is in the middle of a
    /// migration (for at most [`IN_TRANSIT_PATIENCE`], and never past `deadline`). A script
    /// refused mid-migration did nothing, so sending it again is safe.
    fn call_through_migrations(
        &self,
        commands: Vec<Command>,
        deadline: Instant,
    ) -> Result<Vec<Reply>> {
        let give_up = deadline.min(Instant::now() + IN_TRANSIT_PATIENCE);
        loop {
            match self.link.call(commands.clone(), deadline) {
                Err(why)
                    if link::is_in_transit(&why) && Instant::now() + IN_TRANSIT_RETRY < give_up =>
                {
                    may::coroutine::sleep(IN_TRANSIT_RETRY);
                }
                outcome => return outcome.map_err(unavailable),
            }
        }
    }

    fn plain(name: &str, args: &[&[u8]]) -> Command {
        let mut all: Vec<&[u8]> = vec![name.as_bytes()];
        all.extend_from_slice(args);
        Command::plain(&all)
    }

    /// After a write that left the namespace holding an instance whose deadline is `deadline`
    /// (Redis ms, -1 none): the namespace is listed, and due no later than that deadline.
    fn scheduled(&self, call: &Call, deadline: i64) {
        let hex_namespace = hex(call.namespace.as_bytes());
        let mut commands = vec![Self::plain(
            "SADD",
            &[LIVE_NAMESPACES.as_bytes(), hex_namespace.as_bytes()],
        )];
        if deadline >= 0 {
            commands.push(Self::plain(
                "ZADD",
                &[
                    DUE_NAMESPACES.as_bytes(),
                    b"LT",
                    deadline.to_string().as_bytes(),
                    hex_namespace.as_bytes(),
                ],
            ));
        }
        // The write itself succeeded; should this fail, the next write or reaper pass repairs.
        let _ = self.link.call(commands, call.deadline);
    }

    /// The instances left in a namespace and its earliest deadline (-1 none), after reaping it.
    fn next_due(&self, namespace: &str, deadline: Instant) -> Option<(i64, i64)> {
        let result = self
            .script_on(namespace, false, deadline, "next", &[], Vec::new())
            .ok()?
            .0;
        let items = array(&result)?;
        Some((int(items.first()?)?, int(items.get(1)?)?))
    }

    /// Reaps one namespace and moves it in (or out of) the schedule and the namespace list,
    /// then reads it again: a registration that raced the move is put back.
    fn reap_namespace(&self, namespace: &str, deadline: Instant) {
        let Some((left, earliest)) = self.next_due(namespace, deadline) else {
            return;
        };
        let hex_namespace = hex(namespace.as_bytes());
        let name = hex_namespace.as_bytes();
        let mut commands = Vec::new();
        if earliest >= 0 {
            let at = earliest.to_string();
            commands.push(Self::plain(
                "ZADD",
                &[DUE_NAMESPACES.as_bytes(), at.as_bytes(), name],
            ));
        } else {
            commands.push(Self::plain("ZREM", &[DUE_NAMESPACES.as_bytes(), name]));
        }
        if left == 0 {
            commands.push(Self::plain("SREM", &[LIVE_NAMESPACES.as_bytes(), name]));
        }
        if self.link.call(commands, deadline).is_err() {
            return;
        }
        self.recheck(namespace, left == 0, deadline);
    }

    /// Puts a namespace back where a concurrent write needs it after a reaper (or the last
    /// deregistration) took it out.
    fn recheck(&self, namespace: &str, unlisted: bool, deadline: Instant) {
        let Some((left, earliest)) = self.next_due(namespace, deadline) else {
            return;
        };
        let hex_namespace = hex(namespace.as_bytes());
        let name = hex_namespace.as_bytes();
        let mut commands = Vec::new();
        if earliest >= 0 {
            let at = earliest.to_string();
            commands.push(Self::plain(
                "ZADD",
                &[DUE_NAMESPACES.as_bytes(), b"LT", at.as_bytes(), name],
            ));
        }
        if unlisted && left > 0 {
            commands.push(Self::plain("SADD", &[LIVE_NAMESPACES.as_bytes(), name]));
        }
        if !commands.is_empty() {
            let _ = self.link.call(commands, deadline);
        }
    }

    /// After the last instance of a namespace was deregistered: it leaves the namespace list.
    fn unlist(&self, call: &Call) {
        let hex_namespace = hex(call.namespace.as_bytes());
        let remove = Self::plain(
            "SREM",
            &[LIVE_NAMESPACES.as_bytes(), hex_namespace.as_bytes()],
        );
        if self.link.call(vec![remove], call.deadline).is_ok() {
            self.recheck(call.namespace, true, call.deadline);
        }
    }

    /// One pass of the reaper over the namespaces whose earliest deadline has passed (Redis's
    /// clock). Its first command is the health probe.
    fn reap_due(&self) {
        let deadline = Instant::now() + BACKGROUND_DEADLINE;
        let Ok(replies) = self.link.call(vec![Self::plain("TIME", &[])], deadline) else {
            return;
        };
        let Some(Reply::Value(time)) = replies.first() else {
            return;
        };
        let Some(now) = redis_millis(time) else {
            return;
        };
        let range = Self::plain(
            "ZRANGEBYSCORE",
            &[
                DUE_NAMESPACES.as_bytes(),
                b"-inf",
                format!("({now}").as_bytes(),
                b"LIMIT",
                b"0",
                REAP_NAMESPACES_PER_PASS.to_string().as_bytes(),
            ],
        );
        let Ok(replies) = self.link.call(vec![range], deadline) else {
            return;
        };
        let Some(Reply::Value(value)) = replies.first() else {
            return;
        };
        let namespaces: Vec<String> = array(value)
            .unwrap_or_default()
            .iter()
            .filter_map(|v| {
                bytes(v)
                    .and_then(unhex)
                    .and_then(|b| String::from_utf8(b).ok())
            })
            .collect();
        for namespace in namespaces {
            self.reap_namespace(&namespace, Instant::now() + BACKGROUND_DEADLINE);
        }
    }

    /// `[now, value, deadline, value, deadline, …]` as instances, with the earliest deadline
    /// turned into the local monotonic clock.
    fn instances(&self, result: &Value) -> Result<Snapshot> {
        let items = array(result).ok_or_else(|| strange("a list"))?;
        let redis_now = items
            .first()
            .and_then(int)
            .ok_or_else(|| strange("the time"))?;
        let mut snapshot = Snapshot::default();
        let mut earliest: Option<i64> = None;
        for pair in items[1..].chunks(2) {
            let [value, deadline] = pair else {
                return Err(strange("a list"));
            };
            let value = bytes(value).ok_or_else(|| strange("a record"))?;
            let deadline = int(deadline).ok_or_else(|| strange("a deadline"))?;
            if deadline >= 0 {
                earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
            }
            snapshot.instances.push(Arc::new(decode(value, deadline)?));
        }
        snapshot.stale_after = earliest.map(|d| self.monotonic_at(redis_now, d));
        Ok(snapshot)
    }

    /// The local monotonic nanoseconds at Redis time `at`, given Redis time `now` (both ms).
    fn monotonic_at(&self, now: i64, at: i64) -> u64 {
        let ahead = at.saturating_sub(now).max(0) as u64;
        self.clock
            .monotonic_nanos()
            .saturating_add(ahead.saturating_mul(1_000_000))
    }

    fn members(&self, call: &Call, indexes: &[&str]) -> Result<Snapshot> {
        let args: Vec<&[u8]> = indexes.iter().map(|i| i.as_bytes()).collect();
        let result = self.script(call, "members", &args, Vec::new())?;
        self.instances(&result)
    }

    /// Tells the resync listeners that a new subscription started.
    fn resynced(&self) {
        let listeners = self
            .resync_listeners
            .read()
            .unwrap_or_else(|e| e.into_inner());
        for listener in listeners.iter() {
            listener();
        }
    }

    /// Applies a change another node announced.
    fn heard(&self, message: &[u8]) {
        let mut parts = message.split(|&b| b == b' ');
        let (Some(node), Some(ns), Some(kind), Some(service), Some(id)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return;
        };
        if node == self.node.as_bytes() {
            return;
        }
        let text = |h: &[u8]| unhex(h).and_then(|b| String::from_utf8(b).ok());
        let (Some(namespace), Some(service), Some(id), Some(kind)) = (
            text(ns),
            text(service),
            text(id),
            kind.first().copied().and_then(kind_of),
        ) else {
            return;
        };
        let endpoint = crate::registry::instance::Endpoint {
            kind: crate::registry::instance::EndpointType::Tcp,
            value: String::new(),
        };
        // The index after the change (absent from the messages of older versions).
        let index = parts
            .next()
            .and_then(|i| std::str::from_utf8(i).ok())
            .and_then(|i| i.parse().ok());
        let instance = Instance::new(&id, &service, endpoint, UP, Duration::ZERO);
        self.emit(
            &namespace,
            Arc::new(instance),
            kind,
            Origin::SharedStore,
            index,
        );
    }
}

impl Store for RedisStore {
    fn register(&self, call: &Call, mut instance: Instance) -> Result<Arc<Instance>> {
        instance.check_limits().map_err(Error::limit)?;
        instance.ttl = self.config.ttl.clamp(instance.ttl);
        let unix_now = self.clock.unix_nanos();
        instance.registered_unix_nanos = unix_now;
        instance.last_heartbeat.set(unix_now);
        instance.updated_unix_nanos = unix_now;
        instance.service_up_unix_nanos = if instance.status == UP { unix_now } else { 0 };
        instance.modified = false;
        if instance.dirty_unix_millis == 0 {
            instance.dirty_unix_millis = unix_now / 1_000_000;
        }
        instance.version = self.versions.issue((unix_now / 1_000_000).max(0) as u64);
        instance.registration = instance.version;
        let value = value_of(&instance);
        let indexes = index_keys(&instance);
        let ttl = ttl_arg(&instance);
        let capacity = self
            .config
            .capacity
            .map_or_else(|| "-1".to_string(), |c| c.to_string());
        let (result, index) = self.script_indexed(
            call,
            "reg",
            &[
                instance.id.as_bytes(),
                &value,
                indexes.as_bytes(),
                ttl.as_bytes(),
                capacity.as_bytes(),
            ],
        )?;
        if bytes(&result) == Some(b"full") {
            return Err(Error::capacity());
        }
        let items = array(&result).ok_or_else(|| strange("a registration"))?;
        let kind = match items.first().and_then(bytes) {
            Some(b"R") => ChangeKind::Registered,
            Some(b"P") => ChangeKind::Replaced,
            _ => return Err(strange("a registration")),
        };
        self.scheduled(call, items.get(1).and_then(int).unwrap_or(-1));
        let stored = Arc::new(instance);
        self.emit(call.namespace, stored.clone(), kind, Origin::Local, index);
        Ok(stored)
    }

    fn heartbeat(&self, call: &Call, id: &str) -> Result<()> {
        match int(&self.script(call, "hb", &[id.as_bytes()], Vec::new())?) {
            Some(1) => Ok(()),
            Some(0) => Err(Error::not_found()),
            _ => Err(strange("a heartbeat")),
        }
    }

    fn deregister(&self, call: &Call, id: &str) -> Result<()> {
        let (result, index) = self.script_indexed(call, "dereg", &[id.as_bytes()])?;
        let items = match &result {
            Value::Nil => return Err(Error::not_found()),
            other => array(other).ok_or_else(|| strange("a deregistration"))?,
        };
        let (Some(value), Some(left)) = (items.first().and_then(bytes), items.get(1).and_then(int))
        else {
            return Err(strange("a deregistration"));
        };
        if left == 0 {
            self.unlist(call);
        }
        let mut last = decode(value, -1)?;
        last.version = self
            .versions
            .issue((self.clock.unix_nanos() / 1_000_000).max(0) as u64);
        self.emit(
            call.namespace,
            Arc::new(last),
            ChangeKind::Deregistered,
            Origin::Local,
            index,
        );
        Ok(())
    }

    fn modify(
        &self,
        call: &Call,
        id: &str,
        edit: &mut dyn FnMut(&mut Instance) -> Result<()>,
    ) -> Result<()> {
        for _ in 0..MODIFY_ATTEMPTS {
            let result = self.script(call, "get", &[id.as_bytes()], Vec::new())?;
            let items = array(&result).ok_or_else(|| strange("a record"))?;
            let (Some(before), Some(deadline)) =
                (items.get(1).and_then(bytes), items.get(2).and_then(int))
            else {
                return Err(Error::not_found());
            };
            let current = decode(before, deadline)?;
            let mut changed = current.clone();
            edit(&mut changed)?;
            changed.id = current.id.clone();
            changed.service_name = current.service_name.clone();
            changed.check_metadata_limit().map_err(Error::limit)?;
            let unix_now = self.clock.unix_nanos();
            changed.last_heartbeat.set(unix_now);
            changed.updated_unix_nanos = unix_now;
            changed.modified = true;
            if changed.status == UP && changed.service_up_unix_nanos == 0 {
                changed.service_up_unix_nanos = unix_now;
            }
            changed.version = self.versions.issue((unix_now / 1_000_000).max(0) as u64);
            let value = value_of(&changed);
            let ttl = ttl_arg(&changed);
            let (result, index) = self.script_indexed(
                call,
                "mod",
                &[id.as_bytes(), before, &value, ttl.as_bytes()],
            )?;
            if let Some(items) = array(&result).filter(|i| !i.is_empty()) {
                self.scheduled(call, items.get(1).and_then(int).unwrap_or(-1));
                let changed = Arc::new(changed);
                let kind = ChangeKind::Modified;
                self.emit(call.namespace, changed, kind, Origin::Local, index);
                return Ok(());
            }
            match int(&result) {
                Some(0) => return Err(Error::not_found()),
                Some(2) => continue,
                _ => return Err(strange("a modification")),
            }
        }
        Err(unavailable("the record kept changing under a modification"))
    }

    fn get(&self, call: &Call, id: &str) -> Result<Option<Arc<Instance>>> {
        let result = self.script(call, "get", &[id.as_bytes()], Vec::new())?;
        Ok(self.instances(&result)?.instances.pop())
    }

    fn snapshot(&self, call: &Call, service: Option<&str>) -> Result<Snapshot> {
        match service {
            Some(name) => self.members(call, &[&keys::service_index(name)]),
            None => self.members(call, &[]),
        }
    }

    fn lookup(&self, call: &Call, lookup: Lookup) -> Result<Vec<Arc<Instance>>> {
        let found = match lookup {
            Lookup::IdSuffix(suffix) => {
                self.members(call, &[&keys::suffix_index(suffix), keys::DEEP_SUFFIXES])?
            }
            Lookup::Vip(vip) => self.members(call, &[&keys::vip_index(vip)])?,
            Lookup::SecureVip(vip) => self.members(call, &[&keys::secure_vip_index(vip)])?,
        };
        Ok(found
            .instances
            .into_iter()
            .filter(|i| lookup.matches(i))
            .collect())
    }

    fn services(&self, call: &Call) -> Result<Vec<Arc<str>>> {
        let result = self.script(call, "services", &[], Vec::new())?;
        let mut names: Vec<Arc<str>> = array(&result)
            .ok_or_else(|| strange("a list of services"))?
            .iter()
            .filter_map(|v| {
                bytes(v)
                    .and_then(unhex)
                    .and_then(|b| String::from_utf8(b).ok())
            })
            .map(Arc::from)
            .collect();
        names.sort_unstable();
        Ok(names)
    }

    fn expire(&self, call: &Call) -> Result<()> {
        self.script(call, "count", &[], Vec::new()).map(|_| ())
    }

    fn change_log(&self, call: &Call) -> Result<ChangeLog> {
        let result = self.script(call, "log", &[], Vec::new())?;
        let items = array(&result).ok_or_else(|| strange("a change log"))?;
        let [now, version, statuses, entries, oldest, earliest] = items else {
            return Err(strange("a change log"));
        };
        let now = int(now).ok_or_else(|| strange("the time"))?;
        let mut log = ChangeLog {
            version: int(version).unwrap_or(0).max(0) as u64,
            ..ChangeLog::default()
        };
        for pair in array(statuses).unwrap_or_default().chunks(2) {
            let [status, count] = pair else { continue };
            let status = bytes(status)
                .and_then(unhex)
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| strange("a status"))?;
            let count = int(count).unwrap_or(0).max(0) as u64;
            log.status_counts.push((Arc::from(status), count));
        }
        log.status_counts.sort_unstable();
        for entry in array(entries).unwrap_or_default() {
            let entry = bytes(entry).ok_or_else(|| strange("a change"))?;
            let (Some(kind), Some(value)) =
                (entry.first().copied().and_then(kind_of), entry.get(1..))
            else {
                return Err(strange("a change"));
            };
            log.entries.push((Arc::new(decode(value, -1)?), kind));
        }
        let mut stale: Option<i64> = None;
        if let Some(oldest) = int(oldest).filter(|&t| t >= 0) {
            stale = Some(oldest + LOG_RETENTION_MILLIS);
        }
        if let Some(earliest) = int(earliest).filter(|&t| t >= 0) {
            stale = Some(stale.map_or(earliest, |s| s.min(earliest)));
        }
        log.stale_after = stale.map(|at| self.monotonic_at(now, at));
        Ok(log)
    }

    fn change_log_version(&self, call: &Call) -> Result<u64> {
        let result = self.script(call, "version", &[], Vec::new())?;
        Ok(int(&result).unwrap_or(0).max(0) as u64)
    }

    fn apply(&self, _namespace: &str, _record: Record, _origin: Origin) -> Result<Applied> {
        Err(unavailable(
            "the Redis store does not take replicated records",
        ))
    }

    fn apply_lease(&self, _lease: &Lease) -> Result<Applied> {
        Err(unavailable(
            "the Redis store does not take replicated leases",
        ))
    }

    fn subscribe(&self, listener: Listener) {
        self.listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    /// Nothing replicates from a shared store: leases are never announced.
    fn subscribe_leases(&self, _listener: LeaseListener) {}

    fn subscribe_resync(&self, listener: ResyncListener) {
        self.resync_listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    fn clock(&self) -> &dyn Clock {
        &self.clock
    }

    fn name(&self) -> &'static str {
        "redis"
    }

    fn answers(&self) -> bool {
        self.probe(BACKGROUND_DEADLINE)
    }

    fn instance_counts(&self) -> Result<Vec<(Arc<str>, usize)>> {
        let deadline = Instant::now() + BACKGROUND_DEADLINE;
        let first = vec![
            Self::plain("TIME", &[]),
            Self::plain("SMEMBERS", &[LIVE_NAMESPACES.as_bytes()]),
        ];
        let replies = self.link.call(first, deadline).map_err(unavailable)?;
        let (Some(Reply::Value(time)), Some(Reply::Value(members))) =
            (replies.first(), replies.get(1))
        else {
            return Err(strange("Redis's clock and a set of namespaces"));
        };
        let now = redis_millis(time).ok_or_else(|| strange("Redis's clock"))?;
        let hex_namespaces: Vec<&[u8]> = array(members)
            .unwrap_or_default()
            .iter()
            .filter_map(bytes)
            .filter(|hex_namespace| unhex(hex_namespace).is_some())
            .collect();
        // Two plain commands per namespace, all in one job: a script run costs Redis about
        // 20 µs, and one per namespace passed the deadline at tens of thousands of namespaces.
        // The count is the script's own count of held instances: records less those whose
        // deadline passed (the reaper removes them; counting does not).
        let due = format!("({now}");
        let mut commands = Vec::with_capacity(hex_namespaces.len() * 2);
        for hex_namespace in &hex_namespaces {
            let key = namespace_key_of_hex(&String::from_utf8_lossy(hex_namespace));
            let records = format!("{key}{RECORDS}");
            let deadlines = format!("{key}{DEADLINES}");
            commands.push(Self::plain("HLEN", &[records.as_bytes()]));
            commands.push(Self::plain(
                "ZCOUNT",
                &[deadlines.as_bytes(), b"-inf", due.as_bytes()],
            ));
        }
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let replies = self.call_through_migrations(commands, deadline)?;
        if replies.len() != hex_namespaces.len() * 2 {
            return Err(strange("two replies per namespace"));
        }
        let mut counts = Vec::with_capacity(hex_namespaces.len());
        for (hex_namespace, pair) in hex_namespaces.iter().zip(replies.chunks(2)) {
            let [held, expired] = [&pair[0], &pair[1]].map(|reply| match reply {
                Reply::Value(value) => int(value).ok_or_else(|| strange("a count")),
                Reply::Error { code, detail } => {
                    Err(unavailable(format!("Redis: {code} {detail}")))
                }
            });
            let count = (held? - expired?).max(0) as usize;
            let namespace = unhex(hex_namespace)
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            counts.push((Arc::from(namespace), count));
        }
        Ok(counts)
    }

    fn cache_generation(&self) -> Option<u64> {
        (self.subscribed.load(Ordering::SeqCst) && self.link.health.healthy())
            .then(|| self.generation.load(Ordering::SeqCst))
    }

    fn shares_index(&self) -> bool {
        true
    }

    fn snapshots_are_local(&self) -> bool {
        false
    }

    fn shared_index(&self, call: &Call) -> Result<u64> {
        match self.script_indexed(call, "index", &[])? {
            (_, Some(index)) => Ok(index),
            (_, None) => Err(strange("a change index")),
        }
    }

    fn shared_indexes(&self, namespaces: &[Arc<str>]) -> Vec<Result<u64>> {
        if namespaces.is_empty() {
            return Vec::new();
        }
        // One job for them all: after a resubscription every watched namespace is read, and
        // one round trip each would take as many round trips as namespaces.
        let deadline = Instant::now() + BACKGROUND_DEADLINE;
        let commands = namespaces
            .iter()
            .map(|namespace| self.script_command(namespace, false, "index", &[]))
            .collect();
        match self.call_through_migrations(commands, deadline) {
            Ok(replies) if replies.len() == namespaces.len() => namespaces
                .iter()
                .zip(replies)
                .map(
                    |(namespace, reply)| match self.script_reply(namespace, reply)? {
                        (_, Some(index)) => Ok(index),
                        (_, None) => Err(strange("a change index")),
                    },
                )
                .collect(),
            Ok(_) => namespaces
                .iter()
                .map(|_| Err(strange("a reply per namespace")))
                .collect(),
            Err(e) => namespaces.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    fn move_shared_index(&self, call: &Call, services: &[&Arc<str>]) -> Result<u64> {
        let services: Vec<String> = services.iter().map(|s| hex(s.as_bytes())).collect();
        let args: Vec<&[u8]> = services.iter().map(|s| s.as_bytes()).collect();
        match self.script_indexed(call, "catalog", &args)? {
            (_, Some(index)) => Ok(index),
            (_, None) => Err(strange("a change index")),
        }
    }
}
