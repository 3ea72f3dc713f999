//! Serialised list bodies, cached per (namespace, service, view) and per (namespace, view) for
//! whole-namespace documents (DESIGN decision 7).
//!
//! Any change event of a namespace drops all of its bodies (changes are rare next to reads, and a
//! namespace that empties leaves nothing behind). Heartbeats emit no event, so a cached
//! body's `last_heartbeat` values may lag, by at most [`MAX_AGE`]. A body is also stale once the
//! earliest deadline among its instances has passed, so an expired instance is never served.
//!
//! Races with writers are settled by an epoch that every event bumps under the cache lock: a
//! reader notes the epoch before it reads the store, and stores its body only if no event came
//! in between. An event after the store was read removes what was stored.

use super::eureka::render::Format;
use crate::registry::store::Change;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest time a cached body is served, so heartbeat timestamps in it lag by at most this.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// Which response a body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// `GET /api/v1/services/{name}`.
    Service,
    /// `GET /api/v1/instances?service_name={name}`.
    Instances,
    /// Eureka `GET …/apps/{app}`, JSON or XML.
    EurekaApp(Format),
    /// Eureka `GET …/apps`, JSON or XML (whole namespace).
    EurekaApps(Format),
    /// The Eureka hash code of the whole namespace.
    EurekaHashCode,
}

const SERVICE_VIEWS: usize = 4;
const NAMESPACE_VIEWS: usize = 3;

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
            _ => 2,
        }
    }
}

struct Cached {
    body: Arc<[u8]>,
    built_at: u64,
    /// Monotonic nanoseconds after which an instance in the body may have expired.
    stale_after: Option<u64>,
}

impl Cached {
    fn fresh(&self, now: u64) -> Option<Arc<[u8]>> {
        let young = now.saturating_sub(self.built_at) < MAX_AGE.as_nanos() as u64;
        let unexpired = self.stale_after.is_none_or(|d| now <= d);
        (young && unexpired).then(|| self.body.clone())
    }
}

#[derive(Default)]
struct NamespaceEntries {
    services: HashMap<Arc<str>, [Option<Cached>; SERVICE_VIEWS]>,
    whole: [Option<Cached>; NAMESPACE_VIEWS],
}

/// A body to store: what it is and when it goes stale.
struct Entry {
    body: Arc<[u8]>,
    /// Monotonic nanoseconds when the store read began.
    built_at: u64,
    stale_after: Option<u64>,
}

/// What a body builder returns.
pub enum Built {
    /// A body to answer with and to cache, with the deadline (monotonic nanoseconds) after which
    /// it may show an expired instance.
    Cacheable(Vec<u8>, Option<u64>),
    /// A body to answer with but not to cache: it shows nothing stored (an empty namespace), and
    /// caching it would let clients grow memory by reading namespaces that do not exist.
    Uncacheable(Vec<u8>),
    /// Nothing to answer (an absent service).
    Absent,
}

#[derive(Default)]
pub struct ResponseCache {
    entries: Mutex<HashMap<Arc<str>, NamespaceEntries>>,
    epoch: AtomicU64,
}

impl ResponseCache {
    /// The epoch to note before reading the store for a body that will be [`Self::put`].
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// A fresh cached body, or the one `build` makes from a store read (at monotonic time `now`),
    /// which is then cached. `service` is ignored for whole-namespace views.
    pub fn get_or_build<E>(
        &self,
        namespace: &str,
        service: &str,
        view: View,
        now: u64,
        build: impl FnOnce() -> Result<Built, E>,
    ) -> Result<Option<Arc<[u8]>>, E> {
        if let Some(body) = self.get(namespace, service, view, now) {
            return Ok(Some(body));
        }
        let epoch = self.epoch();
        let (body, stale_after) = match build()? {
            Built::Cacheable(body, stale_after) => (body, stale_after),
            Built::Uncacheable(body) => return Ok(Some(body.into())),
            Built::Absent => return Ok(None),
        };
        let body: Arc<[u8]> = body.into();
        let entry = Entry {
            body: body.clone(),
            built_at: now,
            stale_after,
        };
        self.put(namespace, service, view, epoch, entry);
        Ok(Some(body))
    }

    /// A fresh cached body, if there is one. `service` is ignored for whole-namespace views.
    fn get(&self, namespace: &str, service: &str, view: View, now: u64) -> Option<Arc<[u8]>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let namespace = entries.get(namespace)?;
        let cached = match view.service_slot() {
            Some(slot) => namespace.services.get(service)?[slot].as_ref(),
            None => namespace.whole[view.namespace_slot()].as_ref(),
        };
        cached?.fresh(now)
    }

    /// Stores a body built from a store read that started at `epoch`; nothing is stored if a
    /// change came in since.
    fn put(&self, namespace: &str, service: &str, view: View, epoch: u64, entry: Entry) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        let cached = Some(Cached {
            body: entry.body,
            built_at: entry.built_at,
            stale_after: entry.stale_after,
        });
        let namespace = entries.entry(Arc::from(namespace)).or_default();
        match view.service_slot() {
            Some(slot) => {
                namespace.services.entry(Arc::from(service)).or_default()[slot] = cached;
            }
            None => namespace.whole[view.namespace_slot()] = cached,
        }
    }

    /// Drops the bodies of the changed namespace.
    pub fn on_change(&self, change: &Change) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::SeqCst);
        entries.remove(&change.namespace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::instance::{Endpoint, EndpointType, Instance};
    use crate::registry::store::ChangeKind;
    use std::time::Duration;

    fn change(service: &str) -> Change {
        let endpoint = Endpoint {
            kind: EndpointType::Tcp,
            value: "v".into(),
        };
        Change {
            namespace: "ns".into(),
            instance: Arc::new(Instance::new("i", service, endpoint, "UP", Duration::ZERO)),
            kind: ChangeKind::Registered,
            version: 1,
            at: 0,
        }
    }

    fn entry(stale_after: Option<u64>) -> Entry {
        Entry {
            body: Arc::from(&b"x"[..]),
            built_at: 0,
            stale_after,
        }
    }

    #[test]
    fn bodies_expire_by_age_deadline_and_events() {
        let cache = ResponseCache::default();
        cache.put("ns", "s", View::Service, cache.epoch(), entry(Some(500)));
        assert!(cache.get("ns", "s", View::Service, 100).is_some());
        assert!(cache.get("ns", "s", View::Instances, 100).is_none());
        let past_deadline = cache.get("ns", "s", View::Service, 501);
        assert!(past_deadline.is_none());
        cache.put("ns", "s", View::Service, cache.epoch(), entry(None));
        let too_old = cache.get("ns", "s", View::Service, MAX_AGE.as_nanos() as u64);
        assert!(too_old.is_none());
        cache.put("ns", "s", View::Service, cache.epoch(), entry(None));
        let whole = View::EurekaApps(Format::Xml);
        cache.put("ns", "", whole, cache.epoch(), entry(None));
        assert!(cache.get("ns", "any", whole, 1).is_some());
        assert!(cache
            .get("ns", "", View::EurekaApps(Format::Json), 1)
            .is_none());
        cache.on_change(&change("other"));
        assert!(cache.get("ns", "s", View::Service, 1).is_none());
        assert!(cache.get("ns", "", whole, 1).is_none());
    }

    #[test]
    fn a_body_read_before_an_event_is_not_stored() {
        let cache = ResponseCache::default();
        let built = cache.get_or_build("ns", "s", View::Service, 1, || {
            // A change arrives while the body is being built from the store.
            cache.on_change(&change("s"));
            Ok::<_, ()>(Built::Cacheable(b"old".to_vec(), None))
        });
        assert_eq!(
            built.unwrap().as_deref(),
            Some(&b"old"[..]),
            "answered once"
        );
        assert!(
            cache.get("ns", "s", View::Service, 1).is_none(),
            "but not cached"
        );
        let absent = cache.get_or_build("ns", "t", View::Service, 1, || Ok::<_, ()>(Built::Absent));
        assert_eq!(absent, Ok(None));
        let empty = || Ok::<_, ()>(Built::Uncacheable(b"{}".to_vec()));
        let answered = cache.get_or_build("ns", "", View::EurekaHashCode, 1, empty);
        assert_eq!(answered.unwrap().as_deref(), Some(&b"{}"[..]));
        assert!(cache.entries.lock().unwrap().is_empty(), "nothing cached");
    }
}
