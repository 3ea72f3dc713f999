//! The Kubernetes catalog (catalogs contract §3) against the suite's mock API server, which
//! speaks the real wire format (`kubectl` reads it here to show that).

use a8registry_static_tests::kube::{pod, slice, MockKube};
use a8registry_static_tests::pki::{Pki, TlsProxy};
use a8registry_static_tests::{ids_of, run_to_exit, Server};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Generous bound for a change to show (the contract promises 2 s).
const SHOW_WITHIN: Duration = Duration::from_secs(6);

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + SHOW_WITHIN;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "not within {SHOW_WITHIN:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn listing(server: &Server, token: Option<&str>) -> Value {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let response = server.request("GET", "/api/v1/instances", &headers, None);
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

fn ids(server: &Server, token: Option<&str>) -> Vec<String> {
    ids_of(&listing(server, token))
}

fn instance(server: &Server, token: Option<&str>, id: &str) -> Value {
    listing(server, token)["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

fn report(server: &Server) -> Value {
    server.get("/uptime").json()["CATALOGS"]["properties"]["kubernetes"].clone()
}

fn start(mock: &MockKube, extra: &[&str]) -> Server {
    let url = mock.url();
    let mut args = vec!["--k8s_url", url.as_str()];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// A temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "a8registry-k8s-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn kubectl(home: &Scratch, args: &[&str]) -> std::process::Output {
    Command::new("kubectl")
        .args(args)
        .env("HOME", &home.0)
        .env("KUBECONFIG", home.file("kubeconfig"))
        .stdin(Stdio::null())
        .output()
        .expect("kubectl is installed (static-tests/run.sh installs kubernetes-client)")
}

#[test]
fn kubectl_reads_the_mock_api_server() {
    // The mock is only worth its tests if a real client accepts its lists and watch streams.
    let mock = MockKube::start();
    mock.put(
        "endpointslices",
        "team",
        slice(
            "reviews-abc",
            "reviews",
            "IPv4",
            &[("10.1.0.5", "u1", true)],
            &[("http", 9080, "TCP")],
        ),
    );
    mock.put(
        "pods",
        "team",
        pod("reviews-1", "u1", json!({"app": "reviews"}), Value::Null),
    );
    let home = Scratch::new("kubectl");
    std::fs::write(home.file("kubeconfig"), "").unwrap();
    let server = mock.url();
    let listed = kubectl(
        &home,
        &[
            "--server",
            &server,
            "get",
            "endpointslices",
            "-A",
            "-o",
            "json",
        ],
    );
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let list: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        list["items"][0]["metadata"]["name"], "reviews-abc",
        "{list}"
    );
    assert_eq!(list["items"][0]["endpoints"][0]["addresses"][0], "10.1.0.5");

    // A watch: kubectl prints the events the stream carries.
    let mut watch = Command::new("kubectl")
        .args([
            "--server",
            &server,
            "get",
            "pods",
            "-n",
            "team",
            "--watch",
            "--output-watch-events",
            "-o",
            "json",
        ])
        .env("HOME", &home.0)
        .env("KUBECONFIG", home.file("kubeconfig"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (lines_out, lines_in) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        use std::io::Read;
        let mut stdout = stdout;
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            let _ = lines_out.send(text.clone());
        }
    });
    let wait_for = |needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_in.recv_timeout(left) {
                Ok(text) if text.contains(needle) => return text,
                Ok(_) => {}
                Err(_) => panic!("kubectl never printed {needle}"),
            }
        }
    };
    wait_for("\"ADDED\"");
    while mock.open_watches() == 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    mock.put(
        "pods",
        "team",
        pod(
            "reviews-1",
            "u1",
            json!({"app": "reviews", "v": "2"}),
            Value::Null,
        ),
    );
    let text = wait_for("\"MODIFIED\"");
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(text.contains(r#""v":"2""#), "{text}");
}

#[test]
fn endpoint_slices_are_mirrored_with_pod_labels_and_annotations() {
    let mock = MockKube::start();
    mock.put(
        "endpointslices",
        "default",
        slice(
            "reviews-abc",
            "reviews",
            "IPv4",
            &[
                ("10.1.0.5", "u1", true),
                ("10.1.0.6", "u2", false),
                ("10.1.0.7", "", true),
            ],
            &[
                ("http", 9080, ""),
                ("metrics", 9100, "TCP"),
                ("dns", 53, "UDP"),
            ],
        ),
    );
    mock.put(
        "pods",
        "default",
        pod(
            "reviews-1",
            "u1",
            json!({"version": "v1", "app": "reviews"}),
            json!({"team": "books", "x": "1"}),
        ),
    );
    let server = start(&mock, &[]);
    // The first request opens the namespace; it is answered at once from what is published.
    eventually("the slice's instances", || ids(&server, None).len() == 6);
    assert_eq!(
        ids(&server, None),
        [
            "10.1.0.7-53",
            "10.1.0.7-9080",
            "10.1.0.7-9100",
            "u1-53",
            "u1-9080",
            "u1-9100"
        ]
    );
    let http = instance(&server, None, "u1-9080");
    assert_eq!(http["service_name"], "reviews");
    assert_eq!(
        http["endpoint"],
        json!({"type": "http", "value": "10.1.0.5:9080"})
    );
    assert_eq!(http["status"], "UP");
    assert_eq!(http["tags"], json!(["app=reviews", "version=v1"]));
    assert_eq!(http["metadata"], json!({"team": "books", "x": "1"}));
    assert_eq!(http["last_heartbeat"], "0001-01-01T00:00:00Z");
    assert!(http.get("ttl").is_none(), "{http}");
    assert_eq!(
        instance(&server, None, "u1-9100")["endpoint"]["type"],
        "tcp"
    );
    assert_eq!(instance(&server, None, "u1-53")["endpoint"]["type"], "udp");
    let bare = instance(&server, None, "10.1.0.7-9080");
    assert!(
        bare.get("tags").is_none() && bare.get("metadata").is_none(),
        "{bare}"
    );

    // Eureka clients see them too, host and port split (so a Ribbon client can call them).
    let app = server.request(
        "GET",
        "/eureka/v2/apps/reviews",
        &[("Accept", "application/json")],
        None,
    );
    assert_eq!(app.status, 200, "{}", app.text());
    assert!(
        app.text().contains("\"hostName\":\"10.1.0.5\""),
        "{}",
        app.text()
    );

    // Changes show: a pod relabelled, an endpoint becoming ready, a slice deleted.
    mock.put(
        "pods",
        "default",
        pod("reviews-1", "u1", json!({"version": "v2"}), Value::Null),
    );
    eventually("the new labels", || {
        instance(&server, None, "u1-9080")["tags"] == json!(["version=v2"])
    });
    assert_eq!(instance(&server, None, "u1-9080")["metadata"], json!({}));
    mock.put(
        "endpointslices",
        "default",
        slice(
            "reviews-abc",
            "reviews",
            "IPv4",
            &[("10.1.0.6", "u2", true)],
            &[("http", 9080, "")],
        ),
    );
    eventually("the modified slice", || ids(&server, None) == ["u2-9080"]);
    mock.delete("endpointslices", "default", "reviews-abc");
    eventually("the deleted slice", || ids(&server, None).is_empty());

    let kubernetes = report(&server);
    assert_eq!(kubernetes["state"], "ok", "{kubernetes}");
    assert_eq!(kubernetes["api"], "discovery.k8s.io/v1", "{kubernetes}");
    assert_eq!(kubernetes["namespaces"], 1, "{kubernetes}");
    assert_eq!(kubernetes["namespaces_max"], 100, "{kubernetes}");
    // Every request is namespaced, paged, and carries the contract's headers.
    for (line, _) in mock.requests() {
        assert!(
            line.contains("/apis/discovery.k8s.io/v1 ") || line.contains("/namespaces/default/"),
            "{line}"
        );
        if !line.contains("watch=1") && line.contains("/namespaces/") {
            assert!(line.contains("limit=500"), "{line}");
        }
    }
}

#[test]
fn the_config_refuses_bad_kubernetes_options() {
    for (args, flag) in [
        (&["--k8s_url", "ftp://k8s"][..], "--k8s_url"),
        (&["--k8s_url", "k8s:6443"], "--k8s_url"),
        (&["--k8s_url", "https://k8s?x=1"], "--k8s_url"),
        (&["--k8s_url", "in-cluster"], "--k8s_url"),
        (
            &[
                "--k8s_url",
                "http://k8s",
                "--k8s_token_file",
                "/nonexistent/token",
            ],
            "--k8s_token_file",
        ),
        (
            &[
                "--k8s_url",
                "http://k8s",
                "--k8s_ca_file",
                "/nonexistent/ca",
            ],
            "--k8s_ca_file",
        ),
        (
            &["--k8s_url", "http://k8s", "--k8s_max_namespaces", "0"],
            "--k8s_max_namespaces",
        ),
        (
            &["--k8s_url", "http://k8s", "--k8s_idle_timeout", "500ms"],
            "--k8s_idle_timeout",
        ),
    ] {
        let (code, _, stderr) = run_to_exit(args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    let (code, _, stderr) = run_to_exit(
        &[
            "--k8s_url",
            "http://k8s",
            "--k8s_token",
            "t",
            "--k8s_token_file",
            "/etc/hostname",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--k8s_token_file"), "{stderr}");
}

fn web_slice(name: &str, address: &str, uid: &str) -> Value {
    slice(
        name,
        "web",
        "IPv4",
        &[(address, uid, true)],
        &[("http", 80, "")],
    )
}

#[test]
fn a_410_or_a_broken_or_ended_watch_lists_again_and_converges() {
    let mock = MockKube::start();
    mock.put(
        "endpointslices",
        "default",
        web_slice("web-1", "10.0.0.1", "u1"),
    );
    let server = start(&mock, &[]);
    eventually("the first slice", || ids(&server, None) == ["u1-80"]);
    let lists = || {
        mock.requests()
            .iter()
            .filter(|(l, _)| l.contains("/endpointslices?limit="))
            .count()
    };
    let before = lists();

    // The history is compacted and the watch ends: watching from the old version answers
    // an ERROR 410 event, so the source lists again and sees what changed meanwhile.
    mock.put(
        "endpointslices",
        "default",
        web_slice("web-2", "10.0.0.2", "u2"),
    );
    eventually("the watched slice", || ids(&server, None).len() == 2);
    mock.compacted(|mock| mock.delete("endpointslices", "default", "web-1"));
    mock.end_watches();
    eventually("the state after the 410", || {
        ids(&server, None) == ["u2-80"]
    });
    eventually("a re-list", || lists() > before);

    // The same with an HTTP 410 answer to the watch.
    mock.behave(|b| b.gone_as_http = true);
    let lists_before = lists();
    mock.compacted(|mock| {
        mock.put(
            "endpointslices",
            "default",
            web_slice("web-3", "10.0.0.3", "u3"),
        )
    });
    mock.end_watches();
    eventually("the state after the HTTP 410", || {
        ids(&server, None) == ["u2-80", "u3-80"]
    });
    assert!(lists() > lists_before);

    // Connections cut mid-stream (a restarted API server): listed again, nothing lost.
    mock.cut_connections();
    mock.put(
        "endpointslices",
        "default",
        web_slice("web-4", "10.0.0.4", "u4"),
    );
    eventually("the state after the cut", || ids(&server, None).len() == 3);
    let kubernetes = report(&server);
    assert_eq!(kubernetes["instances"], 3, "{kubernetes}");

    // A clean end (timeoutSeconds) watches again from the remembered version, without a list.
    std::thread::sleep(Duration::from_millis(1500));
    let lists_now = lists();
    mock.end_watches();
    eventually("a new watch", || mock.open_watches() == 2);
    mock.put(
        "endpointslices",
        "default",
        web_slice("web-5", "10.0.0.5", "u5"),
    );
    eventually("the event on the new watch", || {
        ids(&server, None).len() == 4
    });
    assert_eq!(lists(), lists_now, "a clean end needs no list");
    let watches: Vec<String> = mock
        .requests()
        .into_iter()
        .map(|(l, _)| l)
        .filter(|l| l.contains("watch=1"))
        .collect();
    let last = watches.last().unwrap();
    assert!(
        last.contains("allowWatchBookmarks=true") && last.contains("timeoutSeconds=300"),
        "{last}"
    );
}

/// A mock API server holding one slice, `web-1` (pod `u1` at 10.0.0.1, port 80), in `default`.
fn mock_with_web_1() -> MockKube {
    let mock = MockKube::start();
    mock.put(
        "endpointslices",
        "default",
        web_slice("web-1", "10.0.0.1", "u1"),
    );
    mock
}

#[test]
fn every_request_asks_for_json_and_names_the_registry() {
    let mock = mock_with_web_1();
    let server = start(&mock, &[]);
    eventually("the slice", || ids(&server, None) == ["u1-80"]);
    let seen = mock.client_headers();
    // The probe, two lists and two watches at least.
    assert!(seen.len() >= 5, "{seen:?}");
    for (accept, user_agent) in seen {
        assert_eq!(accept.as_deref(), Some("application/json"));
        let user_agent = user_agent.unwrap_or_default();
        assert!(user_agent.starts_with("a8registry/"), "{user_agent}");
    }
}

#[test]
fn a_bookmark_moves_the_version_the_next_watch_starts_from() {
    let mock = mock_with_web_1();
    let server = start(&mock, &[]);
    eventually("the slice", || ids(&server, None) == ["u1-80"]);
    mock.start_versions_at(500);
    mock.bookmark("endpointslices", "default");
    // The bookmark reaches the open watch within the mock's 50 ms wake-up; then the watch ends.
    std::thread::sleep(Duration::from_millis(500));
    mock.end_watches();
    eventually("a watch from the bookmark's version", || {
        mock.requests()
            .iter()
            .any(|(line, _)| line.contains("/endpointslices?watch=1&resourceVersion=500&"))
    });
    assert_eq!(ids(&server, None), ["u1-80"], "a bookmark changes nothing");
    assert_eq!(report(&server)["state"], "ok");
}

#[test]
fn an_error_event_other_than_410_fails_and_lists_again_after_the_retry_delay() {
    let mock = mock_with_web_1();
    let server = start(&mock, &[]);
    eventually("the slice", || ids(&server, None) == ["u1-80"]);
    let lists = || {
        mock.requests()
            .iter()
            .filter(|(line, _)| line.contains("/endpointslices?limit="))
            .count()
    };
    let listed_before = lists();
    let status = json!({"type":"ERROR","object":{"kind":"Status","apiVersion":"v1",
        "status":"Failure","message":"etcd is sad","reason":"InternalError","code":500}});
    mock.inject("endpointslices", "default", status.to_string());
    let started = Instant::now();
    eventually("the error state", || {
        report(&server)["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("etcd is sad"))
    });
    assert_eq!(ids(&server, None), ["u1-80"], "the snapshot stays");
    eventually("the list again", || lists() > listed_before);
    // The retry delay is 1 s (±20 %) after a first failure: not at once.
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "listed again after {:?}",
        started.elapsed()
    );
    eventually("the ok state", || report(&server)["state"] == "ok");
}

#[test]
fn watches_that_end_at_once_are_opened_again_at_most_once_a_second() {
    let mock = MockKube::start();
    mock.behave(|b| b.watch_seconds = Some(0));
    mock.put(
        "endpointslices",
        "default",
        web_slice("web-1", "10.0.0.1", "u1"),
    );
    let server = start(&mock, &[]);
    eventually("the slice", || ids(&server, None) == ["u1-80"]);
    let watches = || {
        mock.requests()
            .iter()
            .filter(|(line, _)| line.contains("watch=1"))
            .count()
    };
    let before = watches();
    std::thread::sleep(Duration::from_secs(3));
    let opened = watches() - before;
    // Two resources (slices and pods), one watch a second each: about 6; a busy loop, thousands.
    assert!(
        opened <= 12,
        "{opened} watches in 3 s against a server that ends them at once"
    );
    // Changes still arrive through the short watches.
    mock.put(
        "endpointslices",
        "default",
        web_slice("web-2", "10.0.0.2", "u2"),
    );
    eventually("the second slice", || {
        ids(&server, None) == ["u1-80", "u2-80"]
    });
    assert_eq!(report(&server)["state"], "ok");
}

#[test]
fn an_api_server_down_or_stalled_keeps_the_snapshot_and_never_delays_a_request() {
    let mock = MockKube::start();
    mock.put(
        "endpointslices",
        "default",
        web_slice("web-1", "10.0.0.1", "u1"),
    );
    let server = start(&mock, &["--auth_mode", "trusted"]);
    let ids = |server: &Server, _: Option<&str>| ids(server, Some("default"));
    eventually("the slice", || ids(&server, None) == ["u1-80"]);

    // Down: connections refused. The snapshot stays and the state says error.
    mock.behave(|b| b.down = true);
    mock.cut_connections();
    eventually("the error state", || report(&server)["state"] == "error");
    assert_eq!(ids(&server, None), ["u1-80"]);
    let message = report(&server)["last_error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("/namespaces/default/"), "{message}");
    assert_eq!(
        server.get("/uptime").status,
        200,
        "a short failure stays healthy"
    );

    // Back: changes made meanwhile show, and the state recovers.
    mock.delete("endpointslices", "default", "web-1");
    mock.put(
        "endpointslices",
        "default",
        web_slice("web-2", "10.0.0.2", "u2"),
    );
    mock.behave(|b| b.down = false);
    eventually("the recovery", || ids(&server, None) == ["u2-80"]);
    eventually("the ok state", || report(&server)["state"] == "ok");

    // Stalled: the API server accepts and never answers. Requests are answered at once (W19).
    mock.behave(|b| b.stalled = true);
    mock.cut_connections();
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(ids(&server, None), ["u2-80"]);
    }
    let team = listing(&server, Some("team"));
    assert_eq!(team["instances"], json!([]));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "requests waited {:?} for a stalled API server",
        started.elapsed()
    );
    // The cut watches failed at once; the requests that follow (a list, or a watch resumed from
    // its resource version) never answer and fail at their 30 s deadline (catalogs contract §2),
    // not before and not never. The snapshot stays through it, and the source recovers once
    // answered again.
    let failed = loop {
        let now = report(&server);
        let message = now["last_error"]["message"].as_str().unwrap_or("");
        if now["state"] == "error" && message.contains(": timeout") {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "a stalled list never failed: {}",
            report(&server)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        failed > Duration::from_secs(20),
        "a stalled list failed after {failed:?}, before its 30 s deadline: {}",
        report(&server)
    );
    assert_eq!(ids(&server, None), ["u2-80"]);
    mock.behave(|b| b.stalled = false);
    eventually("the recovery after the stall", || {
        report(&server)["state"] == "ok"
    });
}

#[test]
fn error_statuses_are_failures_and_keep_the_snapshot() {
    let mock = MockKube::start();
    mock.put(
        "endpointslices",
        "default",
        web_slice("web-1", "10.0.0.1", "u1"),
    );
    let server = start(&mock, &[]);
    eventually("the slice", || ids(&server, None) == ["u1-80"]);
    for code in [403, 429, 500] {
        mock.behave(|b| b.status = Some(code));
        mock.cut_connections();
        eventually("the error state", || {
            report(&server)["last_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&code.to_string()))
        });
        assert_eq!(report(&server)["state"], "error");
        assert_eq!(ids(&server, None), ["u1-80"], "{code}");
        mock.behave(|b| b.status = None);
        eventually("the ok state", || report(&server)["state"] == "ok");
    }
}

#[test]
fn hostile_objects_and_watch_lines_never_stop_the_process() {
    let mock = MockKube::start();
    mock.put(
        "endpointslices",
        "default",
        web_slice("web-1", "10.0.0.1", "u1"),
    );
    // A listed object with wrong types is skipped; the others map.
    mock.put(
        "endpointslices",
        "default",
        json!({"metadata":{"name":"bad","labels":{"kubernetes.io/service-name":"web"}},
               "addressType":"IPv4","endpoints":"nope","ports":[{"port":"80"}]}),
    );
    mock.put(
        "pods",
        "default",
        json!({"metadata":{"name":"p","uid":"u1","labels":{"a":7}}}),
    );
    let mut server = start(&mock, &[]);
    eventually("the good slice", || ids(&server, None) == ["u1-80"]);
    let skipped = server
        .stderr()
        .into_iter()
        .filter(|l| l.contains("catalog object skipped"))
        .count();
    assert!(skipped >= 2, "{:?}", server.stderr());

    let hostile = [
        "not json at all".to_string(),
        format!("{{\"type\":\"ADDED\",\"object\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000)),
        r#"{"type":"ADDED","object":"a string"}"#.to_string(),
        r#"{"type":"SURPRISE","object":{"metadata":{"name":"x"}}}"#.to_string(),
        r#"{"type":"MODIFIED","object":{"metadata":{"name":"web-1"},"addressType":"IPv4","endpoints":[{"addresses":[1]}]}}"#.to_string(),
        // Over the 4 MiB line bound.
        format!(
            "{{\"type\":\"ADDED\",\"object\":{{\"metadata\":{{\"name\":\"huge\",\"annotations\":{{\"a\":\"{}\"}}}}}}}}",
            "x".repeat(5 << 20)
        ),
    ];
    for line in hostile {
        mock.put(
            "endpointslices",
            "default",
            web_slice("web-1", "10.0.0.1", "u1"),
        );
        eventually("the watch", || mock.open_watches() == 2);
        mock.inject("endpointslices", "default", line);
        mock.inject("pods", "default", "][".to_string());
        std::thread::sleep(Duration::from_millis(300));
        assert!(server.is_running(), "{:?}", server.stderr());
    }
    // Still mirroring: a new slice shows after all that.
    mock.put(
        "endpointslices",
        "default",
        web_slice("web-2", "10.0.0.2", "u2"),
    );
    eventually("the slice after hostile lines", || {
        ids(&server, None).contains(&"u2-80".to_string())
    });
    assert!(server.is_running());
    // Memory stayed bounded: the process holds nothing like the huge lines.
    assert!(
        server.status_kib("VmRSS") < 200 * 1024,
        "{} KiB",
        server.status_kib("VmRSS")
    );
}

#[test]
fn unsupported_protocols_are_skipped_and_logged_without_a_crash() {
    // W11: the original crashed on SCTP for an address without a targetRef.
    let mock = MockKube::start();
    mock.put(
        "endpointslices",
        "default",
        slice(
            "sig-1",
            "signalling",
            "IPv4",
            &[("10.0.0.9", "", true)],
            &[
                ("sctp", 3868, "SCTP"),
                ("http", 80, "TCP"),
                ("x", 81, "QUIC"),
            ],
        ),
    );
    let mut server = start(&mock, &[]);
    eventually("the TCP port", || ids(&server, None) == ["10.0.0.9-80"]);
    assert!(server.is_running());
    let warnings: Vec<String> = server
        .stderr()
        .into_iter()
        .filter(|l| l.contains("catalog object skipped"))
        .collect();
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("SCTP") && l.contains("sig-1") && l.contains("default")),
        "{warnings:?}"
    );
    assert!(warnings.iter().any(|l| l.contains("QUIC")), "{warnings:?}");
}

#[test]
fn resource_versions_are_opaque_and_every_modification_is_applied() {
    // W13: the original compared versions as strings and dropped "100000" after "99999".
    let mock = MockKube::start();
    mock.behave(|b| b.version_prefix = "etcd-".to_string());
    // The versions cross from 99999 to 100000, which compare lower as strings.
    mock.start_versions_at(99_998);
    mock.put(
        "endpointslices",
        "default",
        web_slice("web-1", "10.0.0.1", "u1"),
    );
    mock.put(
        "pods",
        "default",
        pod("p1", "u1", json!({"v": "1"}), Value::Null),
    );
    let server = start(&mock, &[]);
    eventually("the pod's tags", || {
        instance(&server, None, "u1-80")["tags"] == json!(["v=1"])
    });
    for v in 2..6 {
        mock.put(
            "pods",
            "default",
            pod("p1", "u1", json!({"v": v.to_string()}), Value::Null),
        );
        eventually("the new version's tags", || {
            instance(&server, None, "u1-80")["tags"] == json!([format!("v={v}")])
        });
    }
    // Versions sent back verbatim.
    assert!(
        mock.requests()
            .iter()
            .any(|(l, _)| l.contains("resourceVersion=etcd-")),
        "{:?}",
        mock.requests()
    );
}

#[test]
fn namespaces_open_on_first_use_are_bounded_and_close_when_idle() {
    // W20: the original watched every namespace ever used, for ever.
    let mock = MockKube::start();
    for ns in ["team-a", "team-b", "team-c", "default"] {
        mock.put(
            "endpointslices",
            ns,
            web_slice("web-1", "10.0.0.1", &format!("{ns}-pod")),
        );
    }
    let server = start(
        &mock,
        &[
            "--auth_mode",
            "trusted",
            "--k8s_max_namespaces",
            "2",
            "--k8s_idle_timeout",
            "2s",
        ],
    );
    eventually("team-a", || {
        ids(&server, Some("team-a")) == ["team-a-pod-80"]
    });
    eventually("team-b", || {
        ids(&server, Some("team-b")) == ["team-b-pod-80"]
    });
    // Names that are no Kubernetes namespace cause no request and take no slot.
    for tenant in ["Team_A", "../kube-system", "a/b", "x.y"] {
        assert_eq!(ids(&server, Some(tenant)), Vec::<String>::new(), "{tenant}");
    }
    // A third namespace is refused while two are open; it is counted and warned about once.
    for _ in 0..3 {
        assert_eq!(ids(&server, Some("team-c")), Vec::<String>::new());
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ids(&server, Some("team-c")), Vec::<String>::new());
    let kubernetes = report(&server);
    assert_eq!(kubernetes["namespaces"], 2, "{kubernetes}");
    assert!(
        kubernetes["namespaces_refused"].as_u64().unwrap() >= 4,
        "{kubernetes}"
    );
    let warnings = server
        .stderr()
        .into_iter()
        .filter(|l| l.contains("namespace refused") && l.contains("team-c"))
        .count();
    assert_eq!(warnings, 1, "{:?}", server.stderr());
    assert_eq!(mock.open_watches(), 4, "two watches per open namespace");

    // team-a stays in use, team-b goes idle and is closed: team-c gets its slot.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            Instant::now() < deadline,
            "team-b never closed: {}",
            report(&server)
        );
        assert_eq!(ids(&server, Some("team-a")), ["team-a-pod-80"]);
        if report(&server)["namespaces"] == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eventually("team-b's watches closed", || mock.open_watches() == 2);
    eventually("team-c, now with room", || {
        ids(&server, Some("team-c")) == ["team-c-pod-80"]
    });
    for (line, _) in mock.requests() {
        assert!(
            !line.contains("Team_A") && !line.contains("kube-system") && !line.contains("x.y"),
            "{line}"
        );
    }
}

#[test]
fn the_default_namespace_is_never_closed_for_idleness() {
    let mock = MockKube::start();
    mock.put(
        "endpointslices",
        "default",
        web_slice("web-1", "10.0.0.1", "u1"),
    );
    let server = start(&mock, &["--k8s_idle_timeout", "1s"]);
    eventually("the slice", || ids(&server, None) == ["u1-80"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(report(&server)["namespaces"], 1);
    assert_eq!(mock.open_watches(), 2);
    mock.put(
        "endpointslices",
        "default",
        web_slice("web-2", "10.0.0.2", "u2"),
    );
    eventually("a change after the idle time", || {
        ids(&server, None).len() == 2
    });
}

#[test]
fn core_endpoints_are_read_when_slices_are_not_served() {
    let mock = MockKube::start();
    mock.behave(|b| b.slices_served = false);
    let endpoints = json!({"metadata":{"name":"web"},"subsets":[
        {"addresses":[{"ip":"10.0.0.1","targetRef":{"kind":"Pod","uid":"u1"}},{"ip":"fd00::2"}],
         "notReadyAddresses":[{"ip":"10.0.0.3"}],
         "ports":[{"name":"http","port":8080,"protocol":"TCP"}]}]});
    mock.put("endpoints", "default", endpoints);
    mock.put(
        "pods",
        "default",
        pod("p1", "u1", json!({"app": "web"}), Value::Null),
    );
    let server = start(&mock, &[]);
    eventually("the Endpoints instances", || {
        ids(&server, None) == ["fd00::2-8080", "u1-8080"]
    });
    assert_eq!(
        instance(&server, None, "fd00::2-8080")["endpoint"]["value"],
        "[fd00::2]:8080"
    );
    assert_eq!(
        instance(&server, None, "u1-8080")["tags"],
        json!(["app=web"])
    );
    assert_eq!(report(&server)["api"], "v1");
    assert!(server.stderr().iter().any(|l| l.contains("not served")));
}

#[test]
fn a_slice_list_answering_404_switches_to_endpoints() {
    let mock = MockKube::start();
    mock.put(
        "endpointslices",
        "default",
        web_slice("web-1", "10.0.0.1", "u1"),
    );
    mock.put(
        "endpoints",
        "default",
        json!({"metadata":{"name":"web"},"subsets":[{"addresses":[{"ip":"10.0.0.9"}],
               "ports":[{"name":"http","port":80}]}]}),
    );
    let server = start(&mock, &[]);
    eventually("the slice", || ids(&server, None) == ["u1-80"]);
    assert_eq!(report(&server)["api"], "discovery.k8s.io/v1");
    mock.behave(|b| b.slices_served = false);
    mock.cut_connections();
    eventually("the Endpoints", || ids(&server, None) == ["10.0.0.9-80"]);
    assert_eq!(report(&server)["api"], "v1");
}

#[test]
fn duplicate_endpoints_keep_the_ipv4_slice_and_ipv6_is_bracketed() {
    let mock = MockKube::start();
    mock.put(
        "endpointslices",
        "default",
        slice(
            "web-v6",
            "web",
            "IPv6",
            &[("fd00::1", "u1", true), ("fd00::2", "", true)],
            &[("http", 80, "")],
        ),
    );
    mock.put(
        "endpointslices",
        "default",
        slice(
            "web-v4",
            "web",
            "IPv4",
            &[("10.0.0.1", "u1", true)],
            &[("http", 80, "")],
        ),
    );
    let server = start(&mock, &[]);
    eventually("both slices", || ids(&server, None).len() == 2);
    assert_eq!(
        instance(&server, None, "u1-80")["endpoint"]["value"],
        "10.0.0.1:80"
    );
    assert_eq!(
        instance(&server, None, "fd00::2-80")["endpoint"]["value"],
        "[fd00::2]:80"
    );
}

#[test]
fn a_pod_behind_two_services_is_listed_once_under_the_first_service_name() {
    // The id is `<pod uid>-<port>` whichever Service selects the pod, and an id appears once in
    // a namespace: the instance belongs to the service whose name sorts first, every time the
    // snapshot is rebuilt, and moves to the other service when the first one lets the pod go.
    let mock = MockKube::start();
    let both = |name: &str, service: &str| {
        slice(
            name,
            service,
            "IPv4",
            &[("10.0.0.1", "u1", true)],
            &[("http", 80, "")],
        )
    };
    mock.put("endpointslices", "default", both("web-1", "web"));
    mock.put("endpointslices", "default", both("api-1", "api"));
    mock.put(
        "endpointslices",
        "default",
        web_slice("web-2", "10.0.0.2", "u2"),
    );
    let server = start(&mock, &[]);
    eventually("the two pods", || ids(&server, None).len() == 2);
    assert_eq!(instance(&server, None, "u1-80")["service_name"], "api");
    // Other changes in the namespace rebuild its snapshot: the choice does not flap.
    for address in ["10.0.0.3", "10.0.0.2"].repeat(3) {
        mock.put(
            "endpointslices",
            "default",
            web_slice("web-2", address, "u2"),
        );
        let value = format!("{address}:80");
        eventually("the change", || {
            instance(&server, None, "u2-80")["endpoint"]["value"] == value.as_str()
        });
        assert_eq!(instance(&server, None, "u1-80")["service_name"], "api");
    }
    let web = server.get("/api/v1/services/web").json();
    assert_eq!(web["instances"].as_array().unwrap().len(), 1, "{web}");

    // The api Service no longer selects the pod: it is listed under web.
    mock.delete("endpointslices", "default", "api-1");
    eventually("the pod under web", || {
        instance(&server, None, "u1-80")["service_name"] == "web"
    });
    assert_eq!(ids(&server, None).len(), 2);
}

#[test]
fn lists_are_paged_and_an_expired_continue_token_restarts_the_list() {
    let mock = MockKube::start();
    mock.behave(|b| {
        b.max_page = 2;
        b.expire_next_continue = true;
    });
    for n in 1..=5 {
        mock.put(
            "endpointslices",
            "default",
            web_slice(
                &format!("web-{n}"),
                &format!("10.0.0.{n}"),
                &format!("u{n}"),
            ),
        );
    }
    let server = start(&mock, &[]);
    eventually("every page", || ids(&server, None).len() == 5);
    let lists: Vec<String> = mock
        .requests()
        .into_iter()
        .map(|(l, _)| l)
        .filter(|l| l.contains("/endpointslices?limit=500"))
        .collect();
    // First page, a continue answered 410, the first page again, then two continued pages.
    assert_eq!(lists.len(), 5, "{lists:#?}");
    assert!(
        !lists[0].contains("continue") && lists[1].contains("&continue="),
        "{lists:#?}"
    );
    assert!(!lists[2].contains("continue"), "{lists:#?}");
}

#[test]
fn a_list_that_never_ends_is_a_failure_and_is_listed_again() {
    let mock = MockKube::start();
    mock.behave(|b| b.endless_continue = true);
    mock.put(
        "endpointslices",
        "default",
        web_slice("web-1", "10.0.0.1", "u1"),
    );
    let server = start(&mock, &[]);
    // The first request opens the namespace; a thousand pages take a while: a generous bound.
    assert!(ids(&server, None).is_empty());
    let deadline = Instant::now() + Duration::from_secs(120);
    while !report(&server)["last_error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("pages"))
    {
        assert!(
            Instant::now() < deadline,
            "the endless list never failed: {}",
            report(&server)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(ids(&server, None).is_empty());
    mock.behave(|b| b.endless_continue = false);
    eventually("the list once it ends", || ids(&server, None) == ["u1-80"]);
}

#[test]
fn bearer_tokens_are_sent_and_a_token_file_is_read_again_after_a_401() {
    let mock = MockKube::start();
    mock.behave(|b| b.token = Some("fresh".into()));
    mock.put(
        "endpointslices",
        "default",
        web_slice("web-1", "10.0.0.1", "u1"),
    );
    let dir = Scratch::new("token");
    let token_file = dir.file("token");
    std::fs::write(&token_file, "stale\n").unwrap();
    let server = start(&mock, &["--k8s_token_file", &token_file]);
    eventually("the 401", || {
        report(&server)["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("401 Unauthorized"))
    });
    assert!(ids(&server, None).is_empty());
    // The token is rotated in the file: picked up without a restart.
    std::fs::write(&token_file, "  fresh \n").unwrap();
    eventually("the slice with the new token", || {
        ids(&server, None) == ["u1-80"]
    });
    let requests = mock.requests();
    assert!(requests
        .iter()
        .any(|(_, a)| a.as_deref() == Some("Bearer stale")));
    assert_eq!(requests.last().unwrap().1.as_deref(), Some("Bearer fresh"));

    // A token given on the command line.
    let direct = start(&mock, &["--k8s_token", "fresh"]);
    eventually("the slice", || ids(&direct, None) == ["u1-80"]);
}

#[test]
fn https_is_verified_against_the_ca_file_and_the_host_name() {
    let mock = MockKube::start();
    mock.put(
        "endpointslices",
        "default",
        web_slice("web-1", "10.0.0.1", "u1"),
    );
    let pki = Pki::new();
    let good = TlsProxy::start(&pki, "good", mock.address.port());
    let ca = pki.file("ca.pem");
    let url = format!("https://127.0.0.1:{}", good.port);
    let trusted = Server::start(&["--k8s_url", &url, "--k8s_ca_file", &ca]);
    eventually("the slice over https", || ids(&trusted, None) == ["u1-80"]);

    // Without the CA file, the roots built into the binary do not know the issuer.
    let untrusting = Server::start(&["--k8s_url", &url]);
    eventually("the TLS error", || report(&untrusting)["state"] == "error");
    let message = report(&untrusting)["last_error"]["message"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(
        message.contains("issuer") || message.contains("certificate"),
        "{message}"
    );
    assert!(ids(&untrusting, None).is_empty());

    // A certificate for another name is refused even from the right CA.
    let wrong = TlsProxy::start(&pki, "wrong", mock.address.port());
    let wrong_url = format!("https://127.0.0.1:{}", wrong.port);
    let misnamed = Server::start(&["--k8s_url", &wrong_url, "--k8s_ca_file", &ca]);
    eventually("the name error", || report(&misnamed)["state"] == "error");
    let message = report(&misnamed)["last_error"]["message"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(
        message.contains("name") || message.contains("certificate"),
        "{message}"
    );
    assert!(ids(&misnamed, None).is_empty());
}

#[test]
fn in_cluster_reads_the_service_environment_over_https() {
    let mock = MockKube::start();
    mock.behave(|b| b.token = Some("sa-token".into()));
    mock.put(
        "endpointslices",
        "default",
        web_slice("web-1", "10.0.0.1", "u1"),
    );
    let pki = Pki::new();
    let proxy = TlsProxy::start(&pki, "good", mock.address.port());
    let token = pki.file("token");
    std::fs::write(&token, "sa-token").unwrap();
    let port = proxy.port.to_string();
    let server = Server::start_with_env(
        &[
            "--k8s_url",
            "in-cluster",
            "--k8s_token_file",
            &token,
            "--k8s_ca_file",
            &pki.file("ca.pem"),
        ],
        &[
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", &port),
        ],
    );
    eventually("the slice in-cluster", || ids(&server, None) == ["u1-80"]);
    // Without the service account files (not mounted here), in-cluster is a configuration error.
    let (code, _, stderr) = run_to_exit(
        &["--k8s_url", "in-cluster"],
        &[
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", &port),
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--k8s_url"), "{stderr}");
}

/// Figures for the README, not a check: run it alone with
/// `cargo test --release -p a8registry-static-tests --test suite -- --ignored --nocapture kubernetes::figures`.
#[test]
#[ignore]
fn figures() {
    let mock = MockKube::start();
    for s in 0..100 {
        let uids: Vec<String> = (0..100).map(|e| format!("pod-{s}-{e}")).collect();
        let addresses: Vec<String> = (0..100)
            .map(|e| format!("10.{s}.{}.{}", e / 250, e % 250))
            .collect();
        let endpoints: Vec<(&str, &str, bool)> = addresses
            .iter()
            .zip(&uids)
            .map(|(a, u)| (a.as_str(), u.as_str(), true))
            .collect();
        mock.put(
            "endpointslices",
            "default",
            slice(
                &format!("svc-{s}-x"),
                &format!("svc-{s}"),
                "IPv4",
                &endpoints,
                &[("http", 8080, "")],
            ),
        );
        for uid in &uids {
            mock.put(
                "pods",
                "default",
                pod(
                    uid,
                    uid,
                    json!({"app": format!("svc-{s}"), "version": "v1"}),
                    json!({"owner": "team"}),
                ),
            );
        }
    }
    let server = start(&mock, &["--auth_mode", "trusted"]);
    let before = server.status_kib("VmRSS");
    let started = Instant::now();
    let complete = |server: &Server| {
        let listed = listing(server, Some("default"));
        let instances = listed["instances"].as_array().unwrap();
        instances.len() == 10_000 && instances.iter().all(|i| i["tags"].is_array())
    };
    // Every endpoint listed with its pod's labels: both lists done. (Polled slowly: a listing of
    // 10,000 instances costs the server what it would cost the source.)
    while !complete(&server) {
        std::thread::sleep(Duration::from_millis(250));
    }
    let mirrored = started.elapsed();
    // Let the listing cache settle, then measure.
    std::thread::sleep(Duration::from_secs(1));
    let _ = complete(&server);
    let after = server.status_kib("VmRSS");
    // A change at the source to its visibility, ten times.
    let mut changes = Vec::new();
    for n in 0..10 {
        let label = format!("v{n}");
        let change = Instant::now();
        mock.put(
            "pods",
            "default",
            pod("pod-0-0", "pod-0-0", json!({"version": label}), Value::Null),
        );
        loop {
            let body = server
                .request(
                    "GET",
                    "/api/v1/services/svc-0",
                    &[("Authorization", "Bearer default")],
                    None,
                )
                .text();
            if body.contains(&format!("version={label}")) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        changes.push(change.elapsed().as_millis());
    }
    println!(
        "10,000 endpoints (100 slices of 100) and 10,000 pods: mirrored {mirrored:?} after the first request; \
         RSS {before} KiB -> {after} KiB ({:.2} KiB per endpoint); change to visibility in ms: {changes:?}",
        (after - before) as f64 / 10_000.0
    );
}
