//! The in-memory store's clock, which leaves out the registry's own pauses (decision D39).
//!
//! When the whole process did not run for a while (a stopped container, a frozen VM, SIGSTOP),
//! every lease deadline ran out during the pause through no fault of the clients. A ticker on a
//! plain thread notes the monotonic time every [`TICK`]; a gap of more than [`PAUSE_THRESHOLD`]
//! since the last tick means the process was not running. The gap is then added to the time the
//! clock leaves out, which moves every lease deadline (and every other deadline the store keeps
//! on this clock) forward by the length of the pause at once, without visiting any entry.
//!
//! The gap is noticed by whichever thread reads the clock first after the pause, the ticker or
//! the reaper or a request, so nothing is judged expired on the pre-compensation time. The fast
//! path is two atomic loads.

use super::store::{Clock, SystemClock};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How often the ticker notes that the process runs.
pub const TICK: Duration = Duration::from_millis(250);

/// A gap between ticks longer than this is a pause of the registry (D39: more than 2 s).
pub const PAUSE_THRESHOLD: Duration = Duration::from_secs(2);

/// Monotonic time without the pauses noticed so far, from raw monotonic readings.
pub struct PauseCompensation {
    /// The raw reading of the last tick (or of the last compensation).
    last_tick: AtomicU64,
    /// Nanoseconds of pauses left out so far.
    paused: AtomicU64,
    /// Serialises compensations, so one pause is counted once.
    compensating: Mutex<()>,
}

/// A pause that [`PauseCompensation::observe`] noticed.
#[derive(Debug, PartialEq, Eq)]
pub struct Pause {
    pub gap: Duration,
}

impl PauseCompensation {
    pub fn new(raw_now: u64) -> PauseCompensation {
        PauseCompensation {
            last_tick: AtomicU64::new(raw_now),
            paused: AtomicU64::new(0),
            compensating: Mutex::new(()),
        }
    }

    /// The compensated time at the raw reading `raw`, and the pause it revealed if any.
    pub fn observe(&self, raw: u64) -> (u64, Option<Pause>) {
        let threshold = PAUSE_THRESHOLD.as_nanos() as u64;
        if raw.saturating_sub(self.last_tick.load(Ordering::Acquire)) <= threshold {
            return (
                raw.saturating_sub(self.paused.load(Ordering::Acquire)),
                None,
            );
        }
        let _serialised = self.compensating.lock().unwrap_or_else(|e| e.into_inner());
        let last_tick = self.last_tick.load(Ordering::Acquire);
        let mut pause = None;
        let gap = raw.saturating_sub(last_tick);
        if gap > threshold {
            // One tick interval of the gap is time the process would have waited anyway.
            let left_out = gap.saturating_sub(TICK.as_nanos() as u64);
            self.paused.fetch_add(left_out, Ordering::AcqRel);
            self.last_tick.fetch_max(raw, Ordering::AcqRel);
            pause = Some(Pause {
                gap: Duration::from_nanos(gap),
            });
        }
        (
            raw.saturating_sub(self.paused.load(Ordering::Acquire)),
            pause,
        )
    }

    /// Notes that the process ran at the raw reading `raw`; returns the pause it revealed if any.
    pub fn tick(&self, raw: u64) -> Option<Pause> {
        let (_, pause) = self.observe(raw);
        self.last_tick.fetch_max(raw, Ordering::AcqRel);
        pause
    }

    /// Nanoseconds of pauses left out so far.
    pub fn paused_nanos(&self) -> u64 {
        self.paused.load(Ordering::Acquire)
    }
}

/// The system clocks, with the registry's pauses left out of the monotonic one.
pub struct PauseCompensatingClock {
    system: SystemClock,
    compensation: PauseCompensation,
    /// [`monotonic_nanos_now`] when the clock started.
    origin: u64,
}

/// The monotonic clock (`CLOCK_MONOTONIC`, what `Instant` reads) in nanoseconds, read directly
/// ([`crate::raw_clock`]).
fn monotonic_nanos_now() -> u64 {
    crate::raw_clock::monotonic_nanos()
}

impl PauseCompensatingClock {
    /// A clock with its ticker thread; the ticker ends when the clock is dropped.
    ///
    /// # Errors
    ///
    /// When the ticker thread cannot be started.
    pub fn start() -> std::io::Result<Arc<PauseCompensatingClock>> {
        let clock = Arc::new(PauseCompensatingClock {
            system: SystemClock::default(),
            compensation: PauseCompensation::new(0),
            origin: monotonic_nanos_now(),
        });
        let weak: Weak<PauseCompensatingClock> = Arc::downgrade(&clock);
        std::thread::Builder::new()
            .name("pause-ticker".into())
            .spawn(move || loop {
                std::thread::sleep(TICK);
                let Some(clock) = weak.upgrade() else { return };
                let raw = clock.raw();
                if let Some(pause) = clock.compensation.tick(raw) {
                    log_pause(&pause);
                }
            })?;
        Ok(clock)
    }

    fn raw(&self) -> u64 {
        monotonic_nanos_now().saturating_sub(self.origin)
    }
}

fn log_pause(pause: &Pause) {
    crate::warn!(
        "the registry was paused: lease deadlines moved by the pause",
        "pause_ms" => pause.gap.as_millis() as u64
    );
}

impl Clock for PauseCompensatingClock {
    fn monotonic_nanos(&self) -> u64 {
        let (now, pause) = self.compensation.observe(self.raw());
        if let Some(pause) = pause {
            log_pause(&pause);
        }
        now
    }

    fn unix_nanos(&self) -> i64 {
        self.system.unix_nanos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;
    const TICK_NANOS: u64 = TICK.as_nanos() as u64;

    #[test]
    fn regular_ticks_leave_time_unchanged() {
        let compensation = PauseCompensation::new(0);
        for i in 1..=40 {
            assert_eq!(compensation.tick(i * TICK_NANOS), None);
        }
        assert_eq!(
            compensation.observe(40 * TICK_NANOS + 5),
            (40 * TICK_NANOS + 5, None)
        );
    }

    #[test]
    fn a_gap_of_two_seconds_or_less_is_no_pause() {
        let compensation = PauseCompensation::new(0);
        assert_eq!(compensation.tick(2 * SECOND), None);
        assert_eq!(compensation.paused_nanos(), 0);
    }

    #[test]
    fn a_gap_over_two_seconds_is_left_out_once() {
        let compensation = PauseCompensation::new(0);
        compensation.tick(SECOND);
        let resumed = SECOND + 15 * SECOND;
        let (now, pause) = compensation.observe(resumed);
        assert_eq!(pause.unwrap().gap, Duration::from_secs(15));
        assert_eq!(now, SECOND + TICK_NANOS, "time resumes where it stopped");
        // The ticker and other readers after the pause do not count it again.
        assert_eq!(compensation.tick(resumed + 1), None);
        assert_eq!(compensation.observe(resumed + 2).1, None);
        assert_eq!(compensation.paused_nanos(), 15 * SECOND - TICK_NANOS);
    }

    #[test]
    fn a_deadline_set_before_a_pause_is_still_ahead_after_it() {
        let compensation = PauseCompensation::new(0);
        let (registered, _) = compensation.observe(SECOND);
        let deadline = registered + 10 * SECOND;
        compensation.tick(SECOND);
        let (after, pause) = compensation.observe(SECOND + 15 * SECOND);
        assert!(pause.is_some());
        assert!(after < deadline);
        // Without heartbeats the deadline passes 10 s after the pause ended.
        let mut raw = SECOND + 15 * SECOND;
        while raw < SECOND + 15 * SECOND + 11 * SECOND {
            raw += TICK_NANOS;
            compensation.tick(raw);
        }
        assert!(compensation.observe(raw).0 > deadline);
    }

    #[test]
    fn the_clock_reads_forward() {
        let clock = PauseCompensatingClock::start().unwrap();
        let a = clock.monotonic_nanos();
        std::thread::sleep(Duration::from_millis(5));
        assert!(clock.monotonic_nanos() > a);
    }
}
