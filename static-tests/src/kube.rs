//! A Kubernetes API server for the tests, in its real wire format: discovery documents, paged
//! JSON lists with `metadata.resourceVersion` and `continue`, chunked watch streams of
//! `{"type":…,"object":…}` lines (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR), `Status` bodies,
//! 410 Gone for compacted versions, bearer tokens. It is the one mock of the suite, because no
//! API server can run here; `kubectl` reads it in the tests to show the format is real.
//!
//! It binds 127.0.0.1 on a port the kernel picks and stops when dropped.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One change, as watches deliver it.
struct Change {
    version: u64,
    resource: String,
    namespace: String,
    /// A whole line to send as is (hostile input), instead of an event.
    raw: Option<String>,
    kind: &'static str,
    object: Value,
}

/// What the tests can change about the server's behaviour.
pub struct Behaviour {
    /// Serve discovery.k8s.io/v1 (else 404, and the catalog reads core/v1 Endpoints).
    pub slices_served: bool,
    /// Required `Authorization: Bearer` token; `None`: any.
    pub token: Option<String>,
    /// Answer every request with this status and a `Status` body.
    pub status: Option<u16>,
    /// Accept connections and never answer.
    pub stalled: bool,
    /// Refuse connections (close them at once).
    pub down: bool,
    /// Most items per list page (a server may send fewer than `limit`).
    pub max_page: usize,
    /// A watch from a compacted version: HTTP 410 (true) or a 200 with an `ERROR` event (false,
    /// what API servers do).
    pub gone_as_http: bool,
    /// How resourceVersions are written: `{prefix}{n}`.
    pub version_prefix: String,
    /// The next list page asked with a continue token answers 410 (the token expired).
    pub expire_next_continue: bool,
    /// Every list page carries a `continue` token (pages past the objects are empty).
    pub endless_continue: bool,
    /// Watches end cleanly after this many seconds, whatever `timeoutSeconds` asked (`Some(0)`:
    /// at once, with an empty stream).
    pub watch_seconds: Option<u64>,
}

struct State {
    next_version: u64,
    /// (resource, namespace, name) → object with its metadata.
    objects: BTreeMap<(String, String, String), Value>,
    changes: Vec<Change>,
    /// Watches from a version below this get 410.
    compacted_below: u64,
    behaviour: Behaviour,
    /// Bumped to end every open watch cleanly, or to break them mid-stream.
    end_generation: u64,
    break_generation: u64,
    /// Request lines seen, with their Authorization header.
    requests: Vec<(String, Option<String>)>,
    /// `Accept` and `User-Agent` of each request, in the order of `requests`.
    client_headers: Vec<(Option<String>, Option<String>)>,
    /// When each request line arrived and when its answer was sent.
    timings: Vec<(Duration, String)>,
    started: Instant,
    /// Open connections, to cut them.
    connections: Vec<TcpStream>,
    open_watches: usize,
    /// Changes made now send no events (they are compacted away).
    silent: bool,
}

pub struct MockKube {
    pub address: SocketAddr,
    shared: Arc<(Mutex<State>, Condvar)>,
    stop: Arc<AtomicBool>,
}

/// The resources served: name → (API path prefix, list kind, apiVersion).
fn resource_info(resource: &str) -> Option<(&'static str, &'static str, &'static str)> {
    match resource {
        "endpointslices" => Some((
            "apis/discovery.k8s.io/v1",
            "EndpointSliceList",
            "discovery.k8s.io/v1",
        )),
        "endpoints" => Some(("api/v1", "EndpointsList", "v1")),
        "pods" => Some(("api/v1", "PodList", "v1")),
        _ => None,
    }
}

fn status_body(code: u16, reason: &str, message: &str) -> String {
    json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
           "message":message,"reason":reason,"code":code})
    .to_string()
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        410 => "Gone",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Other",
    }
}

impl MockKube {
    pub fn start() -> MockKube {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let shared = Arc::new((
            Mutex::new(State {
                next_version: 1,
                objects: BTreeMap::new(),
                changes: Vec::new(),
                compacted_below: 0,
                behaviour: Behaviour {
                    slices_served: true,
                    token: None,
                    status: None,
                    stalled: false,
                    down: false,
                    max_page: 500,
                    gone_as_http: false,
                    version_prefix: String::new(),
                    expire_next_continue: false,
                    endless_continue: false,
                    watch_seconds: None,
                },
                end_generation: 0,
                break_generation: 0,
                requests: Vec::new(),
                client_headers: Vec::new(),
                timings: Vec::new(),
                started: Instant::now(),
                connections: Vec::new(),
                open_watches: 0,
                silent: false,
            }),
            Condvar::new(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let (accepting, stopping) = (shared.clone(), stop.clone());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let (shared, stop) = (accepting.clone(), stopping.clone());
                        std::thread::spawn(move || serve(stream, &shared, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        MockKube {
            address,
            shared,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let (lock, wake) = &*self.shared;
        let mut state = lock.lock().unwrap();
        let out = f(&mut state);
        wake.notify_all();
        out
    }

    /// Changes how the server behaves.
    pub fn behave(&self, change: impl FnOnce(&mut Behaviour)) {
        self.with(|s| change(&mut s.behaviour));
    }

    /// Creates or replaces an object (ADDED or MODIFIED), stamping its metadata.
    pub fn put(&self, resource: &str, namespace: &str, mut object: Value) {
        self.with(|s| {
            let version = s.next_version;
            s.next_version += 1;
            let name = object["metadata"]["name"].as_str().unwrap().to_string();
            let metadata = object["metadata"].as_object_mut().unwrap();
            metadata.insert("namespace".into(), namespace.into());
            metadata.insert(
                "resourceVersion".into(),
                format!("{}{version}", s.behaviour.version_prefix).into(),
            );
            metadata
                .entry("uid")
                .or_insert_with(|| format!("uid-{resource}-{namespace}-{name}").into());
            metadata
                .entry("creationTimestamp")
                .or_insert_with(|| "2026-01-01T00:00:00Z".into());
            let key = (resource.to_string(), namespace.to_string(), name);
            let kind = if s.objects.contains_key(&key) {
                "MODIFIED"
            } else {
                "ADDED"
            };
            s.objects.insert(key, object.clone());
            if s.silent {
                return;
            }
            s.changes.push(Change {
                version,
                resource: resource.into(),
                namespace: namespace.into(),
                raw: None,
                kind,
                object,
            });
        });
    }

    pub fn delete(&self, resource: &str, namespace: &str, name: &str) {
        self.with(|s| {
            let key = (
                resource.to_string(),
                namespace.to_string(),
                name.to_string(),
            );
            let Some(mut object) = s.objects.remove(&key) else {
                return;
            };
            let version = s.next_version;
            s.next_version += 1;
            object["metadata"]["resourceVersion"] =
                format!("{}{version}", s.behaviour.version_prefix).into();
            if s.silent {
                return;
            }
            s.changes.push(Change {
                version,
                resource: resource.into(),
                namespace: namespace.into(),
                raw: None,
                kind: "DELETED",
                object,
            });
        });
    }

    /// The next resourceVersion number (they only grow).
    pub fn start_versions_at(&self, next: u64) {
        self.with(|s| s.next_version = s.next_version.max(next));
    }

    /// Sends a BOOKMARK at the current version to the watches of `resource` in `namespace`.
    pub fn bookmark(&self, resource: &str, namespace: &str) {
        self.with(|s| {
            let version = s.next_version;
            s.next_version += 1;
            let object = json!({"kind":"Pod","apiVersion":"v1","metadata":{
                "resourceVersion": format!("{}{version}", s.behaviour.version_prefix)}});
            s.changes.push(Change {
                version,
                resource: resource.into(),
                namespace: namespace.into(),
                raw: None,
                kind: "BOOKMARK",
                object,
            });
        });
    }

    /// Sends a line as is to the watches of `resource` in `namespace` (hostile input).
    pub fn inject(&self, resource: &str, namespace: &str, line: String) {
        self.with(|s| {
            let version = s.next_version;
            s.next_version += 1;
            s.changes.push(Change {
                version,
                resource: resource.into(),
                namespace: namespace.into(),
                raw: Some(line),
                kind: "RAW",
                object: Value::Null,
            });
        });
    }

    /// Makes changes whose events are lost (compacted away): a watch from a version before them
    /// gets 410 Gone, and only a new list shows them.
    pub fn compacted(&self, changes: impl FnOnce(&MockKube)) {
        self.with(|s| s.silent = true);
        changes(self);
        self.with(|s| {
            s.silent = false;
            s.compacted_below = s.next_version;
        });
    }

    /// Forgets the history: a watch from any version seen so far gets 410 Gone.
    pub fn compact(&self) {
        self.with(|s| s.compacted_below = s.next_version);
    }

    /// Ends every open watch cleanly (as at `timeoutSeconds`).
    pub fn end_watches(&self) {
        self.with(|s| s.end_generation += 1);
    }

    /// Cuts every open connection (a restart), without the end of the chunked body.
    pub fn cut_connections(&self) {
        self.with(|s| {
            s.break_generation += 1;
            for connection in s.connections.drain(..) {
                let _ = connection.shutdown(Shutdown::Both);
            }
        });
    }

    /// Requests seen so far: request line (`GET /path?query`) and Authorization header.
    pub fn requests(&self) -> Vec<(String, Option<String>)> {
        self.with(|s| s.requests.clone())
    }

    /// `Accept` and `User-Agent` of every request seen so far.
    pub fn client_headers(&self) -> Vec<(Option<String>, Option<String>)> {
        self.with(|s| s.client_headers.clone())
    }

    /// When each request arrived, since the mock started.
    pub fn timings(&self) -> Vec<(Duration, String)> {
        self.with(|s| s.timings.clone())
    }

    pub fn open_watches(&self) -> usize {
        self.with(|s| s.open_watches)
    }
}

impl Drop for MockKube {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut_connections();
    }
}

struct Request {
    path: String,
    query: BTreeMap<String, String>,
    authorization: Option<String>,
    accept: Option<String>,
    user_agent: Option<String>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<(String, Request)> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let line = line.trim_end().to_string();
    let target = line.split(' ').nth(1)?.to_string();
    let mut authorization = None;
    let mut accept = None;
    let mut user_agent = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = Some(value.trim().to_string());
            if name.eq_ignore_ascii_case("authorization") {
                authorization = value;
            } else if name.eq_ignore_ascii_case("accept") {
                accept = value;
            } else if name.eq_ignore_ascii_case("user-agent") {
                user_agent = value;
            }
        }
    }
    let (path, query_text) = target.split_once('?').unwrap_or((&target, ""));
    let query = query_text
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k.to_string(), percent_decode(v))
        })
        .collect();
    Some((
        line,
        Request {
            path: path.to_string(),
            query,
            authorization,
            accept,
            user_agent,
        },
    ))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(n) = u8::from_str_radix(hex, 16) {
                out.push(n);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(stream: &mut TcpStream, code: u16, body: &str) {
    let head = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason_phrase(code),
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
}

fn resource_list(group_version: &str, resources: &[(&str, &str, &str)]) -> String {
    let resources: Vec<Value> = resources
        .iter()
        .map(|(name, singular, kind)| {
            json!({"name":name,"singularName":singular,"namespaced":true,"kind":kind,
                   "verbs":["get","list","watch"]})
        })
        .collect();
    json!({"kind":"APIResourceList","apiVersion":"v1","groupVersion":group_version,
           "resources":resources})
    .to_string()
}

/// Whether the client closed its end (a watch has nothing to read from it otherwise).
fn client_closed(stream: &TcpStream) -> bool {
    let _ = stream.set_nonblocking(true);
    let mut byte = [0u8; 1];
    let closed = match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    let _ = stream.set_nonblocking(false);
    closed
}

/// Parses `{prefix}{n}` back to n.
fn version_number(state: &State, text: &str) -> Option<u64> {
    text.strip_prefix(state.behaviour.version_prefix.as_str())?
        .parse()
        .ok()
}

/// Answers one request, then closes the connection (every answer says `Connection: close`).
fn serve(stream: TcpStream, shared: &Arc<(Mutex<State>, Condvar)>, stop: &AtomicBool) {
    let closing = stream.try_clone();
    answer(stream, shared, stop);
    if let Ok(closing) = closing {
        let _ = closing.shutdown(Shutdown::Both);
    }
}

fn answer(mut stream: TcpStream, shared: &Arc<(Mutex<State>, Condvar)>, stop: &AtomicBool) {
    let (lock, wake) = &**shared;
    {
        let mut state = lock.lock().unwrap();
        if state.behaviour.down {
            return;
        }
        state.connections.retain(|c| c.peer_addr().is_ok());
        if let Ok(clone) = stream.try_clone() {
            state.connections.push(clone);
        }
    }
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let Some((line, request)) = read_request(&mut reader) else {
        return;
    };
    let mut state = lock.lock().unwrap();
    state
        .requests
        .push((line.clone(), request.authorization.clone()));
    state
        .client_headers
        .push((request.accept.clone(), request.user_agent.clone()));
    let at = state.started.elapsed();
    state.timings.push((at, line.clone()));
    while state.behaviour.stalled && !stop.load(Ordering::SeqCst) {
        state = wake
            .wait_timeout(state, Duration::from_millis(100))
            .unwrap()
            .0;
    }
    if let Some(code) = state.behaviour.status {
        drop(state);
        return respond(
            &mut stream,
            code,
            &status_body(code, reason_phrase(code), "as the test asked"),
        );
    }
    if let Some(token) = &state.behaviour.token {
        if request.authorization.as_deref() != Some(&format!("Bearer {token}")) {
            drop(state);
            return respond(
                &mut stream,
                401,
                &status_body(401, "Unauthorized", "Unauthorized"),
            );
        }
    }
    let path = request.path.trim_start_matches('/').to_string();
    let slices = state.behaviour.slices_served;
    let port = stream
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let document = match path.as_str() {
        "version" => Some(
            json!({"major":"1","minor":"30","gitVersion":"v1.30.0","platform":"linux/amd64"})
                .to_string(),
        ),
        "api" => Some(
            json!({"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":
                   [{"clientCIDR":"0.0.0.0/0","serverAddress":port}]})
            .to_string(),
        ),
        "apis" => {
            let groups: Vec<Value> = if slices {
                vec![
                    json!({"name":"discovery.k8s.io","versions":[{"groupVersion":"discovery.k8s.io/v1","version":"v1"}],
                            "preferredVersion":{"groupVersion":"discovery.k8s.io/v1","version":"v1"}}),
                ]
            } else {
                vec![]
            };
            Some(json!({"kind":"APIGroupList","apiVersion":"v1","groups":groups}).to_string())
        }
        "api/v1" => Some(resource_list(
            "v1",
            &[
                ("pods", "pod", "Pod"),
                ("endpoints", "endpoints", "Endpoints"),
            ],
        )),
        "apis/discovery.k8s.io/v1" if slices => Some(resource_list(
            "discovery.k8s.io/v1",
            &[("endpointslices", "endpointslice", "EndpointSlice")],
        )),
        _ => None,
    };
    if let Some(document) = document {
        drop(state);
        return respond(&mut stream, 200, &document);
    }
    // {prefix}/namespaces/{ns}/{resource} or {prefix}/{resource} (every namespace, for kubectl -A).
    let parts: Vec<&str> = path.split('/').collect();
    let (prefix, namespace, resource) = match parts.as_slice() {
        ["api", "v1", "namespaces", ns, resource] => ("api/v1", Some(*ns), *resource),
        ["apis", "discovery.k8s.io", "v1", "namespaces", ns, resource] => {
            ("apis/discovery.k8s.io/v1", Some(*ns), *resource)
        }
        ["api", "v1", resource] => ("api/v1", None, *resource),
        ["apis", "discovery.k8s.io", "v1", resource] => {
            ("apis/discovery.k8s.io/v1", None, *resource)
        }
        _ => ("", None, ""),
    };
    let known = resource_info(resource).filter(|(p, _, _)| *p == prefix);
    let Some((_, list_kind, api_version)) =
        known.filter(|_| slices || resource != "endpointslices")
    else {
        drop(state);
        return respond(
            &mut stream,
            404,
            &status_body(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
    };
    let matches = |r: &str, ns: &str| r == resource && namespace.is_none_or(|n| n == ns);
    let item_kind = list_kind.trim_end_matches("List");
    if request
        .query
        .get("watch")
        .is_some_and(|w| w == "1" || w == "true")
    {
        let from = request
            .query
            .get("resourceVersion")
            .map(String::as_str)
            .unwrap_or("");
        let from = if from.is_empty() || from == "0" {
            Some(state.next_version - 1)
        } else {
            version_number(&state, from)
        };
        let Some(from) = from.filter(|f| *f + 1 >= state.compacted_below) else {
            let gone_as_http = state.behaviour.gone_as_http;
            drop(state);
            let body = status_body(410, "Expired", "too old resource version");
            if gone_as_http {
                return respond(&mut stream, 410, &body);
            }
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            );
            let line = format!(
                "{}\n",
                json!({"type":"ERROR","object":serde_json::from_str::<Value>(&body).unwrap()})
            );
            let _ = write!(stream, "{:x}\r\n{line}\r\n0\r\n\r\n", line.len());
            return;
        };
        let timeout = state.behaviour.watch_seconds.unwrap_or_else(|| {
            request
                .query
                .get("timeoutSeconds")
                .and_then(|t| t.parse().ok())
                .unwrap_or(300u64)
        });
        let deadline = Instant::now() + Duration::from_secs(timeout);
        let (end_generation, break_generation) = (state.end_generation, state.break_generation);
        state.open_watches += 1;
        let _ = stream.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        );
        let mut sent = state
            .changes
            .iter()
            .position(|c| c.version > from)
            .unwrap_or(state.changes.len());
        let clean = loop {
            let mut out = String::new();
            while sent < state.changes.len() {
                let change = &state.changes[sent];
                sent += 1;
                if !matches(&change.resource, &change.namespace) {
                    continue;
                }
                match &change.raw {
                    Some(raw) => {
                        out.push_str(raw);
                        out.push('\n');
                    }
                    None => {
                        let mut object = change.object.clone();
                        object["kind"] = item_kind.into();
                        object["apiVersion"] = api_version.into();
                        out.push_str(&json!({"type":change.kind,"object":object}).to_string());
                        out.push('\n');
                    }
                }
            }
            if !out.is_empty() {
                drop(state);
                let written = write!(stream, "{:x}\r\n{out}\r\n", out.len());
                state = lock.lock().unwrap();
                if written.is_err() {
                    break false;
                }
            }
            if state.break_generation != break_generation || stop.load(Ordering::SeqCst) {
                break false;
            }
            if state.end_generation != end_generation || Instant::now() >= deadline {
                break true;
            }
            if client_closed(&stream) {
                break false;
            }
            state = wake
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap()
                .0;
        };
        state.open_watches -= 1;
        drop(state);
        if clean {
            let _ = stream.write_all(b"0\r\n\r\n");
        } else {
            let _ = stream.shutdown(Shutdown::Both);
        }
        return;
    }
    // A list page.
    let limit: usize = request
        .query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(usize::MAX)
        .min(state.behaviour.max_page)
        .max(1);
    let (offset, version) = match request.query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let Some((offset, version)) = token
                .split_once(':')
                .and_then(|(o, v)| Some((o.parse::<usize>().ok()?, v.parse::<u64>().ok()?)))
            else {
                drop(state);
                return respond(
                    &mut stream,
                    400,
                    &status_body(400, "BadRequest", "bad continue"),
                );
            };
            let expire = std::mem::take(&mut state.behaviour.expire_next_continue);
            if version < state.compacted_below || expire {
                drop(state);
                return respond(
                    &mut stream,
                    410,
                    &status_body(410, "Expired", "the continue token has expired"),
                );
            }
            (offset, version)
        }
        None => (0, state.next_version - 1),
    };
    let matching = || {
        state
            .objects
            .iter()
            .filter(|((r, ns, _), _)| matches(r, ns))
            .map(|(_, o)| o)
    };
    let page: Vec<&Value> = matching().skip(offset).take(limit).collect();
    let more = offset + page.len() < matching().count() || state.behaviour.endless_continue;
    let continue_token = if more {
        format!("{}:{version}", offset + page.len())
    } else {
        String::new()
    };
    let body = json!({"kind":list_kind,"apiVersion":api_version,
        "metadata":{"resourceVersion":format!("{}{version}", state.behaviour.version_prefix),
                    "continue":continue_token},
        "items":page})
    .to_string();
    drop(state);
    respond(&mut stream, 200, &body);
}

/// An EndpointSlice of `service`: endpoints (address, pod uid or "", ready or not) and ports
/// (name, number, protocol or "").
pub fn slice(
    name: &str,
    service: &str,
    address_type: &str,
    endpoints: &[(&str, &str, bool)],
    ports: &[(&str, u16, &str)],
) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(address, uid, ready)| {
            let mut endpoint = json!({"addresses":[address],"conditions":{"ready":ready}});
            if !uid.is_empty() {
                endpoint["targetRef"] = json!({"kind":"Pod","uid":uid,"name":format!("pod-{uid}")});
            }
            endpoint
        })
        .collect();
    let ports: Vec<Value> = ports
        .iter()
        .map(|(name, port, protocol)| {
            let mut port = json!({"name":name,"port":port});
            if !protocol.is_empty() {
                port["protocol"] = (*protocol).into();
            }
            port
        })
        .collect();
    json!({"metadata":{"name":name,"labels":{"kubernetes.io/service-name":service,
            "endpointslice.kubernetes.io/managed-by":"endpointslice-controller.k8s.io"}},
           "addressType":address_type,"endpoints":endpoints,"ports":ports})
}

/// A Pod with this uid, labels and annotations (`null` for none).
pub fn pod(name: &str, uid: &str, labels: Value, annotations: Value) -> Value {
    let mut metadata = json!({"name":name,"uid":uid});
    if !labels.is_null() {
        metadata["labels"] = labels;
    }
    if !annotations.is_null() {
        metadata["annotations"] = annotations;
    }
    json!({"metadata":metadata,"spec":{"containers":[{"name":"app","image":"app:1"}]},
           "status":{"phase":"Running"}})
}
