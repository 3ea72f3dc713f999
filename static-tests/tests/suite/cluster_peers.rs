//! Clustered mode against peers that are not a8registry nodes: a test speaks the replication line
//! protocol (docs/replication-protocol.md) over a real socket, as a hostile or broken peer would,
//! and watches what a real node sends, what it applies, and that it keeps serving its clients and
//! its real peers.

use super::cluster::*;
use a8registry_static_tests::*;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A hello from a fake member without a secret.
fn hello(member: &str) -> String {
    format!("HELLO a8registry-replication 1 {member} 127.0.0.1:1 -\n")
}

fn dial(port: u16) -> TcpStream {
    let socket = TcpStream::connect(("127.0.0.1", port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    socket
        .set_write_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    socket
}

/// Reads until the node closes the connection; the time it took, or `None` if it was still
/// open after `timeout`. The bytes read are returned too.
fn until_closed(socket: &mut TcpStream, timeout: Duration) -> (Option<Duration>, Vec<u8>) {
    let began = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while began.elapsed() < timeout {
        match socket.read(&mut buffer) {
            Ok(0) => return (Some(began.elapsed()), received),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (Some(began.elapsed()), received),
        }
    }
    (None, received)
}

fn own_id(server: &Server) -> String {
    uptime(server)["CLUSTER"]["properties"]["self"]
        .as_str()
        .unwrap()
        .to_string()
}

fn rss_kib(server: &Server) -> u64 {
    server.status_kib("VmRSS")
}

/// Two linked nodes of one directory.
fn pair(name: &str) -> (ClusterDir, Server, u16, Server) {
    let dir = ClusterDir::new(name);
    let (a, port) = node(&dir, &[]);
    let (b, _) = node(&dir, &[]);
    assert!(wait_until(PROPAGATION, || cluster_size(&a) == 2
        && cluster_size(&b) == 2));
    (dir, a, port, b)
}

/// The real peers still exchange changes both ways.
fn still_replicating(a: &Server, b: &Server, service: &str) {
    let from_a = register(a, service, "10.1.0.1:80", "");
    let from_b = register(b, service, "10.1.0.2:80", "");
    let mut both = vec![from_a, from_b];
    both.sort();
    for node in [a, b] {
        assert!(
            wait_until(PROPAGATION, || ids(node, service) == both),
            "{service}: the real peers go on replicating"
        );
    }
}

#[test]
fn silent_and_dripping_connections_are_dropped_at_the_handshake_deadline() {
    // W3 and W2 from the listener's side: a connection that never completes its hello holds a
    // thread and a buffer; it must go at the handshake deadline (5 s), however slowly it drips.
    let (_dir, a, port, b) = pair("peers-silent");
    let began = Instant::now();
    let mut silent: Vec<TcpStream> = (0..10).map(|_| dial(port)).collect();
    let mut dripping = dial(port);
    let drip = {
        let mut socket = dripping.try_clone().unwrap();
        std::thread::spawn(move || {
            // One byte every 300 ms, never a newline: each byte alone would reset a per-read
            // timeout for ever.
            for byte in b"HELLO a8registry-replication 1 00000000000000d1 127.0.0.1:1 -".repeat(2) {
                if socket.write_all(&[byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        })
    };
    still_replicating(&a, &b, "while-silent");
    for socket in &mut silent {
        let (closed, received) = until_closed(socket, Duration::from_secs(15));
        let closed = closed.map(|_| began.elapsed());
        assert!(
            closed.is_some_and(|t| t < Duration::from_secs(10)),
            "a silent connection is closed at the handshake deadline: {closed:?}"
        );
        let text = String::from_utf8_lossy(&received);
        assert!(
            text.starts_with("HELLO a8registry-replication 1 ") && text.lines().count() == 1,
            "only the node's hello: {text:?}"
        );
    }
    let (closed, _) = until_closed(&mut dripping, Duration::from_secs(15));
    let closed = closed.map(|_| began.elapsed());
    assert!(
        closed.is_some_and(|t| t < Duration::from_secs(10)),
        "a dripping hello is dropped at the handshake deadline: {closed:?}"
    );
    let _ = drip.join();
    assert!(wait_until(Duration::from_secs(2), || a
        .stderr()
        .iter()
        .any(
            |l| l.contains("replication link refused") && l.contains("nothing complete")
        )));
}

#[test]
fn oversized_lines_close_the_link_at_their_limit_and_memory_stays_bounded() {
    let (_dir, a, port, b) = pair("peers-oversized");
    let before = rss_kib(&a);
    // Before any hello, a line may be 1 KiB: forty connections sending 512 KiB each without a
    // newline are cut at once, and the node does not hold their bytes.
    let junk = vec![b'x'; 512 * 1024];
    let mut sockets: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut socket = dial(port);
            let _ = socket.write_all(&junk);
            socket
        })
        .collect();
    let grown = rss_kib(&a).saturating_sub(before);
    for socket in &mut sockets {
        let (closed, _) = until_closed(socket, Duration::from_secs(10));
        assert!(
            closed.is_some_and(|t| t < Duration::from_secs(3)),
            "cut at the handshake's line limit, not at a deadline: {closed:?}"
        );
    }
    assert!(
        grown < 12 * 1024,
        "forty oversized hellos grew the node by {grown} KiB"
    );
    // After the hello a line may be 4 MiB (the largest record fits): 5 MiB without a newline
    // closes the link.
    let mut socket = dial(port);
    socket
        .write_all(hello("00000000000000d2").as_bytes())
        .unwrap();
    let _ = socket.write_all(&vec![b'y'; 5 * 1024 * 1024]);
    let (closed, _) = until_closed(&mut socket, Duration::from_secs(10));
    assert!(closed.is_some(), "a line over 4 MiB closes the link");
    assert!(wait_until(Duration::from_secs(2), || a
        .stderr()
        .iter()
        .any(|l| l.contains("a line over 4194304 bytes"))));
    still_replicating(&a, &b, "after-oversized");
    let grown = rss_kib(&a).saturating_sub(before);
    assert!(grown < 64 * 1024, "the node grew by {grown} KiB");
}

#[test]
fn version_skew_our_own_id_and_malformed_lines_close_the_link() {
    let (_dir, a, port, b) = pair("peers-malformed");
    let me = own_id(&a);
    let text_case =
        |line: String, logged: &'static str, accepted: bool| (line.into_bytes(), logged, accepted);
    let mut non_utf8 = hello("00000000000000d6").into_bytes();
    non_utf8.extend_from_slice(b"\xff\xfe\x00PING\n");
    let cases: Vec<(Vec<u8>, &str, bool)> = vec![
        text_case(
            "HELLO a8registry-replication 2 00000000000000d3 127.0.0.1:1 -\n".into(),
            "unsupported protocol version 2",
            false,
        ),
        text_case(
            "HELLO sse-replication 1 00000000000000d4 127.0.0.1:1 -\n".into(),
            "not the a8registry-replication protocol",
            false,
        ),
        text_case("GET /v1/sync HTTP/1.1\r\n\r\n".into(), "no hello", false),
        text_case(
            "HELLO a8registry-replication 1 00000000000000d8 ::1:6100 -\n".into(),
            "not an address",
            false,
        ),
        text_case(hello(&me), "the peer claims this node's member id", false),
        text_case(
            format!("{}REC {{\"ns\":\"default\",\"live\":\n", hello("00000000000000d5")),
            "malformed line",
            true,
        ),
        (non_utf8, "not UTF-8", true),
        text_case(
            format!(
                "{}REC {}\n",
                hello("00000000000000d9"),
                serde_json::json!({"ns":"default","live":{"id":"aaaaaaaaaaaaaaaa","service":"forever","endpoint_type":"tcp","endpoint":"6.6.6.6:1","status":"UP","ttl_ms":u64::MAX,"registered":0,"updated":0,"service_up":0,"modified":false,"dirty_ms":0,"renewal_secs":30,"version":"1.00000000000000d9","registration":"1.00000000000000d9"},"remaining_ms":u64::MAX})
            ),
            "beyond any TTL",
            true,
        ),
        text_case(
            format!(
                "{}LEASE {{\"ns\":\"{}\",\"id\":\"x\",\"registration\":\"1.0000000000000001\",\"remaining_ms\":1}}\n",
                hello("00000000000000d7"),
                "n".repeat(300)
            ),
            "not a namespace name",
            true,
        ),
    ];
    for (sent, logged, accepted) in &cases {
        let shown = String::from_utf8_lossy(sent);
        let mut socket = dial(port);
        socket.write_all(sent).unwrap();
        let (closed, received) = until_closed(&mut socket, Duration::from_secs(10));
        assert!(closed.is_some(), "{shown:?} closes the link");
        let text = String::from_utf8_lossy(&received);
        if !accepted {
            // Without an accepted hello nothing but the node's hello comes back.
            assert_eq!(text.lines().count(), 1, "{shown:?}: {text:?}");
        }
        if !logged.is_empty() {
            assert!(
                wait_until(Duration::from_secs(2), || a
                    .stderr()
                    .iter()
                    .any(|l| l.contains(logged))),
                "{shown:?} is logged with {logged:?}"
            );
        }
    }
    // A peer claiming the node's own id is not a peer (the peers that sent a valid hello
    // count as members for 30 s after their link went down, as the contract says).
    let health = uptime(&a);
    let peers = health["REPLICATION"]["properties"]["peers"]
        .as_array()
        .unwrap();
    assert!(peers.iter().all(|p| p["id"] != me.as_str()), "{health}");
    assert!(
        peers.iter().all(|p| p["id"] != "00000000000000d3"),
        "{health}"
    );
    // The record with a TTL no deadline can hold was not applied: a heartbeat to it cannot
    // overflow a deadline (a panic would abort the process).
    assert_eq!(heartbeat(&a, "aaaaaaaaaaaaaaaa"), 410);
    still_replicating(&a, &b, "after-malformed");
    let mut a = a;
    assert!(a.is_running(), "no panic");
}

#[test]
fn a_flooding_peer_costs_only_its_own_link() {
    let (_dir, a, port, b) = pair("peers-flood");
    for i in 0..1000 {
        register(&a, "stock", &format!("10.2.{}.{}:80", i / 250, i % 250), "");
    }
    assert!(wait_until(PROPAGATION, || ids(&b, "stock").len() == 1000));
    let before = rss_kib(&a);
    // A peer that asks for snapshots, digests' answers and repairs without end, and never
    // reads what it asked for.
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flooder = {
        let flooding = flooding.clone();
        std::thread::spawn(move || {
            let mut socket = dial(port);
            socket
                .write_all(hello("00000000000000f1").as_bytes())
                .unwrap();
            let all_buckets: Vec<u32> = (0..256).collect();
            let mut round = 0u64;
            let mut sent = 0usize;
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                round += 1;
                let chunk = format!(
                    "SYNC\nDIGEST {{\"ns\":\"invented-{round}\",\"buckets\":[[1,1,\"00000000000000ff\"]]}}\nDIGESTEND\nDETAIL {{\"ns\":\"default\",\"buckets\":{all_buckets:?},\"entries\":[[\"{round:016x}\",\"1.00000000000000f1\"]]}}\nDETAILEND\nPING\n"
                );
                match socket.write_all(chunk.repeat(50).as_bytes()) {
                    Ok(()) => sent += chunk.len() * 50,
                    Err(_) => break,
                }
            }
            sent
        })
    };
    // Clients and the real peer are served as before while it floods.
    let mut slowest = Duration::ZERO;
    let mut made = Vec::new();
    for i in 0..200 {
        let began = Instant::now();
        made.push(register(&a, "during-flood", &format!("10.3.0.{i}:80"), ""));
        slowest = slowest.max(began.elapsed());
    }
    made.sort();
    assert!(
        wait_until(PROPAGATION, || ids(&b, "during-flood") == made),
        "the real peer still gets every change"
    );
    std::thread::sleep(Duration::from_secs(3));
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let sent = flooder.join().unwrap();
    let grown = rss_kib(&a).saturating_sub(before);
    eprintln!("flood: {sent} bytes sent; slowest registration {slowest:?}; node grew {grown} KiB");
    assert!(sent > 1_000_000, "the flood was a flood: {sent} bytes");
    assert!(
        slowest < Duration::from_secs(1),
        "a registration took {slowest:?} during the flood"
    );
    assert!(grown < 100 * 1024, "the node grew by {grown} KiB");
    assert_eq!(ids(&a, "stock").len(), 1000);
}

#[test]
fn leases_reach_a_peer_at_most_once_a_second_per_instance() {
    // W14: every heartbeat of the original was one event to every peer; leases are coalesced.
    let dir = ClusterDir::new("peers-leases");
    let (a, port) = node(&dir, &[]);
    let id = register(&a, "beating", "10.4.0.1:80", "");
    let mut socket = dial(port);
    socket
        .write_all(hello("00000000000000f2").as_bytes())
        .unwrap();
    let reader = {
        let socket = socket.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut reader = BufReader::new(socket);
            let began = Instant::now();
            while began.elapsed() < Duration::from_millis(3500) {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => lines.push(line),
                }
            }
            lines
        })
    };
    let began = Instant::now();
    let mut beats = 0;
    while began.elapsed() < Duration::from_secs(3) {
        assert_eq!(heartbeat(&a, &id), 200);
        beats += 1;
        let _ = socket.write_all(b"PING\n");
        std::thread::sleep(Duration::from_millis(30));
    }
    let lines = reader.join().unwrap();
    let leases: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("LEASE ") && l.contains(&id))
        .collect();
    assert!(beats > 30, "{beats} heartbeats");
    assert!(
        (1..=5).contains(&leases.len()),
        "{beats} heartbeats in 3 s gave {} lease lines: {leases:?}",
        leases.len()
    );
    let last: serde_json::Value = serde_json::from_str(&leases.last().unwrap()[6..]).unwrap();
    assert!(last["remaining_ms"].as_u64().unwrap() > 25_000, "{last}");
}

#[test]
fn a_member_file_pointing_at_an_impostor_gets_only_a_hello_and_a_proof() {
    // W21: anyone who can write into the cluster directory makes the nodes dial an address;
    // with a secret, that address learns nothing and can inject nothing.
    let dir = ClusterDir::new("peers-impostor");
    let (a, _) = node(&dir, &["--replication_secret", "right"]);
    let id = register(&a, "private-service", "10.5.0.1:80", "");
    let impostor = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = impostor.local_addr().unwrap();
    std::fs::write(
        dir.0.join("00000000000000ee"),
        format!("{{\"id\":\"00000000000000ee\",\"address\":\"{address}\",\"started\":\"2026-01-01T00:00:00Z\",\"seq\":1}}\n"),
    )
    .unwrap();
    impostor.set_nonblocking(true).unwrap();
    let began = Instant::now();
    let mut socket = loop {
        match impostor.accept() {
            Ok((socket, _)) => break socket,
            Err(_) if began.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("the node never dialed the member file's address: {e}"),
        }
    };
    socket.set_nonblocking(false).unwrap();
    let nonce = "ab".repeat(32);
    socket
        .write_all(
            format!(
                "HELLO a8registry-replication 1 00000000000000ee {address} {nonce}\nPROOF {}\n",
                "00".repeat(32)
            )
            .as_bytes(),
        )
        .unwrap();
    let record = serde_json::json!({"ns":"default","live":{"id":"feedfeedfeedfeee","service":"injected","endpoint_type":"tcp","endpoint":"6.6.6.6:1","status":"UP","ttl_ms":30000,"registered":0,"updated":0,"service_up":0,"modified":false,"dirty_ms":0,"renewal_secs":30,"version":"ffffffffffff.00000000000000ee","registration":"ffffffffffff.00000000000000ee"},"remaining_ms":30000});
    let _ = socket.write_all(format!("REC {record}\n").as_bytes());
    let (closed, received) = until_closed(&mut socket, Duration::from_secs(10));
    assert!(closed.is_some(), "the node closes the impostor's link");
    let text = String::from_utf8_lossy(&received);
    let verbs: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(verbs, ["HELLO", "PROOF"], "{text}");
    assert!(!text.contains("private-service") && !text.contains(&id));
    assert!(
        ids(&a, "injected").is_empty(),
        "nothing it sent was applied"
    );
    assert!(wait_until(Duration::from_secs(2), || a
        .stderr()
        .iter()
        .any(
            |l| l.contains("wrong proof") && l.contains(&address.to_string())
        )));
}
