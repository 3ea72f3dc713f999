//! The domain façade every handler calls instead of the store: it owns the store, the change
//! index, and the point where read-only catalogs will join reads.
//!
//! Handlers of both protocols go through [`Registry`]; none calls a store directly. Reads that
//! catalogs extend (snapshots, service names, lookups, the Eureka change log's counts) pass here,
//! so a catalog plugs in by merging its `Arc` snapshot into these answers and by moving the change
//! index of the namespaces it changes.

use super::index::ChangeIndex;
use super::instance::Instance;
use super::store::{Call, ChangeLog, Clock, Listener, Lookup, Result, Snapshot, Store};
use std::collections::HashSet;
use std::sync::Arc;

/// The registry as the protocols see it.
pub struct Registry {
    store: Arc<dyn Store>,
    index: Arc<ChangeIndex>,
}

impl Registry {
    /// A registry over `store`; the change index follows the store's events.
    pub fn new(store: Arc<dyn Store>) -> Registry {
        let index = Arc::new(ChangeIndex::default());
        let follower = index.clone();
        store.subscribe(Box::new(move |change| {
            follower.changed(&change.namespace, &[&change.instance.service_name]);
        }));
        Registry { store, index }
    }

    /// Registers (or registers again) an instance; see [`Store::register`].
    pub fn register(&self, call: &Call, instance: Instance) -> Result<Arc<Instance>> {
        self.store.register(call, instance)
    }

    /// Renews a lease; `NotFound` for an unknown or expired id.
    pub fn heartbeat(&self, call: &Call, id: &str) -> Result<()> {
        self.store.heartbeat(call, id)
    }

    /// Removes an instance; `NotFound` for an unknown or expired id.
    pub fn deregister(&self, call: &Call, id: &str) -> Result<()> {
        self.store.deregister(call, id)
    }

    /// Changes a live instance; see [`Store::modify`].
    pub fn modify(
        &self,
        call: &Call,
        id: &str,
        edit: &mut dyn FnMut(&mut Instance) -> Result<()>,
    ) -> Result<()> {
        self.store.modify(call, id, edit)
    }

    /// The live instance with this id.
    pub fn get(&self, call: &Call, id: &str) -> Result<Option<Arc<Instance>>> {
        self.store.get(call, id)
    }

    /// The live instances of the namespace or of one service.
    pub fn snapshot(&self, call: &Call, service: Option<&str>) -> Result<Snapshot> {
        self.store.snapshot(call, service)
    }

    /// The live instances a secondary index finds.
    pub fn lookup(&self, call: &Call, lookup: Lookup) -> Result<Vec<Arc<Instance>>> {
        self.store.lookup(call, lookup)
    }

    /// Names of the services with a live instance, sorted.
    pub fn services(&self, call: &Call) -> Result<Vec<Arc<str>>> {
        self.store.services(call)
    }

    /// The Eureka change log of the namespace, after removing what expired, so an instance that
    /// left the full list is already `DELETED` here.
    pub fn change_log(&self, call: &Call) -> Result<ChangeLog> {
        self.store.expire(call)?;
        self.store.change_log(call)
    }

    /// `versions__delta` of the namespace.
    pub fn change_log_version(&self, call: &Call) -> Result<u64> {
        self.store.change_log_version(call)
    }

    /// The change index of the namespace.
    pub fn namespace_index(&self, namespace: &str) -> u64 {
        self.index.namespace(namespace)
    }

    /// The change index of one service.
    pub fn service_index(&self, namespace: &str, service: &str) -> u64 {
        self.index.service(namespace, service)
    }

    /// The change index itself, for the caches keyed on it.
    pub fn change_index(&self) -> Arc<ChangeIndex> {
        self.index.clone()
    }

    /// Adds a consumer of the store's change events (response caches).
    pub fn subscribe(&self, listener: Listener) {
        self.store.subscribe(listener);
    }

    pub fn clock(&self) -> &dyn Clock {
        self.store.clock()
    }

    /// Forgets the change index of namespaces and services that have nothing left; run every so
    /// often.
    pub fn forget_empty(&self) {
        let mut live: HashSet<(Arc<str>, Option<Arc<str>>)> = HashSet::new();
        for namespace in self.index.namespaces() {
            let call = Call::new(&namespace);
            let Ok(services) = self.store.services(&call) else {
                return;
            };
            if services.is_empty() {
                continue;
            }
            for service in services {
                live.insert((namespace.clone(), Some(service)));
            }
            live.insert((namespace, None));
        }
        self.index.retain(|namespace, service| {
            live.contains(&(Arc::from(namespace), service.map(Arc::from)))
        });
    }
}
