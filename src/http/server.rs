//! The socket shell around the decoder: an accept loop and one `may` coroutine per connection.
//!
//! A coroutine blocked on a read yields its worker, so slow or idle clients cost memory, not
//! workers (DESIGN decision 2). Each connection owns one read buffer; every complete request in it
//! is answered into one output buffer that is written when the input runs dry, so pipelined
//! requests are answered in order with one write.

use super::request::{Decoded, Decoder, FramingError, Method, Request};
use super::response::{write_response, ConnectionHeader, Response};
use std::io::{ErrorKind, Read, Write};
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

    /// Called after each response with what the access log needs.
    fn log_access(&self, _request: &Request, _response: &Response, _elapsed: Duration) {}
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

struct Connection<'a> {
    stream: may::net::TcpStream,
    limits: Limits,
    handler: &'a dyn Handler,
    shutdown: &'a Shutdown,
    decoder: Decoder,
    input: Vec<u8>,
    /// Start of the unconsumed bytes in `input`.
    start: usize,
    output: Vec<u8>,
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
            input: Vec::with_capacity(READ_CHUNK_BYTES),
            start: 0,
            output: Vec::with_capacity(4096),
            counted: false,
        }
    }

    fn run(mut self) {
        let _ = self.serve_requests();
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
        let mut head_deadline = Instant::now() + self.limits.idle_timeout;
        loop {
            let decoded = self.decoder.decode(&self.input[self.start..]);
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
                    if self.start == self.input.len() {
                        self.set_counted(false);
                    }
                    head_deadline = Instant::now() + self.limits.idle_timeout;
                }
                Decoded::SendContinue => {
                    self.output
                        .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    self.flush()?;
                }
                Decoded::NeedMore => {
                    self.flush()?;
                    if self.decoder.is_idle() && self.start == self.input.len() {
                        self.set_counted(false);
                        if self.shutdown.is_stopping() {
                            return Ok(());
                        }
                    }
                    let deadline = if self.decoder.in_body() {
                        Instant::now() + self.limits.idle_timeout
                    } else {
                        head_deadline
                    };
                    if !self.fill(deadline)? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Answers one request into the output buffer; returns whether the connection stays open.
    fn answer(&mut self, request: &Request) -> bool {
        let started = Instant::now();
        let response = catch_unwind(AssertUnwindSafe(|| self.handler.handle(request)))
            .unwrap_or_else(|_| Response::error(500, "Internal Server Error"));
        let keep_open = request.keep_alive && !self.shutdown.is_stopping();
        let connection = match (keep_open, request.version_minor) {
            (false, _) => ConnectionHeader::Close,
            (true, 0) => ConnectionHeader::KeepAlive,
            (true, _) => ConnectionHeader::None,
        };
        write_response(
            &mut self.output,
            &response,
            request.method == Method::Head,
            connection,
        );
        self.handler
            .log_access(request, &response, started.elapsed());
        keep_open
    }

    /// Answers a framing error and closes (spec 1.8: every framing error closes the connection).
    fn fail(&mut self, error: FramingError) -> std::io::Result<()> {
        let (status, message) = error.status_and_message();
        write_response(
            &mut self.output,
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
        if !self.output.is_empty() {
            self.stream
                .set_write_timeout(Some(self.limits.idle_timeout))?;
            self.stream.write_all(&self.output)?;
            self.output.clear();
        }
        Ok(())
    }

    /// Reads more bytes before `deadline`; false when the peer closed or the deadline passed.
    fn fill(&mut self, deadline: Instant) -> std::io::Result<bool> {
        if self.start > 0 {
            self.input.drain(..self.start);
            self.start = 0;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(false);
        }
        self.stream.set_read_timeout(Some(remaining))?;
        let len = self.input.len();
        self.input.resize(len + READ_CHUNK_BYTES, 0);
        let result = self.stream.read(&mut self.input[len..]);
        match result {
            Ok(0) => {
                self.input.truncate(len);
                Ok(false)
            }
            Ok(n) => {
                self.input.truncate(len + n);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                self.input.truncate(len);
                Ok(false)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {
                self.input.truncate(len);
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }
}
