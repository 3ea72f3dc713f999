//! The storage interface every backend implements (memory now, Redis next), its change events
//! and its clock.
//!
//! Every operation can fail with [`Error`] (a network backend can be unreachable or late) and
//! carries a [`Call`]: the namespace and the one deadline of the request it serves. Every change
//! is an event with its origin, so consumers (caches, the change index, replication) can tell a
//! local write from one that arrived from a peer and never echo a change back where it came from.

use super::error::Error;
use super::instance::Instance;
use super::version::Version;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a store operation returns.
pub type Result<T> = std::result::Result<T, Error>;

/// Longest time one request may spend in store calls, all of them together: a network store
/// that does not answer makes the request 503 within 2 s of its arrival (Redis contract §4.1).
pub const REQUEST_DEADLINE: Duration = Duration::from_millis(1500);

/// One request's view of the store: its namespace, the deadline all its store calls share, and
/// whether it came through the Eureka API (whose namespaces keep a change log, spec §4.8).
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    pub namespace: &'a str,
    pub deadline: Instant,
    pub eureka: bool,
}

impl<'a> Call<'a> {
    /// A call for a request that starts now.
    pub fn new(namespace: &'a str) -> Call<'a> {
        Call {
            namespace,
            deadline: Instant::now() + REQUEST_DEADLINE,
            eureka: false,
        }
    }

    /// The same call, marked as coming through the Eureka API.
    pub fn from_eureka(self) -> Call<'a> {
        Call {
            eureka: true,
            ..self
        }
    }

    /// Time left before the deadline (zero once it passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// Where a change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A client of this process (either API), or this process's own expiry.
    Local,
    /// A cluster peer (replication): never sent on to other peers.
    Peer,
    /// Another registry process through a shared store (Redis).
    SharedStore,
    /// A read-only catalog.
    Catalog,
}

/// What changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    /// A new id was registered (or an expired or deregistered one registered again).
    Registered,
    /// An existing id was registered again; all of its data was replaced.
    Replaced,
    /// The status, metadata or tags of a live instance changed.
    Modified,
    Deregistered,
    Expired,
}

impl ChangeKind {
    /// True for the kinds that end an instance.
    pub fn is_removal(self) -> bool {
        matches!(self, ChangeKind::Deregistered | ChangeKind::Expired)
    }
}

/// One change, as every consumer sees it. Events of one instance may reach listeners out of
/// order when two threads change it at once; `instance.version` gives the true order.
#[derive(Clone, Debug)]
pub struct Change {
    pub namespace: Arc<str>,
    /// The instance after the change; for removals, its last state.
    pub instance: Arc<Instance>,
    pub kind: ChangeKind,
    pub origin: Origin,
    /// When it happened, on the store's monotonic clock (nanoseconds).
    pub at: u64,
    /// The namespace's change index after the change, from a store that keeps it for every
    /// node ([`Store::shares_index`]); `None` from a store whose index is this process's.
    pub index: Option<u64>,
}

/// A heartbeat's effect, for the consumers that ask for it (replication): the lease of a
/// registration now ends `remaining` from now. Caches never see these.
#[derive(Clone, Debug)]
pub struct Lease {
    pub namespace: Arc<str>,
    pub id: Arc<str>,
    /// The registration renewed ([`Instance::registration`]).
    pub registration: Version,
    pub remaining: Duration,
}

/// A consumer of changes. It runs on the thread that made the change, after the store's locks
/// are released, so it must be quick and must not call back into the store's write paths.
pub type Listener = Box<dyn Fn(&Change) + Send + Sync>;

/// A consumer of [`Store::subscribe_resync`]: whatever it learned from the changes is to be
/// learned again.
pub type ResyncListener = Box<dyn Fn() + Send + Sync>;

/// A consumer of lease events; the same rules as [`Listener`].
pub type LeaseListener = Box<dyn Fn(&Lease) + Send + Sync>;

/// A record made elsewhere (a peer, a snapshot, a repair), applied by the rules of the cluster
/// contract §6 with its own times and TTL: no re-stamping, no re-clamping, no capacity check.
#[derive(Clone, Debug)]
pub enum Record {
    /// A live instance (its `version` and `registration` set) and the time its lease has left;
    /// `None` never expires.
    Live {
        instance: Instance,
        remaining: Option<Duration>,
    },
    /// A deregistration or an expiry.
    Tombstone(Tombstone),
}

/// What a deregistration or an expiry leaves behind. Tombstones are never listed and never count
/// against capacity; they stop late messages from bringing an instance back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    pub id: Arc<str>,
    pub service_name: Arc<str>,
    pub version: Version,
    pub registration: Version,
    /// For an expiry: the deadline that passed, as unix milliseconds (so that a late lease of the
    /// same registration with a later deadline can still win, rule 4). `None` for a deregistration.
    pub expired_at_unix_millis: Option<i64>,
}

/// What applying a [`Record`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The record replaced what was held (or filled a gap).
    Accepted,
    /// What was held is at least as new: nothing changed.
    Ignored,
}

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
        // Read directly: `SystemTime` spent about 80 instructions of every heartbeat.
        crate::raw_clock::unix_nanos() as i64
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

/// What the Eureka change log of a namespace said at one moment (spec §4.8). The three parts are
/// read together, so the counts describe exactly the store after the logged changes: a client
/// that applies the entries to a full list it fetched earlier gets the hash code of the counts.
#[derive(Default)]
pub struct ChangeLog {
    /// `versions__delta`: grows with every change, never goes back while the process runs.
    pub version: u64,
    /// Live instances per status, as the full list at this moment has them.
    pub status_counts: Vec<(Arc<str>, u64)>,
    /// Every instance changed within the retention, once, in its latest state, with its kind.
    pub entries: Vec<(Arc<Instance>, ChangeKind)>,
    /// The monotonic time until which this view stays true without a change event: when the
    /// oldest entry leaves the log or an instance may expire; `None` when neither can happen.
    pub stale_after: Option<u64>,
}

/// A secondary lookup that would otherwise scan a namespace.
#[derive(Clone, Copy, Debug)]
pub enum Lookup<'a> {
    /// Instances whose id ends with `:` and this suffix (Eureka's `GET …/instances/{iid}`).
    IdSuffix(&'a str),
    /// Instances registered through Eureka with this VIP address.
    Vip(&'a str),
    /// Instances registered through Eureka with this secure VIP address.
    SecureVip(&'a str),
}

impl Lookup<'_> {
    /// True when `instance` is what the lookup asks for.
    pub fn matches(&self, instance: &Instance) -> bool {
        match *self {
            Lookup::IdSuffix(suffix) => instance.id_suffixes().any(|s| s == suffix),
            Lookup::Vip(vip) => instance.vip_keys()[0] == Some(vip),
            Lookup::SecureVip(vip) => instance.vip_keys()[1] == Some(vip),
        }
    }
}

/// A namespace-partitioned instance store.
///
/// Every operation names its namespace in its [`Call`]; namespaces share nothing. An instance
/// whose TTL has run out is invisible to every operation from that moment, whether or not it was
/// removed yet. Every method fails with `Unavailable` when the backend cannot answer before the
/// call's deadline.
pub trait Store: Send + Sync {
    /// Stores `instance` under its id, replacing any instance with that id; the TTL is clamped by
    /// the store's policy, the heartbeat set to now and a new version issued. Returns the stored
    /// instance. Fails on a limit or, for a new id, when the namespace is full.
    fn register(&self, call: &Call, instance: Instance) -> Result<Arc<Instance>>;

    /// [`Store::register`] of an instance made by [`Instance::unnamed`], under `service_name`. A
    /// store that holds instances of that service already gives this one the same copy of the
    /// name, so that a registration into a known service makes no string for it.
    fn register_named(
        &self,
        call: &Call,
        service_name: &str,
        mut instance: Instance,
    ) -> Result<Arc<Instance>> {
        instance.service_name = service_name.into();
        self.register(call, instance)
    }

    /// Renews the instance's lease. Fails with `NotFound` for an unknown or expired id.
    fn heartbeat(&self, call: &Call, id: &str) -> Result<()>;

    /// Removes the instance, leaving a tombstone. Fails with `NotFound` for an unknown or expired
    /// id.
    fn deregister(&self, call: &Call, id: &str) -> Result<()>;

    /// Changes a live instance with `edit` (its status, metadata, tags or dirty timestamp; its id
    /// and service stay), checks the limits, renews the lease and marks it modified. Fails with
    /// `NotFound` for an unknown or expired id, with `edit`'s error, or on a limit; on failure
    /// nothing changes.
    fn modify(
        &self,
        call: &Call,
        id: &str,
        edit: &mut dyn FnMut(&mut Instance) -> Result<()>,
    ) -> Result<()>;

    /// About how many instances the namespace holds, when the store keeps the count (an
    /// expired one may count until it is removed): what decides, before any snapshot, whether
    /// its full listing is streamed. `None` when counting would cost a read of the namespace.
    fn instance_count(&self, call: &Call) -> Option<usize> {
        let _ = call;
        None
    }

    /// The live instance with this id.
    fn get(&self, call: &Call, id: &str) -> Result<Option<Arc<Instance>>>;

    /// Every live instance of the namespace, or of one service when `service` is given, shared
    /// rather than copied, so callers render them without holding any store lock.
    fn snapshot(&self, call: &Call, service: Option<&str>) -> Result<Snapshot>;

    /// The live instances a secondary index finds, without scanning the namespace.
    fn lookup(&self, call: &Call, lookup: Lookup) -> Result<Vec<Arc<Instance>>>;

    /// Names of services with at least one live instance, sorted.
    fn services(&self, call: &Call) -> Result<Vec<Arc<str>>>;

    /// Removes the expired instances of the namespace now, emitting their events, instead of
    /// waiting for the periodic sweep.
    fn expire(&self, call: &Call) -> Result<()>;

    /// The namespace's Eureka change log. The log is kept only for namespaces that Eureka calls
    /// (`call.eureka`) have touched; for others it is empty, with the counts and version.
    fn change_log(&self, call: &Call) -> Result<ChangeLog>;

    /// `versions__delta` of the namespace (the [`ChangeLog::version`]) without the entries.
    fn change_log_version(&self, call: &Call) -> Result<u64>;

    /// Applies a record made elsewhere (cluster contract §6); `origin` is passed on in its event.
    fn apply(&self, namespace: &str, record: Record, origin: Origin) -> Result<Applied>;

    /// Applies a lease update made elsewhere: only to a live record of that registration, and
    /// then the later deadline wins (rule 3).
    fn apply_lease(&self, lease: &Lease) -> Result<Applied>;

    /// Names of the namespaces that hold records (live or tombstones), for snapshots and digests.
    /// A backend that cannot replicate fails with `Unavailable`.
    fn namespaces(&self) -> Result<Vec<Arc<str>>> {
        Err(Error::unavailable(
            "this store does not list its namespaces",
        ))
    }

    /// Every record of the namespace, live ones with the time their lease has left and
    /// tombstones, each shard read consistently in itself (cluster contract §7.1). A backend that
    /// cannot replicate fails with `Unavailable`.
    fn records(&self, namespace: &str) -> Result<Vec<Record>> {
        let _ = namespace;
        Err(Error::unavailable("this store does not list its records"))
    }

    /// The id and version of every record of the namespace (live ones and tombstones), without
    /// copying the records: what digests are made of. A backend that cannot replicate fails with
    /// `Unavailable`.
    fn versions(&self, namespace: &str) -> Result<Vec<(Arc<str>, Version)>> {
        let _ = namespace;
        Err(Error::unavailable("this store does not list its records"))
    }

    /// One record of the namespace, live (with its lease's time left) or a tombstone; `None`
    /// when the id is unknown or its instance expired.
    fn record(&self, namespace: &str, id: &str) -> Result<Option<Record>> {
        let _ = (namespace, id);
        Err(Error::unavailable("this store does not list its records"))
    }

    /// Adds a change listener.
    fn subscribe(&self, listener: Listener);

    /// Adds a lease listener: heartbeats are observed only by those who ask.
    fn subscribe_leases(&self, listener: LeaseListener);

    /// Adds a listener called whenever changes may have gone unannounced: a shared store's
    /// change feed was down and is up again. Stores that announce every change never call it.
    fn subscribe_resync(&self, _listener: ResyncListener) {}

    /// The store's clock.
    fn clock(&self) -> &dyn Clock;

    /// The backend's name, as metrics label it (`inmem`, `redis`).
    fn name(&self) -> &'static str;

    /// Whether the store answers now, for the readiness probe: cheap, and bounded in time.
    fn answers(&self) -> bool {
        true
    }

    /// The instances held per namespace, for metrics; namespaces may be listed with 0.
    fn instance_counts(&self) -> Result<Vec<(Arc<str>, usize)>>;

    /// Whether responses built from this store may be cached now, and under which generation:
    /// `None` while the store cannot vouch that its change events cover every change (a shared
    /// store whose change feed is down, or that is unavailable); a new generation when it may
    /// have missed some, which makes every body cached under an older one stale.
    fn cache_generation(&self) -> Option<u64> {
        Some(0)
    }

    /// Whether a snapshot is a copy of pointers into this process's memory (cheap enough to take
    /// for every full listing, which is then streamed from it), rather than a read of every
    /// record from a shared store, whose large listings are built once and cached instead.
    fn snapshots_are_local(&self) -> bool {
        true
    }

    /// Whether this store keeps every namespace's change index for all the nodes that share it
    /// (observability contract §1.1: through every node, the same index for the same state).
    /// Otherwise each process counts its own.
    fn shares_index(&self) -> bool {
        false
    }

    /// The namespace's shared change index, `0` when the store holds none for it; only for a
    /// store that [`Store::shares_index`].
    fn shared_index(&self, _call: &Call) -> Result<u64> {
        Err(Error::unavailable("this store keeps no shared index"))
    }

    /// The shared change indexes of many namespaces, in their order; a store may read them in
    /// one round trip. Only for a store that [`Store::shares_index`].
    fn shared_indexes(&self, namespaces: &[Arc<str>]) -> Vec<Result<u64>> {
        namespaces
            .iter()
            .map(|namespace| self.shared_index(&Call::new(namespace)))
            .collect()
    }

    /// Moves the namespace's shared index for a change the store did not make (a read-only
    /// catalog's update of `services`) and tells the other nodes, so they wake their watchers;
    /// returns the new index. Only for a store that [`Store::shares_index`].
    fn move_shared_index(&self, _call: &Call, _services: &[&Arc<str>]) -> Result<u64> {
        Err(Error::unavailable("this store keeps no shared index"))
    }
}
