//! Requests to the Kubernetes API server (catalogs contract §2, §3.1): the bearer token (a token
//! file is read again after a 401 and every minute), TLS verified against the CA file or the
//! platform's roots, a deadline on every request, bounded bodies and bounded watch lines.
//! Everything here blocks: it runs on the catalog's plain threads only, never on a coroutine.

use super::TokenSource;
use std::io::{BufRead, BufReader};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Connecting, TLS included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A list page or the API probe, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A watch is broken when nothing at all arrived for this long.
pub const WATCH_SILENCE: Duration = Duration::from_secs(330);
/// The server closes a watch after this (`timeoutSeconds`).
pub const WATCH_SECONDS: u64 = 300;
/// A watch still open this long after it was asked is broken: the per-read silence alone would
/// let a server trickling a byte now and then hold it (and its stale view) forever.
const WATCH_LIFETIME: Duration = Duration::from_secs(WATCH_SECONDS + 60);
/// Largest list page body; a larger one is a failure.
pub const MAX_PAGE_BYTES: u64 = 32 << 20;
/// Longest line of a watch stream; a longer one breaks the watch.
pub const MAX_EVENT_LINE_BYTES: usize = 4 << 20;
/// A token file is read again at least this often.
const TOKEN_REREAD: Duration = Duration::from_secs(60);
/// Largest token file read.
const MAX_TOKEN_BYTES: u64 = 1 << 20;

/// Why a request did not give what was asked.
#[derive(Debug)]
pub enum Failure {
    /// 410 Gone: the resourceVersion or continue token is too old.
    Gone(String),
    /// 404 Not Found.
    NotFound(String),
    /// Anything else: transport, TLS, another status, an unreadable body.
    Other(String),
}

impl Failure {
    pub fn message(&self) -> &str {
        match self {
            Failure::Gone(m) | Failure::NotFound(m) | Failure::Other(m) => m,
        }
    }
}

/// The API server as the catalog's threads reach it.
pub struct Client {
    base: String,
    token: TokenSource,
    /// A token file's content and when it was read.
    file_token: Mutex<Option<(String, Instant)>>,
    tls: ureq::tls::TlsConfig,
}

impl Client {
    pub fn new(
        base: String,
        token: TokenSource,
        ca: Option<&[ureq::tls::Certificate<'static>]>,
    ) -> Client {
        let tls = match ca {
            Some(roots) => crate::net::tls::trusting(roots),
            None => crate::net::tls::built_in_roots(),
        };
        Client {
            base,
            token,
            file_token: Mutex::new(None),
            tls,
        }
    }

    /// An agent of its own for one namespace, so closing the namespace can interrupt its
    /// requests (`Agent::shutdown`) without touching the others.
    pub fn agent(&self) -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .tls_config(self.tls.clone())
            .build()
            .into()
    }

    /// The bearer token now, reading a token file again when it is due.
    fn token(&self) -> Option<String> {
        match &self.token {
            TokenSource::None => None,
            TokenSource::Value(secret) => Some(secret.expose().to_string()),
            TokenSource::File(path) => {
                let mut cached = self.file_token.lock().unwrap_or_else(|e| e.into_inner());
                let due = cached
                    .as_ref()
                    .is_none_or(|(_, at)| at.elapsed() >= TOKEN_REREAD);
                if due {
                    if let Some(token) = read_token(path) {
                        *cached = Some((token, Instant::now()));
                    }
                }
                cached.as_ref().map(|(token, _)| token.clone())
            }
        }
    }

    /// After a 401: the token file is read again before the next request.
    fn token_refused(&self) {
        *self.file_token.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    fn request(
        &self,
        agent: &ureq::Agent,
        url: &str,
        watch: bool,
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        let mut request = agent.get(url).header("Accept", "application/json").header(
            "User-Agent",
            concat!("a8registry/", env!("CARGO_PKG_VERSION")),
        );
        if let Some(token) = self.token() {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let request = if watch {
            request
                .config()
                .timeout_recv_response(Some(REQUEST_TIMEOUT))
                .timeout_per_read(Some(WATCH_SILENCE))
                .timeout_global(Some(WATCH_LIFETIME))
                .build()
        } else {
            request
                .config()
                .timeout_global(Some(REQUEST_TIMEOUT))
                .build()
        };
        let response = request
            .call()
            .map_err(|e| Failure::Other(format!("GET {url}: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let message = format!("GET {url}: {status}");
        Err(match status.as_u16() {
            401 => {
                self.token_refused();
                Failure::Other(message)
            }
            404 => Failure::NotFound(message),
            410 => Failure::Gone(message),
            _ => Failure::Other(message),
        })
    }

    /// A plain GET (a list page, the API probe): the whole body, at most [`MAX_PAGE_BYTES`].
    pub fn get(&self, agent: &ureq::Agent, path: &str) -> Result<Vec<u8>, Failure> {
        let url = self.url(path);
        let mut response = self.request(agent, &url, false)?;
        response
            .body_mut()
            .with_config()
            .limit(MAX_PAGE_BYTES)
            .read_to_vec()
            .map_err(|e| Failure::Other(format!("GET {url}: {e}")))
    }

    /// Opens a watch stream.
    pub fn watch(&self, agent: &ureq::Agent, path: &str) -> Result<WatchStream, Failure> {
        let url = self.url(path);
        let response = self.request(agent, &url, true)?;
        Ok(WatchStream {
            url,
            reader: BufReader::with_capacity(64 << 10, response.into_body().into_reader()),
        })
    }
}

fn read_token(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_TOKEN_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    let token = String::from_utf8_lossy(&bytes).trim().to_string();
    (!token.is_empty()).then_some(token)
}

/// The lines of a watch body.
pub struct WatchStream {
    url: String,
    reader: BufReader<ureq::BodyReader<'static>>,
}

impl WatchStream {
    /// The next non-empty line; `None` at the clean end of the stream. `Err` when the stream
    /// broke or a line is longer than [`MAX_EVENT_LINE_BYTES`].
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            let mut line = Vec::new();
            let complete = read_line_bounded(&mut self.reader, &mut line, MAX_EVENT_LINE_BYTES)
                .map_err(|e| format!("watch {}: {e}", self.url))?;
            // The last line may end the body without its newline: it still counts.
            if !line.trim_ascii().is_empty() {
                return Ok(Some(line));
            }
            if !complete {
                return Ok(None);
            }
        }
    }

    /// Whether more of the stream has already arrived (so a publish can wait for it).
    pub fn has_buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }
}

/// Reads up to and without a `\n` into `line`; true when a newline ended it, false at the end
/// of the input. Fails when the line grows past `limit` bytes.
pub fn read_line_bounded(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<bool> {
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(false);
        }
        let (taken, done) = match available.iter().position(|&b| b == b'\n') {
            Some(at) => (at, true),
            None => (available.len(), false),
        };
        if line.len() + taken > limit {
            return Err(std::io::Error::other(format!(
                "a watch line is longer than {limit} bytes"
            )));
        }
        line.extend_from_slice(&available[..taken]);
        reader.consume(taken + usize::from(done));
        if done {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bounded_and_the_last_one_needs_no_newline() {
        let mut input: &[u8] = b"one\n\ntwo";
        let mut line = Vec::new();
        assert!(read_line_bounded(&mut input, &mut line, 10).unwrap());
        assert_eq!(line, b"one");
        line.clear();
        assert!(read_line_bounded(&mut input, &mut line, 10).unwrap());
        assert!(line.is_empty());
        assert!(!read_line_bounded(&mut input, &mut line, 10).unwrap());
        assert_eq!(line, b"two");
        let long = vec![b'x'; 100];
        let mut input: &[u8] = &long;
        assert!(read_line_bounded(&mut input, &mut Vec::new(), 99).is_err());
    }
}
