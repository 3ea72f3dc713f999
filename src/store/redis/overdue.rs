//! Deadlines of the Redis calls that coroutines wait on, kept by one plain thread instead of
//! `may`'s timer.
//!
//! A coroutine that parks with a timeout puts a timer in `may`'s timer list, and taking it out
//! when the answer comes first (nearly always) unparks `may`'s timer thread: a futex wake and a
//! context switch of that thread for every Redis call, measured at a tenth of the server's time
//! for heartbeats on the Redis store. Here a caller registers its wait (one push under a lock)
//! and parks without a timeout; one thread looks over the waits every [`TICK`] while there are
//! any, and ends each wait whose deadline has passed. A wait ends at most one tick late, well
//! within the 2 s the Redis contract gives an answer (requests wait 1.5 s). With no waits the
//! thread sleeps until the next one is registered.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// How often the waits are looked over while there are any.
pub const TICK: Duration = Duration::from_millis(25);

/// A wait the thread can end.
pub trait Wait: Send + Sync {
    /// When the wait ends at the latest.
    fn deadline(&self) -> Instant;
    /// Whether it ended already (answered, or its caller gone).
    fn is_over(&self) -> bool;
    /// Ends the wait because its deadline passed; true when it was still waiting.
    fn expire(&self) -> bool;
}

#[derive(Default)]
struct Shared {
    waits: Mutex<Vec<Weak<dyn Wait>>>,
    registered: Condvar,
    /// The thread sleeps without a tick: the next registration must wake it.
    idle: AtomicBool,
    /// The owner is gone: the thread ends.
    closed: AtomicBool,
}

/// The deadlines of the waits registered; dropping it ends its thread.
pub struct Deadlines {
    shared: Arc<Shared>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Deadlines {
    /// Starts the thread; `expired` is called once per look-over that ended a wait (to mark the
    /// store unhealthy, say).
    pub fn start(expired: impl Fn() + Send + 'static) -> std::io::Result<Deadlines> {
        let shared = Arc::new(Shared::default());
        let watched = shared.clone();
        std::thread::Builder::new()
            .name("redis-deadlines".into())
            .spawn(move || keep(&watched, &expired))?;
        Ok(Deadlines { shared })
    }

    /// Ends `wait` by its deadline (give or take a tick) unless it is over first.
    pub fn register(&self, wait: Weak<dyn Wait>) {
        lock(&self.shared.waits).push(wait);
        if self.shared.idle.swap(false, Ordering::SeqCst) {
            // Taken under the lock, so the thread is either before its check of `idle` (and
            // sees the registration) or waiting on the condition variable (and is woken).
            let _waits = lock(&self.shared.waits);
            self.shared.registered.notify_one();
        }
    }
}

impl Drop for Deadlines {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        let _waits = lock(&self.shared.waits);
        self.shared.registered.notify_one();
    }
}

/// The thread: every tick, ends the waits past their deadline and forgets the ones over.
fn keep(shared: &Shared, expired: &dyn Fn()) {
    let mut waits = lock(&shared.waits);
    loop {
        if shared.closed.load(Ordering::SeqCst) {
            return;
        }
        if waits.is_empty() {
            shared.idle.store(true, Ordering::SeqCst);
            waits = shared
                .registered
                .wait(waits)
                .unwrap_or_else(|e| e.into_inner());
            continue;
        }
        waits = shared
            .registered
            .wait_timeout(waits, TICK)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        let now = Instant::now();
        let mut due = Vec::new();
        waits.retain(|wait| match wait.upgrade() {
            Some(wait) if !wait.is_over() => {
                if wait.deadline() <= now {
                    due.push(wait);
                    false
                } else {
                    true
                }
            }
            _ => false,
        });
        // Ended outside the lock: ending a wait unparks its caller.
        drop(waits);
        let mut any = false;
        for wait in due {
            any |= wait.expire();
        }
        if any {
            expired();
        }
        waits = lock(&shared.waits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Probe {
        deadline: Instant,
        expired: AtomicBool,
        over: AtomicBool,
    }

    impl Wait for Probe {
        fn deadline(&self) -> Instant {
            self.deadline
        }
        fn is_over(&self) -> bool {
            self.over.load(Ordering::SeqCst)
        }
        fn expire(&self) -> bool {
            !self.expired.swap(true, Ordering::SeqCst)
        }
    }

    fn probe(after: Duration) -> Arc<Probe> {
        Arc::new(Probe {
            deadline: Instant::now() + after,
            expired: AtomicBool::new(false),
            over: AtomicBool::new(false),
        })
    }

    #[test]
    fn waits_end_by_their_deadline_unless_over_and_the_thread_sleeps_between() {
        let expiries = Arc::new(AtomicUsize::new(0));
        let counted = expiries.clone();
        let deadlines = Deadlines::start(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        for round in 0..2 {
            let soon = probe(Duration::from_millis(50));
            let later = probe(Duration::from_secs(60));
            let answered = probe(Duration::from_millis(50));
            answered.over.store(true, Ordering::SeqCst);
            for wait in [&soon, &later, &answered] {
                let wait: Arc<dyn Wait> = wait.clone();
                deadlines.register(Arc::downgrade(&wait));
            }
            let started = Instant::now();
            while !soon.expired.load(Ordering::SeqCst) {
                assert!(started.elapsed() < Duration::from_secs(5), "round {round}");
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(!answered.expired.load(Ordering::SeqCst), "over first");
            assert!(!later.expired.load(Ordering::SeqCst), "not due");
            assert_eq!(expiries.load(Ordering::SeqCst), round + 1);
            // Gone: the thread forgets `later` and goes back to sleeping until a registration.
            drop(later);
            std::thread::sleep(TICK * 4);
            assert!(
                deadlines.shared.idle.load(Ordering::SeqCst),
                "round {round}"
            );
        }
    }
}
