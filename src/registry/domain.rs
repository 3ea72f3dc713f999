//! The domain façade every handler calls instead of the store: it owns the store, the change
//! index, and the point where read-only catalogs join reads.
//!
//! Handlers of both protocols go through [`Registry`]; none calls a store directly. Reads that
//! catalogs extend (snapshots, service names, lookups, the Eureka change log's counts) pass here:
//! the store's instances come first and the published catalog instances follow, an id listed
//! once, so a registered instance hides a catalog one with its id (catalogs contract §6). Writes
//! go to the store only, which does not know catalog ids: they answer as for an unknown id. A
//! catalog's changes move the change index of the namespaces it changes and wake their watchers,
//! as the store's do.
//!
//! It also counts what the store did, for metrics: the operations that succeeded and the calls
//! the backend failed.

use super::error::ErrorKind;
use super::index::ChangeIndex;
use super::instance::Instance;
use super::instance::MAX_SERVICE_NAME_BYTES;
use super::store::{
    Call, ChangeKind, ChangeLog, Clock, Listener, Lookup, Origin, Result, Snapshot, Store,
};
use super::watch::{Wake, Watches};
use crate::catalogs::{append_visible, Catalogs};
use crate::metrics::Striped;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the registry counts of its store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreCount {
    Registrations,
    Deregistrations,
    Expirations,
    Heartbeats,
    /// Backend calls that failed (unavailable or inconsistent).
    Errors,
}

const STORE_COUNTS: usize = 5;

/// The change index and the watchers, moved together by every change.
struct Changes {
    index: Arc<ChangeIndex>,
    watches: Watches,
}

impl Changes {
    /// `shared`: the namespace's index after the change, from a store that shares its index.
    fn changed(&self, namespace: &Arc<str>, services: &[&Arc<str>], shared: Option<u64>) {
        // The index first: a watcher that registers after its list was taken must see the move.
        self.index.changed_to(namespace, services, shared);
        self.watches.changed(namespace, services);
    }

    /// The store's change feed was down, so changes may have gone unheard: each watched
    /// namespace's index is read again, and its watchers are woken if it moved (or if it cannot
    /// be read, so that they answer rather than wait for what may never be heard).
    fn resync(&self, store: &dyn Store) {
        let namespaces = self.watches.watched_namespaces();
        let indexes = store.shared_indexes(&namespaces);
        for (namespace, shared) in namespaces.iter().zip(indexes) {
            let before = self.index.namespace(namespace);
            match shared {
                Ok(now) if now <= before => {}
                Ok(now) => {
                    self.index.learn(namespace, now, store.cache_generation());
                    self.watches.wake_namespace(namespace);
                }
                Err(_) => self.watches.wake_namespace(namespace),
            }
        }
    }
}

/// A read-only catalog's change of what `namespace` lists. With a store that shares its index,
/// the store moves it (so every node's index stays the store's, and the other nodes' watchers
/// wake too); should that fail, this node's index moves alone, so its own watchers and cached
/// bodies still follow the catalog.
fn catalog_changed(
    store: &dyn Store,
    changes: &Changes,
    namespace: &Arc<str>,
    services: &[&Arc<str>],
) {
    let shared = if store.shares_index() {
        store
            .move_shared_index(&Call::new(namespace), services)
            .ok()
    } else {
        None
    };
    changes.changed(namespace, services, shared);
}

/// The registry as the protocols see it.
pub struct Registry {
    store: Arc<dyn Store>,
    changes: Arc<Changes>,
    counts: Arc<Striped>,
    catalogs: Arc<Catalogs>,
    /// The last instance counts of a shared store, and when they were made. A `may` mutex: a
    /// scrape waiting for another's count parks its coroutine, not its worker.
    shared_counts: may::sync::Mutex<Option<(Instant, Result<InstanceCounts>)>>,
}

/// Live instances per namespace.
type InstanceCounts = Vec<(Arc<str>, usize)>;

/// How long the instance counts of a store that shares its state (Redis) are reused: counting
/// takes two commands per namespace, and `/metrics` is open to every client.
const SHARED_COUNTS_REUSE: Duration = Duration::from_secs(1);

impl Registry {
    /// A registry over `store`; the change index and the watchers follow the store's events.
    /// Fails when the thread that wakes watchers cannot be started.
    pub fn new(store: Arc<dyn Store>) -> std::io::Result<Registry> {
        let changes = Arc::new(Changes {
            index: Arc::new(ChangeIndex::default()),
            watches: Watches::start()?,
        });
        let counts = Arc::new(Striped::new(STORE_COUNTS));
        let follower = changes.clone();
        let counter = counts.clone();
        store.subscribe(Box::new(move |change| {
            follower.changed(
                &change.namespace,
                &[&change.instance.service_name],
                change.index,
            );
            // Another node's expiry is counted by the node that reaped it.
            if change.kind == ChangeKind::Expired && change.origin != Origin::SharedStore {
                counter.add(StoreCount::Expirations as usize, 1);
            }
        }));
        let resynced = changes.clone();
        let unheard_from = Arc::downgrade(&store);
        store.subscribe_resync(Box::new(move || {
            if let Some(store) = unheard_from.upgrade() {
                resynced.resync(store.as_ref());
            }
        }));
        let notified = changes.clone();
        let shared = store.clone();
        let catalogs = Arc::new(Catalogs::new(Box::new(move |namespace, services| {
            catalog_changed(shared.as_ref(), &notified, namespace, services);
        })));
        Ok(Registry {
            store,
            changes,
            counts,
            catalogs,
            shared_counts: may::sync::Mutex::new(None),
        })
    }

    /// Counts a successful operation as `what`, and a failed backend call as an error.
    fn counted<T>(&self, what: Option<StoreCount>, result: Result<T>) -> Result<T> {
        match &result {
            Ok(_) => {
                if let Some(what) = what {
                    self.counts.add(what as usize, 1);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Internal) => {
                self.counts.add(StoreCount::Errors as usize, 1);
            }
            Err(_) => {}
        }
        result
    }

    /// How many times the store did `what` since the process started.
    pub fn count(&self, what: StoreCount) -> u64 {
        self.counts.get(what as usize)
    }

    /// The backend's name (`inmem`, `redis`).
    pub fn store_name(&self) -> &'static str {
        self.store.name()
    }

    /// Whether the store answers now (the readiness probe's question).
    pub fn store_answers(&self) -> bool {
        self.store.answers()
    }

    /// The instances held per namespace.
    ///
    /// A shared store's counts (or its failure to give them) are made at most once per
    /// [`SHARED_COUNTS_REUSE`], and concurrent callers share one count: however many clients
    /// scrape, Redis sees one count a second.
    pub fn instance_counts(&self) -> Result<InstanceCounts> {
        if !self.store.shares_index() {
            return self.counted(None, self.store.instance_counts());
        }
        let mut last = self.shared_counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, counts)) = &*last {
            if at.elapsed() < SHARED_COUNTS_REUSE {
                return counts.clone();
            }
        }
        // A failure is reused too: scrapes of a stalled Redis then wait for one deadline, not
        // one each in turn.
        let counts = self.counted(None, self.store.instance_counts());
        *last = Some((Instant::now(), counts.clone()));
        counts
    }

    /// Registers (or registers again) an instance; see [`Store::register`].
    pub fn register(&self, call: &Call, instance: Instance) -> Result<Arc<Instance>> {
        let stored = self.store.register(call, instance);
        self.counted(Some(StoreCount::Registrations), stored)
    }

    /// Registers an unnamed instance under `service_name`; see [`Store::register_named`].
    pub fn register_named(
        &self,
        call: &Call,
        service_name: &str,
        instance: Instance,
    ) -> Result<Arc<Instance>> {
        let stored = self.store.register_named(call, service_name, instance);
        self.counted(Some(StoreCount::Registrations), stored)
    }

    /// Renews a lease; `NotFound` for an unknown or expired id.
    pub fn heartbeat(&self, call: &Call, id: &str) -> Result<()> {
        let renewed = self.store.heartbeat(call, id);
        self.counted(Some(StoreCount::Heartbeats), renewed)
    }

    /// Removes an instance; `NotFound` for an unknown or expired id.
    pub fn deregister(&self, call: &Call, id: &str) -> Result<()> {
        let removed = self.store.deregister(call, id);
        self.counted(Some(StoreCount::Deregistrations), removed)
    }

    /// Changes a live instance; see [`Store::modify`].
    pub fn modify(
        &self,
        call: &Call,
        id: &str,
        edit: &mut dyn FnMut(&mut Instance) -> Result<()>,
    ) -> Result<()> {
        let modified = self.store.modify(call, id, edit);
        self.counted(None, modified)
    }

    /// The read-only catalogs whose instances join every read.
    pub fn catalogs(&self) -> Arc<Catalogs> {
        self.catalogs.clone()
    }

    /// An API request resolved to `namespace` (catalogs that open namespaces on use hear it).
    pub fn namespace_used(&self, namespace: &str) {
        self.catalogs.used(namespace);
    }

    /// The live instance with this id: the store's, else a catalog's.
    pub fn get(&self, call: &Call, id: &str) -> Result<Option<Arc<Instance>>> {
        if let Some(found) = self.counted(None, self.store.get(call, id))? {
            return Ok(Some(found));
        }
        Ok(self
            .catalogs
            .view(call.namespace)
            .and_then(|view| view.get(id).cloned()))
    }

    /// About how many instances the namespace lists, the store's and the catalogs' (see
    /// [`Store::instance_count`]); `None` when the store does not keep its count.
    pub fn instance_count(&self, call: &Call) -> Option<usize> {
        let stored = self.store.instance_count(call)?;
        let catalog = self
            .catalogs
            .view(call.namespace)
            .map_or(0, |view| view.all().len());
        Some(stored + catalog)
    }

    /// The live instances of the namespace or of one service: the store's, then the catalogs'.
    pub fn snapshot(&self, call: &Call, service: Option<&str>) -> Result<Snapshot> {
        let mut snapshot = self.counted(None, self.store.snapshot(call, service))?;
        if let Some(view) = self.catalogs.view(call.namespace) {
            match service {
                Some(name) => append_visible(&mut snapshot.instances, view.service(name)),
                None => append_visible(&mut snapshot.instances, view.all().iter()),
            }
        }
        Ok(snapshot)
    }

    /// The live instances a secondary index finds, then the catalog instances it matches that
    /// no store instance hides.
    pub fn lookup(&self, call: &Call, lookup: Lookup) -> Result<Vec<Arc<Instance>>> {
        let mut found = self.counted(None, self.store.lookup(call, lookup))?;
        if let Some(view) = self.catalogs.view(call.namespace) {
            let matching: Vec<&Arc<Instance>> =
                view.all().iter().filter(|i| lookup.matches(i)).collect();
            let hidden = self.held_by_store(call, &matching)?;
            found.extend(
                matching
                    .into_iter()
                    .zip(hidden)
                    .filter(|(_, hidden)| !hidden)
                    .map(|(instance, _)| instance.clone()),
            );
        }
        Ok(found)
    }

    /// For each catalog instance, whether the store holds a live instance of its id (which then
    /// hides it). A few are looked up one by one; more with one read of the namespace, so a
    /// store over the network (Redis) is not asked once per catalog instance.
    fn held_by_store(&self, call: &Call, catalog: &[&Arc<Instance>]) -> Result<Vec<bool>> {
        const ONE_BY_ONE: usize = 8;
        if catalog.len() <= ONE_BY_ONE {
            return catalog
                .iter()
                .map(|i| Ok(self.counted(None, self.store.get(call, &i.id))?.is_some()))
                .collect();
        }
        let stored = self.counted(None, self.store.snapshot(call, None))?;
        let ids: HashSet<&str> = stored.instances.iter().map(|i| &*i.id).collect();
        Ok(catalog.iter().map(|i| ids.contains(&*i.id)).collect())
    }

    /// Names of the services with a live instance, in the store or a catalog, sorted.
    pub fn services(&self, call: &Call) -> Result<Vec<Arc<str>>> {
        let mut names = self.counted(None, self.store.services(call))?;
        if let Some(view) = self.catalogs.view(call.namespace) {
            names.extend(view.services().cloned());
            names.sort();
            names.dedup();
        }
        Ok(names)
    }

    /// The Eureka change log of the namespace, after removing what expired, so an instance that
    /// left the full list is already `DELETED` here. Its counts include the catalog instances
    /// the full list shows; catalog changes are not entries (catalogs contract §6).
    pub fn change_log(&self, call: &Call) -> Result<ChangeLog> {
        let expired = self.store.expire(call);
        self.counted(None, expired)?;
        let mut log = self.counted(None, self.store.change_log(call))?;
        if let Some(view) = self.catalogs.view(call.namespace) {
            let listed: Vec<&Arc<Instance>> = view.all().iter().collect();
            let hidden = self.held_by_store(call, &listed)?;
            for (instance, _) in listed.into_iter().zip(hidden).filter(|(_, hidden)| !hidden) {
                let status = instance.status.shared();
                match log.status_counts.iter_mut().find(|(s, _)| s == status) {
                    Some((_, count)) => *count += 1,
                    None => log.status_counts.push((status.clone(), 1)),
                }
            }
            log.status_counts.sort();
        }
        Ok(log)
    }

    /// `versions__delta` of the namespace.
    pub fn change_log_version(&self, call: &Call) -> Result<u64> {
        let version = self.store.change_log_version(call);
        self.counted(None, version)
    }

    /// The change index of the namespace.
    pub fn namespace_index(&self, call: &Call) -> u64 {
        self.learn_shared_index(call);
        self.changes.index.namespace(call.namespace)
    }

    /// The change index of one service.
    pub fn service_index(&self, call: &Call, service: &str) -> u64 {
        self.learn_shared_index(call);
        self.changes.index.service(call.namespace, service)
    }

    /// With a store that shares its index: reads the namespace's index from the store unless
    /// it was read under the store's current cache generation (whose change events have kept it
    /// up to date since). Without a generation (the store's change feed is down) it is read
    /// every time. A failed read leaves this node's value; the request's store calls fail too.
    fn learn_shared_index(&self, call: &Call) {
        if !self.store.shares_index() {
            return;
        }
        let generation = self.store.cache_generation();
        if generation.is_some_and(|g| self.changes.index.is_learned(call.namespace, g)) {
            return;
        }
        let shared = self.counted(None, self.store.shared_index(call));
        if let Ok(shared) = shared {
            // Learned under a generation only if it held throughout the read.
            let held = generation.filter(|&g| self.store.cache_generation() == Some(g));
            self.changes.index.learn(call.namespace, shared, held);
        }
    }

    /// Registers `watcher` for the next change of `service` in `namespace`, or of the whole
    /// namespace when `service` is `None`; it is woken once, off the changing thread. Read the index
    /// again afterwards: a change between the caller's first read and this call may have been
    /// missed, and the caller answers (or wakes the watcher) itself when the index moved.
    pub fn watch(&self, namespace: &str, service: Option<&str>, watcher: Box<dyn Wake>) {
        // No instance can have a longer name: nothing would ever wake it, so it is not kept.
        if service.is_some_and(|s| s.len() > MAX_SERVICE_NAME_BYTES) {
            return;
        }
        self.changes.watches.watch(namespace, service, watcher);
    }

    /// False while a store that shares its index has no working change feed
    /// ([`Store::cache_generation`] is `None`): no change would wake a waiting request then.
    pub fn can_wake_waiters(&self) -> bool {
        !self.store.shares_index() || self.store.cache_generation().is_some()
    }

    /// See [`Store::snapshots_are_local`].
    pub fn snapshots_are_local(&self) -> bool {
        self.store.snapshots_are_local()
    }

    /// Whether responses may be cached now, and under which generation ([`Store::cache_generation`]).
    pub fn cache_generation(&self) -> Option<u64> {
        self.store.cache_generation()
    }

    /// The change index itself, for the caches keyed on it.
    pub fn change_index(&self) -> Arc<ChangeIndex> {
        self.changes.index.clone()
    }

    /// Adds a consumer of the store's change events (response caches).
    pub fn subscribe(&self, listener: Listener) {
        self.store.subscribe(listener);
    }

    pub fn clock(&self) -> &dyn Clock {
        self.store.clock()
    }

    /// Forgets the change index of namespaces and services that have nothing left, and the
    /// entries of watchers that stopped waiting; run every so often.
    pub fn forget_empty(&self) {
        let mut live: HashSet<(Arc<str>, Option<Arc<str>>)> = HashSet::new();
        self.changes.watches.sweep();
        for namespace in self.catalogs.namespaces() {
            if let Some(view) = self.catalogs.view(&namespace) {
                for service in view.services() {
                    live.insert((namespace.clone(), Some(service.clone())));
                }
            }
            live.insert((namespace, None));
        }
        // A namespace whose services cannot be read now keeps everything, and the pass goes on.
        let mut unread: HashSet<Arc<str>> = HashSet::new();
        for namespace in self.changes.index.namespaces() {
            let call = Call::new(&namespace);
            let Ok(services) = self.store.services(&call) else {
                unread.insert(namespace);
                continue;
            };
            if services.is_empty() {
                continue;
            }
            for service in services {
                live.insert((namespace.clone(), Some(service)));
            }
            live.insert((namespace, None));
        }
        self.changes.index.retain(|namespace, service| {
            unread.contains(namespace)
                || live.contains(&(Arc::from(namespace), service.map(Arc::from)))
        });
    }
}
