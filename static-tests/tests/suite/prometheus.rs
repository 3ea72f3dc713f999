//! A real third-party Eureka client: Prometheus's `eureka_sd_configs` (Debian's `prometheus`
//! package, installed by run.sh), pointed at `/eureka` and `/eureka/v2` (spec D5, D6, D37).
//!
//! Prometheus fetches `…/apps` in XML and builds each target's address from `hostName` and
//! `port`. The test registers instances through both APIs at `host:port` endpoints where small
//! metrics servers of its own answer, and reads Prometheus's `/api/v1/targets` until every
//! instance is a target at its `host:port` with the Eureka labels and has been scraped, then
//! deregisters two and waits until they are gone. Prometheus binds 127.0.0.1 only, keeps its data
//! in a temporary directory, and is killed by its PID when the test ends, pass or fail.

use a8registry_static_tests::*;
use serde_json::{json, Value};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often Prometheus asks the registry, and scrapes its targets. Its discovery and scrape
/// managers pass target changes on every 5 s, so a change shows in the targets API within about
/// 10 s of a refresh.
const REFRESH: &str = "1s";
/// Generous bound for Prometheus to start answering.
const PROMETHEUS_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Generous bound for a registry change to reach Prometheus's targets API (about 10 s expected).
const TARGETS_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// TTL of the registrations: they must outlive the test.
const TTL_SECS: u64 = 600;
/// The two scrape jobs, one per Eureka base path Prometheus is given.
const JOBS: [(&str, &str); 2] = [("eureka", "/eureka"), ("eureka-v2", "/eureka/v2")];

/// `prometheus` on the PATH, or `$A8_TEST_PROMETHEUS`.
fn prometheus_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("A8_TEST_PROMETHEUS") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("prometheus is missing: run static-tests/run.sh, which installs it")
        })
}

/// A port that was free on 127.0.0.1 a moment ago (for a process that takes no port 0).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A Prometheus process with its temporary configuration and storage; killed by its PID and its
/// directory removed on drop.
struct Prometheus {
    child: Child,
    address: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    fn start(config: &str) -> Prometheus {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "a8registry-prometheus-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(dir.join("data")).expect("a temporary directory");
        std::fs::write(dir.join("prometheus.yml"), config).expect("write the configuration");
        let log = File::create(dir.join("prometheus.log")).expect("a log file");
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(prometheus_binary())
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg("--log.level=debug")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let mut prometheus = Prometheus {
            child,
            address,
            dir,
        };
        let deadline = Instant::now() + PROMETHEUS_START_TIMEOUT;
        loop {
            if let Some((200, _)) = prometheus.http_get("/-/ready") {
                return prometheus;
            }
            if Instant::now() >= deadline || !matches!(prometheus.child.try_wait(), Ok(None)) {
                panic!("prometheus did not start; its log:\n{}", prometheus.log());
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// One HTTP/1.0 GET (so the answer is neither chunked nor kept alive): (status, body), or
    /// `None` while nothing answers.
    fn http_get(&self, path: &str) -> Option<(u16, String)> {
        let mut conn = TcpStream::connect_timeout(&self.address, CLIENT_TIMEOUT).ok()?;
        conn.set_read_timeout(Some(CLIENT_TIMEOUT)).ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.address);
        conn.write_all(request.as_bytes()).ok()?;
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).ok()?;
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    }

    /// The active targets of every scrape job.
    fn active_targets(&self) -> Vec<Value> {
        let (status, body) = self
            .http_get("/api/v1/targets?state=active")
            .unwrap_or_else(|| panic!("the targets API does not answer; log:\n{}", self.log()));
        assert_eq!(status, 200, "{body}");
        let targets: Value = serde_json::from_str(&body).expect("targets as JSON");
        targets["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Polls the targets until `done` holds for them, within the generous bound.
    fn wait_for_targets(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + TARGETS_TIMEOUT;
        loop {
            let targets = self.active_targets();
            if done(&targets) {
                return targets;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{what}: not within {TARGETS_TIMEOUT:?}; targets: {}\nlog:\n{}",
                    json!(targets),
                    self.log()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A minimal metrics endpoint on 127.0.0.1: every request gets one sample in the text format.
/// Its thread stops on drop.
struct MetricsEndpoint {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsEndpoint {
    fn start() -> MetricsEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a metrics endpoint");
        let address = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(CLIENT_TIMEOUT));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "a8registry_test_up 1\n";
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        MetricsEndpoint {
            address,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.address);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The targets of one scrape job.
fn of_job<'a>(targets: &'a [Value], job: &str) -> Vec<&'a Value> {
    targets.iter().filter(|t| t["scrapePool"] == job).collect()
}

fn address_of(target: &Value) -> &str {
    target["discoveredLabels"]["__address__"]
        .as_str()
        .unwrap_or_default()
}

/// The target of `job` whose Eureka instance id is `id`.
fn target_of<'a>(targets: &'a [Value], job: &str, id: &str) -> &'a Value {
    of_job(targets, job)
        .into_iter()
        .find(|t| t["discoveredLabels"]["__meta_eureka_app_instance_id"] == id)
        .unwrap_or_else(|| {
            panic!(
                "no target with instance id {id} in {job}: {}",
                json!(targets)
            )
        })
}

fn a8_register(server: &Server, service: &str, endpoint: SocketAddr) -> String {
    let body = json!({
        "service_name": service,
        "endpoint": {"type": "http", "value": endpoint.to_string()},
        "ttl": TTL_SECS,
    });
    let r = server.post_json("/api/v1/instances", &body.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

#[test]
fn prometheus_eureka_discovery_scrapes_instances_of_both_apis() {
    let server = Server::start(&[]);
    let endpoints: Vec<MetricsEndpoint> = (0..3).map(|_| MetricsEndpoint::start()).collect();
    // Two Amalgam8 instances on one host (they must stay two targets), one Eureka instance.
    let first = a8_register(&server, "reviews", endpoints[0].address);
    let second = a8_register(&server, "reviews", endpoints[1].address);
    let eureka_port = endpoints[2].address.port();
    let eureka = json!({"instance":{
        "instanceId": "ratings-1", "hostName": "127.0.0.1", "app": "RATINGS",
        "ipAddr": "127.0.0.1", "vipAddress": "ratings", "status": "UP",
        "port": {"$": eureka_port, "@enabled": "true"},
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"durationInSecs": TTL_SECS},
        "metadata": {"prometheus.scrape": "true"},
    }});
    let r = server.post_json("/eureka/v2/apps/RATINGS", &eureka.to_string());
    assert_eq!(r.status, 204, "{}", r.text());

    let mut config = format!(
        "global:\n  scrape_interval: {REFRESH}\n  scrape_timeout: {REFRESH}\nscrape_configs:\n"
    );
    for (job, base) in JOBS {
        config.push_str(&format!(
            "  - job_name: {job}\n    eureka_sd_configs:\n      - server: http://{}{base}\n        refresh_interval: {REFRESH}\n",
            server.address
        ));
    }
    let prometheus = Prometheus::start(&config);

    // Every instance becomes a target at its host:port, with the Eureka labels, in both jobs.
    let expected = [
        (first.as_str(), "reviews", endpoints[0].address),
        (second.as_str(), "reviews", endpoints[1].address),
        ("ratings-1", "RATINGS", endpoints[2].address),
    ];
    let targets = prometheus.wait_for_targets("three targets in each job", |targets| {
        JOBS.iter().all(|(job, _)| of_job(targets, job).len() == 3)
    });
    for (job, _) in JOBS {
        for (id, app, address) in expected {
            let target = target_of(&targets, job, id);
            let labels = &target["discoveredLabels"];
            let port = address.port().to_string();
            assert_eq!(address_of(target), address.to_string(), "{target}");
            assert_eq!(target["labels"]["instance"], id, "{target}");
            for (label, value) in [
                ("__meta_eureka_app_name", app),
                ("__meta_eureka_app_instance_hostname", "127.0.0.1"),
                ("__meta_eureka_app_instance_ip_addr", "127.0.0.1"),
                ("__meta_eureka_app_instance_port", &port),
                ("__meta_eureka_app_instance_port_enabled", "true"),
                ("__meta_eureka_app_instance_status", "UP"),
                (
                    "__meta_eureka_app_instance_vip_address",
                    &app.to_lowercase(),
                ),
                ("__meta_eureka_app_instance_datacenterinfo_name", "MyOwn"),
                ("__meta_eureka_app_instance_country_id", "1"),
            ] {
                assert_eq!(labels[label], value, "{label} of {target}");
            }
        }
        let ratings = &target_of(&targets, job, "ratings-1")["discoveredLabels"];
        assert_eq!(
            ratings["__meta_eureka_app_instance_metadata_prometheus_scrape"],
            "true"
        );
    }
    // And every target is scrapeable there: Prometheus reached the endpoints.
    prometheus.wait_for_targets("every target scraped", |targets| {
        targets.len() == 6 && targets.iter().all(|t| t["health"] == "up")
    });

    // Deregistered instances (one per API) disappear; the other stays.
    let r = server.request("DELETE", &format!("/api/v1/instances/{first}"), &[], None);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = server.request("DELETE", "/eureka/apps/RATINGS/ratings-1", &[], None);
    assert_eq!(r.status, 200, "{}", r.text());
    let targets = prometheus.wait_for_targets("one target left in each job", |targets| {
        JOBS.iter().all(|(job, _)| of_job(targets, job).len() == 1)
    });
    for (job, _) in JOBS {
        let left = of_job(&targets, job);
        assert_eq!(
            left[0]["discoveredLabels"]["__meta_eureka_app_instance_id"],
            second.as_str()
        );
        assert_eq!(address_of(left[0]), endpoints[1].address.to_string());
    }
}
