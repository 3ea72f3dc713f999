//! The socket shell around the decoder: one `may` coroutine per connection (the acceptor in
//! [`crate::net`] starts it), reading requests, answering them in order, and closing.
//!
//! A coroutine that waits for bytes yields its worker, so slow or idle clients cost memory, not
//! workers (DESIGN decision 2). Each connection owns one read buffer; every complete request in it
//! is answered into one output buffer that is written when the input runs dry, so pipelined
//! requests are answered in order with one write. Large bodies are written from where they are
//! (the cache, the handler's buffer, the binary) and never copied into, or kept by, the
//! connection; its buffers shrink back once a large response or head has passed. A streamed body
//! (a listing too large to hold) is written piece by piece as its producer makes it, chunked, or
//! to an HTTP/1.0 client until the connection closes.
//!
//! Time limits: a new request must start within the idle timeout; its head must be complete
//! within the idle timeout of the connection becoming idle and, like its body, within the request
//! timeout of its first byte (a trickle does not extend it). A head that stalls is closed without
//! an answer (spec 1.8); a body that stalls gets 408.
//!
//! At shutdown every connection answers what it has received (the requests in its buffer, in the
//! socket, and one still arriving), says `Connection: close` on the last answer, and closes;
//! idle connections close at once. A request that waits ([`Reply::Wait`]) is answered at once.

use super::encoding;
use super::render::Render;
use super::request::{BodyBudget, Decoded, Decoder, FramingError, Method, Request};
use super::response::{
    write_framed_head, write_head, Body, ConnectionHeader, Framing, Producer, Response, Streamed,
};
use super::turn;
use super::wait::{Reply, WaitEnd, Waiter};
use crate::net::Link;
use std::io::{ErrorKind, IoSlice};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The read buffer's size, and the bytes asked of the socket per read. It grows only for a head
/// larger than this (the decoder bounds heads) and shrinks back when the connection is idle.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Pipelined bytes read behind a waiting request, at most: no more than the read buffer holds
/// anyway, so a waiting connection never keeps a larger one (waits last up to 10 minutes, and a
/// connection outside a wait holds a large head only for the request timeout). Beyond it the
/// request is answered at once with the current state.
const MAX_READ_WHILE_WAITING_BYTES: usize = READ_CHUNK_BYTES;
/// Pipelined responses are written once this many bytes wait, so a client that pipelines many
/// requests for large bodies cannot make the server buffer their answers without bound.
const MAX_BUFFERED_OUTPUT_BYTES: usize = 256 * 1024;
/// Bodies at least this large are written from where they are (with a vectored write) instead of
/// being copied into the output buffer.
const VECTORED_BODY_MIN_BYTES: usize = 4096;
/// Large bodies waiting in the output at most; reaching it writes the output. Bounds the write's
/// slice list, which lives on the stack.
const MAX_SPLICED_BODIES: usize = 16;
/// A streamed body is written in pieces of about this size (a chunk each, when chunked).
const STREAM_PIECE_BYTES: usize = 32 * 1024;
/// Output buffer capacity kept after a write; a larger one (many pipelined answers) is freed.
const OUTPUT_RETAINED_BYTES: usize = 64 * 1024;
/// Room reserved for a response head before it is written: the heads the API writes fit.
const HEAD_RESERVE_BYTES: usize = 256;
/// Marked responses remembered per write whose room is kept after it (many pipelined answers
/// free theirs).
const MARKED_RETAINED: usize = 128;
/// After a response that closes the connection, how long unread client bytes are read and dropped
/// before the socket closes (closing with unread bytes resets the connection, which can destroy
/// the response before the client reads it), and how many at most.
const LINGER_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_LINGER_BYTES: usize = 256 * 1024;

/// The answer to a connection over `--max_connections`.
pub const TOO_MANY_CONNECTIONS: &str = "Too many open connections, retry later";
/// The answer to a request whose body did not arrive within the request timeout.
pub const REQUEST_TIMED_OUT: &str = "Request not received in time";

/// What serves decoded requests: the API layer implements it.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request, now or after a wait. It must not panic: the release build aborts on panic.
    fn handle(&self, request: &Request) -> Reply;

    /// Told of each response with a non-zero [`Response::tag`] once it is written: its tag, its
    /// status, and when its request was complete ([`crate::raw_clock::monotonic_nanos`]). Not
    /// told of responses that could not be written, nor of requests whose client went away while
    /// they waited. Must be quick.
    fn written(&self, tag: u16, status: u16, received_nanos: u64) {
        let _ = (tag, status, received_nanos);
    }
}

/// Connection limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Bytes of request bodies all connections may hold at once.
    pub max_body_memory: usize,
    /// Longest wait for a new request, and for a head from the moment the connection was idle.
    pub idle_timeout: Duration,
    /// Longest time from a request's first byte to its last.
    pub request_timeout: Duration,
}

/// The HTTP side of the API port: the handler, the limits and what all connections share.
pub struct Server {
    handler: Arc<dyn Handler>,
    limits: Limits,
    budget: Arc<BodyBudget>,
    in_flight: AtomicUsize,
}

impl Server {
    pub fn new(handler: Arc<dyn Handler>, limits: Limits) -> Server {
        Server {
            handler,
            limits,
            budget: Arc::new(BodyBudget::new(limits.max_body_memory)),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Requests that have started arriving and are not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Bytes request bodies hold now.
    pub fn body_memory_in_use(&self) -> usize {
        self.budget.in_use()
    }

    /// Serves one connection until it closes; runs on the connection's own coroutine.
    pub fn serve(&self, link: Link) {
        let _ = link.stream().socket().set_nodelay(true);
        let peer = link.stream().socket().peer_addr().ok();
        let mut connection = Connection {
            link,
            server: self,
            decoder: Decoder::with_budget(self.limits.max_body_bytes, self.budget.clone()),
            input: vec![0; READ_CHUNK_BYTES],
            start: 0,
            end: 0,
            output: Output::default(),
            counted: false,
            peer,
        };
        let end = connection.serve_requests();
        if let Ok(End::Linger) = end {
            connection.linger();
        }
        connection.set_counted(false);
    }
}

/// The answer to a connection over the connection limit: a JSON 503 that closes. Written without
/// blocking on the fresh socket (it fits its send buffer); the acceptor closes the socket.
pub fn refuse_connection(socket: &std::net::TcpStream) {
    use std::io::Write;
    let response = Response::error(503, TOO_MANY_CONNECTIONS);
    let mut bytes = Vec::with_capacity(256);
    write_head(&mut bytes, &response, ConnectionHeader::Close);
    bytes.extend_from_slice(response.body.as_bytes());
    let _ = (&*socket).write(&bytes);
}

/// How a connection ends.
enum End {
    /// Close now: the client closed, or the connection was idle (nothing unread).
    Drop,
    /// The server closes after a response: half-close, drop what the client still sends, close.
    Linger,
}

/// What reading found.
enum Filled {
    Bytes,
    PeerClosed,
    /// The connection is idle and the server is shutting down.
    Stopping,
    TimedOut,
}

/// After an answer.
enum Answered {
    KeepOpen,
    Close,
    /// The client went away while its request waited.
    ClientGone,
}

/// Responses waiting to be written: heads and small bodies copied into `bytes`, large bodies
/// kept by value (moved, not copied) and spliced in at their offsets.
#[derive(Default)]
struct Output {
    bytes: Vec<u8>,
    /// (offset in `bytes`, body) in order.
    spliced: Vec<(usize, Body)>,
    spliced_bytes: usize,
    /// (tag, status, request complete: a raw monotonic reading) of the marked responses in the
    /// buffer.
    marked: Vec<(u16, u16, u64)>,
    /// A request that waited was answered since the connection was last idle.
    answered_a_wait: bool,
}

impl Output {
    fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.spliced.is_empty()
    }

    /// Frees the buffers of a connection gone idle (everything written) after answering a
    /// request that waited. Kept, they would stay with a watcher's connection however long it
    /// idles: 10,000 watchers woken by one change would
    /// each grow the heap by an answer (a page-by-page `mprotect` in a worker's malloc arena,
    /// measured at a tenth of the server's CPU for the wake), where freed, the next answer on
    /// the same worker reuses the same block from the thread's cache.
    fn release(&mut self) {
        debug_assert!(self.is_empty() && self.marked.is_empty());
        // Other connections keep theirs, so a keep-alive request allocates nothing.
        if !std::mem::take(&mut self.answered_a_wait) {
            return;
        }
        if self.bytes.capacity() > 0 {
            self.bytes = Vec::new();
        }
        // The same for the list of marked responses (a watcher's answer is its first).
        if self.marked.capacity() > 0 {
            self.marked = Vec::new();
        }
    }

    fn should_write(&self) -> bool {
        self.bytes.len() + self.spliced_bytes >= MAX_BUFFERED_OUTPUT_BYTES
            || self.spliced.len() >= MAX_SPLICED_BODIES
    }

    fn push(&mut self, response: Response, head_only: bool, connection: ConnectionHeader) {
        self.push_received(response, head_only, connection, None);
    }

    /// Adds a response; a marked one with the time its request was complete is remembered for
    /// [`Handler::written`]. An owned body copied into the buffer is handed back, for the room of
    /// a later one.
    fn push_received(
        &mut self,
        response: Response,
        head_only: bool,
        connection: ConnectionHeader,
        received_nanos: Option<u64>,
    ) -> Option<Vec<u8>> {
        if let (Some(received_nanos), tag @ 1..) = (received_nanos, response.tag) {
            self.marked.push((tag, response.status, received_nanos));
        }
        let length = response.body.as_bytes().len();
        // One allocation for the head (and a small body) rather than a doubling for every few
        // bytes: a connection's first answer (each watcher's) starts from an empty buffer.
        let inline_body = if head_only || length >= VECTORED_BODY_MIN_BYTES {
            0
        } else {
            length
        };
        self.bytes.reserve(HEAD_RESERVE_BYTES + inline_body);
        write_head(&mut self.bytes, &response, connection);
        let body = response.body;
        if head_only {
            return None;
        }
        if length >= VECTORED_BODY_MIN_BYTES {
            self.spliced_bytes += length;
            self.spliced.push((self.bytes.len(), body));
            return None;
        }
        if length > 0 {
            self.bytes.extend_from_slice(body.as_bytes());
        }
        match body {
            Body::Owned(copied) => Some(copied),
            _ => None,
        }
    }

    /// Writes everything, in order, and empties the buffer. A write that makes no progress for
    /// `stall_timeout` fails.
    fn write_to(&mut self, link: &Link, stall_timeout: Duration) -> std::io::Result<()> {
        let mut slices: [IoSlice<'_>; 2 * MAX_SPLICED_BODIES + 1] =
            [IoSlice::new(&[]); 2 * MAX_SPLICED_BODIES + 1];
        let mut count = 0;
        let mut at = 0;
        for (offset, body) in &self.spliced {
            slices[count] = IoSlice::new(&self.bytes[at..*offset]);
            slices[count + 1] = IoSlice::new(body.as_bytes());
            count += 2;
            at = *offset;
        }
        slices[count] = IoSlice::new(&self.bytes[at..]);
        count += 1;
        write_slices(link, &mut slices[..count], stall_timeout)?;
        self.bytes.clear();
        if self.bytes.capacity() > OUTPUT_RETAINED_BYTES {
            self.bytes = Vec::new();
        }
        // Drops the large bodies: a connection keeps none of them.
        self.spliced.clear();
        self.spliced_bytes = 0;
        Ok(())
    }
}

/// Writes every slice, in order, parking while the socket is full. A write that makes no
/// progress for `stall_timeout` fails.
fn write_slices(
    link: &Link,
    mut remaining: &mut [IoSlice<'_>],
    stall_timeout: Duration,
) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut remaining, 0);
    let mut stalled_until: Option<Instant> = None;
    while !remaining.is_empty() {
        match link.stream().try_write(remaining)? {
            Some(0) => return Err(ErrorKind::WriteZero.into()),
            Some(n) => {
                IoSlice::advance_slices(&mut remaining, n);
                stalled_until = None;
            }
            None => {
                let now = Instant::now();
                let deadline = *stalled_until.get_or_insert(now + stall_timeout);
                if now >= deadline {
                    return Err(ErrorKind::TimedOut.into());
                }
                link.wait(Some(deadline));
            }
        }
    }
    Ok(())
}

/// Writes one piece of a streamed body as `framing` has it: a chunk (an empty piece is no chunk,
/// which would end the body), and after the last piece the chunked body's end.
fn write_piece(
    link: &Link,
    piece: &[u8],
    framing: Framing,
    last: bool,
    stall_timeout: Duration,
) -> std::io::Result<()> {
    if framing != Framing::Chunked {
        return write_slices(link, &mut [IoSlice::new(piece)], stall_timeout);
    }
    let size_line = format!("{:x}\r\n", piece.len());
    let (size_line, chunk_end): (&[u8], &[u8]) = if piece.is_empty() {
        (b"", b"")
    } else {
        (size_line.as_bytes(), b"\r\n")
    };
    let body_end: &[u8] = if last { b"0\r\n\r\n" } else { b"" };
    let mut slices = [
        IoSlice::new(size_line),
        IoSlice::new(piece),
        IoSlice::new(chunk_end),
        IoSlice::new(body_end),
    ];
    write_slices(link, &mut slices, stall_timeout)
}

struct Connection<'a> {
    link: Link,
    server: &'a Server,
    decoder: Decoder,
    /// The read buffer: bytes `start..end` are unconsumed; the rest is room for the next read.
    /// It is zeroed only when it grows, never per read.
    input: Vec<u8>,
    start: usize,
    end: usize,
    output: Output,
    /// Counted in `server.in_flight` since the first byte of the current request.
    counted: bool,
    /// The client's address, read once, for the requests' access log lines.
    peer: Option<std::net::SocketAddr>,
}

impl Connection<'_> {
    fn set_counted(&mut self, counted: bool) {
        if counted != self.counted {
            if counted {
                self.server.in_flight.fetch_add(1, Ordering::SeqCst);
            } else {
                self.server.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            self.counted = counted;
        }
    }

    fn limits(&self) -> Limits {
        self.server.limits
    }

    /// Serves requests until the connection should close; an `Err` is a socket failure.
    fn serve_requests(&mut self) -> std::io::Result<End> {
        // When the head of the next request must be complete: the idle timeout from the moment
        // the connection became idle.
        let mut head_deadline: Option<Instant> = None;
        // When the current request must be complete: the request timeout from its first byte.
        let mut request_deadline: Option<Instant> = None;
        loop {
            let decoded = self.decoder.decode(&self.input[self.start..self.end]);
            let (decoded, used) = match decoded {
                Ok(ok) => ok,
                Err(error) => {
                    self.fail(error)?;
                    return Ok(End::Linger);
                }
            };
            self.start += used;
            match decoded {
                Decoded::Request(request) => {
                    self.set_counted(true);
                    match self.answer(request)? {
                        Answered::KeepOpen => {}
                        Answered::Close => {
                            self.flush()?;
                            return Ok(End::Linger);
                        }
                        Answered::ClientGone => return Ok(End::Drop),
                    }
                    if self.output.should_write() {
                        self.flush()?;
                    }
                    head_deadline = None;
                    request_deadline = None;
                }
                Decoded::SendContinue => {
                    self.output
                        .bytes
                        .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    self.flush()?;
                }
                Decoded::NeedMore => {
                    self.flush()?;
                    let idle = self.decoder.is_idle() && self.start == self.end;
                    let now = Instant::now();
                    let limits = self.limits();
                    let head_by = *head_deadline.get_or_insert(now + limits.idle_timeout);
                    let deadline = if idle {
                        self.set_counted(false);
                        self.shrink_input();
                        self.output.release();
                        head_by
                    } else {
                        self.set_counted(true);
                        let whole_by =
                            *request_deadline.get_or_insert(now + limits.request_timeout);
                        if self.decoder.in_body() {
                            whole_by
                        } else {
                            whole_by.min(head_by)
                        }
                    };
                    match self.fill(deadline, idle)? {
                        Filled::Bytes => {}
                        Filled::PeerClosed | Filled::Stopping => return Ok(End::Drop),
                        Filled::TimedOut if self.decoder.in_body() => {
                            self.output.push(
                                Response::error(408, REQUEST_TIMED_OUT),
                                false,
                                ConnectionHeader::Close,
                            );
                            self.flush()?;
                            return Ok(End::Linger);
                        }
                        // An idle connection, or a head that stalled: closed without an answer.
                        Filled::TimedOut => return Ok(End::Drop),
                    }
                }
            }
        }
    }

    /// Answers one request, complete now, into the output buffer.
    fn answer(&mut self, mut request: Box<Request>) -> std::io::Result<Answered> {
        request.peer = self.peer;
        // The handler's deadlines count from `received`; the metrics' latency from the raw
        // reading, which costs a tenth of an `Instant::elapsed` to subtract.
        request.received = Instant::now();
        let received_nanos = crate::raw_clock::monotonic_nanos();
        let head_only = request.method == Method::Head;
        let keep_alive = request.keep_alive;
        let version_minor = request.version_minor;
        let gzip = encoding::accepts_gzip(&request);
        let handler = &*self.server.handler;
        let reply = handler.handle(&request);
        // The body's memory goes back to the budget before any wait; the rest of the request is
        // kept for the next one to reuse.
        self.decoder.recycle(request);
        let mut waited = false;
        let mut response = match reply {
            Reply::Now(response) => response,
            Reply::Wait(waiter) => match self.park(waiter)? {
                Some(response) => {
                    self.output.answered_a_wait = true;
                    waited = true;
                    response
                }
                None => return Ok(Answered::ClientGone),
            },
        };
        encoding::negotiate(&mut response, gzip, &mut turn::take_turns);
        let streamed = response.body.is_streamed();
        // At shutdown the last request received gets `Connection: close`; so does a streamed
        // body to an HTTP/1.0 client, which cannot be chunked and so ends with the connection
        // (its HEAD says the same).
        let keep_open = keep_alive
            && !(streamed && version_minor == 0)
            && (!self.link.is_stopping() || self.more_input()?);
        let connection = match (keep_open, version_minor) {
            (false, _) => ConnectionHeader::Close,
            (true, 0) => ConnectionHeader::KeepAlive,
            (true, _) => ConnectionHeader::None,
        };
        if streamed {
            let framing = if version_minor == 0 {
                Framing::UntilClose
            } else {
                Framing::Chunked
            };
            self.stream(response, head_only, connection, framing, received_nanos)?;
        } else {
            let copied =
                self.output
                    .push_received(response, head_only, connection, Some(received_nanos));
            // The answer to a wait keeps nothing, as the output buffer does not (see
            // `Output::release`).
            if let Some(body) = copied.filter(|_| !waited) {
                self.decoder.recycle_room(body);
            }
        }
        Ok(if keep_open {
            Answered::KeepOpen
        } else {
            Answered::Close
        })
    }

    /// Writes a response whose body is streamed: the answers before it, its head, then its body
    /// piece by piece as a render thread makes it ([`render`]): the coroutine only writes, and
    /// parks while the next piece is made. A piece's write parks while the client does not read,
    /// and fails (closing the connection) after the idle timeout without progress, so a stalled
    /// reader holds neither a worker nor, once its render thread saw the connection end, the
    /// body's memory for longer. At shutdown a stream goes on to its end (the process's grace
    /// period bounds it), so a client that reads gets a whole body. The response's
    /// [`Response::on_streamed`] is told the body bytes written, whether or not all were.
    fn stream(
        &mut self,
        mut response: Response,
        head_only: bool,
        connection: ConnectionHeader,
        framing: Framing,
        received_nanos: u64,
    ) -> std::io::Result<()> {
        self.output.bytes.reserve(HEAD_RESERVE_BYTES);
        write_framed_head(&mut self.output.bytes, &response, connection, framing);
        let mark = (response.tag, response.status, received_nanos);
        let on_streamed = response.on_streamed.take();
        let Body::Streamed(Streamed(producer)) = response.body else {
            return Ok(());
        };
        let mut written = 0u64;
        let streamed = if head_only {
            drop(producer);
            Ok(())
        } else {
            self.write_streamed(producer, framing, &mut written)
        };
        if let Some(on_streamed) = on_streamed {
            (on_streamed.0)(written);
        }
        streamed?;
        if mark.0 != 0 {
            if head_only {
                self.output.marked.push(mark);
            } else {
                self.server.handler.written(mark.0, mark.1, mark.2);
            }
        }
        Ok(())
    }

    /// Writes the head buffered so far, then the pieces a render thread makes of `producer`,
    /// counting the body bytes in `written`.
    fn write_streamed(
        &mut self,
        producer: Box<dyn Producer>,
        framing: Framing,
        written: &mut u64,
    ) -> std::io::Result<()> {
        self.flush()?;
        let stall_timeout = self.limits().idle_timeout;
        let render = Render::start(producer, STREAM_PIECE_BYTES)?;
        loop {
            let Some(piece) = render.next() else {
                return Err(std::io::Error::other("a streamed body's render failed"));
            };
            write_piece(&self.link, &piece.bytes, framing, piece.last, stall_timeout)?;
            *written += piece.bytes.len() as u64;
            if piece.last {
                // The render thread has ended (or is ending) with the body's memory.
                return Ok(());
            }
            render.give_back(piece.bytes);
        }
    }

    /// Parks a waiting request until it is woken, its deadline passes or shutdown begins, while
    /// reading what the client sends behind it; `None` when the client went away (the waiter is
    /// dropped, which frees it).
    fn park(&mut self, waiter: Waiter) -> std::io::Result<Option<Response>> {
        // Answers pipelined before this request go out first.
        self.flush()?;
        // A read buffer that grew for this request's large head is not kept through the wait:
        // what is pipelined behind it, if it fits, moves to a buffer of the ordinary size.
        if self.input.len() > READ_CHUNK_BYTES && self.end - self.start <= READ_CHUNK_BYTES {
            let mut input = vec![0; READ_CHUNK_BYTES];
            input[..self.end - self.start].copy_from_slice(&self.input[self.start..self.end]);
            self.input = input;
            self.end -= self.start;
            self.start = 0;
        }
        let deadline = waiter.deadline();
        waiter.attach(self.link.stream().waker());
        let end = loop {
            // Woken (the common end of a watch): answer without another read, which would only
            // find the socket empty; at 10,000 watchers that is 10,000 system calls per change.
            if waiter.is_woken() {
                break WaitEnd::Woken;
            }
            // Attempt first, then check, then park: a wake-up after the attempt ends the park.
            if self.end - self.start < MAX_READ_WHILE_WAITING_BYTES
                && self.make_room(MAX_READ_WHILE_WAITING_BYTES)
            {
                match self.link.stream().try_read(&mut self.input[self.end..])? {
                    Some(0) => return Ok(None),
                    Some(n) => {
                        self.end += n;
                        continue;
                    }
                    None => {}
                }
            } else {
                // More than the budget waits behind this request: answer it now with the current
                // state, rather than park without watching for the client going away.
                break WaitEnd::TimedOut;
            }
            if self.link.is_stopping() {
                break WaitEnd::Shutdown;
            }
            if waiter.is_woken() {
                break WaitEnd::Woken;
            }
            if Instant::now() >= deadline {
                break WaitEnd::TimedOut;
            }
            self.link.wait(Some(deadline));
        };
        Ok(Some(waiter.finish(end)))
    }

    /// True when bytes of another request are buffered or have arrived (read without waiting).
    fn more_input(&mut self) -> std::io::Result<bool> {
        if self.start < self.end {
            return Ok(true);
        }
        if !self.make_room(READ_CHUNK_BYTES) {
            return Ok(true);
        }
        self.read_now()
    }

    /// Reads into the room after `end` by a system call, whatever the event loop reported so
    /// far; true when bytes came.
    fn read_now(&mut self) -> std::io::Result<bool> {
        match self
            .link
            .stream()
            .try_read_now(&mut self.input[self.end..])?
        {
            Some(n) if n > 0 => {
                self.end += n;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Answers a framing error and closes (spec 1.8: every framing error closes the connection).
    fn fail(&mut self, error: FramingError) -> std::io::Result<()> {
        let (status, message) = error.status_and_message();
        self.output.push(
            Response::error(status, message),
            false,
            ConnectionHeader::Close,
        );
        self.flush()
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let stall_timeout = self.limits().idle_timeout;
        let written = self.output.write_to(&self.link, stall_timeout);
        let handler = &*self.server.handler;
        if written.is_ok() {
            for &(tag, status, received_nanos) in &self.output.marked {
                handler.written(tag, status, received_nanos);
            }
        }
        self.output.marked.clear();
        if self.output.marked.capacity() > MARKED_RETAINED {
            self.output.marked = Vec::new();
        }
        written
    }

    /// Makes room after `end` for a read, moving unconsumed bytes to the front or growing the
    /// buffer up to `max_bytes`; false when it is full at that size.
    fn make_room(&mut self, max_bytes: usize) -> bool {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end < self.input.len() {
            return true;
        }
        if self.start > 0 {
            self.input.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            return true;
        }
        if self.input.len() >= max_bytes {
            return false;
        }
        // A head larger than one read (the decoder bounds how large).
        let grown = (self.input.len() * 2).min(max_bytes.max(self.input.len()));
        self.input.resize(grown, 0);
        true
    }

    /// Gives back a read buffer that grew for a large head, once the connection is idle.
    fn shrink_input(&mut self) {
        if self.input.len() > READ_CHUNK_BYTES {
            self.input = vec![0; READ_CHUNK_BYTES];
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more bytes before `deadline`.
    fn fill(&mut self, deadline: Instant, idle: bool) -> std::io::Result<Filled> {
        // The decoder refuses heads over its limit before the buffer passes twice that.
        let max_bytes = 2 * super::request::MAX_HEAD_BYTES + READ_CHUNK_BYTES;
        if !self.make_room(max_bytes) {
            return Err(ErrorKind::OutOfMemory.into());
        }
        loop {
            // Attempt first, then check, then park: an event after the attempt ends the park.
            match self.link.stream().try_read(&mut self.input[self.end..])? {
                Some(0) => return Ok(Filled::PeerClosed),
                Some(n) => {
                    self.end += n;
                    return Ok(Filled::Bytes);
                }
                None => {}
            }
            if idle && self.link.is_stopping() {
                // Idle only if a read now finds nothing: bytes that arrived before the signal
                // may not have been reported by the event loop yet, and are a request received.
                return Ok(if self.read_now()? {
                    Filled::Bytes
                } else {
                    Filled::Stopping
                });
            }
            if Instant::now() >= deadline {
                return Ok(Filled::TimedOut);
            }
            self.link.wait(Some(deadline));
        }
    }

    /// Closes after a response that said so: half-closes, then reads and drops what the client
    /// still sends until it closes, for a short while, so the close does not reset the
    /// connection under the response.
    fn linger(&mut self) {
        if self
            .link
            .stream()
            .socket()
            .shutdown(std::net::Shutdown::Write)
            .is_err()
        {
            return;
        }
        let deadline = Instant::now() + LINGER_TIMEOUT;
        let mut dropped = 0;
        while dropped <= MAX_LINGER_BYTES {
            match self.link.stream().try_read(&mut self.input) {
                Ok(Some(0)) | Err(_) => return,
                Ok(Some(n)) => dropped += n,
                Ok(None) => {
                    if Instant::now() >= deadline {
                        return;
                    }
                    self.link.wait(Some(deadline));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::wait::Wakeup;
    use crate::net::{spawn_acceptor, AcceptOptions, Connections};
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::sync::mpsc::{channel, Receiver, Sender};
    use std::sync::{Mutex, Once};

    const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

    /// Counts its drops: tells when a waiter's `finish` closure was freed.
    struct DropCounter(Arc<AtomicUsize>);

    impl Drop for DropCounter {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// `/wait` waits (its wake-up goes to the test), `/wake-at-once` is woken before the server
    /// parks it, anything else is answered at once with `now`.
    struct TestHandler {
        wakeups: Mutex<Sender<Wakeup>>,
        wait_for: Duration,
        freed: Arc<AtomicUsize>,
        /// (tag, status) of every response the server said was written.
        written: Arc<Mutex<Vec<(u16, u16)>>>,
    }

    impl Handler for TestHandler {
        fn handle(&self, request: &Request) -> Reply {
            if request.path != "/wait" && request.path != "/wake-at-once" {
                let mut response = Response::json(200, b"now".to_vec());
                // `/now` is marked for `written`; other paths are not.
                response.tag = if request.path == "/now" { 7 } else { 0 };
                return Reply::Now(response);
            }
            let guard = DropCounter(self.freed.clone());
            let (waiter, wakeup) = Waiter::new(Instant::now() + self.wait_for, move |end| {
                let _freed_with_the_closure = guard;
                let text: &[u8] = match end {
                    WaitEnd::Woken => b"woken",
                    WaitEnd::TimedOut => b"timed out",
                    WaitEnd::Shutdown => b"shutdown",
                };
                Response::json(200, text.to_vec())
            });
            if request.path == "/wake-at-once" {
                wakeup.wake();
            }
            let _ = self.wakeups.lock().unwrap().send(wakeup);
            Reply::Wait(waiter.map(|mut response| {
                response.tag = 9;
                response
            }))
        }

        fn written(&self, tag: u16, status: u16, received_nanos: u64) {
            assert!(received_nanos <= crate::raw_clock::monotonic_nanos());
            self.written.lock().unwrap().push((tag, status));
        }
    }

    struct TestServer {
        address: SocketAddr,
        connections: Connections,
        wakeups: Receiver<Wakeup>,
        freed: Arc<AtomicUsize>,
        written: Arc<Mutex<Vec<(u16, u16)>>>,
        acceptor: may::coroutine::JoinHandle<()>,
    }

    impl TestServer {
        fn start(wait_for: Duration) -> TestServer {
            static RUNTIME: Once = Once::new();
            // Room for the JSON error bodies, as the binary configures it.
            RUNTIME.call_once(|| {
                may::config().set_stack_size(16 * 1024);
            });
            let connections = Connections::start().unwrap();
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let address = listener.local_addr().unwrap();
            let (sender, wakeups) = channel();
            let freed = Arc::new(AtomicUsize::new(0));
            let written = Arc::new(Mutex::new(Vec::new()));
            let handler = Arc::new(TestHandler {
                wakeups: Mutex::new(sender),
                wait_for,
                freed: freed.clone(),
                written: written.clone(),
            });
            let limits = Limits {
                max_body_bytes: 1024,
                max_body_memory: 1 << 20,
                idle_timeout: Duration::from_secs(10),
                request_timeout: Duration::from_secs(10),
            };
            let server = Arc::new(Server::new(handler, limits));
            let options = AcceptOptions {
                name: "test",
                max_connections: 16,
            };
            let acceptor = spawn_acceptor(
                listener,
                options,
                &connections,
                refuse_connection,
                move |link| server.serve(link),
            )
            .unwrap();
            TestServer {
                address,
                connections,
                wakeups,
                freed,
                written,
                acceptor,
            }
        }

        fn client(&self) -> TcpStream {
            let stream = TcpStream::connect(self.address).unwrap();
            stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
            stream
        }

        fn next_wakeup(&self) -> Wakeup {
            self.wakeups.recv_timeout(CLIENT_TIMEOUT).unwrap()
        }
    }

    fn get(path: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")
    }

    /// One response: its head and its body.
    fn read_response(stream: &mut TcpStream) -> (String, String) {
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).unwrap(), 1, "closed mid-head");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        let mut body = vec![0; length];
        stream.read_exact(&mut body).unwrap();
        (head, String::from_utf8(body).unwrap())
    }

    /// True when nothing arrives on `stream` for a while.
    fn silent(stream: &mut TcpStream) -> bool {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut byte = [0u8];
        let silent = matches!(stream.read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock);
        stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        silent
    }

    fn eventually(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        while !condition() {
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn large_bodies_are_spliced_not_copied() {
        static PAGE: [u8; 8192] = [b'x'; 8192];
        let mut output = Output::default();
        let owned = vec![b'y'; 100_000];
        let owned_at = owned.as_ptr();
        output.push(Response::json(200, owned), false, ConnectionHeader::None);
        output.push(
            Response::static_body(200, "text/html", &PAGE),
            false,
            ConnectionHeader::None,
        );
        output.push(
            Response::json(200, b"small".to_vec()),
            false,
            ConnectionHeader::None,
        );
        assert!(
            output.bytes.len() < 1000,
            "only heads and small bodies are copied"
        );
        assert!(output.bytes.ends_with(b"small"));
        assert_eq!(output.spliced.len(), 2);
        assert_eq!(
            output.spliced[0].1.as_bytes().as_ptr(),
            owned_at,
            "moved, not copied"
        );
        assert_eq!(output.spliced[1].1.as_bytes().as_ptr(), PAGE.as_ptr());
        assert_eq!(output.spliced_bytes, 108_192);
        // A HEAD answer carries the length of the body it does not send.
        let mut head = Output::default();
        head.push(
            Response::json(200, vec![0; 5000]),
            true,
            ConnectionHeader::None,
        );
        assert!(head.spliced.is_empty());
        assert!(String::from_utf8_lossy(&head.bytes).contains("Content-Length: 5000\r\n"));
    }

    #[test]
    fn a_wake_from_a_plain_thread_answers_the_waiting_request() {
        let server = TestServer::start(Duration::from_secs(60));
        let mut client = server.client();
        client.write_all(get("/wait").as_bytes()).unwrap();
        let wakeup = server.next_wakeup();
        assert!(silent(&mut client), "answered before the wake-up");
        assert!(wakeup.is_waiting());
        let waker = wakeup.clone();
        std::thread::spawn(move || waker.wake()).join().unwrap();
        assert_eq!(read_response(&mut client).1, "woken");
        eventually("the wait is over", || !wakeup.is_waiting());
        // The connection goes on.
        client.write_all(get("/now").as_bytes()).unwrap();
        assert_eq!(read_response(&mut client).1, "now");
    }

    #[test]
    fn a_wake_before_the_park_is_not_lost() {
        let server = TestServer::start(Duration::from_secs(60));
        let mut client = server.client();
        client.write_all(get("/wake-at-once").as_bytes()).unwrap();
        assert_eq!(read_response(&mut client).1, "woken");
    }

    #[test]
    fn the_deadline_answers_a_waiting_request() {
        let server = TestServer::start(Duration::from_millis(300));
        let mut client = server.client();
        let started = Instant::now();
        client.write_all(get("/wait").as_bytes()).unwrap();
        assert_eq!(read_response(&mut client).1, "timed out");
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn a_client_that_goes_away_frees_its_waiting_request() {
        let server = TestServer::start(Duration::from_secs(60));
        let client = server.client();
        (&client).write_all(get("/wait").as_bytes()).unwrap();
        let wakeup = server.next_wakeup();
        assert!(wakeup.is_waiting());
        assert_eq!(server.freed.load(Ordering::SeqCst), 0);
        drop(client);
        eventually("the waiter is freed", || {
            !wakeup.is_waiting() && server.freed.load(Ordering::SeqCst) == 1
        });
        eventually("the connection is closed", || {
            server.connections.open() == 0
        });
    }

    #[test]
    fn shutdown_answers_a_waiting_request_at_once() {
        let server = TestServer::start(Duration::from_secs(60));
        let mut client = server.client();
        client.write_all(get("/wait").as_bytes()).unwrap();
        let _wakeup = server.next_wakeup();
        let idle = server.client();
        server.connections.stop();
        let (head, body) = read_response(&mut client);
        assert_eq!(body, "shutdown");
        assert!(head.contains("Connection: close\r\n"), "{head}");
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).unwrap(), 0, "closed after it");
        let mut idle = idle;
        assert_eq!(
            idle.read_to_end(&mut rest).unwrap(),
            0,
            "idle connections close"
        );
        server.acceptor.join().unwrap();
        eventually("every connection closed", || server.connections.open() == 0);
    }

    #[test]
    fn pipelined_requests_behind_a_waiting_one_stay_in_order() {
        let server = TestServer::start(Duration::from_secs(60));
        let mut client = server.client();
        let pipelined = format!("{}{}{}", get("/now"), get("/wait"), get("/now"));
        client.write_all(pipelined.as_bytes()).unwrap();
        assert_eq!(
            read_response(&mut client).1,
            "now",
            "answered before the wait"
        );
        let wakeup = server.next_wakeup();
        assert!(
            silent(&mut client),
            "the request behind the wait came first"
        );
        client.write_all(get("/now").as_bytes()).unwrap();
        assert!(silent(&mut client));
        wakeup.wake();
        assert_eq!(read_response(&mut client).1, "woken");
        assert_eq!(read_response(&mut client).1, "now");
        assert_eq!(read_response(&mut client).1, "now");
    }

    #[test]
    fn connections_over_the_limit_get_503_and_are_closed() {
        let server = TestServer::start(Duration::from_secs(60));
        let mut held: Vec<TcpStream> = (0..16).map(|_| server.client()).collect();
        for client in &mut held {
            client.write_all(get("/now").as_bytes()).unwrap();
            assert_eq!(read_response(client).1, "now");
        }
        let mut refused = server.client();
        let (head, body) = read_response(&mut refused);
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains("Connection: close\r\n"));
        assert_eq!(
            body,
            r#"{"Error":"Too many open connections, retry later"}"#
        );
        let mut rest = Vec::new();
        assert_eq!(refused.read_to_end(&mut rest).unwrap(), 0);
        drop(held.pop());
        eventually("a place is free", || server.connections.open() < 16);
        let mut admitted = server.client();
        admitted.write_all(get("/now").as_bytes()).unwrap();
        assert_eq!(read_response(&mut admitted).1, "now");
    }

    #[test]
    fn the_handler_is_told_of_marked_responses_once_written() {
        let server = TestServer::start(Duration::from_secs(60));
        let mut client = server.client();
        let pipelined = format!("{}{}{}", get("/now"), get("/unmarked"), get("/wait"));
        client.write_all(pipelined.as_bytes()).unwrap();
        assert_eq!(read_response(&mut client).1, "now");
        assert_eq!(read_response(&mut client).1, "now");
        let wakeup = server.next_wakeup();
        eventually("the first answer is reported", || {
            *server.written.lock().unwrap() == [(7, 200)]
        });
        wakeup.wake();
        assert_eq!(read_response(&mut client).1, "woken");
        eventually("the waiting request's answer is reported", || {
            *server.written.lock().unwrap() == [(7, 200), (9, 200)]
        });
        // A waiting request whose client goes away is never reported.
        let gone = server.client();
        (&gone).write_all(get("/wait").as_bytes()).unwrap();
        let _wakeup = server.next_wakeup();
        drop(gone);
        eventually("the waiter is freed", || {
            server.freed.load(Ordering::SeqCst) == 2
        });
        assert_eq!(server.written.lock().unwrap().len(), 2);
    }
}
