//! The storage interface every backend implements, its errors, its change events and its clock.

use super::instance::{Instance, LimitError};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Why a store operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// No live instance with that id in the namespace (unknown, deregistered or expired).
    NotFound,
    /// The instance breaks a length limit.
    Limit(LimitError),
    /// A new id would take the namespace over its capacity.
    CapacityExceeded,
    /// The backend failed, or an edit could not be applied.
    Backend(String),
}

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new id was registered (or an expired one registered again).
    Registered,
    /// An existing id was registered again; all of its data was replaced.
    Replaced,
    /// The status or metadata of a live instance changed.
    Modified,
    Deregistered,
    Expired,
}

/// One change, as every consumer (response caches, the Eureka change log, later replication)
/// sees it. Events of one instance may reach listeners out of order when two threads change it at
/// once; their versions are in the true order.
#[derive(Clone, Debug)]
pub struct Change {
    pub namespace: Arc<str>,
    /// The instance after the change; for removals, its last state.
    pub instance: Arc<Instance>,
    pub kind: ChangeKind,
    /// Grows with every change of the store; never goes back while the process runs.
    pub version: u64,
    /// When it happened, on the store's monotonic clock (nanoseconds).
    pub at: u64,
}

/// A consumer of changes. It runs on the thread that made the change, after the store's locks
/// are released, so it must be quick and must not call back into the store's write paths.
pub type Listener = Box<dyn Fn(&Change) + Send + Sync>;

/// Time as the store sees it: a monotonic clock for deadlines, a wall clock for timestamps that
/// are shown to clients. Tests inject a manual clock.
pub trait Clock: Send + Sync {
    /// Nanoseconds on a monotonic clock.
    fn monotonic_nanos(&self) -> u64;
    /// Nanoseconds since the unix epoch.
    fn unix_nanos(&self) -> i64;
}

/// The real clocks.
pub struct SystemClock {
    origin: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn monotonic_nanos(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn unix_nanos(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64)
    }
}

/// The live instances a read found.
#[derive(Default)]
pub struct Snapshot {
    pub instances: Vec<Arc<Instance>>,
    /// The earliest deadline (monotonic nanoseconds) among them, for callers that cache what they
    /// build from the snapshot; `None` when none of them can expire.
    pub stale_after: Option<u64>,
}

/// A namespace-partitioned instance store.
///
/// Every operation names its namespace; namespaces share nothing. An instance whose TTL has run
/// out is invisible to every operation from that moment, whether or not it was removed yet.
pub trait Store: Send + Sync {
    /// Stores `instance` under its id, replacing any instance with that id; the TTL is clamped by
    /// the store's policy and the heartbeat set to now. Returns the stored instance.
    /// Fails on a length limit or, for a new id, when the namespace is full.
    fn register(&self, namespace: &str, instance: Instance) -> Result<Arc<Instance>, StoreError>;

    /// Renews the instance's lease. Fails with `NotFound` for an unknown or expired id.
    fn heartbeat(&self, namespace: &str, id: &str) -> Result<(), StoreError>;

    /// Removes the instance. Fails with `NotFound` for an unknown or expired id.
    fn deregister(&self, namespace: &str, id: &str) -> Result<(), StoreError>;

    /// Changes a live instance with `edit` (its status, metadata, tags or dirty timestamp; its id
    /// and service stay), checks the metadata limit, renews the lease and marks it modified. Fails with
    /// `NotFound` for an unknown or expired id, with `edit`'s error, or on a limit; on failure
    /// nothing changes.
    fn modify(
        &self,
        namespace: &str,
        id: &str,
        edit: &mut dyn FnMut(&mut Instance) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// The live instance with this id.
    fn get(&self, namespace: &str, id: &str) -> Option<Arc<Instance>>;

    /// Every live instance of the namespace, or of one service when `service` is given, shared
    /// rather than copied, so callers render them without holding any store lock.
    fn snapshot(&self, namespace: &str, service: Option<&str>) -> Result<Snapshot, StoreError>;

    /// Removes the expired instances of a namespace now, emitting their events, instead of
    /// waiting for the periodic sweep.
    fn expire(&self, namespace: &str);

    /// Names of services with at least one live instance.
    fn services(&self, namespace: &str) -> Result<Vec<Arc<str>>, StoreError>;

    /// Adds a change listener.
    fn subscribe(&self, listener: Listener);

    /// The version of the latest change of the whole store.
    fn version(&self) -> u64;

    /// The store's clock.
    fn clock(&self) -> &dyn Clock;
}
