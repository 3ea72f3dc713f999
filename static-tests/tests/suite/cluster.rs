//! Clustered mode (cluster contract): several real processes on loopback that replicate to each
//! other, and the weaknesses of the original they must survive (W1–W9, W12, W21–W23).

use a8registry_static_tests::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Generous functional bound for "a change reaches the other nodes" (the contract says 1 s).
const PROPAGATION: Duration = Duration::from_secs(5);

/// A cluster directory for one test, removed at the end.
struct ClusterDir(PathBuf);

impl ClusterDir {
    fn new(name: &str) -> ClusterDir {
        let path = std::env::temp_dir().join(format!("a8-cluster-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        ClusterDir(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ClusterDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node of a directory cluster, with its replication port.
fn node(dir: &ClusterDir, extra: &[&str]) -> (Server, u16) {
    let port = free_port();
    let port_text = port.to_string();
    let mut args = vec![
        "--replication",
        "--replication_port",
        &port_text,
        "--cluster_dir",
        dir.path(),
        "--sync_timeout",
        "10s",
    ];
    args.extend_from_slice(extra);
    (Server::start(&args), port)
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ids(server: &Server, service: &str) -> Vec<String> {
    let response = server.get(&format!("/api/v1/services/{service}"));
    match response.status {
        200 => ids_of(&response.json()),
        _ => Vec::new(),
    }
}

fn register(server: &Server, service: &str, value: &str, extra: &str) -> String {
    let response = server.post_json("/api/v1/instances", &registration(service, value, extra));
    assert_eq!(response.status, 201, "{}", response.text());
    response.json()["id"].as_str().unwrap().to_string()
}

fn heartbeat(server: &Server, id: &str) -> u16 {
    server
        .request(
            "PUT",
            &format!("/api/v1/instances/{id}/heartbeat"),
            &[],
            None,
        )
        .status
}

fn deregister(server: &Server, id: &str) -> u16 {
    server
        .request("DELETE", &format!("/api/v1/instances/{id}"), &[], None)
        .status
}

fn uptime(server: &Server) -> serde_json::Value {
    server.get("/uptime").json()
}

fn cluster_size(server: &Server) -> u64 {
    uptime(server)["CLUSTER"]["properties"]["size"]
        .as_u64()
        .unwrap_or(0)
}

fn member_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn three_nodes(name: &str) -> (ClusterDir, Vec<Server>) {
    let dir = ClusterDir::new(name);
    let nodes: Vec<Server> = (0..3).map(|_| node(&dir, &[]).0).collect();
    for node in &nodes {
        assert!(
            wait_until(PROPAGATION, || cluster_size(node) == 3),
            "every node sees 3 members: {}",
            uptime(node)
        );
    }
    (dir, nodes)
}

#[test]
fn changes_on_any_node_reach_every_other_node() {
    let (_dir, nodes) = three_nodes("propagation");
    let id = register(&nodes[0], "orders", "10.0.0.1:80", r#""tags":["v1"]"#);
    for node in &nodes[1..] {
        assert!(
            wait_until(PROPAGATION, || ids(node, "orders") == [id.clone()]),
            "the registration reached every node"
        );
    }
    // The same record everywhere, with the same id and fields.
    let listing = nodes[2].get("/api/v1/services/orders").json();
    assert_eq!(listing["instances"][0]["tags"], serde_json::json!(["v1"]));
    // A heartbeat on another node is accepted (it holds the instance).
    assert_eq!(heartbeat(&nodes[1], &id), 200);
    // A deregistration on a third node removes it everywhere.
    assert_eq!(deregister(&nodes[2], &id), 200);
    for node in &nodes {
        assert!(wait_until(PROPAGATION, || ids(node, "orders").is_empty()));
    }
    // A heartbeat after the deregistration does not bring it back (W5): 410 everywhere.
    std::thread::sleep(Duration::from_millis(300));
    for node in &nodes {
        assert_eq!(heartbeat(node, &id), 410);
        assert!(ids(node, "orders").is_empty());
    }
    let replication = &uptime(&nodes[0])["REPLICATION"];
    assert_eq!(replication["healthy"], true);
    let peers = replication["properties"]["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2);
    assert!(
        peers.iter().all(|p| p["connected"] == true),
        "{replication}"
    );
}

#[test]
fn a_new_node_holds_its_peers_state_when_its_api_opens() {
    let dir = ClusterDir::new("join");
    let (first, _) = node(&dir, &[]);
    let mut ids_made: Vec<String> = (0..50)
        .map(|i| register(&first, "catalog", &format!("10.0.1.{i}:80"), ""))
        .collect();
    ids_made.sort();
    let gone = register(&first, "catalog", "10.0.2.1:80", "");
    assert_eq!(deregister(&first, &gone), 200);
    let (second, _) = node(&dir, &[]);
    // No waiting: the API opened after the initial sync.
    assert_eq!(ids(&second, "catalog"), ids_made);
    assert!(
        second
            .stderr()
            .iter()
            .any(|l| l.contains("initial sync complete")),
        "{:?}",
        second.stderr()
    );
}

#[test]
fn kill_9_of_a_node_loses_nothing_it_acknowledged() {
    let (_dir, mut nodes) = three_nodes("crash");
    let mut made: Vec<String> = (0..100)
        .map(|i| register(&nodes[0], "pay", &format!("10.0.3.{i}:80"), ""))
        .collect();
    made.sort();
    std::thread::sleep(Duration::from_secs(1));
    nodes[0].signal(libc::SIGKILL);
    nodes[0].wait_exit(Duration::from_secs(5));
    for node in &nodes[1..] {
        assert!(wait_until(PROPAGATION, || ids(node, "pay") == made));
    }
    // The survivors notice the broken link.
    assert!(wait_until(Duration::from_secs(8), || {
        let replication = uptime(&nodes[1]);
        replication["REPLICATION"]["properties"]["peers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["connected"] == false)
            .count()
            == 1
    }));
}

#[test]
fn a_stopped_peer_stalls_no_writes_and_is_repaired_after_it_resumes() {
    let (_dir, nodes) = three_nodes("stopped");
    let early = register(&nodes[0], "web", "10.0.4.1:80", "");
    assert!(wait_until(PROPAGATION, || ids(&nodes[2], "web") == [early.clone()]));
    nodes[2].signal(libc::SIGSTOP);
    // Writes go on at full speed on the others (W1): a generous bound, far below the 7 s per
    // write that the original's stuck peer caused.
    let began = Instant::now();
    let mut made = vec![early.clone()];
    for i in 0..300 {
        made.push(register(&nodes[0], "web", &format!("10.0.5.{i}:80"), ""));
    }
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "300 writes took {:?} with a stopped peer",
        began.elapsed()
    );
    // A change the stopped peer misses (W6): a deregistration.
    assert_eq!(deregister(&nodes[1], &early), 200);
    made.retain(|id| *id != early);
    made.sort();
    assert!(wait_until(PROPAGATION, || ids(&nodes[1], "web") == made));
    // It is noticed within 5 s (W2).
    assert!(wait_until(Duration::from_secs(10), || {
        uptime(&nodes[0])["REPLICATION"]["properties"]["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["connected"] == false)
    }));
    nodes[2].signal(libc::SIGCONT);
    assert!(
        wait_until(Duration::from_secs(20), || ids(&nodes[2], "web") == made),
        "the resumed node converges (the deregistration it missed included)"
    );
}

#[test]
fn a_peer_that_accepts_and_never_answers_does_not_hang_startup() {
    // W3: the original hung forever on such a socket.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = format!("127.0.0.1:{}", silent.local_addr().unwrap().port());
    let held = std::thread::spawn(move || {
        let mut kept = Vec::new();
        for _ in 0..4 {
            if let Ok((socket, _)) = silent.accept() {
                kept.push(socket);
            }
        }
        std::thread::sleep(Duration::from_secs(30));
        drop(kept);
    });
    let began = Instant::now();
    let port = free_port().to_string();
    let server = Server::start(&[
        "--replication",
        "--replication_port",
        &port,
        "--peers",
        &peer,
        "--sync_timeout",
        "60s",
    ]);
    assert!(
        began.elapsed() < Duration::from_secs(9),
        "startup took {:?}",
        began.elapsed()
    );
    assert_eq!(server.get("/uptime").status, 200);
    drop(held);
}

#[test]
fn without_the_secret_a_peer_gets_nothing_and_injects_nothing() {
    let dir = ClusterDir::new("secret");
    let (first, port) = node(&dir, &["--replication_secret", "right"]);
    let id = register(&first, "secretive", "10.0.6.1:80", "");
    // An impostor speaking the protocol, with no secret.
    let mut socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket
        .write_all(b"HELLO a8registry-replication 1 00000000000000aa 127.0.0.1:1 -\n")
        .unwrap();
    let mut reader = BufReader::new(socket.try_clone().unwrap());
    let mut hello = String::new();
    reader.read_line(&mut hello).unwrap();
    assert!(
        hello.starts_with("HELLO a8registry-replication 1 "),
        "{hello:?}"
    );
    let record = format!(
        "SYNC\nREC {}\n",
        serde_json::json!({"ns":"default","live":{"id":"feedfeedfeedfeed","service":"evil","endpoint_type":"tcp","endpoint":"6.6.6.6:1","status":"UP","ttl_ms":30000,"registered":0,"updated":0,"service_up":0,"modified":false,"dirty_ms":0,"renewal_secs":30,"version":"ffffffffffff.00000000000000aa","registration":"ffffffffffff.00000000000000aa"},"remaining_ms":30000})
    );
    let _ = socket.write_all(record.as_bytes());
    let mut received = String::new();
    let _ = reader.read_to_string(&mut received);
    assert_eq!(received, "", "nothing but the hello comes back");
    assert!(!received.contains("secretive") && !received.contains(&id));
    assert!(
        ids(&first, "evil").is_empty(),
        "nothing it sent was applied"
    );
    // A node with a different secret starts and serves, but exchanges no state.
    let (other, _) = node(&dir, &["--replication_secret", "wrong"]);
    assert!(ids(&other, "secretive").is_empty());
    register(&other, "other-side", "10.0.6.2:80", "");
    std::thread::sleep(Duration::from_secs(2));
    assert!(ids(&first, "other-side").is_empty());
    assert!(first
        .stderr()
        .iter()
        .any(|l| l.contains("replication link refused")));
    // A node with the right secret gets everything.
    let (friend, _) = node(&dir, &["--replication_secret", "right"]);
    assert_eq!(ids(&friend, "secretive"), [id]);
}

#[test]
fn concurrent_re_registrations_on_two_nodes_converge_to_one_content() {
    // W7: the original could leave each node with the other's version, for ever.
    let (_dir, nodes) = three_nodes("concurrent");
    for round in 0..5 {
        let a = format!(r#""tags":["from-a-{round}"]"#);
        let b = format!(r#""tags":["from-b-{round}"]"#);
        let (left, right) = (&nodes[0], &nodes[1]);
        std::thread::scope(|s| {
            s.spawn(|| register(left, "race", "10.0.7.1:80", &a));
            s.spawn(|| register(right, "race", "10.0.7.1:80", &b));
        });
        let tags =
            |n: &Server| n.get("/api/v1/services/race").json()["instances"][0]["tags"].clone();
        assert!(
            wait_until(PROPAGATION, || {
                let first = tags(&nodes[0]);
                nodes.iter().all(|n| tags(n) == first)
            }),
            "round {round}: {} {} {}",
            tags(&nodes[0]),
            tags(&nodes[1]),
            tags(&nodes[2])
        );
    }
}

#[test]
fn a_deregistration_racing_a_heartbeat_is_not_undone() {
    let (_dir, nodes) = three_nodes("race-deregister");
    let mut made = Vec::new();
    for i in 0..20 {
        made.push(register(&nodes[0], "svc", &format!("10.0.8.{i}:80"), ""));
    }
    assert!(wait_until(PROPAGATION, || ids(&nodes[1], "svc").len() == 20));
    std::thread::scope(|s| {
        s.spawn(|| {
            for id in &made {
                heartbeat(&nodes[0], id);
            }
        });
        s.spawn(|| {
            for id in &made {
                assert_eq!(deregister(&nodes[1], id), 200);
            }
        });
    });
    std::thread::sleep(Duration::from_secs(2));
    for node in &nodes {
        assert!(ids(node, "svc").is_empty(), "no zombie after the race");
    }
}

#[test]
fn a_graceful_leave_removes_the_member_at_once() {
    let (dir, mut nodes) = three_nodes("leave");
    assert_eq!(member_files(&dir.0).len(), 3);
    let id = register(&nodes[2], "leaving", "10.0.9.1:80", "");
    nodes[2].signal(libc::SIGTERM);
    assert_eq!(nodes[2].wait_exit(Duration::from_secs(10)), Some(0));
    assert_eq!(
        member_files(&dir.0).len(),
        2,
        "it removed its own file only"
    );
    for node in &nodes[..2] {
        assert!(wait_until(Duration::from_secs(3), || cluster_size(node) == 2));
        // Its instances stay: they are the clients'.
        assert_eq!(ids(node, "leaving"), std::slice::from_ref(&id));
    }
}

#[test]
fn nodes_link_over_ipv6_with_static_peers() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    }
    let ports = [free_port(), free_port()];
    let peers = format!("[::1]:{},[::1]:{}", ports[0], ports[1]);
    let start = |port: u16| {
        let port = port.to_string();
        Server::start(&[
            "--replication",
            "--replication_bind",
            "::1",
            "--replication_port",
            &port,
            "--peers",
            &peers,
            "--sync_timeout",
            "5s",
        ])
    };
    let a = start(ports[0]);
    let b = start(ports[1]);
    let id = register(&a, "six", "10.0.10.1:80", "");
    assert!(wait_until(PROPAGATION, || ids(&b, "six") == [id.clone()]));
    let cluster = &uptime(&b)["CLUSTER"]["properties"];
    assert_eq!(cluster["address"], format!("[::1]:{}", ports[1]));
    assert_eq!(cluster["size"], 2, "{cluster}");
}

#[test]
fn cluster_options_are_checked_at_startup() {
    for (args, names) in [
        (
            &["--replication_address", "::1:6100"][..],
            &[
                "--replication_address",
                "A8_REPLICATION_ADDRESS",
                "::1:6100",
            ][..],
        ),
        (
            &["--peers", "a:1,10.0.0.5"],
            &["--peers", "A8_PEERS", "10.0.0.5"],
        ),
        (
            &["--replication_bind", "localhost"],
            &["--replication_bind", "A8_REPLICATION_BIND"],
        ),
        (
            &["--cluster_size", "-1"],
            &["--cluster_size", "A8_CLUSTER_SIZE"],
        ),
        (
            &[
                "--replication",
                "--store",
                "redis",
                "--store_address",
                "h:1",
            ],
            &["--replication", "A8_REPLICATION", "--store"],
        ),
    ] {
        let (code, _, stderr) = run_to_exit(args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        for name in names {
            assert!(stderr.contains(name), "{args:?}: {stderr}");
        }
    }
    // A replication port in use is a runtime failure (exit 1), before the API opens.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, _, stderr) = run_to_exit(
        &[
            "--api_port",
            "0",
            "--api_bind",
            "127.0.0.1",
            "--replication",
            "--replication_bind",
            "127.0.0.1",
            "--replication_port",
            &port,
            "--cluster_dir",
            "",
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&port), "{stderr}");
}

#[test]
fn member_files_are_judged_by_the_readers_clock() {
    // W12: a member whose file carries a far-off time is a member like any other, and nodes
    // never delete another member's file.
    let dir = ClusterDir::new("skew");
    let (first, _) = node(&dir, &[]);
    let (second, _) = node(&dir, &[]);
    assert!(wait_until(PROPAGATION, || cluster_size(&first) == 2));
    for name in member_files(&dir.0) {
        let path = dir.0.join(&name);
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(3600))
            .unwrap();
    }
    // A file a real node would never write, with a started time hours ahead.
    let fake = dir.0.join("00000000000000ff");
    std::fs::write(
        &fake,
        "{\"id\":\"00000000000000ff\",\"address\":\"127.0.0.1:1\",\"started\":\"2099-01-01T00:00:00Z\",\"seq\":1}\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(fake.exists(), "no node deletes another member's file");
    assert_eq!(cluster_size(&second), 3, "{}", uptime(&second));
    let reader = BufReader::new(std::fs::File::open(&fake).unwrap());
    assert_eq!(reader.lines().count(), 1);
}

#[test]
fn heartbeats_on_one_node_keep_the_instance_alive_everywhere_and_expiry_is_shared() {
    // W4 and W14: deadlines travel as remaining time; every node expires on its own.
    let dir = ClusterDir::new("leases");
    let ttl_args = ["--min_ttl", "1s", "--default_ttl", "3s"];
    let (a, _) = node(&dir, &ttl_args);
    let (b, _) = node(&dir, &ttl_args);
    assert!(wait_until(PROPAGATION, || cluster_size(&a) == 2));
    let id = register(&a, "beating", "10.0.11.1:80", r#""ttl":3"#);
    assert!(wait_until(PROPAGATION, || ids(&b, "beating") == [id.clone()]));
    // Heartbeats go to b only, for three TTLs: a keeps the instance through b's leases.
    let until = Instant::now() + Duration::from_secs(9);
    while Instant::now() < until {
        assert_eq!(heartbeat(&b, &id), 200);
        assert_eq!(
            ids(&a, "beating"),
            std::slice::from_ref(&id),
            "a follows b's leases"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // Once they stop, both nodes drop it, within a second or so of each other.
    assert!(wait_until(Duration::from_secs(5), || ids(&a, "beating").is_empty()));
    let a_gone = Instant::now();
    assert!(wait_until(Duration::from_secs(5), || ids(&b, "beating").is_empty()));
    assert!(
        a_gone.elapsed() < Duration::from_secs(2),
        "{:?}",
        a_gone.elapsed()
    );
    assert_eq!(heartbeat(&a, &id), 410);
}

/// The samples of `family` in `/metrics`: (the `peer` label, value).
fn peer_samples(server: &Server, family: &str) -> Vec<(String, f64)> {
    let prefix = format!("{family}{{peer=\"");
    server
        .get("/metrics")
        .text()
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (peer, value) = rest.split_once("\"} ")?;
            Some((peer.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn replication_peers_show_in_metrics_and_a_node_is_ready_once_it_answers() {
    let dir = ClusterDir::new("metrics");
    let (first, _) = node(&dir, &[]);
    let (mut second, second_port) = node(&dir, &[]);
    for server in [&first, &second] {
        assert!(wait_until(PROPAGATION, || cluster_size(server) == 2));
        let r = server.get("/ready");
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.text(), r#"{"ready":true}"#);
    }
    let up = |server: &Server| peer_samples(server, "a8registry_replication_peer_up");
    assert!(
        wait_until(PROPAGATION, || up(&first).iter().any(|(_, v)| *v == 1.0)),
        "{:?}",
        up(&first)
    );
    let peers = up(&first);
    assert_eq!(peers.len(), 1, "one series per peer: {peers:?}");
    assert!(
        peers[0].0.ends_with(&format!(":{second_port}")),
        "labelled with the peer's address: {peers:?}"
    );
    for family in [
        "a8registry_replication_queue_depth",
        "a8registry_replication_repairs_total",
    ] {
        let samples = peer_samples(&first, family);
        assert_eq!(samples.len(), 1, "{family}: {samples:?}");
        assert_eq!(samples[0].0, peers[0].0);
        assert!(samples[0].1 >= 0.0);
    }
    let text = first.get("/metrics").text();
    assert!(text.contains("# TYPE a8registry_replication_repairs_total counter"));

    second.signal(libc::SIGKILL);
    let _ = second.wait_exit(Duration::from_secs(5));
    assert!(
        wait_until(Duration::from_secs(15), || up(&first)
            .iter()
            .all(|(_, v)| *v == 0.0)),
        "a lost peer is down: {:?}",
        up(&first)
    );
    // A node without replication has no such series.
    let alone = Server::start(&[]);
    assert!(!alone
        .get("/metrics")
        .text()
        .contains("a8registry_replication_peer_up"));
}
