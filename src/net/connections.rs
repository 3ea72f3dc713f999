//! Every open connection of the process: deadlines, the stop signal, and the count.
//!
//! A connection arms its deadline with one atomic store. One plain thread sleeps until the
//! earliest deadline of all connections and wakes the connections whose deadline has passed; a
//! connection that arms a deadline earlier than the thread's next wake-up nudges it. While no
//! deadline comes due the thread sleeps, so parked connections cost no CPU.

use super::stream::Stream;
use may::io::WaitIoWaker;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// A slot's deadline when none is armed, and the timer's next wake-up when it has none.
const NO_DEADLINE: u64 = u64::MAX;

/// What the deadline thread knows of one parked coroutine.
struct Slot {
    /// Nanoseconds since [`Shared::epoch`]; [`NO_DEADLINE`] when none is armed.
    deadline_nanos: AtomicU64,
    waker: WaitIoWaker,
}

#[derive(Default)]
struct Slots {
    entries: Vec<Option<Arc<Slot>>>,
    free: Vec<usize>,
}

/// Where the deadline thread sleeps. Apart from [`Shared`], so that the thread can learn that
/// the last handle is gone.
#[derive(Default)]
struct TimerSignal {
    /// True once every handle is dropped: the thread ends.
    closed: Mutex<bool>,
    wakeup: Condvar,
}

impl TimerSignal {
    fn lock(&self) -> MutexGuard<'_, bool> {
        // A poisoned lock only means some thread panicked while holding it; the flag is still valid.
        self.closed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Shared {
    epoch: Instant,
    stopping: AtomicBool,
    open: AtomicUsize,
    slots: Mutex<Slots>,
    /// The deadline the thread sleeps until; a deadline armed earlier than it nudges the thread.
    next_wake_nanos: AtomicU64,
    timer: Arc<TimerSignal>,
}

impl Shared {
    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn nanos(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(NO_DEADLINE - 1)
    }

    /// Wakes the slots whose deadline is at or before `now`; returns the earliest one after it.
    fn wake_due(&self, now: u64) -> u64 {
        let slots = self.slots();
        let mut earliest = NO_DEADLINE;
        for slot in slots.entries.iter().flatten() {
            let deadline = slot.deadline_nanos.load(Ordering::SeqCst);
            if deadline <= now {
                // Disarmed first, so the slot is woken once per deadline; a deadline re-armed
                // meanwhile is left alone.
                let disarmed = slot.deadline_nanos.compare_exchange(
                    deadline,
                    NO_DEADLINE,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
                if disarmed.is_ok() {
                    slot.waker.wakeup();
                }
            } else {
                earliest = earliest.min(deadline);
            }
        }
        earliest
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        *self.timer.lock() = true;
        self.timer.wakeup.notify_all();
    }
}

/// The deadline thread: sleeps until the earliest deadline, wakes what is due, and ends with the
/// last handle.
fn run_timer(shared: Weak<Shared>, timer: Arc<TimerSignal>) {
    let mut closed = timer.lock();
    loop {
        if *closed {
            return;
        }
        let Some(live) = shared.upgrade() else {
            return;
        };
        live.next_wake_nanos.store(NO_DEADLINE, Ordering::SeqCst);
        let now = live.nanos(Instant::now());
        let earliest = live.wake_due(now);
        live.next_wake_nanos.store(earliest, Ordering::SeqCst);
        // Not held while asleep, so that the last handle can go.
        drop(live);
        closed = if earliest == NO_DEADLINE {
            timer.wakeup.wait(closed).unwrap_or_else(|e| e.into_inner())
        } else {
            let sleep = Duration::from_nanos(earliest - now);
            timer
                .wakeup
                .wait_timeout(closed, sleep)
                .unwrap_or_else(|e| e.into_inner())
                .0
        };
    }
}

/// Every open connection of the process, with their deadlines and the stop signal. Cloning gives
/// another handle to the same set.
#[derive(Clone)]
pub struct Connections {
    shared: Arc<Shared>,
}

impl Connections {
    /// An empty set, with its deadline thread started; fails when the thread cannot be started.
    pub fn start() -> std::io::Result<Connections> {
        let timer = Arc::new(TimerSignal::default());
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            stopping: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            slots: Mutex::new(Slots::default()),
            next_wake_nanos: AtomicU64::new(NO_DEADLINE),
            timer: timer.clone(),
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("net-deadlines".into())
            .spawn(move || run_timer(weak, timer))?;
        Ok(Connections { shared })
    }

    /// Begins shutdown: acceptors take what is queued and stop, and every connection is woken so
    /// that it answers what it has received and closes.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for slot in self.shared.slots().entries.iter().flatten() {
            slot.waker.wakeup();
        }
    }

    /// True once [`Connections::stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Registers a coroutine that parks on `waker`'s stream.
    pub(super) fn register(&self, waker: WaitIoWaker) -> Registration {
        let slot = Arc::new(Slot {
            deadline_nanos: AtomicU64::new(NO_DEADLINE),
            waker,
        });
        let mut slots = self.shared.slots();
        let index = match slots.free.pop() {
            Some(index) => index,
            None => {
                slots.entries.push(None);
                slots.entries.len() - 1
            }
        };
        slots.entries[index] = Some(slot.clone());
        drop(slots);
        Registration {
            shared: self.shared.clone(),
            slot,
            index,
        }
    }

    /// Makes an accepted stream a counted connection; `acceptor_open` is its acceptor's count.
    pub(super) fn link(&self, stream: Stream, acceptor_open: Arc<AtomicUsize>) -> Link {
        let registration = self.register(stream.waker());
        self.shared.open.fetch_add(1, Ordering::SeqCst);
        acceptor_open.fetch_add(1, Ordering::SeqCst);
        Link {
            registration,
            stream,
            _open: OpenCount {
                shared: self.shared.clone(),
                acceptor_open,
            },
        }
    }
}

/// A coroutine known to the deadline thread and the stop signal.
pub(super) struct Registration {
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    index: usize,
}

impl Registration {
    pub(super) fn is_stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }

    /// Arms `deadline` (or none): the deadline thread wakes the coroutine once it has passed.
    pub(super) fn arm(&self, deadline: Option<Instant>) {
        let nanos = deadline.map_or(NO_DEADLINE, |d| self.shared.nanos(d));
        if self.slot.deadline_nanos.load(Ordering::SeqCst) == nanos {
            return;
        }
        self.slot.deadline_nanos.store(nanos, Ordering::SeqCst);
        if nanos < self.shared.next_wake_nanos.load(Ordering::SeqCst) {
            // Earlier than the thread's plan: wake it to plan again. Rare (the common deadline,
            // the idle timeout, lies after the earliest one armed), and short.
            let _closed = self.shared.timer.lock();
            self.shared.timer.wakeup.notify_one();
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut slots = self.shared.slots();
        slots.entries[self.index] = None;
        slots.free.push(self.index);
    }
}

/// Counts a connection as open until it is dropped, after its socket.
struct OpenCount {
    shared: Arc<Shared>,
    acceptor_open: Arc<AtomicUsize>,
}

impl Drop for OpenCount {
    fn drop(&mut self) {
        self.acceptor_open.fetch_sub(1, Ordering::SeqCst);
        self.shared.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection taken off the event loop by [`Link::detach`]: a blocking socket that still
/// counts as open (against the acceptor's limit) until this is dropped.
pub struct Detached {
    pub socket: std::net::TcpStream,
    _open: OpenCount,
}

/// One open connection: its stream, its deadline and the stop signal. Dropping it closes the
/// connection.
pub struct Link {
    // Fields drop in order: out of the deadline set, then the socket closed, then uncounted.
    registration: Registration,
    stream: Stream,
    _open: OpenCount,
}

impl Link {
    /// The connection's stream.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// True once shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.registration.is_stopping()
    }

    /// Hands the connection to a plain thread: out of the deadline set and the event loop, its
    /// socket blocking again. Fails when the socket cannot be made blocking (it is then closed).
    pub fn detach(self) -> std::io::Result<Detached> {
        let Link {
            registration,
            stream,
            _open,
        } = self;
        drop(registration);
        Ok(Detached {
            socket: stream.into_socket()?,
            _open,
        })
    }

    /// Parks the coroutine until the stream may be ready, `deadline` passes, shutdown begins or a
    /// waker of the stream fires, whichever comes first.
    ///
    /// Call it after an attempt on the stream (`try_read`, `try_write`, or `clear_readiness`)
    /// and a check of the conditions that end the wait, in that order: an event that comes after
    /// the attempt ends the park at once, so none is missed. It may return early; check again.
    pub fn wait(&self, deadline: Option<Instant>) {
        self.registration.arm(deadline);
        self.stream.wait_ready();
    }
}
