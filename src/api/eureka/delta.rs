//! The recent-change log behind `GET …/apps/delta` (spec 4.8, D7), fed by the store's events.
//!
//! Per namespace it keeps each changed instance once, with its latest state and change kind, for
//! [`RETENTION`] after the change. The log is bounded ([`MAX_ENTRIES_PER_NAMESPACE`]): under a
//! storm of changes the oldest entries go first, and a client that misses them notices through the
//! hash code and fetches the full list, which is what Netflix clients do anyway.

use super::render::Action;
use crate::registry::instance::Instance;
use crate::registry::store::{Change, ChangeKind};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a change stays in the log (Eureka's recent-change queue keeps 3 minutes).
pub const RETENTION: Duration = Duration::from_secs(180);
/// Most entries kept per namespace, so a burst of writes cannot grow memory without bound.
const MAX_ENTRIES_PER_NAMESPACE: usize = 100_000;

struct Entry {
    at: u64,
    version: u64,
    action: Action,
    instance: Arc<Instance>,
}

#[derive(Default)]
struct NamespaceLog {
    latest: HashMap<Arc<str>, Entry>,
    /// (monotonic nanoseconds, version, id) in arrival order, for pruning.
    order: VecDeque<(u64, u64, Arc<str>)>,
}

impl NamespaceLog {
    fn prune(&mut self, now: u64) {
        let retention = RETENTION.as_nanos() as u64;
        while let Some((at, version, id)) = self.order.front() {
            let expired = now.saturating_sub(*at) > retention;
            if !expired && self.order.len() <= MAX_ENTRIES_PER_NAMESPACE {
                break;
            }
            if self.latest.get(id).is_some_and(|e| e.version == *version) {
                self.latest.remove(id);
            }
            self.order.pop_front();
        }
    }
}

/// The change log of every namespace.
#[derive(Default)]
pub struct DeltaLog {
    namespaces: Mutex<HashMap<Arc<str>, NamespaceLog>>,
}

impl DeltaLog {
    /// Records a store change.
    pub fn record(&self, change: &Change) {
        let now = change.at;
        let action = match change.kind {
            ChangeKind::Registered | ChangeKind::Replaced => Action::Added,
            ChangeKind::Modified => Action::Modified,
            ChangeKind::Deregistered | ChangeKind::Expired => Action::Deleted,
        };
        let mut namespaces = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        let log = namespaces.entry(change.namespace.clone()).or_default();
        let id = change.instance.id.clone();
        // Events of one instance can arrive out of order; the version says which is the latest.
        if log
            .latest
            .get(&id)
            .is_some_and(|e| e.version > change.version)
        {
            return;
        }
        log.order.push_back((now, change.version, id.clone()));
        log.latest.insert(
            id,
            Entry {
                at: now,
                version: change.version,
                action,
                instance: change.instance.clone(),
            },
        );
        log.prune(now);
    }

    /// Every instance changed within the retention, once, in its latest state. Only `Arc`s are
    /// copied under the lock: callers render after it is released, so writers never wait on a
    /// render.
    pub fn changes(&self, namespace: &str, now: u64) -> Vec<(Arc<Instance>, Action)> {
        let mut namespaces = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        let Some(log) = namespaces.get_mut(namespace) else {
            return Vec::new();
        };
        log.prune(now);
        if log.latest.is_empty() {
            namespaces.remove(namespace);
            return Vec::new();
        }
        let retention = RETENTION.as_nanos() as u64;
        log.latest
            .values()
            .filter(|entry| now.saturating_sub(entry.at) <= retention)
            .map(|entry| (entry.instance.clone(), entry.action))
            .collect()
    }

    /// Drops the logs whose entries have all aged out.
    pub fn prune_all(&self, now: u64) {
        let mut namespaces = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        namespaces.retain(|_, log| {
            log.prune(now);
            !log.latest.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::instance::{Endpoint, EndpointType};

    fn change(id: &str, status: &str, kind: ChangeKind, version: u64, at: u64) -> Change {
        let endpoint = Endpoint {
            kind: EndpointType::Tcp,
            value: "v".into(),
        };
        Change {
            namespace: "ns".into(),
            instance: Arc::new(Instance::new(id, "S", endpoint, status, Duration::ZERO)),
            kind,
            version,
            at,
        }
    }

    fn seen(log: &DeltaLog, now: u64) -> Vec<(String, String, Action)> {
        let mut out: Vec<(String, String, Action)> = log
            .changes("ns", now)
            .into_iter()
            .map(|(i, a)| (i.id.to_string(), i.status.to_string(), a))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn a_late_event_does_not_undo_a_later_change() {
        let log = DeltaLog::default();
        // Cancelled (version 6) after being registered (version 5), but the events crossed.
        log.record(&change("a", "UP", ChangeKind::Deregistered, 6, 10));
        log.record(&change("a", "UP", ChangeKind::Registered, 5, 11));
        assert_eq!(seen(&log, 20), [("a".into(), "UP".into(), Action::Deleted)]);
    }

    #[test]
    fn latest_change_wins_and_old_changes_age_out() {
        let log = DeltaLog::default();
        log.record(&change("a", "UP", ChangeKind::Registered, 1, 0));
        log.record(&change("a", "DOWN", ChangeKind::Modified, 2, 10));
        log.record(&change("b", "UP", ChangeKind::Registered, 3, 20));
        log.record(&change("b", "UP", ChangeKind::Deregistered, 4, 30));
        assert_eq!(
            seen(&log, 40),
            [
                ("a".into(), "DOWN".into(), Action::Modified),
                ("b".into(), "UP".into(), Action::Deleted)
            ]
        );
        let later = RETENTION.as_nanos() as u64 + 25;
        assert_eq!(
            seen(&log, later),
            [("b".into(), "UP".into(), Action::Deleted)]
        );
        log.prune_all(RETENTION.as_nanos() as u64 + 31);
        assert!(log.namespaces.lock().unwrap().is_empty());
    }
}
