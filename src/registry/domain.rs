//! The domain façade every handler calls instead of the store: it owns the store, the change
//! index, and the point where read-only catalogs join reads.
//!
//! Handlers of both protocols go through [`Registry`]; none calls a store directly. Reads that
//! catalogs extend (snapshots, service names, lookups, the Eureka change log's counts) pass here:
//! the store's instances come first and the published catalog instances follow, an id listed
//! once, so a registered instance hides a catalog one with its id (catalogs contract §6). Writes
//! go to the store only, which does not know catalog ids: they answer as for an unknown id.

use super::index::ChangeIndex;
use super::instance::Instance;
use super::store::{Call, ChangeLog, Clock, Listener, Lookup, Result, Snapshot, Store};
use crate::catalogs::{append_visible, Catalogs};
use std::collections::HashSet;
use std::sync::Arc;

/// The registry as the protocols see it.
pub struct Registry {
    store: Arc<dyn Store>,
    index: Arc<ChangeIndex>,
    catalogs: Arc<Catalogs>,
}

impl Registry {
    /// A registry over `store`; the change index follows the store's events.
    pub fn new(store: Arc<dyn Store>) -> Registry {
        let index = Arc::new(ChangeIndex::default());
        let follower = index.clone();
        store.subscribe(Box::new(move |change| {
            follower.changed(&change.namespace, &[&change.instance.service_name]);
        }));
        let catalogs = Arc::new(Catalogs::new(index.clone()));
        Registry {
            store,
            index,
            catalogs,
        }
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

    /// The read-only catalogs whose instances join every read.
    pub fn catalogs(&self) -> Arc<Catalogs> {
        self.catalogs.clone()
    }

    /// The live instance with this id: the store's, else a catalog's.
    pub fn get(&self, call: &Call, id: &str) -> Result<Option<Arc<Instance>>> {
        if let Some(found) = self.store.get(call, id)? {
            return Ok(Some(found));
        }
        Ok(self
            .catalogs
            .view(call.namespace)
            .and_then(|view| view.get(id).cloned()))
    }

    /// The live instances of the namespace or of one service: the store's, then the catalogs'.
    pub fn snapshot(&self, call: &Call, service: Option<&str>) -> Result<Snapshot> {
        let mut snapshot = self.store.snapshot(call, service)?;
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
        let mut found = self.store.lookup(call, lookup)?;
        if let Some(view) = self.catalogs.view(call.namespace) {
            for instance in view.all().iter().filter(|i| lookup.matches(i)) {
                if self.store.get(call, &instance.id)?.is_none() {
                    found.push(instance.clone());
                }
            }
        }
        Ok(found)
    }

    /// Names of the services with a live instance, in the store or a catalog, sorted.
    pub fn services(&self, call: &Call) -> Result<Vec<Arc<str>>> {
        let mut names = self.store.services(call)?;
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
        self.store.expire(call)?;
        let mut log = self.store.change_log(call)?;
        if let Some(view) = self.catalogs.view(call.namespace) {
            for instance in view.all() {
                if self.store.get(call, &instance.id)?.is_some() {
                    continue;
                }
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
        for namespace in self.catalogs.namespaces() {
            if let Some(view) = self.catalogs.view(&namespace) {
                for service in view.services() {
                    live.insert((namespace.clone(), Some(service.clone())));
                }
            }
            live.insert((namespace, None));
        }
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
