//! Full listings of large namespaces (issue 17) are streamed: rendered a piece at a time while
//! they are written, chunked to HTTP/1.1 clients and ended by the close for HTTP/1.0 ones,
//! gzip-compressed as they are made. They carry the bytes the whole-body path gives. The
//! threshold is lowered for these tests through `A8REGISTRY_MIN_STREAMED_INSTANCES`.

use a8registry_static_tests::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const THRESHOLD: usize = 30;
const JSON_ACCEPT: (&str, &str) = ("Accept", "application/json");

fn start(args: &[&str]) -> Server {
    Server::start_with_env(
        args,
        &[("A8REGISTRY_MIN_STREAMED_INSTANCES", &THRESHOLD.to_string())],
    )
}

/// A Eureka registration; `filler` characters of home page URL make it larger.
fn eureka_instance(app: &str, id: &str, status: &str, filler: usize) -> String {
    json!({"instance":{"instanceId":id,"hostName":format!("{id}.host"),"app":app,"ipAddr":"10.0.0.1","status":status,"port":{"$":80,"@enabled":"true"},"vipAddress":app.to_lowercase(),"homePageUrl":format!("http://h/{}", "h".repeat(filler)),"dataCenterInfo":{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"}}}).to_string()
}

/// Registers `count` Eureka instances spread over the apps `APP0`..`APP{apps-1}`, pipelined,
/// every fifth one `DOWN`.
fn fill(server: &Server, apps: usize, count: usize, filler: usize) {
    let mut conn = server.connect();
    let requests: Vec<String> = (0..count)
        .map(|i| {
            let app = format!("APP{}", i % apps);
            let status = if i % 5 == 0 { "DOWN" } else { "UP" };
            let body = eureka_instance(&app, &format!("i{i}"), status, filler);
            raw_request("POST", &format!("/eureka/v2/apps/{app}"), &[], &body)
        })
        .collect();
    for batch in requests.chunks(64) {
        conn.write_all(batch.concat().as_bytes()).unwrap();
        for _ in batch {
            assert_eq!(read_response(&mut conn, false).unwrap().status, 204);
        }
    }
}

#[track_caller]
fn assert_streamed(response: &Response) {
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert_eq!(response.header("content-length"), None);
}

#[track_caller]
fn assert_whole(response: &Response) {
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("transfer-encoding"), None);
    assert!(response.header("content-length").is_some());
}

/// The part of a JSON document between its first `[`-free prefix `prefix` and the final `suffix`.
fn inner<'a>(text: &'a str, prefix: &str, suffix: &str) -> &'a str {
    text.strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(suffix))
        .unwrap_or_else(|| panic!("{prefix:?}…{suffix:?} around {text}"))
}

#[test]
fn a_streamed_eureka_listing_is_the_whole_document_byte_for_byte() {
    let server = start(&[]);
    // One instance an app: the order of an app's instances is the store's (Redis gives a
    // service's alone in another order than the whole namespace's), the order of apps is by name.
    let apps = THRESHOLD + 5;
    fill(&server, apps, apps, 0);
    let mut names: Vec<String> = (0..apps).map(|a| format!("APP{a}")).collect();
    names.sort();
    // Each app's document comes from the whole-body (cached) path; the listing is them, in app
    // order, under the version and hash code of the namespace.
    let version = server
        .request("GET", "/eureka/v2/apps/delta", &[JSON_ACCEPT], None)
        .json()["applications"]["versions__delta"]
        .as_str()
        .unwrap()
        .to_string();
    let hash_code = "DOWN_7_UP_28_";
    for format in ["json", "xml"] {
        let accept = (
            "Accept",
            if format == "json" {
                "application/json"
            } else {
                "application/xml"
            },
        );
        let listing = server.request("GET", "/eureka/v2/apps", &[accept], None);
        assert_streamed(&listing);
        let apps: Vec<String> = names
            .iter()
            .map(|name| {
                let app =
                    server.request("GET", &format!("/eureka/v2/apps/{name}"), &[accept], None);
                assert_whole(&app);
                app.text()
            })
            .collect();
        let expected = if format == "json" {
            let apps: Vec<&str> = apps
                .iter()
                .map(|app| inner(app, r#"{"application":"#, "}"))
                .collect();
            format!(
                r#"{{"applications":{{"versions__delta":"{version}","apps__hashcode":"{hash_code}","application":[{}]}}}}"#,
                apps.join(",")
            )
        } else {
            assert_eq!(
                listing.header("content-type"),
                Some("application/xml; charset=utf-8")
            );
            format!(
                "<applications><versions__delta>{version}</versions__delta><apps__hashcode>{hash_code}</apps__hashcode>{}</applications>",
                apps.concat()
            )
        };
        assert_eq!(listing.text(), expected, "{format}");
    }
}

#[test]
fn a_namespace_under_the_threshold_keeps_whole_bodies() {
    let server = start(&[]);
    fill(&server, 3, THRESHOLD - 1, 0);
    assert_whole(&server.request("GET", "/eureka/v2/apps", &[JSON_ACCEPT], None));
    assert_whole(&server.get("/api/v1/instances"));
    fill(&server, 3, THRESHOLD, 0);
    assert_streamed(&server.request("GET", "/eureka/v2/apps", &[JSON_ACCEPT], None));
    assert_streamed(&server.get("/api/v1/instances"));
    // The threshold counts what a listing selects: few instances are DOWN.
    let down = server.get("/api/v1/instances?status=DOWN");
    assert_whole(&down);
    assert_eq!(instance_count(&down.json()), 6);
}

#[test]
fn a_streamed_instance_list_holds_what_the_per_service_lists_hold() {
    let server = start(&[]);
    fill(&server, 4, THRESHOLD * 2, 0);
    let by_id = |mut instances: Vec<Value>| {
        instances.sort_by_key(|i| i["id"].as_str().unwrap().to_string());
        instances
    };
    let listing = server.get("/api/v1/instances?status=ALL");
    assert_streamed(&listing);
    let all = by_id(listing.json()["instances"].as_array().unwrap().clone());
    assert_eq!(all.len(), THRESHOLD * 2);
    let mut per_service = Vec::new();
    for a in 0..4 {
        let one = server.get(&format!("/api/v1/instances?service_name=APP{a}"));
        assert_whole(&one);
        per_service.extend(one.json()["instances"].as_array().unwrap().clone());
    }
    assert_eq!(all, by_id(per_service));
    // A watch's answer carries its index on a streamed body too.
    let watched = server.get("/api/v1/instances?index=1&wait=1s");
    assert_streamed(&watched);
    assert!(
        watched.header("x-a8-index").is_some(),
        "{:?}",
        watched.headers
    );
}

#[test]
fn streamed_listings_are_gzipped_as_they_are_made() {
    let server = start(&[]);
    fill(&server, 3, THRESHOLD * 3, 200);
    for (path, accept) in [
        ("/eureka/v2/apps", "application/json"),
        ("/eureka/v2/apps", "application/xml"),
        ("/api/v1/instances", "application/json"),
    ] {
        let plain = server.request("GET", path, &[("Accept", accept)], None);
        assert_streamed(&plain);
        assert_eq!(plain.header("content-encoding"), None);
        assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
        let compressed = server.request(
            "GET",
            path,
            &[("Accept", accept), ("Accept-Encoding", "gzip")],
            None,
        );
        assert_streamed(&compressed);
        assert_eq!(compressed.header("content-encoding"), Some("gzip"));
        assert_eq!(compressed.header("vary"), Some("Accept-Encoding"));
        assert!(compressed.body.len() * 4 < plain.body.len(), "{path}");
        assert_eq!(gunzip(&compressed.body), plain.body, "{path} {accept}");
    }
}

#[test]
fn head_and_pipelined_requests_behind_a_streamed_listing() {
    let server = start(&[]);
    fill(&server, 3, THRESHOLD + 10, 0);
    let get = server.request("GET", "/eureka/v2/apps", &[JSON_ACCEPT], None);
    let head = server.request("HEAD", "/eureka/v2/apps", &[JSON_ACCEPT], None);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let without_date = |r: &Response| {
        let mut headers = r.headers.clone();
        headers.retain(|(name, _)| name != "Date");
        headers
    };
    assert_eq!(
        without_date(&head),
        without_date(&get),
        "HEAD has the GET's headers"
    );

    let mut conn = server.connect();
    let pipelined = [
        raw_request("GET", "/eureka/v2/apps", &[JSON_ACCEPT], ""),
        raw_request("HEAD", "/api/v1/instances", &[], ""),
        raw_request("GET", "/api/v1/services", &[], ""),
        raw_request(
            "GET",
            "/eureka/v2/apps",
            &[JSON_ACCEPT, ("Accept-Encoding", "gzip")],
            "",
        ),
        raw_request("GET", "/api/v1/instances", &[], ""),
    ];
    conn.write_all(pipelined.concat().as_bytes()).unwrap();
    let first = read_response(&mut conn, false).unwrap();
    assert_streamed(&first);
    assert_eq!(first.body, get.body);
    let head = read_response(&mut conn, true).unwrap();
    assert_streamed(&head);
    let services = read_response(&mut conn, false).unwrap();
    assert_whole(&services);
    assert_eq!(services.json()["services"].as_array().unwrap().len(), 3);
    let compressed = read_response(&mut conn, false).unwrap();
    assert_eq!(gunzip(&compressed.body), get.body);
    let instances = read_response(&mut conn, false).unwrap();
    assert_streamed(&instances);
    assert_eq!(instance_count(&instances.json()), THRESHOLD + 10);
    // And the connection goes on.
    send(&mut conn, "GET", "/eureka/v2/apps", &[JSON_ACCEPT], None);
    assert_eq!(read_response(&mut conn, false).unwrap().body, get.body);
}

#[test]
fn an_http_1_0_client_gets_a_streamed_listing_ended_by_the_close() {
    let server = start(&[]);
    fill(&server, 3, THRESHOLD + 10, 0);
    let get = server.request("GET", "/eureka/v2/apps", &[JSON_ACCEPT], None);
    for keep_alive in [false, true] {
        let mut conn = server.connect();
        let extra = if keep_alive {
            "Connection: keep-alive\r\n"
        } else {
            ""
        };
        let request =
            format!("GET /eureka/v2/apps HTTP/1.0\r\nAccept: application/json\r\n{extra}\r\n");
        conn.write_all(request.as_bytes()).unwrap();
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).unwrap();
        let text = String::from_utf8(raw).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        let head = head.to_ascii_lowercase();
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert!(!head.contains("content-length"), "{head}");
        assert_eq!(body.as_bytes(), &get.body[..], "keep-alive {keep_alive}");
    }
}

/// Stops the kernel from growing the socket's receive buffer (to 32 MiB on some machines), so
/// that a client that does not read soon fills it.
fn small_receive_buffer(conn: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let bytes: libc::c_int = 64 * 1024;
    // SAFETY: setsockopt(2) on an open socket with a pointer to a live c_int and its size.
    let set = unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "setsockopt");
}

#[test]
fn a_client_that_stops_reading_a_streamed_listing_stalls_no_one() {
    // One worker: a stream that held it would stall every other connection.
    let server = start(&["--workers", "1", "--idle_timeout", "1s"]);
    // About 3 KB an instance: some 25 MB of JSON, more than the socket buffers hold.
    fill(&server, 10, 8_000, 3_000);
    let mut stalled = server.connect();
    small_receive_buffer(&stalled);
    send(&mut stalled, "GET", "/eureka/v2/apps", &[JSON_ACCEPT], None);
    let mut first = [0u8; 1024];
    stalled.read_exact(&mut first).unwrap();
    assert!(first.starts_with(b"HTTP/1.1 200 OK\r\n"));
    // Other clients are served while the stream waits for its reader.
    let started = Instant::now();
    let mut other = server.connect();
    for i in 0..50 {
        send(
            &mut other,
            "PUT",
            &format!("/eureka/v2/apps/APP{}/i{i}", i % 10),
            &[],
            None,
        );
        assert_eq!(read_response(&mut other, false).unwrap().status, 200);
        send(&mut other, "GET", "/api/v1/services", &[], None);
        assert_eq!(read_response(&mut other, false).unwrap().status, 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "served in {:?} beside a stalled stream",
        started.elapsed()
    );
    // The stalled stream is given up after the idle timeout without progress: its reader gets
    // what the buffers held, and then the end, before the whole body. (The kernel takes more
    // into the buffers of an unread socket for several seconds as it compacts them, and each
    // time is progress.)
    std::thread::sleep(Duration::from_secs(12));
    stalled
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    let end = stalled.read_to_end(&mut rest);
    assert!(
        end.is_err() || !rest.ends_with(b"\r\n0\r\n\r\n"),
        "the stalled stream was cut: {end:?} {} bytes",
        rest.len()
    );
    let full = server.request("GET", "/eureka/v2/apps", &[JSON_ACCEPT], None);
    assert!(
        rest.len() + first.len() < full.body.len(),
        "{} of {} bytes",
        rest.len(),
        full.body.len()
    );
    assert_eq!(application_count(&full), 10);
}

#[test]
fn sigterm_during_a_stream_lets_it_finish_then_exits() {
    let mut server = start(&[]);
    fill(&server, 5, 4_000, 1_000);
    let expected = server.request("GET", "/eureka/v2/apps", &[JSON_ACCEPT], None);
    assert_streamed(&expected);
    let mut conn = server.connect();
    send(&mut conn, "GET", "/eureka/v2/apps", &[JSON_ACCEPT], None);
    let mut head = [0u8; 64];
    conn.read_exact(&mut head).unwrap();
    server.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    let mut raw = head.to_vec();
    raw.extend_from_slice(&rest);
    assert!(raw.ends_with(b"\r\n0\r\n\r\n"), "the stream ends whole");
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    // The streamed body, unchunked, is the listing (nothing changed).
    let text = String::from_utf8_lossy(&raw);
    let body_at = text.find("\r\n\r\n").unwrap() + 4;
    let mut body = Vec::new();
    let mut at = body_at;
    loop {
        let line_end = at + raw[at..].windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[at..line_end]).unwrap(), 16).unwrap();
        if size == 0 {
            break;
        }
        body.extend_from_slice(&raw[line_end + 2..line_end + 2 + size]);
        at = line_end + 2 + size + 2;
    }
    assert_eq!(body, expected.body);
}

/// The server's threads, from `/proc/PID/status`.
fn threads(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads: in the server's status")
}

/// Waits up to `within` for the server to have at most `most` threads; their count then.
fn threads_down_to(server: &Server, most: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let now = threads(server);
        if now <= most || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_client_that_leaves_mid_stream_ends_its_render_thread() {
    let server = start(&[]);
    // About 1 KB an instance: some 8 MB of JSON, more than the socket buffers hold.
    fill(&server, 10, 8_000, 1_000);
    let before = threads(&server);
    let rss_before = server.status_kib("VmRSS");
    for accept in ["application/json", "application/xml"] {
        let path = accept;
        let mut leaving = server.connect();
        small_receive_buffer(&leaving);
        send(
            &mut leaving,
            "GET",
            "/eureka/v2/apps",
            &[("Accept", accept)],
            None,
        );
        let mut first = [0u8; 1024];
        leaving.read_exact(&mut first).unwrap();
        assert!(first.starts_with(b"HTTP/1.1 200 OK\r\n"));
        // The render thread waits for the client to read on.
        let rendering = threads_down_to(&server, before, Duration::from_millis(200));
        assert_eq!(
            rendering,
            before + 1,
            "{path}: a render thread while streaming"
        );
        drop(leaving);
        let after = threads_down_to(&server, before, Duration::from_secs(3));
        assert_eq!(
            after, before,
            "{path}: the render thread ended with the client"
        );
    }
    // Nothing held: the listings' snapshots went with their threads.
    let rss_after = server.status_kib("VmRSS");
    assert!(
        rss_after < rss_before + 8 * 1024,
        "RSS {rss_before} KiB before, {rss_after} KiB after"
    );
    // And the next client gets the whole listing.
    let full = server.request("GET", "/eureka/v2/apps", &[JSON_ACCEPT], None);
    assert_streamed(&full);
    assert_eq!(application_count(&full), 10);
}

#[test]
fn a_client_that_stops_reading_keeps_no_render_thread_past_the_idle_timeout() {
    let server = start(&["--idle_timeout", "1s"]);
    fill(&server, 10, 8_000, 3_000);
    let before = threads(&server);
    let mut stalled = server.connect();
    small_receive_buffer(&stalled);
    send(&mut stalled, "GET", "/eureka/v2/apps", &[JSON_ACCEPT], None);
    let mut first = [0u8; 1024];
    stalled.read_exact(&mut first).unwrap();
    assert_eq!(
        threads_down_to(&server, before, Duration::from_millis(200)),
        before + 1
    );
    // The write gives up after the idle timeout without progress (the kernel, compacting the
    // unread socket's buffers, makes some progress for a few seconds), and the thread ends.
    let after = threads_down_to(&server, before, Duration::from_secs(20));
    assert_eq!(after, before, "the render thread ended without its reader");
    drop(stalled);
}

#[test]
fn concurrent_streamed_fetches_all_get_complete_identical_bodies() {
    let server = start(&[]);
    fill(&server, 7, 3_000, 300);
    for (path, accept, gzip) in [
        ("/eureka/v2/apps", "application/json", false),
        ("/eureka/v2/apps", "application/xml", false),
        ("/eureka/v2/apps", "application/json", true),
        ("/api/v1/instances", "application/json", false),
        (
            "/api/v1/instances?status=ALL&fields=id",
            "application/json",
            false,
        ),
    ] {
        let fetch = || {
            let mut headers = vec![("Accept", accept)];
            if gzip {
                headers.push(("Accept-Encoding", "gzip"));
            }
            let response = server.request("GET", path, &headers, None);
            assert_streamed(&response);
            if gzip {
                gunzip(&response.body)
            } else {
                response.body
            }
        };
        let bodies: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let fetches: Vec<_> = (0..8).map(|_| scope.spawn(fetch)).collect();
            fetches.into_iter().map(|f| f.join().unwrap()).collect()
        });
        let alone = fetch();
        for body in &bodies {
            assert_eq!(body.len(), alone.len(), "{path} {accept} gzip {gzip}");
            assert!(body == &alone, "{path} {accept} gzip {gzip}");
        }
        if accept == "application/json" && path.starts_with("/api") {
            let listed: Value = serde_json::from_slice(&alone).unwrap();
            assert_eq!(instance_count(&listed), 3_000, "{path}");
        }
    }
}

#[test]
fn the_access_log_counts_the_bytes_of_a_streamed_answer() {
    let server = start(&["--log_level", "debug"]);
    fill(&server, 3, THRESHOLD + 10, 0);
    let listing = server.request("GET", "/eureka/v2/apps", &[JSON_ACCEPT], None);
    assert_streamed(&listing);
    let compressed = server.request(
        "GET",
        "/api/v1/instances",
        &[("Accept-Encoding", "gzip")],
        None,
    );
    assert_streamed(&compressed);
    // The line is written once the stream ended, which is before the client read its end.
    let logged = |path: &str| -> Vec<u64> {
        server
            .stderr()
            .iter()
            .filter(|line| {
                line.contains("msg=\"request\"") && line.contains(&format!(" path=\"{path}\" "))
            })
            .filter_map(|line| {
                let at = line.find(" bytes=\"")? + " bytes=\"".len();
                let digits: String = line[at..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse().ok()
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while (logged("/eureka/v2/apps").is_empty() || logged("/api/v1/instances").is_empty())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(logged("/eureka/v2/apps"), [listing.body.len() as u64]);
    assert_eq!(logged("/api/v1/instances"), [compressed.body.len() as u64]);
}

/// The applications of a Eureka JSON listing.
fn application_count(listing: &Response) -> usize {
    listing.json()["applications"]["application"]
        .as_array()
        .map_or(0, Vec::len)
}
