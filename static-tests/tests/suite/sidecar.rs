//! `a8registry sidecar` (sidecar contract): the real binary as sidecar, next to a small real
//! application it supervises (`sidecar_app.py`: an HTTP server whose health can be flipped and
//! which can exit with a given code), registering into a real registry through a recording proxy
//! that shows the timeline and can play an outage or a hang.
//!
//! Timings are asserted only as generous functional bounds around the contract's figures (a 3 s
//! TTL gives a 1 s heartbeat period).

use a8registry_static_tests::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The TTL the sidecar asks for in these tests: the registry (started with `--min_ttl 1s`)
/// answers 3, so the heartbeat period is 1 s.
const TTL: &str = "3s";
const PERIOD: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// The recording proxy

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Forward every request to the upstream registry.
    Forward,
    /// Read the request, then close the connection without an answer.
    Down,
    /// Read the request and never answer (until the mode changes).
    Hang,
}

/// One request the proxy saw.
#[derive(Clone, Debug)]
struct Seen {
    at: Instant,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
    /// The upstream's status, once answered.
    status: Option<u16>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn is(&self, method: &str, path_start: &str) -> bool {
        self.method == method && self.path.starts_with(path_start)
    }
}

struct ProxyState {
    mode: Mutex<Mode>,
    upstream: Mutex<SocketAddr>,
    seen: Mutex<Vec<Seen>>,
    closed: AtomicBool,
}

struct Proxy {
    address: SocketAddr,
    state: Arc<ProxyState>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            mode: Mutex::new(Mode::Forward),
            upstream: Mutex::new(upstream),
            seen: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        });
        let shared = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if shared.closed.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || serve_proxied(conn, &shared));
            }
        });
        Proxy { address, state }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    fn set_upstream(&self, upstream: SocketAddr) {
        *self.state.upstream.lock().unwrap() = upstream;
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Waits until `count` requests match; returns them.
    fn wait_for(
        &self,
        count: usize,
        timeout: Duration,
        matches: impl Fn(&Seen) -> bool,
    ) -> Vec<Seen> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<Seen> = self.seen().into_iter().filter(|s| matches(s)).collect();
            if found.len() >= count || Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn timeline(&self) -> String {
        let seen = self.seen();
        let start = seen.first().map(|s| s.at);
        seen.iter()
            .map(|s| {
                format!(
                    "+{:.2}s {} {} -> {:?}",
                    start.map_or(0.0, |t| s.at.duration_since(t).as_secs_f64()),
                    s.method,
                    s.path,
                    s.status
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::SeqCst);
        self.set_mode(Mode::Down);
        let _ = TcpStream::connect(self.address);
    }
}

/// One client connection: requests in, each recorded, then forwarded, refused or held.
fn serve_proxied(conn: TcpStream, state: &ProxyState) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    loop {
        let mut head = Vec::new();
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        head.extend_from_slice(request_line.as_bytes());
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            head.extend_from_slice(line.as_bytes());
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.trim_end().split_once(':') {
                headers.push((name.trim().to_string(), value.trim().to_string()));
            }
        }
        let length: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let index = {
            let mut seen = state.seen.lock().unwrap();
            seen.push(Seen {
                at: Instant::now(),
                method: method.clone(),
                path,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
                status: None,
            });
            seen.len() - 1
        };
        let mode = *state.mode.lock().unwrap();
        match mode {
            Mode::Down => return,
            Mode::Hang => {
                let deadline = Instant::now() + Duration::from_secs(30);
                while *state.mode.lock().unwrap() == Mode::Hang && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            Mode::Forward => {}
        }
        let upstream = *state.upstream.lock().unwrap();
        let Ok(mut up) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) else {
            return;
        };
        let _ = up.set_read_timeout(Some(CLIENT_TIMEOUT));
        if up
            .write_all(&head)
            .and_then(|_| up.write_all(&body))
            .is_err()
        {
            return;
        }
        let Ok(answer) = read_response(&mut up, method == "HEAD") else {
            return;
        };
        state.seen.lock().unwrap()[index].status = Some(answer.status);
        let mut out = format!("HTTP/1.1 {} X\r\n", answer.status).into_bytes();
        for (name, value) in &answer.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&answer.body);
        if writer.write_all(&out).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The sidecar and its application

/// A port that was free a moment ago, for the application to listen on.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn app_script() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("sidecar_app.py")
        .to_string_lossy()
        .into_owned()
}

/// A scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("a8-sidecar-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The test application: its port and report file.
struct App {
    port: u16,
    report: PathBuf,
}

impl App {
    fn new(dir: &std::path::Path) -> App {
        App {
            port: free_port(),
            report: dir.join("app-report"),
        }
    }

    /// The command line that starts it, with extra flags.
    fn command(&self, extra: &[&str]) -> Vec<String> {
        let mut argv = vec![
            "python3".to_string(),
            app_script(),
            self.port.to_string(),
            "--report".into(),
            self.report.to_string_lossy().into_owned(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv
    }

    fn report(&self) -> String {
        std::fs::read_to_string(&self.report).unwrap_or_default()
    }

    fn pid(&self) -> Option<i32> {
        self.report()
            .lines()
            .find_map(|l| l.strip_prefix("pid ")?.trim().parse().ok())
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the application never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn post(&self, path: &str) {
        let mut conn = connect(SocketAddr::from(([127, 0, 0, 1], self.port)));
        send(&mut conn, "POST", path, &[], Some(""));
        let _ = read_response(&mut conn, false);
    }

    fn running(&self) -> bool {
        // SAFETY: kill(2) with signal 0 only checks that the process exists.
        self.pid()
            .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on the test application's own pid, from its report.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}

struct Sidecar {
    child: Child,
    started: Instant,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Sidecar {
    /// Starts `a8registry sidecar` with these arguments and only these environment variables
    /// (and `PATH`, to find the application).
    fn start(args: &[String], env: &[(&str, &str)]) -> Sidecar {
        Sidecar::start_with(Command::new(binary()), args, env)
    }

    /// Starts it as process 1 of a new PID namespace, as a container's entrypoint; its host pid
    /// is then the only child of `unshare`, which forwards nothing and dies with it.
    fn start_as_process_1(args: &[String]) -> Sidecar {
        let mut command = Command::new("unshare");
        command
            .args(["--pid", "--fork", "--kill-child"])
            .arg(binary());
        Sidecar::start_with(command, args, &[])
    }

    fn start_with(mut command: Command, args: &[String], env: &[(&str, &str)]) -> Sidecar {
        command
            .arg("sidecar")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command.spawn().expect("start the sidecar");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Sidecar {
            child,
            started,
            lines,
        }
    }

    fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of the sidecar this test started.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn wait_line(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The registry of these tests: heartbeat periods of a second need TTLs of 3 s.
fn registry(extra: &[&str]) -> Server {
    let mut args = vec!["--min_ttl", "1s"];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn listing(server: &Server, token: Option<&str>) -> serde_json::Value {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    server
        .request("GET", "/api/v1/instances", &headers, None)
        .json()
}

/// The standard flags: register `reviews:v1,canary` at 127.0.0.1:<port> through `url`.
fn flags(url: &str, port: u16) -> Vec<String> {
    strings(&[
        "--register",
        "--service",
        "reviews:v1,canary",
        "--endpoint_host",
        "127.0.0.1",
        "--endpoint_port",
        &port.to_string(),
        "--registry_url",
        url,
        "--ttl",
        TTL,
    ])
}

fn gaps(seen: &[Seen]) -> Vec<f64> {
    seen.windows(2)
        .map(|w| w[1].at.duration_since(w[0].at).as_secs_f64())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The request timeline

#[test]
fn sidecar_registers_heartbeats_every_third_of_the_ttl_and_deregisters_before_the_app_stops() {
    let registry = registry(&["--auth_mode", "trusted"]);
    let proxy = Proxy::start(registry.address);
    let dir = scratch("timeline");
    let app = App::new(&dir);
    let registry_url = format!("http://{}", registry.address);
    let mut args = flags(&proxy.url(), app.port);
    args.extend(strings(&["--registry_token", "team-a", "--"]));
    args.extend(app.command(&["--registry", &registry_url]));
    // The application inherits the sidecar's environment: the token reaches it there.
    let mut sidecar = Sidecar::start(&args, &[("APP_TOKEN", "team-a")]);
    app.wait_listening();

    // Answered heartbeats: the proxy records the answer after the request.
    let beats = proxy.wait_for(3, Duration::from_secs(10), |s| {
        s.is("PUT", "/api/v1/instances/") && s.status.is_some()
    });
    assert_eq!(beats.len(), 3, "timeline:\n{}", proxy.timeline());
    let seen = proxy.seen();
    let register = &seen[0];
    assert!(register.is("POST", "/api/v1/instances"), "{register:?}");
    assert_eq!(register.path, "/api/v1/instances");
    let after_start = register.at.duration_since(sidecar.started);
    assert!(
        after_start >= Duration::from_millis(900),
        "registration {after_start:?} after start: the agent begins 1 s after start"
    );
    assert_eq!(
        register.body,
        format!(
            r#"{{"service_name":"reviews","endpoint":{{"type":"http","value":"127.0.0.1:{}"}},"ttl":3,"tags":["v1","canary"]}}"#,
            app.port
        )
    );
    assert_eq!(register.header("content-type"), Some("application/json"));
    assert_eq!(register.header("authorization"), Some("Bearer team-a"));
    assert_eq!(register.status, Some(201));

    // Heartbeats: the registry's id, an empty body, every period after the previous one.
    let id = listing(&registry, Some("team-a"))["instances"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for beat in &beats {
        assert_eq!(beat.path, format!("/api/v1/instances/{id}/heartbeat"));
        assert_eq!(beat.header("content-length"), Some("0"));
        assert_eq!(beat.header("authorization"), Some("Bearer team-a"));
        assert_eq!(beat.status, Some(200));
    }
    let mut beat_times = vec![register.clone()];
    beat_times.extend(beats.iter().cloned());
    for gap in gaps(&beat_times) {
        assert!(
            (0.8..2.5).contains(&gap),
            "heartbeat gaps {:?} (period {PERIOD:?})\n{}",
            gaps(&beat_times),
            proxy.timeline()
        );
    }
    // One request per heartbeat period, nothing else.
    assert_eq!(
        proxy.seen().len(),
        1 + proxy.seen().iter().filter(|s| s.method == "PUT").count()
    );

    // SIGTERM: deregister, then signal the application, then exit 0.
    sidecar.signal(libc::SIGTERM);
    assert_eq!(
        sidecar.wait_exit(Duration::from_secs(8)),
        Some(0),
        "{}",
        sidecar.stderr()
    );
    let deletes: Vec<Seen> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 1, "{}", proxy.timeline());
    assert_eq!(deletes[0].path, format!("/api/v1/instances/{id}"));
    assert_eq!(deletes[0].status, Some(200));
    let report = app.report();
    let at_sigterm = report
        .lines()
        .find_map(|l| l.strip_prefix("SIGTERM "))
        .unwrap_or_else(|| panic!("the application got no SIGTERM: {report}"));
    assert_eq!(
        at_sigterm, r#"{"instances":[]}"#,
        "the application learned of the shutdown while it was still registered"
    );
    assert_eq!(instance_count(&listing(&registry, Some("team-a"))), 0);
    let stderr = sidecar.stderr();
    for line in [
        "a8registry sidecar starting",
        "Launching app python3",
        "Service successfully registered with Amalgam8",
        "Intercepted signal SIGTERM",
        "Service successfully deregistered with Amalgam8",
        "Shutting down with exit code 0",
    ] {
        assert!(stderr.contains(line), "{line}: {stderr}");
    }
    assert!(
        !stderr.contains("team-a"),
        "the token is never logged: {stderr}"
    );
}

#[test]
fn a_heartbeat_answered_410_registers_again_at_once() {
    let first = registry(&[]);
    let proxy = Proxy::start(first.address);
    let mut sidecar = Sidecar::start(&flags(&proxy.url(), 9080), &[]);
    let beats = proxy.wait_for(1, Duration::from_secs(6), |s| s.is("PUT", "/api/v1/"));
    assert_eq!(beats.len(), 1, "{}", proxy.timeline());

    // The registry restarts empty: the next heartbeat gets 410.
    let second = registry(&[]);
    proxy.set_upstream(second.address);
    drop(first);
    let gone = proxy.wait_for(1, Duration::from_secs(5), |s| {
        s.is("PUT", "/api/v1/") && s.status == Some(410)
    });
    assert_eq!(gone.len(), 1, "{}", proxy.timeline());
    let registered = proxy.wait_for(2, Duration::from_secs(5), |s| {
        s.is("POST", "/api/v1/instances") && s.status.is_some()
    });
    assert_eq!(registered.len(), 2, "{}", proxy.timeline());
    let delay = registered[1].at.duration_since(gone[0].at);
    assert!(
        delay < Duration::from_millis(500),
        "registered again {delay:?} after the 410: it must be at once, without backoff\n{}",
        proxy.timeline()
    );
    assert_eq!(registered[1].status, Some(201));
    assert_eq!(instance_count(&listing(&second, None)), 1);
    // Heartbeats resume against the new registration.
    let resumed = proxy.wait_for(1, Duration::from_secs(4), |s| {
        s.is("PUT", "/api/v1/") && s.at > registered[1].at && s.status == Some(200)
    });
    assert_eq!(resumed.len(), 1, "{}", proxy.timeline());
    assert!(sidecar.wait_line(
        "Service registration renewal had failed",
        Duration::from_secs(1)
    ));
    assert_eq!(
        sidecar.wait_exit(Duration::ZERO),
        None,
        "an outage never ends the sidecar"
    );
}

#[test]
fn a_registry_outage_backs_off_and_the_return_is_registered_within_six_seconds() {
    let registry = registry(&[]);
    let proxy = Proxy::start(registry.address);
    let mut sidecar = Sidecar::start(&flags(&proxy.url(), 9080), &[]);
    assert_eq!(
        proxy
            .wait_for(1, Duration::from_secs(6), |s| s.is("PUT", "/api/v1/"))
            .len(),
        1
    );
    proxy.set_mode(Mode::Down);
    let outage = Instant::now();
    // Failed heartbeat at once (within a period), then attempts after 1, 2 and 4 s (±20 %).
    let attempts = proxy.wait_for(3, Duration::from_secs(12), |s| {
        s.at > outage && s.is("POST", "/api/v1/instances")
    });
    assert_eq!(attempts.len(), 3, "{}", proxy.timeline());
    let failed_beat = proxy
        .seen()
        .into_iter()
        .rfind(|s| s.at > outage && s.method == "PUT" && s.at < attempts[0].at)
        .unwrap_or_else(|| panic!("no failed heartbeat\n{}", proxy.timeline()));
    let mut series = vec![failed_beat];
    series.extend(attempts.iter().cloned());
    let observed = gaps(&series);
    for (gap, expected) in observed.iter().zip([1.0, 2.0, 4.0]) {
        assert!(
            *gap >= expected * 0.75 && *gap <= expected * 1.25 + 0.6,
            "backoff gaps {observed:?}, expected about 1, 2, 4 s\n{}",
            proxy.timeline()
        );
    }
    proxy.set_mode(Mode::Forward);
    let back = Instant::now();
    let registered = proxy.wait_for(1, Duration::from_secs(8), |s| {
        s.at > back && s.is("POST", "/api/v1/instances") && s.status == Some(201)
    });
    assert_eq!(registered.len(), 1, "{}", proxy.timeline());
    let took = registered[0].at.duration_since(back);
    assert!(
        took <= Duration::from_millis(6500),
        "registered {took:?} after the registry came back\n{}",
        proxy.timeline()
    );
    eprintln!("figure: re-registered {took:?} after the registry's return");
    // Never more than one registration attempt per 0.8 s.
    let posts: Vec<Seen> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST")
        .collect();
    assert!(
        gaps(&posts).iter().all(|g| *g >= 0.75),
        "{}",
        proxy.timeline()
    );
    assert_eq!(sidecar.wait_exit(Duration::ZERO), None);
    assert!(sidecar.stderr().contains("Service registration had failed"));
}

#[test]
fn a_hanging_registry_is_given_up_after_five_seconds() {
    let registry = registry(&[]);
    let proxy = Proxy::start(registry.address);
    let _sidecar = Sidecar::start(&flags(&proxy.url(), 9080), &[]);
    assert_eq!(
        proxy
            .wait_for(1, Duration::from_secs(6), |s| s.is("PUT", "/api/v1/"))
            .len(),
        1
    );
    proxy.set_mode(Mode::Hang);
    let hang = Instant::now();
    let hung = proxy.wait_for(1, Duration::from_secs(3), |s| {
        s.at > hang && s.method == "PUT"
    });
    assert_eq!(hung.len(), 1, "{}", proxy.timeline());
    let next = proxy.wait_for(1, Duration::from_secs(10), |s| {
        s.at > hung[0].at && s.is("POST", "/api/v1/instances")
    });
    assert_eq!(next.len(), 1, "{}", proxy.timeline());
    let waited = next[0].at.duration_since(hung[0].at).as_secs_f64();
    // 5 s timeout, then the first backoff delay of 1 s (±20 %).
    assert!(
        (5.5..=7.5).contains(&waited),
        "the hung heartbeat was given up after {waited:.2}s\n{}",
        proxy.timeline()
    );
    proxy.set_mode(Mode::Forward);
    let back = Instant::now();
    let registered = proxy.wait_for(1, Duration::from_secs(12), |s| {
        s.at > back && s.is("POST", "/api/v1/instances") && s.status == Some(201)
    });
    assert_eq!(registered.len(), 1, "{}", proxy.timeline());
}

// ---------------------------------------------------------------------------------------------
// Health checks

#[test]
fn health_checks_gate_registration_and_heartbeats_configured_from_the_environment_only() {
    let registry = registry(&[]);
    let proxy = Proxy::start(registry.address);
    let dir = scratch("health");
    let app = App::new(&dir);
    let health_url = format!("http://127.0.0.1:{}/health", app.port);
    let port = app.port.to_string();
    let proxy_url = proxy.url();
    let command = app.command(&["--unhealthy"]);
    let env = [
        ("A8_REGISTER", "true"),
        ("A8_SERVICE", "reviews"),
        ("A8_ENDPOINT_HOST", "127.0.0.1"),
        ("A8_ENDPOINT_PORT", port.as_str()),
        ("A8_REGISTRY_URL", proxy_url.as_str()),
        ("A8_TTL", TTL),
        ("A8_HEALTHCHECKS", health_url.as_str()),
        ("A8_HEALTHCHECK_INTERVAL", "300ms"),
    ];
    let _sidecar = Sidecar::start(&command, &env);
    app.wait_listening();

    // Unhealthy from the start: nothing is sent to the registry.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(proxy.seen().is_empty(), "{}", proxy.timeline());

    // Healthy: it registers at once and heartbeats.
    app.post("/health/ok");
    let healthy = Instant::now();
    let registered = proxy.wait_for(1, Duration::from_secs(3), |s| {
        s.is("POST", "/api/v1/instances")
    });
    assert_eq!(registered.len(), 1, "{}", proxy.timeline());
    assert!(registered[0].at.duration_since(healthy) < Duration::from_millis(2500));
    assert_eq!(
        proxy
            .wait_for(1, Duration::from_secs(3), |s| s.method == "PUT")
            .len(),
        1
    );

    // Unhealthy again: heartbeats stop, no deregistration, and the instance expires.
    app.post("/health/fail");
    std::thread::sleep(Duration::from_millis(1500));
    let stopped = proxy.seen().len();
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(
        proxy.seen().len(),
        stopped,
        "requests while unhealthy:\n{}",
        proxy.timeline()
    );
    assert!(
        proxy.seen().iter().all(|s| s.method != "DELETE"),
        "{}",
        proxy.timeline()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while instance_count(&listing(&registry, None)) > 0 {
        assert!(Instant::now() < deadline, "the instance never expired");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Healthy again: registered at once.
    app.post("/health/ok");
    let again = proxy.wait_for(2, Duration::from_secs(3), |s| {
        s.is("POST", "/api/v1/instances")
    });
    assert_eq!(again.len(), 2, "{}", proxy.timeline());
    assert_eq!(instance_count(&listing(&registry, None)), 1);
}

#[test]
fn health_checks_go_straight_to_the_application_whatever_proxy_the_environment_names() {
    let registry = registry(&[]);
    let dir = scratch("proxy-env");
    let app = App::new(&dir);
    let health_url = format!("http://127.0.0.1:{}/health", app.port);
    let port = app.port.to_string();
    // The registry is reached as `localhost`, which NO_PROXY exempts; the health check's
    // 127.0.0.1 is not exempt, and the proxy accepts nothing.
    let registry_url = format!("http://localhost:{}", registry.address.port());
    let dead_proxy = format!("http://127.0.0.1:{}", free_port());
    let command = app.command(&[]);
    let env = [
        ("A8_REGISTER", "true"),
        ("A8_SERVICE", "reviews"),
        ("A8_ENDPOINT_HOST", "127.0.0.1"),
        ("A8_ENDPOINT_PORT", port.as_str()),
        ("A8_REGISTRY_URL", registry_url.as_str()),
        ("A8_TTL", TTL),
        ("A8_HEALTHCHECKS", health_url.as_str()),
        ("A8_HEALTHCHECK_INTERVAL", "300ms"),
        ("HTTP_PROXY", dead_proxy.as_str()),
        ("http_proxy", dead_proxy.as_str()),
        ("NO_PROXY", "localhost"),
    ];
    let _sidecar = Sidecar::start(&command, &env);
    app.wait_listening();
    let deadline = Instant::now() + Duration::from_secs(10);
    while instance_count(&listing(&registry, None)) == 0 {
        assert!(
            Instant::now() < deadline,
            "never registered: the health check went to the proxy"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn tcp_and_command_checks_from_the_configuration_file() {
    let registry = registry(&[]);
    let dir = scratch("config");
    let app = App::new(&dir);
    let config = dir.join("sidecar.yaml");
    let command = app.command(&[]);
    let quoted: Vec<String> = command.iter().map(|a| format!("{a:?}")).collect();
    std::fs::write(
        &config,
        format!(
            "# a8sidecar's keys\n---\nregister: true\nservice:\n  name: ratings\n  tags: [v2]\n\
             endpoint:\n  host: 127.0.0.1\n  port: {port}\n  type: tcp\nregistry:\n  url: http://{registry}\n\
             ttl: 3s\nhealthchecks:\n  - type: tcp\n    value: tcp://127.0.0.1:{port}\n    interval: 300ms\n\
             \x20 - type: file\n    value: /bin/sh\n    args: [-c, 'exit 3']\n    code: 3\n    interval: 300ms\n\
             commands:\n  - cmd: [{cmd}]\n    on_exit: terminate\n  - cmd: [sh, -c, 'exit 9']\n    on_exit: ignore\n\
             log_level: debug\nunknown_key: 1\n",
            port = app.port,
            registry = registry.address,
            cmd = quoted.join(", ")
        ),
    )
    .unwrap();
    let config = config.to_string_lossy().into_owned();
    let sidecar = Sidecar::start(&strings(&["--config", &config]), &[]);
    let deadline = Instant::now() + Duration::from_secs(8);
    while instance_count(&listing(&registry, None)) == 0 {
        assert!(
            Instant::now() < deadline,
            "never registered: {}",
            sidecar.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let instance = listing(&registry, None)["instances"][0].clone();
    assert_eq!(instance["service_name"], "ratings");
    assert_eq!(instance["endpoint"]["type"], "tcp");
    assert_eq!(
        instance["endpoint"]["value"],
        format!("127.0.0.1:{}", app.port)
    );
    assert_eq!(instance["tags"], serde_json::json!(["v2"]));
    let stderr = sidecar.stderr();
    assert!(stderr.contains("Health checks passing"), "{stderr}");
    // An `ignore` command that exits is only logged.
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("level=warning") && l.contains("App terminated with exit code 9")),
        "{stderr}"
    );
    assert!(app.running(), "the `terminate` application runs on");
    assert!(
        stderr.contains("unknown key unknown_key in the configuration file is ignored"),
        "{stderr}"
    );

    // A TCP check of a port nobody listens on never passes: nothing is registered.
    let closed = free_port();
    let other = registry_for_closed_port_check(closed);
    assert!(other.0.wait_line(
        "Health check failed: tcp://127.0.0.1:",
        Duration::from_secs(4)
    ));
    assert_eq!(instance_count(&listing(&other.1, None)), 0);
}

/// A sidecar whose only check is a TCP check of `port`, on its own registry.
fn registry_for_closed_port_check(port: u16) -> (Sidecar, Server) {
    let registry = registry(&[]);
    let mut args = flags(&format!("http://{}", registry.address), port);
    args.extend(strings(&[
        "--healthchecks",
        &format!("tcp://127.0.0.1:{port}"),
        "--healthcheck_interval",
        "300ms",
    ]));
    (Sidecar::start(&args, &[]), registry)
}

// ---------------------------------------------------------------------------------------------
// Supervision, exit codes, signals

#[test]
fn the_sidecar_exits_with_the_applications_status_after_deregistering() {
    let registry = registry(&[]);
    let proxy = Proxy::start(registry.address);
    let dir = scratch("exit");
    let app = App::new(&dir);
    let mut args = flags(&proxy.url(), app.port);
    args.push("--".into());
    args.extend(app.command(&[]));
    let mut sidecar = Sidecar::start(&args, &[]);
    app.wait_listening();
    assert_eq!(
        proxy
            .wait_for(1, Duration::from_secs(5), |s| s.status == Some(201))
            .len(),
        1
    );
    app.post("/exit/7");
    assert_eq!(
        sidecar.wait_exit(Duration::from_secs(8)),
        Some(7),
        "{}",
        sidecar.stderr()
    );
    let deletes = proxy.wait_for(1, Duration::ZERO, |s| s.method == "DELETE");
    assert_eq!(deletes.len(), 1, "{}", proxy.timeline());
    assert_eq!(instance_count(&listing(&registry, None)), 0);
    assert!(sidecar.stderr().contains("App terminated with exit code 7"));

    // The command keeps its own flags; a signal gives 128 + S; a missing command gives 1.
    let closed = format!("http://127.0.0.1:{}", free_port());
    for (command, expected) in [
        (
            vec!["sh", "-c", "test \"$1\" = --port && exit 4", "x", "--port"],
            4,
        ),
        (vec!["sh", "-c", "kill -9 $$"], 128 + 9),
        (vec!["/nonexistent/app"], 1),
    ] {
        let mut args = flags(&closed, 9080);
        args.push("--".into());
        args.extend(strings(&command));
        let mut sidecar = Sidecar::start(&args, &[]);
        assert_eq!(
            sidecar.wait_exit(Duration::from_secs(8)),
            Some(expected),
            "{command:?}: {}",
            sidecar.stderr()
        );
    }
    // Without `--`, the first free argument starts the command.
    let mut args = flags(&closed, 9080);
    args.extend(strings(&["sh", "-c", "exit 5"]));
    let mut sidecar = Sidecar::start(&args, &[]);
    assert_eq!(sidecar.wait_exit(Duration::from_secs(8)), Some(5));
}

#[test]
fn sigterm_is_forwarded_and_an_application_that_ignores_it_is_killed_after_three_seconds() {
    let registry = registry(&[]);
    let dir = scratch("sigkill");
    let app = App::new(&dir);
    let mut args = flags(&format!("http://{}", registry.address), app.port);
    args.push("--".into());
    args.extend(app.command(&["--ignore-term"]));
    let mut sidecar = Sidecar::start(&args, &[]);
    app.wait_listening();
    assert!(sidecar.wait_line("Service successfully registered", Duration::from_secs(5)));
    let stop = Instant::now();
    sidecar.signal(libc::SIGTERM);
    assert_eq!(
        sidecar.wait_exit(Duration::from_secs(8)),
        Some(0),
        "{}",
        sidecar.stderr()
    );
    let took = stop.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "the application was killed {took:?} after the signal, before its 3 s grace: {}",
        sidecar.stderr()
    );
    assert!(!app.running(), "the application survived the sidecar");
    let stderr = sidecar.stderr();
    assert!(stderr.contains("Intercepted signal SIGTERM"), "{stderr}");
    assert!(stderr.contains("killed"), "{stderr}");
    assert_eq!(instance_count(&listing(&registry, None)), 0);
}

// ---------------------------------------------------------------------------------------------
// The Eureka protocol

#[test]
fn the_eureka_protocol_registers_renews_and_cancels_through_the_eureka_api() {
    let first = registry(&[]);
    let proxy = Proxy::start(first.address);
    let mut args = flags(&format!("{}/eureka/v2", proxy.url()), 9080);
    args.extend(strings(&["--registry_protocol", "eureka"]));
    let mut sidecar = Sidecar::start(&args, &[]);
    let renewals = proxy.wait_for(1, Duration::from_secs(6), |s| {
        s.is("PUT", "/eureka/v2/apps/") && s.status.is_some()
    });
    assert_eq!(renewals.len(), 1, "{}", proxy.timeline());
    let register = &proxy.seen()[0];
    assert!(
        register.is("POST", "/eureka/v2/apps/REVIEWS"),
        "{register:?}"
    );
    assert_eq!(register.status, Some(204));
    let body: serde_json::Value = serde_json::from_str(&register.body).unwrap();
    assert_eq!(body["instance"]["instanceId"], "127.0.0.1:reviews:9080");
    assert_eq!(body["instance"]["metadata"]["amalgam8.tags"], "v1,canary");
    assert_eq!(body["instance"]["leaseInfo"]["durationInSecs"], 3);
    assert_eq!(
        renewals[0].path,
        "/eureka/v2/apps/REVIEWS/127.0.0.1:reviews:9080"
    );
    assert_eq!(renewals[0].status, Some(200));
    let instance = listing(&first, None)["instances"][0].clone();
    assert_eq!(instance["id"], "REVIEWS:127.0.0.1:reviews:9080");
    assert_eq!(instance["endpoint"]["value"], "127.0.0.1:9080");
    assert_eq!(instance["tags"], serde_json::json!(["v1", "canary"]));

    // A registry that forgot the instance answers 404: registered again at once.
    let second = registry(&[]);
    proxy.set_upstream(second.address);
    drop(first);
    let unknown = proxy.wait_for(1, Duration::from_secs(5), |s| s.status == Some(404));
    assert_eq!(unknown.len(), 1, "{}", proxy.timeline());
    let again = proxy.wait_for(2, Duration::from_secs(3), |s| {
        s.is("POST", "/eureka/v2/apps/REVIEWS")
    });
    assert_eq!(again.len(), 2, "{}", proxy.timeline());
    assert!(again[1].at.duration_since(unknown[0].at) < Duration::from_millis(500));

    // SIGINT stops it as SIGTERM does.
    sidecar.signal(libc::SIGINT);
    assert_eq!(sidecar.wait_exit(Duration::from_secs(8)), Some(0));
    assert!(sidecar.stderr().contains("Intercepted signal SIGINT"));
    let cancel = proxy.wait_for(1, Duration::ZERO, |s| s.method == "DELETE");
    assert_eq!(cancel.len(), 1, "{}", proxy.timeline());
    assert_eq!(
        cancel[0].path,
        "/eureka/v2/apps/REVIEWS/127.0.0.1:reviews:9080"
    );
    assert_eq!(instance_count(&listing(&second, None)), 0);
    assert!(sidecar
        .stderr()
        .contains("Service successfully registered with Eureka"));

    // The original registry's base path, directly; the app and instance id as configured.
    let registry = registry(&[]);
    let mut args = flags(
        &format!("http://{}/api/eureka/default/v2/", registry.address),
        9080,
    );
    args.extend(strings(&[
        "--registry_protocol",
        "eureka",
        "--eureka_app",
        "Reviews-App",
        "--eureka_instance_id",
        "reviews-1",
    ]));
    let sidecar = Sidecar::start(&args, &[]);
    assert!(
        sidecar.wait_line(
            "Service successfully registered with Eureka",
            Duration::from_secs(5)
        ),
        "{}",
        sidecar.stderr()
    );
    assert_eq!(
        listing(&registry, None)["instances"][0]["id"],
        "Reviews-App:reviews-1"
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration

#[track_caller]
fn assert_sidecar_config_error(args: &[&str], env: &[(&str, &str)], expected: &str) {
    let mut all = vec!["sidecar"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run_to_exit(&all, env);
    assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("a8registry sidecar: "), "{stderr}");
    assert!(
        stderr.contains(expected),
        "{args:?} {env:?}: {stderr:?} lacks {expected:?}"
    );
    assert!(stdout.is_empty());
}

#[test]
fn bad_configuration_exits_2_with_one_line_and_starts_nothing() {
    let base = [
        "--register",
        "--service",
        "s",
        "--endpoint_port",
        "80",
        "--registry_url",
        "http://r:8080",
    ];
    let with = |extra: &[&'static str]| {
        let mut all = base.to_vec();
        all.extend_from_slice(extra);
        all
    };
    assert_sidecar_config_error(
        &[],
        &[],
        "nothing to do: --register (A8_REGISTER) is not set",
    );
    assert_sidecar_config_error(
        &with(&["--endpoint_port", "0"]),
        &[],
        "--endpoint_port (A8_ENDPOINT_PORT)",
    );
    assert_sidecar_config_error(
        &[],
        &[
            ("A8_REGISTER", "true"),
            ("A8_SERVICE", "s"),
            ("A8_REGISTRY_URL", "http://r"),
            ("A8_ENDPOINT_PORT", "70000"),
        ],
        "invalid value \"70000\" for --endpoint_port (A8_ENDPOINT_PORT): must be 1..65535",
    );
    assert_sidecar_config_error(
        &with(&["--proxy"]),
        &[],
        "--proxy (A8_PROXY) is not supported: a8registry sidecar registers only",
    );
    assert_sidecar_config_error(
        &with(&[]),
        &[("A8_DNS", "true")],
        "--dns (A8_DNS) is not supported",
    );
    assert_sidecar_config_error(&with(&["--ttl", "30"]), &[], "--ttl (A8_TTL)");
    assert_sidecar_config_error(
        &with(&["--controller_poll", "15"]),
        &[],
        "--controller_poll (A8_CONTROLLER_POLL)",
    );
    assert_sidecar_config_error(
        &with(&["--healthchecks", "ftp://x"]),
        &[],
        "--healthchecks (A8_HEALTHCHECKS)",
    );
    assert_sidecar_config_error(
        &with(&["--discovery_adapter", "eureka"]),
        &[],
        "--registry_protocol eureka",
    );
    assert_sidecar_config_error(
        &with(&["--log_level", "INFO"]),
        &[],
        "--log_level (A8_LOG_LEVEL)",
    );
    assert_sidecar_config_error(
        &with(&["--registry_url", "registry:8080"]),
        &[],
        "--registry_url (A8_REGISTRY_URL)",
    );
    assert_sidecar_config_error(
        &with(&["--bogus", "1"]),
        &[],
        "unknown argument \"--bogus\"",
    );
    assert_sidecar_config_error(
        &with(&["--config", "/nonexistent/a8.yaml"]),
        &[],
        "--config (A8_CONFIG)",
    );
    let dir = scratch("badconfig");
    let file = dir.join("bad.yaml");
    std::fs::write(
        &file,
        "register: true\nservice:\n  name: s\nendpoint:\n  port: abc\n",
    )
    .unwrap();
    let file = file.to_string_lossy().into_owned();
    assert_sidecar_config_error(
        &["--config", &file],
        &[],
        "endpoint.port in the configuration file",
    );
    std::fs::write(dir.join("bad.yaml"), "register: true\nservice: &anchor x\n").unwrap();
    assert_sidecar_config_error(
        &["--config", &file],
        &[],
        "line 2: anchors are not supported",
    );

    // An ignored setting warns and starts; --supervise warns.
    let mut args = with(&[
        "--controller_url",
        "http://controller",
        "--supervise",
        "--",
        "true",
    ]);
    args.insert(0, "sidecar");
    let (code, _, stderr) = run_to_exit(&args, &[("A8_DNS_DOMAIN", "x")]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("--controller_url (A8_CONTROLLER_URL) is ignored: it configures a feature a8registry sidecar does not include"), "{stderr}");
    assert!(
        stderr.contains("--dns_domain (A8_DNS_DOMAIN) is ignored"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--supervise (A8_SUPERVISE) is deprecated"),
        "{stderr}"
    );
}

#[test]
fn sidecar_help_lists_every_option_with_its_variable_and_default() {
    let (code, stdout, _) = run_to_exit(&["sidecar", "--help"], &[]);
    assert_eq!(code, Some(0));
    for (flag, env, default) in [
        ("--register", "A8_REGISTER", "default false"),
        ("--service", "A8_SERVICE", "default (empty)"),
        ("--endpoint_type", "A8_ENDPOINT_TYPE", "default http"),
        ("--registry_url", "A8_REGISTRY_URL", "default (empty)"),
        ("--registry_token", "A8_REGISTRY_TOKEN", "default (empty)"),
        ("--healthchecks", "A8_HEALTHCHECKS", "default (empty)"),
        (
            "--registry_protocol",
            "A8_REGISTRY_PROTOCOL",
            "default amalgam8",
        ),
        ("--ttl", "A8_TTL", "default 60s"),
        (
            "--healthcheck_interval",
            "A8_HEALTHCHECK_INTERVAL",
            "default 30s",
        ),
        (
            "--healthcheck_timeout",
            "A8_HEALTHCHECK_TIMEOUT",
            "default 5s",
        ),
        ("--log_format", "A8_LOG_FORMAT", "default text"),
        ("--controller_url", "A8_CONTROLLER_URL", "default (empty)"),
    ] {
        let entry = stdout
            .split("\n  --")
            .find(|e| e.starts_with(&flag[2..]) && e[flag.len() - 2..].starts_with(' '))
            .unwrap_or_else(|| panic!("{flag} missing from:\n{stdout}"));
        assert!(
            entry.contains(&format!("env {env}, {default}")),
            "{flag}: {entry}"
        );
    }
    let (code, stdout, _) = run_to_exit(&["sidecar", "--version"], &[]);
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("a8registry "));
    let (_, stdout, _) = run_to_exit(&["--help"], &[]);
    assert!(stdout.contains("a8registry sidecar [options]"), "{stdout}");
}

#[test]
fn readme_sidecar_table_matches_sidecar_help() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `A8_")).collect();
    let (_, help, _) = run_to_exit(&["sidecar", "--help"], &[]);
    let lines: Vec<&str> = help.lines().collect();
    let mut expected = Vec::new();
    for pair in lines.windows(2) {
        let Some(name) = pair[0]
            .strip_prefix("  --")
            .and_then(|l| l.split(' ').next())
        else {
            continue;
        };
        let Some(rest) = pair[1].trim_start().strip_prefix("env ") else {
            continue;
        };
        let (env, rest) = rest.split_once(", default ").unwrap();
        let default = rest.split(": ").next().unwrap();
        expected.push(format!("| `{env}` | `--{name}` | `{default}` |"));
    }
    assert_eq!(
        rows.len(),
        expected.len(),
        "README sidecar rows vs sidecar --help"
    );
    for (row, start) in rows.iter().zip(&expected) {
        assert!(
            row.starts_with(start.as_str()),
            "{row:?} should start with {start:?}"
        );
    }
}

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn https_checks_trust_their_ca_cert_file_and_not_an_unknown_issuer() {
    let registry = registry(&[]);
    let dir = scratch("https");
    let app = App::new(&dir);
    let command = app.command(&[
        "--tls",
        &fixture("test-server.pem"),
        &fixture("test-server.key"),
    ]);
    let quoted: Vec<String> = command.iter().map(|a| format!("{a:?}")).collect();
    let config = dir.join("sidecar.yaml");
    std::fs::write(
        &config,
        format!(
            "register: true\nservice:\n  name: secure\nendpoint:\n  host: 127.0.0.1\n  port: {port}\n\
             registry:\n  url: http://{registry}\nttl: 3s\nhealthchecks:\n  - type: https\n\
             \x20   value: https://localhost:{port}/health\n    ca_cert_file: {ca:?}\n    interval: 300ms\n\
             commands:\n  - cmd: [{cmd}]\n    on_exit: terminate\n",
            port = app.port,
            registry = registry.address,
            ca = fixture("test-ca.pem"),
            cmd = quoted.join(", ")
        ),
    )
    .unwrap();
    let sidecar = Sidecar::start(&strings(&["--config", &config.to_string_lossy()]), &[]);
    assert!(
        sidecar.wait_line("Service successfully registered", Duration::from_secs(8)),
        "{}",
        sidecar.stderr()
    );
    assert_eq!(
        listing(&registry, None)["instances"][0]["service_name"],
        "secure"
    );

    // The same check without the CA file: the certificate's issuer is unknown, it never passes.
    let other = Server::start(&["--min_ttl", "1s"]);
    let mut args = flags(&format!("http://{}", other.address), app.port);
    args.extend(strings(&[
        "--healthchecks",
        &format!("https://localhost:{}/health", app.port),
        "--healthcheck_interval",
        "300ms",
    ]));
    let untrusting = Sidecar::start(&args, &[]);
    assert!(
        untrusting.wait_line(
            "Health check failed: GET https://localhost:",
            Duration::from_secs(5)
        ),
        "{}",
        untrusting.stderr()
    );
    let failure = untrusting.stderr();
    assert!(
        failure.to_lowercase().contains("issuer"),
        "a certificate error: {failure}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(instance_count(&listing(&other, None)), 0);
}

#[test]
fn kill_group_signals_reach_what_the_command_started() {
    let registry = registry(&[]);
    let dir = scratch("group");
    let pid_file = dir.join("grandchild");
    let config = dir.join("sidecar.yaml");
    std::fs::write(
        &config,
        format!(
            "register: true\nservice:\n  name: group\nendpoint:\n  host: 127.0.0.1\n  port: 9080\n\
             registry:\n  url: http://{}\ncommands:\n  - cmd: [sh, -c, 'sleep 60 & echo $! > {}; wait']\n\
             \x20   kill_group: true\n    on_exit: terminate\n",
            registry.address,
            pid_file.display()
        ),
    )
    .unwrap();
    let mut sidecar = Sidecar::start(&strings(&["--config", &config.to_string_lossy()]), &[]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let grandchild: i32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the command never started its child"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    sidecar.signal(libc::SIGTERM);
    assert_eq!(
        sidecar.wait_exit(Duration::from_secs(8)),
        Some(0),
        "{}",
        sidecar.stderr()
    );
    // Running, not merely a zombie waiting for whoever reaps orphans here.
    let alive = || {
        std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit(')')
                    .next()
                    .map(|rest| rest.trim_start().to_string())
            })
            .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive() {
        // SAFETY: kill(2) on the test's own leftover process.
        unsafe {
            libc::kill(grandchild, libc::SIGKILL);
        }
        panic!("the signal did not reach the command's process group");
    }
}

/// The children of a process (every thread's), with their state letter (`Z`: a zombie).
fn children_of(pid: u32) -> Vec<(u32, char)> {
    let mut children = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return children;
    };
    for task in tasks.flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in list
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            let state = std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| stat.rsplit(')').next()?.trim_start().chars().next())
                .unwrap_or('?');
            children.push((child, state));
        }
    }
    children
}

#[test]
fn as_process_1_the_sidecar_reaps_orphans_and_keeps_its_exit_rules() {
    let closed = format!("http://127.0.0.1:{}", free_port());
    let mut args = flags(&closed, 9080);
    // The subshell leaves an orphan (`sleep 1`) that is handed to process 1: the sidecar.
    args.extend(strings(&["--", "sh", "-c", "(sleep 1 &); exec sleep 30"]));
    let mut unshare = Sidecar::start_as_process_1(&args);
    let deadline = Instant::now() + Duration::from_secs(5);
    let sidecar = loop {
        if let Some((pid, _)) = children_of(unshare.child.id()).first() {
            break *pid;
        }
        assert!(
            Instant::now() < deadline,
            "no sidecar under unshare: {}",
            unshare.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    // The orphan becomes its child...
    let deadline = Instant::now() + Duration::from_millis(900);
    while children_of(sidecar).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the orphan never reached process 1: {:?}\n{}",
            children_of(sidecar),
            unshare.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // ...and, once it exits, is reaped: no zombie stays.
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        let children = children_of(sidecar);
        if children.len() == 1 && children.iter().all(|(_, state)| *state != 'Z') {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "children of process 1: {children:?} (Z: a zombie)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGTERM to process 1 still stops it with status 0.
    // SAFETY: kill(2) on the sidecar this test started, by its host pid.
    unsafe {
        libc::kill(sidecar as i32, libc::SIGTERM);
    }
    assert_eq!(
        unshare.wait_exit(Duration::from_secs(8)),
        Some(0),
        "{}",
        unshare.stderr()
    );
    assert!(unshare.stderr().contains("Intercepted signal SIGTERM"));
}

#[test]
fn a_configuration_file_that_never_ends_is_refused_without_reading_it_all() {
    // /dev/zero never ends: reading it whole would take all the memory there is.
    assert_sidecar_config_error(&["--config", "/dev/zero", "--register"], &[], "larger than");
}

// ---------------------------------------------------------------------------------------------
// Name lookups with a deadline

/// A `getaddrinfo` that never answers for names ending in `.stuck.test` (and asks the real one
/// for every other name), built for `LD_PRELOAD`: a resolver stuck on unreachable name servers.
const STUCK_RESOLVER_C: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <string.h>
#include <unistd.h>

typedef int (*lookup)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **found) {
    const char *suffix = ".stuck.test";
    size_t n = node ? strlen(node) : 0, k = strlen(suffix);
    if (n >= k && strcmp(node + n - k, suffix) == 0) {
        for (;;) sleep(3600);
    }
    lookup real = (lookup)dlsym(RTLD_NEXT, "getaddrinfo");
    return real(node, service, hints, found);
}
"#;

/// The stuck resolver as a shared object, or `None` (said on stderr) when the binary under test
/// is statically linked, where `LD_PRELOAD` does nothing.
fn stuck_resolver(dir: &std::path::Path) -> Option<String> {
    let mut head = vec![0u8; 4096];
    let read = std::fs::File::open(binary())
        .and_then(|mut f| f.read(&mut head))
        .unwrap();
    if !head[..read].windows(3).any(|w| w == b"ld-") {
        eprintln!("skipped: the binary under test is statically linked (no LD_PRELOAD)");
        return None;
    }
    let source = dir.join("stuck.c");
    let library = dir.join("stuck.so");
    std::fs::write(&source, STUCK_RESOLVER_C).unwrap();
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .arg("-ldl")
        .status()
        .expect("a C compiler (cc) for the stuck resolver");
    assert!(built.success());
    Some(library.to_string_lossy().into_owned())
}

#[test]
fn a_stuck_name_lookup_fails_a_tcp_check_run_within_its_timeout() {
    let dir = scratch("stuck-tcp");
    let Some(preload) = stuck_resolver(&dir) else {
        return;
    };
    let registry = registry(&[]);
    let mut args = flags(&format!("http://{}", registry.address), 9080);
    args.extend(strings(&[
        "--healthchecks",
        "tcp://app.stuck.test:9080",
        "--healthcheck_timeout",
        "1s",
        "--healthcheck_interval",
        "500ms",
    ]));
    let sidecar = Sidecar::start(&args, &[("LD_PRELOAD", &preload)]);
    assert!(
        sidecar.wait_line(
            "Health check failed: tcp://app.stuck.test:9080: cannot resolve app.stuck.test: no answer within 1s",
            Duration::from_secs(8)
        ),
        "{}",
        sidecar.stderr()
    );
    // Runs go on failing (the stuck lookups are bounded), and nothing is registered.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(instance_count(&listing(&registry, None)), 0);
    sidecar.signal(libc::SIGTERM);
    let mut sidecar = sidecar;
    assert_eq!(sidecar.wait_exit(Duration::from_secs(5)), Some(0));
}

#[test]
fn a_stuck_name_lookup_of_the_endpoint_host_does_not_stall_a_eureka_registration() {
    let dir = scratch("stuck-eureka");
    let Some(preload) = stuck_resolver(&dir) else {
        return;
    };
    let registry = registry(&[]);
    let args = strings(&[
        "--register",
        "--service",
        "stuck",
        "--endpoint_host",
        "app.stuck.test",
        "--endpoint_port",
        "9080",
        "--registry_protocol",
        "eureka",
        "--registry_url",
        &format!("http://{}/eureka/v2", registry.address),
        "--ttl",
        TTL,
    ]);
    let mut sidecar = Sidecar::start(&args, &[("LD_PRELOAD", &preload)]);
    assert!(
        sidecar.wait_line(
            "Service successfully registered with Eureka",
            Duration::from_secs(10)
        ),
        "{}",
        sidecar.stderr()
    );
    let r = registry.request(
        "GET",
        "/eureka/v2/apps/STUCK/app.stuck.test:stuck:9080",
        &[("Accept", "application/json")],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["instance"]["ipAddr"],
        "app.stuck.test",
        "the host that did not resolve in time is sent as it is"
    );
    // Renewals go on (each is a PUT answered 200, which keeps the instance listed past its TTL).
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        registry
            .get("/eureka/v2/apps/STUCK/app.stuck.test:stuck:9080")
            .status,
        200
    );
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.wait_exit(Duration::from_secs(5)), Some(0));
    assert_eq!(
        registry
            .get("/eureka/v2/apps/STUCK/app.stuck.test:stuck:9080")
            .status,
        404
    );
}

// ---------------------------------------------------------------------------------------------
// A health check that cannot start

#[test]
fn a_health_check_whose_thread_cannot_start_stops_the_sidecar_with_a_line_naming_it() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: limiting threads needs root (to run the sidecar as nobody)");
        return;
    }
    let dir = scratch("nothread");
    // The application runs as nobody too: it writes its pid where nobody may write.
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let pid_file = dir.join("app-pid");
    let registry = registry(&[]);
    let mut args = flags(&format!("http://{}", registry.address), 9);
    for n in 0..8 {
        args.push("--healthchecks".into());
        args.push(format!("tcp://127.0.0.1:{}", 1 + n));
    }
    args.extend(strings(&[
        "--",
        "sh",
        "-c",
        &format!("echo $$ > {}; exec sleep 60", pid_file.display()),
    ]));
    let mut command = Command::new(binary());
    // SAFETY: only async-signal-safe calls between fork and exec. As nobody, with at most 5
    // threads for that user (none run as nobody here): the main thread, the log thread, the
    // agent and a few checks start, the rest cannot.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 5,
                rlim_max: 5,
            };
            if libc::setrlimit(libc::RLIMIT_NPROC, &limit) != 0
                || libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The application is started by the sidecar, before the checks: it needs no thread.
    let mut sidecar = Sidecar::start_with(command, &args, &[]);
    let code = sidecar.wait_exit(Duration::from_secs(10));
    let stderr = sidecar.stderr();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("Cannot start health check tcp://127.0.0.1:")
            && stderr.contains("the sidecar stops"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Shutting down with exit code 1"),
        "{stderr}"
    );
    assert_eq!(instance_count(&listing(&registry, None)), 0);
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("the application started")
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) with signal 0 only asks whether the process exists.
    assert_ne!(
        unsafe { libc::kill(pid, 0) },
        0,
        "the application was stopped with it"
    );
}

// ---------------------------------------------------------------------------------------------
// An https registry

/// `tls_proxy.py` in front of a plain registry: `https://localhost:<port>` with the test
/// certificate (issued by `test-ca.pem` for localhost).
struct TlsFront {
    child: Child,
    port: u16,
}

impl TlsFront {
    fn start(upstream: SocketAddr) -> TlsFront {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tls_proxy.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(fixture("test-server.pem"))
            .arg(fixture("test-server.key"))
            .arg(upstream.port().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 for the TLS front");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|port| port.parse().ok())
            .expect("the front's port");
        TlsFront { child, port }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn heartbeats(server: &Server) -> f64 {
    server
        .get("/metrics")
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("a8registry_heartbeats_total "))
        .expect("a8registry_heartbeats_total")
        .parse()
        .unwrap()
}

#[test]
fn the_sidecar_registers_heartbeats_and_deregisters_through_an_https_registry() {
    let registry = registry(&[]);
    let front = TlsFront::start(registry.address);
    let args = flags(&front.url(), 9080);
    let mut sidecar = Sidecar::start(&args, &[("SSL_CERT_FILE", &fixture("test-ca.pem"))]);
    assert!(
        sidecar.wait_line(
            "Service successfully registered with Amalgam8",
            Duration::from_secs(8)
        ),
        "{}",
        sidecar.stderr()
    );
    let listed = listing(&registry, None);
    assert_eq!(instance_count(&listed), 1);
    assert_eq!(
        listed["instances"][0]["endpoint"]["value"],
        "127.0.0.1:9080"
    );
    let deadline = Instant::now() + Duration::from_secs(6);
    while heartbeats(&registry) < 2.0 {
        assert!(Instant::now() < deadline, "no heartbeats over https");
        std::thread::sleep(Duration::from_millis(100));
    }
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(
        sidecar
            .stderr()
            .contains("Service successfully deregistered"),
        "{}",
        sidecar.stderr()
    );
    assert_eq!(instance_count(&listing(&registry, None)), 0);

    // Without the CA the registry's certificate is not trusted: every attempt fails, nothing
    // is registered, and the reason says why.
    let untrusting = Sidecar::start(&args, &[("SSL_CERT_FILE", "/nonexistent/roots.pem")]);
    assert!(
        untrusting.wait_line("Service registration had failed", Duration::from_secs(8)),
        "{}",
        untrusting.stderr()
    );
    let failure = untrusting.stderr().to_lowercase();
    assert!(
        failure.contains("issuer") || failure.contains("certificate"),
        "a certificate error: {failure}"
    );
    assert_eq!(instance_count(&listing(&registry, None)), 0);
}

// ---------------------------------------------------------------------------------------------
// Configuration review points

#[test]
fn configuration_errors_quote_at_most_a_few_hundred_bytes_and_name_the_file_key() {
    let base = [
        "--register",
        "--service",
        "s",
        "--endpoint_port",
        "80",
        "--registry_url",
        "http://r:8080",
    ];
    let huge = "9".repeat(100_000);
    let mut args = vec!["sidecar"];
    args.extend_from_slice(&base);
    args.extend_from_slice(&["--endpoint_port", &huge]);
    let (code, _, stderr) = run_to_exit(&args, &[]);
    assert_eq!(code, Some(2), "{}", &stderr[..stderr.len().min(500)]);
    assert!(stderr.len() < 600, "{} bytes: {stderr:.600}", stderr.len());
    assert!(
        stderr.contains("invalid value \"999")
            && stderr.contains("…")
            && stderr.contains("(100000 bytes)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--endpoint_port (A8_ENDPOINT_PORT)"),
        "{stderr}"
    );
    let long_option = format!("--{}", "x".repeat(50_000));
    let mut args = vec!["sidecar"];
    args.extend_from_slice(&base);
    args.push(&long_option);
    let (code, _, stderr) = run_to_exit(&args, &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.len() < 600, "{} bytes", stderr.len());
    assert!(stderr.contains("unknown argument \"--xxx"), "{stderr}");

    let dir = scratch("review-config");
    let file = dir.join("a8.yaml");
    let path = file.to_string_lossy().into_owned();
    let write = |text: &str| std::fs::write(&file, text).unwrap();
    write(&format!(
        "register: true\nservice:\n  name: s\nendpoint:\n  port: 80\n  host: \"a b{}\"\nregistry:\n  url: http://r:8080\n",
        "c".repeat(10_000)
    ));
    let (code, _, stderr) = run_to_exit(&["sidecar", "--config", &path], &[]);
    assert_eq!(code, Some(2), "{stderr:.600}");
    assert!(
        stderr.contains("for endpoint.host in the configuration file: must be a host name"),
        "a file's bad host is reported under its key: {stderr:.600}"
    );
    assert!(!stderr.contains("--endpoint_host"), "{stderr:.600}");
    assert!(stderr.len() < 600, "{} bytes", stderr.len());
    write(&format!(
        "register: true\nservice:\n  name: s\nendpoint:\n  port: 80\nregistry:\n  url: http://r:8080\n\"{k}\": 1\n\"{k}\": 2\n",
        k = "k".repeat(10_000)
    ));
    let (code, _, stderr) = run_to_exit(&["sidecar", "--config", &path], &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("duplicate key \"kkk"), "{stderr:.600}");
    assert!(stderr.len() < 900, "{} bytes", stderr.len());

    // A query or a fragment would end up in front of every request path.
    for url in [
        "http://r:8080/?tenant=a",
        "http://r:8080/base?x",
        "http://r:8080#top",
    ] {
        let mut args = base.to_vec();
        args[6] = url;
        assert_sidecar_config_error(
            &args,
            &[],
            &format!("invalid value \"{url}\" for --registry_url (A8_REGISTRY_URL): a query (?) or fragment (#) is not allowed"),
        );
    }
    assert_sidecar_config_error(
        &[],
        &[
            ("A8_REGISTER", "true"),
            ("A8_SERVICE", "s"),
            ("A8_ENDPOINT_PORT", "80"),
            ("A8_REGISTRY_URL", "https://r/eureka?x=1"),
        ],
        "--registry_url (A8_REGISTRY_URL): a query",
    );
}

#[test]
fn yaml_that_would_be_misread_is_refused_and_cr_line_ends_are_read() {
    let dir = scratch("review-yaml");
    let file = dir.join("a8.yaml");
    let path = file.to_string_lossy().into_owned();
    let head = "register: true\nendpoint:\n  port: 80\nregistry:\n  url: http://r:8080\n";
    for (body, expected) in [
        (
            "service:\n  name: s\n  tags: - v1\n",
            "line 8: a list cannot start on its key's line",
        ),
        (
            "service:\n  name:\ts\n",
            "line 7: a tab is allowed only inside a quoted text or a comment",
        ),
        ("service:\n  name: s\t# the name\n", "line 7: a tab"),
        ("service:\n  name: s\n  tags: [v1,\tv2]\n", "line 8: a tab"),
    ] {
        std::fs::write(&file, format!("{head}{body}")).unwrap();
        assert_sidecar_config_error(&["--config", &path], &[], expected);
    }
    // Old Mac line ends (a CR alone) are line ends: the file is read key by key, as with LF,
    // so its one bad value is found and named.
    let text =
        "register: true\rservice:\r  name: s\rendpoint:\r  port: 80\rregistry:\r  url: ftp://r\r";
    std::fs::write(&file, text).unwrap();
    assert_sidecar_config_error(
        &["--config", &path],
        &[],
        "invalid value \"ftp://r\" for registry.url in the configuration file",
    );
    // And a good one starts (exits with its command's status).
    let text = "register: true\rservice:\r  name: s\rendpoint:\r  port: 80\r  host: 127.0.0.1\rregistry:\r  url: http://127.0.0.1:9\rcommands:\r  - cmd: [sh, -c, \"exit 7\"]\r    on_exit: terminate\r";
    std::fs::write(&file, text).unwrap();
    let (code, _, stderr) = run_to_exit(
        &["sidecar", "--config", &path],
        &[("PATH", "/usr/bin:/bin")],
    );
    assert_eq!(code, Some(7), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// The rest of the contract's check rules, JSON lines, and variables set empty

#[test]
fn http_checks_follow_redirects_with_their_method_and_json_lines_are_json() {
    let registry = registry(&[]);
    let dir = scratch("redirect");
    let app = App::new(&dir);
    let command = app.command(&[]);
    let quoted: Vec<String> = command.iter().map(|a| format!("{a:?}")).collect();
    let config = dir.join("sidecar.yaml");
    std::fs::write(
        &config,
        format!(
            "register: true\nservice:\n  name: moved\nendpoint:\n  host: 127.0.0.1\n  port: {port}\n\
             registry:\n  url: http://{registry}\nttl: 3s\nhealthchecks:\n  - type: http\n\
             \x20   value: http://127.0.0.1:{port}/moved\n    method: HEAD\n    code: 200\n    interval: 300ms\n\
             commands:\n  - cmd: [{cmd}]\n    on_exit: terminate\nlog_format: json\n",
            port = app.port,
            registry = registry.address,
            cmd = quoted.join(", ")
        ),
    )
    .unwrap();
    let mut sidecar = Sidecar::start(&strings(&["--config", &config.to_string_lossy()]), &[]);
    assert!(
        sidecar.wait_line("Service successfully registered", Duration::from_secs(8)),
        "the redirect to a healthy page passes: {}",
        sidecar.stderr()
    );
    assert_eq!(
        listing(&registry, None)["instances"][0]["service_name"],
        "moved"
    );
    sidecar.signal(libc::SIGTERM);
    assert_eq!(sidecar.wait_exit(Duration::from_secs(8)), Some(0));
    let stderr = sidecar.stderr();
    for line in stderr.lines() {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(object["msg"].is_string(), "{line}");
        assert!(object["level"].is_string(), "{line}");
    }
    assert!(stderr.contains("\"Health checks passing\""), "{stderr}");
}

#[test]
fn a_command_check_still_running_at_its_timeout_is_killed_and_fails() {
    let registry = registry(&[]);
    let dir = scratch("slowcheck");
    let marker = dir.join("check-pid");
    let config = dir.join("sidecar.yaml");
    std::fs::write(
        &config,
        format!(
            "register: true\nservice:\n  name: slow\nendpoint:\n  host: 127.0.0.1\n  port: 9\n\
             registry:\n  url: http://{registry}\nhealthchecks:\n  - type: file\n    value: /bin/sh\n\
             \x20   args: [-c, 'echo $$ > {marker}; exec sleep 30']\n    timeout: 500ms\n    interval: 10s\n",
            registry = registry.address,
            marker = marker.display()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let sidecar = Sidecar::start(&strings(&["--config", &config.to_string_lossy()]), &[]);
    assert!(
        sidecar.wait_line(
            "exec sleep 30: still running after 500ms: killed",
            Duration::from_secs(6)
        ),
        "{}",
        sidecar.stderr()
    );
    assert!(started.elapsed() < Duration::from_secs(6));
    let pid: i32 = std::fs::read_to_string(&marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) with signal 0 only asks whether the process exists.
    assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "the command was killed");
    assert_eq!(instance_count(&listing(&registry, None)), 0);
}

#[test]
fn a_variable_set_to_the_empty_string_counts_as_given() {
    let dir = scratch("emptyvar");
    let file = dir.join("a8.yaml");
    std::fs::write(
        &file,
        "register: true\nservice:\n  name: s\nendpoint:\n  port: 80\nregistry:\n  url: http://r:8080\n",
    )
    .unwrap();
    let path = file.to_string_lossy().into_owned();
    // The file says register: true; the variable, set but empty, is false and wins.
    assert_sidecar_config_error(
        &["--config", &path],
        &[("A8_REGISTER", "")],
        "nothing to do: --register (A8_REGISTER) is not set",
    );
    // An empty registry URL from the environment hides the file's.
    assert_sidecar_config_error(
        &["--config", &path],
        &[("A8_REGISTRY_URL", "")],
        "--registry_url (A8_REGISTRY_URL) is required",
    );
}
