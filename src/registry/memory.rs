//! The in-memory store: per namespace, lock-protected shards keyed by instance id.
//!
//! A namespace starts with one shard, and spreads its instances over [`SHARDS_PER_NAMESPACE`] by
//! id once it holds more than [`SPLIT_AT`] (once, for its life): most namespaces hold a few
//! instances, and a namespace of one must cost about what its instance does (100,000 namespaces
//! of one instance each take 1.65 times the memory of the same instances in one namespace). Each
//! shard finds its instances by id and by service (a short list while it holds few, indexes
//! beyond), so register, heartbeat, deregister and a lookup by id lock one shard, and listing a
//! service costs the shard count plus that service's instances. A namespace's instance count is
//! an atomic, raised with a compare-and-swap against the capacity while the shard lock of the id
//! being added is held.
//!
//! Expiry is exact: every entry carries its deadline on the monotonic clock, and every read and
//! write treats an entry past it as absent. A reaper thread removes such entries (and emits their
//! `Expired` events) within [`REAP_INTERVAL`] of their deadline. It visits only the namespaces
//! whose earliest deadline has passed, found in a deadline-ordered schedule, so an idle namespace
//! costs it nothing. Empty namespaces are dropped on the write that emptied them or by the reaper,
//! so reads of unknown namespaces never create state.
//!
//! Every change takes a version from the store's hybrid logical clock and is recorded in the
//! namespace's [`Journal`] (status counts, `versions__delta`, the Eureka change log) before the
//! shard lock is released. Deregistrations and expiries leave tombstones when the store is
//! configured to keep them (replication needs them; a single node does not).
//!
//! Locks, always taken in this order: the namespace map's `RwLock` (held shared by a registration
//! while it inserts, exclusively while an empty namespace is dropped, so an insert never lands in
//! a dropped namespace), one shard `Mutex`, the namespace's journal `Mutex`. Each is held for a
//! few hash-map operations, never across I/O; they are safe to take on a `may` worker.

use super::changelog::{ChangeBudget, Journal, Journaled, Queued, MAX_CHANGE_LOG_BYTES};
use super::error::Error;
use super::instance::{Instance, LimitError, TtlPolicy, MAX_SERVICE_NAME_BYTES, UP};
use super::keyed_hash::KeyedSet;
use super::shard::{Entry, KeptTombstone, Shard};
use super::store::{
    Applied, Call, Change, ChangeKind, ChangeLog, Clock, Lease, LeaseListener, Listener, Lookup,
    Origin, Record, Result, Snapshot, Store, Tombstone,
};
use super::version::{HybridClock, Version};
use std::borrow::Borrow;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock, Weak};
use std::time::Duration;

/// Shards of a namespace that outgrew its first shard. A power of two well above the core
/// counts this runs on.
const SHARDS_PER_NAMESPACE: usize = 16;
/// Instances beyond which a namespace spreads its instances over [`SHARDS_PER_NAMESPACE`]
/// shards: below it writes to one namespace rarely meet, and one shard is what a namespace of a
/// few instances can afford.
const SPLIT_AT: usize = 64;
/// Expired instances removed under one shard lock before the lock is released and the caller
/// yields.
const EXPIRE_BATCH: usize = 512;
/// How often the reaper removes expired instances; the contract asks for "within a second".
pub const REAP_INTERVAL: Duration = Duration::from_millis(250);

/// Store-wide settings.
#[derive(Clone, Copy, Debug)]
pub struct MemoryConfig {
    pub ttl: TtlPolicy,
    /// Most instances per namespace; `None` is unlimited.
    pub capacity: Option<usize>,
    /// This node's member id, stamped on every version it issues.
    pub node_id: u64,
    /// How long tombstones are kept; `None` keeps none (a single node has no use for them).
    pub tombstone_retention: Option<Duration>,
}

struct Namespace {
    name: Arc<str>,
    /// Every instance's shard while the namespace is small: one shard costs a hundred bytes,
    /// sixteen of them several times what a namespace of one instance needs.
    first: Mutex<Shard>,
    /// The shards instances are spread over by id once the first shard outgrew
    /// [`SPLIT_AT`] entries (made once, and kept while the namespace lives).
    spread: OnceLock<Box<[Mutex<Shard>; SHARDS_PER_NAMESPACE]>>,
    /// Instances stored, live or expired-not-yet-reaped.
    count: AtomicUsize,
    /// Tombstones kept (they keep an otherwise empty namespace alive).
    tombstones: AtomicUsize,
    journal: Mutex<Journal>,
    /// The earliest deadline the reaper's schedule holds for this namespace (a lower bound of
    /// the true earliest one); `u64::MAX` when none is scheduled.
    scheduled: AtomicU64,
}

impl Journaled for Namespace {
    fn journal(&self) -> &Mutex<Journal> {
        &self.journal
    }
}

fn spread_index(id: &str) -> usize {
    super::keyed_hash::hash_bytes(id.as_bytes()) as usize % SHARDS_PER_NAMESPACE
}

impl Namespace {
    fn new(name: Arc<str>, version: u64) -> Namespace {
        Namespace {
            name,
            first: Mutex::new(Shard::default()),
            spread: OnceLock::new(),
            count: AtomicUsize::new(0),
            tombstones: AtomicUsize::new(0),
            journal: Mutex::new(Journal::new(version)),
            scheduled: AtomicU64::new(u64::MAX),
        }
    }

    /// The shard of `id`, locked.
    fn shard(&self, id: &str) -> MutexGuard<'_, Shard> {
        if let Some(spread) = self.spread.get() {
            return lock(&spread[spread_index(id)]);
        }
        let first = lock(&self.first);
        if !first.moved {
            return first;
        }
        // Split after this caller read `spread`: the first shard set it before it moved.
        drop(first);
        lock(&self.spread_shards()[spread_index(id)])
    }

    fn spread_shards(&self) -> &[Mutex<Shard>] {
        self.spread
            .get()
            .expect("the spread shards are made before the first shard is marked moved")
            .as_slice()
    }

    /// The shards to visit: the first one until the namespace split, the spread ones after. A
    /// visitor that finds the first shard moved visits `spread_shards` instead.
    fn current_shards(&self) -> &[Mutex<Shard>] {
        match self.spread.get() {
            Some(spread) => spread.as_slice(),
            None => std::slice::from_ref(&self.first),
        }
    }

    /// Runs `visit` on every shard in turn, each under its lock.
    fn each_shard(&self, mut visit: impl FnMut(&mut Shard)) {
        for shard in self.current_shards() {
            let mut shard = lock(shard);
            if shard.moved {
                drop(shard);
                for spread in self.spread_shards() {
                    visit(&mut lock(spread));
                }
                return;
            }
            visit(&mut shard);
        }
    }

    /// Spreads the instances of the first shard over [`SHARDS_PER_NAMESPACE`] once it holds
    /// more than [`SPLIT_AT`]; call with the lock of the shard `shard` held, after an insert.
    /// Everything happens under that lock: the spread shards are complete before anyone can
    /// find the first shard moved.
    fn split_if_large(&self, shard: &mut Shard) {
        // Any shard locked while `spread` is unset is the first one.
        if shard.len() <= SPLIT_AT || self.spread.get().is_some() {
            return;
        }
        let mut spread: [Shard; SHARDS_PER_NAMESPACE] = std::array::from_fn(|_| Shard::default());
        let no_tombstones = AtomicUsize::new(0);
        for entry in shard.take_entries() {
            spread[spread_index(&entry.instance.id)].insert(entry, &no_tombstones);
        }
        for (id, kept) in shard.take_tombstones() {
            spread[spread_index(&id)].keep_tombstone(id, kept);
        }
        match self.spread.set(Box::new(spread.map(Mutex::new))) {
            Ok(()) => {
                shard.moved = true;
                shard.earliest_deadline = u64::MAX;
            }
            // Only the first shard's lock holder sets `spread`, so this cannot happen; were it
            // to, the instances stay where they were.
            Err(spread) => {
                for mut spread in spread.map(into_inner) {
                    for entry in spread.take_entries() {
                        shard.insert(entry, &no_tombstones);
                    }
                    for (id, kept) in spread.take_tombstones() {
                        shard.keep_tombstone(id, kept);
                    }
                }
            }
        }
    }
}

/// A namespace as a member of the store's set, found by its name: the set holds one pointer
/// per namespace, and the name is the namespace's own.
struct ByName(Arc<Namespace>);

impl PartialEq for ByName {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for ByName {}

impl Hash for ByName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that `Borrow<str>` lookups find it.
        self.0.name.hash(state);
    }
}

impl Borrow<str> for ByName {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

/// A poisoned lock only means another thread panicked while holding it; the maps it guards are
/// left consistent by every operation here (no operation panics half-way), so keep going.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn into_inner<T>(mutex: Mutex<T>) -> T {
    mutex.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// A namespace due for the reaper at a deadline.
struct Due {
    deadline: u64,
    namespace: Weak<Namespace>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.deadline == other.deadline
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.deadline.cmp(&other.deadline)
    }
}

/// What one write did, for the work done after its locks are released.
struct Done {
    /// An instance a replacement took out of its service (a record from elsewhere can move an
    /// id to another service): its service hears it left, before `change`.
    left: Option<Arc<Instance>>,
    /// The record written or removed and how; in place, as `left` is, so a write allocates
    /// no list of its events.
    change: (Arc<Instance>, ChangeKind),
    queued: Option<Queued>,
    /// The deadline of the entry written, for the reaper's schedule.
    deadline: Option<u64>,
}

/// What [`MemoryStore::insert`] did.
enum Inserted {
    Written(Done),
    /// Nothing: the namespace is full. The instance is handed back, for a retry.
    Full(Instance),
}

/// The in-memory backend.
pub struct MemoryStore {
    config: MemoryConfig,
    clock: Arc<dyn Clock>,
    versions: HybridClock,
    namespaces: RwLock<KeyedSet<ByName>>,
    listeners: RwLock<Vec<Listener>>,
    lease_listeners: RwLock<Vec<LeaseListener>>,
    has_lease_listeners: AtomicBool,
    /// The store-wide change sequence: the source of every namespace's `versions__delta`.
    sequence: AtomicU64,
    budget: ChangeBudget,
    schedule: Mutex<BinaryHeap<Reverse<Due>>>,
}

impl MemoryStore {
    pub fn new(config: MemoryConfig, clock: Arc<dyn Clock>) -> MemoryStore {
        MemoryStore::with_change_log_budget(config, clock, MAX_CHANGE_LOG_BYTES)
    }

    /// A store whose change logs together hold at most `change_log_bytes`.
    pub fn with_change_log_budget(
        config: MemoryConfig,
        clock: Arc<dyn Clock>,
        change_log_bytes: usize,
    ) -> MemoryStore {
        MemoryStore {
            config,
            clock,
            versions: HybridClock::new(config.node_id),
            namespaces: RwLock::new(KeyedSet::default()),
            listeners: RwLock::new(Vec::new()),
            lease_listeners: RwLock::new(Vec::new()),
            has_lease_listeners: AtomicBool::new(false),
            sequence: AtomicU64::new(0),
            budget: ChangeBudget::new(change_log_bytes),
            schedule: Mutex::new(BinaryHeap::new()),
        }
    }

    /// Starts the reaper thread of a shared store.
    pub fn start_reaper(store: &Arc<MemoryStore>) -> std::io::Result<()> {
        let weak = Arc::downgrade(store);
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || loop {
                std::thread::sleep(REAP_INTERVAL);
                let Some(store) = weak.upgrade() else { return };
                store.expire_due();
            })
            .map(|_| ())
    }

    /// Bytes held by the change logs of every namespace.
    pub fn change_log_bytes(&self) -> usize {
        self.budget.bytes()
    }

    /// Removes every expired instance of the namespaces whose earliest deadline has passed,
    /// emits their `Expired` events and drops emptied namespaces.
    pub fn expire_due(&self) {
        let now = self.clock.monotonic_nanos();
        loop {
            let due = {
                let mut schedule = lock(&self.schedule);
                match schedule.peek() {
                    Some(Reverse(due)) if due.deadline < now => schedule.pop(),
                    _ => None,
                }
            };
            let Some(Reverse(due)) = due else { break };
            let Some(namespace) = due.namespace.upgrade() else {
                continue;
            };
            // A stale schedule entry: the namespace was rescheduled earlier than this one.
            if namespace.scheduled.load(Ordering::SeqCst) != due.deadline {
                continue;
            }
            namespace.scheduled.store(u64::MAX, Ordering::SeqCst);
            self.expire_namespace(&namespace);
            self.drop_if_empty(&namespace);
        }
    }

    /// Drops aged change-log entries and tombstones, and namespaces left with neither; run
    /// every so often (the change log may be pruned up to 30 s late, spec §4.8).
    pub fn prune(&self) {
        let now = self.clock.monotonic_nanos();
        self.budget.prune(now);
        let namespaces: Vec<Arc<Namespace>> = read(&self.namespaces)
            .iter()
            .map(|held| held.0.clone())
            .collect();
        for namespace in namespaces {
            if namespace.tombstones.load(Ordering::SeqCst) > 0 {
                namespace.each_shard(|shard| {
                    let dropped = shard.prune_tombstones(now);
                    namespace.tombstones.fetch_sub(dropped, Ordering::SeqCst);
                });
            }
            lock(&namespace.journal).prune(&self.budget, now);
            self.drop_if_empty(&namespace);
        }
    }

    /// Puts the namespace in the reaper's schedule at `deadline` unless it is due earlier.
    fn schedule(&self, namespace: &Arc<Namespace>, deadline: Option<u64>) {
        let Some(deadline) = deadline else { return };
        let lowered = namespace
            .scheduled
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |at| {
                (deadline < at).then_some(deadline)
            })
            .is_ok();
        if lowered {
            lock(&self.schedule).push(Reverse(Due {
                deadline,
                namespace: Arc::downgrade(namespace),
            }));
        }
    }

    fn expire_namespace(&self, namespace: &Arc<Namespace>) {
        // Run again from the start when the namespace split meanwhile (once in its life).
        while !self.try_expire_namespace(namespace) {}
    }

    /// Expires what is due in the namespace's shards; false when it found the first shard moved
    /// to the spread ones (what it expired stays expired, the rest is for the next run).
    fn try_expire_namespace(&self, namespace: &Arc<Namespace>) -> bool {
        let now = self.clock.monotonic_nanos();
        let mut earliest_left = u64::MAX;
        for shard in namespace.current_shards() {
            let due = {
                let mut shard = lock(shard);
                if shard.moved {
                    return false;
                }
                if now <= shard.earliest_deadline {
                    earliest_left = earliest_left.min(shard.earliest_deadline);
                    continue;
                }
                let mut due: Vec<Arc<str>> = Vec::new();
                let mut earliest = u64::MAX;
                for entry in shard.entries() {
                    match entry.deadline {
                        Some(d) if now > d => due.push(entry.instance.id.clone()),
                        Some(d) => earliest = earliest.min(d),
                        None => {}
                    }
                }
                shard.earliest_deadline = earliest;
                earliest_left = earliest_left.min(earliest);
                due
            };
            // In batches, each under the lock once, with a yield between them: a request that
            // reaps (a delta, a registration at capacity) lets the other connections of its
            // worker run, and writers of the shard wait for one batch at most.
            for batch in due.chunks(EXPIRE_BATCH) {
                let mut done = Vec::with_capacity(batch.len());
                {
                    let mut shard = lock(shard);
                    if shard.moved {
                        return false;
                    }
                    for id in batch {
                        // Re-registered since the scan: no longer due.
                        if shard.get(id).is_none_or(|e| e.live(now)) {
                            continue;
                        }
                        let Some(entry) = shard.remove(id) else {
                            continue;
                        };
                        namespace.count.fetch_sub(1, Ordering::SeqCst);
                        // An expiry keeps the record's version (cluster contract §6, rule 4).
                        let last = entry.instance;
                        let expired_at = entry.deadline.map(|d| self.unix_millis_at(d, now));
                        self.keep_tombstone(namespace, &mut shard, &last, expired_at, now);
                        let queued =
                            self.journal(namespace, Some(&last), &last, ChangeKind::Expired);
                        done.push(Done {
                            left: None,
                            change: (last, ChangeKind::Expired),
                            queued,
                            deadline: None,
                        });
                    }
                }
                for done in done {
                    self.finish(namespace, done, Origin::Local);
                }
                may::coroutine::yield_now();
            }
        }
        self.schedule(
            namespace,
            (earliest_left != u64::MAX).then_some(earliest_left),
        );
        true
    }

    /// The unix milliseconds of monotonic time `at`, given monotonic `now`.
    fn unix_millis_at(&self, at: u64, now: u64) -> i64 {
        let unix_now = self.clock.unix_nanos();
        (unix_now - (now as i64 - at as i64)) / 1_000_000
    }

    fn keep_tombstone(
        &self,
        namespace: &Namespace,
        shard: &mut Shard,
        last: &Instance,
        expired_at_unix_millis: Option<i64>,
        now: u64,
    ) {
        let Some(retention) = self.config.tombstone_retention else {
            return;
        };
        let kept = KeptTombstone {
            tombstone: Tombstone {
                id: last.id.clone(),
                service_name: last.service_name.clone(),
                version: last.version,
                registration: last.registration,
                expired_at_unix_millis,
            },
            until: now.saturating_add(retention.as_nanos() as u64),
        };
        if shard.keep_tombstone(last.id.clone(), kept) {
            namespace.tombstones.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn drop_if_empty(&self, namespace: &Arc<Namespace>) {
        let empty = |ns: &Namespace| {
            ns.count.load(Ordering::SeqCst) == 0
                && ns.tombstones.load(Ordering::SeqCst) == 0
                && lock(&ns.journal).is_empty()
        };
        if !empty(namespace) {
            return;
        }
        let mut map = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
        // Writes hold the map shared, so under the exclusive lock nothing can change.
        if empty(namespace)
            && map
                .get(&*namespace.name)
                .is_some_and(|current| Arc::ptr_eq(&current.0, namespace))
        {
            map.remove(&*namespace.name);
        }
    }

    fn find(&self, namespace: &str) -> Option<Arc<Namespace>> {
        read(&self.namespaces)
            .get(namespace)
            .map(|held| held.0.clone())
    }

    /// Runs `write` on the namespace, created if needed, while the map is held shared so the
    /// namespace cannot be dropped under it.
    fn with_namespace<T>(
        &self,
        name: &str,
        write: impl FnOnce(&Arc<Namespace>) -> Result<T>,
    ) -> Result<(T, Arc<Namespace>)> {
        loop {
            {
                let map = read(&self.namespaces);
                if let Some(ByName(ns)) = map.get(name) {
                    let value = write(ns)?;
                    return Ok((value, ns.clone()));
                }
            }
            let mut map = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
            if !map.contains(name) {
                let version = self.sequence.load(Ordering::SeqCst);
                let namespace = Namespace::new(Arc::from(name), version);
                map.insert(ByName(Arc::new(namespace)));
            }
        }
    }

    fn wall_millis(&self) -> u64 {
        (self.clock.unix_nanos() / 1_000_000).max(0) as u64
    }

    fn issue(&self) -> Version {
        self.versions.issue(self.wall_millis())
    }

    /// Records a change in the namespace's journal; call with the shard lock held, so readers
    /// never see a change the journal lacks.
    fn journal(
        &self,
        namespace: &Namespace,
        before: Option<&Arc<Instance>>,
        after: &Arc<Instance>,
        kind: ChangeKind,
    ) -> Option<Queued> {
        let version = self.sequence.fetch_add(1, Ordering::SeqCst) + 1;
        let at = self.clock.monotonic_nanos();
        lock(&namespace.journal).record(
            &self.budget,
            before.map(|b| &**b),
            after,
            kind,
            at,
            version,
        )
    }

    /// The work after a write's locks are released: the change log's budget, then the events.
    fn finish(&self, namespace: &Arc<Namespace>, done: Done, origin: Origin) {
        if let Some(queued) = done.queued {
            self.budget.queue(namespace, queued);
        }
        let at = self.clock.monotonic_nanos();
        let listeners = read(&self.listeners);
        let left = done
            .left
            .map(|instance| (instance, ChangeKind::Deregistered));
        for (instance, kind) in left.into_iter().chain([done.change]) {
            let change = Change {
                namespace: namespace.name.clone(),
                instance,
                kind,
                origin,
                at,
                index: None,
            };
            for listener in listeners.iter() {
                listener(&change);
            }
        }
    }

    fn deadline(&self, instance: &Instance, now: u64) -> Option<u64> {
        if instance.never_expires() {
            None
        } else {
            Some(now.saturating_add(instance.ttl.as_nanos().min(u64::MAX as u128) as u64))
        }
    }

    /// Admits one more instance into the namespace, or refuses it at capacity.
    fn admit(&self, namespace: &Namespace, check_capacity: bool) -> Result<()> {
        match self.config.capacity.filter(|_| check_capacity) {
            None => {
                namespace.count.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            Some(capacity) => namespace
                .count
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < capacity).then_some(n + 1)
                })
                .map(|_| ())
                .map_err(|_| Error::capacity()),
        }
    }

    /// Inserts a local registration into a namespace the caller keeps alive, under
    /// `service_name` when it is given (the instance is unnamed), else under its own. A
    /// registration refused at capacity is handed back, for a retry.
    fn insert(
        &self,
        namespace: &Namespace,
        mut instance: Instance,
        service_name: Option<&str>,
    ) -> Inserted {
        let now = self.clock.monotonic_nanos();
        let mut shard = namespace.shard(&instance.id);
        let existing_live = shard.get_mut(&instance.id).map(|e| e.live(now));
        let kind = match existing_live {
            Some(true) => ChangeKind::Replaced,
            Some(false) => ChangeKind::Registered,
            None => {
                if self.admit(namespace, true).is_err() {
                    return Inserted::Full(instance);
                }
                ChangeKind::Registered
            }
        };
        // The instances of a service in a shard share one copy of its name (looked up before
        // the entry replaced goes, which may be the one holding it).
        let name = service_name.unwrap_or(&instance.service_name);
        let shared = match shard.service_name(name) {
            Some(held) => Some(held.clone()),
            None => service_name.map(Arc::from),
        };
        if let Some(shared) = shared {
            instance.service_name = shared;
        }
        // A replaced entry may belong to another service (the same Eureka id re-registered under
        // a new app): remove it first so both indexes stay right.
        let previous = shard.remove(&instance.id).map(|e| e.instance);
        let unix_now = self.clock.unix_nanos();
        instance.registered_unix_nanos = unix_now;
        instance.last_heartbeat.set(unix_now);
        instance.updated_unix_nanos = unix_now;
        instance.service_up_unix_nanos = if instance.status == UP { unix_now } else { 0 };
        instance.modified = false;
        if instance.dirty_unix_millis == 0 {
            instance.dirty_unix_millis = unix_now / 1_000_000;
        }
        instance.version = self.issue();
        instance.registration = instance.version;
        let deadline = self.deadline(&instance, now);
        Inserted::Written(self.put_live(namespace, &mut shard, instance, deadline, previous, kind))
    }

    /// Stores a live record in its shard (whose lock the caller holds) after `previous` was
    /// removed from it, and journals the change.
    fn put_live(
        &self,
        namespace: &Namespace,
        shard: &mut Shard,
        instance: Instance,
        deadline: Option<u64>,
        previous: Option<Arc<Instance>>,
        kind: ChangeKind,
    ) -> Done {
        let instance = Arc::new(instance);
        shard.insert(
            Entry {
                instance: instance.clone(),
                deadline,
            },
            &namespace.tombstones,
        );
        let queued = self.journal(namespace, previous.as_ref(), &instance, kind);
        namespace.split_if_large(shard);
        // Neither id scheme lets an id change service, but a record from elsewhere could: the old
        // service must hear that the instance left it.
        let left = previous.filter(|previous| previous.service_name != instance.service_name);
        Done {
            left,
            change: (instance, kind),
            queued,
            deadline,
        }
    }

    /// Registers `instance` (see [`MemoryStore::insert`]): the instance stored, or `Err` with
    /// the instance when the namespace is full.
    fn try_register(
        &self,
        call: &Call,
        instance: Instance,
        service_name: Option<&str>,
    ) -> Result<std::result::Result<Arc<Instance>, Instance>> {
        let (inserted, ns) = self.with_namespace(call.namespace, |ns| {
            if call.eureka {
                lock(&ns.journal).follow();
            }
            Ok(self.insert(ns, instance, service_name))
        })?;
        let done = match inserted {
            Inserted::Written(done) => done,
            Inserted::Full(instance) => return Ok(Err(instance)),
        };
        let stored = done.change.0.clone();
        self.schedule(&ns, done.deadline);
        self.finish(&ns, done, Origin::Local);
        Ok(Ok(stored))
    }

    /// [`Store::register`] and [`Store::register_named`].
    fn register_as(
        &self,
        call: &Call,
        service_name: Option<&str>,
        mut instance: Instance,
    ) -> Result<Arc<Instance>> {
        // The name is the first limit checked, as `check_limits` checks it.
        if service_name.is_some_and(|name| name.len() > MAX_SERVICE_NAME_BYTES) {
            return Err(Error::limit(LimitError::ServiceName));
        }
        instance.check_limits().map_err(Error::limit)?;
        instance.ttl = self.config.ttl.clamp(instance.ttl);
        match self.try_register(call, instance, service_name)? {
            Ok(stored) => Ok(stored),
            Err(refused) => {
                // Expired-but-not-reaped instances still count; reap this namespace and retry
                // once, so capacity is judged on live instances only.
                if let Some(ns) = self.find(call.namespace) {
                    self.expire_namespace(&ns);
                }
                self.try_register(call, refused, service_name)?
                    .map_err(|_| Error::capacity())
            }
        }
    }

    fn notify_lease(&self, namespace: &Namespace, instance: &Instance, remaining: Duration) {
        if !self.has_lease_listeners.load(Ordering::Relaxed) {
            return;
        }
        let lease = Lease {
            namespace: namespace.name.clone(),
            id: instance.id.clone(),
            registration: instance.registration,
            remaining,
        };
        for listener in read(&self.lease_listeners).iter() {
            listener(&lease);
        }
    }

    fn follow_if_eureka(&self, call: &Call, namespace: &Namespace) {
        if call.eureka {
            lock(&namespace.journal).follow();
        }
    }

    /// Applies a live record from elsewhere (rules 1, 3 and 4 of the cluster contract §6).
    fn apply_live(
        &self,
        namespace: &Arc<Namespace>,
        instance: Instance,
        remaining: Option<Duration>,
    ) -> Result<(Applied, Option<Done>)> {
        let now = self.clock.monotonic_nanos();
        let unix_now = self.clock.unix_nanos();
        let deadline = remaining.map(|r| now.saturating_add(r.as_nanos() as u64));
        let mut shard = namespace.shard(&instance.id);
        let (held_live, accept) = match shard.held(&instance.id) {
            None => (false, true),
            Some((held, live, tombstone)) => {
                let newer = instance.version > held;
                let outlived_expiry = tombstone.is_some_and(|t| {
                    t.registration == instance.registration
                        && match (t.expired_at_unix_millis, remaining) {
                            (Some(expired), Some(left)) => {
                                unix_now / 1_000_000 + left.as_millis() as i64 > expired
                            }
                            (Some(_), None) => true,
                            (None, _) => false,
                        }
                });
                (live.is_some_and(|e| e.live(now)), newer || outlived_expiry)
            }
        };
        if !accept {
            return Ok((Applied::Ignored, None));
        }
        let previous = shard.remove(&instance.id).map(|e| e.instance);
        let kind = match &previous {
            Some(p) if held_live && p.registration == instance.registration => ChangeKind::Modified,
            Some(_) if held_live => ChangeKind::Replaced,
            _ => ChangeKind::Registered,
        };
        if previous.is_none() {
            self.admit(namespace, false)?;
        }
        self.versions.observe(instance.version, self.wall_millis());
        if let Some(r) = remaining.filter(|_| !instance.never_expires()) {
            instance
                .last_heartbeat
                .set(unix_now - instance.ttl.saturating_sub(r).as_nanos() as i64);
        }
        let deadline = if instance.never_expires() {
            None
        } else {
            deadline
        };
        // A Eureka registration made elsewhere is recorded in the change log as the local one
        // was (cluster contract §13): the namespace's log is followed from then on.
        if instance.extension.is_some() {
            lock(&namespace.journal).follow();
        }
        let done = self.put_live(namespace, &mut shard, instance, deadline, previous, kind);
        Ok((Applied::Accepted, Some(done)))
    }

    /// Applies a tombstone from elsewhere (rules 1 and 2).
    fn apply_tombstone(
        &self,
        namespace: &Arc<Namespace>,
        tombstone: Tombstone,
    ) -> (Applied, Option<Done>) {
        let now = self.clock.monotonic_nanos();
        let mut shard = namespace.shard(&tombstone.id);
        let (held_live, accept) = match shard.held(&tombstone.id) {
            None => (false, true),
            Some((held, live, _)) => (live.is_some(), tombstone.version > held),
        };
        if !accept {
            return (Applied::Ignored, None);
        }
        self.versions.observe(tombstone.version, self.wall_millis());
        let retention = self.config.tombstone_retention.unwrap_or(Duration::ZERO);
        let kept = KeptTombstone {
            tombstone: tombstone.clone(),
            until: now.saturating_add(retention.as_nanos() as u64),
        };
        if !held_live {
            if self.config.tombstone_retention.is_some()
                && shard.keep_tombstone(tombstone.id.clone(), kept)
            {
                namespace.tombstones.fetch_add(1, Ordering::SeqCst);
            }
            return (Applied::Accepted, None);
        }
        let Some(entry) = shard.remove(&tombstone.id) else {
            return (Applied::Accepted, None);
        };
        namespace.count.fetch_sub(1, Ordering::SeqCst);
        if self.config.tombstone_retention.is_some() {
            shard.keep_tombstone(tombstone.id.clone(), kept);
            namespace.tombstones.fetch_add(1, Ordering::SeqCst);
        }
        let kind = if tombstone.expired_at_unix_millis.is_some() {
            ChangeKind::Expired
        } else {
            ChangeKind::Deregistered
        };
        let mut last = (*entry.instance).clone();
        last.version = tombstone.version;
        let last = Arc::new(last);
        // An entry past its deadline that the reaper had not removed yet ends as an expiry.
        let kind = if entry.live(now) {
            kind
        } else {
            ChangeKind::Expired
        };
        let queued = self.journal(namespace, Some(&entry.instance), &last, kind);
        let done = Done {
            left: None,
            change: (last, kind),
            queued,
            deadline: None,
        };
        (Applied::Accepted, Some(done))
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

impl Store for MemoryStore {
    fn register(&self, call: &Call, instance: Instance) -> Result<Arc<Instance>> {
        self.register_as(call, None, instance)
    }

    fn register_named(
        &self,
        call: &Call,
        service_name: &str,
        instance: Instance,
    ) -> Result<Arc<Instance>> {
        self.register_as(call, Some(service_name), instance)
    }

    fn heartbeat(&self, call: &Call, id: &str) -> Result<()> {
        let ns = self.find(call.namespace).ok_or_else(Error::not_found)?;
        let now = self.clock.monotonic_nanos();
        let unix_now = self.clock.unix_nanos();
        let renewed = {
            let mut shard = ns.shard(id);
            let entry = shard.get_mut(id).ok_or_else(Error::not_found)?;
            if !entry.live(now) {
                return Err(Error::not_found());
            }
            entry.instance.last_heartbeat.set(unix_now);
            if entry.deadline.is_some() {
                entry.deadline = self.deadline(&entry.instance, now);
            }
            (entry.deadline.is_some() && self.has_lease_listeners.load(Ordering::Relaxed))
                .then(|| entry.instance.clone())
        };
        self.follow_if_eureka(call, &ns);
        if let Some(instance) = renewed {
            self.notify_lease(&ns, &instance, instance.ttl);
        }
        Ok(())
    }

    fn deregister(&self, call: &Call, id: &str) -> Result<()> {
        let ns = self.find(call.namespace).ok_or_else(Error::not_found)?;
        self.follow_if_eureka(call, &ns);
        let now = self.clock.monotonic_nanos();
        let done = {
            let mut shard = ns.shard(id);
            match shard.get_mut(id) {
                Some(entry) if entry.live(now) => {}
                _ => return Err(Error::not_found()),
            }
            let entry = shard.remove(id).ok_or_else(Error::not_found)?;
            ns.count.fetch_sub(1, Ordering::SeqCst);
            let mut last = (*entry.instance).clone();
            last.version = self.issue();
            let last = Arc::new(last);
            self.keep_tombstone(&ns, &mut shard, &last, None, now);
            let queued = self.journal(&ns, Some(&entry.instance), &last, ChangeKind::Deregistered);
            Done {
                left: None,
                change: (last, ChangeKind::Deregistered),
                queued,
                deadline: None,
            }
        };
        self.finish(&ns, done, Origin::Local);
        self.drop_if_empty(&ns);
        Ok(())
    }

    fn modify(
        &self,
        call: &Call,
        id: &str,
        edit: &mut dyn FnMut(&mut Instance) -> Result<()>,
    ) -> Result<()> {
        let ns = self.find(call.namespace).ok_or_else(Error::not_found)?;
        self.follow_if_eureka(call, &ns);
        let now = self.clock.monotonic_nanos();
        let unix_now = self.clock.unix_nanos();
        let done = {
            let mut shard = ns.shard(id);
            let entry = shard.get_mut(id).ok_or_else(Error::not_found)?;
            if !entry.live(now) {
                return Err(Error::not_found());
            }
            let mut changed = (*entry.instance).clone();
            edit(&mut changed)?;
            // The id and the service index the entry: an edit cannot move it.
            changed.id = entry.instance.id.clone();
            changed.service_name = entry.instance.service_name.clone();
            // A status set through Eureka has no length limit (spec 4.3): only the metadata can
            // break one here.
            changed.check_metadata_limit().map_err(Error::limit)?;
            changed.last_heartbeat.set(unix_now);
            changed.updated_unix_nanos = unix_now;
            changed.modified = true;
            if changed.status == UP && changed.service_up_unix_nanos == 0 {
                changed.service_up_unix_nanos = unix_now;
            }
            changed.version = self.issue();
            let deadline = self.deadline(&changed, now);
            // Remove and insert, so the secondary indexes follow a changed Eureka field.
            let previous = shard.remove(id).map(|e| e.instance);
            self.put_live(
                &ns,
                &mut shard,
                changed,
                deadline,
                previous,
                ChangeKind::Modified,
            )
        };
        // An instance leaving OUT_OF_SERVICE gets a deadline again.
        self.schedule(&ns, done.deadline);
        self.finish(&ns, done, Origin::Local);
        Ok(())
    }

    fn get(&self, call: &Call, id: &str) -> Result<Option<Arc<Instance>>> {
        let Some(ns) = self.find(call.namespace) else {
            return Ok(None);
        };
        let now = self.clock.monotonic_nanos();
        let mut shard = ns.shard(id);
        Ok(shard
            .get_mut(id)
            .and_then(|entry| entry.live(now).then(|| entry.instance.clone())))
    }

    fn instance_count(&self, call: &Call) -> Option<usize> {
        Some(
            self.find(call.namespace)
                .map_or(0, |ns| ns.count.load(Ordering::SeqCst)),
        )
    }

    fn snapshot(&self, call: &Call, service: Option<&str>) -> Result<Snapshot> {
        let mut snapshot = Snapshot::default();
        let Some(ns) = self.find(call.namespace) else {
            return Ok(snapshot);
        };
        if service.is_none() {
            // Reserved before any shard's lock: a million pointers grown by doubling would copy
            // 8 MB under those locks, while heartbeats to their shards wait.
            snapshot.instances.reserve(ns.count.load(Ordering::SeqCst));
        }
        let now = self.clock.monotonic_nanos();
        let mut take = |entry: &Entry| {
            if !entry.live(now) {
                return;
            }
            if let Some(d) = entry.deadline {
                snapshot.stale_after = Some(snapshot.stale_after.map_or(d, |e| e.min(d)));
            }
            snapshot.instances.push(entry.instance.clone());
        };
        ns.each_shard(|shard| match service {
            Some(name) => shard.service_entries(name).for_each(&mut take),
            None => shard.entries().for_each(&mut take),
        });
        Ok(snapshot)
    }

    fn lookup(&self, call: &Call, lookup: Lookup) -> Result<Vec<Arc<Instance>>> {
        let Some(ns) = self.find(call.namespace) else {
            return Ok(Vec::new());
        };
        let now = self.clock.monotonic_nanos();
        let mut found = Vec::new();
        ns.each_shard(|shard| shard.find(lookup, now, &mut found));
        Ok(found)
    }

    fn expire(&self, call: &Call) -> Result<()> {
        if let Some(ns) = self.find(call.namespace) {
            self.expire_namespace(&ns);
            self.drop_if_empty(&ns);
        }
        Ok(())
    }

    fn services(&self, call: &Call) -> Result<Vec<Arc<str>>> {
        let Some(ns) = self.find(call.namespace) else {
            return Ok(Vec::new());
        };
        let now = self.clock.monotonic_nanos();
        let mut names: Vec<Arc<str>> = Vec::new();
        ns.each_shard(|shard| names.extend(shard.live_services(now).cloned()));
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    fn change_log(&self, call: &Call) -> Result<ChangeLog> {
        let Some(ns) = self.find(call.namespace) else {
            return Ok(ChangeLog {
                version: self.sequence.load(Ordering::SeqCst),
                ..ChangeLog::default()
            });
        };
        let now = self.clock.monotonic_nanos();
        let mut journal = lock(&ns.journal);
        if call.eureka {
            journal.follow();
        }
        let mut view = journal.view(&self.budget, now);
        // The reaper's schedule holds a lower bound of the namespace's earliest deadline.
        let earliest = ns.scheduled.load(Ordering::SeqCst);
        if earliest != u64::MAX {
            view.stale_after = Some(view.stale_after.map_or(earliest, |s| s.min(earliest)));
        }
        Ok(view)
    }

    fn change_log_version(&self, call: &Call) -> Result<u64> {
        let Some(ns) = self.find(call.namespace) else {
            return Ok(self.sequence.load(Ordering::SeqCst));
        };
        let mut journal = lock(&ns.journal);
        if call.eureka {
            journal.follow();
        }
        Ok(journal.version())
    }

    fn apply(&self, namespace: &str, record: Record, origin: Origin) -> Result<Applied> {
        let (done, ns) = self.with_namespace(namespace, |ns| match record {
            Record::Live {
                instance,
                remaining,
            } => self.apply_live(ns, instance, remaining),
            Record::Tombstone(tombstone) => Ok(self.apply_tombstone(ns, tombstone)),
        })?;
        let (applied, Some(done)) = done else {
            self.drop_if_empty(&ns);
            return Ok(done.0);
        };
        self.schedule(&ns, done.deadline);
        self.finish(&ns, done, origin);
        self.drop_if_empty(&ns);
        Ok(applied)
    }

    fn apply_lease(&self, lease: &Lease) -> Result<Applied> {
        let Some(ns) = self.find(&lease.namespace) else {
            return Ok(Applied::Ignored);
        };
        let now = self.clock.monotonic_nanos();
        let mut shard = ns.shard(&lease.id);
        let Some(entry) = shard.get_mut(&lease.id) else {
            return Ok(Applied::Ignored);
        };
        let proposed = now.saturating_add(lease.remaining.as_nanos() as u64);
        match entry.deadline {
            Some(current)
                if entry.live(now)
                    && entry.instance.registration == lease.registration
                    && proposed > current =>
            {
                entry.deadline = Some(proposed);
                let unix_now = self.clock.unix_nanos();
                let lag = entry.instance.ttl.saturating_sub(lease.remaining);
                entry
                    .instance
                    .last_heartbeat
                    .set(unix_now - lag.as_nanos() as i64);
                Ok(Applied::Accepted)
            }
            _ => Ok(Applied::Ignored),
        }
    }

    fn namespaces(&self) -> Result<Vec<Arc<str>>> {
        Ok(read(&self.namespaces)
            .iter()
            .map(|held| held.0.name.clone())
            .collect())
    }

    fn records(&self, namespace: &str) -> Result<Vec<Record>> {
        let Some(ns) = self.find(namespace) else {
            return Ok(Vec::new());
        };
        let now = self.clock.monotonic_nanos();
        let mut records = Vec::new();
        ns.each_shard(|shard| {
            for entry in shard.entries().filter(|entry| entry.live(now)) {
                records.push(Record::Live {
                    instance: (*entry.instance).clone(),
                    remaining: entry
                        .deadline
                        .map(|d| Duration::from_nanos(d.saturating_sub(now))),
                });
            }
            for kept in shard.tombstones() {
                records.push(Record::Tombstone(kept.tombstone.clone()));
            }
        });
        Ok(records)
    }

    fn versions(&self, namespace: &str) -> Result<Vec<(Arc<str>, Version)>> {
        let Some(ns) = self.find(namespace) else {
            return Ok(Vec::new());
        };
        let now = self.clock.monotonic_nanos();
        let mut versions = Vec::new();
        ns.each_shard(|shard| {
            versions.extend(
                shard
                    .entries()
                    .filter(|entry| entry.live(now))
                    .map(|entry| (entry.instance.id.clone(), entry.instance.version)),
            );
            versions.extend(
                shard
                    .tombstones()
                    .map(|kept| (kept.tombstone.id.clone(), kept.tombstone.version)),
            );
        });
        Ok(versions)
    }

    fn record(&self, namespace: &str, id: &str) -> Result<Option<Record>> {
        let Some(ns) = self.find(namespace) else {
            return Ok(None);
        };
        let now = self.clock.monotonic_nanos();
        let shard = ns.shard(id);
        if let Some(entry) = shard.get(id) {
            return Ok(entry.live(now).then(|| Record::Live {
                instance: (*entry.instance).clone(),
                remaining: entry
                    .deadline
                    .map(|d| Duration::from_nanos(d.saturating_sub(now))),
            }));
        }
        Ok(shard
            .tombstone(id)
            .map(|kept| Record::Tombstone(kept.tombstone.clone())))
    }

    fn subscribe(&self, listener: Listener) {
        self.listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    fn subscribe_leases(&self, listener: LeaseListener) {
        self.lease_listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
        self.has_lease_listeners.store(true, Ordering::SeqCst);
    }

    fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    fn name(&self) -> &'static str {
        "inmem"
    }

    fn instance_counts(&self) -> Result<Vec<(Arc<str>, usize)>> {
        // Instances stored: an expired one is counted until the reaper removes it (within
        // REAP_INTERVAL), which a gauge scraped every few seconds can bear.
        Ok(read(&self.namespaces)
            .iter()
            .map(|ByName(ns)| (ns.name.clone(), ns.count.load(Ordering::SeqCst)))
            .collect())
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::instance::{Endpoint, EndpointType, LimitError, MAX_TAGS_BYTES};

    /// A clock the test moves by hand.
    #[derive(Default)]
    struct ManualClock {
        nanos: AtomicU64,
    }

    impl ManualClock {
        fn advance(&self, by: Duration) {
            self.nanos.fetch_add(by.as_nanos() as u64, Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn monotonic_nanos(&self) -> u64 {
            self.nanos.load(Ordering::SeqCst)
        }
        fn unix_nanos(&self) -> i64 {
            1_700_000_000_000_000_000 + self.nanos.load(Ordering::SeqCst) as i64
        }
    }

    const SECOND: Duration = Duration::from_secs(1);

    fn c(namespace: &str) -> Call<'_> {
        Call::new(namespace)
    }

    fn store(capacity: Option<usize>) -> (Arc<MemoryStore>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        let config = MemoryConfig {
            ttl: TtlPolicy {
                default: 30 * SECOND,
                min: 10 * SECOND,
                max: 600 * SECOND,
            },
            capacity,
            node_id: 1,
            tombstone_retention: None,
        };
        (Arc::new(MemoryStore::new(config, clock.clone())), clock)
    }

    /// A store that keeps tombstones for 600 s, as a cluster node does.
    fn cluster_store(node_id: u64) -> (Arc<MemoryStore>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        let config = MemoryConfig {
            ttl: TtlPolicy {
                default: 30 * SECOND,
                min: 10 * SECOND,
                max: 600 * SECOND,
            },
            capacity: Some(1),
            node_id,
            tombstone_retention: Some(600 * SECOND),
        };
        (Arc::new(MemoryStore::new(config, clock.clone())), clock)
    }

    fn live(instance: &Instance, remaining_secs: u64) -> Record {
        Record::Live {
            instance: instance.clone(),
            remaining: Some(Duration::from_secs(remaining_secs)),
        }
    }

    fn statuses(store: &MemoryStore, ns: &str) -> Vec<String> {
        let mut out: Vec<String> = store
            .snapshot(&c(ns), None)
            .unwrap()
            .instances
            .iter()
            .map(|i| format!("{}={}", i.id, i.status.as_str()))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn records_from_elsewhere_keep_their_times_and_skip_capacity() {
        let (origin, _) = store(None);
        let (replica, _) = cluster_store(2);
        let mut seen = Vec::new();
        for id in ["a", "b"] {
            // A TTL of 5 s is below the replica's minimum of 10 s: it is not re-clamped.
            let mut i = instance(id, "s", "UP", 5);
            i.version = origin.issue();
            i.registration = i.version;
            seen.push(replica.apply("ns", live(&i, 5), Origin::Peer).unwrap());
        }
        assert_eq!(
            seen,
            [Applied::Accepted, Applied::Accepted],
            "capacity 1 not applied"
        );
        let stored = replica.get(&c("ns"), "a").unwrap().unwrap();
        assert_eq!(stored.ttl, 5 * SECOND);
    }

    #[test]
    fn the_higher_version_wins_in_any_order() {
        let (origin, _) = store(None);
        let mut old = instance("a", "s", "UP", 30);
        old.version = origin.issue();
        old.registration = old.version;
        let mut new = old.clone();
        new.status = crate::registry::instance::Status::new("STARTING");
        new.version = origin.issue();
        for order in [[&old, &new], [&new, &old]] {
            let (replica, _) = cluster_store(2);
            for record in order {
                replica.apply("ns", live(record, 30), Origin::Peer).unwrap();
            }
            assert_eq!(statuses(&replica, "ns"), ["a=STARTING"]);
        }
    }

    #[test]
    fn tombstones_stop_late_records_and_leases() {
        let (origin, _) = store(None);
        let (replica, _) = cluster_store(2);
        let mut a = instance("a", "s", "UP", 30);
        a.version = origin.issue();
        a.registration = a.version;
        let tombstone = Tombstone {
            id: "a".into(),
            service_name: "s".into(),
            version: origin.issue(),
            registration: a.registration,
            expired_at_unix_millis: None,
        };
        // The deregistration arrives before the registration it ends.
        let first = replica.apply("ns", Record::Tombstone(tombstone.clone()), Origin::Peer);
        assert_eq!(first.unwrap(), Applied::Accepted);
        let late = replica.apply("ns", live(&a, 30), Origin::Peer).unwrap();
        assert_eq!(late, Applied::Ignored);
        let lease = Lease {
            namespace: "ns".into(),
            id: "a".into(),
            registration: a.registration,
            remaining: 30 * SECOND,
        };
        assert_eq!(replica.apply_lease(&lease).unwrap(), Applied::Ignored);
        assert!(statuses(&replica, "ns").is_empty());
        // A registration issued after the deregistration brings it back.
        let mut again = a.clone();
        again.version = origin.issue();
        again.registration = again.version;
        let back = replica.apply("ns", live(&again, 30), Origin::Peer).unwrap();
        assert_eq!(back, Applied::Accepted);
        assert_eq!(statuses(&replica, "ns"), ["a=UP"]);
    }

    #[test]
    fn leases_renew_only_their_registration_and_never_shorten() {
        let (replica, clock) = cluster_store(2);
        let mut a = instance("a", "s", "UP", 30);
        a.version = Version { clock: 10, node: 1 };
        a.registration = a.version;
        replica.apply("ns", live(&a, 30), Origin::Peer).unwrap();
        let lease = |registration, secs| Lease {
            namespace: "ns".into(),
            id: "a".into(),
            registration,
            remaining: Duration::from_secs(secs),
        };
        let other = Version { clock: 9, node: 1 };
        assert_eq!(
            replica.apply_lease(&lease(other, 60)).unwrap(),
            Applied::Ignored
        );
        assert_eq!(
            replica.apply_lease(&lease(a.registration, 10)).unwrap(),
            Applied::Ignored
        );
        clock.advance(20 * SECOND);
        assert_eq!(
            replica.apply_lease(&lease(a.registration, 30)).unwrap(),
            Applied::Accepted
        );
        clock.advance(25 * SECOND);
        assert_eq!(
            statuses(&replica, "ns"),
            ["a=UP"],
            "alive thanks to the lease"
        );
        let unknown = Lease {
            id: "b".into(),
            ..lease(a.registration, 30)
        };
        assert_eq!(
            replica.apply_lease(&unknown).unwrap(),
            Applied::Ignored,
            "leases never create"
        );
    }

    #[test]
    fn an_expiry_tombstone_yields_to_a_later_deadline_of_its_registration() {
        let (replica, clock) = cluster_store(2);
        let mut a = instance("a", "s", "UP", 10);
        a.version = Version { clock: 10, node: 1 };
        a.registration = a.version;
        replica.apply("ns", live(&a, 10), Origin::Peer).unwrap();
        clock.advance(11 * SECOND);
        replica.expire_due();
        assert!(statuses(&replica, "ns").is_empty());
        // A heartbeat reached another node in time; its record arrives late with a later deadline.
        let back = replica.apply("ns", live(&a, 8), Origin::Peer).unwrap();
        assert_eq!(back, Applied::Accepted);
        assert_eq!(statuses(&replica, "ns"), ["a=UP"]);
    }

    #[test]
    fn deregistration_leaves_a_tombstone_with_a_newer_version() {
        let (node, _) = cluster_store(2);
        let stored = node
            .register(&c("ns"), instance("a", "s", "UP", 30))
            .unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        node.subscribe(Box::new(move |change| {
            lock(&sink).push((change.kind, change.instance.version, change.origin))
        }));
        node.deregister(&c("ns"), "a").unwrap();
        let (kind, version, origin) = lock(&events)[0];
        assert_eq!((kind, origin), (ChangeKind::Deregistered, Origin::Local));
        assert!(version > stored.version);
        // The same record arriving late from a peer does not bring it back.
        let late = node.apply("ns", live(&stored, 30), Origin::Peer).unwrap();
        assert_eq!(late, Applied::Ignored);
    }

    #[test]
    fn lease_events_are_seen_only_by_those_who_ask() {
        let (node, _) = store(None);
        node.register(&c("ns"), instance("a", "s", "UP", 30))
            .unwrap();
        let changes = Arc::new(AtomicUsize::new(0));
        let counter = changes.clone();
        node.subscribe(Box::new(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        }));
        node.heartbeat(&c("ns"), "a").unwrap();
        assert_eq!(
            changes.load(Ordering::SeqCst),
            0,
            "a heartbeat is no change"
        );
        let leases = Arc::new(Mutex::new(Vec::new()));
        let sink = leases.clone();
        node.subscribe_leases(Box::new(move |lease| lock(&sink).push(lease.remaining)));
        node.heartbeat(&c("ns"), "a").unwrap();
        assert_eq!(*lock(&leases), [30 * SECOND]);
    }

    #[test]
    fn the_change_log_counts_what_it_logs_and_logs_only_for_eureka() {
        let (node, _) = store(None);
        let plain = c("ns");
        node.register(&plain, instance("a", "s", "UP", 30)).unwrap();
        assert!(node.change_log(&plain).unwrap().entries.is_empty());
        let eureka = plain.from_eureka();
        let before = node.change_log(&eureka).unwrap();
        assert!(
            before.entries.is_empty(),
            "nothing logged before Eureka came"
        );
        node.register(&plain, instance("b", "s", "UP", 30)).unwrap();
        node.modify(&plain, "a", &mut |i| {
            i.status = crate::registry::instance::Status::new("DOWN");
            Ok(())
        })
        .unwrap();
        node.deregister(&plain, "b").unwrap();
        let log = node.change_log(&eureka).unwrap();
        assert!(log.version > before.version);
        assert_eq!(log.status_counts, [(Arc::from("DOWN"), 1)]);
        let mut kinds: Vec<_> = log
            .entries
            .iter()
            .map(|(i, k)| (i.id.to_string(), *k))
            .collect();
        kinds.sort();
        assert_eq!(
            kinds,
            [
                ("a".into(), ChangeKind::Modified),
                ("b".into(), ChangeKind::Deregistered)
            ]
        );
    }

    #[test]
    fn id_suffix_lookups_find_every_suffix_and_deep_ids() {
        let (node, _) = store(None);
        let deep = format!("APP:{}", ["x"; 20].join(":"));
        for id in ["APP:host:8080", "OTHER:8080", "plain", deep.as_str()] {
            node.register(&c("ns"), instance(id, "s", "UP", 30))
                .unwrap();
        }
        let found = |suffix: &str| {
            let mut ids: Vec<String> = node
                .lookup(&c("ns"), Lookup::IdSuffix(suffix))
                .unwrap()
                .iter()
                .map(|i| i.id.to_string())
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(found("8080"), ["APP:host:8080", "OTHER:8080"]);
        assert_eq!(found("host:8080"), ["APP:host:8080"]);
        assert!(found("plain").is_empty(), "a suffix follows a colon");
        assert!(found("ost:8080").is_empty());
        assert_eq!(found("x:x"), std::slice::from_ref(&deep));
        node.deregister(&c("ns"), "APP:host:8080").unwrap();
        node.deregister(&c("ns"), &deep).unwrap();
        assert_eq!(found("8080"), ["OTHER:8080"]);
        assert!(found("x").is_empty());
    }

    #[test]
    fn a_namespace_spreads_its_instances_once_it_outgrows_its_first_shard() {
        let (node, clock) = cluster_store(1);
        let ns = c("big");
        let total = 3 * SPLIT_AT;
        let mut live = 0;
        for n in 0..total {
            // Every third instance expires first; every fifth is deregistered (a tombstone).
            let ttl = if n % 3 == 0 { 10 } else { 60 };
            let mut instance = instance(&format!("i{n}"), &format!("s{}", n % 4), "UP", ttl);
            instance.endpoint.value = format!("h{n}:80");
            node.apply(
                "big",
                Record::Live {
                    remaining: Some(Duration::from_secs(ttl)),
                    instance,
                },
                Origin::Peer,
            )
            .unwrap();
            live += 1;
            let spread = node.find("big").unwrap().spread.get().is_some();
            assert_eq!(
                spread,
                live > SPLIT_AT,
                "{n}: split after an insert past the bound"
            );
            if n % 5 == 4 {
                node.deregister(&ns, &format!("i{n}")).unwrap();
                live -= 1;
            }
        }
        let held = total - total / 5;
        assert_eq!(ids(&node, "big", None).len(), held);
        assert_eq!(ids(&node, "big", Some("s1")).len(), held / 4);
        assert_eq!(node.services(&ns).unwrap().len(), 4);
        let records = node.records("big").unwrap();
        let tombstones = records
            .iter()
            .filter(|r| matches!(r, Record::Tombstone(_)))
            .count();
        assert_eq!((records.len(), tombstones), (total, total / 5));
        assert_eq!(node.versions("big").unwrap().len(), total);
        assert!(matches!(
            node.record("big", "i4").unwrap(),
            Some(Record::Tombstone(_))
        ));
        let namespace = node.find("big").unwrap();
        assert!(lock(&namespace.first).moved && lock(&namespace.first).len() == 0);
        clock.advance(11 * SECOND);
        node.expire_due();
        let expired = (0..total).filter(|n| n % 3 == 0 && n % 5 != 4).count();
        assert_eq!(ids(&node, "big", None).len(), held - expired);
        assert_eq!(namespace.count.load(Ordering::SeqCst), held - expired);
        node.deregister(&ns, "i1").unwrap();
        node.heartbeat(&ns, "i2").unwrap();
        assert_eq!(ids(&node, "big", None).len(), held - expired - 1);
    }

    #[test]
    fn reads_racing_a_split_see_every_instance() {
        let (node, _) = store(None);
        let writer = {
            let node = node.clone();
            std::thread::spawn(move || {
                for n in 0..4 * SPLIT_AT {
                    node.register(&c("ns"), instance(&format!("i{n}"), "s", "UP", 30))
                        .unwrap();
                }
            })
        };
        let mut seen = 0;
        while seen < 4 * SPLIT_AT {
            let now = node.snapshot(&c("ns"), None).unwrap().instances.len();
            assert!(now >= seen, "{now} after {seen}: a read missed instances");
            assert!(node
                .lookup(&c("ns"), Lookup::IdSuffix("x"))
                .unwrap()
                .is_empty());
            seen = now;
        }
        writer.join().unwrap();
    }

    #[test]
    fn idle_namespaces_are_not_visited_by_the_reaper() {
        let (node, clock) = store(None);
        for n in 0..1_000 {
            let ns = format!("ns{n}");
            node.register(&c(&ns), instance("a", "s", "OUT_OF_SERVICE", 30))
                .unwrap();
        }
        node.register(&c("busy"), instance("a", "s", "UP", 10))
            .unwrap();
        assert_eq!(
            lock(&node.schedule).len(),
            1,
            "only the namespace that can expire"
        );
        clock.advance(11 * SECOND);
        node.expire_due();
        assert!(lock(&node.schedule).is_empty());
        assert!(node.find("busy").is_none(), "expired and dropped");
        assert_eq!(read(&node.namespaces).len(), 1_000);
    }

    fn instance(id: &str, service: &str, status: &str, ttl_secs: u64) -> Instance {
        let endpoint = Endpoint {
            kind: EndpointType::Tcp,
            value: format!("{id}:80"),
        };
        Instance::new(id, service, endpoint, status, Duration::from_secs(ttl_secs))
    }

    fn ids(store: &MemoryStore, ns: &str, service: Option<&str>) -> Vec<String> {
        let mut out: Vec<String> = store
            .snapshot(&c(ns), service)
            .unwrap()
            .instances
            .iter()
            .map(|i| i.id.to_string())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn expiry_is_exact_at_the_deadline() {
        let (store, clock) = store(None);
        let stored = store
            .register(&c("ns"), instance("a", "s", "UP", 10))
            .unwrap();
        assert_eq!(stored.ttl, 10 * SECOND);
        clock.advance(10 * SECOND);
        assert_eq!(
            ids(&store, "ns", None),
            ["a"],
            "alive at exactly the deadline"
        );
        clock.advance(Duration::from_nanos(1));
        assert!(
            ids(&store, "ns", None).is_empty(),
            "gone one nanosecond later"
        );
        assert_eq!(store.heartbeat(&c("ns"), "a"), Err(Error::not_found()));
        assert_eq!(store.deregister(&c("ns"), "a"), Err(Error::not_found()));
        assert!(store.services(&c("ns")).unwrap().is_empty());
    }

    #[test]
    fn heartbeats_move_the_deadline() {
        let (store, clock) = store(None);
        store
            .register(&c("ns"), instance("a", "s", "UP", 10))
            .unwrap();
        for _ in 0..5 {
            clock.advance(9 * SECOND);
            store.heartbeat(&c("ns"), "a").unwrap();
        }
        assert_eq!(ids(&store, "ns", Some("s")), ["a"]);
    }

    #[test]
    fn out_of_service_never_expires() {
        let (store, clock) = store(None);
        store
            .register(&c("ns"), instance("oos", "s", "OUT_OF_SERVICE", 10))
            .unwrap();
        store
            .register(&c("ns"), instance("st", "s", "STARTING", 10))
            .unwrap();
        clock.advance(3600 * SECOND);
        store.expire_due();
        assert_eq!(ids(&store, "ns", Some("s")), ["oos"]);
    }

    #[test]
    fn reaper_finds_an_instance_that_left_out_of_service() {
        let (store, clock) = store(None);
        store
            .register(&c("ns"), instance("a", "s", "OUT_OF_SERVICE", 10))
            .unwrap();
        store
            .register(&c("ns"), instance("b", "s", "UP", 60))
            .unwrap();
        clock.advance(20 * SECOND);
        store.expire_due();
        store
            .modify(&c("ns"), "a", &mut |i| {
                i.status = crate::registry::instance::Status::new("UP");
                Ok(())
            })
            .unwrap();
        clock.advance(11 * SECOND);
        store.expire_due();
        assert_eq!(ids(&store, "ns", None), ["b"]);
        assert_eq!(
            store.find("ns").unwrap().count.load(Ordering::SeqCst),
            1,
            "a was reaped"
        );
    }

    #[test]
    fn reaper_emits_events_and_drops_empty_namespaces() {
        let (store, clock) = store(None);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        store.subscribe(Box::new(move |c| {
            lock(&sink).push((c.instance.id.to_string(), c.kind))
        }));
        store
            .register(&c("ns"), instance("a", "s", "UP", 10))
            .unwrap();
        clock.advance(11 * SECOND);
        store.expire_due();
        assert_eq!(
            *lock(&seen),
            [
                ("a".to_string(), ChangeKind::Registered),
                ("a".to_string(), ChangeKind::Expired)
            ]
        );
        store.prune();
        assert!(store.namespaces.read().unwrap().is_empty());
    }

    #[test]
    fn the_instances_of_a_service_share_one_copy_of_its_name() {
        let (store, clock) = store(Some(20));
        let unnamed = |id: &str| {
            let endpoint = Endpoint {
                kind: EndpointType::Tcp,
                value: format!("{id}:80"),
            };
            Instance::unnamed(id, endpoint, "UP", Duration::from_secs(10))
        };
        let first = store.register_named(&c("ns"), "s", unnamed("a")).unwrap();
        assert_eq!(&*first.service_name, "s");
        // Past the shard's short list (8 entries) too, where the name is the index's key.
        for n in 0..11 {
            let id = format!("i{n}");
            let stored = store.register_named(&c("ns"), "s", unnamed(&id)).unwrap();
            assert!(
                Arc::ptr_eq(&first.service_name, &stored.service_name),
                "{id}"
            );
        }
        // An instance that comes with a name of its own is given the shard's copy too.
        let named = store
            .register(&c("ns"), instance("b", "s", "UP", 10))
            .unwrap();
        assert!(Arc::ptr_eq(&first.service_name, &named.service_name));
        // Another service has its own; its only instance registered again keeps it.
        let other = store.register_named(&c("ns"), "t", unnamed("d")).unwrap();
        assert_eq!(&*other.service_name, "t");
        let again = store.register_named(&c("ns"), "t", unnamed("d")).unwrap();
        assert!(Arc::ptr_eq(&other.service_name, &again.service_name));
        assert_eq!(ids(&store, "ns", Some("s")).len(), 13);
        assert_eq!(ids(&store, "ns", Some("t")), ["d"]);
        // The name is the first limit checked; a refused registration changes nothing.
        let long = "n".repeat(MAX_SERVICE_NAME_BYTES + 1);
        let mut too_much = unnamed("e");
        too_much.tags = vec!["t".repeat(MAX_TAGS_BYTES + 1)];
        assert_eq!(
            store.register_named(&c("ns"), &long, too_much).unwrap_err(),
            Error::limit(LimitError::ServiceName)
        );
        // At capacity (14 of 20 held, 6 more fit), expired instances are reaped and the
        // registration handed back is retried.
        for n in 0..6 {
            let id = format!("j{n}");
            store.register_named(&c("ns"), "s", unnamed(&id)).unwrap();
        }
        assert_eq!(
            store
                .register_named(&c("ns"), "s", unnamed("f"))
                .unwrap_err(),
            Error::capacity()
        );
        clock.advance(11 * SECOND);
        let retried = store.register_named(&c("ns"), "s", unnamed("f")).unwrap();
        assert_eq!(&*retried.service_name, "s");
        assert_eq!(ids(&store, "ns", None), ["f"]);
    }

    #[test]
    fn capacity_counts_new_ids_only() {
        let (store, clock) = store(Some(2));
        store
            .register(&c("ns"), instance("a", "s", "UP", 10))
            .unwrap();
        store
            .register(&c("ns"), instance("b", "s", "UP", 10))
            .unwrap();
        assert_eq!(
            store
                .register(&c("ns"), instance("c", "s", "UP", 10))
                .unwrap_err(),
            Error::capacity()
        );
        store
            .register(&c("ns"), instance("b", "s", "UP", 10))
            .unwrap();
        store
            .register(&c("other"), instance("c", "s", "UP", 10))
            .unwrap();
        store.deregister(&c("ns"), "a").unwrap();
        store
            .register(&c("ns"), instance("c", "s", "UP", 10))
            .unwrap();
        // An expired instance frees its slot at once, before the reaper runs.
        clock.advance(11 * SECOND);
        store
            .register(&c("ns"), instance("d", "s", "UP", 10))
            .unwrap();
    }

    #[test]
    fn reads_of_unknown_namespaces_create_nothing() {
        let (store, _) = store(None);
        assert!(ids(&store, "nobody", None).is_empty());
        assert!(store.services(&c("nobody")).unwrap().is_empty());
        assert_eq!(store.heartbeat(&c("nobody"), "x"), Err(Error::not_found()));
        assert!(store.namespaces.read().unwrap().is_empty());
    }

    #[test]
    fn re_registration_replaces_everything() {
        let (store, _) = store(None);
        store
            .register(&c("ns"), instance("a", "s1", "UP", 10))
            .unwrap();
        store
            .register(&c("ns"), instance("a", "s2", "STARTING", 20))
            .unwrap();
        assert!(ids(&store, "ns", Some("s1")).is_empty());
        let seen: Vec<(String, Duration)> = store
            .snapshot(&c("ns"), Some("s2"))
            .unwrap()
            .instances
            .iter()
            .map(|i| (i.status.to_string(), i.ttl))
            .collect();
        assert_eq!(seen, [("STARTING".to_string(), 20 * SECOND)]);
        assert_eq!(store.services(&c("ns")).unwrap(), [Arc::<str>::from("s2")]);
    }

    #[test]
    fn limits_are_checked_in_order() {
        let (store, _) = store(None);
        let mut long = instance("a", &"s".repeat(65), "UP", 10);
        long.endpoint.value = "v".repeat(129);
        assert_eq!(
            store.register(&c("ns"), long).unwrap_err(),
            Error::limit(LimitError::ServiceName)
        );
        let mut long_status = instance("a", "s", &"S".repeat(33), 10);
        long_status.metadata = Some(
            serde_json::value::RawValue::from_string(format!("\"{}\"", "m".repeat(1023)))
                .unwrap()
                .into(),
        );
        assert_eq!(
            store.register(&c("ns"), long_status).unwrap_err(),
            Error::limit(LimitError::Status)
        );
    }

    #[test]
    fn re_registrations_racing_the_reaper_are_kept() {
        let (store, clock) = store(None);
        for i in 0..400 {
            store
                .register(&c("ns"), instance(&format!("i{i}"), "s", "UP", 10))
                .unwrap();
        }
        // Everything is now expired, and nothing has been reaped yet.
        clock.advance(11 * SECOND);
        let reaper = {
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..2_000 {
                    store.expire_due();
                }
            })
        };
        // Meanwhile four clients register their instances again and renew them.
        let clients: Vec<_> = (0..4)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for i in (t..400).step_by(4) {
                        let id = format!("i{i}");
                        store
                            .register(&c("ns"), instance(&id, "s", "UP", 10))
                            .unwrap();
                        store.heartbeat(&c("ns"), &id).unwrap();
                    }
                })
            })
            .collect();
        for client in clients {
            client.join().unwrap();
        }
        reaper.join().unwrap();
        store.expire_due();
        // The old registrations expired; the new ones, all live until +21s, must all be there.
        assert_eq!(ids(&store, "ns", None).len(), 400);
        let count = store.find("ns").unwrap().count.load(Ordering::SeqCst);
        assert_eq!(count, 400, "the count matches the entries");
    }

    #[test]
    fn records_list_live_instances_with_their_lease_and_tombstones() {
        let clock = Arc::new(ManualClock::default());
        let config = MemoryConfig {
            ttl: TtlPolicy {
                default: 30 * SECOND,
                min: 10 * SECOND,
                max: 600 * SECOND,
            },
            capacity: None,
            node_id: 1,
            tombstone_retention: Some(600 * SECOND),
        };
        let store = MemoryStore::new(config, clock.clone());
        let endpoint = |v: &str| Endpoint {
            kind: EndpointType::Tcp,
            value: v.into(),
        };
        let kept = Instance::new("kept", "s", endpoint("a:1"), UP, 30 * SECOND);
        let gone = Instance::new("gone", "s", endpoint("a:2"), UP, 30 * SECOND);
        store.register(&c("ns"), kept).unwrap();
        store.register(&c("ns"), gone).unwrap();
        store.deregister(&c("ns"), "gone").unwrap();
        clock.advance(5 * SECOND);
        assert_eq!(store.namespaces().unwrap(), vec![Arc::<str>::from("ns")]);
        let mut live = 0;
        let mut tombstones = 0;
        for record in store.records("ns").unwrap() {
            match record {
                Record::Live {
                    instance,
                    remaining,
                } => {
                    live += 1;
                    assert_eq!(&*instance.id, "kept");
                    assert_eq!(remaining, Some(25 * SECOND));
                }
                Record::Tombstone(t) => {
                    tombstones += 1;
                    assert_eq!(&*t.id, "gone");
                }
            }
        }
        assert_eq!((live, tombstones), (1, 1));
        assert!(store.records("unknown").unwrap().is_empty());
        // Digests read ids and versions only; repairs read one record at a time.
        let mut versions = store.versions("ns").unwrap();
        versions.sort();
        let by_record: Vec<(Arc<str>, Version)> = {
            let mut all: Vec<(Arc<str>, Version)> = store
                .records("ns")
                .unwrap()
                .iter()
                .map(|r| match r {
                    Record::Live { instance, .. } => (instance.id.clone(), instance.version),
                    Record::Tombstone(t) => (t.id.clone(), t.version),
                })
                .collect();
            all.sort();
            all
        };
        assert_eq!(versions, by_record);
        assert!(matches!(
            store.record("ns", "kept").unwrap(),
            Some(Record::Live { remaining: Some(r), .. }) if r == 25 * SECOND
        ));
        assert!(matches!(
            store.record("ns", "gone").unwrap(),
            Some(Record::Tombstone(t)) if &*t.id == "gone"
        ));
        assert!(store.record("ns", "never").unwrap().is_none());
        clock.advance(30 * SECOND);
        assert!(
            store.record("ns", "kept").unwrap().is_none(),
            "an expired instance is no record to send"
        );
        assert!(store.versions("unknown").unwrap().is_empty());
    }
}
