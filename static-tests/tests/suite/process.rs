//! The process as an operator sees it: configuration errors, `--help`, `--version`, logging,
//! graceful shutdown (spec 6.1, 6.2; cases 7.9).

use a8registry_static_tests::*;
use std::io::Write;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[track_caller]
fn assert_config_error(env: &[(&str, &str)], args: &[&str], names: &[&str]) {
    let (code, _, stderr) = run_to_exit(args, env);
    assert_eq!(code, Some(2), "{env:?} {args:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    for name in names {
        assert!(
            stderr.contains(name),
            "{env:?} {args:?}: {stderr:?} lacks {name}"
        );
    }
}

#[test]
fn configuration_errors_exit_2_naming_the_option() {
    assert_config_error(
        &[("A8_AUTH_MODE", "foo")],
        &[],
        &["--auth_mode", "A8_AUTH_MODE"],
    );
    assert_config_error(
        &[("A8_AUTH_MODE", "")],
        &[],
        &["--auth_mode", "A8_AUTH_MODE"],
    );
    assert_config_error(
        &[("A8_AUTH_MODE", "jwt")],
        &[],
        &["--jwt_secret", "A8_JWT_SECRET"],
    );
    assert_config_error(
        &[("A8_LOG_LEVEL", "INFO")],
        &[],
        &["--log_level", "A8_LOG_LEVEL"],
    );
    assert_config_error(
        &[("A8_LOG_FORMAT", "xml")],
        &[],
        &["--log_format", "A8_LOG_FORMAT"],
    );
    assert_config_error(
        &[("A8_DEFAULT_TTL", "30")],
        &[],
        &["--default_ttl", "A8_DEFAULT_TTL"],
    );
    assert_config_error(
        &[("A8_REQUIRE_HTTPS", "yes")],
        &[],
        &["--require_https", "A8_REQUIRE_HTTPS"],
    );
    assert_config_error(
        &[("A8_API_PORT", "abc")],
        &[],
        &["--api_port", "A8_API_PORT"],
    );
    assert_config_error(
        &[],
        &["--api_port", "70000"],
        &["--api_port", "A8_API_PORT"],
    );
    assert_config_error(
        &[("A8_STORE", "redis")],
        &[],
        &["--store_address", "A8_STORE_ADDRESS"],
    );
    assert_config_error(&[("A8_STORE", "bogus")], &[], &["--store", "A8_STORE"]);
    assert_config_error(
        &[("A8_MIN_TTL", "60s"), ("A8_MAX_TTL", "30s")],
        &[],
        &["--min_ttl", "A8_MIN_TTL", "--max_ttl"],
    );
    assert_config_error(
        &[],
        &["--default_ttl", "5s"],
        &["--default_ttl", "A8_DEFAULT_TTL"],
    );
    assert_config_error(&[], &["--workers", "0"], &["--workers", "A8_WORKERS"]);
    assert_config_error(
        &[],
        &["--max_body_size", "0"],
        &["--max_body_size", "A8_MAX_BODY_SIZE"],
    );
    assert_config_error(
        &[],
        &["--idle_timeout", "0"],
        &["--idle_timeout", "A8_IDLE_TIMEOUT"],
    );
    assert_config_error(
        &[],
        &["--api_bind", "localhost"],
        &["--api_bind", "A8_API_BIND"],
    );
    assert_config_error(&[], &["--no_such_flag"], &["--no_such_flag"]);
    assert_config_error(
        &[],
        &["--fs_catalog", "/nonexistent/catalog"],
        &["--fs_catalog", "A8_FS_CATALOG", "not an existing directory"],
    );
}

/// The options of capabilities this build does not have: `--help` says so on each one's line.
/// Every capability is built now: none is listed.
const NOT_AVAILABLE_YET: &[&str] = &[];

#[test]
fn help_says_which_options_are_not_available_yet() {
    let (code, help, _) = run_to_exit(&["--help"], &[]);
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = help.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.trim_start().strip_prefix("--") else {
            continue;
        };
        let name = name.split_whitespace().next().unwrap();
        let described = lines.get(i + 1).copied().unwrap_or_default();
        assert_eq!(
            described.contains("not available yet"),
            NOT_AVAILABLE_YET.contains(&name),
            "--{name}: {described}"
        );
    }
}

#[test]
fn negative_capacity_means_unlimited() {
    let server = Server::start_with_env(&[], &[("A8_NAMESPACE_CAPACITY", "-5")]);
    for i in 0..5 {
        let r = server.post_json(
            "/api/v1/instances",
            &registration("cap", &format!("h:{i}"), ""),
        );
        assert_eq!(r.status, 201);
    }
}

#[test]
fn flags_win_over_environment() {
    let server = Server::start_with_env(&["--default_ttl", "45s"], &[("A8_DEFAULT_TTL", "20s")]);
    let r = server.post_json("/api/v1/instances", &registration("ttl", "h:1", ""));
    assert_eq!(r.json()["ttl"], 45);
    let server = Server::start_with_env(&[], &[("A8_DEFAULT_TTL", "20s")]);
    let r = server.post_json("/api/v1/instances", &registration("ttl", "h:1", ""));
    assert_eq!(r.json()["ttl"], 20);
}

/// The option names listed by `--help`.
fn help_options() -> Vec<String> {
    let (code, stdout, _) = run_to_exit(&["--help"], &[]);
    assert_eq!(code, Some(0));
    stdout
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .filter(|name| name != "help" && name != "version")
        .collect()
}

#[test]
fn help_lists_every_option_with_env_and_default() {
    let (_, stdout, _) = run_to_exit(&["--help"], &[]);
    let options = help_options();
    for expected in [
        "api_bind",
        "api_port",
        "workers",
        "max_body_size",
        "idle_timeout",
        "request_timeout",
        "max_connections",
        "max_body_memory",
        "log_level",
        "log_format",
        "auth_mode",
        "jwt_secret",
        "require_https",
        "namespace_capacity",
        "default_ttl",
        "min_ttl",
        "max_ttl",
        "store",
        "store_address",
        "store_password",
        "replication",
        "replication_port",
        "sync_timeout",
        "cluster_dir",
        "cluster_size",
        "k8s_url",
        "k8s_token",
        "k8s_token_file",
        "k8s_ca_file",
        "k8s_max_namespaces",
        "k8s_idle_timeout",
        "eureka_url",
        "catalog_poll",
        "fs_catalog",
    ] {
        assert!(
            options.iter().any(|o| o == expected),
            "--help lacks --{expected}"
        );
        let env = format!("env A8_{}, default", expected.to_uppercase());
        assert!(stdout.contains(&env), "--help lacks {env}");
    }
    let (code, version, _) = run_to_exit(&["--version"], &[]);
    assert_eq!(code, Some(0));
    assert!(version.starts_with("a8registry "));
}

#[test]
fn readme_configuration_table_matches_help() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let in_readme: Vec<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `--"))
        .map(|l| l.split('`').next().unwrap().to_string())
        .collect();
    let in_help = help_options();
    assert_eq!(in_readme, in_help, "README table rows vs --help, in order");
    // Each row names the env twin and the default that --help gives.
    let (_, help, _) = run_to_exit(&["--help"], &[]);
    for name in &in_help {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `--{name}`")))
            .unwrap();
        let env = format!("`A8_{}`", name.to_uppercase());
        assert!(row.contains(&env), "README row of --{name} lacks {env}");
        let default = help
            .lines()
            .skip_while(|l| !l.trim_start().starts_with(&format!("--{name} ")))
            .nth(1)
            .and_then(|l| l.split("default ").nth(1))
            .and_then(|l| l.split(": ").next())
            .unwrap();
        assert!(
            row.contains(&format!("`{default}`")),
            "README row of --{name} lacks default `{default}`"
        );
    }
}

#[test]
fn logs_in_every_format_with_access_lines_at_debug() {
    for format in ["text", "json", "logstash"] {
        let server = Server::start(&["--log_format", format, "--log_level", "debug"]);
        server.get("/api/v1/services");
        std::thread::sleep(Duration::from_millis(200));
        let lines = server.stderr();
        let startup = &lines[0];
        let access = lines
            .iter()
            .find(|l| l.contains("/api/v1/services"))
            .unwrap_or_else(|| panic!("no access line in {lines:?}"));
        match format {
            "text" => {
                assert!(startup.contains("level=info") && startup.contains("listening"));
                assert!(access.contains("level=debug") && access.contains("status=\"200\""));
                assert!(access.contains("namespace=\"default\""), "{access}");
            }
            _ => {
                let startup: serde_json::Value = serde_json::from_str(startup).unwrap();
                let access: serde_json::Value = serde_json::from_str(access).unwrap();
                let (message, time) = if format == "json" {
                    ("msg", "time")
                } else {
                    assert_eq!(startup["@version"], "1");
                    ("message", "@timestamp")
                };
                assert_eq!(startup[message], "listening");
                assert!(startup[time].is_string());
                assert!(startup["config"].as_str().unwrap().contains("api_port=0"));
                assert_eq!(access["level"], "debug");
                assert_eq!(access["method"], "GET");
                assert_eq!(access["status"], "200");
                assert!(access["micros"].is_string());
            }
        }
    }
    // At the default level there are no access lines.
    let quiet = Server::start(&[]);
    quiet.get("/api/v1/services");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!quiet
        .stderr()
        .iter()
        .any(|l| l.contains("/api/v1/services")));
}

#[test]
fn access_lines_carry_the_query_the_client_and_the_user_agent() {
    let server = Server::start(&["--log_level", "debug"]);
    let mut conn = server.connect();
    let client = conn.local_addr().unwrap().to_string();
    send(
        &mut conn,
        "GET",
        "/api/v1/instances?service_name=probe&tags=a,b",
        &[("User-Agent", "probe/1.0 (\"quoted\")")],
        None,
    );
    assert_eq!(read_response(&mut conn, false).unwrap().status, 200);
    server.get("/api/v1/services");
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        let lines = server.stderr();
        if let Some(line) = lines.iter().find(|l| l.contains("service_name=probe")) {
            break line.clone();
        }
        assert!(Instant::now() < deadline, "no access line in {lines:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    for field in [
        "path=\"/api/v1/instances\"",
        "query=\"service_name=probe&tags=a,b\"",
        &format!("client=\"{client}\""),
        "user_agent=\"probe/1.0 (\\\"quoted\\\")\"",
        "operation=\"ListInstances\"",
    ] {
        assert!(line.contains(field), "{field} not in {line}");
    }
    // Without a query or a User-Agent, the fields are there and empty. The log thread writes
    // asynchronously: wait for the line as above.
    let plain = loop {
        let lines = server.stderr();
        if let Some(line) = lines
            .iter()
            .find(|l| l.contains("path=\"/api/v1/services\""))
        {
            break line.clone();
        }
        assert!(Instant::now() < deadline, "no access line in {lines:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        plain.contains("query=\"\"") && plain.contains("user_agent=\"\""),
        "{plain}"
    );
}

#[test]
fn sigterm_finishes_requests_in_flight_then_exits_0() {
    let mut server = Server::start(&[]);
    let body = registration("drain", "h:1", "");
    let mut in_flight = server.connect();
    // Half a request: the server has started reading it when the signal comes.
    let head = format!(
        "POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    in_flight.write_all(head.as_bytes()).unwrap();
    in_flight.write_all(&body.as_bytes()[..5]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    server.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    // Draining: new connections are refused while the request in flight is still open.
    assert!(
        std::net::TcpStream::connect(server.address).is_err(),
        "still accepting during the drain"
    );
    in_flight.write_all(&body.as_bytes()[5..]).unwrap();
    let response = read_response(&mut in_flight, false).unwrap();
    assert_eq!(response.status, 201);
    assert_eq!(response.header("connection"), Some("close"));
    assert_eq!(server.wait_exit(Duration::from_secs(6)), Some(0));
}

#[test]
fn sigint_with_idle_connections_exits_0_without_waiting_for_them() {
    let mut server = Server::start(&[]);
    let _idle: Vec<_> = (0..10).map(|_| server.connect()).collect();
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(Duration::from_secs(6)), Some(0));
    std::thread::sleep(Duration::from_millis(100));
    // Idle connections are not requests in flight: the server did not wait for them.
    let stopped = server
        .stderr()
        .into_iter()
        .find(|l| l.contains("msg=\"stopped\""));
    let stopped = stopped.expect("a stopped line");
    assert!(stopped.contains("unfinished_requests=\"0\""), "{stopped}");
}

#[test]
fn a_second_registry_on_the_same_port_fails_to_start() {
    let first = Server::start(&[]);
    let port = first.address.port().to_string();
    let (code, _, stderr) = run_to_exit(&["--api_bind", "127.0.0.1", "--api_port", &port], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen"), "{stderr}");
    assert_eq!(first.get("/").status, 200, "the first one is unharmed");
}

#[test]
fn a_port_in_use_is_a_startup_failure() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    let (code, _, stderr) = run_to_exit(&["--api_bind", "127.0.0.1", "--api_port", &port], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen"), "{stderr}");
}

/// A registry whose stderr is a pipe that this test reads only when it chooses to; killed by PID
/// when dropped.
struct UnreadStderr {
    child: std::process::Child,
    address: std::net::SocketAddr,
    /// The pipe, positioned after the startup line; nothing reads it until a test takes it.
    stderr: Option<std::io::BufReader<std::process::ChildStderr>>,
}

impl UnreadStderr {
    /// Starts the registry and reads its stderr up to the startup line only.
    fn start(args: &[&str]) -> UnreadStderr {
        use std::io::BufRead;
        let mut child = std::process::Command::new(binary())
            .args(["--api_bind", "127.0.0.1", "--api_port", "0"])
            .args(args)
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the registry");
        let mut stderr = std::io::BufReader::new(child.stderr.take().expect("piped"));
        let mut line = String::new();
        stderr.read_line(&mut line).expect("a startup line");
        let address = line
            .split("address=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no listen address in {line:?}"));
        UnreadStderr {
            child,
            address,
            stderr: Some(stderr),
        }
    }
}

impl Drop for UnreadStderr {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn debug_logging_into_a_stderr_pipe_nobody_reads_never_stalls_the_server() {
    use std::io::BufRead;
    let mut server = UnreadStderr::start(&["--log_level", "debug"]);
    // Every request writes an access line of about 150 bytes: 20,000 of them are some 3 MB, far
    // more than the 64 KiB a pipe holds (the server used to stop after 428 requests).
    const REQUESTS: usize = 20_000;
    const PIPELINED: usize = 100;
    let mut conn = connect(server.address);
    let batch = "GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(PIPELINED);
    for round in 0..REQUESTS / PIPELINED {
        conn.write_all(batch.as_bytes()).unwrap();
        for i in 0..PIPELINED {
            let response = read_response(&mut conn, false)
                .unwrap_or_else(|e| panic!("request {} unanswered: {e}", round * PIPELINED + i));
            assert_eq!(response.status, 200);
        }
    }
    // Now drain the pipe: the lines that did not fit were counted, and the count is reported.
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let stderr = server.stderr.take().expect("the pipe");
    std::thread::spawn(move || {
        for line in stderr.lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + CLIENT_TIMEOUT;
    let dropped: u64 = loop {
        let wait = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines_rx
            .recv_timeout(wait)
            .expect("a \"log lines dropped\" line once the pipe drains");
        if line.contains("msg=\"log lines dropped\"") {
            assert!(line.contains("level=warning"), "{line}");
            break line
                .split("count=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no count in {line}"));
        }
    };
    assert!(
        dropped > 0 && dropped < REQUESTS as u64,
        "dropped {dropped}"
    );
    // Logging carries on, and the last line reaches stderr before the process exits.
    assert_eq!(
        read_response_to(&mut conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        200
    );
    // SAFETY: kill(2) on the PID of a child this test started.
    unsafe {
        libc::kill(server.child.id() as i32, libc::SIGTERM);
    }
    drop(conn);
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let rest: Vec<String> = lines_rx.iter().collect();
    let last = rest
        .iter()
        .rfind(|l| !l.contains("log lines dropped"))
        .expect("lines after the drop report");
    assert!(last.contains("msg=\"stopped\""), "last line: {last}");
}

/// Sends one raw request on `conn` and returns the response status.
fn read_response_to(conn: &mut std::net::TcpStream, raw: &str) -> u16 {
    conn.write_all(raw.as_bytes()).unwrap();
    read_response(conn, false).unwrap().status
}

#[test]
fn the_startup_summary_names_every_option_and_masks_every_secret() {
    const SENTINEL: &str = "sentinel-value-0x5ec";
    let server = Server::start_with_env(
        &["--auth_mode", "jwt", "--jwt_secret", SENTINEL],
        &[("A8_STORE_PASSWORD", SENTINEL), ("A8_K8S_TOKEN", SENTINEL)],
    );
    // Something is logged after startup too, and nothing may carry the secret.
    server.get("/uptime");
    let lines = server.stderr();
    assert!(
        lines.iter().all(|l| !l.contains(SENTINEL)),
        "a secret in {lines:?}"
    );
    let startup = &lines[0];
    for shown in [
        "jwt_secret=(set)",
        "store_password=(set)",
        "k8s_token=(set)",
        "auth_mode=jwt",
        "api_port=0",
    ] {
        assert!(startup.contains(shown), "{shown} in {startup}");
    }
    for name in help_options() {
        assert!(
            startup.contains(&format!(" {name}=")) || startup.contains(&format!("\"{name}=")),
            "{name} in {startup}"
        );
    }
}

/// Runs the binary on a free loopback port with these flags and env; its exit code and stderr,
/// or `None` when it is still running after `timeout` (then it is killed).
fn exit_within(args: &[&str], env: &[(&str, &str)], timeout: Duration) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = std::process::Command::new(binary())
        .args(["--api_bind", "127.0.0.1", "--api_port", "0"])
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run binary");
    let deadline = Instant::now() + timeout;
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    if code.is_some() {
        let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
    }
    (code, stderr)
}

#[test]
fn connection_and_body_limits_are_bounded_options() {
    for (args, env, names) in [
        (
            &["--max_body_size", "1000000000000"][..],
            &[][..],
            &["--max_body_size", "A8_MAX_BODY_SIZE"][..],
        ),
        (
            &["--max_body_size", "1073741825"],
            &[],
            &["--max_body_size", "A8_MAX_BODY_SIZE"],
        ),
        (
            &[],
            &[("A8_MAX_CONNECTIONS", "0")],
            &["--max_connections", "A8_MAX_CONNECTIONS"],
        ),
        (
            &[],
            &[("A8_MAX_CONNECTIONS", "1000001")],
            &["--max_connections", "A8_MAX_CONNECTIONS"],
        ),
        (
            &[],
            &[("A8_REQUEST_TIMEOUT", "0s")],
            &["--request_timeout", "A8_REQUEST_TIMEOUT"],
        ),
        (
            &[],
            &[("A8_MAX_BODY_MEMORY", "1048575")],
            &["--max_body_memory", "A8_MAX_BODY_MEMORY", "--max_body_size"],
        ),
    ] {
        let (code, stderr) = exit_within(args, env, Duration::from_secs(5));
        assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        for name in names {
            assert!(
                stderr.contains(name),
                "{args:?} {env:?}: {stderr:?} lacks {name}"
            );
        }
    }
    // At the bound, the registry starts.
    let server = Server::start(&[
        "--max_body_size",
        "1073741824",
        "--max_body_memory",
        "1073741824",
    ]);
    assert_eq!(server.get("/").status, 200);
}

#[test]
fn sigterm_answers_every_request_already_received() {
    let mut server = Server::start(&[]);
    const CLIENTS: usize = 32;
    // Pipelined per client: together far more than the server answers before it notices the
    // signal, so connections still have requests received and unanswered when it does.
    const PIPELINED: usize = 3000;
    let written = Arc::new(Barrier::new(CLIENTS + 1));
    let pipeline = "GET /api/v1/services HTTP/1.1\r\nHost: x\r\n\r\n".repeat(PIPELINED);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (address, written, pipeline) = (server.address, written.clone(), pipeline.clone());
            std::thread::spawn(move || {
                let mut conn = connect(address);
                send(&mut conn, "GET", "/", &[], None);
                assert_eq!(read_response(&mut conn, false).unwrap().status, 200);
                // Answers are read while the requests are written, until the server closes; a
                // connection that answered everything before the signal closes without one more.
                let mut reader = conn.try_clone().unwrap();
                let answers = std::thread::spawn(move || {
                    let (mut answered, mut closed_early) = (0, false);
                    while let Ok(r) = read_response(&mut reader, false) {
                        assert_eq!(r.status, 200);
                        answered += 1;
                        if r.header("connection") == Some("close") {
                            closed_early = answered < PIPELINED;
                            assert!(closed_by_server(&mut reader, Duration::from_secs(5)));
                            break;
                        }
                    }
                    (answered, closed_early)
                });
                // On loopback a completed write has arrived in the server's socket.
                conn.write_all(pipeline.as_bytes()).unwrap();
                written.wait();
                answers.join().unwrap()
            })
        })
        .collect();
    written.wait();
    server.signal(libc::SIGTERM);
    let (mut unanswered, mut cut_short) = (0, 0);
    for client in clients {
        let (answered, closed_early) = client.join().unwrap();
        unanswered += PIPELINED - answered;
        cut_short += usize::from(closed_early || answered < PIPELINED);
    }
    assert_eq!(
        unanswered,
        0,
        "{unanswered} of {} requests received before SIGTERM got no answer \
         ({cut_short} connections cut short)",
        CLIENTS * PIPELINED
    );
    assert_eq!(server.wait_exit(Duration::from_secs(6)), Some(0));
}

#[test]
fn access_lines_name_the_operation_of_the_route() {
    let server = Server::start(&["--log_level", "debug"]);
    let id = server
        .post_json("/api/v1/instances", &registration("ops", "h:1", ""))
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let heartbeat = format!("/api/v1/instances/{id}/heartbeat");
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/uptime"),
        ("PUT", heartbeat.as_str()),
        ("GET", "/api/v1/services/ops"),
        ("GET", "/eureka/v2/apps/delta"),
        ("GET", "/nowhere"),
        ("PATCH", "/api/v1/services"),
    ] {
        server.request(method, path, &[], None);
    }
    std::thread::sleep(Duration::from_millis(200));
    let lines = server.stderr();
    for (path, operation) in [
        ("/api/v1/instances", "Register"),
        ("/", "Root"),
        ("/uptime", "Uptime"),
        (heartbeat.as_str(), "Renew"),
        ("/api/v1/services/ops", "ListServiceInstances"),
        ("/eureka/v2/apps/delta", "AppsDelta"),
        ("/nowhere", "NotFound"),
        ("/api/v1/services", "NotFound"),
    ] {
        let field = format!("path=\"{path}\"");
        let line = lines
            .iter()
            .find(|l| l.contains("msg=\"request\"") && l.contains(&field))
            .unwrap_or_else(|| panic!("no access line for {path}: {lines:#?}"));
        assert!(
            line.contains(&format!("operation=\"{operation}\"")),
            "{path} is {operation}: {line}"
        );
    }
}
