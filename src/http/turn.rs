//! Long work on a coroutine, shared fairly with the other connections of its worker.
//!
//! `may`'s yield puts the coroutine at the back of its worker's queue of ready coroutines, and
//! the worker goes back to its event loop (where sockets that became ready wake their
//! coroutines) only once that queue is empty: a coroutine that renders a gigabyte and yields
//! every few hundred instances keeps it from ever being empty, and the worker's other
//! connections wait until the work is done. [`take_turns`] also parks the coroutine now and then,
//! after [`TURN`] of work since the worker last did so, until `may`'s timer wakes it
//! [`WAKE_DELAY`] later: long enough for the worker, with nothing else ready, to reach its event
//! loop (a wake-up at once would often be collected before the worker gets there).
//!
//! Turns only bound the harm: the sockets of a worker with two such coroutines are still read
//! late, so work that is long at any size (a streamed listing) runs on render threads instead
//! ([`super::render`]). Turns remain for what is long only now and then: building a cached body
//! just under the streaming threshold, a filtered listing's pass over a snapshot, compressing a
//! large body.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Work a coroutine does at most before its worker serves the sockets that became ready.
pub const TURN: Duration = Duration::from_millis(4);
/// How long a coroutine that took its turn stays parked: a few percent of a turn.
const WAKE_DELAY: Duration = Duration::from_micros(100);

thread_local! {
    /// When this worker thread last let its event loop run (or first took turns).
    static TURN_BEGAN: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Between two steps of long work: yields to the worker's other ready coroutines, and once
/// [`TURN`] has passed since the worker last went to its event loop this way, parks until
/// `may`'s timer wakes the coroutine. Outside a coroutine it does nothing.
pub fn take_turns() {
    if !may::coroutine::is_coroutine() {
        return;
    }
    let now = Instant::now();
    let began = TURN_BEGAN.with(|cell| {
        let began = cell.get().unwrap_or(now);
        cell.set(Some(began));
        began
    });
    if now.duration_since(began) < TURN {
        may::coroutine::yield_now();
        return;
    }
    wait_for_the_event_loop();
    // Possibly on another worker now: its turn starts here.
    TURN_BEGAN.with(|cell| cell.set(Some(Instant::now())));
}

/// Parks the coroutine until `may`'s timer thread unparks it, [`WAKE_DELAY`] from now: the
/// unpark comes from outside the workers, so the coroutine is queued where the worker collects it from
/// its event loop.
fn wait_for_the_event_loop() {
    may::coroutine::sleep(WAKE_DELAY);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_work_on_a_coroutine_goes_on_across_turns() {
        let worked = unsafe {
            may::coroutine::Builder::new().spawn(|| {
                let started = Instant::now();
                let mut steps = 0u64;
                while started.elapsed() < TURN * 5 {
                    steps += 1;
                    take_turns();
                }
                steps
            })
        }
        .unwrap()
        .join()
        .unwrap();
        assert!(worked > 5);
        take_turns();
    }
}
