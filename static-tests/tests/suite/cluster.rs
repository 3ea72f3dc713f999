//! Clustered mode (cluster contract): several real processes on loopback that replicate to each
//! other, and the weaknesses of the original they must survive (W1–W9, W12, W21–W23).

use a8registry_static_tests::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Generous functional bound for "a change reaches the other nodes" (the contract says 1 s).
pub(crate) const PROPAGATION: Duration = Duration::from_secs(5);

/// A cluster directory for one test, removed at the end.
pub(crate) struct ClusterDir(pub(crate) PathBuf);

impl ClusterDir {
    pub(crate) fn new(name: &str) -> ClusterDir {
        let path = std::env::temp_dir().join(format!("a8-cluster-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        ClusterDir(path)
    }

    pub(crate) fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ClusterDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node of a directory cluster, with its replication port.
pub(crate) fn node(dir: &ClusterDir, extra: &[&str]) -> (Server, u16) {
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

pub(crate) fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
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

pub(crate) fn ids(server: &Server, service: &str) -> Vec<String> {
    let response = server.get(&format!("/api/v1/services/{service}"));
    match response.status {
        200 => ids_of(&response.json()),
        _ => Vec::new(),
    }
}

pub(crate) fn register(server: &Server, service: &str, value: &str, extra: &str) -> String {
    let response = server.post_json("/api/v1/instances", &registration(service, value, extra));
    assert_eq!(response.status, 201, "{}", response.text());
    response.json()["id"].as_str().unwrap().to_string()
}

pub(crate) fn heartbeat(server: &Server, id: &str) -> u16 {
    server
        .request(
            "PUT",
            &format!("/api/v1/instances/{id}/heartbeat"),
            &[],
            None,
        )
        .status
}

pub(crate) fn deregister(server: &Server, id: &str) -> u16 {
    server
        .request("DELETE", &format!("/api/v1/instances/{id}"), &[], None)
        .status
}

pub(crate) fn uptime(server: &Server) -> serde_json::Value {
    server.get("/uptime").json()
}

pub(crate) fn cluster_size(server: &Server) -> u64 {
    uptime(server)["CLUSTER"]["properties"]["size"]
        .as_u64()
        .unwrap_or(0)
}

pub(crate) fn member_files(dir: &Path) -> Vec<String> {
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

pub(crate) fn three_nodes(name: &str) -> (ClusterDir, Vec<Server>) {
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
    let log = nodes[0].stderr();
    assert!(log.iter().any(|l| l
        .contains("Number of members in the cluster has been changed. prevSize: ")
        && l.contains(", currSize: 3")));
    assert!(log
        .iter()
        .any(|l| l.contains("replication is not authenticated: set --replication_secret")));
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
    // W5: an OUT_OF_SERVICE zombie of the original lived for ever; half of these are.
    for i in 0..20 {
        let status = if i % 2 == 0 {
            r#""status":"OUT_OF_SERVICE""#
        } else {
            ""
        };
        made.push(register(
            &nodes[0],
            "svc",
            &format!("10.0.8.{i}:80"),
            status,
        ));
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
            &["--sync_timeout", "-1s"][..],
            &["--sync_timeout", "A8_SYNC_TIMEOUT", "-1s"][..],
        ),
        (
            &["--replication", "--replication_port", "70000"],
            &["--replication_port", "A8_REPLICATION_PORT", "70000"],
        ),
        (
            &["--replication_address", "10.0.0.5:0"],
            &["--replication_address", "10.0.0.5:0"],
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
    // So is a cluster directory that is a file.
    let file = std::env::temp_dir().join(format!("a8-cluster-file-{}", std::process::id()));
    std::fs::write(&file, "not a directory").unwrap();
    let free = free_port().to_string();
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
            &free,
            "--cluster_dir",
            file.to_str().unwrap(),
        ],
        &[],
    );
    let _ = std::fs::remove_file(&file);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
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

/// Registers `count` instances of `service` over one keep-alive connection, each with about
/// 900 bytes of metadata (so replication lines are large), and returns each request's latency.
fn timed_registrations(
    server: &Server,
    service: &str,
    first: usize,
    count: usize,
) -> Vec<Duration> {
    let pad = "x".repeat(900);
    let mut conn = server.connect();
    (first..first + count)
        .map(|i| {
            let body = registration(
                service,
                &format!("10.{}.{}.{}:80", 20 + i / 62_500, (i / 250) % 250, i % 250),
                &format!(r#""metadata":{{"pad":"{pad}"}}"#),
            );
            let began = Instant::now();
            send(
                &mut conn,
                "POST",
                "/api/v1/instances",
                &[("Content-Type", "application/json")],
                Some(&body),
            );
            let response = read_response(&mut conn, false).expect("a response");
            assert_eq!(response.status, 201, "{}", response.text());
            began.elapsed()
        })
        .collect()
}

fn p99(latencies: &[Duration]) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
}

/// The node's instance count in `default`, from `/metrics`.
fn instances_in_default(server: &Server) -> u64 {
    server
        .get("/metrics")
        .text()
        .lines()
        .find(|l| l.starts_with("a8registry_instances{namespace=\"default\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_stopped_peer_does_not_raise_another_nodes_write_latency() {
    // W1: in the original, one peer that stopped reading made every write wait 7 s once its
    // socket and the 512-slot queue were full (about 1,900 writes). Here the stopped peer's
    // socket buffers fill, its queue overflows and is dropped, and writes go on as before: the
    // contract's bound is p99 at most 2x; machines running other work get 25 ms of slack.
    let (_dir, nodes) = three_nodes("latency");
    let baseline = timed_registrations(&nodes[0], "web", 0, 3_000);
    nodes[2].signal(libc::SIGSTOP);
    // 15,000 writes of ~1.3 KB lines: far more than the loopback socket buffers and the 10,000
    // lines the queue holds.
    let stopped = timed_registrations(&nodes[0], "web", 3_000, 15_000);
    nodes[2].signal(libc::SIGCONT);
    let (base, with_stopped) = (p99(&baseline), p99(&stopped));
    let slowest = stopped.iter().max().copied().unwrap_or_default();
    eprintln!("write p99: {base:?} with every peer up, {with_stopped:?} with one stopped (slowest {slowest:?})");
    assert!(
        with_stopped <= base * 2 + Duration::from_millis(25),
        "p99 {with_stopped:?} with a stopped peer against {base:?}"
    );
    assert!(slowest < Duration::from_secs(2), "a write took {slowest:?}");
    // The stopped node converges once it resumes: everything it missed is repaired.
    for node in &nodes {
        assert!(
            wait_until(Duration::from_secs(30), || instances_in_default(node)
                == 18_000),
            "{} instances",
            instances_in_default(node)
        );
    }
}

#[test]
fn ready_is_200_from_the_moment_the_api_opens_after_the_initial_sync() {
    // A peer that accepts and never answers holds the initial sync until --sync_timeout; the
    // API port stays closed until then, and the first /ready it answers is 200.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = format!("127.0.0.1:{}", silent.local_addr().unwrap().port());
    let api_port = free_port();
    let api = format!("127.0.0.1:{api_port}");
    let probe = std::thread::spawn(move || {
        let began = Instant::now();
        loop {
            if let Ok(mut conn) = TcpStream::connect(&api) {
                conn.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                send(&mut conn, "GET", "/ready", &[], None);
                let response = read_response(&mut conn, false).expect("a response");
                return (began.elapsed(), response.status, response.text());
            }
            assert!(
                began.elapsed() < Duration::from_secs(20),
                "the API never opened"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let api_port = api_port.to_string();
    let replication_port = free_port().to_string();
    let server = Server::start(&[
        "--api_port",
        &api_port,
        "--replication",
        "--replication_port",
        &replication_port,
        "--cluster_dir",
        "",
        "--peers",
        &peer,
        "--sync_timeout",
        "3s",
    ]);
    let (opened, status, body) = probe.join().unwrap();
    assert!(
        opened >= Duration::from_millis(2_500),
        "the API answered {opened:?} after the start, before the sync timed out"
    );
    assert_eq!((status, body.as_str()), (200, r#"{"ready":true}"#));
    assert!(server
        .stderr()
        .iter()
        .any(|l| l.contains("initial sync incomplete after sync_timeout (3s)")));
    drop(silent);
}

#[test]
fn five_nodes_with_static_peers_replicate_survive_a_crash_and_see_a_restart_as_leave_and_join() {
    // Every node gets the same --peers list, its own address included (dropped on the hello).
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let peers = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let start = |port: u16| {
        let port = port.to_string();
        Server::start(&[
            "--replication",
            "--replication_bind",
            "127.0.0.1",
            "--replication_port",
            &port,
            "--cluster_dir",
            "",
            "--peers",
            &peers,
            "--sync_timeout",
            "10s",
        ])
    };
    let mut nodes: Vec<Server> = ports.iter().map(|p| start(*p)).collect();
    for node in &nodes {
        assert!(
            wait_until(PROPAGATION * 2, || cluster_size(node) == 5),
            "{}",
            uptime(node)
        );
    }
    let mut made: Vec<String> = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for i in 0..10 {
            made.push(register(
                node,
                "mesh",
                &format!("10.0.12.{}:80", n * 10 + i),
                "",
            ));
        }
    }
    made.sort();
    for node in &nodes {
        assert!(wait_until(PROPAGATION, || ids(node, "mesh") == made));
    }
    let old_id = uptime(&nodes[4])["CLUSTER"]["properties"]["self"].clone();
    nodes[4].signal(libc::SIGKILL);
    nodes[4].wait_exit(Duration::from_secs(5));
    // Changes while it is down, on several survivors.
    for i in 0..10 {
        made.push(register(
            &nodes[i % 4],
            "mesh",
            &format!("10.0.13.{i}:80"),
            "",
        ));
    }
    for id in made.drain(..5).collect::<Vec<_>>() {
        assert_eq!(deregister(&nodes[3], &id), 200);
    }
    made.sort();
    for node in &nodes[..4] {
        assert!(wait_until(PROPAGATION, || ids(node, "mesh") == made));
    }
    // A restart on the same address: a new member, which holds everything when its API opens,
    // and the old id leaves every member set without waiting 30 s.
    nodes[4] = start(ports[4]);
    assert_eq!(ids(&nodes[4], "mesh"), made);
    let new_id = uptime(&nodes[4])["CLUSTER"]["properties"]["self"].clone();
    assert_ne!(new_id, old_id);
    for node in &nodes {
        assert!(
            wait_until(PROPAGATION * 2, || {
                let cluster = uptime(node)["CLUSTER"]["properties"].clone();
                cluster["size"] == 5
                    && cluster["members"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|m| m["id"] != old_id)
            }),
            "{}",
            uptime(node)
        );
    }
}

#[test]
fn five_nodes_repair_a_status_change_and_a_deregistration_a_stopped_member_missed() {
    // W6: the original never resent what a peer missed; a status change diverged for ever.
    let dir = ClusterDir::new("five");
    let nodes: Vec<Server> = (0..5).map(|_| node(&dir, &[]).0).collect();
    for node in &nodes {
        assert!(wait_until(PROPAGATION * 2, || cluster_size(node) == 5));
    }
    let kept = register(&nodes[0], "five", "10.0.14.1:80", "");
    let gone = register(&nodes[1], "five", "10.0.14.2:80", "");
    for node in &nodes {
        assert!(wait_until(PROPAGATION, || ids(node, "five").len() == 2));
    }
    let stopped_id = uptime(&nodes[4])["CLUSTER"]["properties"]["self"].clone();
    nodes[4].signal(libc::SIGSTOP);
    // Once every other node has closed its link (5 s without a line), nothing sent later can
    // reach it but a repair.
    for node in &nodes[..4] {
        assert!(wait_until(Duration::from_secs(10), || {
            uptime(node)["REPLICATION"]["properties"]["peers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["id"] == stopped_id && p["connected"] == false)
        }));
    }
    // While it is cut off: a status change (a re-registration on the Amalgam8 API), a
    // deregistration and a registration, on three different nodes.
    let again = register(
        &nodes[2],
        "five",
        "10.0.14.1:80",
        r#""status":"OUT_OF_SERVICE""#,
    );
    assert_eq!(again, kept);
    assert_eq!(deregister(&nodes[3], &gone), 200);
    let new = register(&nodes[0], "five", "10.0.14.3:80", "");
    let mut expected = vec![kept.clone(), new];
    expected.sort();
    let status_of = |node: &Server| {
        node.get(&format!("/api/v1/instances?id={kept}")).json()["instances"][0]["status"].clone()
    };
    for node in &nodes[..4] {
        assert!(wait_until(PROPAGATION, || ids(node, "five") == expected
            && status_of(node) == "OUT_OF_SERVICE"));
    }
    nodes[4].signal(libc::SIGCONT);
    // The contract gives it 15 s to converge once it resumes.
    assert!(
        wait_until(Duration::from_secs(15), || ids(&nodes[4], "five")
            == expected
            && status_of(&nodes[4]) == "OUT_OF_SERVICE"),
        "{:?} {}",
        ids(&nodes[4], "five"),
        status_of(&nodes[4])
    );
    // /uptime: members sorted by id with exactly their id and address; every peer with the six
    // keys, sorted by address; the repairs it received are counted.
    let health = uptime(&nodes[4]);
    let members = health["CLUSTER"]["properties"]["members"]
        .as_array()
        .unwrap();
    let member_ids: Vec<&str> = members.iter().map(|m| m["id"].as_str().unwrap()).collect();
    let mut sorted = member_ids.clone();
    sorted.sort();
    assert_eq!((member_ids.len(), &member_ids), (5, &sorted), "{health}");
    assert!(members.iter().all(|m| m.as_object().unwrap().len() == 2));
    let peers = health["REPLICATION"]["properties"]["peers"]
        .as_array()
        .unwrap();
    let addresses: Vec<&str> = peers
        .iter()
        .map(|p| p["address"].as_str().unwrap())
        .collect();
    let mut sorted = addresses.clone();
    sorted.sort();
    assert_eq!((addresses.len(), &addresses), (4, &sorted), "{health}");
    for peer in peers {
        let mut keys: Vec<&str> = peer
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "address",
                "connected",
                "id",
                "last_seen",
                "queue",
                "repairs"
            ]
        );
        assert!(peer["last_seen"].as_str().unwrap().ends_with('Z'));
    }
    let repairs: u64 = peers.iter().map(|p| p["repairs"].as_u64().unwrap()).sum();
    assert!(
        repairs >= 3,
        "the resumed node counts what repairs changed: {health}"
    );
}

#[test]
fn a_copy_received_by_the_initial_sync_expires_with_the_original() {
    // W4: the original's synced copy got a fresh renewal time, and outlived the original by up
    // to a TTL. Here the lease travels as the time it has left.
    let dir = ClusterDir::new("sync-expiry");
    let ttl_args = ["--min_ttl", "1s", "--default_ttl", "6s"];
    let (a, _) = node(&dir, &ttl_args);
    let id = register(&a, "fading", "10.0.15.1:80", r#""ttl":6"#);
    std::thread::sleep(Duration::from_secs(4));
    let (b, _) = node(&dir, &ttl_args);
    assert_eq!(ids(&b, "fading"), std::slice::from_ref(&id), "synced");
    assert!(wait_until(Duration::from_secs(8), || ids(&a, "fading").is_empty()));
    let a_gone = Instant::now();
    assert!(wait_until(Duration::from_secs(8), || ids(&b, "fading").is_empty()));
    assert!(
        a_gone.elapsed() < Duration::from_millis(1_500),
        "the synced copy outlived the original by {:?}",
        a_gone.elapsed()
    );
}

#[test]
fn redials_back_off_at_most_five_seconds_so_a_late_peer_is_linked_quickly() {
    // W8: the original doubled its retry delay without a cap (3, 6, 12, 24 s...): a peer that
    // came up 25 s late waited some 20 s more. The cap is 5 s (plus 20 % jitter).
    let late_port = free_port();
    let peer = format!("127.0.0.1:{late_port}");
    let own_port = free_port().to_string();
    let early = Server::start(&[
        "--replication",
        "--replication_port",
        &own_port,
        "--cluster_dir",
        "",
        "--peers",
        &peer,
        "--sync_timeout",
        "1s",
    ]);
    let id = register(&early, "early", "10.0.16.1:80", "");
    std::thread::sleep(Duration::from_secs(25));
    // The late node knows no peer: only the early node's redial can link them.
    let late_port = late_port.to_string();
    let late = Server::start(&[
        "--replication",
        "--replication_port",
        &late_port,
        "--cluster_dir",
        "",
    ]);
    let up = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || ids(&late, "early")
            == [id.clone()]),
        "not linked within 10 s of the late peer's start"
    );
    assert!(up.elapsed() < Duration::from_secs(8), "{:?}", up.elapsed());
}

#[test]
fn snapshots_are_served_while_namespaces_come_and_go() {
    // W9: the original could crash serving a sync while a request created a namespace.
    let dir = ClusterDir::new("sync-namespaces");
    let trusted = ["--auth_mode", "trusted"];
    let (a, _) = node(&dir, &trusted);
    for tenant in 0..50 {
        for i in 0..20 {
            let r = a.post_json_as(
                &format!("tenant-{tenant}"),
                "/api/v1/instances",
                &registration("svc", &format!("10.0.17.{i}:80"), ""),
            );
            assert_eq!(r.status, 201);
        }
    }
    let churning = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut round = 0;
            while churning.load(std::sync::atomic::Ordering::Relaxed) {
                round += 1;
                let token = format!("churn-{round}");
                let r = a.post_json_as(&token, "/api/v1/instances", &registration("c", "h:1", ""));
                let id = r.json()["id"].as_str().unwrap().to_string();
                let auth = format!("Bearer {token}");
                a.request(
                    "DELETE",
                    &format!("/api/v1/instances/{id}"),
                    &[("Authorization", &auth)],
                    None,
                );
            }
        });
        let joined: Vec<Server> = (0..3).map(|_| node(&dir, &trusted).0).collect();
        churning.store(false, std::sync::atomic::Ordering::Relaxed);
        for node in &joined {
            for tenant in [0, 25, 49] {
                let listing = node
                    .request(
                        "GET",
                        "/api/v1/services/svc",
                        &[("Authorization", &format!("Bearer tenant-{tenant}"))],
                        None,
                    )
                    .json();
                assert_eq!(instance_count(&listing), 20, "tenant-{tenant}");
            }
        }
    });
    let mut a = a;
    assert!(a.is_running());
}

const EUREKA: &str = "/eureka/v2";

fn eureka_json(server: &Server, path: &str) -> serde_json::Value {
    let response = server.request(
        "GET",
        &format!("{EUREKA}{path}"),
        &[("Accept", "application/json")],
        None,
    );
    assert_eq!(response.status, 200, "{path}: {}", response.text());
    response.json()
}

/// (instanceId, actionType, status) of every instance of a delta, sorted.
fn delta_actions(server: &Server) -> Vec<(String, String, String)> {
    let delta = eureka_json(server, "/apps/delta");
    let mut out: Vec<(String, String, String)> = delta["applications"]["application"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|app| app["instance"].as_array().unwrap().clone())
        .map(|i| {
            (
                i["instanceId"].as_str().unwrap().to_string(),
                i["actionType"].as_str().unwrap().to_string(),
                i["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

fn hash_code(server: &Server) -> serde_json::Value {
    eureka_json(server, "/apps")["applications"]["apps__hashcode"].clone()
}

/// The fields of an instance that every node must show alike (not the per-node timestamps).
fn eureka_fields(server: &Server, id: &str) -> serde_json::Value {
    let apps = eureka_json(server, "/apps/ORDERS");
    let instance = apps["application"]["instance"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instanceId"] == id)
        .unwrap_or_else(|| panic!("no {id} in {apps}"))
        .clone();
    let mut fields = serde_json::Map::new();
    for key in [
        "instanceId",
        "hostName",
        "app",
        "ipAddr",
        "status",
        "port",
        "securePort",
        "vipAddress",
        "metadata",
        "dataCenterInfo",
    ] {
        fields.insert(key.into(), instance[key].clone());
    }
    fields.insert(
        "registrationTimestamp".into(),
        instance["leaseInfo"]["registrationTimestamp"].clone(),
    );
    fields.insert(
        "durationInSecs".into(),
        instance["leaseInfo"]["durationInSecs"].clone(),
    );
    serde_json::Value::Object(fields)
}

#[test]
fn eureka_registrations_replicate_in_json_and_xml_with_equal_deltas_and_hash_codes() {
    let (_dir, nodes) = three_nodes("eureka");
    // Each node keeps a Eureka change log for a namespace once a Eureka client has asked.
    for node in &nodes {
        assert!(delta_actions(node).is_empty());
    }
    let json_body = serde_json::json!({"instance":{"instanceId":"orders-1","hostName":"orders-1.local","app":"ORDERS","ipAddr":"10.0.18.1","status":"UP","port":{"$":8080,"@enabled":"true"},"securePort":{"$":443,"@enabled":"false"},"vipAddress":"orders","dataCenterInfo":{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"},"leaseInfo":{"renewalIntervalInSecs":30,"durationInSecs":90},"metadata":{"zone":"a"}}});
    let registered = nodes[0].post_json(&format!("{EUREKA}/apps/ORDERS"), &json_body.to_string());
    assert_eq!(registered.status, 204, "{}", registered.text());
    let xml = r#"<instance><instanceId>orders-2</instanceId><hostName>orders-2.local</hostName><app>ORDERS</app><ipAddr>10.0.18.2</ipAddr><status>UP</status><port enabled="true">8080</port><securePort enabled="false">443</securePort><dataCenterInfo class="com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"><name>MyOwn</name></dataCenterInfo><leaseInfo><renewalIntervalInSecs>30</renewalIntervalInSecs><durationInSecs>90</durationInSecs></leaseInfo><metadata><zone>b</zone></metadata><vipAddress>orders</vipAddress></instance>"#;
    let registered = nodes[1].request(
        "POST",
        &format!("{EUREKA}/apps/ORDERS"),
        &[("Content-Type", "application/xml")],
        Some(xml),
    );
    assert_eq!(registered.status, 204, "{}", registered.text());
    let added = vec![
        (
            "orders-1".to_string(),
            "ADDED".to_string(),
            "UP".to_string(),
        ),
        (
            "orders-2".to_string(),
            "ADDED".to_string(),
            "UP".to_string(),
        ),
    ];
    for node in &nodes {
        assert!(
            wait_until(PROPAGATION, || delta_actions(node) == added),
            "{:?}",
            delta_actions(node)
        );
    }
    // Both instances, with the same fields, on every node, in JSON and XML.
    for id in ["orders-1", "orders-2"] {
        let origin = eureka_fields(&nodes[0], id);
        for node in &nodes[1..] {
            assert_eq!(eureka_fields(node, id), origin);
        }
    }
    for node in &nodes {
        let xml = node.get(&format!("{EUREKA}/apps")).text();
        assert!(
            xml.contains("<instanceId>orders-1</instanceId>")
                && xml.contains("<instanceId>orders-2</instanceId>"),
            "{xml}"
        );
        assert!(
            xml.contains("<apps__hashcode>UP_2_</apps__hashcode>"),
            "{xml}"
        );
        // The Amalgam8 API lists them under the same ids.
        assert_eq!(ids(node, "ORDERS"), ["ORDERS:orders-1", "ORDERS:orders-2"]);
    }
    // A metadata update replicates like any change (the full new record).
    let updated = nodes[1].request(
        "PUT",
        &format!("{EUREKA}/apps/ORDERS/orders-1/metadata?zone=c"),
        &[],
        None,
    );
    assert_eq!(updated.status, 200);
    for node in &nodes {
        assert!(wait_until(PROPAGATION, || eureka_fields(node, "orders-1")
            ["metadata"]
            == serde_json::json!({"zone": "c"})));
    }
    // A status change on a third node, and a cancel on the first.
    let changed = nodes[2].request(
        "PUT",
        &format!("{EUREKA}/apps/ORDERS/orders-1/status?value=OUT_OF_SERVICE"),
        &[],
        None,
    );
    assert_eq!(changed.status, 200);
    let cancelled = nodes[0].request(
        "DELETE",
        &format!("{EUREKA}/apps/ORDERS/orders-2"),
        &[],
        None,
    );
    assert_eq!(cancelled.status, 200);
    let after = vec![
        (
            "orders-1".to_string(),
            "MODIFIED".to_string(),
            "OUT_OF_SERVICE".to_string(),
        ),
        (
            "orders-2".to_string(),
            "DELETED".to_string(),
            "UP".to_string(),
        ),
    ];
    for node in &nodes {
        assert!(
            wait_until(PROPAGATION, || delta_actions(node) == after),
            "{:?}",
            delta_actions(node)
        );
        assert_eq!(hash_code(node), "OUT_OF_SERVICE_1_");
        let renewed = node.request("PUT", &format!("{EUREKA}/apps/ORDERS/orders-2"), &[], None);
        assert_eq!(
            renewed.status, 404,
            "a cancelled instance is unknown everywhere"
        );
    }
}

#[test]
fn with_sync_timeout_0_the_api_opens_at_once() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = format!("127.0.0.1:{}", silent.local_addr().unwrap().port());
    let began = Instant::now();
    let port = free_port().to_string();
    let server = Server::start(&[
        "--replication",
        "--replication_port",
        &port,
        "--cluster_dir",
        "",
        "--peers",
        &peer,
        "--sync_timeout",
        "0s",
    ]);
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(server.get("/ready").status, 200);
}

#[test]
fn member_files_are_one_json_line_rewritten_every_7_s_and_recreated_if_deleted() {
    let dir = ClusterDir::new("files");
    let (server, port) = node(&dir, &[]);
    let me = uptime(&server)["CLUSTER"]["properties"]["self"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(member_files(&dir.0), std::slice::from_ref(&me));
    let read = || -> serde_json::Value {
        let text = std::fs::read_to_string(dir.0.join(&me)).unwrap_or_default();
        assert!(
            text.is_empty() || (text.ends_with('\n') && text.lines().count() == 1),
            "{text:?}"
        );
        serde_json::from_str(text.trim_end()).unwrap_or(serde_json::Value::Null)
    };
    let first = read();
    assert_eq!(first["id"], me.as_str());
    assert_eq!(first["address"], format!("127.0.0.1:{port}"));
    assert!(first["started"].as_str().unwrap().ends_with('Z'));
    let seq = first["seq"].as_u64().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || read()["seq"].as_u64()
            == Some(seq + 1)),
        "rewritten within 7 s with seq + 1"
    );
    std::fs::remove_file(dir.0.join(&me)).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || read()["id"] == me.as_str()),
        "recreated at the next rewrite"
    );
}

#[test]
fn a_node_linked_to_only_some_members_gets_the_others_changes_through_repair() {
    // a and c know only b, and b dials no one: b links to both, a and c never link. Live
    // changes are not forwarded; b's digest repair with c brings c what a made.
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let start = |own: u16, peer: Option<u16>| {
        let own = own.to_string();
        let peer = peer.map(|p| format!("127.0.0.1:{p}"));
        let mut args = vec![
            "--replication",
            "--replication_bind",
            "127.0.0.1",
            "--replication_port",
            &own,
            "--cluster_dir",
            "",
            "--sync_timeout",
            "2s",
        ];
        if let Some(peer) = &peer {
            args.extend(["--peers", peer]);
        }
        Server::start(&args)
    };
    let b = start(ports[1], None);
    let a = start(ports[0], Some(ports[1]));
    let c = start(ports[2], Some(ports[1]));
    assert!(wait_until(PROPAGATION, || cluster_size(&b) == 3));
    let id = register(&a, "far", "10.0.19.1:80", "");
    assert!(wait_until(PROPAGATION, || ids(&b, "far") == [id.clone()]));
    assert!(
        wait_until(Duration::from_secs(25), || ids(&c, "far") == [id.clone()]),
        "c gets a's change through b within a few repair intervals"
    );
    assert_eq!(cluster_size(&a), 2, "a never linked to c");
}

#[test]
fn namespace_capacity_counts_the_instances_that_arrived_by_replication() {
    let dir = ClusterDir::new("capacity");
    let capacity = ["--namespace_capacity", "3"];
    let (a, _) = node(&dir, &capacity);
    let (b, _) = node(&dir, &capacity);
    assert!(wait_until(PROPAGATION, || cluster_size(&a) == 2));
    let made: Vec<String> = (0..3)
        .map(|i| register(&a, "full", &format!("10.0.20.{i}:80"), ""))
        .collect();
    assert!(wait_until(PROPAGATION, || ids(&b, "full").len() == 3));
    let refused = b.post_json(
        "/api/v1/instances",
        &registration("full", "10.0.20.9:80", ""),
    );
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(deregister(&a, &made[0]), 200);
    assert!(wait_until(PROPAGATION, || ids(&b, "full").len() == 2));
    register(&b, "full", "10.0.20.9:80", "");
    assert!(wait_until(PROPAGATION, || ids(&a, "full").len() == 3));
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

#[test]
fn a_watcher_on_one_node_is_woken_by_a_change_made_on_another_and_not_by_its_heartbeats() {
    let dir = ClusterDir::new("watch");
    let (first, _) = node(&dir, &[]);
    let (second, _) = node(&dir, &[]);
    for server in [&first, &second] {
        assert!(wait_until(PROPAGATION, || cluster_size(server) == 2));
    }
    let id = register(&first, "orders", "10.0.0.1:80", "");
    assert!(wait_until(PROPAGATION, || ids(&second, "orders") == [id.clone()]));
    let index_on_second = |path: &str| -> u64 {
        let r = second.get(path);
        r.header("x-a8-index").unwrap().parse().unwrap()
    };
    let before = index_on_second("/api/v1/services/orders");
    std::thread::scope(|scope| {
        // Heartbeats on the first node replicate as leases: the second node's watcher sleeps
        // through them until its wait passes, and answers the same index.
        let watcher = scope.spawn(|| {
            let started = Instant::now();
            let r = second.get(&format!("/api/v1/services/orders?index={before}&wait=2s"));
            (r, started.elapsed())
        });
        for _ in 0..8 {
            assert_eq!(heartbeat(&first, &id), 200);
            std::thread::sleep(Duration::from_millis(150));
        }
        let (r, waited) = watcher.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(waited >= Duration::from_secs(2), "woken after {waited:?}");
        assert_eq!(r.header("x-a8-index"), Some(before.to_string().as_str()));
    });
    std::thread::scope(|scope| {
        let watcher =
            scope.spawn(|| second.get(&format!("/api/v1/services/orders?index={before}&wait=60s")));
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let added = register(&first, "orders", "10.0.0.2:80", "");
        let r = watcher.join().unwrap();
        assert!(
            started.elapsed() < PROPAGATION,
            "woken {:?} after the change",
            started.elapsed()
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let woken: u64 = r.header("x-a8-index").unwrap().parse().unwrap();
        assert!(woken > before, "{woken} after {before}");
        let listed = r.json()["instances"].to_string();
        assert!(listed.contains(&format!("\"{added}\"")), "{listed}");
    });
}
