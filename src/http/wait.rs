//! Replies that wait: a handler answers [`Reply::Wait`] with a [`Waiter`], and the server parks
//! the request until the waiter is woken, its deadline passes, or shutdown begins; then the
//! waiter produces the response. While parked the server still reads the connection, so a client
//! that goes away ends the wait at once and frees it; requests pipelined behind a waiting one
//! are answered after it, in order.
//!
//! The [`Wakeup`] half goes to whatever will signal the change (a change index, say). Waking is
//! two atomic operations and a reschedule, from a coroutine or a plain thread alike. A parked
//! request costs no CPU: its coroutine is off every run queue until an event on its socket, its
//! wake-up, its deadline or shutdown.

use super::response::Response;
use may::io::WaitIoWaker;
use may::sync::AtomicOption;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What a handler answers.
pub enum Reply {
    /// The response, now.
    Now(Response),
    /// A response later, from the waiter.
    Wait(Waiter),
}

impl From<Response> for Reply {
    fn from(response: Response) -> Reply {
        Reply::Now(response)
    }
}

/// Why a wait ended; the waiter's `finish` answers accordingly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitEnd {
    /// [`Wakeup::wake`] was called.
    Woken,
    /// The deadline passed first.
    TimedOut,
    /// The server is shutting down: answer at once with what there is.
    Shutdown,
}

/// The response to produce when a wait ends.
type Finish = Box<dyn FnOnce(WaitEnd) -> Response + Send>;

struct Shared {
    woken: AtomicBool,
    /// The wait is over (answered, or dropped because its client went away).
    over: AtomicBool,
    /// Wakes the parked connection; present while the server waits.
    parked: AtomicOption<WaitIoWaker>,
}

/// A request waiting for its answer: handed to the server in [`Reply::Wait`].
pub struct Waiter {
    shared: Arc<Shared>,
    deadline: Instant,
    finish: Option<Finish>,
}

/// Ends a [`Waiter`]'s wait early; cheap, and callable from any thread, any number of times.
#[derive(Clone)]
pub struct Wakeup {
    shared: Arc<Shared>,
}

impl Waiter {
    /// A waiter that waits until woken or until `deadline`, then answers with `finish`. The
    /// [`Wakeup`] is for whatever will signal the change.
    pub fn new<F>(deadline: Instant, finish: F) -> (Waiter, Wakeup)
    where
        F: FnOnce(WaitEnd) -> Response + Send + 'static,
    {
        let shared = Arc::new(Shared {
            woken: AtomicBool::new(false),
            over: AtomicBool::new(false),
            parked: AtomicOption::none(),
        });
        let waiter = Waiter {
            shared: shared.clone(),
            deadline,
            finish: Some(Box::new(finish)),
        };
        (waiter, Wakeup { shared })
    }

    /// The same wait, whose response passes through `then` (to mark or log it).
    pub fn map<F>(mut self, then: F) -> Waiter
    where
        F: FnOnce(Response) -> Response + Send + 'static,
    {
        if let Some(finish) = self.finish.take() {
            self.finish = Some(Box::new(move |end| then(finish(end))));
        }
        self
    }

    /// When the wait ends at the latest.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Lets [`Wakeup::wake`] end the park of the connection that `waker` belongs to. Call it
    /// before the first check of [`Waiter::is_woken`].
    pub(super) fn attach(&self, waker: WaitIoWaker) {
        self.shared.parked.store(waker);
        // Pairs with the fence in `wake`: either this side sees `woken`, or `wake` sees the waker.
        fence(Ordering::SeqCst);
    }

    pub(super) fn is_woken(&self) -> bool {
        self.shared.woken.load(Ordering::SeqCst)
    }

    /// Produces the response (a panic in `finish` is the caller's to catch).
    pub(super) fn finish(mut self, end: WaitEnd) -> Response {
        match self.finish.take() {
            Some(finish) => finish(end),
            // Unreachable: `finish` consumes the waiter, and only it takes the closure.
            None => Response::error(500, "Internal Server Error"),
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.shared.over.store(true, Ordering::Release);
        self.shared.parked.take();
    }
}

impl Wakeup {
    /// Ends the wait: the waiter answers with [`WaitEnd::Woken`]. Does nothing once the wait is
    /// over.
    pub fn wake(&self) {
        if self.shared.woken.swap(true, Ordering::SeqCst) {
            return;
        }
        // The server attaches, then checks `woken` before it parks: with the fences, either it
        // sees the flag or the waker is there to be taken.
        fence(Ordering::SeqCst);
        if let Some(waker) = self.shared.parked.take() {
            waker.wakeup();
        }
    }

    /// False once the wait is over (answered, or its client gone): a holder may drop it.
    pub fn is_waiting(&self) -> bool {
        !self.shared.over.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakeups_go_anywhere_and_outlive_their_waiter() {
        fn shareable<T: Send + Sync + Clone + 'static>() {}
        shareable::<Wakeup>();
        let (waiter, wakeup) = Waiter::new(Instant::now(), |end| {
            Response::json(200, format!("{end:?}").into_bytes())
        });
        assert!(wakeup.is_waiting());
        assert!(!waiter.is_woken());
        wakeup.wake();
        wakeup.clone().wake();
        assert!(waiter.is_woken());
        assert_eq!(waiter.finish(WaitEnd::Woken).body.as_bytes(), b"Woken");
        assert!(!wakeup.is_waiting(), "over once answered");
        wakeup.wake();
    }
}
