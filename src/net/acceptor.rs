//! The accept loop shared by every listening port.

use super::connections::{Connections, Registration};
use super::stream::{register, Descriptor, Stream};
use super::Link;
use may::io::{CoIo, WaitIo};
use std::io::{ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// First pause after an accept error that is not about one connection (out of descriptors or
/// memory), doubled on each further error up to [`MAX_ACCEPT_BACKOFF`].
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// At most one "accept failed" line per this interval; the line counts the ones left out.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// What a refused connection may have sent that is read and dropped before it is closed, so that
/// the close sends FIN (not RST, which could destroy the refusal in the client's buffer).
const REFUSED_DRAIN_BYTES: usize = 16 * 1024;
/// Descriptors the process needs besides connections (listeners, event loops, log, files).
const RESERVED_DESCRIPTORS: u64 = 64;

/// How an acceptor runs.
#[derive(Clone, Copy, Debug)]
pub struct AcceptOptions {
    /// The port's name in log lines, e.g. `api`.
    pub name: &'static str,
    /// Most connections open at once from this listener; one more is refused.
    pub max_connections: usize,
}

/// Accept errors: backoff and rate-limited logging.
struct AcceptErrors {
    name: &'static str,
    backoff: Duration,
    last_line: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    fn new(name: &'static str) -> AcceptErrors {
        AcceptErrors {
            name,
            backoff: FIRST_ACCEPT_BACKOFF,
            last_line: None,
            suppressed: 0,
        }
    }

    /// Logs `error` unless a line was written less than a second ago (then counts it).
    fn note(&mut self, message: &str, error: &std::io::Error) {
        let now = Instant::now();
        if self
            .last_line
            .is_some_and(|at| now.duration_since(at) < ACCEPT_ERROR_LOG_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        crate::warn!(
            message,
            "listener" => self.name,
            "error" => error,
            "suppressed_since_last_line" => self.suppressed
        );
        self.last_line = Some(now);
        self.suppressed = 0;
    }

    /// The pause before the next attempt; doubles each time up to its maximum.
    fn next_backoff(&mut self) -> Duration {
        let pause = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_ACCEPT_BACKOFF);
        pause
    }

    fn accepted(&mut self) {
        self.backoff = FIRST_ACCEPT_BACKOFF;
    }
}

/// Errors about one connection that went away while queued: accept the next one at once.
fn concerns_one_connection(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::Interrupted
    ) || matches!(
        error.raw_os_error(),
        Some(libc::EPROTO | libc::ENETDOWN | libc::ENETUNREACH | libc::EHOSTUNREACH)
    )
}

struct Acceptor<H, R> {
    // Fields drop in order: out of the event loop before the listener closes.
    registration: CoIo<Descriptor>,
    listener: std::net::TcpListener,
    parking: Registration,
    connections: Connections,
    options: AcceptOptions,
    open: Arc<AtomicUsize>,
    errors: AcceptErrors,
    refuse: R,
    handle: Arc<H>,
}

/// Accepts connections on `listener` on a coroutine of its own until [`Connections::stop`], and
/// serves each with `handle` on a coroutine of its own.
///
/// A connection over `options.max_connections` is given `refuse` (which writes the protocol's
/// answer without blocking) and closed. At shutdown the connections already queued are accepted
/// and served too (they see [`Link::is_stopping`]), then the listener closes. Fails when the
/// listener cannot be registered with the event loop.
pub fn spawn_acceptor<H, R>(
    listener: std::net::TcpListener,
    options: AcceptOptions,
    connections: &Connections,
    refuse: R,
    handle: H,
) -> std::io::Result<may::coroutine::JoinHandle<()>>
where
    H: Fn(Link) + Send + Sync + 'static,
    R: Fn(&std::net::TcpStream) + Send + 'static,
{
    let registration = register(listener.as_raw_fd())?;
    let parking = connections.register(registration.waker());
    let mut acceptor = Acceptor {
        registration,
        listener,
        parking,
        connections: connections.clone(),
        options,
        open: Arc::new(AtomicUsize::new(0)),
        errors: AcceptErrors::new(options.name),
        refuse,
        handle: Arc::new(handle),
    };
    Ok(may::go!(move || acceptor.run()))
}

/// Raises the soft open-file limit toward the hard one, as far as `options.max_connections`
/// needs (the hard limit is the operator's; the soft one is often left at a default of 1024),
/// and warns when even the hard limit is short: accepts would fail before the connection limit.
pub fn provide_descriptors(options: AcceptOptions) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let wanted = (options.max_connections as u64).saturating_add(RESERVED_DESCRIPTORS);
    if limit.rlim_cur == libc::RLIM_INFINITY || limit.rlim_cur >= wanted {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: if limit.rlim_max == libc::RLIM_INFINITY {
            wanted
        } else {
            wanted.min(limit.rlim_max)
        },
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we pass; raising the soft limit up to the hard one is
    // always permitted.
    let available = if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        raised.rlim_cur
    } else {
        limit.rlim_cur
    };
    if available < wanted {
        crate::warn!(
            "the open-file limit is below the connection limit: accepts fail before it",
            "listener" => options.name,
            "max_connections" => options.max_connections,
            "open_file_limit" => available
        );
    }
}

impl<H, R> Acceptor<H, R>
where
    H: Fn(Link) + Send + Sync + 'static,
    R: Fn(&std::net::TcpStream),
{
    fn run(&mut self) {
        loop {
            let stopping = self.connections.is_stopping();
            self.clear_readiness();
            match self.listener.accept() {
                Ok((socket, _peer)) => {
                    self.errors.accepted();
                    self.admit(socket);
                }
                // Shutdown: what was queued has been taken; the listener closes with `self`.
                Err(e) if e.kind() == ErrorKind::WouldBlock && stopping => return,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if !self.parking.is_stopping() {
                        self.parking.arm(None);
                        self.registration.wait_io();
                    }
                }
                Err(e) if concerns_one_connection(&e) => self.errors.note("accept failed", &e),
                // Out of descriptors or memory at shutdown: what is still queued is left.
                Err(_) if stopping => return,
                Err(e) => {
                    self.errors.note("accept failed", &e);
                    let pause = self.errors.next_backoff();
                    self.pause(pause);
                }
            }
        }
    }

    fn clear_readiness(&self) {
        #[allow(deprecated)] // The documented way to reset may's readiness flag before an attempt.
        self.registration.reset_io();
    }

    /// Waits `pause` without accepting (new connections wait in the queue), or until shutdown.
    fn pause(&mut self, pause: Duration) {
        let until = Instant::now() + pause;
        loop {
            self.clear_readiness();
            if self.parking.is_stopping() || Instant::now() >= until {
                return;
            }
            self.parking.arm(Some(until));
            self.registration.wait_io();
        }
    }

    /// Serves an accepted socket, or refuses it over the limit.
    fn admit(&mut self, socket: std::net::TcpStream) {
        if self.open.load(Ordering::SeqCst) >= self.options.max_connections {
            self.turn_away(socket);
            return;
        }
        let stream = match Stream::new(socket) {
            Ok(stream) => stream,
            Err(e) => {
                self.errors.note("cannot register a connection", &e);
                return;
            }
        };
        let link = self.connections.link(stream, self.open.clone());
        let handle = self.handle.clone();
        may::go!(move || handle(link));
    }

    /// Writes the refusal without blocking, drops what the client sent so far, and closes.
    fn turn_away(&self, socket: std::net::TcpStream) {
        if socket.set_nonblocking(true).is_err() {
            return;
        }
        (self.refuse)(&socket);
        let mut drained = 0;
        let mut scratch = [0u8; 2048];
        while drained < REFUSED_DRAIN_BYTES {
            match (&socket).read(&mut scratch) {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
        let _ = socket.shutdown(std::net::Shutdown::Write);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_back_off_and_are_counted_between_lines() {
        let mut errors = AcceptErrors::new("test");
        let pauses: Vec<Duration> = (0..10).map(|_| errors.next_backoff()).collect();
        assert_eq!(pauses[0], FIRST_ACCEPT_BACKOFF);
        assert_eq!(pauses[1], FIRST_ACCEPT_BACKOFF * 2);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*pauses.last().unwrap(), MAX_ACCEPT_BACKOFF);
        errors.accepted();
        assert_eq!(errors.next_backoff(), FIRST_ACCEPT_BACKOFF);

        let error = std::io::Error::from_raw_os_error(libc::EMFILE);
        errors.note("accept failed", &error);
        let first_line = errors.last_line;
        for _ in 0..50 {
            errors.note("accept failed", &error);
        }
        assert_eq!(
            errors.last_line, first_line,
            "no second line within a second"
        );
        assert_eq!(errors.suppressed, 50);
        errors.last_line = first_line.and_then(|at| at.checked_sub(ACCEPT_ERROR_LOG_INTERVAL));
        errors.note("accept failed", &error);
        assert_eq!(errors.suppressed, 0, "the next line counts them");
    }

    #[test]
    fn errors_about_one_connection_do_not_pause_accepting() {
        let aborted = std::io::Error::from(ErrorKind::ConnectionAborted);
        assert!(concerns_one_connection(&aborted));
        for resource in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            let error = std::io::Error::from_raw_os_error(resource);
            assert!(!concerns_one_connection(&error), "{error}");
        }
    }
}
