//! The change index: per namespace and per service, a number that grows with every change of
//! what they list (registrations, removals, status, tags and metadata changes, catalog updates;
//! never heartbeats) and never goes back while the process runs (observability contract §1.1).
//!
//! Response caches key their bodies on it; blocking queries and `X-A8-Index` read it. Every value
//! comes from one process-wide counter, so a namespace or service that is forgotten (emptied) and
//! comes back never shows a lower index than before: an unknown namespace reads the highest index
//! ever forgotten (the floor), and an unknown service its namespace's index. The floor moves only
//! when something is forgotten, never with changes of other namespaces, so an empty namespace's
//! index stays put while others change (a watcher of it is not woken by them, §1.2).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct NamespaceIndex {
    index: u64,
    services: HashMap<Arc<str>, u64>,
}

/// The index of every namespace and service.
pub struct ChangeIndex {
    counter: AtomicU64,
    namespaces: Mutex<HashMap<Arc<str>, NamespaceIndex>>,
    /// The highest index of a forgotten namespace (the index of every unknown one); changed
    /// under the `namespaces` lock.
    floor: AtomicU64,
}

impl Default for ChangeIndex {
    fn default() -> Self {
        ChangeIndex {
            // The contract's index is at least 1.
            counter: AtomicU64::new(1),
            namespaces: Mutex::new(HashMap::new()),
            floor: AtomicU64::new(1),
        }
    }
}

impl ChangeIndex {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, NamespaceIndex>> {
        self.namespaces.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the index of a namespace and of the services the change touched.
    pub fn changed(&self, namespace: &Arc<str>, services: &[&Arc<str>]) -> u64 {
        let mut namespaces = self.lock();
        let value = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        let entry = namespaces.entry(namespace.clone()).or_default();
        entry.index = value;
        for service in services {
            match entry.services.get_mut(&***service) {
                Some(index) => *index = value,
                None => {
                    entry.services.insert((*service).clone(), value);
                }
            }
        }
        value
    }

    /// The namespace's index.
    pub fn namespace(&self, namespace: &str) -> u64 {
        match self.lock().get(namespace) {
            Some(entry) => entry.index,
            None => self.floor.load(Ordering::SeqCst),
        }
    }

    /// The service's index (the namespace's when the service is unknown to it, which is never
    /// lower than the service's last one).
    pub fn service(&self, namespace: &str, service: &str) -> u64 {
        match self.lock().get(namespace) {
            Some(entry) => entry.services.get(service).copied().unwrap_or(entry.index),
            None => self.floor.load(Ordering::SeqCst),
        }
    }

    /// The namespaces the index holds.
    pub fn namespaces(&self) -> Vec<Arc<str>> {
        self.lock().keys().cloned().collect()
    }

    /// Forgets what `keep` says is gone (namespaces and services with nothing left), so names
    /// that clients cycle through do not pile up.
    pub fn retain(&self, keep: impl Fn(&str, Option<&str>) -> bool) {
        let mut namespaces = self.lock();
        let mut floor = self.floor.load(Ordering::SeqCst);
        namespaces.retain(|name, entry| {
            if !keep(name, None) {
                floor = floor.max(entry.index);
                return false;
            }
            entry
                .services
                .retain(|service, _| keep(name, Some(service)));
            true
        });
        self.floor.store(floor, Ordering::SeqCst);
    }

    /// Namespaces the index holds.
    #[cfg(test)]
    fn namespace_count(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_grow_per_namespace_and_service_and_never_go_back() {
        let index = ChangeIndex::default();
        assert_eq!(index.namespace("a"), 1);
        let (a, s, t): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "s".into(), "t".into());
        let first = index.changed(&a, &[&s]);
        assert_eq!(index.namespace("a"), first);
        assert_eq!(index.service("a", "s"), first);
        let second = index.changed(&a, &[&t]);
        assert!(second > first);
        assert_eq!(index.service("a", "s"), first, "other services do not move");
        assert_eq!(index.service("a", "t"), second);
        assert_eq!(index.service("a", "unknown"), second);
        index.changed(&"b".into(), &[&s]);
        assert_eq!(
            index.namespace("a"),
            second,
            "other namespaces do not move it"
        );
        let b = index.namespace("b");
        index.retain(|ns, service| ns != "a" && service.is_none_or(|s| s == "s"));
        assert_eq!(index.namespace_count(), 1);
        assert!(
            index.namespace("a") >= second,
            "a forgotten namespace never goes back"
        );
        assert_eq!(
            index.namespace("never-seen"),
            second,
            "unknown namespaces read the highest forgotten index, not other namespaces' changes"
        );
        index.changed(&"b".into(), &[&t]);
        assert_eq!(index.namespace("a"), second);
        assert!(index.namespace("b") > b);
    }
}
