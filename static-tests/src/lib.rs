//! The harness of the black-box tests: start the built `a8registry` binary as a user would, on a
//! port the kernel picks on 127.0.0.1, and speak HTTP/1.1 to it over real sockets, in raw bytes
//! where framing matters.
//!
//! The binary is `$A8REGISTRY_BIN`, else `target/release/a8registry` of this workspace
//! (`static-tests/run.sh` builds it first). Every server is killed by its PID when its [`Server`]
//! is dropped, so a failing test leaves nothing running.

pub mod kube;
pub mod pki;
pub mod redis;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a server may take to print its listen address.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Socket timeout for test clients: a hung server fails the test instead of hanging it.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The binary under test.
pub fn binary() -> PathBuf {
    match std::env::var_os("A8REGISTRY_BIN") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join("release")
            .join("a8registry"),
    }
}

#[derive(Default)]
struct Output {
    lines: Vec<String>,
    address: Option<SocketAddr>,
    closed: bool,
}

/// A running registry process.
pub struct Server {
    child: Child,
    pub address: SocketAddr,
    output: Arc<(Mutex<Output>, Condvar)>,
}

impl Server {
    /// Starts the registry with these extra flags on 127.0.0.1 and a kernel-chosen port.
    pub fn start(args: &[&str]) -> Server {
        Server::start_with_env(args, &[])
    }

    /// Starts the registry with extra flags and environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_with_open_files(args, env, None)
    }

    /// Starts the registry with extra flags and environment variables, and at most
    /// `open_files` descriptors (RLIMIT_NOFILE) when given.
    pub fn start_with_open_files(
        args: &[&str],
        env: &[(&str, &str)],
        open_files: Option<u64>,
    ) -> Server {
        // The parametrised suite puts every process on the Redis store, unless the test chose a
        // store (or replication, which needs the in-memory one) itself.
        let chose = |name: &str| {
            args.iter().any(|a| a.starts_with(&format!("--{name}")))
                || env
                    .iter()
                    .any(|(k, _)| k.starts_with(&format!("A8_{}", name.to_uppercase())))
        };
        let store_args = if chose("store") || chose("replication") {
            Vec::new()
        } else {
            redis::suite_store_args()
        };
        let mut command = Command::new(binary());
        command
            .args(["--api_bind", "127.0.0.1", "--api_port", "0"])
            .args(args)
            .args(&store_args)
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(limit) = open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs in the child between fork and exec and only calls
            // setrlimit(2), which is async-signal-safe.
            unsafe {
                command.pre_exec(move || {
                    let rlimit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", binary()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let output = Arc::new((Mutex::new(Output::default()), Condvar::new()));
        let sink = output.clone();
        // Drain stderr for the life of the process, so debug logging can never fill the pipe
        // and block the server; remember the listen address from the startup line.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let (lock, ready) = &*sink;
                let mut out = lock.lock().unwrap();
                if out.address.is_none() && line.contains("listening") {
                    out.address = listen_address(&line);
                    ready.notify_all();
                }
                out.lines.push(line);
            }
            let (lock, ready) = &*sink;
            lock.lock().unwrap().closed = true;
            ready.notify_all();
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let address = {
            let (lock, ready) = &*output;
            let mut out = lock.lock().unwrap();
            loop {
                if let Some(address) = out.address {
                    break address;
                }
                let now = Instant::now();
                if out.closed || now >= deadline {
                    let _ = child.kill();
                    panic!("server did not start; stderr:\n{}", out.lines.join("\n"));
                }
                out = ready.wait_timeout(out, deadline - now).unwrap().0;
            }
        };
        Server {
            child,
            address,
            output,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of `/proc/<pid>/status` in KiB, e.g. `VmRSS` (resident) or `VmSize` (virtual).
    pub fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the server's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid()))
    }

    /// Whether the process is still running (not exited, not a zombie).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.output.0.lock().unwrap().lines.clone()
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the PID of a child this harness started.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// A new connection to the server.
    pub fn connect(&self) -> TcpStream {
        connect(self.address)
    }

    /// One request on a fresh connection.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        let mut conn = self.connect();
        send(&mut conn, method, path, headers, body);
        read_response(&mut conn, method == "HEAD").expect("a response")
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], None)
    }

    /// A JSON POST with `Content-Type: application/json`.
    pub fn post_json(&self, path: &str, body: &str) -> Response {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            Some(body),
        )
    }

    /// A JSON POST with an `Authorization: Bearer` header.
    pub fn post_json_as(&self, token: &str, path: &str, body: &str) -> Response {
        let auth = format!("Bearer {token}");
        self.request(
            "POST",
            path,
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &auth),
            ],
            Some(body),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new connection to `address`, with the client timeouts (for threads that hold no [`Server`]).
pub fn connect(address: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// The number of entries in the `instances` array of a listing body.
pub fn instance_count(listing: &serde_json::Value) -> usize {
    listing["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("no instances array in {listing}"))
        .len()
}

/// The address in the startup line `... msg="listening" address="127.0.0.1:PORT" ...`.
fn listen_address(line: &str) -> Option<SocketAddr> {
    let start = line.find("address")? + "address".len();
    let rest = &line[start..];
    let rest = rest.trim_start_matches(['=', '"', ':', ' ']);
    let end = rest.find('"')?;
    rest[..end].parse().ok()
}

/// Writes one request; adds `Host` and, with a body, `Content-Length`.
pub fn send(
    conn: &mut TcpStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) {
    let mut raw = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        raw.push_str("Host: localhost\r\n");
    }
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("\r\n");
    if let Some(body) = body {
        raw.push_str(body);
    }
    conn.write_all(raw.as_bytes()).expect("write request");
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.text()))
    }

    /// Asserts the exact `{"Error":"..."}` body of the contract with its status and content type.
    #[track_caller]
    pub fn assert_error(&self, status: u16, message: &str) {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(
            self.text(),
            serde_json::json!({ "Error": message }).to_string(),
            "status {status}"
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/json; charset=utf-8")
        );
    }
}

/// Reads one response: Content-Length framed, chunked, or (with `Connection: close` and neither)
/// until the server closes; no body for HEAD, 1xx, 204 and 304.
pub fn read_response(conn: &mut TcpStream, head_only: bool) -> std::io::Result<Response> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = conn.read(&mut byte)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {:?}", String::from_utf8_lossy(&head)),
            ));
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    // Anything before the status line (a body that should not have been sent) is a failure.
    assert!(
        status_line.starts_with("HTTP/1."),
        "not a status line: {status_line:?}"
    );
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let length: Option<usize> = header("content-length").and_then(|v| v.parse().ok());
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let closes = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let mut body = Vec::new();
    if !head_only && status >= 200 && status != 204 && status != 304 {
        if chunked {
            body = read_chunked(conn)?;
        } else if let Some(length) = length {
            body = vec![0u8; length];
            conn.read_exact(&mut body)?;
        } else if closes {
            // Neither length nor chunks: the body ends with the connection.
            conn.read_to_end(&mut body)?;
        }
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A chunked body (RFC 9112 7.1), without extensions or trailers, as the server writes it.
pub fn read_chunked(conn: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut body = Vec::new();
    loop {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            conn.read_exact(&mut byte)?;
            line.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
        let size = usize::from_str_radix(&text, 16)
            .map_err(|_| invalid(format!("bad chunk size line {text:?}")))?;
        let start = body.len();
        body.resize(start + size + 2, 0);
        conn.read_exact(&mut body[start..])?;
        if &body[start + size..] != b"\r\n" {
            return Err(invalid(format!(
                "chunk of {size} bytes not followed by CRLF"
            )));
        }
        body.truncate(start + size);
        if size == 0 {
            return Ok(body);
        }
    }
}

/// True when the server closed the connection within `timeout`: a read sees end of file or a
/// reset. Bytes, or a read that times out on an open connection, are not a close.
pub fn closed_by_server(conn: &mut TcpStream, timeout: Duration) -> bool {
    conn.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 64];
    match conn.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
        ),
    }
}

/// Runs the binary to completion with these flags and env, returning (exit code, stdout, stderr).
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let output = Command::new(binary())
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run binary");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A registration body for `service` at a `tcp` endpoint `value`, with extra JSON members.
pub fn registration(service: &str, value: &str, extra: &str) -> String {
    let mut body = serde_json::json!({
        "service_name": service,
        "endpoint": {"type": "tcp", "value": value},
    })
    .to_string();
    if !extra.is_empty() {
        body.pop();
        body.push(',');
        body.push_str(extra);
        body.push('}');
    }
    body
}

/// Sorted ids of the `instances` array of a listing body.
pub fn ids_of(listing: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = listing["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("no instances array in {listing}"))
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// `member` decompressed by Python's gzip module (which checks the CRC-32 and the length).
pub fn gunzip(member: &[u8]) -> Vec<u8> {
    let mut child = Command::new("python3")
        .args([
            "-c",
            "import gzip, sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = child.stdin.take().unwrap();
    let input = member.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        output.status.success(),
        "not a valid gzip member: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// A request as bytes on the wire: `Host`, the given headers and, with a body, its JSON type and
/// length.
pub fn raw_request(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        raw.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    raw
}
