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
        assert!(Instant::now() < deadline, "not within {SHOW_WITHIN:?}: {what}");
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
        listing(&server, None)["instances"].as_array().unwrap().len() == 2
    });
    let instances = listing(&server, None)["instances"].as_array().unwrap().clone();
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

    let skipped: Vec<String> = server
        .stderr()
        .into_iter()
        .filter(|l| l.contains("catalog entry skipped"))
        .collect();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    for (line, reason) in skipped.iter().zip(["endpoint", "not an object", "endpoint.type"]) {
        assert!(line.contains("default.json") && line.contains(reason), "{line}");
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
    assert_eq!(server.get("/uptime").status, 200, "a short failure stays healthy");

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
    root.write("outside.json", &catalog(&[entry("secret", "10.9.9.9:1", "")]));
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
    for namespace in ["../outside", "..%2Foutside", "./../outside", "catalog/../../outside"] {
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
        listing(&server, None)["instances"].as_array().unwrap().len() == 1
    });
    let id = ids_of(&listing(&server, None))[0].clone();

    // Writes to a catalog id: 410 in Amalgam8, 404 in Eureka.
    let heartbeat = server.request("PUT", &format!("/api/v1/instances/{id}/heartbeat"), &[], None);
    assert_eq!(heartbeat.status, 410, "{}", heartbeat.text());
    let delete = server.request("DELETE", &format!("/api/v1/instances/{id}"), &[], None);
    assert_eq!(delete.status, 410, "{}", delete.text());
    let cancel = server.request("DELETE", &format!("/eureka/v2/apps/reviews/{id}"), &[], None);
    assert_eq!(cancel.status, 404, "{}", cancel.text());

    // The same service, type and value registered: one instance, the store's (it has a TTL).
    let registered = server.post_json(
        "/api/v1/instances",
        &registration("reviews", "10.1.0.3:80", r#""ttl":60"#),
    );
    assert_eq!(registered.status, 201, "{}", registered.text());
    assert_eq!(registered.json()["id"], id.as_str());
    let instances = listing(&server, None)["instances"].as_array().unwrap().clone();
    assert_eq!(instances.len(), 1, "{instances:?}");
    assert_eq!(instances[0]["ttl"], 60);
    assert!(instances[0].get("tags").is_none(), "the registered one is listed");

    // Deregistered: the catalog instance is listed again.
    let delete = server.request("DELETE", &format!("/api/v1/instances/{id}"), &[], None);
    assert_eq!(delete.status, 200);
    let instances = listing(&server, None)["instances"].as_array().unwrap().clone();
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0]["tags"], serde_json::json!(["filesystem"]));
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
