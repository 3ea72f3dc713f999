//! Read-only catalogs (catalogs contract): instances that other systems track, mirrored next to
//! the store's own.
//!
//! Each source (`kubernetes`, `eureka`, `files`) runs on plain threads of its own and publishes, per
//! namespace, one immutable snapshot that it replaces whole ([`Catalogs::publish`]). Requests
//! read the latest published [`NamespaceView`] (an `Arc` cloned under a short read lock) and never
//! wait for a source. Publishing a snapshot that changes what a namespace lists moves the change
//! index of the namespace and of the services it touched, so cached bodies and waiting queries
//! follow. The merge with the store happens in the domain façade (`registry::Registry`).

pub mod eureka;
pub mod files;
mod health;
pub mod kubernetes;

pub use health::{Health, SourceReport};

use crate::registry::instance::Instance;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// The sources, in the order their instances are merged (contract §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SourceKind {
    Kubernetes = 0,
    Eureka = 1,
    Files = 2,
}

const SOURCES: usize = 3;

impl SourceKind {
    /// The name logs and `/uptime` use.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Kubernetes => "kubernetes",
            SourceKind::Eureka => "eureka",
            SourceKind::Files => "files",
        }
    }
}

/// First delay after a failure; doubled per consecutive failure (contract §2).
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest delay between retries.
const RETRY_MAX: Duration = Duration::from_secs(10);
/// How much each delay is varied, in percent either way.
const RETRY_JITTER_PERCENT: u64 = 20;

/// The retry delay after `failures` consecutive failures (1 or more), with its jitter.
pub(crate) fn retry_delay(failures: u32) -> Duration {
    let doubled = RETRY_FIRST.saturating_mul(1u32 << failures.saturating_sub(1).min(8));
    let base = doubled.min(RETRY_MAX).as_millis() as u64;
    let spread = base * RETRY_JITTER_PERCENT / 100;
    let noise = random_u64() % (2 * spread + 1);
    Duration::from_millis(base - spread + noise)
}

/// A cheap, non-cryptographic random number (only for jitter).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// What every catalog contributes to one namespace, merged: Kubernetes, then Eureka, then files,
/// one instance per id (the first wins).
#[derive(Default)]
pub struct NamespaceView {
    /// The snapshot of each source.
    slots: [Arc<[Arc<Instance>]>; SOURCES],
    /// All instances in merge order.
    all: Vec<Arc<Instance>>,
    by_id: HashMap<Arc<str>, Arc<Instance>>,
    /// Positions in `all` per service name.
    by_service: HashMap<Arc<str>, Vec<usize>>,
}

impl NamespaceView {
    fn build(slots: [Arc<[Arc<Instance>]>; SOURCES]) -> NamespaceView {
        let mut all = Vec::new();
        let mut by_id = HashMap::new();
        let mut by_service: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
        for instance in slots.iter().flat_map(|slot| slot.iter()) {
            if by_id.contains_key(&instance.id) {
                continue;
            }
            by_id.insert(instance.id.clone(), instance.clone());
            by_service
                .entry(instance.service_name.clone())
                .or_default()
                .push(all.len());
            all.push(instance.clone());
        }
        NamespaceView {
            slots,
            all,
            by_id,
            by_service,
        }
    }

    /// Every catalog instance of the namespace, in merge order.
    pub fn all(&self) -> &[Arc<Instance>] {
        &self.all
    }

    /// The catalog instances of one service, in merge order.
    pub fn service(&self, name: &str) -> impl Iterator<Item = &Arc<Instance>> {
        self.by_service
            .get(name)
            .into_iter()
            .flatten()
            .map(|&at| &self.all[at])
    }

    /// The catalog instance with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<Instance>> {
        self.by_id.get(id)
    }

    /// The service names with a catalog instance.
    pub fn services(&self) -> impl Iterator<Item = &Arc<str>> {
        self.by_service.keys()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

/// True when two instances list the same way in both APIs (what a reader could tell apart).
fn lists_alike(a: &Instance, b: &Instance) -> bool {
    a.id == b.id
        && a.service_name == b.service_name
        && a.endpoint == b.endpoint
        && a.status == b.status
        && a.ttl == b.ttl
        && a.tags == b.tags
        && a.metadata.as_ref().map(|m| m.get()) == b.metadata.as_ref().map(|m| m.get())
        && a.registered_unix_nanos == b.registered_unix_nanos
        && a.last_heartbeat.get() == b.last_heartbeat.get()
        && a.updated_unix_nanos == b.updated_unix_nanos
        && a.dirty_unix_millis == b.dirty_unix_millis
        && a.renewal_interval_secs == b.renewal_interval_secs
        && a.eureka() == b.eureka()
}

/// The services whose listing differs between two snapshots of one source.
fn changed_services(old: &[Arc<Instance>], new: &[Arc<Instance>]) -> BTreeSet<Arc<str>> {
    let group = |instances: &[Arc<Instance>]| {
        let mut groups: HashMap<Arc<str>, Vec<Arc<Instance>>> = HashMap::new();
        for instance in instances {
            groups
                .entry(instance.service_name.clone())
                .or_default()
                .push(instance.clone());
        }
        groups
    };
    let (old, new) = (group(old), group(new));
    let mut changed = BTreeSet::new();
    for (service, before) in &old {
        let same = new.get(service).is_some_and(|after| {
            after.len() == before.len() && after.iter().zip(before).all(|(a, b)| lists_alike(a, b))
        });
        if !same {
            changed.insert(service.clone());
        }
    }
    changed.extend(new.keys().filter(|s| !old.contains_key(*s)).cloned());
    changed
}

/// The published snapshots of every source and the health of each.
/// Told of every change a catalog makes to what a namespace lists: the namespace and the services
/// touched. The registry moves their change index and wakes their watchers.
pub type ChangeNotice = Box<dyn Fn(&Arc<str>, &[&Arc<str>]) + Send + Sync>;

/// Told of every namespace an API request resolves to (the Kubernetes catalog opens namespaces
/// on their first use). Runs on the request's coroutine: it must never wait for I/O.
pub type UseNotice = Box<dyn Fn(&str) + Send + Sync>;

pub struct Catalogs {
    notice: ChangeNotice,
    usage: std::sync::OnceLock<UseNotice>,
    views: RwLock<HashMap<Arc<str>, Arc<NamespaceView>>>,
    /// Serialises publishers, so a view is rebuilt from the latest slots of every source.
    publishing: Mutex<()>,
    sources: Mutex<Vec<Arc<Health>>>,
}

impl Catalogs {
    /// No sources yet; changes are told to `notice`.
    pub fn new(notice: ChangeNotice) -> Catalogs {
        Catalogs {
            notice,
            usage: std::sync::OnceLock::new(),
            views: RwLock::new(HashMap::new()),
            publishing: Mutex::new(()),
            sources: Mutex::new(Vec::new()),
        }
    }

    /// Sets who is told of the namespaces requests use (once; later calls are ignored).
    pub fn on_use(&self, notice: UseNotice) {
        let _ = self.usage.set(notice);
    }

    /// An API request resolved to `namespace`.
    pub fn used(&self, namespace: &str) {
        if let Some(notice) = self.usage.get() {
            notice(namespace);
        }
    }

    /// The merged catalog instances of a namespace; `None` when no catalog contributes to it.
    pub fn view(&self, namespace: &str) -> Option<Arc<NamespaceView>> {
        self.views
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(namespace)
            .cloned()
    }

    /// The namespaces some catalog contributes to.
    pub fn namespaces(&self) -> Vec<Arc<str>> {
        let views = self.views.read().unwrap_or_else(|e| e.into_inner());
        views.keys().cloned().collect()
    }

    /// Replaces what `source` contributes to `namespace` (ids unique within `instances`). Moves
    /// the change index when the listing changed; returns whether it did.
    pub fn publish(
        &self,
        source: SourceKind,
        namespace: &str,
        instances: Vec<Arc<Instance>>,
    ) -> bool {
        let _publishing = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.view(namespace);
        let slot = source as usize;
        let old: Arc<[Arc<Instance>]> = current
            .as_ref()
            .map_or_else(|| Arc::from(Vec::new()), |v| v.slots[slot].clone());
        let changed = changed_services(&old, &instances);
        if changed.is_empty() {
            return false;
        }
        let mut slots = current
            .as_ref()
            .map(|v| v.slots.clone())
            .unwrap_or_default();
        slots[slot] = instances.into();
        let view = NamespaceView::build(slots);
        let name: Arc<str> = Arc::from(namespace);
        {
            let mut views = self.views.write().unwrap_or_else(|e| e.into_inner());
            if view.slots.iter().all(|s| s.is_empty()) {
                views.remove(namespace);
            } else {
                views.insert(name.clone(), Arc::new(view));
            }
        }
        let services: Vec<&Arc<str>> = changed.iter().collect();
        (self.notice)(&name, &services);
        true
    }

    /// The instances `source` contributes to every namespace.
    pub fn count(&self, source: SourceKind) -> usize {
        let views = self.views.read().unwrap_or_else(|e| e.into_inner());
        views.values().map(|v| v.slots[source as usize].len()).sum()
    }

    /// Registers a source for `/uptime`.
    pub fn add_source(&self, health: Arc<Health>) {
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        sources.push(health);
        sources.sort_by_key(|h| h.kind());
    }

    /// The configured sources' reports, in alphabetical order of their names; empty when none is
    /// configured.
    pub fn reports(&self) -> Vec<SourceReport> {
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut reports: Vec<SourceReport> = sources
            .iter()
            .map(|h| h.report(self.count(h.kind())))
            .collect();
        reports.sort_by_key(|r| r.name);
        reports
    }
}

/// The catalog instances of `view` that `hidden` does not hide, appended to `out` in order.
pub fn append_visible<'a>(
    out: &mut Vec<Arc<Instance>>,
    catalog: impl Iterator<Item = &'a Arc<Instance>>,
) {
    let hidden: HashSet<Arc<str>> = out.iter().map(|i| i.id.clone()).collect();
    out.extend(catalog.filter(|i| !hidden.contains(&i.id)).cloned());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::instance::{Endpoint, EndpointType};

    fn instance(id: &str, service: &str, status: &str) -> Arc<Instance> {
        let endpoint = Endpoint {
            kind: EndpointType::Tcp,
            value: format!("{id}:80"),
        };
        Arc::new(Instance::new(id, service, endpoint, status, Duration::ZERO))
    }

    #[test]
    fn publishing_moves_the_index_only_when_the_listing_changes() {
        let index = Arc::new(crate::registry::index::ChangeIndex::default());
        let moved = index.clone();
        let catalogs = Catalogs::new(Box::new(move |ns, services| {
            moved.changed(ns, services);
        }));
        let before = index.namespace("team");
        assert!(catalogs.publish(SourceKind::Files, "team", vec![instance("a", "s", "UP")]));
        let after = index.service("team", "s");
        assert!(after > before);
        assert!(
            !catalogs.publish(SourceKind::Files, "team", vec![instance("a", "s", "UP")]),
            "the same content again changes nothing"
        );
        assert_eq!(index.service("team", "s"), after);
        assert!(catalogs.publish(SourceKind::Files, "team", vec![instance("a", "s", "DOWN")]));
        assert!(index.service("team", "s") > after);
        assert!(catalogs.publish(SourceKind::Files, "team", vec![]));
        assert!(
            catalogs.view("team").is_none(),
            "an empty namespace is dropped"
        );
    }

    #[test]
    fn sources_merge_in_order_one_instance_per_id() {
        let catalogs = Catalogs::new(Box::new(|_, _| {}));
        catalogs.publish(
            SourceKind::Files,
            "default",
            vec![instance("x", "s", "FILE"), instance("y", "t", "UP")],
        );
        catalogs.publish(
            SourceKind::Eureka,
            "default",
            vec![instance("x", "s", "EUREKA")],
        );
        let view = catalogs.view("default").unwrap();
        let listed: Vec<(&str, &str)> = view
            .all()
            .iter()
            .map(|i| (&*i.id, i.status.as_str()))
            .collect();
        assert_eq!(listed, [("x", "EUREKA"), ("y", "UP")]);
        assert_eq!(view.service("t").count(), 1);
        assert_eq!(catalogs.count(SourceKind::Files), 2);
    }

    #[test]
    fn retry_delays_double_up_to_ten_seconds_with_jitter() {
        for _ in 0..50 {
            let first = retry_delay(1).as_millis();
            assert!((800..=1200).contains(&first), "{first}");
            let third = retry_delay(3).as_millis();
            assert!((3200..=4800).contains(&third), "{third}");
            let late = retry_delay(40).as_millis();
            assert!((8000..=12000).contains(&late), "{late}");
        }
    }
}
