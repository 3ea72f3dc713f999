//! The request side of HTTP/1.1 as a sans-IO decoder: bytes in, requests (or a framing error) out.
//!
//! The decoder keeps the state of one connection between reads: a head that is not complete yet,
//! or a body that is still arriving (by `Content-Length` or chunked). It never reads a socket, so it
//! is tested with byte strings, and the socket loop in `server.rs` stays a thin shell around it.
//!
//! Body buffers grow as bytes arrive, never from the declared length, and every byte of growth is
//! taken from a process-wide [`BodyBudget`] first: bodies sent before authentication cannot hold
//! more memory than the budget, however many connections send them.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Largest request line plus header block, in bytes; exactly this many are accepted (spec D15).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header fields in one request; exactly this many are accepted (spec D15).
pub const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with extensions) of a chunked body.
const MAX_CHUNK_LINE_BYTES: usize = 1024;
/// Largest trailer section of a chunked body; trailers are read and dropped.
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Smallest allocation of a body that arrives in pieces, so that small bodies split over a few
/// reads do not regrow at every read.
const MIN_BODY_ALLOCATION_BYTES: usize = 1024;

/// The bytes of request bodies that all connections together may hold in memory at once.
///
/// A body takes its buffer's growth from here before it grows and gives it back when the request
/// is dropped. A body that cannot grow is refused with [`FramingError::Busy`].
#[derive(Debug)]
pub struct BodyBudget {
    limit_bytes: usize,
    in_use_bytes: AtomicUsize,
}

impl BodyBudget {
    /// A budget of `limit_bytes`.
    pub fn new(limit_bytes: usize) -> BodyBudget {
        BodyBudget {
            limit_bytes,
            in_use_bytes: AtomicUsize::new(0),
        }
    }

    /// Bytes currently held by bodies.
    pub fn in_use(&self) -> usize {
        self.in_use_bytes.load(Ordering::Relaxed)
    }

    /// Takes `bytes` from the budget; false (and nothing taken) when they are not there.
    fn try_take(&self, bytes: usize) -> bool {
        self.in_use_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|&total| total <= self.limit_bytes)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.in_use_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// What a request's body took from the budget; given back when the request is dropped.
#[derive(Debug, Default)]
struct BodyCharge {
    budget: Option<Arc<BodyBudget>>,
    bytes: usize,
}

impl BodyCharge {
    fn add(&mut self, budget: &Arc<BodyBudget>, bytes: usize) {
        self.budget.get_or_insert_with(|| budget.clone());
        self.bytes += bytes;
    }
}

impl Drop for BodyCharge {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give_back(self.bytes);
        }
    }
}

/// Request methods the registry routes on; anything else is `Other` (405 or 404).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Other,
}

impl Method {
    fn parse(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            _ => Method::Other,
        }
    }
}

/// One decoded request. Header names keep their spelling; look them up with [`Request::header`].
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    /// The method as sent when it is none of [`Method`]'s, for the access log (empty otherwise:
    /// [`Request::method_text`] names the others without a copy per request).
    other_method: String,
    /// The raw (percent-encoded) path, without the query.
    pub path: String,
    /// The raw query after `?`, if any.
    pub query: Option<String>,
    /// The request-target was in absolute form with the `https` scheme (spec 2.6).
    pub absolute_https: bool,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    pub headers: Vec<(String, String)>,
    /// Lower-cased names of headers whose values were not UTF-8 (their `headers` entries hold a
    /// lossy copy, in which different bytes can look the same).
    pub non_utf8_headers: Vec<String>,
    pub body: Vec<u8>,
    /// The body length was declared by `Content-Length` (a chunked body's is not; spec 1.6).
    pub declared_length: Option<usize>,
    /// The connection stays open after the response.
    pub keep_alive: bool,
    /// The client's address, filled in by the connection (the decoder knows no socket).
    pub peer: Option<std::net::SocketAddr>,
    /// When the request was complete, filled in by the connection likewise.
    pub received: Instant,
    /// The body's share of the [`BodyBudget`].
    body_charge: BodyCharge,
    /// Emptied header strings of earlier requests, whose room the next request's headers reuse.
    spare_headers: Vec<(String, String)>,
    /// The emptied query string of an earlier request, likewise.
    spare_query: String,
    /// The emptied body of an earlier answer on this connection, for the next answer's body
    /// ([`Request::take_room`]).
    room: RefCell<Vec<u8>>,
}

/// A string longer than this is not kept for reuse: a connection keeps little memory.
const MAX_REUSED_STRING_BYTES: usize = 1024;
/// Emptied header strings kept for reuse at most, counted by their room, so that an idle
/// connection that once received large heads holds a few KiB, not the head's 16 KiB.
const MAX_REUSED_HEADER_BYTES: usize = 4096;

/// Empties `text`, keeping its room unless it is large.
fn empty_for_reuse(text: &mut String) {
    if text.capacity() > MAX_REUSED_STRING_BYTES {
        *text = String::new();
    } else {
        text.clear();
    }
}

impl Request {
    fn blank() -> Box<Request> {
        Box::new(Request {
            method: Method::Other,
            other_method: String::new(),
            path: String::new(),
            query: None,
            absolute_https: false,
            version_minor: 1,
            headers: Vec::new(),
            non_utf8_headers: Vec::new(),
            body: Vec::new(),
            declared_length: None,
            keep_alive: false,
            peer: None,
            received: Instant::now(),
            body_charge: BodyCharge::default(),
            spare_headers: Vec::new(),
            spare_query: String::new(),
            room: RefCell::new(Vec::new()),
        })
    }

    /// Empties the request for the next one, keeping the room of its strings and of a small
    /// body (so that a keep-alive connection decodes its requests, a registration's included,
    /// without allocating). The body's share of the budget goes back now: the budget counts what
    /// bodies take beyond the little room each connection keeps, as it does not count the room
    /// of the header strings either.
    fn clear(&mut self) {
        empty_for_reuse(&mut self.other_method);
        empty_for_reuse(&mut self.path);
        if let Some(mut query) = self.query.take() {
            empty_for_reuse(&mut query);
            self.spare_query = query;
        }
        let mut kept_bytes: usize = self
            .spare_headers
            .iter()
            .map(|(name, value)| name.capacity() + value.capacity())
            .sum();
        for (mut name, mut value) in self.headers.drain(..) {
            let room = name.capacity() + value.capacity();
            if kept_bytes + room <= MAX_REUSED_HEADER_BYTES {
                name.clear();
                value.clear();
                kept_bytes += room;
                self.spare_headers.push((name, value));
            }
        }
        self.non_utf8_headers.clear();
        if self.body.capacity() > MAX_REUSED_STRING_BYTES {
            self.body = Vec::new();
        } else {
            self.body.clear();
        }
        self.body_charge = BodyCharge::default();
        self.declared_length = None;
        self.peer = None;
    }

    /// Adds a header, in the room of an earlier one when there is some.
    fn push_header(&mut self, name: &str, value: &str) {
        let (mut reused_name, mut reused_value) = self.spare_headers.pop().unwrap_or_default();
        reused_name.push_str(name);
        reused_value.push_str(value);
        self.headers.push((reused_name, reused_value));
    }
}

impl Request {
    /// The method as sent (methods are case-sensitive, so each of [`Method`]'s has one spelling).
    pub fn method_text(&self) -> &str {
        match self.method {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Other => &self.other_method,
        }
    }

    /// An empty buffer for the answer's body, with the room of an earlier answer's body on this
    /// connection: a handler that writes its body into it and answers with it
    /// ([`super::response::Body::Owned`]) allocates nothing for it on a keep-alive connection.
    /// Empty, without room, when taken a second time.
    pub fn take_room(&self) -> Vec<u8> {
        self.room.take()
    }

    /// Keeps the body of an answer written out as the room of the next one, unless it has none
    /// or is large (a connection keeps little memory).
    fn give_room(&self, mut body: Vec<u8>) {
        if (1..=MAX_REUSED_STRING_BYTES).contains(&body.capacity()) {
            body.clear();
            self.room.replace(body);
        }
    }

    /// The first header named `name` (ASCII case-insensitive), with surrounding whitespace removed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The answer to a body that finds the [`BodyBudget`] spent.
pub const BODIES_BUSY: &str = "Too many request bodies in progress, retry later";

/// A request the decoder cannot accept; each maps to one status and one message (spec 1.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramingError {
    /// 400: malformed request line, header, version, `Content-Length` or chunked framing; an
    /// HTTP/1.1 request without `Host`, any request with several or an invalid one; any
    /// `Transfer-Encoding` on HTTP/1.0 (RFC 9112 3.2, 6.1, 7.1).
    Malformed,
    /// 431: head over [`MAX_HEAD_BYTES`] or more than [`MAX_HEADERS`] fields.
    HeadTooLarge,
    /// 413: body over the configured limit.
    BodyTooLarge,
    /// 501: a transfer coding other than `chunked`.
    UnsupportedTransferEncoding,
    /// 503: the bodies of all connections already hold the whole [`BodyBudget`].
    Busy,
}

impl FramingError {
    /// The status code and the `Error` text of the JSON body.
    pub fn status_and_message(self) -> (u16, &'static str) {
        match self {
            FramingError::Malformed => (400, "Malformed HTTP request"),
            FramingError::HeadTooLarge => (431, "Request header fields too large"),
            FramingError::BodyTooLarge => (413, "Request body too large"),
            FramingError::UnsupportedTransferEncoding => (501, "Transfer-Encoding not supported"),
            FramingError::Busy => (503, BODIES_BUSY),
        }
    }
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.status_and_message().1)
    }
}

/// What the decoder made of the bytes it was given.
#[derive(Debug)]
pub enum Decoded {
    /// More bytes are needed.
    NeedMore,
    /// The client sent `Expect: 100-continue`: write `100 Continue`, then read on.
    SendContinue,
    /// A whole request.
    Request(Box<Request>),
}

enum ChunkState {
    /// Reading a chunk-size line; holds the bytes of the line read so far.
    Size(Vec<u8>),
    /// Reading chunk data; the bytes still to come.
    Data(usize),
    /// Reading the CRLF after a chunk's data; how many of its bytes were seen.
    DataEnd(u8),
    /// Reading trailer lines; the bytes of the current line, and the total so far.
    Trailers(Vec<u8>, usize),
}

enum BodyFraming {
    Length(usize),
    Chunked(ChunkState),
}

enum State {
    /// Waiting for a complete head; `scanned` bytes were already searched for its end.
    Head { scanned: usize },
    Body {
        request: Box<Request>,
        framing: BodyFraming,
        continue_pending: bool,
    },
}

/// The per-connection request decoder.
pub struct Decoder {
    max_body_bytes: usize,
    budget: Option<Arc<BodyBudget>>,
    state: State,
    /// An answered request given back ([`Decoder::recycle`]), filled by the next head.
    spare: Option<Box<Request>>,
}

impl Decoder {
    /// A decoder that refuses bodies over `max_body_bytes`, with no memory budget.
    pub fn new(max_body_bytes: usize) -> Decoder {
        Decoder {
            max_body_bytes,
            budget: None,
            state: State::Head { scanned: 0 },
            spare: None,
        }
    }

    /// Takes back an answered request: the next one is decoded into its room. Its body is given
    /// back to the budget at once, and its memory freed unless it is small.
    pub fn recycle(&mut self, mut request: Box<Request>) {
        request.clear();
        self.spare = Some(request);
    }

    /// Keeps the body of an answer written out as the room for the next answer's body
    /// ([`Request::take_room`]), in the request the next one is decoded into.
    pub fn recycle_room(&mut self, body: Vec<u8>) {
        if let Some(spare) = &self.spare {
            spare.give_room(body);
        }
    }

    /// A decoder that refuses bodies over `max_body_bytes` and takes body memory from `budget`.
    pub fn with_budget(max_body_bytes: usize, budget: Arc<BodyBudget>) -> Decoder {
        Decoder {
            budget: Some(budget),
            ..Decoder::new(max_body_bytes)
        }
    }

    /// True when no request has been started (the connection is idle between requests).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head { scanned: 0 })
    }

    /// True while a body is being read.
    pub fn in_body(&self) -> bool {
        matches!(self.state, State::Body { .. })
    }

    /// Decodes from `input`, returning what happened and how many bytes were consumed. Bytes not
    /// consumed must be passed again, followed by new ones. After an error the connection must close.
    pub fn decode(&mut self, input: &[u8]) -> Result<(Decoded, usize), FramingError> {
        match &mut self.state {
            State::Head { scanned } => {
                let mut request = self.spare.take().unwrap_or_else(Request::blank);
                // A head that arrived whole, as nearly all do, is parsed at once: searching for
                // its end first would read it twice. Anything else (a partial head, an error, a
                // head after empty lines, which httparse would skip) takes the search below, so
                // that errors are judged on the complete head, as always.
                if *scanned == 0 && !matches!(input.first(), None | Some(b'\r' | b'\n')) {
                    match parse_whole_head(input, self.max_body_bytes, request) {
                        Ok(parsed) => return self.after_head(parsed?, input),
                        Err(unparsed) => request = unparsed,
                    }
                }
                let Some(head_len) = find_head_end(input, *scanned) else {
                    self.spare = Some(request);
                    if input.len() > MAX_HEAD_BYTES {
                        return Err(FramingError::HeadTooLarge);
                    }
                    // Keep the last three bytes in view: the terminator may straddle reads.
                    *scanned = input.len().saturating_sub(3);
                    return Ok((Decoded::NeedMore, 0));
                };
                if head_len > MAX_HEAD_BYTES {
                    return Err(FramingError::HeadTooLarge);
                }
                let parsed = parse_head(&input[..head_len], self.max_body_bytes, request)?;
                self.after_head((parsed.0, parsed.1, head_len), input)
            }
            State::Body {
                request,
                framing,
                continue_pending,
            } => {
                let limits = BodyLimits {
                    max_body_bytes: self.max_body_bytes,
                    budget: self.budget.as_ref(),
                };
                let used = read_body(framing, request, input, &limits)?;
                if body_complete(framing) {
                    let State::Body { request, .. } =
                        std::mem::replace(&mut self.state, State::Head { scanned: 0 })
                    else {
                        unreachable!("the state was matched as Body above");
                    };
                    return Ok((Decoded::Request(request), used));
                }
                if *continue_pending {
                    *continue_pending = false;
                    return Ok((Decoded::SendContinue, used));
                }
                Ok((Decoded::NeedMore, used))
            }
        }
    }
}

/// A parsed head: the request, how its body is framed, and the head's length in bytes.
type ParsedHead = (Box<Request>, BodyFraming, usize);

impl Decoder {
    /// Goes on after a head of `head_len` bytes at the start of `input`: the request, or its body.
    fn after_head(
        &mut self,
        (request, framing, head_len): ParsedHead,
        input: &[u8],
    ) -> Result<(Decoded, usize), FramingError> {
        match framing {
            BodyFraming::Length(0) => {
                self.state = State::Head { scanned: 0 };
                Ok((Decoded::Request(request), head_len))
            }
            framing => {
                // Only a body can be waited for.
                let expects_continue = request.version_minor == 1
                    && request
                        .header("expect")
                        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
                self.state = State::Body {
                    request,
                    framing,
                    continue_pending: expects_continue,
                };
                let (decoded, used) = self.decode(&input[head_len..])?;
                Ok((decoded, head_len + used))
            }
        }
    }
}

/// The length of the head (through the blank line) if `input` holds all of it.
fn find_head_end(input: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(newline) = super::scan::find_byte(input, b'\n', i) {
        if input.get(newline + 1) == Some(&b'\n') {
            return Some(newline + 2);
        }
        if input.get(newline + 1) == Some(&b'\r') && input.get(newline + 2) == Some(&b'\n') {
            return Some(newline + 3);
        }
        i = newline + 1;
    }
    None
}

fn trim_ows(value: &str) -> &str {
    value.trim_matches(|c| c == ' ' || c == '\t')
}

fn header_has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| trim_ows(t).eq_ignore_ascii_case(token))
}

/// Parses a whole head (found by [`find_head_end`]) into `request`, an empty one.
fn parse_head(
    head: &[u8],
    max_body_bytes: usize,
    request: Box<Request>,
) -> Result<(Box<Request>, BodyFraming), FramingError> {
    // Not initialised first: that would write all MAX_HEADERS slots for every request.
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    match parsed.parse_with_uninit_headers(head, &mut slots) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(FramingError::Malformed),
        Err(httparse::Error::TooManyHeaders) => return Err(FramingError::HeadTooLarge),
        Err(_) => return Err(FramingError::Malformed),
    }
    fill_request(&parsed, max_body_bytes, request)
}

/// Parses the head at the start of `input` (which may hold more after it) into `request`, an
/// empty one, with the head's length; `Err` gives `request` back, untouched, when httparse does
/// not find a whole valid head there. Equivalent to [`find_head_end`] then [`parse_head`] for an
/// `input` that starts with neither CR nor LF: httparse then ends the head at the first empty
/// line, and a valid head holds no LF LF or LF CR LF before it.
fn parse_whole_head(
    input: &[u8],
    max_body_bytes: usize,
    request: Box<Request>,
) -> Result<Result<ParsedHead, FramingError>, Box<Request>> {
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let Ok(httparse::Status::Complete(head_len)) =
        parsed.parse_with_uninit_headers(input, &mut slots)
    else {
        return Err(request);
    };
    if head_len > MAX_HEAD_BYTES {
        return Ok(Err(FramingError::HeadTooLarge));
    }
    Ok(fill_request(&parsed, max_body_bytes, request)
        .map(|(request, framing)| (request, framing, head_len)))
}

/// Fills `request`, an empty one, from a parsed head, checking its framing.
fn fill_request(
    parsed: &httparse::Request<'_, '_>,
    max_body_bytes: usize,
    mut request: Box<Request>,
) -> Result<(Box<Request>, BodyFraming), FramingError> {
    let method_text = parsed.method.ok_or(FramingError::Malformed)?;
    let target = parsed.path.ok_or(FramingError::Malformed)?;
    let version_minor = parsed.version.ok_or(FramingError::Malformed)?;
    // RFC 9112 3.2: an HTTP/1.1 request needs exactly one Host; no request may carry two, or an
    // invalid one.
    let mut hosts = 0;
    for header in parsed.headers.iter() {
        if header.name.eq_ignore_ascii_case("host") {
            hosts += 1;
            if hosts > 1 || !valid_host(header.value) {
                return Err(FramingError::Malformed);
            }
        }
    }
    if hosts == 0 && version_minor == 1 {
        return Err(FramingError::Malformed);
    }
    for h in parsed.headers.iter() {
        match std::str::from_utf8(h.value) {
            Ok(value) => request.push_header(h.name, trim_ows(value)),
            Err(_) => {
                request.non_utf8_headers.push(h.name.to_ascii_lowercase());
                request.push_header(h.name, trim_ows(&String::from_utf8_lossy(h.value)));
            }
        }
    }
    let headers = &request.headers;
    let (path, absolute_https) = split_target(target)?;
    let (path, query) = match super::scan::find_byte(path.as_bytes(), b'?', 0) {
        // `https://host?query` addresses the root too.
        Some(0) => ("/", Some(&path[1..])),
        Some(at) => (&path[..at], Some(&path[at + 1..])),
        None => (path, None),
    };

    let mut content_length: Option<usize> = None;
    let mut transfer_encoding: Option<&str> = None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("content-length") {
            for part in value.split(',') {
                let part = trim_ows(part);
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(FramingError::Malformed);
                }
                // A declared length beyond usize is certainly over any body limit.
                let n = part.parse::<usize>().unwrap_or(usize::MAX);
                if content_length.is_some_and(|previous| previous != n) {
                    return Err(FramingError::Malformed);
                }
                content_length = Some(n);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if transfer_encoding.is_some() {
                return Err(FramingError::UnsupportedTransferEncoding);
            }
            transfer_encoding = Some(value);
        }
    }
    let framing = match (transfer_encoding, content_length) {
        // RFC 9112 6.1: Transfer-Encoding on HTTP/1.0 means faulty framing.
        (Some(_), _) if version_minor == 0 => return Err(FramingError::Malformed),
        (Some(_), Some(_)) => return Err(FramingError::Malformed),
        (Some(coding), None) => {
            if !coding.eq_ignore_ascii_case("chunked") {
                return Err(FramingError::UnsupportedTransferEncoding);
            }
            BodyFraming::Chunked(ChunkState::Size(Vec::new()))
        }
        (None, Some(n)) => {
            if n > max_body_bytes {
                return Err(FramingError::BodyTooLarge);
            }
            BodyFraming::Length(n)
        }
        (None, None) => BodyFraming::Length(0),
    };
    let connection = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .map(|(_, v)| v.as_str());
    let keep_alive = match version_minor {
        1 => !connection.is_some_and(|v| header_has_token(v, "close")),
        _ => connection.is_some_and(|v| header_has_token(v, "keep-alive")),
    };
    request.method = Method::parse(method_text);
    if request.method == Method::Other {
        request.other_method.push_str(method_text);
    }
    request.path.push_str(path);
    request.query = query.map(|query| {
        let mut reused = std::mem::take(&mut request.spare_query);
        reused.push_str(query);
        reused
    });
    request.absolute_https = absolute_https;
    request.version_minor = version_minor;
    // The body is grown as the bytes arrive (`append_body`), never reserved from the declared
    // length.
    request.declared_length = content_length;
    request.keep_alive = keep_alive;
    Ok((request, framing))
}

/// A Host value as RFC 9112 3.2 allows it: `uri-host [":" port]`, possibly empty. The check is on
/// the characters only (reg-name, IP literal, port), which is what keeps the value safe to echo.
fn valid_host(value: &[u8]) -> bool {
    let value = trim_ows_bytes(value);
    value
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%:[]".contains(&b))
}

fn trim_ows_bytes(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// Splits an origin-form or absolute-form request-target into its path (with query) and whether
/// the absolute form named the `https` scheme.
fn split_target(target: &str) -> Result<(&str, bool), FramingError> {
    if target.starts_with('/') {
        return Ok((target, false));
    }
    if target == "*" {
        return Ok(("*", false));
    }
    let Some((scheme, rest)) = target.split_once("://") else {
        return Err(FramingError::Malformed);
    };
    let path_start = rest.find(['/', '?']).unwrap_or(rest.len());
    let https = scheme.eq_ignore_ascii_case("https");
    match &rest[path_start..] {
        // `http://host` addresses the root.
        "" => Ok(("/", https)),
        path => Ok((path, https)),
    }
}

fn body_complete(framing: &BodyFraming) -> bool {
    match framing {
        BodyFraming::Length(remaining) => *remaining == 0,
        BodyFraming::Chunked(_) => false,
    }
}

/// What bounds a body: its largest size and the shared memory budget.
struct BodyLimits<'a> {
    max_body_bytes: usize,
    budget: Option<&'a Arc<BodyBudget>>,
}

/// Appends `bytes` to the request's body. The buffer grows to what has arrived (at least doubling,
/// never past `growth_cap`), and the growth is taken from the budget first.
fn append_body(
    request: &mut Request,
    bytes: &[u8],
    growth_cap: usize,
    limits: &BodyLimits<'_>,
) -> Result<(), FramingError> {
    let body = &mut request.body;
    let needed = body.len() + bytes.len();
    if needed > body.capacity() {
        let target = body
            .capacity()
            .saturating_mul(2)
            .max(MIN_BODY_ALLOCATION_BYTES)
            .min(growth_cap)
            .max(needed);
        let growth = target - body.capacity();
        if let Some(budget) = limits.budget {
            if !budget.try_take(growth) {
                return Err(FramingError::Busy);
            }
            request.body_charge.add(budget, growth);
        }
        body.reserve_exact(target - body.len());
    }
    body.extend_from_slice(bytes);
    Ok(())
}

/// Reads one line of chunked framing byte by byte into `line`; true when its LF came. A line must
/// end in CRLF and hold no other CR or control byte (RFC 9112 7.1: no bare LF or CR).
fn chunk_line_byte(line: &mut Vec<u8>, byte: u8, max_bytes: usize) -> Result<bool, FramingError> {
    if byte == b'\n' {
        if line.pop() != Some(b'\r') {
            return Err(FramingError::Malformed);
        }
        return Ok(true);
    }
    if line.last() == Some(&b'\r') || (byte.is_ascii_control() && byte != b'\t' && byte != b'\r') {
        return Err(FramingError::Malformed);
    }
    line.push(byte);
    if line.len() > max_bytes {
        return Err(FramingError::Malformed);
    }
    Ok(false)
}

/// Moves body bytes from `input` into the request's body; returns the bytes consumed. A chunked
/// body that has ended turns its framing into `Length(0)`, which reads as complete.
fn read_body(
    framing: &mut BodyFraming,
    request: &mut Request,
    input: &[u8],
    limits: &BodyLimits<'_>,
) -> Result<usize, FramingError> {
    match framing {
        BodyFraming::Length(remaining) => {
            let take = (*remaining).min(input.len());
            let total = request.body.len() + *remaining;
            append_body(request, &input[..take], total, limits)?;
            *remaining -= take;
            Ok(take)
        }
        BodyFraming::Chunked(state) => {
            let mut pos = 0;
            while pos < input.len() {
                match state {
                    ChunkState::Size(line) => {
                        let byte = input[pos];
                        pos += 1;
                        if !chunk_line_byte(line, byte, MAX_CHUNK_LINE_BYTES)? {
                            continue;
                        }
                        let size = parse_chunk_size(line)?;
                        if size == 0 {
                            *state = ChunkState::Trailers(Vec::new(), 0);
                        } else {
                            if request.body.len().saturating_add(size) > limits.max_body_bytes {
                                return Err(FramingError::BodyTooLarge);
                            }
                            *state = ChunkState::Data(size);
                        }
                    }
                    ChunkState::Data(remaining) => {
                        let take = (*remaining).min(input.len() - pos);
                        append_body(
                            request,
                            &input[pos..pos + take],
                            limits.max_body_bytes,
                            limits,
                        )?;
                        pos += take;
                        *remaining -= take;
                        if *remaining == 0 {
                            *state = ChunkState::DataEnd(0);
                        }
                    }
                    ChunkState::DataEnd(seen) => {
                        let byte = input[pos];
                        pos += 1;
                        match (*seen, byte) {
                            (0, b'\r') => *seen = 1,
                            (1, b'\n') => *state = ChunkState::Size(Vec::new()),
                            _ => return Err(FramingError::Malformed),
                        }
                    }
                    ChunkState::Trailers(line, total) => {
                        let byte = input[pos];
                        pos += 1;
                        *total += 1;
                        if *total > MAX_TRAILER_BYTES {
                            return Err(FramingError::HeadTooLarge);
                        }
                        if !chunk_line_byte(line, byte, MAX_TRAILER_BYTES)? {
                            continue;
                        }
                        if line.is_empty() {
                            *framing = BodyFraming::Length(0);
                            return Ok(pos);
                        }
                        line.clear();
                    }
                }
            }
            Ok(pos)
        }
    }
}

fn parse_chunk_size(line: &[u8]) -> Result<usize, FramingError> {
    let size_end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
    let digits = std::str::from_utf8(&line[..size_end])
        .map_err(|_| FramingError::Malformed)?
        .trim_end_matches([' ', '\t']);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FramingError::Malformed);
    }
    // More than 16 hex digits cannot be a size we accept; report it as too large.
    usize::from_str_radix(digits, 16).map_err(|_| FramingError::BodyTooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1024;

    /// Feeds `input` in pieces of `step` bytes, as a socket would, and collects what comes out.
    fn decode_all(input: &[u8], step: usize) -> Result<Vec<Decoded>, FramingError> {
        let mut decoder = Decoder::new(LIMIT);
        let mut buffered: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            buffered.extend_from_slice(piece);
            loop {
                let (decoded, used) = decoder.decode(&buffered)?;
                buffered.drain(..used);
                match decoded {
                    Decoded::NeedMore => break,
                    other => out.push(other),
                }
            }
        }
        Ok(out)
    }

    fn requests(input: &[u8], step: usize) -> Vec<Request> {
        decode_all(input, step)
            .unwrap()
            .into_iter()
            .filter_map(|d| match d {
                Decoded::Request(r) => Some(*r),
                _ => None,
            })
            .collect()
    }

    /// Decodes one whole request with `decoder`.
    fn decode_one(decoder: &mut Decoder, raw: &[u8]) -> Box<Request> {
        match decoder.decode(raw).unwrap() {
            (Decoded::Request(request), used) if used == raw.len() => request,
            (other, used) => panic!("{other:?} after {used} bytes"),
        }
    }

    #[test]
    fn a_recycled_request_is_refilled_and_keeps_little() {
        let mut decoder = Decoder::new(LIMIT);
        let big = "v".repeat(900);
        let mut first = String::from("PUT /a/b?q=1 HTTP/1.1\r\nHost: h\r\nX-Non: \u{e9}\r\n");
        for i in 0..10 {
            first.push_str(&format!("X-Big-{i}: {big}\r\n"));
        }
        first.push_str("Content-Length: 2\r\n\r\nok");
        let request = decode_one(&mut decoder, first.as_bytes());
        assert_eq!(request.headers.len(), 13);
        assert_eq!(request.body, b"ok");
        decoder.recycle(request);
        let spare = decoder.spare.as_ref().unwrap();
        let kept: usize = spare
            .spare_headers
            .iter()
            .map(|(n, v)| n.capacity() + v.capacity())
            .sum();
        assert!(kept <= MAX_REUSED_HEADER_BYTES, "{kept}");
        // A small body's room is kept, a large one's is not; the budget has both back.
        assert!(spare.body.is_empty() && spare.body.capacity() == 2);
        assert_eq!(spare.body_charge.bytes, 0);

        let second = decode_one(
            &mut decoder,
            b"GET /c HTTP/1.1\r\nHost: k\r\nAccept: x\r\n\r\n",
        );
        assert_eq!(second.method, Method::Get);
        assert_eq!(second.method_text(), "GET");
        assert_eq!(second.path, "/c");
        assert_eq!(second.query, None);
        assert_eq!(
            second.headers,
            [
                ("Host".to_string(), "k".to_string()),
                ("Accept".to_string(), "x".to_string())
            ]
        );
        assert!(second.non_utf8_headers.is_empty());
        assert_eq!(second.declared_length, None);
        assert!(second.body.is_empty());
        assert!(second.keep_alive);

        // A method of no variant keeps its spelling, for one request only.
        decoder.recycle(second);
        let other = decode_one(&mut decoder, b"PATCH /c HTTP/1.1\r\nHost: k\r\n\r\n");
        assert_eq!(
            (other.method, other.method_text()),
            (Method::Other, "PATCH")
        );
        decoder.recycle(other);
        let again = decode_one(&mut decoder, b"DELETE /c HTTP/1.1\r\nHost: k\r\n\r\n");
        assert_eq!(
            (again.method, again.method_text()),
            (Method::Delete, "DELETE")
        );
        assert!(again.other_method.is_empty());
    }

    #[test]
    fn simple_get_in_any_split() {
        let raw = b"GET /api/v1/services?x=1 HTTP/1.1\r\nHost: h\r\n\r\n";
        for step in [1, 2, 7, raw.len()] {
            let reqs = requests(raw, step);
            assert_eq!(reqs.len(), 1);
            assert_eq!(reqs[0].method, Method::Get);
            assert_eq!(reqs[0].path, "/api/v1/services");
            assert_eq!(reqs[0].query.as_deref(), Some("x=1"));
            assert!(reqs[0].keep_alive);
        }
    }

    #[test]
    fn pipelined_requests_come_out_in_order() {
        let raw = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: h\r\n\r\n";
        let reqs = requests(raw, raw.len());
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].body, b"abc");
        assert_eq!(reqs[1].path, "/b");
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let raw = b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\nGET /n HTTP/1.1\r\nHost: h\r\n\r\n";
        for step in [1, 5, raw.len()] {
            let reqs = requests(raw, step);
            assert_eq!(reqs.len(), 2, "step {step}");
            assert_eq!(reqs[0].body, b"abcde");
            assert_eq!(reqs[0].declared_length, None);
            assert_eq!(reqs[1].path, "/n");
        }
    }

    #[test]
    fn chunked_body_over_the_limit_is_413() {
        let mut raw = b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..3 {
            raw.extend_from_slice(b"200\r\n");
            raw.extend_from_slice(&[b'x'; 0x200]);
            raw.extend_from_slice(b"\r\n");
        }
        assert_eq!(
            decode_all(&raw, 64).unwrap_err(),
            FramingError::BodyTooLarge
        );
    }

    #[test]
    fn declared_length_over_the_limit_is_413_before_the_body() {
        let raw = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 1025\r\n\r\n";
        assert_eq!(
            decode_all(raw, raw.len()).unwrap_err(),
            FramingError::BodyTooLarge
        );
        let ok = format!(
            "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 1024\r\n\r\n{}",
            "x".repeat(1024)
        );
        assert_eq!(requests(ok.as_bytes(), 100)[0].body.len(), 1024);
    }

    #[test]
    fn malformed_lengths_are_400() {
        for cl in ["abc", "-1", "1 2", "", "+5", "3, 4"] {
            let raw = format!("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: {cl}\r\n\r\n");
            assert_eq!(
                decode_all(raw.as_bytes(), raw.len()).unwrap_err(),
                FramingError::Malformed,
                "{cl:?}"
            );
        }
        let twice =
            b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(decode_all(twice, 99).unwrap_err(), FramingError::Malformed);
        let same =
            b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        assert_eq!(requests(same, 99)[0].body, b"x");
        let both = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(decode_all(both, 99).unwrap_err(), FramingError::Malformed);
    }

    #[test]
    fn garbage_and_bad_versions_are_400() {
        for raw in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nbad header\r\n\r\n",
            b"GET  HTTP/1.1\r\nHost: h\r\n\r\n",
        ] {
            assert_eq!(
                decode_all(raw, raw.len()).unwrap_err(),
                FramingError::Malformed
            );
        }
    }

    #[test]
    fn other_transfer_codings_are_501() {
        let raw = b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(
            decode_all(raw, raw.len()).unwrap_err(),
            FramingError::UnsupportedTransferEncoding
        );
    }

    #[test]
    fn head_limits() {
        let head_of = |total: usize| {
            let base = "GET / HTTP/1.1\r\nHost: h\r\nX: \r\n\r\n".len();
            format!(
                "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
                "a".repeat(total - base)
            )
        };
        assert_eq!(requests(head_of(MAX_HEAD_BYTES).as_bytes(), 1000).len(), 1);
        let too_big = head_of(MAX_HEAD_BYTES + 1);
        assert_eq!(
            decode_all(too_big.as_bytes(), 1000).unwrap_err(),
            FramingError::HeadTooLarge
        );
        // `n` fields, Host among them.
        let headers = |n: usize| {
            let mut s = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
            for i in 1..n {
                s.push_str(&format!("H{i}: v\r\n"));
            }
            s + "\r\n"
        };
        assert_eq!(requests(headers(100).as_bytes(), 4096).len(), 1);
        assert_eq!(
            decode_all(headers(101).as_bytes(), 4096).unwrap_err(),
            FramingError::HeadTooLarge
        );
        // A head that never ends is cut off once it passes the limit.
        let endless = vec![b'a'; MAX_HEAD_BYTES + 10];
        assert_eq!(
            decode_all(&endless, 512).unwrap_err(),
            FramingError::HeadTooLarge
        );
    }

    #[test]
    fn expect_continue_is_signalled_once_before_the_body() {
        let head =
            b"POST /a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        let mut decoder = Decoder::new(LIMIT);
        let (decoded, used) = decoder.decode(head).unwrap();
        assert!(matches!(decoded, Decoded::SendContinue));
        assert_eq!(used, head.len());
        let (decoded, _) = decoder.decode(b"").unwrap();
        assert!(matches!(decoded, Decoded::NeedMore));
        let (decoded, _) = decoder.decode(b"ok").unwrap();
        assert!(matches!(decoded, Decoded::Request(r) if r.body == b"ok"));
    }

    #[test]
    fn connection_semantics_per_version() {
        let close = requests(
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            99,
        );
        assert!(!close[0].keep_alive);
        let old = requests(b"GET / HTTP/1.0\r\n\r\n", 99);
        assert!(!old[0].keep_alive);
        let old_ka = requests(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 99);
        assert!(old_ka[0].keep_alive);
    }

    #[test]
    fn absolute_form_targets() {
        let r = requests(
            b"GET https://h:1/api/v1/services?a=b HTTP/1.1\r\nHost: h\r\n\r\n",
            99,
        );
        assert!(r[0].absolute_https);
        assert_eq!(r[0].path, "/api/v1/services");
        assert_eq!(r[0].query.as_deref(), Some("a=b"));
        let r = requests(b"GET http://h HTTP/1.1\r\nHost: h\r\n\r\n", 99);
        assert!(!r[0].absolute_https);
        assert_eq!(r[0].path, "/");
    }

    #[test]
    fn an_absolute_target_with_a_query_but_no_path_addresses_the_root() {
        let r = requests(b"GET https://h?q HTTP/1.1\r\nHost: h\r\n\r\n", 99);
        assert!(r[0].absolute_https);
        assert_eq!(r[0].path, "/");
        assert_eq!(r[0].query.as_deref(), Some("q"));
    }

    #[test]
    fn non_utf8_header_values_are_flagged() {
        let r = requests(
            b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer \xff\r\nX: ok\r\n\r\n",
            99,
        );
        assert_eq!(r[0].non_utf8_headers, ["authorization"]);
    }

    #[test]
    fn header_values_are_trimmed() {
        let r = requests(
            b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer  x \r\n\r\n",
            99,
        );
        assert_eq!(r[0].header("authorization"), Some("Bearer  x"));
    }

    #[test]
    fn host_is_required_once_on_http_1_1() {
        let missing = b"GET / HTTP/1.1\r\n\r\n";
        assert_eq!(
            decode_all(missing, 99).unwrap_err(),
            FramingError::Malformed
        );
        let twice = b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n";
        assert_eq!(decode_all(twice, 99).unwrap_err(), FramingError::Malformed);
        let twice_old = b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n";
        assert_eq!(
            decode_all(twice_old, 99).unwrap_err(),
            FramingError::Malformed
        );
        for bad in ["a b", "a/b", "a\"b", "a@b"] {
            let raw = format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n");
            assert_eq!(
                decode_all(raw.as_bytes(), 99).unwrap_err(),
                FramingError::Malformed,
                "{bad:?}"
            );
        }
        for good in [
            "",
            "h",
            "h:8080",
            "10.0.0.1:1",
            "[::1]:80",
            "xn--bcher-kva.example",
        ] {
            let raw = format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n");
            assert_eq!(requests(raw.as_bytes(), 99).len(), 1, "{good:?}");
        }
        assert_eq!(requests(b"GET / HTTP/1.0\r\n\r\n", 99).len(), 1);
    }

    #[test]
    fn transfer_encoding_on_http_1_0_is_400() {
        for coding in ["chunked", "gzip"] {
            let raw = format!("POST /a HTTP/1.0\r\nTransfer-Encoding: {coding}\r\n\r\n0\r\n\r\n");
            assert_eq!(
                decode_all(raw.as_bytes(), 99).unwrap_err(),
                FramingError::Malformed
            );
        }
    }

    #[test]
    fn chunked_framing_lines_end_in_crlf() {
        let head = "POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
        for body in [
            "3\nabc\r\n0\r\n\r\n",
            "3\r\nabc\n0\r\n\r\n",
            "3\r\nabc\r\n0\n\r\n",
            "3\r\nabc\r\n0\r\n\n",
            "3\r\nabc\r\n0\r\nT: v\n\r\n",
            "3;a=\rb\r\nabc\r\n0\r\n\r\n",
            "3\r\r\nabc\r\n0\r\n\r\n",
            "3;\x01\r\nabc\r\n0\r\n\r\n",
        ] {
            let raw = format!("{head}{body}");
            for step in [1, raw.len()] {
                assert_eq!(
                    decode_all(raw.as_bytes(), step).unwrap_err(),
                    FramingError::Malformed,
                    "{body:?} in steps of {step}"
                );
            }
        }
        let good = format!("{head}3;a=b\r\nabc\r\n0\r\nT: v\r\n\r\n");
        assert_eq!(requests(good.as_bytes(), 1)[0].body, b"abc");
    }

    #[test]
    fn body_buffers_grow_as_bytes_arrive() {
        let mut decoder = Decoder::new(usize::MAX);
        let raw = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000000000\r\n\r\n0123456789";
        let (decoded, used) = decoder.decode(raw).unwrap();
        assert!(matches!(decoded, Decoded::NeedMore));
        assert_eq!(used, raw.len());
        let State::Body { request, .. } = &decoder.state else {
            panic!("reading the body");
        };
        assert_eq!(request.body, b"0123456789");
        assert!(request.body.capacity() <= MIN_BODY_ALLOCATION_BYTES);
        // A body that arrives whole takes exactly its length.
        let small = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(requests(small, 99)[0].body.capacity(), 5);
    }

    #[test]
    fn a_small_body_is_decoded_into_the_room_of_the_last_one_outside_the_budget() {
        let budget = Arc::new(BodyBudget::new(1 << 20));
        let mut decoder = Decoder::with_budget(LIMIT * 10, budget.clone());
        let post = |n: usize| {
            format!(
                "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: {n}\r\n\r\n{}",
                "x".repeat(n)
            )
        };
        let first = decode_one(&mut decoder, post(300).as_bytes());
        let room = first.body.as_ptr();
        assert_eq!(budget.in_use(), 300);
        decoder.recycle(first);
        assert_eq!(budget.in_use(), 0, "given back when answered");
        let second = decode_one(&mut decoder, post(200).as_bytes());
        assert_eq!(second.body, "x".repeat(200).as_bytes());
        assert_eq!(second.body.as_ptr(), room, "in the first body's room");
        assert_eq!(budget.in_use(), 0, "within the room kept: nothing taken");
        decoder.recycle(second);
        let large = decode_one(&mut decoder, post(2000).as_bytes());
        assert_eq!(budget.in_use(), 2000 - 300, "what it takes beyond the room");
        decoder.recycle(large);
        assert_eq!(budget.in_use(), 0);
        let spare = decoder.spare.as_ref().unwrap();
        assert_eq!(spare.body.capacity(), 0, "a large body's memory is freed");
    }

    #[test]
    fn bodies_share_one_memory_budget() {
        let budget = Arc::new(BodyBudget::new(3000));
        let post = |n: usize| {
            format!(
                "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: {n}\r\n\r\n{}",
                "x".repeat(n)
            )
        };
        let mut first = Decoder::with_budget(LIMIT * 10, budget.clone());
        let (decoded, _) = first.decode(post(2000).as_bytes()).unwrap();
        let Decoded::Request(held) = decoded else {
            panic!("a whole request");
        };
        assert_eq!(budget.in_use(), 2000);
        let mut second = Decoder::with_budget(LIMIT * 10, budget.clone());
        assert_eq!(
            second.decode(post(1500).as_bytes()).unwrap_err(),
            FramingError::Busy
        );
        assert_eq!(budget.in_use(), 2000, "a refused body takes nothing");
        drop(held);
        assert_eq!(budget.in_use(), 0);
        let mut third = Decoder::with_budget(LIMIT * 10, budget.clone());
        let (decoded, _) = third.decode(post(1500).as_bytes()).unwrap();
        assert!(matches!(decoded, Decoded::Request(_)));
        assert_eq!(budget.in_use(), 1500);
        drop(decoded);
        assert_eq!(budget.in_use(), 0, "given back when the request is dropped");
        assert_eq!(FramingError::Busy.status_and_message().0, 503);
    }

    #[test]
    fn a_whole_head_parses_as_when_its_end_is_searched_first() {
        // What the decoder did before parsing whole heads at once: search, then parse the head.
        type Searched = Result<(Box<Request>, usize, bool), FramingError>;
        fn by_search(input: &[u8]) -> Option<Searched> {
            let head_len = find_head_end(input, 0)?;
            if head_len > MAX_HEAD_BYTES {
                return Some(Err(FramingError::HeadTooLarge));
            }
            let parsed = parse_head(&input[..head_len], LIMIT, Request::blank());
            Some(parsed.map(|(request, framing)| {
                let bodiless = matches!(framing, BodyFraming::Length(0));
                (request, head_len, bodiless)
            }))
        }
        let seeds: [&[u8]; 5] = [
            b"PUT /api/v1/instances/0123456789abcdef/heartbeat HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n",
            b"GET /a?b=c HTTP/1.0\nConnection: keep-alive\nX: y\n\n",
            b"\r\nGET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
            b"POST /eureka/v2/apps/A HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET https://h/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        ];
        let mut rng = crate::testing::Rng::new(11);
        let mut compared = 0;
        for round in 0..20_000 {
            let seed = seeds[round % seeds.len()];
            let input = if round < seeds.len() {
                seed.to_vec()
            } else {
                rng.mutate(seed)
            };
            let Some(expected) = by_search(&input) else {
                continue;
            };
            // A body's bytes are left out: a malformed body would hide the head's result.
            let input = match &expected {
                Ok((_, head_len, false)) => &input[..*head_len],
                _ => &input[..],
            };
            compared += 1;
            let mut decoder = Decoder::new(LIMIT);
            let got = decoder.decode(input);
            match (expected, got) {
                (Err(expected), Err(got)) => assert_eq!(expected, got, "{input:?}"),
                (Ok((expected, head_len, _)), Ok((Decoded::Request(got), used))) => {
                    assert_eq!(used, head_len, "{input:?}");
                    assert_eq!(expected.method_text(), got.method_text());
                    assert_eq!(expected.path, got.path);
                    assert_eq!(expected.query, got.query);
                    assert_eq!(expected.headers, got.headers);
                    assert_eq!(expected.non_utf8_headers, got.non_utf8_headers);
                    assert_eq!(expected.keep_alive, got.keep_alive);
                    assert_eq!(expected.declared_length, got.declared_length);
                    assert_eq!(expected.absolute_https, got.absolute_https);
                }
                // A head with a body (or one that waits for `100 Continue`) goes on to it.
                (Ok(_), Ok((Decoded::NeedMore | Decoded::SendContinue, _))) => {
                    assert!(decoder.in_body(), "{input:?}");
                }
                (expected, got) => panic!("{input:?}: {expected:?} against {got:?}"),
            }
        }
        // Most mutations keep a head's end, so most rounds compare.
        assert!(compared > 10_000, "{compared}");
    }

    #[test]
    fn hostile_bytes_never_panic_or_loop() {
        let seed_requests: [&[u8]; 3] = [
            b"POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"GET /x?y=%20 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        ];
        let mut rng = crate::testing::Rng::new(7);
        for round in 0..20_000 {
            let input = rng.mutate(seed_requests[round % seed_requests.len()]);
            let step = 1 + rng.below(16);
            // Errors are fine; panics and endless loops are not.
            let _ = decode_all(&input, step);
        }
    }
}
