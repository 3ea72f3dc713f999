//! The socket shell around the decoder: an accept loop and one `may` coroutine per connection.
//!
//! A coroutine blocked on a read yields its worker, so slow or idle clients cost memory, not
//! workers (DESIGN decision 2). Each connection owns one read buffer; every complete request in it
//! is answered into one output buffer that is written when the input runs dry, so pipelined
//! requests are answered in order with one write.

use super::request::{Decoded, Decoder, FramingError, Method, Request};
use super::response::{write_head, Body, ConnectionHeader, Response};
use std::io::{ErrorKind, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// What serves decoded requests: the API layer implements it.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. A panic here is caught and answered with 500.
    fn handle(&self, request: &Request) -> Response;
}

/// Connection limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub idle_timeout: Duration,
}

/// Shared between the accept loop, the connections and the signal handler in `main`.
#[derive(Default)]
pub struct Shutdown {
    stopping: AtomicBool,
    in_flight: AtomicUsize,
}

impl Shutdown {
    /// Asks the server to stop accepting and to close connections after their current response.
    pub fn begin(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Requests that have started arriving and are not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// Accepts connections until shutdown begins; runs on its own coroutine.
pub fn serve(
    listener: may::net::TcpListener,
    handler: Arc<dyn Handler>,
    limits: Limits,
    shutdown: Arc<Shutdown>,
) -> may::coroutine::JoinHandle<()> {
    may::go!(move || {
        for stream in listener.incoming() {
            if shutdown.is_stopping() {
                break;
            }
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    crate::warn!("accept failed", "error" => e);
                    // Out of descriptors: back off instead of spinning on the error.
                    may::coroutine::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let handler = handler.clone();
            let shutdown = shutdown.clone();
            may::go!(move || {
                let _ = stream.set_nodelay(true);
                Connection::new(stream, limits, &*handler, &shutdown).run();
            });
        }
    })
}

/// Wakes an accept loop blocked in `accept` so it notices the shutdown: connects to it once.
pub fn wake_acceptor(address: SocketAddr) {
    let mut target = address;
    if target.ip().is_unspecified() {
        target.set_ip(match target {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let _ = std::net::TcpStream::connect_timeout(&target, Duration::from_millis(500));
}

/// Pipelined responses are written once this many bytes wait, so a client that pipelines many
/// requests for large bodies cannot make the server buffer their answers without bound.
const MAX_BUFFERED_OUTPUT_BYTES: usize = 256 * 1024;

/// Shared bodies at least this large are written from the cache with a vectored write instead of
/// being copied into the output buffer.
const VECTORED_BODY_MIN_BYTES: usize = 4096;

/// Responses waiting to be written: heads and small bodies copied into `bytes`, large cached
/// bodies kept by reference and spliced in at their offsets.
#[derive(Default)]
struct Output {
    bytes: Vec<u8>,
    /// (offset in `bytes`, body) in order.
    shared: Vec<(usize, Arc<[u8]>)>,
}

impl Output {
    fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.shared.is_empty()
    }

    fn len(&self) -> usize {
        self.bytes.len()
            + self
                .shared
                .iter()
                .map(|(_, body)| body.len())
                .sum::<usize>()
    }

    fn push(&mut self, response: &Response, head_only: bool, connection: ConnectionHeader) {
        write_head(&mut self.bytes, response, connection);
        if head_only {
            return;
        }
        match &response.body {
            Body::Shared(body) if body.len() >= VECTORED_BODY_MIN_BYTES => {
                self.shared.push((self.bytes.len(), body.clone()));
            }
            body => self.bytes.extend_from_slice(body.as_bytes()),
        }
    }

    /// Writes everything, in order, and empties the buffer.
    fn write_to(&mut self, stream: &mut may::net::TcpStream) -> std::io::Result<()> {
        let mut slices = Vec::with_capacity(2 * self.shared.len() + 1);
        let mut at = 0;
        for (offset, body) in &self.shared {
            slices.push(IoSlice::new(&self.bytes[at..*offset]));
            slices.push(IoSlice::new(body));
            at = *offset;
        }
        slices.push(IoSlice::new(&self.bytes[at..]));
        slices.retain(|s| !s.is_empty());
        let mut remaining = &mut slices[..];
        while !remaining.is_empty() {
            match stream.write_vectored(remaining) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut remaining, n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.bytes.clear();
        self.shared.clear();
        Ok(())
    }
}

struct Connection<'a> {
    stream: may::net::TcpStream,
    limits: Limits,
    handler: &'a dyn Handler,
    shutdown: &'a Shutdown,
    decoder: Decoder,
    /// The read buffer: bytes `start..end` are unconsumed; the rest is room for the next read.
    /// It is zeroed only when it grows, never per read.
    input: Vec<u8>,
    start: usize,
    end: usize,
    output: Output,
    /// The read timeout last given to the socket (setting it is a system call).
    read_timeout: Option<Duration>,
    /// Counted in `shutdown.in_flight` since the first byte of the current request.
    counted: bool,
}

impl<'a> Connection<'a> {
    fn new(
        stream: may::net::TcpStream,
        limits: Limits,
        handler: &'a dyn Handler,
        shutdown: &'a Shutdown,
    ) -> Connection<'a> {
        Connection {
            stream,
            limits,
            handler,
            shutdown,
            decoder: Decoder::new(limits.max_body_bytes),
            input: vec![0; READ_CHUNK_BYTES],
            start: 0,
            end: 0,
            output: Output::default(),
            read_timeout: None,
            counted: false,
        }
    }

    fn run(mut self) {
        if self
            .stream
            .set_write_timeout(Some(self.limits.idle_timeout))
            .is_ok()
        {
            let _ = self.serve_requests();
        }
        self.set_counted(false);
    }

    fn set_counted(&mut self, counted: bool) {
        if counted != self.counted {
            if counted {
                self.shutdown.in_flight.fetch_add(1, Ordering::SeqCst);
            } else {
                self.shutdown.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            self.counted = counted;
        }
    }

    /// Serves requests until the connection should close; an `Err` is a socket failure.
    fn serve_requests(&mut self) -> std::io::Result<()> {
        // The head of a request must arrive within the idle timeout counted from the moment the
        // connection became idle; a body must keep making progress within it.
        let mut head_deadline: Option<Instant> = None;
        loop {
            let decoded = self.decoder.decode(&self.input[self.start..self.end]);
            let (decoded, used) = match decoded {
                Ok(ok) => ok,
                Err(error) => return self.fail(error),
            };
            self.start += used;
            if self.start > 0 || used > 0 {
                self.set_counted(true);
            }
            match decoded {
                Decoded::Request(request) => {
                    let keep_open = self.answer(&request);
                    if !keep_open {
                        self.flush()?;
                        return Ok(());
                    }
                    if self.output.len() >= MAX_BUFFERED_OUTPUT_BYTES {
                        self.flush()?;
                    }
                    if self.start == self.end {
                        self.set_counted(false);
                    }
                    head_deadline = None;
                }
                Decoded::SendContinue => {
                    self.output
                        .bytes
                        .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    self.flush()?;
                }
                Decoded::NeedMore => {
                    self.flush()?;
                    if self.decoder.is_idle() && self.start == self.end {
                        self.set_counted(false);
                        if self.shutdown.is_stopping() {
                            return Ok(());
                        }
                    }
                    let now = Instant::now();
                    let deadline = if self.decoder.in_body() {
                        now + self.limits.idle_timeout
                    } else {
                        *head_deadline.get_or_insert(now + self.limits.idle_timeout)
                    };
                    if !self.fill(now, deadline)? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Answers one request into the output buffer; returns whether the connection stays open.
    fn answer(&mut self, request: &Request) -> bool {
        let response = catch_unwind(AssertUnwindSafe(|| self.handler.handle(request)))
            .unwrap_or_else(|_| Response::error(500, "Internal Server Error"));
        let keep_open = request.keep_alive && !self.shutdown.is_stopping();
        let connection = match (keep_open, request.version_minor) {
            (false, _) => ConnectionHeader::Close,
            (true, 0) => ConnectionHeader::KeepAlive,
            (true, _) => ConnectionHeader::None,
        };
        self.output
            .push(&response, request.method == Method::Head, connection);
        keep_open
    }

    /// Answers a framing error and closes (spec 1.8: every framing error closes the connection).
    fn fail(&mut self, error: FramingError) -> std::io::Result<()> {
        let (status, message) = error.status_and_message();
        self.output.push(
            &Response::error(status, message),
            false,
            ConnectionHeader::Close,
        );
        self.flush()?;
        // Let the client read the answer before the close resets the connection.
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        self.output.write_to(&mut self.stream)
    }

    /// Reads more bytes before `deadline`; false when the peer closed or the deadline passed.
    fn fill(&mut self, now: Instant, deadline: Instant) -> std::io::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.input.len() {
            // Make room: move the unconsumed bytes to the front, or grow when they fill it all
            // (a head or body larger than one read; the decoder bounds how large).
            if self.start > 0 {
                self.input.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let grown = self.input.len() * 2;
                self.input.resize(grown, 0);
            }
        }
        let remaining = deadline.saturating_duration_since(now);
        if remaining.is_zero() {
            return Ok(false);
        }
        // Setting the timeout is a system call: skip it while the one in force is within a
        // sixteenth of the idle timeout of what is wanted (the close may come that much late).
        let slack = self.limits.idle_timeout / 16;
        let close_enough = self
            .read_timeout
            .is_some_and(|set| set <= remaining + slack && remaining <= set + slack);
        if !close_enough {
            self.stream.set_read_timeout(Some(remaining))?;
            self.read_timeout = Some(remaining);
        }
        match self.stream.read(&mut self.input[self.end..]) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.end += n;
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(false),
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e),
        }
    }
}
