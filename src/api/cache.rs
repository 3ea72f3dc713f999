//! Serialised list bodies, cached per (namespace, service, view) (DESIGN decision 7).
//!
//! A body is dropped by any change event of its service. Heartbeats emit no event, so a cached
//! body's `last_heartbeat` values may lag, by at most [`MAX_AGE`]. A body is also stale once the
//! earliest deadline among its instances has passed, so an expired instance is never served.
//!
//! Races with writers are settled by an epoch that every event bumps under the cache lock: a
//! reader notes the epoch before it reads the store, and stores its body only if no event came
//! in between. An event after the store was read removes what was stored.

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
    Service = 0,
    /// `GET /api/v1/instances?service_name={name}`.
    Instances = 1,
}

struct Cached {
    body: Arc<[u8]>,
    built_at: u64,
    /// Monotonic nanoseconds after which an instance in the body may have expired.
    stale_after: Option<u64>,
}

type ServiceViews = HashMap<Arc<str>, [Option<Cached>; 2]>;

#[derive(Default)]
pub struct ResponseCache {
    entries: Mutex<HashMap<Arc<str>, ServiceViews>>,
    epoch: AtomicU64,
}

impl ResponseCache {
    /// The epoch to note before reading the store for a body that will be [`Self::put`].
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// A fresh cached body, if there is one.
    pub fn get(&self, namespace: &str, service: &str, view: View, now: u64) -> Option<Arc<[u8]>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let cached = entries.get(namespace)?.get(service)?[view as usize].as_ref()?;
        let young = now.saturating_sub(cached.built_at) < MAX_AGE.as_nanos() as u64;
        let unexpired = cached.stale_after.is_none_or(|d| now <= d);
        (young && unexpired).then(|| cached.body.clone())
    }

    /// Stores a body built from a store read that started at `epoch`.
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &self,
        namespace: &str,
        service: &str,
        view: View,
        epoch: u64,
        body: Arc<[u8]>,
        built_at: u64,
        stale_after: Option<u64>,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        let slots = entries
            .entry(Arc::from(namespace))
            .or_default()
            .entry(Arc::from(service))
            .or_default();
        slots[view as usize] = Some(Cached {
            body,
            built_at,
            stale_after,
        });
    }

    /// Drops the bodies of the changed service.
    pub fn on_change(&self, change: &Change) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Some(services) = entries.get_mut(&change.namespace) {
            services.remove(&change.service);
            if services.is_empty() {
                entries.remove(&change.namespace);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::store::ChangeKind;

    fn change(service: &str) -> Change {
        Change {
            namespace: "ns".into(),
            service: service.into(),
            id: "i".into(),
            kind: ChangeKind::Registered,
            version: 1,
        }
    }

    #[test]
    fn bodies_expire_by_age_deadline_and_events() {
        let cache = ResponseCache::default();
        let body: Arc<[u8]> = Arc::from(&b"x"[..]);
        cache.put(
            "ns",
            "s",
            View::Service,
            cache.epoch(),
            body.clone(),
            0,
            Some(500),
        );
        assert!(cache.get("ns", "s", View::Service, 100).is_some());
        assert!(cache.get("ns", "s", View::Instances, 100).is_none());
        assert!(
            cache.get("ns", "s", View::Service, 501).is_none(),
            "past a deadline"
        );
        cache.put(
            "ns",
            "s",
            View::Service,
            cache.epoch(),
            body.clone(),
            0,
            None,
        );
        assert!(cache
            .get("ns", "s", View::Service, MAX_AGE.as_nanos() as u64)
            .is_none());
        cache.put(
            "ns",
            "s",
            View::Service,
            cache.epoch(),
            body.clone(),
            0,
            None,
        );
        cache.on_change(&change("other"));
        assert!(cache.get("ns", "s", View::Service, 1).is_some());
        cache.on_change(&change("s"));
        assert!(cache.get("ns", "s", View::Service, 1).is_none());
    }

    #[test]
    fn a_body_read_before_an_event_is_not_stored() {
        let cache = ResponseCache::default();
        let epoch = cache.epoch();
        cache.on_change(&change("s"));
        cache.put(
            "ns",
            "s",
            View::Service,
            epoch,
            Arc::from(&b"old"[..]),
            0,
            None,
        );
        assert!(cache.get("ns", "s", View::Service, 1).is_none());
    }
}
