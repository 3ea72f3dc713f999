//! Watches: requests waiting for the next change of a namespace or of one service (blocking
//! queries, observability contract §1.2).
//!
//! A watcher is registered under its namespace, either for the whole namespace or for one
//! service, and is woken once, by the first change of what it watches. Waking thousands of
//! watchers must not run on the thread that made the change (a `may` worker serving a write, or
//! the reaper): [`Watches::changed`], called from the store's change listener, only moves the
//! lists of the watchers concerned into a queue (a few hash-map operations under one short lock,
//! whatever their number) and nudges one plain thread, which hands them, outside every lock, to
//! one short-lived coroutine per `may` worker that wakes its share.
//! Without watchers of the namespace a change costs one uncontended lock and a hash lookup.
//!
//! No change is lost between a watcher reading the index and registering: the change index is
//! moved (under its lock) before [`Watches::changed`] takes the watchers' lock, and a watcher
//! registers under the watchers' lock before it reads the index again (the caller's duty, see
//! [`Watches::watch`]). Either the change finds the watcher, or the watcher's second read finds
//! the change.
//!
//! A watcher whose request ended otherwise (timed out, its client gone) says so through
//! [`Wake::is_waiting`]; such entries are dropped when their list is next woken, when the list
//! has doubled since it was last cleaned, when all entries held have doubled since the last
//! sweep, and by [`Watches::sweep`] (housekeeping). So what departed clients leave behind stays
//! within twice the live watchers plus a constant.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

/// Entries held in all below which a registration never sweeps them.
const MIN_SWEEP_ENTRIES: usize = 1024;
/// Entries of one list below which it is never cleaned on insert.
const MIN_CLEANUP_LENGTH: usize = 64;

/// Something waiting to be told of a change: the HTTP layer's wake-up handle.
pub trait Wake: Send + Sync {
    /// Ends the wait; called at most once by the watches, from a coroutine of their own (or
    /// their plain thread), never from the thread that made the change.
    fn wake(&self);
    /// False once the wait ended otherwise: the entry may be dropped.
    fn is_waiting(&self) -> bool;
}

type Watcher = Box<dyn Wake>;

/// Watchers of one list, and the length at which it is next cleaned on insert.
#[derive(Default)]
struct List {
    watchers: Vec<Watcher>,
    cleanup_at: usize,
}

impl List {
    fn push(&mut self, watcher: Watcher) {
        if self.watchers.len() >= self.cleanup_at.max(MIN_CLEANUP_LENGTH) {
            self.watchers.retain(|w| w.is_waiting());
            self.cleanup_at = 2 * self.watchers.len();
        }
        self.watchers.push(watcher);
    }

    fn clean(&mut self) {
        self.watchers.retain(|w| w.is_waiting());
        self.cleanup_at = 2 * self.watchers.len();
    }
}

#[derive(Default)]
struct NamespaceWatchers {
    /// Woken by any change of the namespace.
    whole: List,
    /// Woken by changes of one service.
    services: HashMap<Arc<str>, List>,
}

impl NamespaceWatchers {
    fn is_empty(&self) -> bool {
        self.whole.watchers.is_empty() && self.services.is_empty()
    }
}

#[derive(Default)]
struct Queue {
    /// Lists taken from the watchers, to be woken by the thread.
    lists: Vec<Vec<Watcher>>,
    /// The last handle is gone: the thread ends.
    closed: bool,
}

struct Shared {
    namespaces: Mutex<HashMap<Arc<str>, NamespaceWatchers>>,
    /// Entries registered and not yet taken or swept (some may have stopped waiting): zero means
    /// a change has nothing to look up.
    registered: AtomicUsize,
    /// Entries held above which the next registration sweeps.
    sweep_at: AtomicUsize,
    queue: Mutex<Queue>,
    queued: Condvar,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a thread panicked while holding it; the maps stay consistent.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every watcher of the process, and the thread that wakes them.
pub struct Watches {
    shared: Arc<Shared>,
}

impl Watches {
    /// No watchers yet; starts the waking thread.
    pub fn start() -> std::io::Result<Watches> {
        let shared = Arc::new(Shared {
            namespaces: Mutex::new(HashMap::new()),
            registered: AtomicUsize::new(0),
            sweep_at: AtomicUsize::new(MIN_SWEEP_ENTRIES),
            queue: Mutex::new(Queue::default()),
            queued: Condvar::new(),
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("watch-waker".into())
            .spawn(move || run_waker(weak))?;
        Ok(Watches { shared })
    }

    /// Registers `watcher` for the next change of `service` in `namespace`, or of the whole
    /// namespace when `service` is `None`. The caller reads the change index again afterwards
    /// and wakes the watcher itself if it moved meanwhile.
    pub fn watch(&self, namespace: &str, service: Option<&str>, watcher: Watcher) {
        let mut namespaces = lock(&self.shared.namespaces);
        let entry = match namespaces.get_mut(namespace) {
            Some(entry) => entry,
            None => namespaces.entry(Arc::from(namespace)).or_default(),
        };
        let list = match service {
            None => &mut entry.whole,
            Some(service) => match entry.services.get_mut(service) {
                Some(list) => list,
                None => entry.services.entry(Arc::from(service)).or_default(),
            },
        };
        let before = list.watchers.len();
        list.push(watcher);
        // Cleaning on insert may have dropped entries: keep the count of what is held.
        let dropped = before + 1 - list.watchers.len();
        self.shared.registered.fetch_add(1, Ordering::SeqCst);
        self.shared.registered.fetch_sub(dropped, Ordering::SeqCst);
        drop(namespaces);
        // Clients that leave before a change leave their entries behind, spread over lists that
        // may never be woken again (a new service name each time): once the entries held pass
        // twice what the last sweep kept, sweep now. Each sweep's cost is paid for by the
        // registrations since the previous one.
        if self.shared.registered.load(Ordering::SeqCst)
            > self.shared.sweep_at.load(Ordering::SeqCst)
        {
            self.sweep();
        }
    }

    /// A change of `services` in `namespace`: its watchers are handed to the waking thread. Quick
    /// and free of per-watcher work, for the store's change listener.
    pub fn changed(&self, namespace: &str, services: &[&Arc<str>]) {
        let mut taken = Vec::new();
        {
            let mut namespaces = lock(&self.shared.namespaces);
            let Some(entry) = namespaces.get_mut(namespace) else {
                return;
            };
            if !entry.whole.watchers.is_empty() {
                taken.push(std::mem::take(&mut entry.whole).watchers);
            }
            for service in services {
                if let Some(list) = entry.services.remove(&***service) {
                    taken.push(list.watchers);
                }
            }
            if entry.is_empty() {
                namespaces.remove(namespace);
            }
            let count: usize = taken.iter().map(Vec::len).sum();
            self.shared.registered.fetch_sub(count, Ordering::SeqCst);
        }
        self.hand_over(taken);
    }

    /// Queues the lists for the waking thread.
    fn hand_over(&self, mut taken: Vec<Vec<Watcher>>) {
        if taken.is_empty() {
            return;
        }
        let mut queue = lock(&self.shared.queue);
        let was_empty = queue.lists.is_empty();
        queue.lists.append(&mut taken);
        drop(queue);
        if was_empty {
            self.shared.queued.notify_one();
        }
    }

    /// The namespaces that have watchers.
    pub fn watched_namespaces(&self) -> Vec<Arc<str>> {
        lock(&self.shared.namespaces).keys().cloned().collect()
    }

    /// Hands every watcher of `namespace`, of every service, to the waking thread: it changed,
    /// and which of its services changed is not known.
    pub fn wake_namespace(&self, namespace: &str) {
        let taken: Vec<Vec<Watcher>> = {
            let mut namespaces = lock(&self.shared.namespaces);
            let Some(entry) = namespaces.remove(namespace) else {
                return;
            };
            let mut taken = vec![entry.whole.watchers];
            taken.extend(entry.services.into_values().map(|list| list.watchers));
            taken.retain(|list| !list.is_empty());
            let count: usize = taken.iter().map(Vec::len).sum();
            self.shared.registered.fetch_sub(count, Ordering::SeqCst);
            taken
        };
        self.hand_over(taken);
    }

    /// Drops the entries of watchers that stopped waiting, and emptied namespaces.
    pub fn sweep(&self) {
        let mut namespaces = lock(&self.shared.namespaces);
        let mut held = 0;
        namespaces.retain(|_, entry| {
            entry.whole.clean();
            held += entry.whole.watchers.len();
            entry.services.retain(|_, list| {
                list.clean();
                held += list.watchers.len();
                !list.watchers.is_empty()
            });
            !entry.is_empty()
        });
        self.shared.registered.store(held, Ordering::SeqCst);
        self.shared
            .sweep_at
            .store((2 * held).max(MIN_SWEEP_ENTRIES), Ordering::SeqCst);
    }

    /// Entries held (watchers registered and not yet woken or swept).
    pub fn registered(&self) -> usize {
        self.shared.registered.load(Ordering::SeqCst)
    }
}

impl Drop for Watches {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.queued.notify_one();
    }
}

/// The waking thread: takes the queued lists and wakes every watcher in them, outside the locks.
fn run_waker(shared: Weak<Shared>) {
    loop {
        let Some(live) = shared.upgrade() else {
            return;
        };
        let lists = {
            let mut queue = lock(&live.queue);
            while queue.lists.is_empty() && !queue.closed {
                queue = live.queued.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
            if queue.closed {
                return;
            }
            std::mem::take(&mut queue.lists)
        };
        // One spawn per worker, not one eventfd write per watcher.
        crate::net::run_on_workers(lists.into_iter().flatten().collect(), |watcher: Watcher| {
            watcher.wake()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::time::{Duration, Instant};

    #[derive(Default)]
    struct Flag {
        woken: AtomicBool,
        gone: AtomicBool,
    }

    struct Probe(Arc<Flag>);

    impl Wake for Probe {
        fn wake(&self) {
            self.0.woken.store(true, Ordering::SeqCst);
        }
        fn is_waiting(&self) -> bool {
            !self.0.gone.load(Ordering::SeqCst) && !self.0.woken.load(Ordering::SeqCst)
        }
    }

    fn probe(watches: &Watches, namespace: &str, service: Option<&str>) -> Arc<Flag> {
        let flag = Arc::new(Flag::default());
        watches.watch(namespace, service, Box::new(Probe(flag.clone())));
        flag
    }

    fn eventually(condition: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !condition() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    #[test]
    fn a_change_wakes_its_namespace_and_service_watchers_only() {
        let watches = Watches::start().unwrap();
        let whole = probe(&watches, "a", None);
        let service = probe(&watches, "a", Some("s"));
        let other_service = probe(&watches, "a", Some("t"));
        let other_namespace = probe(&watches, "b", None);
        assert_eq!(watches.registered(), 4);
        watches.changed("a", &[&Arc::from("s")]);
        assert!(eventually(|| whole.woken.load(Ordering::SeqCst)));
        assert!(eventually(|| service.woken.load(Ordering::SeqCst)));
        std::thread::sleep(Duration::from_millis(20));
        assert!(!other_service.woken.load(Ordering::SeqCst));
        assert!(!other_namespace.woken.load(Ordering::SeqCst));
        assert_eq!(watches.registered(), 2, "woken watchers are no longer held");
        // Each watcher is woken once: a second change finds only the ones still registered.
        watches.changed("b", &[]);
        assert!(eventually(|| other_namespace.woken.load(Ordering::SeqCst)));
        assert_eq!(watches.registered(), 1);
    }

    #[test]
    fn waking_a_namespace_wakes_its_every_service_and_no_other_namespace() {
        let watches = Watches::start().unwrap();
        let flags = [probe(&watches, "a", None), probe(&watches, "a", Some("s"))];
        let other = probe(&watches, "b", Some("t"));
        let mut watched = watches.watched_namespaces();
        watched.sort();
        assert_eq!(watched, [Arc::from("a"), Arc::from("b")]);
        watches.wake_namespace("a");
        for flag in &flags {
            assert!(eventually(|| flag.woken.load(Ordering::SeqCst)));
        }
        assert!(!other.woken.load(Ordering::SeqCst));
        assert_eq!(watches.registered(), 1);
        // Watchers registered afterwards wait for the next change as before.
        let later = probe(&watches, "a", None);
        std::thread::sleep(Duration::from_millis(20));
        assert!(!later.woken.load(Ordering::SeqCst));
        assert_eq!(watches.registered(), 2);
    }

    #[test]
    fn watchers_that_stopped_waiting_are_dropped() {
        let watches = Watches::start().unwrap();
        let flags: Vec<_> = (0..100).map(|_| probe(&watches, "a", None)).collect();
        for flag in &flags[..90] {
            flag.gone.store(true, Ordering::SeqCst);
        }
        watches.sweep();
        assert_eq!(watches.registered(), 10);
        for flag in &flags[90..] {
            flag.gone.store(true, Ordering::SeqCst);
        }
        // Cleaning on insert keeps a list within twice its live watchers.
        for _ in 0..1000 {
            let flag = probe(&watches, "a", None);
            flag.gone.store(true, Ordering::SeqCst);
        }
        assert!(watches.registered() <= 2 * MIN_CLEANUP_LENGTH + 1);
        watches.sweep();
        assert_eq!(watches.registered(), 0);
        assert!(lock(&watches.shared.namespaces).is_empty());
    }
}
