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
