//! The web page (ui contract): how `/ui/...` is served, over raw HTTP, and what a person sees in a
//! real browser: `static-tests/ui/check.mjs` drives Debian's Chromium through playwright-core
//! against registries started here, and this test fails when any of its checks does.
//!
//! `static-tests/run.sh` installs Chromium and the script's npm packages when they are missing.

use a8registry_static_tests::*;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The policy every file of the page is served with.
const CSP: &str = "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/// The contract's bound on the page and its files together.
const MAX_PAGE_BYTES: usize = 60_000;
/// How long the browser script may run in all (it takes about 20 s when nothing is wrong).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(240);
const JWT_SECRET: &str = "ui-test-secret";

/// The files the page links: `href` and `src` values under `/ui/`.
fn linked_files(page: &str) -> Vec<String> {
    let mut files = Vec::new();
    for attribute in ["href=\"", "src=\""] {
        for rest in page.split(attribute).skip(1) {
            let value = &rest[..rest.find('"').unwrap()];
            assert!(
                value.starts_with("/ui/"),
                "the page links {value}, outside /ui/"
            );
            if !files.iter().any(|f| f == value) {
                files.push(value.to_string());
            }
        }
    }
    files
}

#[test]
fn the_page_is_served_with_caching_and_a_strict_policy() {
    let server = Server::start(&[]);
    let redirect = server.get("/ui");
    assert_eq!(redirect.status, 302);
    assert_eq!(redirect.header("location"), Some("/ui/"));

    let page = server.get("/ui/");
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("content-security-policy"), Some(CSP));
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    let page_text = page.text();
    let files = linked_files(&page_text);
    for wanted in ["/ui/ui.js", "/ui/ui.css", "/ui/icon.svg"] {
        assert!(files.iter().any(|f| f == wanted), "{wanted} not linked");
    }
    assert!(
        page_text.contains(r#"<link rel="icon" href="/ui/icon.svg""#),
        "the page names its own icon, so the browser never asks for /favicon.ico"
    );

    let mut total = page.body.len();
    for file in &files {
        let answer = server.get(file);
        assert_eq!(answer.status, 200, "{file}");
        assert_eq!(
            answer.header("content-security-policy"),
            Some(CSP),
            "{file}"
        );
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
        total += answer.body.len();
        // The browser's copy is current: 304 without a body, for the tag alone, weak or in a list.
        let etag = answer.header("etag").expect("an ETag").to_string();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        for condition in [etag.clone(), format!("W/{etag}"), format!("\"x\", {etag}")] {
            let again = server.request("GET", file, &[("If-None-Match", &condition)], None);
            assert_eq!(again.status, 304, "{file} with {condition}");
            assert!(again.body.is_empty());
            assert_eq!(again.header("etag"), Some(etag.as_str()));
            assert_eq!(again.header("content-length"), None);
        }
        let stale = server.request("GET", file, &[("If-None-Match", "\"stale\"")], None);
        assert_eq!(stale.status, 200);
        assert_eq!(stale.body, answer.body);
    }
    assert_eq!(
        server.get("/ui/ui.css").header("content-type"),
        Some("text/css; charset=utf-8")
    );
    assert_eq!(
        server.get("/ui/ui.js").header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        server.get("/ui/icon.svg").header("content-type"),
        Some("image/svg+xml")
    );
    assert!(
        total < MAX_PAGE_BYTES,
        "the page and its files are {total} bytes"
    );
    eprintln!("the page and its files: {total} bytes");

    let head = server.request("HEAD", "/ui/", &[], None);
    assert_eq!(head.status, 200);
    server
        .get("/ui/nope.js")
        .assert_error(404, "Resource not found");
    server
        .get("/ui/ui.js/x")
        .assert_error(404, "Resource not found");
    server
        .request("POST", "/ui/", &[], None)
        .assert_error(405, "Method not allowed");

    // The liveness probe is untouched.
    let root = server.get("/");
    assert_eq!(root.status, 200);
    assert!(root.body.is_empty());

    let url = format!("ui=\"http://{}/ui/\"", server.address);
    assert!(
        server
            .stderr()
            .iter()
            .any(|l| l.contains("listening") && l.contains(&url)),
        "the startup line names {url}: {:?}",
        server.stderr()
    );
}

#[test]
fn the_page_needs_no_token_where_the_api_does() {
    let server = Server::start(&["--auth_mode", "trusted"]);
    assert_eq!(server.get("/ui/").status, 200);
    assert_eq!(server.get("/ui/ui.js").status, 200);
    server
        .get("/api/v1/services")
        .assert_error(401, "Missing request Authorization header");

    // Where the API is https only, so is the page: it never reads an API of another origin.
    let https = Server::start(&["--require_https"]);
    let redirect = https.request("GET", "/ui/", &[("Host", "registry.example")], None);
    assert_eq!(redirect.status, 301);
    assert_eq!(
        redirect.header("location"),
        Some("https://registry.example/ui/")
    );
}

/// The browser, the script's runtime and its packages, or a message saying what is missing.
fn browser_tools() -> Result<(PathBuf, PathBuf), String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
    let chromium =
        PathBuf::from(std::env::var_os("CHROMIUM").unwrap_or_else(|| "/usr/bin/chromium".into()));
    if !chromium.exists() {
        return Err(format!("{} is missing", chromium.display()));
    }
    if !dir.join("node_modules/playwright-core").exists() {
        return Err(format!("npm ci has not run in {}", dir.display()));
    }
    Ok((chromium, dir))
}

/// A fresh, empty directory under the system's temporary directory.
fn fresh_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir =
        std::env::temp_dir().join(format!("a8registry-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A port nothing listens on now, for the replication ports of a cluster's nodes.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The browser script's process, killed (with the browser it started) if the test ends early.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        // SIGTERM first: playwright then closes the browser; SIGKILL if it does not exit soon.
        // SAFETY: kill(2) on the PID of a child this test started and has not reaped.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(5);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether something still accepts connections at `address`.
fn accepting(address: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
}

#[test]
fn the_page_follows_the_registry_live_in_a_real_browser() {
    let (chromium, dir) = browser_tools()
        .unwrap_or_else(|missing| panic!("{missing}: run static-tests/run.sh, which installs it"));
    // The open registry mirrors a file catalog too, so the page shows a catalog's health and
    // an instance that comes from a file; its short TTLs let an instance expire in the test.
    let catalog = fresh_dir("ui-catalog");
    std::fs::write(
        catalog.join("default.json"),
        r#"{"instances":[{"service_name":"legacy-db","endpoint":{"type":"tcp","value":"10.9.0.1:5432"},"status":"down"}]}"#,
    )
    .unwrap();
    let catalog_arg = catalog.to_str().unwrap().to_string();
    let open_flags = ["--fs_catalog", &catalog_arg, "--min_ttl", "1s"];
    let mut open = Some(Server::start(&open_flags));
    let open_address = open.as_ref().unwrap().address;
    let trusted = Server::start(&["--auth_mode", "trusted"]);
    let jwt = Server::start(&["--auth_mode", "jwt", "--jwt_secret", JWT_SECRET]);
    // Two nodes of a cluster, linked by static peers: the page of one shows the cluster's health and
    // what is registered on the other.
    let ports = [free_port(), free_port()];
    let peers = format!("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let cluster_node = |port: u16| {
        let port = port.to_string();
        Server::start(&[
            "--replication",
            "--replication_port",
            &port,
            "--peers",
            &peers,
        ])
    };
    let (node_a, node_b) = (cluster_node(ports[0]), cluster_node(ports[1]));
    let profile = fresh_dir("chromium-profile");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    let mut node = ChildGuard(
        Command::new("node")
            .arg(dir.join("check.mjs"))
            .current_dir(&dir)
            .env("A8_UI_OPEN", format!("http://{open_address}"))
            .env("A8_UI_TRUSTED", format!("http://{}", trusted.address))
            .env("A8_UI_JWT", format!("http://{}", jwt.address))
            .env("A8_UI_JWT_SECRET", JWT_SECRET)
            .env("A8_UI_NODE_A", format!("http://{}", node_a.address))
            .env("A8_UI_NODE_B", format!("http://{}", node_b.address))
            .env("A8_UI_SCREENSHOTS", &shots)
            .env("A8_UI_PROFILE", &profile)
            .env("CHROMIUM", &chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect(
                "start node (run static-tests/run.sh, which installs what the page's test needs)",
            ),
    );
    let mut to_script = node.0.stdin.take().unwrap();
    let stdout = node.0.stdout.take().unwrap();
    let (lines, from_script) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let mut output = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match from_script.recv_timeout(left) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!(
                    "the browser script ran over {BROWSER_TIMEOUT:?}:\n{}",
                    output.join("\n")
                );
            }
        };
        eprintln!("{line}");
        match line.as_str() {
            "control: stop" => {
                drop(open.take());
                let gone_by = Instant::now() + Duration::from_secs(10);
                while accepting(open_address) && Instant::now() < gone_by {
                    std::thread::sleep(Duration::from_millis(20));
                }
                writeln!(to_script, "stopped").unwrap();
            }
            "control: start" => {
                // Three seconds away: the page has failed more than once and backs off.
                std::thread::sleep(Duration::from_secs(3));
                let port = open_address.port().to_string();
                let flags = [&["--api_port", port.as_str()][..], &open_flags].concat();
                open = Some(Server::start(&flags));
                writeln!(to_script, "started").unwrap();
            }
            _ => {}
        }
        output.push(line);
    }
    let status = node.0.wait().expect("the browser script's exit");
    let _ = std::fs::remove_dir_all(&profile);
    let _ = std::fs::remove_dir_all(&catalog);
    let failures: Vec<&String> = output.iter().filter(|l| l.starts_with("not ok")).collect();
    assert!(
        status.success() && failures.is_empty(),
        "the page failed in the browser ({status}):\n{}",
        output.join("\n")
    );
    assert!(
        output
            .iter()
            .any(|l| l.starts_with("ui: ") && l.ends_with(" 0 failed")),
        "the script did not finish:\n{}",
        output.join("\n")
    );
    assert!(shots.join("ui.png").exists() && shots.join("ui-phone.png").exists());
}
