//! Streamed bodies are made on plain threads, never on a `may` worker (issue 17, scale).
//!
//! A `may` worker polls its sockets only when its queue of ready coroutines is empty: a coroutine
//! that renders a listing of a million instances, however often it yields, keeps that queue busy
//! (two such renders on one worker keep it busy for good), and the heartbeats of every other
//! connection of the worker wait seconds to be read. So the connection's coroutine only writes:
//! a render thread runs the body's [`Producer`] (with its gzip coding, if any) and hands the
//! pieces over.
//!
//! Two buffers circulate between them. The thread fills one and sends it on a `may` channel,
//! which parks the coroutine until a piece comes (woken from the thread, without holding its
//! worker); the coroutine writes it and sends it back, emptied, on another, on which the thread
//! blocks (a `may` channel blocks a plain thread like any): a client that reads slowly holds its
//! render thread still, one piece ahead.
//! When the connection ends (the client left, or stalled past the idle timeout) both channels
//! close, the thread sees it at its next send or receive, drops the producer (and with it the
//! listing's snapshot) and ends.
//!
//! At most [`MAX_RENDERS`] renders make a piece at once (one waiting for its client holds no
//! such slot), and at most [`MAX_STREAMS`] render threads exist; a stream beyond them waits for
//! a slot on a `may` semaphore (its coroutine parks; its worker serves others). The threads run
//! at a lower scheduling priority ([`RENDER_NICE`]) once their snapshot is taken, so that the
//! workers, whose work is short, win the cores when both want them.

use super::response::{More, Producer};
use may::sync::mpsc::{channel, Receiver, Sender};
use std::sync::OnceLock;

/// Renders that make a piece at once. A render that waits for its client (which has not taken
/// the pieces made) holds none, so slow readers never keep anyone else's listing waiting.
pub const MAX_RENDERS: usize = 16;
/// Render threads at once, waiting for their clients or not: each holds a thread, two pieces and
/// what its producer holds (concurrent full listings of an unchanged namespace share their
/// snapshot), so that clients that never read cannot grow the process without bound. A stream
/// beyond them waits for one to end (a stalled client's ends at the idle timeout).
pub const MAX_STREAMS: usize = 256;
/// The nice value of render threads: below the workers (0), so that a heartbeat is served
/// between pieces of a render when both want a core. Taken after the first piece, which takes
/// the listing's snapshot under the store's shard locks: a lock holder at a low priority would
/// hold up the workers that wait for the lock.
const RENDER_NICE: libc::c_int = 10;
/// Stack of a render thread: producers are loops over instances, with no deep recursion.
const RENDER_STACK_BYTES: usize = 256 * 1024;
/// Pieces in flight between a render thread and its connection: one written while the next is
/// made.
const PIECES: usize = 2;

/// The process's slots for render threads, and for renders making a piece.
fn slots() -> &'static [may::sync::Semphore; 2] {
    static SLOTS: OnceLock<[may::sync::Semphore; 2]> = OnceLock::new();
    SLOTS.get_or_init(|| {
        [
            may::sync::Semphore::new(MAX_STREAMS),
            may::sync::Semphore::new(MAX_RENDERS),
        ]
    })
}

/// A slot, given back when dropped.
struct Slot(&'static may::sync::Semphore);

impl Slot {
    /// Waits for a free slot for a render thread (parking the coroutine).
    fn stream() -> Slot {
        Slot::take(&slots()[0])
    }

    /// Waits for a free slot to make a piece (blocking the render thread).
    fn piece() -> Slot {
        Slot::take(&slots()[1])
    }

    fn take(slots: &'static may::sync::Semphore) -> Slot {
        slots.wait();
        Slot(slots)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.post();
    }
}

/// A piece of a body made on the render thread.
pub struct Piece {
    pub bytes: Vec<u8>,
    /// The body's last piece (it may be empty).
    pub last: bool,
}

/// The connection's end of a render: pieces come in, emptied buffers go back.
pub struct Render {
    filled: Receiver<Piece>,
    /// Buffers go back as pieces too: one channel type for both ways keeps the binary smaller.
    emptied: Sender<Piece>,
}

impl Render {
    /// Starts rendering `producer` in pieces of about `piece_bytes` on a render thread, once a
    /// slot is free. Fails when no thread can be started.
    pub fn start(producer: Box<dyn Producer>, piece_bytes: usize) -> std::io::Result<Render> {
        let slot = Slot::stream();
        let (filled_tx, filled) = channel();
        let (emptied, emptied_rx) = channel();
        for _ in 0..PIECES {
            let bytes = Vec::with_capacity(piece_bytes + piece_bytes / 8);
            // Cannot fail: the receiver is held here.
            let _ = emptied.send(Piece { bytes, last: false });
        }
        std::thread::Builder::new()
            .name("render".into())
            .stack_size(RENDER_STACK_BYTES)
            .spawn(move || {
                render(producer, piece_bytes, &filled_tx, &emptied_rx);
                // The producer (and its snapshot) went inside `render`; the slot goes last, so
                // the renders' memory is bounded by the slots.
                drop(slot);
            })?;
        Ok(Render { filled, emptied })
    }

    /// The next piece; `None` when the render thread ended without a last piece (it cannot,
    /// unless it failed).
    pub fn next(&self) -> Option<Piece> {
        self.filled.recv().ok()
    }

    /// Hands a written piece's buffer back to be filled again.
    pub fn give_back(&self, mut bytes: Vec<u8>) {
        bytes.clear();
        // The thread may have ended (it made its last piece): nothing to give back to then.
        let _ = self.emptied.send(Piece { bytes, last: false });
    }
}

/// The render thread's loop: fills the buffers it is given back until the body is made or the
/// connection's end of either channel went away.
fn render(
    mut producer: Box<dyn Producer>,
    piece_bytes: usize,
    filled: &Sender<Piece>,
    emptied: &Receiver<Piece>,
) {
    let mut first = true;
    while let Ok(Piece { mut bytes, .. }) = emptied.recv() {
        let making = Slot::piece();
        let last = loop {
            match producer.produce(&mut bytes, piece_bytes) {
                More::Done => break true,
                // Ended without a last piece: the connection closes the body unfinished.
                More::Failed => return,
                More::Yes if bytes.len() >= piece_bytes => break false,
                More::Yes => {}
            }
        };
        drop(making);
        if std::mem::take(&mut first) {
            lower_priority();
        }
        if filled.send(Piece { bytes, last }).is_err() || last {
            break;
        }
    }
    drop(producer);
}

/// Lowers this thread's scheduling priority to [`RENDER_NICE`]. On Linux a nice value belongs
/// to a thread (its tid); raising it needs no privilege. A failure leaves the thread as it is.
fn lower_priority() {
    // SAFETY: gettid(2) takes no argument and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    // SAFETY: setpriority(2) with plain integers; only this thread is changed.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, RENDER_NICE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts to `to` in decimal, a number per call.
    struct Counting {
        next: usize,
        to: usize,
        dropped: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl Producer for Counting {
        fn produce(&mut self, out: &mut Vec<u8>, _fill_to: usize) -> More {
            out.extend_from_slice(format!("{},", self.next).as_bytes());
            self.next += 1;
            if self.next == self.to {
                More::Done
            } else {
                More::Yes
            }
        }
    }

    impl Drop for Counting {
        fn drop(&mut self) {
            self.dropped
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn counting(
        to: usize,
    ) -> (
        Box<dyn Producer>,
        std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let producer = Counting {
            next: 0,
            to,
            dropped: dropped.clone(),
        };
        (Box::new(producer), dropped)
    }

    #[test]
    fn a_render_gives_the_whole_body_in_pieces() {
        let (producer, dropped) = counting(10_000);
        let expected: String = (0..10_000).map(|n| format!("{n},")).collect();
        let render = Render::start(producer, 1000).unwrap();
        let mut body = Vec::new();
        let mut pieces = 0;
        loop {
            let piece = render.next().unwrap();
            body.extend_from_slice(&piece.bytes);
            pieces += 1;
            let last = piece.last;
            render.give_back(piece.bytes);
            if last {
                break;
            }
        }
        assert_eq!(String::from_utf8(body).unwrap(), expected);
        assert!(pieces > 40, "{pieces} pieces");
        drop(render);
        let started = std::time::Instant::now();
        while !dropped.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn a_render_whose_reader_leaves_ends_and_frees_its_producer() {
        let (producer, dropped) = counting(usize::MAX);
        let render = Render::start(producer, 1000).unwrap();
        let first = render.next().unwrap();
        assert!(!first.last);
        drop(render);
        let started = std::time::Instant::now();
        while !dropped.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // Its slot is free again: every slot can be taken.
        let slots: Vec<Slot> = (0..MAX_STREAMS).map(|_| Slot::stream()).collect();
        drop(slots);
    }

    #[test]
    fn a_render_whose_reader_does_not_read_holds_no_slot_to_make_pieces() {
        let (producer, _dropped) = counting(usize::MAX);
        let render = Render::start(producer, 1000).unwrap();
        // Both pieces made, neither given back: the thread waits for its reader.
        let _first = render.next().unwrap();
        let _second = render.next().unwrap();
        let pieces: Vec<Slot> = (0..MAX_RENDERS).map(|_| Slot::piece()).collect();
        drop(pieces);
        drop(render);
    }
}
