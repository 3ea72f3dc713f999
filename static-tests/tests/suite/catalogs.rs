//! Read-only catalogs (catalogs contract): instances mirrored from a directory of files and
//! from a remote Eureka (a second a8registry process) join every read of both APIs.

use a8registry_static_tests::{ids_of, registration, Server};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Generous bound for a change to show (the contract promises 2 s for files).
const SHOW_WITHIN: Duration = Duration::from_secs(6);

/// A fresh directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "a8registry-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// Writes a file whole, through a temporary name and a rename (as editors and deploy tools
    /// do), so the catalog never reads half a file.
    fn write(&self, name: &str, text: &str) {
        let temporary = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&temporary, text).unwrap();
        std::fs::rename(&temporary, self.0.join(name)).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `check` until it holds, failing after `SHOW_WITHIN` with `what`.
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

fn services_of(server: &Server) -> Vec<String> {
    server.get("/api/v1/services").json()["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn entry(service: &str, value: &str, extra: &str) -> String {
    registration(service, value, extra)
}

fn catalog(entries: &[String]) -> String {
    format!("{{\"instances\":[{}]}}", entries.join(","))
}

fn catalogs_report(server: &Server) -> Value {
    server.get("/uptime").json()["CATALOGS"].clone()
}

#[test]
fn file_entries_are_listed_in_both_apis_and_bad_entries_are_skipped() {
    let dir = TempDir::new("files");
    let text = format!(
        "{{\"instances\":[{},{},\"text\",{},{}]}}",
        r#"{"service_name":"reviews","endpoint":{"type":"http","value":"10.1.0.3:80"},"status":"UP","tags":["v1"],"metadata":{"any":"json"},"ttl":30}"#,
        // W10: the original crashed on an entry without an endpoint.
        r#"{"service_name":"broken"}"#,
        r#"{"service_name":"bad-type","endpoint":{"type":"sctp","value":"x"}}"#,
        entry("ratings", "10.1.0.4:9080", r#""status":"down""#),
    );
    dir.write("default.json", &text);
    let server = Server::start(&["--fs_catalog", dir.arg()]);
    eventually("file instances listed", || {
        listing(&server, None)["instances"]
            .as_array()
            .unwrap()
            .len()
            == 2
    });
    let instances = listing(&server, None)["instances"]
        .as_array()
        .unwrap()
        .clone();
    let reviews = instances
        .iter()
        .find(|i| i["service_name"] == "reviews")
        .unwrap();
    assert_eq!(reviews["endpoint"]["value"], "10.1.0.3:80");
    assert_eq!(reviews["tags"], serde_json::json!(["v1", "filesystem"]));
    assert_eq!(reviews["metadata"], serde_json::json!({"any": "json"}));
    assert_eq!(reviews["last_heartbeat"], "0001-01-01T00:00:00Z");
    assert!(reviews.get("ttl").is_none(), "file instances never expire");
    let ratings = server.get("/api/v1/services/ratings").json();
    assert_eq!(ratings["instances"][0]["status"], "down");
    assert_eq!(services_of(&server), ["ratings", "reviews"]);

    // Eureka sees them too, host and port split from the endpoint value (the interop rule, so a
    // Ribbon client can call them), no lease.
    let apps = server.request(
        "GET",
        "/eureka/v2/apps/reviews",
        &[("Accept", "application/json")],
        None,
    );
    assert_eq!(apps.status, 200, "{}", apps.text());
    let app = apps.json();
    let instance = &app["application"]["instance"][0];
    assert_eq!(instance["hostName"], "10.1.0.3", "{app}");
    assert_eq!(instance["port"]["$"], "80", "{app}");
    assert_eq!(instance["status"], "UP");
    assert_eq!(instance["leaseInfo"]["durationInSecs"], 0, "{app}");

    // The log thread writes the lines a little after the catalog published its entries.
    let skipped = || -> Vec<String> {
        server
            .stderr()
            .into_iter()
            .filter(|l| l.contains("catalog entry skipped"))
            .collect()
    };
    eventually("three skipped entries logged", || skipped().len() >= 3);
    let skipped = skipped();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    for (line, reason) in skipped
        .iter()
        .zip(["endpoint", "not an object", "endpoint.type"])
    {
        assert!(
            line.contains("default.json") && line.contains(reason),
            "{line}"
        );
    }
}

#[test]
fn file_changes_show_within_seconds_and_unparsable_files_keep_their_content() {
    let dir = TempDir::new("files");
    dir.write("default.json", &catalog(&[entry("a", "10.0.0.1:1", "")]));
    let server = Server::start(&["--fs_catalog", dir.arg()]);
    eventually("first listing", || services_of(&server) == ["a"]);

    // Two edits within one second: the second one shows.
    dir.write("default.json", &catalog(&[entry("b", "10.0.0.1:1", "")]));
    dir.write("default.json", &catalog(&[entry("c", "10.0.0.1:1", "")]));
    eventually("the second edit", || services_of(&server) == ["c"]);

    // A .conf file of the same namespace adds its entries after the .json ones.
    dir.write("default.conf", &catalog(&[entry("d", "10.0.0.2:1", "")]));
    eventually("the .conf file", || services_of(&server) == ["c", "d"]);

    // Unparsable JSON keeps what was listed, and /uptime says why.
    std::fs::write(dir.path().join("default.json"), "{\"instances\":[").unwrap();
    eventually("the error state", || {
        catalogs_report(&server)["properties"]["files"]["state"] == "error"
    });
    assert_eq!(services_of(&server), ["c", "d"]);
    let files = &catalogs_report(&server)["properties"]["files"];
    let message = files["last_error"]["message"].as_str().unwrap();
    assert!(message.contains("default.json"), "{files}");
    assert_eq!(
        server.get("/uptime").status,
        200,
        "a short failure stays healthy"
    );

    // Fixed again; then a removed file empties what it listed.
    dir.write("default.json", &catalog(&[entry("e", "10.0.0.1:1", "")]));
    eventually("the fixed file", || services_of(&server) == ["d", "e"]);
    eventually("the ok state", || {
        catalogs_report(&server)["properties"]["files"]["state"] == "ok"
    });
    std::fs::remove_file(dir.path().join("default.conf")).unwrap();
    eventually("the removal", || services_of(&server) == ["e"]);
    let files = &catalogs_report(&server)["properties"]["files"];
    assert_eq!(files["files"], 1, "{files}");
    assert_eq!(files["instances"], 1, "{files}");
    assert!(files["last_success"].is_string(), "{files}");
}

#[test]
fn a_namespace_never_names_a_path_outside_the_catalog_directory() {
    // W21: the original read `<dir>/<namespace>.json`, so `../x` left the directory.
    let root = TempDir::new("files-root");
    let inside = root.path().join("catalog");
    std::fs::create_dir(&inside).unwrap();
    root.write(
        "outside.json",
        &catalog(&[entry("secret", "10.9.9.9:1", "")]),
    );
    std::fs::write(
        inside.join("team.json"),
        catalog(&[entry("visible", "10.0.0.1:1", "")]),
    )
    .unwrap();
    // Hidden files and other names are no candidates.
    std::fs::write(
        inside.join(".team.json.swp"),
        catalog(&[entry("swap", "10.0.0.1:1", "")]),
    )
    .unwrap();
    let server = Server::start(&[
        "--fs_catalog",
        inside.to_str().unwrap(),
        "--auth_mode",
        "trusted",
    ]);
    eventually("the team's file", || {
        listing(&server, Some("team"))["instances"]
            .as_array()
            .unwrap()
            .len()
            == 1
    });
    for namespace in [
        "../outside",
        "..%2Foutside",
        "./../outside",
        "catalog/../../outside",
    ] {
        let instances = listing(&server, Some(namespace));
        assert_eq!(ids_of(&instances), Vec::<String>::new(), "{namespace}");
    }
    let services = listing(&server, Some("team"));
    assert_eq!(services["instances"][0]["service_name"], "visible");
}

#[test]
fn a_registration_hides_the_catalog_instance_of_its_id_and_writes_to_catalog_ids_are_refused() {
    let dir = TempDir::new("files");
    dir.write(
        "default.json",
        &catalog(&[entry("reviews", "10.1.0.3:80", "")]),
    );
    let server = Server::start(&["--fs_catalog", dir.arg()]);
    eventually("the catalog instance", || {
        listing(&server, None)["instances"]
            .as_array()
            .unwrap()
            .len()
            == 1
    });
    let id = ids_of(&listing(&server, None))[0].clone();

    // Writes to a catalog id: 410 in Amalgam8, 404 in Eureka.
    let heartbeat = server.request(
        "PUT",
        &format!("/api/v1/instances/{id}/heartbeat"),
        &[],
        None,
    );
    assert_eq!(heartbeat.status, 410, "{}", heartbeat.text());
    let delete = server.request("DELETE", &format!("/api/v1/instances/{id}"), &[], None);
    assert_eq!(delete.status, 410, "{}", delete.text());
    let cancel = server.request(
        "DELETE",
        &format!("/eureka/v2/apps/reviews/{id}"),
        &[],
        None,
    );
    assert_eq!(cancel.status, 404, "{}", cancel.text());
    for (method, path) in [
        ("PUT", format!("/eureka/v2/apps/reviews/{id}")),
        (
            "PUT",
            format!("/eureka/v2/apps/reviews/{id}/status?value=OUT_OF_SERVICE"),
        ),
        ("DELETE", format!("/eureka/v2/apps/reviews/{id}/status")),
        ("PUT", format!("/eureka/v2/apps/reviews/{id}/metadata?k=v")),
    ] {
        let r = server.request(method, &path, &[], None);
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
    }
    assert_eq!(
        listing(&server, None)["instances"][0]["status"],
        "UP",
        "a refused write changes nothing"
    );

    // The same service, type and value registered: one instance, the store's (it has a TTL).
    let registered = server.post_json(
        "/api/v1/instances",
        &registration("reviews", "10.1.0.3:80", r#""ttl":60"#),
    );
    assert_eq!(registered.status, 201, "{}", registered.text());
    assert_eq!(registered.json()["id"], id.as_str());
    let instances = listing(&server, None)["instances"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(instances.len(), 1, "{instances:?}");
    assert_eq!(instances[0]["ttl"], 60);
    assert!(
        instances[0].get("tags").is_none(),
        "the registered one is listed"
    );

    // Deregistered: the catalog instance is listed again.
    let delete = server.request("DELETE", &format!("/api/v1/instances/{id}"), &[], None);
    assert_eq!(delete.status, 200);
    let instances = listing(&server, None)["instances"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0]["tags"], serde_json::json!(["filesystem"]));
}

#[test]
fn catalog_instances_neither_count_against_the_capacity_nor_move_versions_delta() {
    let dir = TempDir::new("files");
    dir.write(
        "default.json",
        &catalog(&[entry("a", "10.0.0.1:1", ""), entry("a", "10.0.0.2:1", "")]),
    );
    let server = Server::start(&["--fs_catalog", dir.arg(), "--namespace_capacity", "1"]);
    eventually("the catalog instances", || {
        listing(&server, None)["instances"]
            .as_array()
            .unwrap()
            .len()
            == 2
    });
    let version = || {
        server
            .request(
                "GET",
                "/eureka/v2/apps/delta",
                &[("Accept", "application/json")],
                None,
            )
            .json()["applications"]["versions__delta"]
            .clone()
    };
    let before = version();
    // Two catalog instances, capacity 1: one registration is still admitted, a second is not.
    let first = server.post_json("/api/v1/instances", &registration("b", "10.0.1.1:1", ""));
    assert_eq!(first.status, 201, "{}", first.text());
    let second = server.post_json("/api/v1/instances", &registration("b", "10.0.1.2:1", ""));
    assert_eq!(second.status, 403, "{}", second.text());
    // A catalog change is no entry of the change log.
    let registered = version();
    assert_ne!(registered, before, "the registration is an entry");
    dir.write("default.json", &catalog(&[entry("a", "10.0.0.3:1", "")]));
    eventually("the catalog change", || {
        ids_of(&listing(&server, None)).len() == 2
            && listing(&server, None)["instances"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["endpoint"]["value"] == "10.0.0.3:1")
    });
    assert_eq!(version(), registered);
}

#[test]
fn catalog_changes_move_the_eureka_hash_code_and_free_cached_bodies() {
    let dir = TempDir::new("files");
    dir.write("default.json", &catalog(&[entry("a", "10.0.0.1:1", "")]));
    let server = Server::start(&["--fs_catalog", dir.arg()]);
    let hash_code = |path: &str| {
        let body = server
            .request("GET", path, &[("Accept", "application/json")], None)
            .json();
        body["applications"]["apps__hashcode"]
            .as_str()
            .unwrap()
            .to_string()
    };
    eventually("the first hash code", || {
        hash_code("/eureka/v2/apps") == "UP_1_"
    });
    assert_eq!(hash_code("/eureka/v2/apps/delta"), "UP_1_");
    dir.write(
        "default.json",
        &catalog(&[
            entry("a", "10.0.0.1:1", ""),
            entry("a", "10.0.0.2:1", r#""status":"DOWN""#),
        ]),
    );
    eventually("the new hash code", || {
        hash_code("/eureka/v2/apps") == "DOWN_1_UP_1_"
    });
    assert_eq!(hash_code("/eureka/v2/apps/delta"), "DOWN_1_UP_1_");
}

// ---- the remote Eureka catalog ----

const JSON_ACCEPT: (&str, &str) = ("Accept", "application/json");

/// A Netflix-format registration of `app` with this instance id, host and port.
fn eureka_registration(app: &str, instance_id: &str, host: &str, port: u16) -> String {
    serde_json::json!({"instance": {
        "instanceId": instance_id, "hostName": host, "app": app, "ipAddr": "10.0.0.7",
        "vipAddress": app.to_lowercase(), "status": "UP",
        "port": {"$": port, "@enabled": "true"},
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
                           "name": "MyOwn"},
        "leaseInfo": {"durationInSecs": 120},
        "metadata": {"amalgam8.tags": "v1; canary"}
    }})
    .to_string()
}

fn eureka_ids(server: &Server, token: Option<&str>) -> Vec<String> {
    ids_of(&listing(server, token))
}

/// A small HTTP server for recorded bodies: `answer(path)` gives the status and body; `None`
/// holds the connection open without answering (a hung remote).
fn recorded_server(
    answer: impl Fn(&str) -> Option<(u16, String)> + Send + Sync + 'static,
) -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    return;
                }
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
                match answer(&path) {
                    Some((status, body)) => {
                        let head = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(head.as_bytes());
                        let _ = stream.write_all(body.as_bytes());
                    }
                    None => std::thread::sleep(Duration::from_secs(60)),
                }
            });
        }
    });
    address
}

#[test]
fn a_remote_eureka_is_mirrored_into_the_default_namespace_with_failover_and_deltas() {
    let remote = Server::start(&[]);
    let registered = remote.post_json(
        "/eureka/v2/apps/MYAPP",
        &eureka_registration("MYAPP", "host1:myapp:8080", "host1", 8080),
    );
    assert_eq!(registered.status, 204, "{}", registered.text());
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/eureka/v2", dead.local_addr().unwrap());
    drop(dead);
    let remote_url = format!("http://{}/eureka/v2/", remote.address);
    let server = Server::start(&[
        "--eureka_url",
        &dead_url,
        "--eureka_url",
        &remote_url,
        "--catalog_poll",
        "1s",
    ]);
    eventually("the remote instance", || {
        eureka_ids(&server, None) == ["MYAPP:host1:myapp:8080"]
    });
    let listed = listing(&server, None)["instances"][0].clone();
    assert_eq!(listed["endpoint"]["value"], "host1:8080", "{listed}");
    assert_eq!(
        listed["tags"],
        serde_json::json!(["v1", "canary"]),
        "{listed}"
    );
    assert_eq!(listed["ttl"], 120, "{listed}");

    // Rendered for local Eureka clients as the remote registered it.
    let doc = server.request(
        "GET",
        "/eureka/v2/apps/MYAPP/host1:myapp:8080",
        &[JSON_ACCEPT],
        None,
    );
    assert_eq!(doc.status, 200, "{}", doc.text());
    let instance = &doc.json()["instance"];
    assert_eq!(instance["instanceId"], "host1:myapp:8080");
    assert_eq!(instance["ipAddr"], "10.0.0.7");
    assert_eq!(instance["vipAddress"], "myapp");
    assert_eq!(instance["port"]["$"], 8080);
    let vips = server.request("GET", "/eureka/v2/vips/myapp", &[JSON_ACCEPT], None);
    assert_eq!(vips.status, 200, "{}", vips.text());

    // Changes at the remote reach us through its delta.
    remote.post_json(
        "/eureka/v2/apps/MYAPP",
        &eureka_registration("MYAPP", "host2:myapp:8080", "host2", 8080),
    );
    eventually("the second instance", || {
        eureka_ids(&server, None).len() == 2
    });
    let cancel = remote.request(
        "DELETE",
        "/eureka/v2/apps/MYAPP/host1:myapp:8080",
        &[],
        None,
    );
    assert_eq!(cancel.status, 200);
    eventually("the cancellation", || {
        eureka_ids(&server, None) == ["MYAPP:host2:myapp:8080"]
    });

    // A write to a catalog id is 404 here; the report names the URL that answered.
    let renew = server.request("PUT", "/eureka/v2/apps/MYAPP/host2:myapp:8080", &[], None);
    assert_eq!(renew.status, 404, "{}", renew.text());
    let eureka = catalogs_report(&server)["properties"]["eureka"].clone();
    assert_eq!(eureka["state"], "ok", "{eureka}");
    assert_eq!(eureka["url"], remote_url.trim_end_matches('/'), "{eureka}");
    assert_eq!(eureka["instances"], 1, "{eureka}");

    // Every URL failing: the last good snapshot stays, and the state says error.
    drop(remote);
    eventually("the error state", || {
        catalogs_report(&server)["properties"]["eureka"]["state"] == "error"
    });
    assert_eq!(eureka_ids(&server, None), ["MYAPP:host2:myapp:8080"]);
}

/// A recorded Netflix body in the single-object forms (one `application`, one `instance`).
const RECORDED_APPS: &str = r#"{"applications":{"versions__delta":1,"apps__hashcode":"UP_1_","application":{"name":"ORDERS","instance":{"hostName":"orders-1.example","app":"ORDERS","ipAddr":"10.2.0.9","status":"UP","overriddenstatus":"UNKNOWN","port":{"$":"7001","@enabled":"true"},"securePort":{"$":"7002","@enabled":true},"countryId":1,"dataCenterInfo":{"@class":"com.netflix.appinfo.AmazonInfo","name":"Amazon","metadata":{"instance-id":"i-0abc"}},"leaseInfo":{"renewalIntervalInSecs":30,"durationInSecs":90,"registrationTimestamp":1700000000000,"lastRenewalTimestamp":1700000030000,"evictionTimestamp":0,"serviceUpTimestamp":1700000000500},"metadata":{"@class":"java.util.Collections$EmptyMap"},"vipAddress":"orders","secureVipAddress":"orders-secure","isCoordinatingDiscoveryServer":"false","lastUpdatedTimestamp":"1700000000600","lastDirtyTimestamp":"1700000000400","actionType":"ADDED"}}}}"#;

#[test]
fn recorded_netflix_bodies_map_and_failed_answers_are_never_used() {
    // The first URL answers 500 with a body that would parse: it must not be used (W19's
    // original ignored status codes).
    let failing = recorded_server(|_| {
        Some((
            500,
            r#"{"applications":{"application":{"name":"WRONG","instance":{"app":"WRONG","hostName":"w"}}}}"#.to_string(),
        ))
    });
    let recorded = recorded_server(|path| match path {
        "/eureka/apps" => Some((200, RECORDED_APPS.to_string())),
        _ => Some((404, "{}".to_string())),
    });
    let server = Server::start(&[
        "--eureka_url",
        &format!("http://{failing}/eureka"),
        "--eureka_url",
        &format!("http://{recorded}/eureka"),
        "--catalog_poll",
        "1s",
        "--auth_mode",
        "trusted",
    ]);
    eventually("the recorded instance", || {
        eureka_ids(&server, Some("default")) == ["ORDERS:i-0abc"]
    });
    let listed = listing(&server, Some("default"))["instances"][0].clone();
    assert_eq!(listed["endpoint"]["type"], "https", "{listed}");
    assert_eq!(
        listed["endpoint"]["value"], "orders-1.example:7002",
        "{listed}"
    );
    assert_eq!(listed["ttl"], 90, "{listed}");
    assert_eq!(listed["last_heartbeat"], "2023-11-14T22:13:50Z", "{listed}");
    // Attached to the default namespace only.
    assert!(eureka_ids(&server, Some("team")).is_empty());
    let svips = server.request(
        "GET",
        "/api/eureka/default/v2/svips/orders-secure",
        &[JSON_ACCEPT],
        None,
    );
    assert_eq!(svips.status, 200, "{}", svips.text());
    assert!(svips.text().contains("i-0abc"), "{}", svips.text());
}

#[test]
fn a_hung_remote_never_delays_a_request() {
    // W19: the original fetched the first list under the lock every request needed.
    let hung = recorded_server(|_| None);
    let server = Server::start(&[
        "--eureka_url",
        &format!("http://{hung}/eureka/v2"),
        "--catalog_poll",
        "1s",
    ]);
    let started = Instant::now();
    assert!(eureka_ids(&server, None).is_empty());
    let apps = server.request("GET", "/eureka/v2/apps", &[JSON_ACCEPT], None);
    assert_eq!(apps.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "reads waited {:?} for a hung remote",
        started.elapsed()
    );
    let eureka = catalogs_report(&server)["properties"]["eureka"].clone();
    assert_eq!(eureka["state"], "starting", "{eureka}");
    assert_eq!(eureka["last_success"], Value::Null, "{eureka}");
}

/// The value of one series, written with its labels, in `/metrics`.
fn metric(server: &Server, series: &str) -> Option<f64> {
    server
        .get("/metrics")
        .text()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn catalog_changes_move_the_index_wake_watchers_and_show_in_metrics() {
    let dir = TempDir::new("catalog-watch");
    dir.write("default.json", &catalog(&[entry("a", "10.0.0.1:1", "")]));
    let server = Server::start(&["--fs_catalog", dir.arg()]);
    eventually("first listing", || services_of(&server) == ["a"]);
    let up = r#"a8registry_catalog_up{source="files"}"#;
    let instances = r#"a8registry_catalog_instances{source="files"}"#;
    eventually("the files source up", || metric(&server, up) == Some(1.0));
    assert_eq!(metric(&server, instances), Some(1.0));

    let index = |r: &a8registry_static_tests::Response| -> u64 {
        r.header("x-a8-index").unwrap().parse().unwrap()
    };
    let before = index(&server.get("/api/v1/services/a"));
    let mut watcher = server.connect();
    a8registry_static_tests::send(
        &mut watcher,
        "GET",
        &format!("/api/v1/services/a?index={before}&wait=60s"),
        &[],
        None,
    );
    dir.write(
        "default.json",
        &catalog(&[entry("a", "10.0.0.1:1", ""), entry("a", "10.0.0.2:1", "")]),
    );
    watcher
        .set_read_timeout(Some(SHOW_WITHIN + Duration::from_secs(4)))
        .unwrap();
    let woken = a8registry_static_tests::read_response(&mut watcher, false)
        .expect("the catalog change wakes the watcher");
    assert_eq!(woken.status, 200);
    assert!(index(&woken) > before, "a catalog change moves the index");
    assert!(woken.text().contains("10.0.0.2:1"), "{}", woken.text());
    assert_eq!(metric(&server, instances), Some(2.0));

    std::fs::write(dir.path().join("default.json"), "{\"instances\":[").unwrap();
    eventually("the files source down", || metric(&server, up) == Some(0.0));
    assert_eq!(
        metric(&server, instances),
        Some(2.0),
        "what it listed is kept"
    );
}

#[test]
fn a_remote_without_deltas_is_used_through_full_fetches_and_logged_about_once() {
    // The delta fails every round and the full list answers: not the source's error, and the
    // failing URL is warned about when it starts failing, not every round.
    let recorded = recorded_server(|path| match path {
        "/eureka/apps" => Some((200, RECORDED_APPS.to_string())),
        _ => Some((503, "{}".to_string())),
    });
    let server = Server::start(&[
        "--eureka_url",
        &format!("http://{recorded}/eureka"),
        "--catalog_poll",
        "1s",
    ]);
    eventually("the recorded instance", || {
        eureka_ids(&server, None) == ["ORDERS:i-0abc"]
    });
    // Several rounds, each a failed delta and a full fetch.
    std::thread::sleep(Duration::from_millis(4500));
    let eureka = catalogs_report(&server)["properties"]["eureka"].clone();
    assert_eq!(eureka["state"], "ok", "{eureka}");
    assert_eq!(eureka["last_error"], Value::Null, "{eureka}");
    let warnings: Vec<String> = server
        .stderr()
        .into_iter()
        .filter(|l| l.contains("level=warn"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("apps/delta"), "{warnings:#?}");
}

#[test]
fn a_remote_eureka_over_https_is_verified() {
    // W21: the original turned TLS verification off for every Eureka URL.
    use a8registry_static_tests::pki::{Pki, TlsProxy};
    let remote = Server::start(&[]);
    let registered = remote.post_json(
        "/eureka/v2/apps/MYAPP",
        &eureka_registration("MYAPP", "host1:myapp:8080", "host1", 8080),
    );
    assert_eq!(registered.status, 204, "{}", registered.text());
    let pki = Pki::new();
    let good = TlsProxy::start(&pki, "good", remote.address.port());
    let url = format!("https://127.0.0.1:{}/eureka/v2", good.port);
    let args = ["--eureka_url", url.as_str(), "--catalog_poll", "1s"];

    // An issuer the roots built into the binary do not know: nothing is mirrored.
    let untrusting = Server::start(&args);
    eventually("the TLS error", || {
        catalogs_report(&untrusting)["properties"]["eureka"]["state"] == "error"
    });
    let eureka = catalogs_report(&untrusting)["properties"]["eureka"].clone();
    let message = eureka["last_error"]["message"]
        .as_str()
        .unwrap()
        .to_lowercase();
    assert!(
        message.contains("issuer") || message.contains("certificate"),
        "{message}"
    );
    assert!(eureka_ids(&untrusting, None).is_empty());

    // The test CA trusted through SSL_CERT_FILE (a private CA): mirrored.
    let ca = pki.file("ca.pem");
    let trusting = Server::start_with_env(&args, &[("SSL_CERT_FILE", ca.as_str())]);
    eventually("the remote instance over https", || {
        eureka_ids(&trusting, None) == ["MYAPP:host1:myapp:8080"]
    });

    // A certificate of the trusted CA for another name: refused.
    let wrong = TlsProxy::start(&pki, "wrong", remote.address.port());
    let wrong_url = format!("https://127.0.0.1:{}/eureka/v2", wrong.port);
    let misnamed = Server::start_with_env(
        &["--eureka_url", &wrong_url, "--catalog_poll", "1s"],
        &[("SSL_CERT_FILE", ca.as_str())],
    );
    eventually("the name error", || {
        catalogs_report(&misnamed)["properties"]["eureka"]["state"] == "error"
    });
    assert!(eureka_ids(&misnamed, None).is_empty());
}
