//! Responses and their serialisation into the connection's output buffer.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

/// `Content-Type` of every JSON response, including empty-bodied ones (spec 1.3).
pub const JSON: &str = "application/json; charset=utf-8";
/// `Content-Type` of Eureka XML responses (spec D6).
pub const XML: &str = "application/xml; charset=utf-8";

/// A response body: owned bytes, bytes shared between responses (a compressed cached body), a
/// cached body, bytes compiled into the binary (embedded files), or a body made piece by piece
/// while it is written (a listing too large to hold whole). Large bodies of every kind are
/// written from where they are, never copied into a connection's buffer.
#[derive(Debug)]
pub enum Body {
    Empty,
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
    Cached(Arc<CachedBody>),
    Static(&'static [u8]),
    Streamed(Streamed),
}

impl Body {
    /// The bytes of a body held whole; none for a streamed one, whose length is unknown.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Body::Empty | Body::Streamed(_) => &[],
            Body::Owned(v) => v,
            Body::Shared(v) => v,
            Body::Cached(v) => &v.plain,
            Body::Static(v) => v,
        }
    }

    pub fn is_streamed(&self) -> bool {
        matches!(self, Body::Streamed(_))
    }
}

/// The producer of a streamed body.
pub struct Streamed(pub Box<dyn Producer>);

impl std::fmt::Debug for Streamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Streamed")
    }
}

/// Makes a body piece by piece, so that a body of any size is written through a buffer of a
/// few tens of KiB. A streamed body's producer runs on a render thread, never on a worker
/// ([`super::render`]): it may take long, and may block (a listing waiting for a snapshot another
/// listing is taking).
pub trait Producer: Send {
    /// Appends the next piece of the body to `out`, aiming at `out` holding `fill_to` bytes (a
    /// little more is fine; less too, when the piece took long to make, so that the caller can
    /// let other coroutines run), and says whether more follows. Not called again once it said
    /// [`More::Done`].
    fn produce(&mut self, out: &mut Vec<u8>, fill_to: usize) -> More;
}

/// Whether a [`Producer`] has more to give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum More {
    Yes,
    Done,
    /// The rest of the body cannot be made (a snapshot taken after the head was written failed):
    /// the stream ends without its proper end, so that the client sees the body cut.
    Failed,
}

impl Streamed {
    /// The whole body, produced into one buffer: what the streamed answer carries.
    pub fn collect(mut self, piece_bytes: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let fill_to = out.len() + piece_bytes;
            if self.0.produce(&mut out, fill_to) != More::Yes {
                return out;
            }
        }
    }
}

/// A body served to many requests (a cached listing), with its gzip form, made once on the first
/// request that takes gzip and then kept with it: both go when the body goes (spec D40).
pub struct CachedBody {
    plain: Box<[u8]>,
    /// A `may` mutex: a coroutine waiting while another compresses parks, its worker serves
    /// others, and the body is compressed once however many wait. Made on the first request for
    /// the gzip form: a `may` mutex costs about 1.7 KB (its queue of waiters), and most cached
    /// bodies (small ones, every namespace's) are never compressed.
    gzip: OnceLock<Box<GzipSlot>>,
}

/// Where a cached body keeps its gzip form once made.
type GzipSlot = may::sync::Mutex<Option<Arc<[u8]>>>;

impl CachedBody {
    pub fn new(plain: Vec<u8>) -> CachedBody {
        CachedBody {
            plain: plain.into_boxed_slice(),
            gzip: OnceLock::new(),
        }
    }

    /// The uncompressed bytes.
    pub fn plain(&self) -> &[u8] {
        &self.plain
    }

    /// The gzip form, compressed now by `compress` unless it was before.
    pub fn gzip(&self, compress: impl FnOnce(&[u8]) -> Vec<u8>) -> Arc<[u8]> {
        let gzip = self
            .gzip
            .get_or_init(|| Box::new(may::sync::Mutex::new(None)));
        let mut gzip = gzip.lock().unwrap_or_else(|e| e.into_inner());
        gzip.get_or_insert_with(|| compress(&self.plain).into())
            .clone()
    }
}

impl std::fmt::Debug for CachedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedBody")
            .field("plain_bytes", &self.plain.len())
            .finish_non_exhaustive()
    }
}

/// Whether a body's content coding was negotiated, and how it came out (spec D40).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    /// Not negotiated: the body is too small to be worth compressing, whoever asks.
    Fixed,
    /// Negotiated, and sent as it is: `Vary: Accept-Encoding`.
    Identity,
    /// Negotiated and compressed: `Content-Encoding: gzip` and `Vary: Accept-Encoding`.
    Gzip,
}

/// A header whose value needs no string of its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InlineHeader {
    /// A number (the index of every Amalgam8 read).
    Number(&'static str, u64),
    /// The bytes `range` of the body (a registration's `Location`, which its body holds too);
    /// see [`Response::with_header_from_body`].
    FromBody(&'static str, Range<u32>),
}

/// One response: status, content type, extra headers and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    /// A header written after `headers` without a string of its own (one per response).
    pub inline_header: Option<InlineHeader>,
    pub body: Body,
    /// Set by [`super::encoding::negotiate`] just before the response is written.
    pub coding: Coding,
    /// The handler's mark for this response, handed back to [`Handler::written`] once it is
    /// written (metrics label it with it); 0 when unmarked.
    ///
    /// [`Handler::written`]: super::server::Handler::written
    pub tag: u16,
    /// For a streamed body: told how many body bytes were written (as sent, after any content
    /// coding) once the stream ended, whole or not. The access log's line of a streamed answer
    /// is written there.
    pub on_streamed: Option<OnStreamed>,
}

/// What a streamed response is told when its stream ended: the body bytes written.
pub struct OnStreamed(pub Box<dyn FnOnce(u64) + Send>);

impl std::fmt::Debug for OnStreamed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnStreamed")
    }
}

impl Response {
    /// An empty-bodied JSON response.
    pub fn empty(status: u16) -> Response {
        Response {
            status,
            content_type: JSON,
            headers: Vec::new(),
            inline_header: None,
            body: Body::Empty,
            coding: Coding::Fixed,
            tag: 0,
            on_streamed: None,
        }
    }

    /// A JSON response with the given body bytes.
    pub fn json(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            content_type: JSON,
            headers: Vec::new(),
            inline_header: None,
            body: Body::Owned(body),
            coding: Coding::Fixed,
            tag: 0,
            on_streamed: None,
        }
    }

    /// A JSON response with a cached body.
    pub fn cached_json(status: u16, body: Arc<CachedBody>) -> Response {
        Response {
            status,
            content_type: JSON,
            headers: Vec::new(),
            inline_header: None,
            body: Body::Cached(body),
            coding: Coding::Fixed,
            tag: 0,
            on_streamed: None,
        }
    }

    /// A response with bytes compiled into the binary, e.g. an embedded file.
    pub fn static_body(status: u16, content_type: &'static str, body: &'static [u8]) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            inline_header: None,
            body: Body::Static(body),
            coding: Coding::Fixed,
            tag: 0,
            on_streamed: None,
        }
    }

    /// A response of another content type with the given body bytes.
    pub fn typed(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
        Response {
            status,
            content_type,
            headers: Vec::new(),
            inline_header: None,
            body: Body::Owned(body),
            coding: Coding::Fixed,
            tag: 0,
            on_streamed: None,
        }
    }

    /// The error body `{"Error":"..."}` of spec 1.4.
    pub fn error(status: u16, message: &str) -> Response {
        let body = serde_json::to_vec(&serde_json::json!({ "Error": message }))
            .unwrap_or_else(|_| b"{\"Error\":\"Internal Server Error\"}".to_vec());
        Response::json(status, body)
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: String) -> Response {
        self.headers.push((name, value));
        self
    }

    /// Sets the header whose value is the bytes `range` of the body (one per response); they must
    /// be a valid header value. A body replaced later (compressed) turns it into one of
    /// `headers` first ([`Response::detach_body_header`]).
    /// A range beyond the body (or beyond 4 GiB) makes the header empty.
    pub fn with_header_from_body(mut self, name: &'static str, range: Range<usize>) -> Response {
        let start = u32::try_from(range.start).unwrap_or(0);
        let end = u32::try_from(range.end).unwrap_or(0);
        self.inline_header = Some(InlineHeader::FromBody(name, start..end));
        self
    }

    /// Makes a header taken from the body one of `headers`, before the body is replaced.
    pub fn detach_body_header(&mut self) {
        if let Some(InlineHeader::FromBody(name, range)) = &self.inline_header {
            let value = String::from_utf8_lossy(body_range(&self.body, range)).into_owned();
            self.headers.push((name, value));
            self.inline_header = None;
        }
    }

    /// Sets the header whose value is a number (one per response).
    pub fn with_number_header(mut self, name: &'static str, value: u64) -> Response {
        self.inline_header = Some(InlineHeader::Number(name, value));
        self
    }
}

/// The status lines the API writes: `status_line` gives each with the name of the first header,
/// `json_head` with a JSON type and the name of the length too, each one piece, one copy.
macro_rules! status_lines {
    ($($code:literal $reason:literal,)*) => {
        fn status_line(status: u16) -> Option<&'static str> {
            Some(match status {
                $($code => concat!("HTTP/1.1 ", $code, " ", $reason, "\r\nContent-Type: "),)*
                _ => return None,
            })
        }

        fn json_head(status: u16) -> Option<&'static str> {
            Some(match status {
                $($code => concat!(
                    "HTTP/1.1 ", $code, " ", $reason,
                    "\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: "
                ),)*
                _ => return None,
            })
        }
    };
}

status_lines! {
    100 "Continue",
    200 "OK",
    201 "Created",
    204 "No Content",
    301 "Moved Permanently",
    302 "Found",
    304 "Not Modified",
    400 "Bad Request",
    401 "Unauthorized",
    403 "Forbidden",
    404 "Not Found",
    405 "Method Not Allowed",
    408 "Request Timeout",
    410 "Gone",
    413 "Payload Too Large",
    415 "Unsupported Media Type",
    431 "Request Header Fields Too Large",
    500 "Internal Server Error",
    501 "Not Implemented",
    503 "Service Unavailable",
}

/// How the connection goes on after a response, as the response must say.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ConnectionHeader {
    /// HTTP/1.1 keep-alive: no header needed.
    None,
    /// An HTTP/1.0 client asked for keep-alive.
    KeepAlive,
    /// The server closes after this response.
    Close,
}

/// How the end of a body is told.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` (the body is held whole).
    Length,
    /// `Transfer-Encoding: chunked` (a streamed body to an HTTP/1.1 client).
    Chunked,
    /// Neither: the connection closes after the body (a streamed body to an HTTP/1.0 client).
    UntilClose,
}

/// Appends the status line and headers (with the body's `Content-Length`) and the blank line.
pub fn write_head(out: &mut Vec<u8>, response: &Response, connection: ConnectionHeader) {
    write_framed_head(out, response, connection, Framing::Length);
}

/// [`write_head`] with the body's end told as `framing` says.
pub fn write_framed_head(
    out: &mut Vec<u8>,
    response: &Response,
    connection: ConnectionHeader,
    framing: Framing,
) {
    // RFC 9110: no Content-Length on 204 (nor on 1xx, which never come through here), nor on 304,
    // where it would have to be the length of the 200 that the 304 stands for.
    let with_length =
        framing == Framing::Length && response.status != 204 && response.status != 304;
    // JSON answers, nearly all of them, copy their status line, type and the length's name in one
    // piece.
    match json_head(response.status) {
        Some(head) if with_length && response.content_type == JSON => {
            out.extend_from_slice(head.as_bytes());
        }
        _ => {
            match status_line(response.status) {
                Some(line) => out.extend_from_slice(line.as_bytes()),
                None => {
                    out.extend_from_slice(b"HTTP/1.1 ");
                    push_decimal(out, u64::from(response.status));
                    out.extend_from_slice(b" Unknown\r\nContent-Type: ");
                }
            }
            out.extend_from_slice(response.content_type.as_bytes());
            if with_length {
                out.extend_from_slice(b"\r\nContent-Length: ");
            } else if framing == Framing::Chunked {
                out.extend_from_slice(b"\r\nTransfer-Encoding: chunked");
            }
        }
    }
    if with_length {
        push_decimal(out, response.body.as_bytes().len() as u64);
    }
    // Most answers end with the `Date` line: it is copied with the blank line after it.
    let ends_with_date = connection == ConnectionHeader::None
        && response.coding == Coding::Fixed
        && response.headers.is_empty()
        && response.inline_header.is_none();
    with_date_line(|date_line_and_end| {
        if ends_with_date {
            out.extend_from_slice(date_line_and_end);
        } else {
            out.extend_from_slice(&date_line_and_end[..DATE_LINE_BYTES]);
        }
    });
    if ends_with_date {
        return;
    }
    match connection {
        ConnectionHeader::None => {}
        ConnectionHeader::KeepAlive => out.extend_from_slice(b"\r\nConnection: keep-alive"),
        ConnectionHeader::Close => out.extend_from_slice(b"\r\nConnection: close"),
    }
    match response.coding {
        Coding::Fixed => {}
        Coding::Identity => out.extend_from_slice(b"\r\nVary: Accept-Encoding"),
        Coding::Gzip => {
            out.extend_from_slice(b"\r\nContent-Encoding: gzip\r\nVary: Accept-Encoding")
        }
    }
    for (name, value) in &response.headers {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
    }
    match &response.inline_header {
        None => {}
        Some(InlineHeader::Number(name, value)) => {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            push_decimal(out, *value);
        }
        Some(InlineHeader::FromBody(name, range)) => {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(body_range(&response.body, range));
        }
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// The bytes `range` of a body; none when the range is not within it.
fn body_range<'b>(body: &'b Body, range: &Range<u32>) -> &'b [u8] {
    body.as_bytes()
        .get(range.start as usize..range.end as usize)
        .unwrap_or_default()
}

/// Appends `value` in decimal, without the formatting machinery (a few instructions a digit).
fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    // One digit (an empty body's length): no copy.
    if value < 10 {
        out.push(b'0' + value as u8);
        return;
    }
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// `\r\nDate: ` and the 29 bytes of the date.
const DATE_LINE_BYTES: usize = 8 + 29;
/// The `Date` line and the blank line that ends a head.
const DATE_AND_END_BYTES: usize = DATE_LINE_BYTES + 4;

thread_local! {
    /// The `Date` line of the current second and the head's end, per worker thread: formatting
    /// it once a second instead of per response, and copying it in one piece.
    static DATE_LINE: RefCell<(u64, [u8; DATE_AND_END_BYTES])> =
        const { RefCell::new((u64::MAX, [0; DATE_AND_END_BYTES])) };
}

/// Calls `f` with the `Date` line of now followed by `\r\n\r\n`.
fn with_date_line(f: impl FnOnce(&[u8])) {
    // The clock read directly: `SystemTime` spent about 80 instructions of every answer.
    let now = crate::raw_clock::unix_secs();
    DATE_LINE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != now {
            cached.1[..8].copy_from_slice(b"\r\nDate: ");
            cached.1[8..DATE_LINE_BYTES].copy_from_slice(http_date(now).as_bytes());
            cached.1[DATE_LINE_BYTES..].copy_from_slice(b"\r\n\r\n");
            cached.0 = now;
        }
        f(&cached.1);
    });
}

/// IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT` (always 29 bytes).
fn http_date(unix_secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let stamp = crate::log::rfc3339(i128::from(unix_secs) * 1_000_000_000, 0);
    // stamp is `YYYY-MM-DDTHH:MM:SSZ`.
    let month: usize = stamp[5..7].parse().unwrap_or(1);
    format!(
        "{}, {} {} {} {} GMT",
        DAYS[(unix_secs / 86_400 % 7) as usize],
        &stamp[8..10],
        MONTHS[month - 1],
        &stamp[0..4],
        &stamp[11..19]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        for value in [0, 7, 10, 404, 65_535, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, value);
            assert_eq!(out, value.to_string().into_bytes());
        }
    }

    #[test]
    fn status_lines_known_and_unknown() {
        for (status, line) in [
            (200, "HTTP/1.1 200 OK\r\n"),
            (431, "HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            (418, "HTTP/1.1 418 Unknown\r\n"),
        ] {
            let mut out = Vec::new();
            write_head(&mut out, &Response::empty(status), ConnectionHeader::None);
            let text = String::from_utf8(out).unwrap();
            assert!(text.starts_with(line), "{text}");
            assert!(
                text.contains("\r\nContent-Type: application/json"),
                "{text}"
            );
        }
    }

    #[test]
    fn json_heads_are_the_status_line_the_type_and_the_length_name() {
        for status in [100, 200, 201, 204, 301, 304, 400, 404, 431, 500, 503] {
            let line = status_line(status).unwrap();
            let expected = format!("{line}{JSON}\r\nContent-Length: ");
            assert_eq!(json_head(status), Some(expected.as_str()));
        }
        assert_eq!(json_head(418), None);
    }

    #[test]
    fn every_head_ends_once_with_its_date_line() {
        let heads = [
            (Response::empty(200), ConnectionHeader::None),
            (Response::empty(200), ConnectionHeader::KeepAlive),
            (Response::empty(204), ConnectionHeader::None),
            (
                Response::json(201, b"{}".to_vec()).with_header("Location", "/x".to_string()),
                ConnectionHeader::None,
            ),
            (
                Response::typed(200, XML, b"<a/>".to_vec()),
                ConnectionHeader::Close,
            ),
        ];
        for (response, connection) in heads {
            let mut out = Vec::new();
            write_head(&mut out, &response, connection);
            let text = String::from_utf8(out).unwrap();
            assert!(text.ends_with("\r\n\r\n"), "{text}");
            assert_eq!(text.matches("\r\n\r\n").count(), 1, "{text}");
            assert_eq!(text.matches("\r\nDate: ").count(), 1, "{text}");
            let length = text.contains("Content-Length: ");
            assert_eq!(length, response.status != 204, "{text}");
        }
        let mut out = Vec::new();
        write_head(&mut out, &Response::empty(200), ConnectionHeader::None);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 0\r\nDate: "
        ));
    }

    #[test]
    fn a_number_header_is_written() {
        let mut out = Vec::new();
        let r = Response::empty(200).with_number_header("X-A8-Index", 42);
        write_head(&mut out, &r, ConnectionHeader::None);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\r\nX-A8-Index: 42\r\n\r\n"), "{text}");
    }

    #[test]
    fn a_header_from_the_body_is_written_and_kept_when_the_body_is_compressed() {
        let mut body = b"{\"self\":\"http://h/i/1\",\"pad\":\"".to_vec();
        body.resize(2000, b'x');
        body.extend_from_slice(b"\"}");
        let response =
            || Response::json(201, body.clone()).with_header_from_body("Location", 9..21);
        let head = |r: &Response| {
            let mut out = Vec::new();
            write_head(&mut out, r, ConnectionHeader::None);
            String::from_utf8(out).unwrap()
        };
        let plain = response();
        assert!(
            head(&plain).contains("\r\nLocation: http://h/i/1\r\n\r\n"),
            "{}",
            head(&plain)
        );
        let mut compressed = response();
        crate::http::encoding::negotiate(&mut compressed, true, &mut || {});
        assert_eq!(compressed.coding, Coding::Gzip);
        assert_eq!(compressed.inline_header, None);
        let text = head(&compressed);
        assert!(text.contains("\r\nLocation: http://h/i/1\r\n"), "{text}");
        // A range outside the body writes an empty value rather than failing.
        let outside = Response::json(201, b"{}".to_vec()).with_header_from_body("Location", 1..9);
        assert!(head(&outside).contains("\r\nLocation: \r\n\r\n"));
    }

    #[test]
    fn http_date_format() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn head_carries_the_body_length() {
        let mut out = Vec::new();
        let r = Response::error(404, "Resource not found");
        write_head(&mut out, &r, ConnectionHeader::Close);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("Content-Length: 30\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn a_streamed_head_says_how_its_body_ends() {
        let head = |framing, connection| {
            let mut out = Vec::new();
            write_framed_head(&mut out, &Response::empty(200), connection, framing);
            String::from_utf8(out).unwrap()
        };
        let chunked = head(Framing::Chunked, ConnectionHeader::None);
        assert!(
            chunked.contains("\r\nTransfer-Encoding: chunked\r\n"),
            "{chunked}"
        );
        assert!(!chunked.contains("Content-Length"), "{chunked}");
        let until_close = head(Framing::UntilClose, ConnectionHeader::Close);
        assert!(!until_close.contains("Transfer-Encoding"), "{until_close}");
        assert!(!until_close.contains("Content-Length"), "{until_close}");
        assert!(
            until_close.contains("\r\nConnection: close\r\n"),
            "{until_close}"
        );
    }

    #[test]
    fn error_body_is_exact() {
        let r = Response::error(400, "Service name is required");
        assert_eq!(
            r.body.as_bytes(),
            br#"{"Error":"Service name is required"}"#
        );
        assert_eq!(r.content_type, JSON);
    }
}
