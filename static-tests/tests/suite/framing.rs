//! HTTP/1.1 framing, limits and connection handling (spec 1.5, 1.6, 1.8; cases 7.1 and 7.10).

use a8registry_static_tests::*;
use std::io::{Read, Write};
use std::time::Duration;

fn raw_exchange(server: &Server, raw: &[u8]) -> (Response, std::net::TcpStream) {
    let mut conn = server.connect();
    conn.write_all(raw).unwrap();
    let response = read_response(&mut conn, false).expect("a response");
    (response, conn)
}

#[test]
fn root_and_uptime_answer_without_auth() {
    let server = Server::start(&["--auth_mode", "trusted"]);
    let root = server.get("/");
    assert_eq!(root.status, 200);
    assert!(root.body.is_empty());
    assert_eq!(
        root.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let uptime = server.get("/uptime");
    assert_eq!(uptime.status, 200);
    let body = uptime.json();
    assert_eq!(body["UPTIME"]["healthy"], true);
    let properties = &body["UPTIME"]["properties"];
    assert!(properties["uptime"].is_string());
    for key in ["load_1m", "load_5m", "load_15m"] {
        assert!(properties[key].is_number(), "{key}");
    }
    for key in [
        "build_version",
        "build_revision",
        "build_goversion",
        "build_date",
    ] {
        assert!(properties[key].is_string(), "{key}");
    }
}

#[test]
fn unknown_paths_and_methods() {
    let server = Server::start(&[]);
    server.get("/hello").assert_error(404, "Resource not found");
    server
        .get("/api/v1/services/")
        .assert_error(404, "Resource not found");
    server
        .get("/api/v1/instances/")
        .assert_error(404, "Resource not found");
    server
        .get("/api/v1/%73ervices")
        .assert_error(404, "Resource not found");
    for method in ["CONNECT", "DELETE", "OPTIONS", "PATCH", "PUT", "TRACE"] {
        server
            .request(method, "/api/v1/instances", &[], None)
            .assert_error(405, "Method not allowed");
    }
    for method in ["HEAD", "OPTIONS", "PATCH", "PUT", "GET"] {
        let r = server.request(method, "/api/v1/instances/fakeid", &[], None);
        assert_eq!(r.status, 405, "{method}");
    }
    for method in ["OPTIONS", "PATCH", "POST", "PUT", "TRACE"] {
        for path in ["/api/v1/services", "/api/v1/services/fakeservice"] {
            assert_eq!(server.request(method, path, &[], None).status, 405);
        }
    }
    server
        .request("POST", "/api/v1/instances/x/heartbeat", &[], None)
        .assert_error(405, "Method not allowed");
    server
        .request("OPTIONS", "/", &[], None)
        .assert_error(405, "Method not allowed");
}

#[test]
fn head_answers_like_get_without_a_body() {
    let server = Server::start(&[]);
    server.post_json("/api/v1/instances", &registration("svc", "h:1", ""));
    for path in [
        "/",
        "/uptime",
        "/api/v1/instances",
        "/api/v1/services",
        "/api/v1/services/svc",
    ] {
        let get = server.get(path);
        let mut conn = server.connect();
        send(&mut conn, "HEAD", path, &[], None);
        let head = read_response(&mut conn, true).unwrap();
        assert_eq!(head.status, get.status, "{path}");
        assert_eq!(head.header("content-type"), get.header("content-type"));
        if path != "/uptime" {
            // /uptime's body changes between calls (uptime, load).
            assert_eq!(
                head.header("content-length"),
                get.header("content-length"),
                "{path}"
            );
        }
        // Nothing follows the head: the next bytes on the connection are the next response.
        send(&mut conn, "GET", "/", &[], None);
        assert_eq!(read_response(&mut conn, false).unwrap().status, 200);
    }
    // A HEAD of an error: the head of the 404, then nothing but the next response.
    let mut conn = server.connect();
    send(&mut conn, "HEAD", "/api/v1/services/nope", &[], None);
    let unknown = read_response(&mut conn, true).unwrap();
    assert_eq!(unknown.status, 404);
    assert_ne!(
        unknown.header("content-length"),
        Some("0"),
        "the GET's length"
    );
    send(&mut conn, "GET", "/", &[], None);
    assert_eq!(read_response(&mut conn, false).unwrap().status, 200);
    assert_eq!(
        server
            .request("HEAD", "/api/v1/instances/x", &[], None)
            .status,
        405
    );
}

#[test]
fn content_type_check_comes_before_routing() {
    let server = Server::start(&[]);
    let body = registration("ct", "h:1", "");
    const BAD: &str = "Bad Content-Type or charset, expected 'application/json'";
    server
        .request("POST", "/api/v1/instances", &[], Some(&body))
        .assert_error(415, BAD);
    for ct in [
        "text/plain",
        "application/json; charset=latin1",
        "application/json; charset=utf8",
        "application/xml",
        "application/x-www-form-urlencoded",
    ] {
        server
            .request(
                "POST",
                "/api/v1/instances",
                &[("Content-Type", ct)],
                Some(&body),
            )
            .assert_error(415, BAD);
    }
    for ct in [
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        "application/json",
    ] {
        let r = server.request(
            "POST",
            "/api/v1/instances",
            &[("Content-Type", ct)],
            Some(&body),
        );
        assert_eq!(r.status, 201, "{ct}");
    }
    server
        .request(
            "POST",
            "/nothing",
            &[("Content-Type", "text/plain")],
            Some("x"),
        )
        .assert_error(415, BAD);
    server
        .request(
            "DELETE",
            "/api/v1/instances/abc",
            &[("Content-Type", "text/plain")],
            Some("x"),
        )
        .assert_error(415, BAD);
    // An empty body is never checked.
    let r = server.request(
        "PUT",
        "/api/v1/instances/abc/heartbeat",
        &[("Content-Type", "text/plain"), ("Content-Length", "0")],
        None,
    );
    r.assert_error(410, "Failed to renew instance registration");
}

#[test]
fn chunked_bodies_skip_the_content_type_check() {
    let server = Server::start(&[]);
    let body = registration("chunky", "h:1", "");
    let (first, second) = body.split_at(10);
    let raw = format!(
        "POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n{:x};ext=1\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\nTrailer: t\r\n\r\n",
        first.len(),
        second.len()
    );
    let (response, _) = raw_exchange(&server, raw.as_bytes());
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(
        server.get("/api/v1/services").json()["services"],
        serde_json::json!(["chunky"])
    );
}

#[test]
fn head_size_limits() {
    let server = Server::start(&[]);
    // HTTP/1.1 requires Host (RFC 9112 3.2): it is among the bytes and fields counted.
    let head_of = |total: usize| {
        let base = "GET / HTTP/1.1\r\nHost: x\r\nX: \r\n\r\n".len();
        format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
            "a".repeat(total - base)
        )
    };
    let (ok, _) = raw_exchange(&server, head_of(16384).as_bytes());
    assert_eq!(ok.status, 200);
    let (too_big, mut conn) = raw_exchange(&server, head_of(16385).as_bytes());
    too_big.assert_error(431, "Request header fields too large");
    assert_eq!(too_big.header("connection"), Some("close"));
    assert!(closed_by_server(&mut conn, Duration::from_secs(5)));

    let with_headers = |n: usize| {
        let mut s = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 1..n {
            s.push_str(&format!("X-Proxy-Header-{i}: value\r\n"));
        }
        s + "\r\n"
    };
    for n in [17, 100] {
        let (r, _) = raw_exchange(&server, with_headers(n).as_bytes());
        assert_eq!(r.status, 200, "{n} headers");
    }
    let (r, mut conn) = raw_exchange(&server, with_headers(101).as_bytes());
    r.assert_error(431, "Request header fields too large");
    assert!(closed_by_server(&mut conn, Duration::from_secs(5)));
}

#[test]
fn body_size_limits() {
    let server = Server::start(&[]);
    // Framing comes first: an oversized text/plain body is 413, not 415.
    let raw = "POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1048577\r\n\r\n";
    let (r, _) = raw_exchange(&server, raw.as_bytes());
    r.assert_error(413, "Request body too large");

    let body = registration("big", "h:1", "");
    let padded = format!("{body}{}", " ".repeat(1_048_576 - body.len()));
    assert_eq!(padded.len(), 1_048_576);
    assert_eq!(server.post_json("/api/v1/instances", &padded).status, 201);

    let mut chunked = b"POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..5 {
        chunked.extend_from_slice(format!("{:x}\r\n", 256 * 1024).as_bytes());
        chunked.extend_from_slice(&vec![b' '; 256 * 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    let mut conn = server.connect();
    // The server may answer and close before it has read everything: ignore write errors.
    let _ = conn.write_all(&chunked);
    read_response(&mut conn, false)
        .unwrap()
        .assert_error(413, "Request body too large");

    let small = Server::start(&["--max_body_size", "10"]);
    small
        .post_json("/api/v1/instances", &registration("x", "y", ""))
        .assert_error(413, "Request body too large");
}

#[test]
fn malformed_requests_are_400_and_close_while_others_are_served() {
    let server = Server::start(&[]);
    let mut bystander = server.connect();
    for raw in [
        "GARBAGE\r\n\r\n",
        "POST /api/v1/instances HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        "POST /api/v1/instances HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        "POST /api/v1/instances HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "POST /api/v1/instances HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/9.9\r\n\r\n",
        "GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
    ] {
        let (r, mut conn) = raw_exchange(&server, raw.as_bytes());
        r.assert_error(400, "Malformed HTTP request");
        assert_eq!(r.header("connection"), Some("close"), "{raw:?}");
        assert!(closed_by_server(&mut conn, Duration::from_secs(5)), "{raw:?}");
        send(&mut bystander, "GET", "/", &[], None);
        assert_eq!(read_response(&mut bystander, false).unwrap().status, 200);
    }
}

#[test]
fn unsupported_transfer_coding_is_501() {
    let server = Server::start(&[]);
    let raw = "POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n";
    let (r, mut conn) = raw_exchange(&server, raw.as_bytes());
    r.assert_error(501, "Transfer-Encoding not supported");
    assert!(closed_by_server(&mut conn, Duration::from_secs(5)));
}

#[test]
fn expect_100_continue() {
    let server = Server::start(&[]);
    let body = registration("cont", "h:1", "");
    let mut conn = server.connect();
    let head = format!(
        "POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    let interim = read_response(&mut conn, true).unwrap();
    assert_eq!(interim.status, 100);
    conn.write_all(body.as_bytes()).unwrap();
    assert_eq!(read_response(&mut conn, false).unwrap().status, 201);

    let mut conn = server.connect();
    conn.write_all(b"POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 2000000\r\n\r\n").unwrap();
    // The final answer comes at once, with no 100 before it.
    read_response(&mut conn, false)
        .unwrap()
        .assert_error(413, "Request body too large");
}

#[test]
fn connection_close_and_http_1_0() {
    let server = Server::start(&[]);
    let mut conn = server.connect();
    send(&mut conn, "GET", "/", &[("Connection", "close")], None);
    let r = read_response(&mut conn, false).unwrap();
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed_by_server(&mut conn, Duration::from_secs(5)));

    let mut conn = server.connect();
    conn.write_all(b"GET /api/v1/services HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    conn.read_to_end(&mut all).unwrap();
    let text = String::from_utf8(all).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.to_ascii_lowercase().contains("transfer-encoding"));
    assert!(text.ends_with("{\"services\":[]}"), "{text}");

    let mut conn = server.connect();
    conn.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let r = read_response(&mut conn, false).unwrap();
    assert_eq!(r.header("connection"), Some("keep-alive"));
    conn.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut conn, false).unwrap().status, 200);
}

#[test]
fn keep_alive_and_pipelining_answer_in_order() {
    let server = Server::start(&[]);
    let mut conn = server.connect();
    send(&mut conn, "GET", "/api/v1/services", &[], None);
    assert_eq!(read_response(&mut conn, false).unwrap().status, 200);
    send(&mut conn, "GET", "/nowhere", &[], None);
    assert_eq!(read_response(&mut conn, false).unwrap().status, 404);

    let body = registration("pipe", "h:1", "");
    let pipelined = format!(
        "POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}GET /api/v1/services/pipe HTTP/1.1\r\nHost: x\r\n\r\nGET /missing HTTP/1.1\r\nHost: x\r\n\r\n",
        body.len()
    );
    conn.write_all(pipelined.as_bytes()).unwrap();
    assert_eq!(read_response(&mut conn, false).unwrap().status, 201);
    let listed = read_response(&mut conn, false).unwrap();
    assert_eq!(listed.status, 200);
    assert_eq!(listed.json()["service_name"], "pipe");
    assert_eq!(read_response(&mut conn, false).unwrap().status, 404);
    // And the connection is still open.
    assert!(!closed_by_server(&mut conn, Duration::from_millis(300)));
}

#[test]
fn idle_connections_are_closed_after_the_timeout() {
    let server = Server::start(&["--idle_timeout", "1s"]);
    let mut conn = server.connect();
    send(&mut conn, "GET", "/", &[], None);
    assert_eq!(read_response(&mut conn, false).unwrap().status, 200);
    std::thread::sleep(Duration::from_millis(300));
    send(&mut conn, "GET", "/", &[], None);
    assert_eq!(
        read_response(&mut conn, false).unwrap().status,
        200,
        "served before the timeout"
    );
    assert!(
        closed_by_server(&mut conn, Duration::from_secs(5)),
        "closed when idle"
    );

    // A head that stalls is closed too, without an answer.
    let mut slow = server.connect();
    slow.write_all(b"GET / HTTP/1.1\r\nHost:").unwrap();
    assert!(closed_by_server(&mut slow, Duration::from_secs(5)));
}

#[test]
fn slow_clients_do_not_hold_the_only_worker() {
    let server = Server::start(&["--workers", "1"]);
    let slow: Vec<_> = (0..50)
        .map(|_| {
            let mut c = server.connect();
            c.write_all(b"GET /upt").unwrap();
            c
        })
        .collect();
    let writer = std::thread::spawn(move || {
        // A byte at a time, each connection, over more than two seconds.
        for byte in b"ime HTTP/1.1\r\nHost: x\r\n\r\n" {
            for mut c in &slow {
                c.write_all(&[*byte]).unwrap();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        slow
    });
    for _ in 0..20 {
        assert_eq!(server.get("/api/v1/services").status, 200);
    }
    // Everyone else was served while the slow clients were still sending their heads.
    assert!(!writer.is_finished(), "the slow heads finished first");
    let mut slow = writer.join().unwrap();
    for c in &mut slow {
        assert_eq!(read_response(c, false).unwrap().status, 200);
    }
}

#[test]
fn a_thousand_concurrent_keep_alive_connections() {
    let server = Server::start(&[]);
    let mut conns: Vec<_> = (0..1000).map(|_| server.connect()).collect();
    for c in &mut conns {
        send(c, "GET", "/api/v1/services", &[], None);
    }
    for c in &mut conns {
        assert_eq!(read_response(c, false).unwrap().status, 200);
    }
    // All still open and usable.
    for c in &mut conns {
        send(c, "GET", "/", &[], None);
    }
    for c in &mut conns {
        assert_eq!(read_response(c, false).unwrap().status, 200);
    }
}

#[test]
fn percent_decoding_of_path_parameters() {
    let server = Server::start(&[]);
    assert_eq!(
        server
            .post_json("/api/v1/instances", &registration("my svc", "h:1", ""))
            .status,
        201
    );
    let r = server.get("/api/v1/services/my%20svc");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["service_name"], "my svc");
    assert_eq!(
        server
            .post_json("/api/v1/instances", &registration("a/b", "h:1", ""))
            .status,
        201
    );
    assert_eq!(
        server.get("/api/v1/services/a%2Fb").json()["service_name"],
        "a/b"
    );
    const BAD: &str = "Malformed percent-encoding in request path";
    server.get("/api/v1/services/%zz").assert_error(400, BAD);
    server
        .request("PUT", "/api/v1/instances/%E0%A4/heartbeat", &[], None)
        .assert_error(400, BAD);
    server
        .request("DELETE", "/api/v1/instances/%4", &[], None)
        .assert_error(400, BAD);
}

#[test]
fn many_pipelined_requests_for_large_bodies_are_all_answered_in_order() {
    let server = Server::start(&[]);
    for i in 0..100 {
        let body = registration("big-list", &format!("10.1.0.{i}:8080"), "");
        assert_eq!(server.post_json("/api/v1/instances", &body).status, 201);
    }
    let mut conn = server.connect();
    let mut writer = conn.try_clone().unwrap();
    // 500 requests in one burst, each answered with about 20 KB: the server has to write while
    // it still has requests to read.
    let sender = std::thread::spawn(move || {
        let mut raw = String::new();
        for i in 0..500 {
            let path = if i % 2 == 0 {
                "/api/v1/services/big-list"
            } else {
                "/api/v1/instances?service_name=big-list&status=UP"
            };
            raw.push_str(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
        }
        writer.write_all(raw.as_bytes()).unwrap();
    });
    for i in 0..500 {
        let r = read_response(&mut conn, false).unwrap();
        assert_eq!(r.status, 200);
        let listed = r.json();
        assert_eq!(
            listed["instances"].as_array().unwrap().len(),
            100,
            "response {i}"
        );
        assert_eq!(
            listed.get("service_name").is_some(),
            i % 2 == 0,
            "response {i} in order"
        );
    }
    sender.join().unwrap();
}

#[test]
fn host_is_required_once_as_rfc_9112_says() {
    let server = Server::start(&[]);
    let mut bystander = server.connect();
    for raw in [
        // HTTP/1.1 without Host.
        "GET /api/v1/services HTTP/1.1\r\n\r\n",
        "GET http://x/api/v1/services HTTP/1.1\r\n\r\n",
        // Two Host fields, on either version.
        "GET /api/v1/services HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        "GET /api/v1/services HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n",
        // A Host that is no host.
        "GET /api/v1/services HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET /api/v1/services HTTP/1.1\r\nHost: a/b\r\n\r\n",
    ] {
        let (r, mut conn) = raw_exchange(&server, raw.as_bytes());
        r.assert_error(400, "Malformed HTTP request");
        assert_eq!(r.header("connection"), Some("close"), "{raw:?}");
        assert!(
            closed_by_server(&mut conn, Duration::from_secs(5)),
            "{raw:?}"
        );
        send(&mut bystander, "GET", "/", &[], None);
        assert_eq!(read_response(&mut bystander, false).unwrap().status, 200);
    }
    // HTTP/1.0 may leave it out; an empty Host and a port are fine.
    for raw in [
        "GET /api/v1/services HTTP/1.0\r\n\r\n",
        "GET /api/v1/services HTTP/1.1\r\nHost:\r\n\r\n",
        "GET /api/v1/services HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
    ] {
        let (r, _) = raw_exchange(&server, raw.as_bytes());
        assert_eq!(r.status, 200, "{raw:?}: {}", r.text());
    }
}

#[test]
fn chunk_lines_need_crlf_and_http_1_0_has_no_transfer_coding() {
    let server = Server::start(&[]);
    let body = registration("lenient", "h:1", "");
    let head = "POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
    let len = body.len();
    for raw in [
        // A bare LF ends the chunk-size line, the chunk data, the last chunk, the trailers.
        format!("{head}{len:x}\n{body}\r\n0\r\n\r\n"),
        format!("{head}{len:x}\r\n{body}\n0\r\n\r\n"),
        format!("{head}{len:x}\r\n{body}\r\n0\n\r\n"),
        format!("{head}{len:x}\r\n{body}\r\n0\r\n\n"),
        // A bare CR inside a chunk line.
        format!("{head}{len:x};a=\rb\r\n{body}\r\n0\r\n\r\n"),
        // Chunked on HTTP/1.0 (RFC 9112 6.1: faulty framing).
        format!(
            "POST /api/v1/instances HTTP/1.0\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{len:x}\r\n{body}\r\n0\r\n\r\n"
        ),
    ] {
        let (r, mut conn) = raw_exchange(&server, raw.as_bytes());
        r.assert_error(400, "Malformed HTTP request");
        assert_eq!(r.header("connection"), Some("close"), "{raw:?}");
        assert!(closed_by_server(&mut conn, Duration::from_secs(5)), "{raw:?}");
    }
    assert_eq!(
        server.get("/api/v1/services").json()["services"],
        serde_json::json!([]),
        "nothing was registered"
    );
    // The same body with CRLF everywhere registers.
    let (r, _) = raw_exchange(
        &server,
        format!("{head}{len:x}\r\n{body}\r\n0\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
}

#[test]
fn a_request_followed_by_the_clients_end_is_answered_and_closed_at_once() {
    // The FIN often arrives with the request and is taken by the same read: the end must not
    // wait for an event that never comes (the idle timeout, 60 s by default).
    let server = Server::start(&[]);
    for attempt in 0..20 {
        let mut conn = server.connect();
        conn.write_all(b"GET /api/v1/services HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let response = read_response(&mut conn, false).expect("the answer");
        assert_eq!(response.status, 200, "attempt {attempt}");
        assert!(
            closed_by_server(&mut conn, Duration::from_secs(1)),
            "attempt {attempt}: the server closes after the client's end"
        );
    }
}
