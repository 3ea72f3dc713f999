//! The Eureka change log behind `GET …/apps/delta` (spec §4.8, D7), kept by the in-memory store.
//!
//! Per namespace a [`Journal`] holds the status counts of the live instances, the namespace's
//! `versions__delta`, and, once a Eureka call touched the namespace, each changed instance once
//! with its latest state for [`RETENTION`]. The store updates the journal inside the same critical
//! section as the change itself, so no reader can see a change that the journal does not yet
//! have, and a delta reads its counts, entries and version together: a client that missed
//! nothing never sees a hash code its delta cannot explain.
//!
//! Memory is bounded across all namespaces by one [`ChangeBudget`] in bytes: the oldest entries
//! go first, whatever their namespace. A client that misses an evicted entry notices through the
//! hash code and fetches the full list, which is what Netflix clients do anyway.

use super::instance::Instance;
use super::small_map::SmallMap;
use super::store::{ChangeKind, ChangeLog};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

/// How long a change stays in the log (Eureka's recent-change queue keeps 3 minutes).
pub const RETENTION: Duration = Duration::from_secs(180);
/// Most bytes all change logs together may hold (entries and their bookkeeping).
pub const MAX_CHANGE_LOG_BYTES: usize = 64 * 1024 * 1024;
/// What one kept entry costs besides its instance: its map slot.
const ENTRY_OVERHEAD_BYTES: usize = 64;
/// What one item of the age queue costs. Items are charged to the budget too: an id changed a
/// million times leaves one entry but a million items until they age out or are evicted.
const QUEUE_ITEM_BYTES: usize = 64;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

struct Entry {
    at: u64,
    /// Identifies this entry in the budget's queue.
    seq: u64,
    instance: Arc<Instance>,
    kind: ChangeKind,
    bytes: usize,
}

/// One namespace's counts, version and (when followed) recent changes. Most namespaces count
/// one or two statuses and are never followed: the counts start as a short list, and the
/// changes are made when a Eureka call first touches the namespace.
pub struct Journal {
    version: u64,
    counts: SmallMap<Arc<str>, u64>,
    /// The latest change of each instance; `None` until the namespace is followed.
    latest: Option<Box<SmallMap<Arc<str>, Entry>>>,
}

/// What holds a journal: the budget keeps a weak handle to it for each entry it may evict.
pub trait Journaled: Send + Sync {
    fn journal(&self) -> &Mutex<Journal>;
}

impl Journaled for Mutex<Journal> {
    fn journal(&self) -> &Mutex<Journal> {
        self
    }
}

/// What [`Journal::record`] asks the caller to queue in the budget once its locks are released.
pub struct Queued {
    pub id: Arc<str>,
    pub seq: u64,
    pub at: u64,
}

impl Journal {
    /// A journal whose version starts at `version` (the store-wide sequence at creation, so a
    /// namespace created again never shows a lower version than before).
    pub fn new(version: u64) -> Journal {
        Journal {
            version,
            counts: SmallMap::default(),
            latest: None,
        }
    }

    /// Starts keeping entries (a Eureka call touched the namespace).
    pub fn follow(&mut self) {
        self.latest.get_or_insert_with(Box::default);
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// True when the journal holds no entries and counts no instances.
    pub fn is_empty(&self) -> bool {
        self.latest.as_ref().is_none_or(|latest| latest.is_empty()) && self.counts.is_empty()
    }

    /// Records one change: `before` is the live instance it replaced or removed (if any), `after`
    /// the instance after it (for removals, its last state). `version` is the new
    /// `versions__delta`. Returns what to queue in the budget when an entry was kept.
    pub fn record(
        &mut self,
        budget: &ChangeBudget,
        before: Option<&Instance>,
        after: &Arc<Instance>,
        kind: ChangeKind,
        at: u64,
        version: u64,
    ) -> Option<Queued> {
        if let Some(before) = before {
            let status = before.status.shared();
            if let Some(count) = self.counts.get_mut(status) {
                *count -= 1;
                if *count == 0 {
                    self.counts.remove(status);
                }
            }
        }
        if !kind.is_removal() {
            *self
                .counts
                .get_or_insert_with(after.status.shared().clone(), || 0) += 1;
        }
        self.version = self.version.max(version);
        let latest = self.latest.as_mut()?;
        // Events of one instance are recorded in the order of their versions: the store calls
        // this under the lock that orders them.
        let bytes = after.approximate_bytes() + ENTRY_OVERHEAD_BYTES;
        let seq = budget.next_seq();
        let entry = Entry {
            at,
            seq,
            instance: after.clone(),
            kind,
            bytes,
        };
        budget.add(bytes);
        if let Some(old) = latest.insert(after.id.clone(), entry) {
            budget.release(old.bytes);
        }
        Some(Queued {
            id: after.id.clone(),
            seq,
            at,
        })
    }

    /// Drops entries older than the retention at monotonic time `now`.
    pub fn prune(&mut self, budget: &ChangeBudget, now: u64) {
        let Some(latest) = &mut self.latest else {
            return;
        };
        let retention = RETENTION.as_nanos() as u64;
        latest.retain(|_, entry| {
            let keep = now.saturating_sub(entry.at) <= retention;
            if !keep {
                budget.release(entry.bytes);
            }
            keep
        });
    }

    /// The log as it is now: counts, version and entries read together.
    pub fn view(&mut self, budget: &ChangeBudget, now: u64) -> ChangeLog {
        self.prune(budget, now);
        let retention = RETENTION.as_nanos() as u64;
        let mut status_counts: Vec<(Arc<str>, u64)> =
            self.counts.iter().map(|(s, n)| (s.clone(), *n)).collect();
        status_counts.sort_unstable();
        let latest = || self.latest.iter().flat_map(|latest| latest.values());
        ChangeLog {
            version: self.version,
            status_counts,
            entries: latest().map(|e| (e.instance.clone(), e.kind)).collect(),
            stale_after: latest().map(|e| e.at + retention).min(),
        }
    }

    /// Removes the entry `seq` of `id` if it is still the latest one (budget eviction).
    fn evict(&mut self, budget: &ChangeBudget, id: &str, seq: u64) {
        let Some(latest) = &mut self.latest else {
            return;
        };
        if latest.get(id).is_some_and(|e| e.seq == seq) {
            if let Some(entry) = latest.remove(id) {
                budget.release(entry.bytes);
            }
        }
    }
}

struct Item {
    at: u64,
    seq: u64,
    journal: Weak<dyn Journaled>,
    id: Arc<str>,
}

/// The byte budget of every journal together, with the global age order for eviction.
pub struct ChangeBudget {
    limit_bytes: usize,
    bytes: AtomicUsize,
    seq: AtomicU64,
    queue: Mutex<VecDeque<Item>>,
}

impl ChangeBudget {
    pub fn new(limit_bytes: usize) -> ChangeBudget {
        ChangeBudget {
            limit_bytes,
            bytes: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            queue: Mutex::new(VecDeque::new()),
        }
    }

    /// Bytes held by entries now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    fn add(&self, bytes: usize) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn release(&self, bytes: usize) {
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(bytes))
            });
    }

    /// Queues a kept entry (call with no journal lock held), then evicts the oldest entries of
    /// any namespace while the budget is exceeded.
    pub fn queue<J: Journaled + 'static>(&self, journal: &Arc<J>, queued: Queued) {
        let weak: Weak<J> = Arc::downgrade(journal);
        let journal: Weak<dyn Journaled> = weak;
        lock(&self.queue).push_back(Item {
            at: queued.at,
            seq: queued.seq,
            journal,
            id: queued.id,
        });
        self.add(QUEUE_ITEM_BYTES);
        self.drain(|_| self.bytes() > self.limit_bytes);
    }

    /// Drops entries older than the retention at monotonic time `now`, and the bookkeeping of
    /// entries that were replaced meanwhile.
    pub fn prune(&self, now: u64) {
        let retention = RETENTION.as_nanos() as u64;
        self.drain(|item| now.saturating_sub(item.at) > retention);
    }

    /// Pops queue items from the front while `take` says so, removing their entries. The queue
    /// lock is released before a journal is locked (journals are locked before the queue when
    /// entries are added).
    fn drain(&self, take: impl Fn(&Item) -> bool) {
        loop {
            let item = {
                let mut queue = lock(&self.queue);
                match queue.front() {
                    Some(front) if take(front) => queue.pop_front(),
                    _ => None,
                }
            };
            let Some(item) = item else { return };
            self.release(QUEUE_ITEM_BYTES);
            if let Some(holder) = item.journal.upgrade() {
                lock(holder.journal()).evict(self, &item.id, item.seq);
            }
        }
    }

    /// Items in the queue (live entries and stale bookkeeping).
    #[cfg(test)]
    fn queued(&self) -> usize {
        lock(&self.queue).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::instance::{Endpoint, EndpointType};

    fn instance(id: &str, status: &str) -> Arc<Instance> {
        let endpoint = Endpoint {
            kind: EndpointType::Tcp,
            value: "v".into(),
        };
        Arc::new(Instance::new(id, "S", endpoint, status, Duration::ZERO))
    }

    fn followed() -> Arc<Mutex<Journal>> {
        let journal = Arc::new(Mutex::new(Journal::new(0)));
        lock(&journal).follow();
        journal
    }

    fn record(
        budget: &ChangeBudget,
        journal: &Arc<Mutex<Journal>>,
        before: Option<&Arc<Instance>>,
        after: &Arc<Instance>,
        kind: ChangeKind,
        at: u64,
        version: u64,
    ) {
        let queued = lock(journal).record(budget, before.map(|b| &**b), after, kind, at, version);
        if let Some(queued) = queued {
            budget.queue(journal, queued);
        }
    }

    #[test]
    fn counts_version_and_entries_move_together() {
        let budget = ChangeBudget::new(MAX_CHANGE_LOG_BYTES);
        let journal = followed();
        let a = instance("a", "UP");
        let a_down = instance("a", "DOWN");
        let b = instance("b", "UP");
        record(&budget, &journal, None, &a, ChangeKind::Registered, 0, 1);
        record(&budget, &journal, None, &b, ChangeKind::Registered, 1, 2);
        record(
            &budget,
            &journal,
            Some(&a),
            &a_down,
            ChangeKind::Modified,
            2,
            3,
        );
        record(
            &budget,
            &journal,
            Some(&b),
            &b,
            ChangeKind::Deregistered,
            3,
            4,
        );
        let view = lock(&journal).view(&budget, 10);
        assert_eq!(view.version, 4);
        assert_eq!(view.status_counts, [(Arc::from("DOWN"), 1)]);
        let mut entries: Vec<(String, String, ChangeKind)> = view
            .entries
            .iter()
            .map(|(i, k)| (i.id.to_string(), i.status.to_string(), *k))
            .collect();
        entries.sort();
        assert_eq!(
            entries,
            [
                ("a".into(), "DOWN".into(), ChangeKind::Modified),
                ("b".into(), "UP".into(), ChangeKind::Deregistered)
            ]
        );
    }

    #[test]
    fn unfollowed_journals_count_but_keep_no_entries() {
        let budget = ChangeBudget::new(MAX_CHANGE_LOG_BYTES);
        let journal = Arc::new(Mutex::new(Journal::new(7)));
        record(
            &budget,
            &journal,
            None,
            &instance("a", "UP"),
            ChangeKind::Registered,
            0,
            8,
        );
        let view = lock(&journal).view(&budget, 1);
        assert!(view.entries.is_empty());
        assert_eq!(view.status_counts, [(Arc::from("UP"), 1)]);
        assert_eq!(view.version, 8);
        assert_eq!(budget.bytes(), 0);
    }

    #[test]
    fn entries_age_out_and_release_their_bytes() {
        let budget = ChangeBudget::new(MAX_CHANGE_LOG_BYTES);
        let journal = followed();
        record(
            &budget,
            &journal,
            None,
            &instance("a", "UP"),
            ChangeKind::Registered,
            0,
            1,
        );
        assert!(budget.bytes() > 0);
        let later = RETENTION.as_nanos() as u64 + 1;
        budget.prune(later);
        assert_eq!(budget.bytes(), 0);
        assert_eq!(budget.queued(), 0);
        assert!(lock(&journal).view(&budget, later).entries.is_empty());
    }

    #[test]
    fn the_budget_evicts_the_oldest_entries_of_any_namespace() {
        let one =
            instance("probe", "UP").approximate_bytes() + ENTRY_OVERHEAD_BYTES + QUEUE_ITEM_BYTES;
        let budget = ChangeBudget::new(3 * one);
        let journals: Vec<_> = (0..5).map(|_| followed()).collect();
        for (i, journal) in journals.iter().enumerate() {
            let a = instance("probe", "UP");
            record(
                &budget,
                journal,
                None,
                &a,
                ChangeKind::Registered,
                i as u64,
                1,
            );
        }
        assert!(budget.bytes() <= 3 * one);
        let kept: Vec<usize> = journals
            .iter()
            .map(|j| lock(j).view(&budget, 10).entries.len())
            .collect();
        assert_eq!(kept, [0, 0, 1, 1, 1], "the two oldest went");
    }

    #[test]
    fn a_replaced_entry_releases_its_bytes_at_once() {
        let budget = ChangeBudget::new(MAX_CHANGE_LOG_BYTES);
        let journal = followed();
        let a = instance("a", "UP");
        for version in 1..=100 {
            record(
                &budget,
                &journal,
                Some(&a),
                &a,
                ChangeKind::Replaced,
                version,
                version,
            );
        }
        let one = a.approximate_bytes() + ENTRY_OVERHEAD_BYTES;
        assert_eq!(budget.bytes(), one + 100 * QUEUE_ITEM_BYTES);
    }

    #[test]
    fn one_id_changed_without_end_stays_within_the_budget() {
        let limit = 64 * 1024;
        let budget = ChangeBudget::new(limit);
        let journal = followed();
        let a = instance("a", "UP");
        for version in 1..=100_000 {
            record(
                &budget,
                &journal,
                Some(&a),
                &a,
                ChangeKind::Modified,
                version,
                version,
            );
        }
        assert!(budget.bytes() <= limit, "{} bytes", budget.bytes());
        assert!(budget.queued() <= limit / QUEUE_ITEM_BYTES);
        let view = lock(&journal).view(&budget, 100_000);
        assert_eq!(view.entries.len(), 1, "the latest change is kept");
    }
}
