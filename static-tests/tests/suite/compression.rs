//! Compressed responses (spec D40): a body of 1 KiB or more goes out gzip-compressed to a client
//! whose `Accept-Encoding` allows gzip, with `Content-Encoding: gzip` and `Vary: Accept-Encoding`;
//! other clients get it plain (with `Vary`), and small or empty bodies are never compressed.
//! Compressed bodies are checked with Python's own gzip module, not with the server's code.

use a8registry_static_tests::*;

const MIN_GZIP_BODY_BYTES: usize = 1024;

fn get_with(server: &Server, path: &str, headers: &[(&str, &str)]) -> Response {
    server.request("GET", path, headers, None)
}

/// Registers `count` instances of `service`, each with some metadata so that bodies grow.
fn register_many(server: &Server, service: &str, count: usize) {
    for i in 0..count {
        let extra = r#""ttl":300,"tags":["blue","green"],"metadata":{"zone":"eu-west-1a"}"#;
        let body = registration(service, &format!("10.1.0.{i}:8080"), extra);
        let answer = server.post_json("/api/v1/instances", &body);
        assert_eq!(answer.status, 201, "{}", answer.text());
    }
}

/// A gzip answer to `path` that decompresses to exactly the plain answer, both marked as the
/// contract says; returns the compressed body.
#[track_caller]
fn assert_gzip_matches_plain(server: &Server, path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let plain = get_with(server, path, headers);
    assert_eq!(plain.status, 200, "{path}: {}", plain.text());
    assert!(plain.body.len() >= MIN_GZIP_BODY_BYTES, "{path}: too small");
    assert_eq!(plain.header("content-encoding"), None, "{path}");
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"), "{path}");

    let mut with_gzip = headers.to_vec();
    with_gzip.push(("Accept-Encoding", "gzip"));
    let compressed = get_with(server, path, &with_gzip);
    assert_eq!(compressed.status, 200, "{path}");
    assert_eq!(
        compressed.header("content-encoding"),
        Some("gzip"),
        "{path}"
    );
    assert_eq!(compressed.header("vary"), Some("Accept-Encoding"), "{path}");
    assert_eq!(
        compressed.header("content-type"),
        plain.header("content-type"),
        "{path}"
    );
    assert!(
        compressed.body.len() < plain.body.len(),
        "{path}: {} of {} bytes",
        compressed.body.len(),
        plain.body.len()
    );
    assert_eq!(
        gunzip(&compressed.body),
        plain.body,
        "{path}: decompresses to the plain body"
    );
    compressed.body
}

/// Registers `count` instances of the Eureka app `app` (they show in its deltas).
fn register_eureka(server: &Server, app: &str, count: usize) {
    for i in 0..count {
        let body = serde_json::json!({"instance": {
            "instanceId": format!("{app}-{i}"), "hostName": format!("host-{i}"), "app": app,
            "ipAddr": "10.2.0.1", "status": "UP", "port": {"$": 80, "@enabled": "true"},
            "vipAddress": app.to_lowercase(),
            "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
                               "name": "MyOwn"}}});
        let answer = server.post_json(&format!("/eureka/v2/apps/{app}"), &body.to_string());
        assert_eq!(answer.status, 204, "{}", answer.text());
    }
}

#[test]
fn large_bodies_are_gzipped_for_clients_that_take_gzip() {
    let server = Server::start(&[]);
    register_many(&server, "orders", 40);
    register_eureka(&server, "PAYMENTS", 10);
    let json = [("Accept", "application/json")];
    for (path, headers) in [
        // Built per request.
        ("/api/v1/instances", &[][..]),
        ("/api/v1/instances?tags=blue", &[]),
        // Cached bodies.
        ("/api/v1/instances?service_name=orders", &[]),
        ("/api/v1/services/orders", &[]),
        ("/eureka/v2/apps", &[]),
        ("/eureka/v2/apps", &json),
        ("/eureka/v2/apps/orders", &[]),
        ("/eureka/v2/apps/delta", &json),
        ("/ui/ui.js", &[]),
    ] {
        assert_gzip_matches_plain(&server, path, headers);
    }
    // Its counters move with every request: it can only be checked to decompress.
    let metrics = get_with(&server, "/metrics", &[("Accept-Encoding", "gzip")]);
    assert_eq!(metrics.header("content-encoding"), Some("gzip"));
    let text = String::from_utf8(gunzip(&metrics.body)).unwrap();
    assert!(text.contains("a8registry_"), "{text}");
}

#[test]
fn accept_encoding_is_read_with_its_weights() {
    let server = Server::start(&[]);
    register_many(&server, "orders", 20);
    let path = "/api/v1/instances?service_name=orders";
    for value in [
        "gzip",
        "deflate, gzip",
        "gzip, deflate, br",
        "GZIP;q=0.5",
        "x-gzip",
        "*",
        "br;q=1.0, gzip;q=0.8, *;q=0.1",
        "identity;q=0.5, gzip",
    ] {
        let answer = get_with(&server, path, &[("Accept-Encoding", value)]);
        assert_eq!(answer.header("content-encoding"), Some("gzip"), "{value:?}");
        gunzip(&answer.body);
    }
    for value in [
        "gzip;q=0",
        "gzip; q=0.000",
        "identity",
        "deflate, br",
        "*;q=0",
        "gzip;q=0, *",
        "gzip;q=0.5, identity",
        "",
    ] {
        let answer = get_with(&server, path, &[("Accept-Encoding", value)]);
        assert_eq!(answer.header("content-encoding"), None, "{value:?}");
        assert_eq!(answer.header("vary"), Some("Accept-Encoding"), "{value:?}");
        assert!(
            answer.json()["instances"].is_array(),
            "{value:?}: plain JSON"
        );
    }
    // Two fields are one list.
    let answer = get_with(
        &server,
        path,
        &[("Accept-Encoding", "br"), ("Accept-Encoding", "gzip")],
    );
    assert_eq!(answer.header("content-encoding"), Some("gzip"));
}

#[test]
fn small_and_empty_bodies_go_out_plain() {
    let server = Server::start(&[]);
    let gzip = [("Accept-Encoding", "gzip")];
    let created = server.request(
        "POST",
        "/api/v1/instances",
        &[("Content-Type", "application/json"), gzip[0]],
        Some(&registration("tiny", "10.0.0.1:80", r#""ttl":300"#)),
    );
    assert_eq!(created.status, 201);
    assert_eq!(created.header("content-encoding"), None);
    let id = created.json()["id"].as_str().unwrap().to_string();

    let small = get_with(&server, "/api/v1/instances?service_name=tiny", &gzip);
    assert!(small.body.len() < MIN_GZIP_BODY_BYTES);
    assert_eq!(small.header("content-encoding"), None);
    assert_eq!(small.header("vary"), None, "a small body does not vary");
    assert_eq!(small.json()["instances"][0]["id"], id.as_str());

    let heartbeat = server.request(
        "PUT",
        &format!("/api/v1/instances/{id}/heartbeat"),
        &gzip,
        None,
    );
    assert_eq!(heartbeat.status, 200);
    assert!(heartbeat.body.is_empty());
    assert_eq!(
        heartbeat.header("content-encoding"),
        None,
        "never on 0 bytes"
    );
    let deregistered = server.request("DELETE", &format!("/api/v1/instances/{id}"), &gzip, None);
    assert!(deregistered.body.is_empty());
    assert_eq!(deregistered.header("content-encoding"), None);
    let missing = get_with(&server, "/api/v1/services/nothing", &gzip);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("content-encoding"), None);
}

#[test]
fn a_cached_compressed_body_is_reused_until_a_change_makes_a_fresh_one() {
    let server = Server::start(&[]);
    register_many(&server, "orders", 30);
    let json = [("Accept", "application/json")];
    for path in ["/eureka/v2/apps", "/api/v1/services/orders"] {
        let first = assert_gzip_matches_plain(&server, path, &json);
        let again = get_with(&server, path, &[json[0], ("Accept-Encoding", "gzip")]);
        assert_eq!(again.body, first, "{path}: the cached one");
    }
    let added = server.post_json(
        "/api/v1/instances",
        &registration("orders", "10.9.9.9:8080", r#""ttl":300"#),
    );
    assert_eq!(added.status, 201);
    for path in ["/eureka/v2/apps", "/api/v1/services/orders"] {
        let fresh = assert_gzip_matches_plain(&server, path, &json);
        let text = String::from_utf8(gunzip(&fresh)).unwrap();
        assert!(text.contains("10.9.9.9"), "{path}: shows the change");
    }
    // HEAD tells the length of the compressed body.
    let mut conn = server.connect();
    send(
        &mut conn,
        "HEAD",
        "/eureka/v2/apps",
        &[json[0], ("Accept-Encoding", "gzip")],
        None,
    );
    let head = read_response(&mut conn, true).unwrap();
    let get = get_with(
        &server,
        "/eureka/v2/apps",
        &[json[0], ("Accept-Encoding", "gzip")],
    );
    assert_eq!(head.header("content-encoding"), Some("gzip"));
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
}

#[test]
fn a_blocking_query_is_answered_compressed() {
    let server = Server::start(&[]);
    register_many(&server, "orders", 20);
    let first = get_with(&server, "/api/v1/services/orders", &[]);
    let index = first.header("x-a8-index").unwrap().to_string();
    let address = server.address;
    let waiting = std::thread::spawn(move || {
        let mut conn = connect(address);
        send(
            &mut conn,
            "GET",
            &format!("/api/v1/services/orders?index={index}&wait=20s"),
            &[("Accept-Encoding", "gzip")],
            None,
        );
        read_response(&mut conn, false).unwrap()
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let added = server.post_json(
        "/api/v1/instances",
        &registration("orders", "10.9.9.9:8080", r#""ttl":300"#),
    );
    assert_eq!(added.status, 201);
    let answer = waiting.join().unwrap();
    assert_eq!(answer.header("content-encoding"), Some("gzip"));
    let text = String::from_utf8(gunzip(&answer.body)).unwrap();
    assert!(text.contains("10.9.9.9"), "{text}");
}
