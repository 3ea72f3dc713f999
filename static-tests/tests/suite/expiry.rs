//! TTLs, heartbeats and expiry over real time (spec 3.3; cases 7.7), with short TTLs.
//!
//! These tests wait on purpose, with margins of whole seconds: they check what a client sees
//! before and after a deadline, never how fast the server is.

use a8registry_static_tests::*;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

const INSTANCES: &str = "/api/v1/instances";
/// Flags for one-second TTLs.
const SHORT_TTLS: [&str; 6] = ["--min_ttl", "1s", "--default_ttl", "1s", "--max_ttl", "10m"];

fn id_of(response: &Response) -> String {
    assert_eq!(response.status, 201, "{}", response.text());
    response.json()["id"].as_str().unwrap().to_string()
}

#[test]
fn ttl_clamping_and_configured_default() {
    let server = Server::start(&[]);
    let ttl = |extra: &str| {
        server
            .post_json(INSTANCES, &registration("t", "h", extra))
            .json()["ttl"]
            .clone()
    };
    assert_eq!(ttl("\"ttl\":5"), 10);
    assert_eq!(ttl("\"ttl\":50000"), 600);
    assert_eq!(ttl("\"ttl\":0"), 30);
    assert_eq!(ttl(""), 30);
    assert_eq!(ttl("\"ttl\":45"), 45);
    let doubled = Server::start(&["--default_ttl", "60s"]);
    let r = doubled.post_json(INSTANCES, &registration("t", "h", ""));
    assert_eq!(r.json()["ttl"], 60);
}

#[test]
fn instances_expire_after_their_ttl_and_out_of_service_never_does() {
    let server = Server::start(&SHORT_TTLS);
    let up = id_of(&server.post_json(INSTANCES, &registration("gone", "h:1", "\"ttl\":1")));
    let starting = id_of(&server.post_json(
        INSTANCES,
        &registration("mixed", "s:1", "\"ttl\":1,\"status\":\"STARTING\""),
    ));
    let oos = id_of(&server.post_json(
        INSTANCES,
        &registration("mixed", "o:1", "\"ttl\":1,\"status\":\"OUT_OF_SERVICE\""),
    ));
    assert_eq!(server.get("/api/v1/services/gone").status, 200);
    std::thread::sleep(Duration::from_millis(2500));
    server
        .get("/api/v1/services/gone")
        .assert_error(404, "Failed to enumerate service names");
    server
        .request("PUT", &format!("{INSTANCES}/{up}/heartbeat"), &[], None)
        .assert_error(410, "Failed to renew instance registration");
    server
        .request("DELETE", &format!("{INSTANCES}/{up}"), &[], None)
        .assert_error(410, "Failed to deregister instance");
    let mixed = server.get("/api/v1/services/mixed").json();
    assert_eq!(
        ids_of(&mixed),
        std::slice::from_ref(&oos),
        "the STARTING sibling expired"
    );
    assert_ne!(starting, oos);
    // The survivor can still be renewed and removed.
    assert_eq!(
        server
            .request("PUT", &format!("{INSTANCES}/{oos}/heartbeat"), &[], None)
            .status,
        200
    );
    let removed = server.request("DELETE", &format!("{INSTANCES}/{oos}"), &[], None);
    assert_eq!(removed.status, 200);
    server
        .get("/api/v1/services/mixed")
        .assert_error(404, "Failed to enumerate service names");

    // Re-registering an expired endpoint gives the same id, listed once.
    let again = id_of(&server.post_json(INSTANCES, &registration("gone", "h:1", "\"ttl\":1")));
    assert_eq!(again, up);
    assert_eq!(ids_of(&server.get("/api/v1/services/gone").json()), [up]);
}

#[test]
fn regular_heartbeats_keep_an_instance_alive() {
    let server = Server::start(&SHORT_TTLS);
    let id = id_of(&server.post_json(INSTANCES, &registration("alive", "h:1", "\"ttl\":1")));
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(300));
        let r = server.request("PUT", &format!("{INSTANCES}/{id}/heartbeat"), &[], None);
        assert_eq!(r.status, 200, "after {:?}", started.elapsed());
    }
    assert_eq!(ids_of(&server.get("/api/v1/services/alive").json()), [id]);
}

#[test]
fn cached_listing_never_shows_an_expired_instance() {
    let server = Server::start(&SHORT_TTLS);
    id_of(&server.post_json(INSTANCES, &registration("c", "short", "\"ttl\":1")));
    let long = id_of(&server.post_json(INSTANCES, &registration("c", "long", "\"ttl\":60")));
    // Fill the cache, then let the short one expire without any write in between.
    assert_eq!(
        server.get("/api/v1/services/c").json()["instances"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(
        ids_of(&server.get("/api/v1/services/c").json()),
        std::slice::from_ref(&long)
    );
    assert_eq!(
        ids_of(&server.get("/api/v1/instances?service_name=c").json()),
        [long]
    );
}

#[test]
fn ten_thousand_instances_expire_leaving_nothing_behind() {
    let server = Server::start(&[
        "--min_ttl",
        "1s",
        "--default_ttl",
        "1s",
        "--log_level",
        "debug",
    ]);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let address = server.address;
            std::thread::spawn(move || {
                let mut conn = connect(address);
                for i in (t..10_000).step_by(8) {
                    let body = registration(
                        &format!("svc-{}", i % 100),
                        &format!("10.0.{}.{}:80", i / 256, i % 256),
                        "\"ttl\":1",
                    );
                    send(
                        &mut conn,
                        "POST",
                        INSTANCES,
                        &[("Content-Type", "application/json")],
                        Some(&body),
                    );
                    assert_eq!(read_response(&mut conn, false).unwrap().status, 201);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Registration takes a while; wait until every TTL has run out, plus the reaper's interval.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        server.get("/api/v1/services").json()["services"],
        serde_json::json!([])
    );
    assert_eq!(
        server.get("/api/v1/instances?status=ALL").json()["instances"],
        serde_json::json!([])
    );
    std::thread::sleep(Duration::from_millis(300));
    let lines = server.stderr();
    let registered = lines
        .iter()
        .filter(|l| l.contains("kind=\"Registered\""))
        .count();
    let expired = lines
        .iter()
        .filter(|l| l.contains("kind=\"Expired\""))
        .count();
    assert_eq!(registered, 10_000);
    assert_eq!(expired, 10_000, "the reaper removed every instance");
}

#[test]
fn fifty_thousand_heartbeats_from_64_connections_without_false_expiry() {
    // TTL 3 s; the heartbeats are spread over about 4.5 s, so an instance that was not really
    // renewed would be gone by the end.
    let server = Server::start(&["--min_ttl", "1s", "--default_ttl", "3s"]);
    let ids: Arc<Vec<String>> = Arc::new(
        (0..640)
            .map(|i| {
                id_of(&server.post_json(
                    INSTANCES,
                    &registration("hb", &format!("h:{i}"), "\"ttl\":3"),
                ))
            })
            .collect(),
    );
    let registered = Instant::now();
    let threads: Vec<_> = (0..64)
        .map(|t| {
            let ids = ids.clone();
            let address = server.address;
            std::thread::spawn(move || {
                let mut conn = connect(address);
                let mine: Vec<&String> = ids.iter().skip(t).step_by(64).collect();
                let mut failures = 0;
                // 782 heartbeats per connection in 46 pipelined batches of 17: every batch
                // renews all 10 of its instances, and batches come about 100 ms apart.
                for batch in 0..46 {
                    let mut raw = Vec::new();
                    for k in 0..17 {
                        let id = mine[(batch * 17 + k) % mine.len()];
                        raw.extend_from_slice(
                            format!("PUT {INSTANCES}/{id}/heartbeat HTTP/1.1\r\nHost: x\r\n\r\n")
                                .as_bytes(),
                        );
                    }
                    conn.write_all(&raw).unwrap();
                    for _ in 0..17 {
                        if read_response(&mut conn, false).unwrap().status != 200 {
                            failures += 1;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                failures
            })
        })
        .collect();
    let failures: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(failures, 0);
    // Longer than the TTL has passed since the registrations: only renewals kept them.
    assert!(
        registered.elapsed() > Duration::from_secs(3),
        "the storm outlasted the TTL"
    );
    let listing = server.get("/api/v1/services/hb").json();
    assert_eq!(instance_count(&listing), 640);
}
