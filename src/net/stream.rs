//! A socket registered with may's event loop and used without blocking.

use may::io::{CoIo, WaitIo, WaitIoWaker};
use std::cell::Cell;
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, RawFd};

/// The event bits after which a read may find something: data, the peer's end of stream, or an
/// error (which the read reports). may's own bit for a waker's wake-up is not among them.
const READ_EVENTS: usize =
    (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) as usize;
/// The event bits of the peer's end of stream or a reset.
const END_EVENTS: usize = (libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) as usize;

/// The descriptor handed to may's event loop. It does not own the descriptor: the socket next to
/// it does, so that the drop order below is ours to choose.
#[derive(Debug)]
pub(super) struct Descriptor(pub(super) RawFd);

impl AsRawFd for Descriptor {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Registers `fd` with may's event loop (and makes it non-blocking).
pub(super) fn register(fd: RawFd) -> std::io::Result<CoIo<Descriptor>> {
    CoIo::new(Descriptor(fd)).map_err(std::io::Error::from)
}

/// One accepted TCP connection.
///
/// Reads and writes are single non-blocking system calls that report "nothing yet" as `None`;
/// the caller then parks the coroutine with [`super::Link::wait`] and tries again. This is what
/// may's own blocking calls do inside, with the difference that a park here also ends on a
/// deadline, a wake-up or shutdown.
pub struct Stream {
    // Fields drop in order: the registration leaves the event loop while the descriptor is still
    // open, so a descriptor number already reused by a new connection is never removed from it.
    registration: CoIo<Descriptor>,
    socket: std::net::TcpStream,
    /// False from a read that found nothing, or less than it had room for, until the event loop
    /// reports the socket readable: a read meanwhile would only find it empty. The event loop's socket registration is
    /// edge-triggered, so every arrival after that read comes with an event, and every event
    /// reaches this flag (through the readiness that each attempt and wait takes in).
    readable: Cell<bool>,
    /// The event loop reported the peer's end (or an error). A read then also takes the FIN
    /// queued behind the data it returns, and no event follows: from here on only a read that
    /// finds nothing (or the end) stops the reading.
    ended: Cell<bool>,
}

impl Stream {
    /// Registers an accepted socket; fails when the event loop cannot take it.
    pub fn new(socket: std::net::TcpStream) -> std::io::Result<Stream> {
        let registration = register(socket.as_raw_fd())?;
        Ok(Stream {
            registration,
            socket,
            readable: Cell::new(true),
            ended: Cell::new(false),
        })
    }

    /// The socket, for options (`TCP_NODELAY`) and `shutdown`.
    pub fn socket(&self) -> &std::net::TcpStream {
        &self.socket
    }

    /// Takes the socket out of the event loop and makes it blocking again, for a protocol that
    /// serves it on a plain thread (the replication links).
    pub fn into_socket(self) -> std::io::Result<std::net::TcpStream> {
        let Stream {
            registration,
            socket,
            ..
        } = self;
        // Out of the event loop while the descriptor is still open (see the field order).
        drop(registration);
        socket.set_nonblocking(false)?;
        Ok(socket)
    }

    /// Reads what has arrived: `Some(0)` at end of stream, `None` when nothing is there yet. No
    /// system call is made when nothing arrived since the last read emptied the socket (a
    /// watcher's connection after its answer, at 10,000 watchers, is 10,000 reads per change).
    pub fn try_read(&self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        self.clear_readiness();
        if !self.readable.get() {
            return Ok(None);
        }
        loop {
            match (&self.socket).read(buf) {
                Ok(n) => {
                    // A read that did not fill the buffer took everything there was: what comes
                    // next comes with an event. (A request answered and the next awaited costs
                    // one read, not a second one that finds the socket empty.) Not after the
                    // peer's end was reported: the read took the FIN too, with no event after
                    // it. Urgent data (`MSG_OOB`, which nothing here uses) also stops a read
                    // short; the rest then waits for the client's next bytes or its timeout.
                    if n > 0 && n < buf.len() && !self.ended.get() {
                        self.readable.set(false);
                    }
                    return Ok(Some(n));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.readable.set(false);
                    return Ok(None);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads what has arrived, by a system call whatever the event loop has reported so far: for
    /// a caller that must know now (whether more requests came before shutdown), where the event
    /// of bytes that just arrived may not have been polled yet.
    pub fn try_read_now(&self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        self.readable.set(true);
        self.try_read(buf)
    }

    /// Writes what the socket takes now, in order: `None` when it takes nothing yet.
    pub fn try_write(&self, slices: &[IoSlice<'_>]) -> std::io::Result<Option<usize>> {
        self.clear_readiness();
        loop {
            // One slice (a head with a small body, every watcher's answer) goes by `write`,
            // which spares the kernel's vectored path its copy and checks of the slice list.
            let written = match slices {
                [only] => (&self.socket).write(only),
                _ => (&self.socket).write_vectored(slices),
            };
            match written {
                Ok(n) => return Ok(Some(n)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Forgets the readiness seen so far: the next [`super::Link::wait`] returns on a later event
    /// only. `try_read` and `try_write` do this themselves; call it before a wait that follows no
    /// attempt on the socket.
    pub fn clear_readiness(&self) {
        #[allow(deprecated)] // The documented way to reset may's readiness flag before an attempt.
        let events = self.registration.reset_io();
        self.take_in(events);
    }

    /// Keeps from the event bits taken off may's readiness flag whether a read may succeed.
    fn take_in(&self, events: usize) {
        if events & READ_EVENTS != 0 {
            self.readable.set(true);
        }
        if events & END_EVENTS != 0 {
            self.ended.set(true);
        }
    }

    /// A handle that ends the current or next park of this stream's coroutine, from any thread.
    pub fn waker(&self) -> WaitIoWaker {
        self.registration.waker()
    }

    /// Parks the coroutine until an event on the socket or a waker fires.
    pub(super) fn wait_ready(&self) {
        let events = self.registration.wait_io();
        self.take_in(events);
    }
}
