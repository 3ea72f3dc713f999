//! `GET /metrics` and `GET /ready` (observability contract §2, §3): the exposition checked by
//! Prometheus's own `promtool` and scraped by a real Prometheus server, counters that match the
//! requests sent, consistent histograms, bounded label values, and the readiness probe.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package, which `static-tests/run.sh`
//! installs when it is missing. The Prometheus server binds 127.0.0.1, keeps its data in a
//! temporary directory, and is killed by its PID when the test ends.

use a8registry_static_tests::*;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const INSTANCES: &str = "/api/v1/instances";

/// One sample of the exposition: its name with its labels as written, and its value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            (series.to_string(), value)
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

/// A tool of the `prometheus` package, on the PATH or where Debian puts it.
fn prometheus_tool(name: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    on_path
        .or_else(|| Some(PathBuf::from("/usr/bin").join(name)).filter(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "{name} not found: install Debian's prometheus package (static-tests/run.sh does)"
            )
        })
}

/// Runs `promtool check metrics` on `text`: (success, what it printed).
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new(prometheus_tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

#[test]
fn metrics_pass_promtool_and_count_the_requests_sent() {
    let server = Server::start(&["--auth_mode", "trusted"]);
    let auth = [("Authorization", "Bearer team")];
    let mut ids = Vec::new();
    for i in 0..7 {
        let r = server.post_json_as("team", INSTANCES, &registration("a", &format!("h:{i}"), ""));
        assert_eq!(r.status, 201);
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    for id in ids.iter().take(5) {
        let r = server.request("PUT", &format!("{INSTANCES}/{id}/heartbeat"), &auth, None);
        assert_eq!(r.status, 200);
    }
    let r = server.request("DELETE", &format!("{INSTANCES}/{}", ids[6]), &auth, None);
    assert_eq!(r.status, 200);
    let r = server.request(
        "PUT",
        &format!("{INSTANCES}/unknown/heartbeat"),
        &auth,
        None,
    );
    assert_eq!(r.status, 410);
    for i in 0..3 {
        // Unknown paths: each its own path, one series between them.
        assert_eq!(server.get(&format!("/nowhere/{i}")).status, 404);
    }
    assert_eq!(server.get("/api/v1/services").status, 401);
    for _ in 0..4 {
        assert_eq!(
            server
                .request("GET", "/api/v1/services/a", &auth, None)
                .status,
            200
        );
    }
    let r = server.request(
        "GET",
        "/eureka/v2/apps",
        &[
            ("Authorization", "Bearer team"),
            ("Accept", "application/json"),
        ],
        None,
    );
    assert_eq!(r.status, 200);

    let r = server.get("/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = r.text();
    let (ok, printed) = promtool_check(&text);
    assert!(
        ok && printed.trim().is_empty(),
        "promtool: {printed}\n{text}"
    );

    let s = samples(&text);
    let requests = |labels: &str| value(&s, &format!("a8registry_http_requests_total{{{labels}}}"));
    assert_eq!(
        requests(r#"protocol="amalgam8",operation="Register",code="201""#),
        7.0
    );
    assert_eq!(
        requests(r#"protocol="amalgam8",operation="Renew",code="200""#),
        5.0
    );
    assert_eq!(
        requests(r#"protocol="amalgam8",operation="Renew",code="410""#),
        1.0
    );
    assert_eq!(
        requests(r#"protocol="amalgam8",operation="Deregister",code="200""#),
        1.0
    );
    assert_eq!(
        requests(r#"protocol="amalgam8",operation="ListServices",code="401""#),
        1.0
    );
    assert_eq!(
        requests(r#"protocol="amalgam8",operation="ListServiceInstances",code="200""#),
        4.0
    );
    assert_eq!(
        requests(r#"protocol="eureka",operation="Apps",code="200""#),
        1.0
    );
    assert_eq!(
        requests(r#"protocol="ops",operation="NotFound",code="404""#),
        3.0
    );
    assert!(
        !text.contains("nowhere"),
        "label values never come from the path"
    );

    assert_eq!(value(&s, "a8registry_registrations_total"), 7.0);
    assert_eq!(value(&s, "a8registry_heartbeats_total"), 5.0);
    assert_eq!(value(&s, "a8registry_deregistrations_total"), 1.0);
    assert_eq!(value(&s, "a8registry_expirations_total"), 0.0);
    assert_eq!(value(&s, r#"a8registry_instances{namespace="team"}"#), 6.0);
    assert_eq!(value(&s, "a8registry_namespaces"), 1.0);
    assert_eq!(value(&s, "a8registry_watchers"), 0.0);
    assert_eq!(value(&s, "a8registry_connections"), 1.0);
    let store = a8registry_static_tests::redis::suite_store_name();
    assert_eq!(
        value(&s, &format!("a8registry_store_up{{store=\"{store}\"}}")),
        1.0
    );
    assert_eq!(
        value(
            &s,
            &format!("a8registry_store_errors_total{{store=\"{store}\"}}")
        ),
        0.0
    );
    assert_eq!(
        value(
            &s,
            &format!("a8registry_build_info{{version=\"{}\"}}", "0.1.0")
        ),
        1.0
    );
    let rss = value(&s, "process_resident_memory_bytes");
    assert!(rss > 1e6 && rss < 1e9, "{rss}");
    assert!(value(&s, "process_open_fds") >= 3.0);
    assert!(value(&s, "process_max_fds") >= value(&s, "process_open_fds"));
    assert!(value(&s, "process_cpu_seconds_total") >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value(&s, "process_start_time_seconds");
    assert!(started <= now + 1.0 && started > now - 600.0, "{started}");

    // Every histogram: buckets that never decrease, `+Inf` equal to the count, a sum within
    // the count times the largest wait of this test.
    let family = "a8registry_http_request_duration_seconds";
    let mut histograms = 0;
    for (series, count) in s
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{family}_count")))
    {
        let labels = &series[format!("{family}_count{{").len()..series.len() - 1];
        let mut buckets: Vec<(f64, f64)> = s
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(&format!("{family}_bucket{{{labels},le=\""))?;
                let le = rest.strip_suffix("\"}")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                Some((le, *v))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        assert!(buckets.len() > 2, "{labels}");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{labels}: {buckets:?}"
        );
        let last = buckets.last().unwrap();
        assert_eq!(last.0, f64::INFINITY);
        assert_eq!(last.1, *count, "{labels}");
        let sum = value(&s, &format!("{family}_sum{{{labels}}}"));
        assert!(sum >= 0.0 && sum <= count * 10.0, "{labels}: {sum}");
        histograms += 1;
    }
    assert!(histograms >= 7, "one per (protocol, operation) answered");
    assert_eq!(
        value(
            &s,
            &format!(r#"{family}_count{{protocol="amalgam8",operation="Register"}}"#)
        ),
        7.0
    );

    // The scrape itself is counted by the next one; HEAD is served.
    let again = samples(&server.get("/metrics").text());
    assert_eq!(
        value(
            &again,
            r#"a8registry_http_requests_total{protocol="ops",operation="Metrics",code="200"}"#
        ),
        1.0
    );
    let head = server.request("HEAD", "/metrics", &[], None);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[test]
fn an_expiry_is_counted_and_the_instance_leaves_the_gauges() {
    let server = Server::start(&["--min_ttl", "1s"]);
    let keep = server.post_json(INSTANCES, &registration("s", "h:1", ""));
    assert_eq!(keep.status, 201, "{}", keep.text());
    let lapse = server.post_json(INSTANCES, &registration("s", "h:2", "\"ttl\":1"));
    assert_eq!(lapse.status, 201, "{}", lapse.text());
    let scrape = || samples(&server.get("/metrics").text());
    assert_eq!(value(&scrape(), "a8registry_expirations_total"), 0.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while value(&scrape(), "a8registry_expirations_total") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "no expiry counted: {:?}",
            scrape()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = scrape();
    assert_eq!(value(&s, "a8registry_expirations_total"), 1.0);
    assert_eq!(
        value(&s, "a8registry_deregistrations_total"),
        0.0,
        "an expiry is no deregistration"
    );
    // (With the Redis store the counts are reused for a second: the gauge may lag that long.)
    let deadline = Instant::now() + Duration::from_secs(3);
    while value(&scrape(), r#"a8registry_instances{namespace="default"}"#) != 1.0 {
        assert!(
            Instant::now() < deadline,
            "the expired instance is still counted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn at_most_a_hundred_namespaces_are_named_and_the_rest_summed_as_other() {
    let server = Server::start(&["--auth_mode", "trusted"]);
    // n-000, n-001 and n-002 hold 2, 3 and 4 instances, the other 102 one each, and a tenant
    // called `_other` holds one: 106 namespaces, 112 instances.
    let mut total = 0;
    for i in 0..105 {
        let namespace = format!("n-{i:03}");
        let count = if i < 3 { i + 2 } else { 1 };
        for j in 0..count {
            let r = server.post_json_as(
                &namespace,
                INSTANCES,
                &registration("s", &format!("h:{j}"), ""),
            );
            assert_eq!(r.status, 201);
            total += 1;
        }
    }
    let r = server.post_json_as("_other", INSTANCES, &registration("s", "h:0", ""));
    assert_eq!(r.status, 201);
    total += 1;
    let text = server.get("/metrics").text();
    let (ok, printed) = promtool_check(&text);
    assert!(ok && printed.trim().is_empty(), "promtool: {printed}");
    let s = samples(&text);
    assert_eq!(value(&s, "a8registry_namespaces"), 106.0);
    let named: Vec<(&String, &f64)> = s
        .iter()
        .filter(|(k, _)| k.starts_with("a8registry_instances{"))
        .collect();
    assert_eq!(named.len(), 101, "100 by name and _other");
    let sum: f64 = named.iter().map(|(_, v)| **v).sum();
    assert_eq!(sum, total as f64, "every instance is counted once");
    assert_eq!(value(&s, r#"a8registry_instances{namespace="n-002"}"#), 4.0);
    assert_eq!(value(&s, r#"a8registry_instances{namespace="n-000"}"#), 2.0);
    // The largest three and 97 of the others by name; the 5 left and the tenant `_other`.
    assert_eq!(
        value(&s, r#"a8registry_instances{namespace="_other"}"#),
        6.0
    );
}

#[test]
fn metrics_and_ready_are_never_authenticated_nor_redirected() {
    let server = Server::start(&["--auth_mode", "jwt", "--jwt_secret", "s", "--require_https"]);
    let r = server.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("a8registry_build_info"));
    let r = server.get("/ready");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), r#"{"ready":true}"#);
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let head = server.request("HEAD", "/ready", &[], None);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    // The API routes still are.
    assert_eq!(server.get("/api/v1/services").status, 301);
    assert_eq!(server.request("POST", "/ready", &[], None).status, 405);
}

/// A Prometheus server on loopback, killed by its PID and its data removed when dropped.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second.
    fn scraping(target: std::net::SocketAddr) -> Prometheus {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("a8-prometheus-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: a8registry\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(prometheus_tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus { child, dir, port }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The values of an instant query, `None` while Prometheus does not answer yet.
    fn query(&self, expression: &str) -> Option<Vec<(serde_json::Value, String)>> {
        let encoded: String = expression
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut conn =
            std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
        conn.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        send(
            &mut conn,
            "GET",
            &format!("/api/v1/query?query={encoded}"),
            &[("Connection", "close")],
            None,
        );
        let r = read_response(&mut conn, false).ok()?;
        if r.status != 200 {
            return None;
        }
        let body = r.json();
        let results = body["data"]["result"].as_array()?.clone();
        Some(
            results
                .into_iter()
                .map(|r| {
                    (
                        r["metric"].clone(),
                        r["value"][1].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect(),
        )
    }

    /// Waits until `expression` gives exactly the one value `wanted`.
    fn wait_for(&self, expression: &str, wanted: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self.query(expression);
            if let Some(values) = &found {
                if values.len() == 1 && values[0].1 == wanted {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "prometheus never saw {expression} = {wanted} (last: {found:?}); its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn a_real_prometheus_server_scrapes_the_registry() {
    let server = Server::start(&[]);
    for i in 0..5 {
        let r = server.post_json(INSTANCES, &registration("scraped", &format!("h:{i}"), ""));
        assert_eq!(r.status, 201);
    }
    let prometheus = Prometheus::scraping(server.address);
    // `up` is 1 only for a scrape that Prometheus could parse whole.
    prometheus.wait_for(r#"up{job="a8registry"}"#, "1");
    prometheus.wait_for("a8registry_registrations_total", "5");
    prometheus.wait_for(r#"a8registry_instances{namespace="default"}"#, "5");
    prometheus.wait_for(
        r#"a8registry_http_requests_total{protocol="amalgam8",operation="Register",code="201"}"#,
        "5",
    );
    prometheus.wait_for(
        r#"sum(a8registry_http_request_duration_seconds_count{operation="Register"})"#,
        "5",
    );
    // Its own scrapes are counted too (each by the next one), under the ops protocol.
    prometheus.wait_for(
        r#"count(a8registry_http_requests_total{protocol="ops",operation="Metrics",code="200"} >= 1)"#,
        "1",
    );
    assert!(
        prometheus
            .query("process_resident_memory_bytes")
            .unwrap()
            .len()
            == 1,
        "the process series are scraped"
    );
}
