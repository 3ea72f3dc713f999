//! Full listings too large to hold whole (issue 17): a namespace listing of
//! [`min_streamed_instances`] instances or more is not built into one body and cached, but
//! streamed from a snapshot of its instances (the store's shared instances, a pointer each),
//! rendered a piece at a time on a render thread ([`crate::http::render`]) while the connection
//! writes it. Smaller listings keep the cached whole-body path (DESIGN decision 7); both render
//! the same bytes for the same instances. With the Redis store a snapshot reads every record
//! from Redis, so its Eureka listings stay on the cached path whatever their size (built once,
//! however many clients fetch).
//!
//! The handler decides from the namespace's instance count, which the store keeps, so that no
//! snapshot is taken on a worker: the listing ([`Lazy`]) takes it when its first piece is made,
//! or shares one that a concurrent listing of the namespace took at the same change
//! ([`SharedSnapshots`]).

use crate::api::cache;
use crate::api::{Api, Context};
use crate::http::response::{More, Producer};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// Instances from which a full listing is streamed: about 7 MB of Eureka JSON or 3 MB of
/// Amalgam8 JSON, so that no body of more than a few MiB is ever held (or cached, or compressed
/// whole).
const MIN_STREAMED_INSTANCES: usize = 10_000;

/// Environment variable that sets another threshold (a positive integer), so that tests can
/// stream small namespaces. Not a documented option: the threshold is not a tuning knob.
pub const MIN_STREAMED_INSTANCES_VARIABLE: &str = "A8REGISTRY_MIN_STREAMED_INSTANCES";

/// The threshold, read once.
pub fn min_streamed_instances() -> usize {
    static THRESHOLD: OnceLock<usize> = OnceLock::new();
    *THRESHOLD.get_or_init(|| {
        std::env::var(MIN_STREAMED_INSTANCES_VARIABLE)
            .ok()
            .and_then(|value| value.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(MIN_STREAMED_INSTANCES)
    })
}

/// True when a listing of `instances` instances is streamed.
pub fn is_streamed(instances: usize) -> bool {
    instances >= min_streamed_instances()
}

/// What a streamed listing of the request's namespace needs later, on its render thread: the API
/// and the request's context, owned. `None` when the namespace is under the threshold (or its
/// count cannot be had), the store's snapshots are not local, or the API is going away: the
/// listing then takes the cached path.
pub fn streamed_owner(api: &Api, ctx: &Context) -> Option<(Arc<Api>, Context)> {
    // Only from a local snapshot: from Redis each fetch would read every record again.
    if !api.registry.snapshots_are_local()
        || !is_streamed(api.registry.instance_count(&ctx.call())?)
    {
        return None;
    }
    Some((api.me.upgrade()?, ctx.clone()))
}

/// A streamed listing whose snapshot is taken when its first piece is made, on its render
/// thread ([`crate::http::render`]), not on the worker that answered the request: `start` takes
/// it and makes the listing, or fails (the body then ends cut, its head already sent).
pub struct Lazy {
    start: Option<Start>,
    listing: Option<Box<dyn Producer>>,
}

/// What takes a [`Lazy`] listing's snapshot and makes the listing.
pub type Start = Box<dyn FnOnce() -> Option<Box<dyn Producer>> + Send>;

impl Lazy {
    pub fn new(start: Start) -> Lazy {
        Lazy {
            start: Some(start),
            listing: None,
        }
    }
}

impl Producer for Lazy {
    fn produce(&mut self, out: &mut Vec<u8>, fill_to: usize) -> More {
        if let Some(start) = self.start.take() {
            self.listing = start();
        }
        match &mut self.listing {
            Some(listing) => listing.produce(out, fill_to),
            None => More::Failed,
        }
    }
}

/// What concurrent streamed listings of one namespace share: the snapshot one of them took (or
/// what it was made into), while the namespace has not changed since. Eight clients that fetch
/// a listing of a million instances at once then hold one snapshot of a million pointers, not
/// eight.
///
/// Held weakly: a snapshot lives as long as a listing that renders it, never longer, so nothing
/// here holds memory of its own. A listing reuses one taken at the namespace's current change
/// index, before the earliest deadline among its instances (none has expired since), and while
/// it is young: [`cache::MAX_AGE`], or eight times what it took to take for one that took longer
/// (heartbeat timestamps in it lag by no more, as a cached body's do).
///
/// Snapshots are taken on render threads, one at a time: a fetch that comes while another takes
/// the snapshot waits for it (its render thread blocks; no worker does) and shares it.
pub struct SharedSnapshots<T> {
    entries: Mutex<Vec<Shared<T>>>,
    taking: Mutex<()>,
}

struct Shared<T> {
    namespace: Arc<str>,
    /// The namespace's change index, read before the snapshot was taken.
    index: u64,
    /// Monotonic nanoseconds until which it may be reused.
    fresh_until: u64,
    value: Weak<T>,
}

impl<T> Default for SharedSnapshots<T> {
    fn default() -> Self {
        SharedSnapshots {
            entries: Mutex::new(Vec::new()),
            taking: Mutex::new(()),
        }
    }
}

impl<T> SharedSnapshots<T> {
    /// A live snapshot of `namespace` taken at change `index` and still fresh at `now()`, or
    /// the one `take` makes now (with the earliest deadline among its instances), which is then
    /// shared. `index` must be read before the store is.
    pub fn get_or_take<E>(
        &self,
        namespace: &str,
        index: u64,
        now: &dyn Fn() -> u64,
        take: impl FnOnce() -> Result<(T, Option<u64>), E>,
    ) -> Result<Arc<T>, E> {
        if let Some(shared) = self.find(namespace, index, now()) {
            return Ok(shared);
        }
        let _taking = self.taking.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = self.find(namespace, index, now()) {
            return Ok(shared);
        }
        let started = now();
        let (value, stale_after) = take()?;
        let finished = now();
        let took = finished.saturating_sub(started);
        let age = (cache::MAX_AGE.as_nanos() as u64).max(took.saturating_mul(8));
        let fresh_until = finished
            .saturating_add(age)
            .min(stale_after.unwrap_or(u64::MAX));
        let value = Arc::new(value);
        let mut entries = self.lock();
        entries.retain(|entry| entry.value.strong_count() > 0 && &*entry.namespace != namespace);
        entries.push(Shared {
            namespace: Arc::from(namespace),
            index,
            fresh_until,
            value: Arc::downgrade(&value),
        });
        Ok(value)
    }

    fn find(&self, namespace: &str, index: u64, now: u64) -> Option<Arc<T>> {
        let entries = self.lock();
        entries
            .iter()
            .find(|entry| {
                &*entry.namespace == namespace && entry.index == index && now <= entry.fresh_until
            })
            .and_then(|entry| entry.value.upgrade())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Shared<T>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn take(n: u32, taken: &Cell<u32>) -> Result<(u32, Option<u64>), ()> {
        taken.set(taken.get() + 1);
        Ok((n, Some(1_000)))
    }

    #[test]
    fn a_live_snapshot_is_shared_while_the_namespace_is_unchanged_and_fresh() {
        let shared = SharedSnapshots::default();
        let taken = Cell::new(0);
        let now = Cell::new(10);
        let clock = || now.get();
        let first = shared
            .get_or_take("ns", 1, &clock, || take(1, &taken))
            .unwrap();
        let again = shared
            .get_or_take("ns", 1, &clock, || take(2, &taken))
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(taken.get(), 1);
        // Another namespace, a change, or a deadline passed: taken again.
        assert_eq!(
            *shared
                .get_or_take("other", 1, &clock, || take(3, &taken))
                .unwrap(),
            3
        );
        let four = shared
            .get_or_take("ns", 2, &clock, || take(4, &taken))
            .unwrap();
        assert_eq!(*four, 4);
        now.set(1_001);
        assert_eq!(
            *shared
                .get_or_take("ns", 2, &clock, || take(5, &taken))
                .unwrap(),
            5
        );
        assert_eq!(taken.get(), 4);
    }

    #[test]
    fn a_snapshot_no_listing_holds_is_gone() {
        let shared = SharedSnapshots::default();
        let taken = Cell::new(0);
        let clock = || 10;
        drop(
            shared
                .get_or_take("ns", 1, &clock, || take(1, &taken))
                .unwrap(),
        );
        assert_eq!(
            *shared
                .get_or_take("ns", 1, &clock, || take(2, &taken))
                .unwrap(),
            2
        );
        assert_eq!(taken.get(), 2);
        // Only the latest of a namespace is kept.
        assert_eq!(shared.lock().len(), 1);
    }
}
