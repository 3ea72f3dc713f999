//! What one client, or many, can make the server hold: connections, body memory, time, response
//! buffers; and how accept errors are reported. The new limits are set through their environment
//! variables, which a server without them ignores, so that each test fails on such a server by
//! what it measures rather than by refusing to start.

use a8registry_static_tests::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const MIB: u64 = 1024;

#[test]
fn a_connection_over_the_limit_gets_a_json_503_and_is_closed() {
    let server = Server::start_with_env(&[], &[("A8_MAX_CONNECTIONS", "20")]);
    let mut held: Vec<TcpStream> = (0..20).map(|_| server.connect()).collect();
    for conn in &mut held {
        send(conn, "GET", "/", &[], None);
        assert_eq!(read_response(conn, false).unwrap().status, 200);
    }
    // One more: answered at once, before it sends anything, and closed.
    let mut refused = server.connect();
    let r = read_response(&mut refused, false).expect("an answer to the connection over the limit");
    r.assert_error(503, "Too many open connections, retry later");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed_by_server(&mut refused, Duration::from_secs(5)));
    // The ones admitted are unharmed, and a place freed is a place taken.
    for conn in &mut held {
        send(conn, "GET", "/", &[], None);
        assert_eq!(read_response(conn, false).unwrap().status, 200);
    }
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut conn = server.connect();
        send(&mut conn, "GET", "/", &[], None);
        let r = read_response(&mut conn, false).unwrap();
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the freed place was never given");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bodies_sent_before_authentication_share_one_memory_budget() {
    // JWT mode: none of these requests could ever authenticate.
    let server = Server::start_with_env(
        &["--auth_mode", "jwt", "--jwt_secret", "s"],
        &[("A8_MAX_BODY_MEMORY", "16777216")],
    );
    let before = server.status_kib("VmRSS");
    const BODY: usize = 1 << 20;
    let head = format!(
        "POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {BODY}\r\n\r\n"
    );
    let almost_all = vec![b' '; BODY - 1];
    // 200 connections, each holding all of a 1 MiB body but its last byte.
    let mut conns = Vec::new();
    for _ in 0..200 {
        let mut conn = server.connect();
        // A connection refused over the budget is closed under the writer: ignore write errors.
        let _ = conn
            .write_all(head.as_bytes())
            .and_then(|_| conn.write_all(&almost_all));
        conns.push(conn);
    }
    std::thread::sleep(Duration::from_millis(500));
    let grown = server.status_kib("VmRSS").saturating_sub(before);
    let mut refused = 0;
    for conn in &mut conns {
        conn.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        if let Ok(r) = read_response(conn, false) {
            r.assert_error(503, "Too many request bodies in progress, retry later");
            assert_eq!(r.header("connection"), Some("close"));
            refused += 1;
        }
    }
    assert!(
        grown < 64 * MIB,
        "200 bodies of 1 MiB grew RSS by {grown} KiB with a 16 MiB budget"
    );
    assert!(refused >= 150, "only {refused} of 200 bodies were refused");
    // Once they are gone the budget is whole again: a full-size body is read.
    drop(conns);
    std::thread::sleep(Duration::from_millis(300));
    let body = registration("after", "h:1", "");
    let padded = format!("{body}{}", " ".repeat(BODY - body.len()));
    let r = server.request(
        "POST",
        "/api/v1/instances",
        &[("Content-Type", "application/json")],
        Some(&padded),
    );
    r.assert_error(401, "Missing request Authorization header");
}

#[test]
fn a_declared_length_reserves_no_memory() {
    let server = Server::start_with_env(
        &[],
        &[
            ("A8_MAX_BODY_SIZE", "1073741824"),
            ("A8_MAX_BODY_MEMORY", "1073741824"),
        ],
    );
    let before = server.status_kib("VmSize");
    let head = "POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n0123456789";
    let conns: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut conn = server.connect();
            conn.write_all(head.as_bytes()).unwrap();
            conn
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let grown = server.status_kib("VmSize").saturating_sub(before);
    assert!(
        grown < 256 * MIB,
        "four declared bodies of 1 GiB grew the address space by {grown} KiB"
    );
    drop(conns);
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn a_request_trickled_byte_by_byte_is_cut_off_at_its_deadline() {
    let server = Server::start_with_env(&[], &[("A8_REQUEST_TIMEOUT", "2s")]);
    // A body that never ends: one byte every 200 ms, each within the 60 s idle timeout.
    let mut conn = server.connect();
    conn.write_all(
        b"POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n",
    )
    .unwrap();
    let mut writer = conn.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for _ in 0..50 {
            if writer.write_all(b" ").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let started = Instant::now();
    conn.set_read_timeout(Some(Duration::from_secs(8))).unwrap();
    let r = read_response(&mut conn, false).expect("an answer while the body still trickles");
    r.assert_error(408, "Request not received in time");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(closed_by_server(&mut conn, Duration::from_secs(5)));
    trickle.join().unwrap();

    // A head trickled the same way is closed without an answer.
    let mut slow_head = server.connect();
    let mut writer = slow_head.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for byte in b"GET /api/v1/services HTTP/1.1\r\nX-Padding: "
            .iter()
            .chain(&[b'a'; 100])
        {
            if writer.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let started = Instant::now();
    assert!(closed_by_server(&mut slow_head, Duration::from_secs(8)));
    assert!(started.elapsed() < Duration::from_secs(8));
    trickle.join().unwrap();
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn accept_errors_are_logged_at_most_once_a_second() {
    // Few descriptors: the connections below exhaust them, and accept(2) fails with EMFILE.
    let server = Server::start_with_open_files(&[], &[], Some(48));
    let clients: Vec<TcpStream> = (0..80).map(|_| server.connect()).collect();
    let watched = Duration::from_secs(3);
    std::thread::sleep(watched);
    let lines: Vec<String> = server
        .stderr()
        .into_iter()
        .filter(|l| l.contains("accept failed"))
        .collect();
    assert!(!lines.is_empty(), "no accept error was logged");
    assert!(
        lines.len() <= 5,
        "{} accept-error lines in {watched:?}:\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(
        lines
            .iter()
            .any(|l| !l.contains("suppressed_since_last_line=\"0\"")),
        "no line counts the errors left out: {lines:?}"
    );
    // Descriptors freed, the server accepts again.
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut conn = server.connect();
        send(&mut conn, "GET", "/", &[], None);
        if let Ok(r) = read_response(&mut conn, false) {
            if r.status == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the server did not recover");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn idle_connections_keep_no_buffer_of_a_large_response() {
    // The in-memory store on either suite run: what is measured is the connections' buffers,
    // and a shared store's reply buffers would blur the figure.
    let server = Server::start(&["--store", "inmem"]);
    // 20,000 instances, registered over a few pipelined connections.
    let senders: Vec<_> = (0..4)
        .map(|part| {
            let address = server.address;
            std::thread::spawn(move || {
                let mut conn = connect(address);
                let mut batch = String::new();
                for i in 0..5000 {
                    let body = registration(
                        &format!("svc-{}", i % 50),
                        &format!("10.{part}.{}.{}:8080", i / 250, i % 250),
                        "",
                    );
                    batch.push_str(&format!(
                        "POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    ));
                    if i % 500 == 499 {
                        conn.write_all(batch.as_bytes()).unwrap();
                        batch.clear();
                        for _ in 0..500 {
                            assert_eq!(read_response(&mut conn, false).unwrap().status, 201);
                        }
                    }
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    // One listing first, so that what a listing leaves in the allocator is counted in `before`.
    let listing = server.get("/api/v1/instances");
    assert_eq!(instance_count(&listing.json()), 20_000);
    let body_kib = listing.body.len() as u64 / 1024;
    std::thread::sleep(Duration::from_millis(200));
    let before = server.status_kib("VmRSS");
    // 30 keep-alive connections each fetch the (uncached) full listing once, then stay idle.
    let mut idle = Vec::new();
    for _ in 0..30 {
        let mut conn = server.connect();
        send(&mut conn, "GET", "/api/v1/instances", &[], None);
        let r = read_response(&mut conn, false).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len() as u64 / 1024, body_kib);
        idle.push(conn);
    }
    std::thread::sleep(Duration::from_millis(200));
    let grown = server.status_kib("VmRSS").saturating_sub(before);
    assert!(
        grown < 6 * body_kib,
        "30 idle connections that each fetched a {body_kib} KiB listing grew RSS by {grown} KiB"
    );
    // They are still open and usable.
    for conn in &mut idle {
        send(conn, "GET", "/", &[], None);
        assert_eq!(read_response(conn, false).unwrap().status, 200);
    }
    let mut one = idle.pop().unwrap();
    let mut rest = [0u8; 1];
    one.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(one.read(&mut rest).is_err(), "nothing more was sent");
}
