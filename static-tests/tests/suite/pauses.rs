//! A pause of the registry itself (decision D39): SIGSTOP for longer than the TTLs, then SIGCONT.
//! The clients were not at fault, so nothing expires because of the pause; instances that stop
//! heartbeating still expire afterwards. With the Redis store the deadlines are Redis's, so these
//! tests choose the in-memory store.
//!
//! They wait on purpose, with margins of whole seconds.

use crate::cluster::{node, ClusterDir};
use a8registry_static_tests::*;
use std::time::{Duration, Instant};

const INSTANCES: &str = "/api/v1/instances";
const SIGSTOP: i32 = 19;
const SIGCONT: i32 = 18;
const PAUSE: Duration = Duration::from_secs(15);

fn register_many(server: &Server, service: &str, count: usize) {
    for i in 0..count {
        let body = registration(
            service,
            &format!("10.0.0.{}:{}", i % 250, 1000 + i),
            "\"ttl\":10",
        );
        let response = server.post_json(INSTANCES, &body);
        assert_eq!(response.status, 201, "{}", response.text());
    }
}

fn listed(server: &Server, service: &str) -> usize {
    let response = server.get(&format!("/api/v1/services/{service}"));
    match response.status {
        200 => ids_of(&response.json()).len(),
        _ => 0,
    }
}

fn pause(server: &Server) {
    server.signal(SIGSTOP);
    std::thread::sleep(PAUSE);
    server.signal(SIGCONT);
}

/// Polls until the service has no instance left, for at most `timeout`.
fn wait_until_gone(server: &Server, service: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if listed(server, service) == 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn a_pause_longer_than_the_ttls_expires_nothing_and_expiry_resumes_after_it() {
    let server = Server::start(&["--store", "inmem"]);
    register_many(&server, "paused", 200);
    assert_eq!(listed(&server, "paused"), 200);
    pause(&server);
    assert_eq!(
        listed(&server, "paused"),
        200,
        "instances expired because the registry itself was paused"
    );
    // The line is written by the log's own thread, after the clock's next tick noticed the gap.
    let logged = || {
        server
            .stderr()
            .iter()
            .any(|line| line.contains("the registry was paused") && line.contains("pause_ms"))
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !logged() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(logged(), "no log line for the pause: {:?}", server.stderr());
    // Without heartbeats they expire about 10 s after the pause ended, not never.
    assert!(
        wait_until_gone(&server, "paused", Duration::from_secs(30)),
        "instances never expired after the pause"
    );
}

#[test]
fn a_clustered_node_compensates_its_own_pause() {
    let dir = ClusterDir::new("pause");
    let (server, _) = node(&dir, &[]);
    register_many(&server, "clustered", 20);
    pause(&server);
    assert_eq!(listed(&server, "clustered"), 20);
    assert!(wait_until_gone(
        &server,
        "clustered",
        Duration::from_secs(30)
    ));
}
