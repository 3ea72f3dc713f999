//! The change index: per namespace and per service, a number that grows with every change of
//! what they list (registrations, removals, status, tags and metadata changes, catalog updates;
//! never heartbeats) and never goes back while the process runs (observability contract §1.1).
//!
//! Response caches key their bodies on it; blocking queries and `X-A8-Index` read it. Every value
//! comes from one process-wide counter. A namespace's index moves only with its own changes, also
//! while it is empty and forgotten, and never goes back when it comes back:
//!
//! - a forgotten (emptied) namespace leaves a small record of its last index, so it reads exactly
//!   that until it changes again; at most [`MAX_FORGOTTEN_NAMESPACES`] are remembered, and the
//!   oldest record beyond them is folded into a floor;
//! - every other unknown namespace reads a floor, one of [`FLOOR_BUCKETS`] chosen by its name:
//!   the highest index of the records folded into that bucket. So an empty namespace's index
//!   moves only when a record of another namespace of its bucket is folded in (after more than
//!   [`MAX_FORGOTTEN_NAMESPACES`] namespaces emptied, and then for one bucket in
//!   [`FLOOR_BUCKETS`]); memory stays bounded however many names clients cycle through.
//!
//! An unknown service reads its namespace's index (never lower than the service's last one).
//!
//! A store shared by several nodes (Redis) keeps the namespace's index itself, so that every node
//! gives the same index for the same state. Its changes then come with that index, and a node
//! learns the index of a namespace it has heard nothing of by asking the store
//! ([`ChangeIndex::learn`]). Values are never lowered: a shared index that went back (Redis lost
//! the namespace and its clock stepped back too) leaves this node ahead until Redis overtakes it.

use super::keyed_hash::KeyedMap;
use super::small_map::SmallMap;
use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

/// Forgotten namespaces whose last index is remembered one by one (about 100 bytes each).
pub const MAX_FORGOTTEN_NAMESPACES: usize = 4096;
/// Floors that unknown namespaces are spread over by name (8 bytes each).
pub const FLOOR_BUCKETS: usize = 1024;

#[derive(Default)]
struct NamespaceIndex {
    index: u64,
    /// Most namespaces list one service or a few: a short list until they list more.
    services: SmallMap<Arc<str>, u64>,
    /// The shared store's cache generation under which `index` was learned from it: while the
    /// store's generation is the same, its change events have kept `index` up to date.
    learned: Option<u64>,
}

struct Book {
    /// The highest index given out; a change without a shared index gets a higher one.
    counter: u64,
    namespaces: KeyedMap<Arc<str>, NamespaceIndex>,
    /// The last index of recently forgotten namespaces ...
    forgotten: KeyedMap<Arc<str>, u64>,
    /// ... and the same records by index, oldest first.
    forgotten_by_index: BTreeSet<(u64, Arc<str>)>,
    /// The highest index folded into each bucket.
    floors: Vec<u64>,
}

impl Book {
    /// The namespace's entry, made (from its last known index) when the book has none.
    fn entry(&mut self, namespace: &Arc<str>) -> &mut NamespaceIndex {
        if !self.namespaces.contains_key(namespace) {
            let index = self.unknown(namespace);
            self.remembered(namespace);
            self.namespaces.insert(
                namespace.clone(),
                NamespaceIndex {
                    index,
                    ..NamespaceIndex::default()
                },
            );
        }
        self.namespaces
            .get_mut(namespace)
            .expect("the entry was just made")
    }

    fn floor_of(&self, namespace: &str) -> u64 {
        self.floors[bucket(namespace)]
    }

    /// The index of a namespace the book does not hold.
    fn unknown(&self, namespace: &str) -> u64 {
        match self.forgotten.get(namespace) {
            Some(&index) => index,
            None => self.floor_of(namespace),
        }
    }

    fn forget(&mut self, namespace: Arc<str>, index: u64) {
        self.remembered(&namespace);
        self.forgotten_by_index.insert((index, namespace.clone()));
        self.forgotten.insert(namespace, index);
        while self.forgotten.len() > MAX_FORGOTTEN_NAMESPACES {
            let Some((index, oldest)) = self.forgotten_by_index.pop_first() else {
                break;
            };
            self.forgotten.remove(&oldest);
            let floor = &mut self.floors[bucket(&oldest)];
            *floor = (*floor).max(index);
        }
    }

    fn remembered(&mut self, namespace: &str) {
        if let Some((name, index)) = self.forgotten.remove_entry(namespace) {
            self.forgotten_by_index.remove(&(index, name));
        }
    }
}

/// The floor bucket of a namespace: a hash with fixed keys, the same for the process's life.
fn bucket(namespace: &str) -> usize {
    let mut hasher = DefaultHasher::new();
    namespace.hash(&mut hasher);
    (hasher.finish() % FLOOR_BUCKETS as u64) as usize
}

/// The index of every namespace and service.
pub struct ChangeIndex {
    book: Mutex<Book>,
}

impl Default for ChangeIndex {
    fn default() -> Self {
        ChangeIndex {
            book: Mutex::new(Book {
                // The contract's index is at least 1.
                counter: 1,
                namespaces: KeyedMap::default(),
                forgotten: KeyedMap::default(),
                forgotten_by_index: BTreeSet::new(),
                floors: vec![1; FLOOR_BUCKETS],
            }),
        }
    }
}

impl ChangeIndex {
    fn lock(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the index of a namespace and of the services the change touched.
    pub fn changed(&self, namespace: &Arc<str>, services: &[&Arc<str>]) -> u64 {
        self.changed_to(namespace, services, None)
    }

    /// [`ChangeIndex::changed`], for a change that a shared store gave the namespace's index
    /// `shared`: the namespace goes to it (never back), and the services to the namespace's.
    pub fn changed_to(
        &self,
        namespace: &Arc<str>,
        services: &[&Arc<str>],
        shared: Option<u64>,
    ) -> u64 {
        let mut book = self.lock();
        let counter = book.counter;
        let entry = book.entry(namespace);
        let value = match shared {
            Some(shared) => shared.max(entry.index),
            // Above every index given out (so distinct from them all), and above the
            // namespace's own even when that came from a shared store.
            None => (entry.index + 1).max(counter + 1),
        };
        entry.index = value;
        for service in services {
            match entry.services.get_mut(&***service) {
                Some(index) => *index = value,
                None => {
                    entry.services.insert((*service).clone(), value);
                }
            }
        }
        book.counter = counter.max(value);
        value
    }

    /// Takes in the shared store's index of a namespace, read under the store's cache
    /// `generation` (`None` when its change events may have been missed meanwhile). A namespace
    /// the store knows nothing of (`0`) is not added, so reads of names that hold nothing cost
    /// no memory.
    pub fn learn(&self, namespace: &str, shared: u64, generation: Option<u64>) {
        let mut book = self.lock();
        if shared == 0 && !book.namespaces.contains_key(namespace) {
            return;
        }
        book.counter = book.counter.max(shared);
        let entry = book.entry(&Arc::from(namespace));
        if entry.learned != generation || generation.is_none() {
            // Changes of some service may have been missed: every service reads the
            // namespace's index until it changes again (at worst a watcher wakes for nothing).
            entry.services.clear();
        }
        entry.index = entry.index.max(shared);
        entry.learned = generation;
    }

    /// Whether the namespace's index was learned from the shared store under `generation`
    /// (and followed its change events since).
    pub fn is_learned(&self, namespace: &str, generation: u64) -> bool {
        let book = self.lock();
        book.namespaces
            .get(namespace)
            .is_some_and(|entry| entry.learned == Some(generation))
    }

    /// The namespace's index.
    pub fn namespace(&self, namespace: &str) -> u64 {
        let book = self.lock();
        match book.namespaces.get(namespace) {
            Some(entry) => entry.index,
            None => book.unknown(namespace),
        }
    }

    /// The service's index (the namespace's when the service is unknown to it, which is never
    /// lower than the service's last one).
    pub fn service(&self, namespace: &str, service: &str) -> u64 {
        let book = self.lock();
        match book.namespaces.get(namespace) {
            Some(entry) => entry.services.get(service).copied().unwrap_or(entry.index),
            None => book.unknown(namespace),
        }
    }

    /// The namespaces the index holds.
    pub fn namespaces(&self) -> Vec<Arc<str>> {
        self.lock().namespaces.keys().cloned().collect()
    }

    /// Forgets what `keep` says is gone (namespaces and services with nothing left), so names
    /// that clients cycle through do not pile up.
    pub fn retain(&self, keep: impl Fn(&str, Option<&str>) -> bool) {
        let mut book = self.lock();
        let mut gone = Vec::new();
        book.namespaces.retain(|name, entry| {
            if !keep(name, None) {
                gone.push((name.clone(), entry.index));
                return false;
            }
            entry
                .services
                .retain(|service, _| keep(name, Some(service)));
            true
        });
        // Oldest first, so that when many go at once the newest are the ones remembered.
        gone.sort_unstable_by_key(|&(_, index)| index);
        for (name, index) in gone {
            book.forget(name, index);
        }
    }

    /// Namespaces the index holds, and records of forgotten ones.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let book = self.lock();
        (book.namespaces.len(), book.forgotten.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
        assert_eq!(index.counts(), (1, 1));
        assert_eq!(
            index.namespace("a"),
            second,
            "a forgotten namespace reads its last index"
        );
        assert_eq!(index.service("a", "s"), second);
        index.changed(&"b".into(), &[&t]);
        assert_eq!(index.namespace("a"), second);
        assert!(index.namespace("b") > b);
        let back = index.changed(&a, &[&s]);
        assert!(back > second, "a namespace that comes back goes on growing");
        assert_eq!(index.counts(), (2, 0), "its record is dropped");
    }

    #[test]
    fn an_empty_namespace_moves_only_with_its_own_changes() {
        let index = ChangeIndex::default();
        let never_seen = index.namespace("never-seen");
        for n in 0..100 {
            let name: Arc<str> = format!("other-{n}").into();
            index.changed(&name, &[&"s".into()]);
            index.retain(|_, _| false);
            assert_eq!(index.namespace("never-seen"), never_seen);
        }
    }

    #[test]
    fn forgotten_namespaces_are_remembered_within_a_bound_and_never_go_back() {
        let index = ChangeIndex::default();
        let mut last = HashMap::new();
        let names = 2 * MAX_FORGOTTEN_NAMESPACES + 10;
        for n in 0..names {
            let name: Arc<str> = format!("ns-{n}").into();
            last.insert(name.clone(), index.changed(&name, &[]));
            if n % 100 == 99 {
                index.retain(|_, _| false);
            }
        }
        index.retain(|_, _| false);
        let (held, remembered) = index.counts();
        assert_eq!(held, 0);
        assert_eq!(remembered, MAX_FORGOTTEN_NAMESPACES);
        let mut exact = 0;
        for (name, was) in &last {
            let now = index.namespace(name);
            assert!(now >= *was, "{name} went back from {was} to {now}");
            exact += usize::from(now == *was);
        }
        assert!(exact >= MAX_FORGOTTEN_NAMESPACES, "{exact}");
        let newest = format!("ns-{}", names - 1);
        assert_eq!(index.namespace(&newest), last[newest.as_str()]);
    }

    #[test]
    fn a_shared_index_is_taken_as_it_is_and_never_lowered() {
        let index = ChangeIndex::default();
        let (a, s, t): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "s".into(), "t".into());
        let big = 1_796_000_000_000_000;
        assert_eq!(index.changed_to(&a, &[&s], Some(big)), big);
        assert_eq!(index.namespace("a"), big);
        assert_eq!(index.service("a", "s"), big);
        assert_eq!(
            index.changed_to(&a, &[&t], Some(big - 5)),
            big,
            "a lower shared index (events out of order) leaves it where it is"
        );
        assert_eq!(index.service("a", "t"), big);
        assert_eq!(index.changed_to(&a, &[&s], Some(big + 1)), big + 1);
        assert_eq!(index.service("a", "t"), big, "other services do not move");
        let local = index.changed(&a, &[&s]);
        assert_eq!(local, big + 2, "a change without one still moves it");
        assert!(
            index.changed(&"b".into(), &[]) > local,
            "the counter follows"
        );
    }

    #[test]
    fn learning_a_shared_index_adds_no_empty_namespace_and_resets_services_on_a_new_generation() {
        let index = ChangeIndex::default();
        index.learn("empty", 0, Some(1));
        assert_eq!(
            index.counts(),
            (0, 0),
            "nothing held for a namespace the store lacks"
        );
        assert!(!index.is_learned("empty", 1));
        let (a, s): (Arc<str>, Arc<str>) = ("a".into(), "s".into());
        index.learn("a", 500, Some(1));
        assert!(index.is_learned("a", 1));
        assert!(!index.is_learned("a", 2));
        assert_eq!(index.namespace("a"), 500);
        assert_eq!(index.service("a", "s"), 500);
        index.changed_to(&a, &[&s], Some(600));
        index.changed_to(&a, &[&"t".into()], Some(700));
        assert_eq!(index.service("a", "s"), 600);
        index.learn("a", 650, Some(1));
        assert_eq!(index.namespace("a"), 700, "never lowered");
        assert_eq!(
            index.service("a", "s"),
            600,
            "same generation: services kept"
        );
        index.learn("a", 800, Some(2));
        assert_eq!(index.namespace("a"), 800);
        assert_eq!(
            index.service("a", "s"),
            800,
            "a new generation may have missed changes of any service"
        );
        assert!(index.is_learned("a", 2));
    }

    #[test]
    fn namespaces_forgotten_at_the_same_shared_index_are_both_remembered() {
        let index = ChangeIndex::default();
        for name in ["x", "y"] {
            index.changed_to(&Arc::from(name), &[], Some(42));
        }
        index.retain(|_, _| false);
        assert_eq!(index.counts(), (0, 2));
        assert_eq!(index.namespace("x"), 42);
        assert_eq!(index.namespace("y"), 42);
        index.changed_to(&"x".into(), &[], Some(43));
        assert_eq!(index.counts(), (1, 1));
        assert_eq!(index.namespace("y"), 42);
    }
}
