//! Work that a plain thread hands to the `may` workers: waking many parked coroutines at once.
//!
//! A coroutine woken from a plain thread is queued on a worker's global queue, and that worker's
//! eventfd is written: one system call per coroutine, and a worker kicked out of its poll again
//! and again. Woken from a coroutine on a worker it is a push onto that worker's own run queue.
//! So a plain thread that wakes many (the watches' waking thread, a Redis connection thread
//! answering a batch) spawns one coroutine per worker, each taking every n-th item: one eventfd
//! write per worker, and every worker gets its share of the woken to run.

use std::sync::{Arc, Mutex};

/// Runs `each` on every item, from one coroutine per `may` worker, each taking every n-th item
/// in order. Fewer than two items per worker are run here, at once, as is a share whose
/// coroutine could not be spawned. `each` must be short and must not touch thread-local storage
/// (it runs on a small coroutine stack).
pub fn run_on_workers<T: Send + 'static>(items: Vec<T>, each: fn(T)) {
    let workers = may::config().get_workers().max(1);
    if items.len() < 2 * workers {
        items.into_iter().for_each(each);
        return;
    }
    let mut shares: Vec<Vec<T>> = (0..workers)
        .map(|_| Vec::with_capacity(items.len() / workers + 1))
        .collect();
    for (i, item) in items.into_iter().enumerate() {
        shares[i % workers].push(item);
    }
    for (worker, share) in shares.into_iter().enumerate() {
        // The share comes back when the spawn fails, to be run from this thread instead.
        let share = Arc::new(Mutex::new(share));
        let taken = share.clone();
        let run_share = move || drain(&taken).into_iter().for_each(each);
        if !spawn_on(worker, Box::new(run_share)) {
            drain(&share).into_iter().for_each(each);
        }
    }
}

/// Spawns `work` on the worker `worker`; false when it could not be spawned. One boxed type for
/// every caller, so `may`'s spawn is compiled once.
fn spawn_on(worker: usize, work: Box<dyn FnOnce() + Send>) -> bool {
    // SAFETY: the coroutine touches no thread-local storage (`run_on_workers`' callers promise as
    // much), and its work is a loop of short calls: far within any coroutine stack.
    unsafe { may::coroutine::Builder::new().id(worker).spawn(work) }.is_ok()
}

/// Takes what is left of a share.
fn drain<T>(share: &Mutex<Vec<T>>) -> Vec<T> {
    std::mem::take(&mut *share.lock().unwrap_or_else(|e| e.into_inner()))
}
