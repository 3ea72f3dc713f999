//! The Kubernetes catalog (catalogs contract §3) against the suite's mock API server, which
//! speaks the real wire format (`kubectl` reads it here to show that).

use a8registry_static_tests::kube::{pod, slice, MockKube};
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
    mock.behave(|b| b.stalled = false);
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
