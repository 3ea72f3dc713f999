//! The in-memory store: per namespace, a fixed number of lock-protected shards keyed by instance id.
//!
//! Each shard indexes its instances by id and by service, so register, heartbeat, deregister and a
//! lookup by id lock one shard, and listing a service costs the shard count plus that service's
//! instances. A namespace's instance count is an atomic, raised with a compare-and-swap against the
//! capacity while the shard lock of the id being added is held.
//!
//! Expiry is exact: every entry carries its deadline on the monotonic clock, and every read and
//! write treats an entry past it as absent. A reaper thread removes such entries (and emits their
//! `Expired` events) every [`REAP_INTERVAL`]; empty namespaces are dropped then or on the write
//! that emptied them, so reads of unknown namespaces never create state.
//!
//! Locks: the namespace map's `RwLock` is held (shared) by a registration while it inserts, and
//! exclusively while an empty namespace is dropped, so an insert can never land in a namespace
//! that was just dropped. Shard locks are `std::sync::Mutex`es held for a few hash-map operations,
//! never across I/O; they are safe to take on a `may` worker.

use super::instance::{Instance, TtlPolicy, UP};
use super::store::{Change, ChangeKind, Clock, Listener, Snapshot, Store, StoreError};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

/// Shards per namespace. A power of two well above the core counts this runs on.
const SHARDS_PER_NAMESPACE: usize = 16;
/// How often the reaper removes expired instances; the contract asks for "within a second".
pub const REAP_INTERVAL: Duration = Duration::from_millis(250);

/// Store-wide settings.
#[derive(Clone, Copy, Debug)]
pub struct MemoryConfig {
    pub ttl: TtlPolicy,
    /// Most instances per namespace; `None` is unlimited.
    pub capacity: Option<usize>,
}

struct Entry {
    /// Shared with change events (the Eureka change log keeps them for minutes): a heartbeat
    /// updates its atomic timestamp in place, a modification replaces the whole `Arc`.
    instance: Arc<Instance>,
    /// Monotonic nanoseconds after which the entry is expired; `None` never expires.
    deadline: Option<u64>,
}

impl Entry {
    fn live(&self, now: u64) -> bool {
        self.deadline.is_none_or(|d| now <= d)
    }
}

struct Shard {
    /// id → service, to find an entry by id alone.
    service_of: HashMap<Arc<str>, Arc<str>>,
    /// service → id → entry.
    services: HashMap<Arc<str>, HashMap<Arc<str>, Entry>>,
    /// No entry expires before this (monotonic nanoseconds), so the reaper can skip the shard
    /// until then. Heartbeats only move deadlines later, so they never need to lower it.
    earliest_deadline: u64,
}

impl Default for Shard {
    fn default() -> Self {
        Shard {
            service_of: HashMap::new(),
            services: HashMap::new(),
            earliest_deadline: u64::MAX,
        }
    }
}

impl Shard {
    fn note_deadline(&mut self, deadline: Option<u64>) {
        if let Some(deadline) = deadline {
            self.earliest_deadline = self.earliest_deadline.min(deadline);
        }
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Entry> {
        let service = self.service_of.get(id)?;
        self.services.get_mut(service)?.get_mut(id)
    }

    fn remove(&mut self, id: &str) -> Option<Entry> {
        let service = self.service_of.remove(id)?;
        let instances = self.services.get_mut(&service)?;
        let entry = instances.remove(id);
        if instances.is_empty() {
            self.services.remove(&service);
        }
        entry
    }

    fn insert(&mut self, entry: Entry) {
        self.note_deadline(entry.deadline);
        let id = entry.instance.id.clone();
        let service = entry.instance.service_name.clone();
        self.service_of.insert(id.clone(), service.clone());
        self.services.entry(service).or_default().insert(id, entry);
    }
}

struct Namespace {
    name: Arc<str>,
    shards: Box<[Mutex<Shard>]>,
    /// Instances stored, live or expired-not-yet-reaped.
    count: AtomicUsize,
}

impl Namespace {
    fn new(name: &str) -> Namespace {
        Namespace {
            name: name.into(),
            shards: (0..SHARDS_PER_NAMESPACE)
                .map(|_| Mutex::new(Shard::default()))
                .collect(),
            count: AtomicUsize::new(0),
        }
    }

    fn shard(&self, id: &str) -> MutexGuard<'_, Shard> {
        let mut hasher = DefaultHasher::new();
        id.hash(&mut hasher);
        let index = hasher.finish() as usize % SHARDS_PER_NAMESPACE;
        lock(&self.shards[index])
    }
}

/// A poisoned lock only means another thread panicked while holding it; the maps it guards are
/// left consistent by every operation here (no operation panics half-way), so keep going.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What an insert did: the stored instance, the kind of change and its version, and the instance
/// it replaced.
type Inserted = (Arc<Instance>, ChangeKind, u64, Option<Arc<Instance>>);

/// The in-memory backend.
pub struct MemoryStore {
    config: MemoryConfig,
    clock: Arc<dyn Clock>,
    namespaces: RwLock<HashMap<Arc<str>, Arc<Namespace>>>,
    listeners: RwLock<Vec<Listener>>,
    version: AtomicU64,
}

impl MemoryStore {
    pub fn new(config: MemoryConfig, clock: Arc<dyn Clock>) -> MemoryStore {
        MemoryStore {
            config,
            clock,
            namespaces: RwLock::new(HashMap::new()),
            listeners: RwLock::new(Vec::new()),
            version: AtomicU64::new(0),
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

    /// Removes every expired instance, emits its `Expired` event and drops emptied namespaces.
    pub fn expire_due(&self) {
        let namespaces: Vec<Arc<Namespace>> = self
            .namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for namespace in namespaces {
            self.expire_namespace(&namespace);
            self.drop_if_empty(&namespace);
        }
    }

    fn expire_namespace(&self, namespace: &Namespace) {
        let now = self.clock.monotonic_nanos();
        for shard in namespace.shards.iter() {
            let mut expired = Vec::new();
            {
                let mut shard = lock(shard);
                if now <= shard.earliest_deadline {
                    continue;
                }
                let mut due: Vec<Arc<str>> = Vec::new();
                let mut earliest = u64::MAX;
                for entry in shard.services.values().flat_map(|m| m.values()) {
                    match entry.deadline {
                        Some(d) if now > d => due.push(entry.instance.id.clone()),
                        Some(d) => earliest = earliest.min(d),
                        None => {}
                    }
                }
                shard.earliest_deadline = earliest;
                for id in due {
                    if let Some(entry) = shard.remove(&id) {
                        namespace.count.fetch_sub(1, Ordering::SeqCst);
                        expired.push((entry.instance, self.next_version()));
                    }
                }
            }
            for (instance, version) in expired {
                self.emit(namespace, instance, ChangeKind::Expired, version);
            }
        }
    }

    fn drop_if_empty(&self, namespace: &Arc<Namespace>) {
        if namespace.count.load(Ordering::SeqCst) != 0 {
            return;
        }
        let mut map = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
        // Registrations insert while holding the map shared, so under the exclusive lock the
        // count cannot change.
        if namespace.count.load(Ordering::SeqCst) == 0 {
            if let Some(current) = map.get(&namespace.name) {
                if Arc::ptr_eq(current, namespace) {
                    map.remove(&namespace.name);
                }
            }
        }
    }

    fn find(&self, namespace: &str) -> Option<Arc<Namespace>> {
        self.namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(namespace)
            .cloned()
    }

    /// The version of a change, taken while the shard lock that orders it is held, so that the
    /// versions of two changes of one instance follow the order in which they happened (the
    /// events themselves may reach listeners in another order).
    fn next_version(&self) -> u64 {
        self.version.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn emit(&self, namespace: &Namespace, instance: Arc<Instance>, kind: ChangeKind, version: u64) {
        let change = Change {
            namespace: namespace.name.clone(),
            instance,
            kind,
            version,
            at: self.clock.monotonic_nanos(),
        };
        for listener in self
            .listeners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            listener(&change);
        }
    }

    fn deadline(&self, instance: &Instance, now: u64) -> Option<u64> {
        if instance.never_expires() {
            None
        } else {
            Some(now.saturating_add(instance.ttl.as_nanos().min(u64::MAX as u128) as u64))
        }
    }

    /// Inserts into a namespace that the caller keeps alive by holding the map shared.
    fn insert(
        &self,
        namespace: &Namespace,
        mut instance: Instance,
    ) -> Result<Inserted, StoreError> {
        let now = self.clock.monotonic_nanos();
        let mut shard = namespace.shard(&instance.id);
        let existing_live = shard.get_mut(&instance.id).map(|e| e.live(now));
        let kind = match existing_live {
            Some(true) => ChangeKind::Replaced,
            Some(false) => ChangeKind::Registered,
            None => {
                let admitted = match self.config.capacity {
                    None => {
                        namespace.count.fetch_add(1, Ordering::SeqCst);
                        true
                    }
                    Some(capacity) => namespace
                        .count
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                            (n < capacity).then_some(n + 1)
                        })
                        .is_ok(),
                };
                if !admitted {
                    return Err(StoreError::CapacityExceeded);
                }
                ChangeKind::Registered
            }
        };
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
        let deadline = self.deadline(&instance, now);
        let instance = Arc::new(instance);
        shard.insert(Entry {
            instance: instance.clone(),
            deadline,
        });
        Ok((instance, kind, self.next_version(), previous))
    }

    fn try_register(
        &self,
        namespace: &str,
        instance: Instance,
    ) -> Result<Arc<Instance>, StoreError> {
        loop {
            {
                let map = self.namespaces.read().unwrap_or_else(|e| e.into_inner());
                if let Some(ns) = map.get(namespace) {
                    let (stored, kind, version, previous) = self.insert(ns, instance)?;
                    let ns = ns.clone();
                    drop(map);
                    if let Some(previous) = previous {
                        // Defensive: neither id scheme lets an id change service, but if one
                        // did, the old service must hear that the instance left it.
                        if previous.service_name != stored.service_name {
                            self.emit(&ns, previous, ChangeKind::Deregistered, version);
                        }
                    }
                    self.emit(&ns, stored.clone(), kind, version);
                    return Ok(stored);
                }
            }
            let mut map = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
            map.entry(Arc::from(namespace))
                .or_insert_with(|| Arc::new(Namespace::new(namespace)));
        }
    }
}

impl Store for MemoryStore {
    fn register(
        &self,
        namespace: &str,
        mut instance: Instance,
    ) -> Result<Arc<Instance>, StoreError> {
        instance.check_limits().map_err(StoreError::Limit)?;
        instance.ttl = self.config.ttl.clamp(instance.ttl);
        match self.try_register(namespace, instance.clone()) {
            Err(StoreError::CapacityExceeded) => {
                // Expired-but-not-reaped instances still count; reap this namespace and retry
                // once, so capacity is judged on live instances only.
                if let Some(ns) = self.find(namespace) {
                    self.expire_namespace(&ns);
                }
                self.try_register(namespace, instance)
            }
            other => other,
        }
    }

    fn heartbeat(&self, namespace: &str, id: &str) -> Result<(), StoreError> {
        let ns = self.find(namespace).ok_or(StoreError::NotFound)?;
        let now = self.clock.monotonic_nanos();
        let unix_now = self.clock.unix_nanos();
        let mut shard = ns.shard(id);
        let entry = shard.get_mut(id).ok_or(StoreError::NotFound)?;
        if !entry.live(now) {
            return Err(StoreError::NotFound);
        }
        entry.instance.last_heartbeat.set(unix_now);
        if entry.deadline.is_some() {
            entry.deadline = self.deadline(&entry.instance, now);
        }
        Ok(())
    }

    fn deregister(&self, namespace: &str, id: &str) -> Result<(), StoreError> {
        let ns = self.find(namespace).ok_or(StoreError::NotFound)?;
        let now = self.clock.monotonic_nanos();
        let removed = {
            let mut shard = ns.shard(id);
            match shard.get_mut(id) {
                Some(entry) if entry.live(now) => {
                    shard.remove(id).map(|e| (e, self.next_version()))
                }
                _ => None,
            }
        };
        let (entry, version) = removed.ok_or(StoreError::NotFound)?;
        ns.count.fetch_sub(1, Ordering::SeqCst);
        self.emit(&ns, entry.instance, ChangeKind::Deregistered, version);
        self.drop_if_empty(&ns);
        Ok(())
    }

    fn modify(
        &self,
        namespace: &str,
        id: &str,
        edit: &mut dyn FnMut(&mut Instance) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let ns = self.find(namespace).ok_or(StoreError::NotFound)?;
        let now = self.clock.monotonic_nanos();
        let unix_now = self.clock.unix_nanos();
        let snapshot = {
            let mut shard = ns.shard(id);
            let entry = shard.get_mut(id).ok_or(StoreError::NotFound)?;
            if !entry.live(now) {
                return Err(StoreError::NotFound);
            }
            let mut changed = (*entry.instance).clone();
            edit(&mut changed)?;
            // The id and the service index the entry: an edit cannot move it.
            changed.id = entry.instance.id.clone();
            changed.service_name = entry.instance.service_name.clone();
            changed.check_metadata_limit().map_err(StoreError::Limit)?;
            changed.last_heartbeat.set(unix_now);
            changed.updated_unix_nanos = unix_now;
            changed.modified = true;
            if changed.status == UP && changed.service_up_unix_nanos == 0 {
                changed.service_up_unix_nanos = unix_now;
            }
            entry.deadline = self.deadline(&changed, now);
            let deadline = entry.deadline;
            entry.instance = Arc::new(changed);
            let snapshot = entry.instance.clone();
            // An instance leaving OUT_OF_SERVICE gets a deadline again.
            shard.note_deadline(deadline);
            (snapshot, self.next_version())
        };
        self.emit(&ns, snapshot.0, ChangeKind::Modified, snapshot.1);
        Ok(())
    }

    fn get(&self, namespace: &str, id: &str) -> Option<Arc<Instance>> {
        let ns = self.find(namespace)?;
        let now = self.clock.monotonic_nanos();
        let mut shard = ns.shard(id);
        let entry = shard.get_mut(id)?;
        entry.live(now).then(|| entry.instance.clone())
    }

    fn snapshot(&self, namespace: &str, service: Option<&str>) -> Result<Snapshot, StoreError> {
        let mut snapshot = Snapshot::default();
        let Some(ns) = self.find(namespace) else {
            return Ok(snapshot);
        };
        let now = self.clock.monotonic_nanos();
        for shard in ns.shards.iter() {
            let shard = lock(shard);
            let mut take = |entries: &HashMap<Arc<str>, Entry>| {
                for entry in entries.values().filter(|e| e.live(now)) {
                    if let Some(d) = entry.deadline {
                        snapshot.stale_after = Some(snapshot.stale_after.map_or(d, |e| e.min(d)));
                    }
                    snapshot.instances.push(entry.instance.clone());
                }
            };
            match service {
                Some(name) => {
                    if let Some(entries) = shard.services.get(name) {
                        take(entries);
                    }
                }
                None => shard.services.values().for_each(&mut take),
            }
        }
        Ok(snapshot)
    }

    fn expire(&self, namespace: &str) {
        if let Some(ns) = self.find(namespace) {
            self.expire_namespace(&ns);
            self.drop_if_empty(&ns);
        }
    }

    fn services(&self, namespace: &str) -> Result<Vec<Arc<str>>, StoreError> {
        let Some(ns) = self.find(namespace) else {
            return Ok(Vec::new());
        };
        let now = self.clock.monotonic_nanos();
        let mut names: Vec<Arc<str>> = Vec::new();
        for shard in ns.shards.iter() {
            let shard = lock(shard);
            for (name, entries) in &shard.services {
                if entries.values().any(|e| e.live(now)) {
                    names.push(name.clone());
                }
            }
        }
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    fn subscribe(&self, listener: Listener) {
        self.listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::instance::{Endpoint, EndpointType, LimitError};

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

    fn store(capacity: Option<usize>) -> (Arc<MemoryStore>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::default());
        let config = MemoryConfig {
            ttl: TtlPolicy {
                default: 30 * SECOND,
                min: 10 * SECOND,
                max: 600 * SECOND,
            },
            capacity,
        };
        (Arc::new(MemoryStore::new(config, clock.clone())), clock)
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
            .snapshot(ns, service)
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
        let stored = store.register("ns", instance("a", "s", "UP", 10)).unwrap();
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
        assert_eq!(store.heartbeat("ns", "a"), Err(StoreError::NotFound));
        assert_eq!(store.deregister("ns", "a"), Err(StoreError::NotFound));
        assert!(store.services("ns").unwrap().is_empty());
    }

    #[test]
    fn heartbeats_move_the_deadline() {
        let (store, clock) = store(None);
        store.register("ns", instance("a", "s", "UP", 10)).unwrap();
        for _ in 0..5 {
            clock.advance(9 * SECOND);
            store.heartbeat("ns", "a").unwrap();
        }
        assert_eq!(ids(&store, "ns", Some("s")), ["a"]);
    }

    #[test]
    fn out_of_service_never_expires() {
        let (store, clock) = store(None);
        store
            .register("ns", instance("oos", "s", "OUT_OF_SERVICE", 10))
            .unwrap();
        store
            .register("ns", instance("st", "s", "STARTING", 10))
            .unwrap();
        clock.advance(3600 * SECOND);
        store.expire_due();
        assert_eq!(ids(&store, "ns", Some("s")), ["oos"]);
    }

    #[test]
    fn reaper_finds_an_instance_that_left_out_of_service() {
        let (store, clock) = store(None);
        store
            .register("ns", instance("a", "s", "OUT_OF_SERVICE", 10))
            .unwrap();
        store.register("ns", instance("b", "s", "UP", 60)).unwrap();
        clock.advance(20 * SECOND);
        store.expire_due();
        store
            .modify("ns", "a", &mut |i| {
                i.status = crate::registry::instance::Status::new("UP");
                Ok(())
            })
            .unwrap();
        clock.advance(11 * SECOND);
        store.expire_due();
        assert_eq!(ids(&store, "ns", None), ["b"]);
        assert_eq!(
            store.namespaces.read().unwrap()["ns"]
                .count
                .load(Ordering::SeqCst),
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
        store.register("ns", instance("a", "s", "UP", 10)).unwrap();
        clock.advance(11 * SECOND);
        store.expire_due();
        assert_eq!(
            *lock(&seen),
            [
                ("a".to_string(), ChangeKind::Registered),
                ("a".to_string(), ChangeKind::Expired)
            ]
        );
        assert!(store.namespaces.read().unwrap().is_empty());
    }

    #[test]
    fn capacity_counts_new_ids_only() {
        let (store, clock) = store(Some(2));
        store.register("ns", instance("a", "s", "UP", 10)).unwrap();
        store.register("ns", instance("b", "s", "UP", 10)).unwrap();
        assert_eq!(
            store
                .register("ns", instance("c", "s", "UP", 10))
                .unwrap_err(),
            StoreError::CapacityExceeded
        );
        store.register("ns", instance("b", "s", "UP", 10)).unwrap();
        store
            .register("other", instance("c", "s", "UP", 10))
            .unwrap();
        store.deregister("ns", "a").unwrap();
        store.register("ns", instance("c", "s", "UP", 10)).unwrap();
        // An expired instance frees its slot at once, before the reaper runs.
        clock.advance(11 * SECOND);
        store.register("ns", instance("d", "s", "UP", 10)).unwrap();
    }

    #[test]
    fn reads_of_unknown_namespaces_create_nothing() {
        let (store, _) = store(None);
        assert!(ids(&store, "nobody", None).is_empty());
        assert!(store.services("nobody").unwrap().is_empty());
        assert_eq!(store.heartbeat("nobody", "x"), Err(StoreError::NotFound));
        assert!(store.namespaces.read().unwrap().is_empty());
    }

    #[test]
    fn re_registration_replaces_everything() {
        let (store, _) = store(None);
        store.register("ns", instance("a", "s1", "UP", 10)).unwrap();
        store
            .register("ns", instance("a", "s2", "STARTING", 20))
            .unwrap();
        assert!(ids(&store, "ns", Some("s1")).is_empty());
        let seen: Vec<(String, Duration)> = store
            .snapshot("ns", Some("s2"))
            .unwrap()
            .instances
            .iter()
            .map(|i| (i.status.to_string(), i.ttl))
            .collect();
        assert_eq!(seen, [("STARTING".to_string(), 20 * SECOND)]);
        assert_eq!(store.services("ns").unwrap(), [Arc::<str>::from("s2")]);
    }

    #[test]
    fn limits_are_checked_in_order() {
        let (store, _) = store(None);
        let mut long = instance("a", &"s".repeat(65), "UP", 10);
        long.endpoint.value = "v".repeat(129);
        assert_eq!(
            store.register("ns", long).unwrap_err(),
            StoreError::Limit(LimitError::ServiceName)
        );
        let mut long_status = instance("a", "s", &"S".repeat(33), 10);
        long_status.metadata = Some(
            serde_json::value::RawValue::from_string(format!("\"{}\"", "m".repeat(1023))).unwrap(),
        );
        assert_eq!(
            store.register("ns", long_status).unwrap_err(),
            StoreError::Limit(LimitError::Status)
        );
    }

    #[test]
    fn re_registrations_racing_the_reaper_are_kept() {
        let (store, clock) = store(None);
        for i in 0..400 {
            store
                .register("ns", instance(&format!("i{i}"), "s", "UP", 10))
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
                        store.register("ns", instance(&id, "s", "UP", 10)).unwrap();
                        store.heartbeat("ns", &id).unwrap();
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
}
