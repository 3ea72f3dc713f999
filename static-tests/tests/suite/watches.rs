//! Blocking queries (observability contract §1): the `X-A8-Index` of the three Amalgam8 read
//! routes, waits that end with a change or a timeout, what wakes them and what does not, their
//! parameters, and what becomes of waiting requests when their client goes or the process stops.
//!
//! Waits here are short (a second or two) and asserted only as functional bounds: a wait that
//! should time out is answered no earlier than its `wait`, one that should be woken well before.

use a8registry_static_tests::*;
use std::net::TcpStream;
use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

const INSTANCES: &str = "/api/v1/instances";
/// Flags for one-second TTLs.
const SHORT_TTLS: [&str; 6] = ["--min_ttl", "1s", "--default_ttl", "1s", "--max_ttl", "10m"];
/// A wait much longer than any test, for requests that must be woken.
const LONG_WAIT: &str = "60s";
/// How long a request that must be woken may take at most: far below [`LONG_WAIT`].
const WOKEN_WITHIN: Duration = Duration::from_secs(5);

#[track_caller]
fn index_of(response: &Response) -> u64 {
    response
        .header("x-a8-index")
        .unwrap_or_else(|| panic!("no X-A8-Index on {} {}", response.status, response.text()))
        .parse()
        .expect("X-A8-Index is a decimal integer")
}

fn bearer(namespace: &str) -> String {
    format!("Bearer {namespace}")
}

/// A GET as tenant `namespace` (trusted mode), on a fresh connection.
fn get_as(server: &Server, namespace: &str, path: &str) -> Response {
    server.request("GET", path, &[("Authorization", &bearer(namespace))], None)
}

fn register_as(server: &Server, namespace: &str, body: &str) -> Response {
    let r = server.post_json_as(namespace, INSTANCES, body);
    assert_eq!(r.status, 201, "{}", r.text());
    r
}

/// Sends a GET on its own connection and returns the connection, to read the answer later.
fn start_get(server: &Server, namespace: &str, path: &str) -> TcpStream {
    let mut conn = server.connect();
    let auth = bearer(namespace);
    send(&mut conn, "GET", path, &[("Authorization", &auth)], None);
    conn
}

/// Reads the answer of a request sent earlier; the client timeout is raised for long waits.
fn finish_get(conn: &mut TcpStream, timeout: Duration) -> Response {
    conn.set_read_timeout(Some(timeout)).unwrap();
    read_response(conn, false).expect("an answer to the waiting request")
}

/// True when nothing is answered on `conn` within `quiet` (the bytes stay unread).
fn still_waiting(conn: &mut TcpStream, quiet: Duration) -> bool {
    conn.set_read_timeout(Some(quiet)).unwrap();
    let mut byte = [0u8; 1];
    matches!(
        conn.peek(&mut byte),
        Err(ref e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
    )
}

/// The value of an unlabelled series (or of one written with its labels) in `/metrics`.
fn metric(server: &Server, series: &str) -> f64 {
    let text = server.get("/metrics").text();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
        .parse()
        .unwrap()
}

fn register(server: &Server, body: &str) -> Response {
    let r = server.post_json(INSTANCES, body);
    assert_eq!(r.status, 201, "{}", r.text());
    r
}

fn eventually(what: &str, timeout: Duration, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_read_answer_carries_an_index_that_only_changes_move_and_never_goes_back() {
    let server = Server::start(&["--auth_mode", "trusted"]);
    let mut seen = Vec::new();
    let mut index = |path: &str| {
        let r = get_as(&server, "ns", path);
        let n = index_of(&r);
        assert!(n >= 1);
        seen.push(n);
        n
    };
    let empty = index(INSTANCES);
    assert_eq!(index("/api/v1/services"), empty);
    let r = get_as(&server, "ns", "/api/v1/services/absent");
    assert_eq!(r.status, 404);
    assert_eq!(
        index_of(&r),
        empty,
        "the 404 of an unknown service carries it too"
    );

    let id = register_as(
        &server,
        "ns",
        &registration("a", "10.0.0.1:80", "\"ttl\":60"),
    )
    .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let registered = index(INSTANCES);
    assert!(registered > empty, "a registration moves it");
    assert_eq!(index("/api/v1/services/a"), registered);

    for _ in 0..5 {
        let r = server.request(
            "PUT",
            &format!("{INSTANCES}/{id}/heartbeat"),
            &[("Authorization", &bearer("ns"))],
            None,
        );
        assert_eq!(r.status, 200);
    }
    assert_eq!(index(INSTANCES), registered, "heartbeats do not move it");

    register_as(&server, "other", &registration("a", "10.0.0.1:80", ""));
    assert_eq!(
        index(INSTANCES),
        registered,
        "another namespace's changes do not move it"
    );

    let body = registration("a", "10.0.0.1:80", "\"ttl\":60,\"tags\":[\"v2\"]");
    register_as(&server, "ns", &body);
    let replaced = index(INSTANCES);
    assert!(replaced > registered, "a replacement (new tags) moves it");

    let r = server.request(
        "DELETE",
        &format!("{INSTANCES}/{id}"),
        &[("Authorization", &bearer("ns"))],
        None,
    );
    assert_eq!(r.status, 200);
    let deregistered = index(INSTANCES);
    assert!(deregistered > replaced, "a deregistration moves it");
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "never goes back: {seen:?}"
    );
}

#[test]
fn an_expiry_moves_the_index_and_wakes_its_watchers() {
    let mut args = vec!["--auth_mode", "trusted"];
    args.extend(SHORT_TTLS);
    let server = Server::start(&args);
    register_as(
        &server,
        "ns",
        &registration("a", "10.0.0.1:80", "\"ttl\":1"),
    );
    let r = get_as(&server, "ns", "/api/v1/services/a");
    assert_eq!(r.status, 200);
    let before = index_of(&r);
    let started = Instant::now();
    let mut conn = start_get(
        &server,
        "ns",
        &format!("/api/v1/services/a?index={before}&wait={LONG_WAIT}"),
    );
    let r = finish_get(&mut conn, Duration::from_secs(10));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(r.status, 404, "the service is gone: {}", r.text());
    assert!(index_of(&r) > before);
}

#[test]
fn a_wait_without_a_change_times_out_with_the_current_state() {
    let server = Server::start(&["--auth_mode", "trusted"]);
    register_as(&server, "ns", &registration("a", "10.0.0.1:80", ""));
    for path in [INSTANCES, "/api/v1/services", "/api/v1/services/a"] {
        let current = index_of(&get_as(&server, "ns", path));
        let started = Instant::now();
        let r = get_as(&server, "ns", &format!("{path}?index={current}&wait=700ms"));
        let took = started.elapsed();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert!(
            took >= Duration::from_millis(700),
            "{path} answered after {took:?}, before its wait"
        );
        assert!(took < Duration::from_secs(5), "{path} took {took:?}");
        assert_eq!(index_of(&r), current);
        assert!(r.text().contains("\"a\""), "{path}: {}", r.text());
    }
    // An index behind the current one, or 0, or none: answered at once, with the state.
    let current = index_of(&get_as(&server, "ns", INSTANCES));
    for query in [
        format!("index={}&wait=30s", current - 1),
        "index=0&wait=30s".to_string(),
        "wait=30s".to_string(),
    ] {
        let started = Instant::now();
        let r = get_as(&server, "ns", &format!("{INSTANCES}?{query}"));
        assert_eq!(r.status, 200);
        assert!(started.elapsed() < Duration::from_secs(5), "{query} waited");
        assert_eq!(instance_count(&r.json()), 1);
    }
}

#[test]
fn a_change_wakes_waiting_requests_with_their_filters_applied() {
    let server = Server::start(&["--auth_mode", "trusted"]);
    register_as(&server, "ns", &registration("a", "10.0.0.1:80", ""));
    let current = index_of(&get_as(&server, "ns", INSTANCES));
    let filtered =
        format!("{INSTANCES}?service_name=a&tags=v2&fields=tags&index={current}&wait={LONG_WAIT}");
    let mut tagged = start_get(&server, "ns", &filtered);
    let mut names = start_get(
        &server,
        "ns",
        &format!("/api/v1/services?index={current}&wait={LONG_WAIT}"),
    );
    let mut service = start_get(
        &server,
        "ns",
        &format!("/api/v1/services/a?index={current}&wait={LONG_WAIT}"),
    );
    assert!(still_waiting(&mut tagged, Duration::from_millis(300)));
    assert!(still_waiting(&mut names, Duration::from_millis(50)));
    assert!(still_waiting(&mut service, Duration::from_millis(50)));

    // A change the filter does not select still wakes the namespace-wide watcher: it gets the
    // full filtered answer, which has not changed (clients compare).
    let started = Instant::now();
    register_as(&server, "ns", &registration("b", "10.0.0.2:80", ""));
    let r = finish_get(&mut tagged, WOKEN_WITHIN);
    assert!(started.elapsed() < WOKEN_WITHIN);
    assert_eq!(r.status, 200);
    assert!(index_of(&r) > current);
    assert_eq!(
        instance_count(&r.json()),
        0,
        "filters applied: {}",
        r.text()
    );
    let r = finish_get(&mut names, WOKEN_WITHIN);
    assert_eq!(r.json()["services"], serde_json::json!(["a", "b"]));
    assert!(
        still_waiting(&mut service, Duration::from_millis(300)),
        "a change of service b woke a watcher of service a"
    );

    // Wait again from the new index: the tagged instance is what wakes it, and it is selected,
    // projected by `fields`.
    let next = index_of(&r);
    let filtered =
        format!("{INSTANCES}?service_name=a&tags=v2&fields=tags&index={next}&wait={LONG_WAIT}");
    let mut tagged = start_get(&server, "ns", &filtered);
    assert!(still_waiting(&mut tagged, Duration::from_millis(300)));
    register_as(
        &server,
        "ns",
        &registration("a", "10.0.0.3:80", "\"tags\":[\"v2\"]"),
    );
    let r = finish_get(&mut tagged, WOKEN_WITHIN);
    let listing = r.json();
    assert_eq!(instance_count(&listing), 1, "{listing}");
    let instance = &listing["instances"][0];
    assert_eq!(instance["tags"], serde_json::json!(["v2"]));
    assert!(instance.get("status").is_none(), "projected: {instance}");
    let r = finish_get(&mut service, WOKEN_WITHIN);
    assert_eq!(r.status, 200);
    assert_eq!(instance_count(&r.json()), 2);
}

#[test]
fn watchers_are_not_woken_by_other_services_or_other_namespaces() {
    let server = Server::start(&["--auth_mode", "trusted"]);
    register_as(&server, "ns", &registration("a", "10.0.0.1:80", ""));
    let current = index_of(&get_as(&server, "ns", INSTANCES));
    // An empty namespace is watched too, and from the index it shows.
    let empty = index_of(&get_as(&server, "empty", INSTANCES));
    let wait = Duration::from_secs(3);
    // Before the first request is sent: no wait can end before `started + wait`.
    let started = Instant::now();
    let mut service = start_get(
        &server,
        "ns",
        &format!("/api/v1/services/a?index={current}&wait=3s"),
    );
    let mut namespace = start_get(
        &server,
        "ns",
        &format!("{INSTANCES}?index={current}&wait=3s"),
    );
    let mut nothing = start_get(
        &server,
        "empty",
        &format!("/api/v1/services?index={empty}&wait=3s"),
    );
    // All three wait before the changes (one that arrived after them would answer at once).
    eventually("three waiting requests", Duration::from_secs(5), || {
        metric(&server, "a8registry_watchers") == 3.0
    });
    register_as(&server, "ns", &registration("b", "10.0.0.2:80", ""));
    register_as(&server, "other", &registration("a", "10.0.0.1:80", ""));
    let r = finish_get(&mut namespace, WOKEN_WITHIN);
    assert!(index_of(&r) > current, "its own namespace's change woke it");
    // The other two are still waiting after both changes (the namespace watcher's answer shows
    // that they have been made and published).
    assert!(
        still_waiting(&mut service, Duration::from_millis(500)),
        "service b or another namespace woke a watcher of service a"
    );
    assert!(
        still_waiting(&mut nothing, Duration::from_millis(500)),
        "another namespace woke a watcher of an empty one"
    );
    assert!(started.elapsed() < wait, "the checks ran within the wait");
    let r = finish_get(&mut service, Duration::from_secs(10));
    assert!(started.elapsed() >= wait);
    assert_eq!(r.status, 200);
    let r = finish_get(&mut nothing, Duration::from_secs(10));
    assert!(started.elapsed() >= wait);
    assert_eq!(index_of(&r), empty);
    assert_eq!(r.text(), r#"{"services":[]}"#);
}

#[test]
fn a_service_watch_compares_its_index_with_the_namespace_index_it_was_given() {
    let server = Server::start(&[]);
    register(&server, &registration("a", "10.0.0.1:80", ""));
    register(&server, &registration("b", "10.0.0.2:80", ""));
    let r = server.get("/api/v1/services/a");
    let given = index_of(&r);
    assert_eq!(
        given,
        index_of(&server.get(INSTANCES)),
        "the namespace's index"
    );
    // Lower than the index the answer carried, though not lower than service a's last change:
    // answered at once (§1.2).
    let started = Instant::now();
    let r = server.get(&format!(
        "/api/v1/services/a?index={}&wait={LONG_WAIT}",
        given - 1
    ));
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < WOKEN_WITHIN);
    // At the index given, it waits: another service's change does not wake it, its own does.
    let mut conn = server.connect();
    send(
        &mut conn,
        "GET",
        &format!("/api/v1/services/a?index={given}&wait={LONG_WAIT}"),
        &[],
        None,
    );
    // (Waiting before the other change: one made before the request arrives answers it.)
    eventually("the request waits", Duration::from_secs(5), || {
        metric(&server, "a8registry_watchers") == 1.0
    });
    register(&server, &registration("c", "10.0.0.3:80", ""));
    assert!(still_waiting(&mut conn, Duration::from_millis(500)));
    register(&server, &registration("a", "10.0.0.4:80", ""));
    let r = finish_get(&mut conn, WOKEN_WITHIN);
    assert_eq!(r.status, 200);
    assert!(index_of(&r) > given);
    assert_eq!(r.json()["instances"].as_array().unwrap().len(), 2);
}

#[test]
fn eureka_status_and_metadata_changes_move_the_index_and_wake_watchers() {
    let server = Server::start(&[]);
    let body = serde_json::json!({"instance":{"instanceId":"e-1","hostName":"e-1-host",
        "app":"EAPP","ipAddr":"10.0.0.1","status":"UP","port":{"$":80,"@enabled":"true"},
        "vipAddress":"eapp","dataCenterInfo":{"@class":
        "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"},"metadata":{}}});
    let r = server.post_json("/eureka/v2/apps/EAPP", &body.to_string());
    assert_eq!(r.status, 204, "{}", r.text());
    for change in ["status?value=OUT_OF_SERVICE", "metadata?zone=b"] {
        let before = index_of(&server.get(INSTANCES));
        let mut conn = watch_instances(&server, before);
        assert!(still_waiting(&mut conn, Duration::from_millis(300)));
        let r = server.request(
            "PUT",
            &format!("/eureka/v2/apps/EAPP/e-1/{change}"),
            &[],
            None,
        );
        assert_eq!(r.status, 200, "{change}: {}", r.text());
        let r = finish_get(&mut conn, WOKEN_WITHIN);
        assert!(index_of(&r) > before, "{change} moves the index");
    }
}

/// How often the registry forgets the bookkeeping of emptied namespaces (its housekeeping).
const HOUSEKEEPING: Duration = Duration::from_secs(30);

#[test]
fn an_empty_namespace_keeps_its_index_when_another_namespace_is_forgotten() {
    let started = Instant::now();
    let server = Server::start(&["--auth_mode", "trusted"]);
    let quiet = index_of(&get_as(&server, "quiet", INSTANCES));
    let id = register_as(&server, "gone", &registration("a", "10.0.0.1:80", "")).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = server.request(
        "DELETE",
        &format!("{INSTANCES}/{id}"),
        &[("Authorization", &bearer("gone"))],
        None,
    );
    assert_eq!(r.status, 200);
    let gone = index_of(&get_as(&server, "gone", INSTANCES));
    assert!(gone > quiet);
    // The emptied namespace is forgotten at the first housekeeping, 30 s after the start.
    std::thread::sleep((HOUSEKEEPING + Duration::from_secs(5)).saturating_sub(started.elapsed()));
    assert_eq!(
        index_of(&get_as(&server, "quiet", INSTANCES)),
        quiet,
        "an empty namespace's index moved with another namespace's changes"
    );
    assert_eq!(
        index_of(&get_as(&server, "quiet", "/api/v1/services")),
        quiet
    );
    assert_eq!(
        index_of(&get_as(&server, "gone", INSTANCES)),
        gone,
        "a forgotten namespace reads its last index"
    );
    register_as(&server, "gone", &registration("a", "10.0.0.1:80", ""));
    assert!(index_of(&get_as(&server, "gone", INSTANCES)) > gone);
    assert_eq!(index_of(&get_as(&server, "quiet", INSTANCES)), quiet);
}

#[test]
fn bad_index_or_wait_parameters_get_400_after_the_other_stages() {
    let server = Server::start(&["--auth_mode", "trusted"]);
    for route in [INSTANCES, "/api/v1/services", "/api/v1/services/a"] {
        for query in [
            "index=-1",
            "index=abc",
            "index=",
            "index=1.5",
            "wait=5",
            "wait=-1s",
            "wait=soon",
            "index=1&wait=",
            "index=%ff",
            "index=1&wait=%ff",
            "index=99999999999999999999",
        ] {
            let r = get_as(&server, "ns", &format!("{route}?{query}"));
            r.assert_error(400, "Invalid index or wait parameter");
        }
        // Authentication runs first: no token, 401 at once rather than a wait or a 400.
        for query in ["index=999999&wait=30s", "index=abc", "wait=soon"] {
            let started = Instant::now();
            let r = server.get(&format!("{route}?{query}"));
            assert_eq!(r.status, 401, "{route}?{query}: {}", r.text());
            assert!(started.elapsed() < Duration::from_secs(5));
        }
    }
    // A bad filter or projection is refused at once, as on a plain read, not after the wait.
    let current = index_of(&get_as(&server, "ns", INSTANCES));
    for (query, error) in [
        (
            "bogus=1",
            "Malformed or invalid instance selection criteria",
        ),
        (
            "fields=nope",
            "Undefined or malformed instance fields in filter",
        ),
    ] {
        let started = Instant::now();
        let r = get_as(
            &server,
            "ns",
            &format!("{INSTANCES}?{query}&index={current}&wait=30s"),
        );
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        assert!(r.text().contains(error), "{query}: {}", r.text());
        assert!(started.elapsed() < Duration::from_secs(5), "{query}");
    }
    // On the filtered listing, `index` and `wait` are no longer unknown selection keys.
    let r = get_as(&server, "ns", &format!("{INSTANCES}?index=1&wait=1ms"));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get_as(&server, "ns", &format!("{INSTANCES}?indexes=1"));
    r.assert_error(400, "Malformed or invalid instance selection criteria");
}

/// A connection whose request waits for the next change of the instances after `current`.
fn watch_instances(server: &Server, current: u64) -> TcpStream {
    let mut conn = server.connect();
    send(
        &mut conn,
        "GET",
        &format!("{INSTANCES}?index={current}&wait={LONG_WAIT}"),
        &[],
        None,
    );
    conn
}

#[test]
fn a_client_that_goes_away_frees_its_waiting_request() {
    let server = Server::start(&[]);
    let current = index_of(&server.get(INSTANCES));
    let watchers: Vec<TcpStream> = (0..3).map(|_| watch_instances(&server, current)).collect();
    eventually("three watchers", Duration::from_secs(5), || {
        metric(&server, "a8registry_watchers") == 3.0
    });
    drop(watchers);
    eventually(
        "the watchers are freed when their clients go",
        Duration::from_secs(5),
        || metric(&server, "a8registry_watchers") == 0.0,
    );
    eventually(
        "their connections are closed",
        Duration::from_secs(5),
        || metric(&server, "a8registry_connections") == 1.0,
    );
    // A change afterwards finds nobody to wake and harms nothing.
    let r = server.post_json(INSTANCES, &registration("a", "10.0.0.1:80", ""));
    assert_eq!(r.status, 201);
    assert_eq!(server.get(INSTANCES).status, 200);
}

#[test]
fn a_client_that_half_closes_while_waiting_is_taken_as_gone() {
    let server = Server::start(&[]);
    let current = index_of(&server.get(INSTANCES));
    let mut conn = watch_instances(&server, current);
    eventually("one watcher", Duration::from_secs(5), || {
        metric(&server, "a8registry_watchers") == 1.0
    });
    // Its sending side shut: like Go's HTTP server, the registry takes the end of the request
    // stream as the client gone, frees the wait and closes without an answer.
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    eventually(
        "the half-closed watcher is freed",
        Duration::from_secs(5),
        || metric(&server, "a8registry_watchers") == 0.0,
    );
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    use std::io::Read;
    assert!(conn.read_to_end(&mut rest).is_ok(), "closed by the server");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

#[test]
fn sigterm_answers_waiting_requests_at_once_with_the_current_state() {
    let mut server = Server::start(&[]);
    let r = server.post_json(INSTANCES, &registration("a", "10.0.0.1:80", ""));
    assert_eq!(r.status, 201);
    let current = index_of(&server.get(INSTANCES));
    let mut waiting: Vec<TcpStream> = (0..50)
        .map(|i| {
            let path = match i % 3 {
                0 => format!("{INSTANCES}?index={current}&wait={LONG_WAIT}"),
                1 => format!("/api/v1/services?index={current}&wait={LONG_WAIT}"),
                _ => format!("/api/v1/services/a?index={current}&wait={LONG_WAIT}"),
            };
            let mut conn = server.connect();
            send(&mut conn, "GET", &path, &[], None);
            conn
        })
        .collect();
    eventually("fifty watchers", Duration::from_secs(5), || {
        metric(&server, "a8registry_watchers") == 50.0
    });
    let started = Instant::now();
    server.signal(libc::SIGTERM);
    for conn in &mut waiting {
        let r = finish_get(conn, Duration::from_secs(5));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("close"));
        assert_eq!(index_of(&r), current);
        assert!(r.text().contains("10.0.0.1:80") || r.text().contains("\"a\""));
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(server.wait_exit(Duration::from_secs(6)), Some(0));
}

/// Raises this process's open-file limit (the server inherits it) to `wanted`, or as far as the
/// hard limit allows; returns the limit in force.
fn raise_open_files(wanted: u64) -> u64 {
    // SAFETY: getrlimit and setrlimit on this process with structs we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
        limit.rlim_cur
    }
}

/// A waiting request's socket and what it has received.
struct Watcher {
    conn: TcpStream,
    received: Vec<u8>,
    answered: Option<Duration>,
}

impl Watcher {
    /// The answer, once complete: status and body.
    fn complete(&self) -> Option<(u16, &[u8])> {
        let head_end = self.received.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = std::str::from_utf8(&self.received[..head_end]).ok()?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))?
            .parse()
            .ok()?;
        let body = self.received.get(head_end..head_end + length)?;
        Some((status, body))
    }
}

/// CPU time of process `pid`'s threads so far, to the nanosecond (the sum of their
/// `/proc/<pid>/task/<tid>/schedstat`; `/proc/<pid>/stat` counts 10 ms ticks only).
fn cpu_seconds(pid: u32) -> f64 {
    let mut nanos = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) {
            nanos += stat
                .split(' ')
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    nanos as f64 / 1e9
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[test]
fn ten_thousand_watchers_are_woken_by_one_change() {
    const WATCHERS: usize = 10_000;
    // The test and the server (which inherits the limit) each hold one end of every watcher.
    let limit = raise_open_files(WATCHERS as u64 + 1000);
    assert!(
        limit >= WATCHERS as u64 + 200,
        "needs {} open files, has {limit}: run the suite through static-tests/run.sh, or raise \
         `ulimit -n`",
        WATCHERS + 200
    );
    // With the default connection limit: 10,000 watchers leave room for probes and other clients.
    let server = Server::start(&[]);
    let r = server.post_json(INSTANCES, &registration("watched", "10.0.0.1:80", ""));
    assert_eq!(r.status, 201);
    let r = server.get("/api/v1/services/watched");
    let current = index_of(&r);
    let rss_before = server.status_kib("VmRSS");
    let request = format!(
        "GET /api/v1/services/watched?index={current}&wait=120s HTTP/1.1\r\nHost: x\r\n\r\n"
    );
    let mut watchers = Vec::with_capacity(WATCHERS);
    for _ in 0..WATCHERS {
        use std::io::Write;
        let mut conn = server.connect();
        conn.write_all(request.as_bytes()).unwrap();
        conn.set_nonblocking(true).unwrap();
        watchers.push(Watcher {
            conn,
            received: Vec::new(),
            answered: None,
        });
    }
    eventually("ten thousand watchers", Duration::from_secs(60), || {
        metric(&server, "a8registry_watchers") == WATCHERS as f64
    });
    let rss_waiting = server.status_kib("VmRSS");
    let r = server.get("/ready");
    assert_eq!(
        r.status,
        200,
        "a probe beside ten thousand watchers: {}",
        r.text()
    );

    // SAFETY: epoll on descriptors owned by `watchers`, which outlive the epoll instance.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(epoll >= 0);
    for (i, watcher) in watchers.iter().enumerate() {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: as above.
        let added = unsafe {
            libc::epoll_ctl(
                epoll,
                libc::EPOLL_CTL_ADD,
                watcher.conn.as_raw_fd(),
                &mut event,
            )
        };
        assert_eq!(added, 0);
    }
    // With A8_PROFILE_WAKE=<file>, `perf record` samples the server during the wake alone (for
    // looking into where its time goes; not part of what the test checks).
    let profiler = std::env::var("A8_PROFILE_WAKE").ok().map(|out| {
        let child = std::process::Command::new("perf")
            .args([
                "record",
                "-F",
                "2999",
                "--call-graph",
                "dwarf,8192",
                "-o",
                &out,
                "-p",
                &server.pid().to_string(),
            ])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        child
    });
    let cpu_before = cpu_seconds(server.pid());
    let client_cpu_before = cpu_seconds(std::process::id());
    let changed = Instant::now();
    let r = server.post_json(INSTANCES, &registration("watched", "10.0.0.2:80", ""));
    assert_eq!(r.status, 201);
    let mut answered = 0;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let deadline = changed + Duration::from_secs(60);
    while answered < WATCHERS && Instant::now() < deadline {
        // SAFETY: `events` has room for the count passed.
        let ready = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), 1024, 1000) };
        for event in &events[..ready.max(0) as usize] {
            use std::io::Read;
            let watcher = &mut watchers[event.u64 as usize];
            let mut buffer = [0u8; 4096];
            // One read per readiness: the epoll is level-triggered, so bytes left unread (an
            // answer larger than the buffer, or one arriving in pieces) are reported again. A
            // second read would only find the socket empty, one system call per watcher that
            // the client's CPU and the shared cores pay for.
            if let Ok(n @ 1..) = watcher.conn.read(&mut buffer) {
                watcher.received.extend_from_slice(&buffer[..n]);
            }
            if watcher.answered.is_none() && watcher.complete().is_some() {
                watcher.answered = Some(changed.elapsed());
                answered += 1;
            }
        }
    }
    let cpu_waking = cpu_seconds(server.pid()) - cpu_before;
    let client_cpu = cpu_seconds(std::process::id()) - client_cpu_before;
    if let Some(mut child) = profiler {
        // SAFETY: kill(2) on the pid of the profiler this test started.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let _ = child.wait();
    }
    // SAFETY: closes the epoll descriptor created above.
    unsafe { libc::close(epoll) };
    assert_eq!(answered, WATCHERS, "every watcher is woken within a minute");
    for watcher in &watchers {
        let (status, body) = watcher.complete().unwrap();
        assert_eq!(status, 200);
        assert!(
            String::from_utf8_lossy(body).contains("10.0.0.2:80"),
            "the answer shows the change"
        );
    }
    let mut latencies: Vec<Duration> = watchers.iter().filter_map(|w| w.answered).collect();
    latencies.sort();
    eprintln!(
        "watch figures: {WATCHERS} watchers; server RSS {:.1} MiB before, {:.1} MiB waiting; \
         wake latency after one change (client and server on the same machine): p50 {:.1} ms, \
         p99 {:.1} ms, max {:.1} ms; server CPU for the wake and the answers {:.0} ms ({:.1} µs per answer); the \
         test client's CPU meanwhile (its reads of the answers) {:.0} ms",
        rss_before as f64 / 1024.0,
        rss_waiting as f64 / 1024.0,
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies[latencies.len() - 1].as_secs_f64() * 1000.0,
        cpu_waking * 1000.0,
        cpu_waking * 1e6 / WATCHERS as f64,
        client_cpu * 1000.0,
    );
    eventually("no watcher is left", Duration::from_secs(10), || {
        metric(&server, "a8registry_watchers") == 0.0
    });
}

#[test]
fn an_index_ahead_of_the_current_one_waits_for_the_next_change() {
    // A client that kept the index of a process that has since restarted.
    let server = Server::start(&[]);
    let current = index_of(&server.get(INSTANCES));
    let mut conn = server.connect();
    let ahead = current + 1_000_000;
    send(
        &mut conn,
        "GET",
        &format!("/api/v1/services/a?index={ahead}&wait={LONG_WAIT}"),
        &[],
        None,
    );
    assert!(still_waiting(&mut conn, Duration::from_millis(300)));
    let r = server.post_json(INSTANCES, &registration("a", "10.0.0.1:80", ""));
    assert_eq!(r.status, 201);
    let r = finish_get(&mut conn, WOKEN_WITHIN);
    assert_eq!(r.status, 200);
    let index = index_of(&r);
    assert!(index > current, "{index}");
    // Woken by the change, not at the end of the wait: the answer holds the new instance. (On
    // the Redis store the index starts from Redis's clock, so it may pass `ahead` here.)
    assert_eq!(ids_of(&r.json()).len(), 1, "{}", r.text());
}

#[test]
fn a_watch_with_a_large_pipeline_behind_it_is_answered_and_freed_when_the_client_leaves() {
    use std::io::Write;
    let server = Server::start(&[]);
    let mut conn = server.connect();
    // A wait, then more than the server reads while a request waits, then the client leaves.
    let mut bytes =
        b"GET /api/v1/services?index=99999&wait=10m HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    bytes.extend_from_slice(b"GET /x HTTP/1.1\r\nX-Pad: ");
    // (16 KiB: no more than a connection's read buffer holds outside a wait.)
    bytes.extend(std::iter::repeat_n(b'a', 20 * 1024));
    conn.write_all(&bytes).unwrap();
    let first = read_response(&mut conn, false).expect("the wait is answered at once");
    assert_eq!(first.status, 200);
    drop(conn);
    eventually("the connection is freed", Duration::from_secs(10), || {
        metric(&server, "a8registry_watchers") == 0.0
            && metric(&server, "a8registry_connections") <= 1.0
    });
}

#[test]
fn waiting_requests_leave_a_sixteenth_of_the_connections_to_probes_and_plain_requests() {
    // At most 64 - 64 / 16 = 60 requests may wait.
    let server = Server::start(&["--max_connections", "64"]);
    register(&server, &registration("a", "10.0.0.1:80", ""));
    let current = index_of(&server.get(INSTANCES));
    let mut waiting: Vec<TcpStream> = (0..60).map(|_| watch_instances(&server, current)).collect();
    eventually("60 waiting requests", Duration::from_secs(10), || {
        metric(&server, "a8registry_watchers") == 60.0
    });
    let started = Instant::now();
    let r = server.get(&format!("{INSTANCES}?index={current}&wait={LONG_WAIT}"));
    r.assert_error(503, "Too many waiting requests, retry later");
    assert!(started.elapsed() < WOKEN_WITHIN, "refused at once");
    assert_eq!(server.get("/ready").status, 200);
    assert_eq!(server.get("/").status, 200);
    assert_eq!(server.get(INSTANCES).status, 200, "plain reads are served");
    // A change answers them all, and watches are taken again.
    register(&server, &registration("a", "10.0.0.2:80", ""));
    for conn in &mut waiting {
        assert_eq!(finish_get(conn, WOKEN_WITHIN).status, 200);
    }
    drop(waiting);
    let now = index_of(&server.get(INSTANCES));
    let mut again = watch_instances(&server, now);
    assert!(still_waiting(&mut again, Duration::from_millis(300)));
}

#[test]
fn watchers_that_leave_right_after_asking_are_freed_at_once() {
    use std::io::Write;
    // Their FIN often comes with the request, read together with it (observability §1.2: a
    // client that goes away ends its wait).
    let server = Server::start(&[]);
    let current = index_of(&server.get(INSTANCES));
    for _ in 0..50 {
        let mut conn = server.connect();
        conn.write_all(
            format!("GET /api/v1/services?index={current}&wait=60s HTTP/1.1\r\nHost: x\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        drop(conn);
    }
    eventually(
        "every watcher that left is freed",
        Duration::from_secs(5),
        || metric(&server, "a8registry_watchers") == 0.0,
    );
}
