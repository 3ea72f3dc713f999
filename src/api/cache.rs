//! Serialised list bodies, cached per (namespace, service, view) and per (namespace, view) for
//! whole-namespace documents (DESIGN decision 7).
//!
//! A body is keyed on the change index it was built at (the service's index for per-service views,
//! the namespace's for whole-namespace ones): the caller reads the index *before* it reads the
//! store, so a change that lands while a body is built leaves the body under an index that is
//! already behind, and it is never served. A change event also frees the bodies it made stale at
//! once (its service's and the namespace-wide ones), so memory follows what is live.
//!
//! Heartbeats move no index, so a cached body's heartbeat timestamps may lag: by at most
//! [`MAX_AGE`], or eight times the body's build time for bodies that take longer than that to
//! build (a 100 MB listing is not rebuilt every second). A body is also stale once the earliest
//! deadline among its instances has passed, so an expired instance is never served.
//!
//! Concurrent misses of one body build it once: builders take one of [`BUILD_LOCKS`] `may`
//! mutexes (a coroutine waiting for one parks; its worker serves others) and look again before
//! building.

use crate::http::response::CachedBody;
use crate::registry::index::ChangeIndex;
use crate::registry::keyed_hash::{KeyedMap, KeyedState};
use crate::registry::small_map::SmallMap;
use crate::registry::store::Change;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest time a cheap cached body is served, so heartbeat timestamps in it lag by at most this.
pub const MAX_AGE: Duration = Duration::from_secs(1);
/// A body that took `t` to build is served for up to this many times `t` (when more than
/// [`MAX_AGE`]).
const BUILD_TIME_FACTOR: u64 = 8;
/// Locks that serialise the builds of bodies whose keys hash alike.
const BUILD_LOCKS: usize = 64;

/// The response formats of the Eureka API, for views that have one body per format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Xml,
}

/// Which response a body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum View {
    /// `GET /api/v1/services/{name}`.
    Service,
    /// `GET /api/v1/instances?service_name={name}`.
    Instances,
    /// Eureka `GET …/apps/{app}`, JSON or XML.
    EurekaApp(Format),
    /// Eureka `GET …/apps`, JSON or XML (whole namespace).
    EurekaApps(Format),
    /// Eureka `GET …/apps/delta`, JSON or XML (whole namespace).
    EurekaDelta(Format),
    /// The Eureka hash code of the whole namespace.
    EurekaHashCode,
}

const SERVICE_VIEWS: usize = 4;
const NAMESPACE_VIEWS: usize = 5;

impl View {
    /// The slot of a per-service view, or `None` for a whole-namespace view.
    fn service_slot(self) -> Option<usize> {
        match self {
            View::Service => Some(0),
            View::Instances => Some(1),
            View::EurekaApp(Format::Json) => Some(2),
            View::EurekaApp(Format::Xml) => Some(3),
            _ => None,
        }
    }

    fn namespace_slot(self) -> usize {
        match self {
            View::EurekaApps(Format::Json) => 0,
            View::EurekaApps(Format::Xml) => 1,
            View::EurekaDelta(Format::Json) => 2,
            View::EurekaDelta(Format::Xml) => 3,
            _ => 4,
        }
    }

    /// True for the views of one service (keyed on the service's change index).
    pub fn is_per_service(self) -> bool {
        self.service_slot().is_some()
    }
}

struct Cached {
    /// The body, with its gzip form once a client asked for it (spec D40).
    body: Arc<CachedBody>,
    /// The change index it was built at.
    index: u64,
    /// The store's cache generation it was built under.
    generation: u64,
    /// Monotonic nanoseconds until which it may be served.
    fresh_until: u64,
}

/// The bodies of one namespace. Most namespaces have one service or a few read, and many have
/// no whole-namespace body, so the services start as a short list and the whole-namespace slots
/// are made with their first body (a namespace's entry is then about 200 bytes, not 1,000).
#[derive(Default)]
struct NamespaceEntries {
    services: SmallMap<Arc<str>, [Option<Cached>; SERVICE_VIEWS]>,
    whole: Option<Box<[Option<Cached>; NAMESPACE_VIEWS]>>,
}

/// What a body builder returns.
pub enum Built {
    /// A body to answer with and to cache, with the deadline (monotonic nanoseconds) after which
    /// it may show an expired instance (or otherwise go stale).
    Cacheable(Vec<u8>, Option<u64>),
    /// A body to answer with but not to cache: it shows nothing stored (an empty namespace), and
    /// caching it would let clients grow memory by reading namespaces that do not exist.
    Uncacheable(Vec<u8>),
    /// Nothing to answer (an absent service).
    Absent,
}

/// The key of one body.
#[derive(Clone, Copy)]
pub struct Key<'a> {
    pub namespace: &'a str,
    /// Ignored for whole-namespace views.
    pub service: &'a str,
    pub view: View,
}

/// Says whether bodies may be cached now, and under which generation (see
/// `Store::cache_generation`).
pub type Gate = Box<dyn Fn() -> Option<u64> + Send + Sync>;

pub struct ResponseCache {
    index: Arc<ChangeIndex>,
    gate: Gate,
    entries: Mutex<KeyedMap<Arc<str>, NamespaceEntries>>,
    build_locks: Vec<may::sync::Mutex<()>>,
}

impl ResponseCache {
    /// A cache whose bodies are keyed on `index`.
    pub fn new(index: Arc<ChangeIndex>) -> ResponseCache {
        ResponseCache::with_gate(index, Box::new(|| Some(0)))
    }

    /// A cache whose bodies are keyed on `index` and served only while `gate` allows, under the
    /// generation it names (a shared store's change feed may be down, or have missed changes).
    pub fn with_gate(index: Arc<ChangeIndex>, gate: Gate) -> ResponseCache {
        ResponseCache {
            index,
            gate,
            entries: Mutex::new(KeyedMap::default()),
            build_locks: (0..BUILD_LOCKS)
                .map(|_| may::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// The change index a body of `key` depends on, now.
    fn index_of(&self, key: Key) -> u64 {
        if key.view.is_per_service() {
            self.index.service(key.namespace, key.service)
        } else {
            self.index.namespace(key.namespace)
        }
    }

    /// A fresh cached body, or the one `build` makes (at monotonic time `now()`), which is then
    /// cached. Concurrent callers for one key build it once.
    pub fn get_or_build<E>(
        &self,
        key: Key,
        now: &dyn Fn() -> u64,
        build: impl FnOnce() -> Result<Built, E>,
    ) -> Result<Option<Arc<CachedBody>>, E> {
        let Some(generation) = (self.gate)() else {
            // Nothing cached may be trusted now: every request reads the store.
            return Ok(match build()? {
                Built::Cacheable(body, _) | Built::Uncacheable(body) => {
                    Some(Arc::new(CachedBody::new(body)))
                }
                Built::Absent => None,
            });
        };
        if let Some(body) = self.get(key, self.index_of(key), generation, now()) {
            return Ok(Some(body));
        }
        let _building = self.build_lock(key).lock();
        // Read before the store: a change from here on leaves the body behind the index.
        let index = self.index_of(key);
        // Someone else may have built it while this caller waited.
        if let Some(body) = self.get(key, index, generation, now()) {
            return Ok(Some(body));
        }
        let started = now();
        let (body, stale_after) = match build()? {
            Built::Cacheable(body, stale_after) => (body, stale_after),
            Built::Uncacheable(body) => return Ok(Some(Arc::new(CachedBody::new(body)))),
            Built::Absent => return Ok(None),
        };
        let finished = now();
        let took = finished.saturating_sub(started);
        let age = (MAX_AGE.as_nanos() as u64).max(took.saturating_mul(BUILD_TIME_FACTOR));
        let fresh_until = finished
            .saturating_add(age)
            .min(stale_after.unwrap_or(u64::MAX));
        let body = Arc::new(CachedBody::new(body));
        self.put(
            key,
            Cached {
                body: body.clone(),
                index,
                generation,
                fresh_until,
            },
        );
        Ok(Some(body))
    }

    fn build_lock(&self, key: Key) -> &may::sync::Mutex<()> {
        let mut hasher = KeyedState::default().build_hasher();
        key.namespace.hash(&mut hasher);
        if key.view.is_per_service() {
            key.service.hash(&mut hasher);
        }
        key.view.hash(&mut hasher);
        &self.build_locks[hasher.finish() as usize % BUILD_LOCKS]
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyedMap<Arc<str>, NamespaceEntries>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh cached body for the key at this index, if there is one.
    fn get(&self, key: Key, index: u64, generation: u64, now: u64) -> Option<Arc<CachedBody>> {
        let entries = self.lock();
        let namespace = entries.get(key.namespace)?;
        let cached = match key.view.service_slot() {
            Some(slot) => namespace.services.get(key.service)?[slot].as_ref(),
            None => namespace.whole.as_ref()?[key.view.namespace_slot()].as_ref(),
        }?;
        (cached.index == index && cached.generation == generation && now <= cached.fresh_until)
            .then(|| cached.body.clone())
    }

    /// Stores a body unless a change came in since its index was read. The check is made under
    /// the entries' lock, and a change moves the index before [`Self::on_change`] takes that lock,
    /// so a body is either refused here or freed there: none outlives its namespace.
    fn put(&self, key: Key, cached: Cached) {
        let mut entries = self.lock();
        if self.index_of(key) != cached.index {
            return;
        }
        let namespace = entries.entry(Arc::from(key.namespace)).or_default();
        match key.view.service_slot() {
            Some(slot) => {
                let views = match namespace.services.get_mut(key.service) {
                    Some(views) => views,
                    None => namespace
                        .services
                        .get_or_insert_with(Arc::from(key.service), Default::default),
                };
                views[slot] = Some(cached);
            }
            None => {
                namespace.whole.get_or_insert_with(Default::default)[key.view.namespace_slot()] =
                    Some(cached)
            }
        }
    }

    /// Frees the bodies a change made stale: its service's and the whole-namespace ones.
    pub fn on_change(&self, change: &Change) {
        let mut entries = self.lock();
        let Some(namespace) = entries.get_mut(&change.namespace) else {
            return;
        };
        namespace.services.remove(&change.instance.service_name);
        namespace.whole = None;
        if namespace.services.is_empty() {
            entries.remove(&change.namespace);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::instance::{Endpoint, EndpointType, Instance};
    use crate::registry::store::{ChangeKind, Origin};

    fn change(service: &str) -> Change {
        let endpoint = Endpoint {
            kind: EndpointType::Tcp,
            value: "v".into(),
        };
        Change {
            namespace: "ns".into(),
            instance: Arc::new(Instance::new("i", service, endpoint, "UP", Duration::ZERO)),
            kind: ChangeKind::Registered,
            origin: Origin::Local,
            at: 0,
            index: None,
        }
    }

    fn key(service: &'static str, view: View) -> Key<'static> {
        Key {
            namespace: "ns",
            service,
            view,
        }
    }

    fn cache() -> (ResponseCache, Arc<ChangeIndex>) {
        let index = Arc::new(ChangeIndex::default());
        (ResponseCache::new(index.clone()), index)
    }

    /// A change of `service`, as the registry reports it: the index moves, then the cache hears.
    fn changed(cache: &ResponseCache, index: &ChangeIndex, service: &str) {
        index.changed(&Arc::from("ns"), &[&Arc::from(service)]);
        cache.on_change(&change(service));
    }

    fn build(cache: &ResponseCache, key: Key, now: u64, body: &'static [u8]) -> Vec<u8> {
        cache
            .get_or_build(key, &|| now, || {
                Ok::<_, ()>(Built::Cacheable(body.to_vec(), None))
            })
            .unwrap()
            .unwrap()
            .plain()
            .to_vec()
    }

    #[test]
    fn the_gate_closes_the_cache_and_a_new_generation_empties_it() {
        use std::sync::atomic::{AtomicU64, Ordering};
        // u64::MAX stands for "closed".
        let state = Arc::new(AtomicU64::new(1));
        let gate = state.clone();
        let cache = ResponseCache::with_gate(
            Arc::new(ChangeIndex::default()),
            Box::new(move || Some(gate.load(Ordering::SeqCst)).filter(|g| *g != u64::MAX)),
        );
        let k = key("s", View::Service);
        build(&cache, k, 0, b"first");
        assert_eq!(&*build(&cache, k, 1, b"x"), b"first");
        state.store(u64::MAX, Ordering::SeqCst);
        assert_eq!(
            &*build(&cache, k, 2, b"closed"),
            b"closed",
            "no cached body"
        );
        state.store(1, Ordering::SeqCst);
        assert_eq!(
            &*build(&cache, k, 3, b"y"),
            b"first",
            "closing stored nothing"
        );
        state.store(2, Ordering::SeqCst);
        assert_eq!(
            &*build(&cache, k, 4, b"second"),
            b"second",
            "a new generation"
        );
    }

    #[test]
    fn bodies_are_keyed_on_the_index_and_age() {
        let (cache, index) = cache();
        let k = key("s", View::Service);
        build(&cache, k, 0, b"first");
        assert_eq!(&*build(&cache, k, 10, b"x"), b"first");
        index.changed(&Arc::from("ns"), &[&Arc::from("s")]);
        assert_eq!(&*build(&cache, k, 10, b"second"), b"second");
        let old = MAX_AGE.as_nanos() as u64 + 11;
        assert_eq!(&*build(&cache, k, old, b"third"), b"third");
    }

    #[test]
    fn a_body_is_stale_at_its_earliest_deadline() {
        let (cache, _) = cache();
        let k = key("s", View::Service);
        cache
            .get_or_build(k, &|| 0, || {
                Ok::<_, ()>(Built::Cacheable(b"a".to_vec(), Some(500)))
            })
            .unwrap();
        let at = cache.index_of(k);
        assert!(cache.get(k, at, 0, 500).is_some());
        assert!(cache.get(k, at, 0, 501).is_none());
    }

    #[test]
    fn a_change_frees_its_service_and_the_namespace_documents_only() {
        let (cache, index) = cache();
        // Both services were registered: the index knows them.
        changed(&cache, &index, "s");
        changed(&cache, &index, "t");
        build(&cache, key("s", View::Service), 0, b"s");
        build(&cache, key("t", View::Service), 0, b"t");
        let whole = key("", View::EurekaApps(Format::Xml));
        build(&cache, whole, 0, b"all");
        changed(&cache, &index, "s");
        assert_eq!(&*build(&cache, key("t", View::Service), 1, b"new"), b"t");
        assert_eq!(&*build(&cache, key("s", View::Service), 1, b"new"), b"new");
        assert_eq!(&*build(&cache, whole, 1, b"new"), b"new");
    }

    #[test]
    fn a_body_built_across_a_change_is_not_kept() {
        let (cache, index) = cache();
        let k = key("s", View::Service);
        let answered = cache.get_or_build(k, &|| 0, || {
            // The last instance leaves while the body is built.
            changed(&cache, &index, "s");
            Ok::<_, ()>(Built::Cacheable(b"old".to_vec(), None))
        });
        assert_eq!(
            answered.unwrap().as_deref().map(CachedBody::plain),
            Some(&b"old"[..]),
            "answered once"
        );
        assert!(
            cache.lock().is_empty(),
            "and not kept for a namespace that is gone"
        );
    }

    #[test]
    fn absent_and_empty_bodies_are_not_cached() {
        let (cache, _) = cache();
        let absent = cache.get_or_build(key("t", View::Service), &|| 1, || {
            Ok::<_, ()>(Built::Absent)
        });
        assert!(matches!(absent, Ok(None)));
        let empty = || Ok::<_, ()>(Built::Uncacheable(b"{}".to_vec()));
        let answered = cache.get_or_build(key("", View::EurekaHashCode), &|| 1, empty);
        assert_eq!(
            answered.unwrap().as_deref().map(CachedBody::plain),
            Some(&b"{}"[..])
        );
        assert!(cache.lock().is_empty(), "nothing cached");
    }

    #[test]
    fn slow_builds_are_served_longer() {
        let (cache, _) = cache();
        let k = key("", View::EurekaApps(Format::Json));
        let clock = std::sync::atomic::AtomicU64::new(0);
        let two_seconds = 2_000_000_000;
        let now = || clock.load(std::sync::atomic::Ordering::SeqCst);
        cache
            .get_or_build(k, &now, || {
                clock.store(two_seconds, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, ()>(Built::Cacheable(b"big".to_vec(), None))
            })
            .unwrap();
        let at = cache.index_of(k);
        assert!(cache
            .get(k, at, 0, two_seconds + 15 * 1_000_000_000)
            .is_some());
        assert!(cache
            .get(k, at, 0, two_seconds + 17 * 1_000_000_000)
            .is_none());
    }
}
