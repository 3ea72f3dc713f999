//! Real `redis-server` processes for the tests, on free loopback ports.
//!
//! Each [`RedisServer`] is killed by its PID when dropped, and also when the thread that started
//! it exits (PR_SET_PDEATHSIG), so a crashed test run leaves no Redis behind. The shared server
//! of the parametrised suite ([`suite_store_args`]) is started from a thread that lives as long as
//! the test process.
//!
//! `A8_TEST_STORE=redis` runs the black-box API suite against the Redis store: every
//! [`crate::Server`] then gets `--store redis` and a database of its own on the shared server, so
//! tests stay as separate as they are on the in-memory store.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Databases of the shared server: one per registry process a suite run starts.
const SUITE_DATABASES: usize = 20_000;

/// A port the kernel considers free now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// True when the suite runs against the Redis store.
pub fn suite_on_redis() -> bool {
    std::env::var("A8_TEST_STORE").is_ok_and(|v| v == "redis")
}

/// The store's name as metrics label it, for the suite's run.
pub fn suite_store_name() -> &'static str {
    if suite_on_redis() {
        "redis"
    } else {
        "inmem"
    }
}

/// The options that put a registry process on the shared Redis, each on its own database;
/// empty on the in-memory store.
pub fn suite_store_args() -> Vec<String> {
    static SHARED: OnceLock<u16> = OnceLock::new();
    static NEXT_DB: AtomicUsize = AtomicUsize::new(1);
    if !suite_on_redis() {
        return Vec::new();
    }
    let port = *SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let server = RedisServer::start(&["--databases", &SUITE_DATABASES.to_string()]);
            tx.send(server.port).unwrap();
            // Lives as long as the test process; Redis dies with this thread.
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("the shared redis-server started")
    });
    let db = NEXT_DB.fetch_add(1, Ordering::SeqCst) % SUITE_DATABASES;
    vec![
        "--store".into(),
        "redis".into(),
        "--store_address".into(),
        format!("redis://127.0.0.1:{port}/{db}"),
    ]
}

/// A running `redis-server` (or Sentinel) process.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
    /// The server's working directory: a replica's full sync writes the master's snapshot
    /// there even without `save`, and it must neither land in the checkout nor be loaded again
    /// when the server restarts.
    dir: Option<TempDir>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port with these extra arguments and waits until it
    /// answers `PING`.
    pub fn start(extra: &[&str]) -> RedisServer {
        Self::start_on(free_port(), extra)
    }

    /// Starts it on `port` (to restart a server where clients expect it).
    pub fn start_on(port: u16, extra: &[&str]) -> RedisServer {
        let dir = TempDir::new("redis");
        let mut args: Vec<String> = [
            "--dir",
            &dir.0.display().to_string(),
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = RedisServer {
            child: None,
            port,
            args,
            dir: Some(dir),
        };
        server.spawn("redis-server");
        server.wait_ready();
        server
    }

    /// Starts `redis-sentinel` on a free port, watching the master `name` at `master_port`
    /// (quorum 2, down after 1 s), with its configuration file in `dir`.
    pub fn sentinel(dir: &std::path::Path, name: &str, master_port: u16) -> RedisServer {
        let port = free_port();
        let conf = dir.join(format!("sentinel-{port}.conf"));
        let text = format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\n\
             sentinel monitor {name} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {name} 1000\n\
             sentinel failover-timeout {name} 5000\n\
             sentinel parallel-syncs {name} 1\n",
            dir.display()
        );
        std::fs::write(&conf, text).expect("write the sentinel configuration");
        let mut server = RedisServer {
            child: None,
            port,
            args: vec![conf.display().to_string()],
            dir: None,
        };
        server.spawn("redis-sentinel");
        server.wait_ready();
        server
    }

    fn spawn(&mut self, program: &str) {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl(2) in the child between fork and exec, async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(command.spawn().unwrap_or_else(|e| {
            panic!("cannot start {program} (apt-get install redis-server): {e}")
        }));
    }

    /// Waits until the server answers `PING` (10 s at most).
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // A server with a password answers NOAUTH: it is up all the same.
            if self
                .command(&["PING"])
                .is_some_and(|r| r.contains("PONG") || r.contains("NOAUTH"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    /// Sends one command and returns the raw reply (what arrives within 2 s), or `None` when
    /// the server cannot be reached.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        command_on(self.port, args)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on a child this harness started.
            unsafe {
                libc::kill(pid as i32, signal);
            }
        }
    }

    /// Kills the server (SIGKILL) and reaps it; its data is gone (no persistence).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_file(dir.0.join("dump.rdb"));
        }
    }

    /// Starts it again on the same port with the same arguments.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn("redis-server");
        self.wait_ready();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A stopped process must be resumed to die promptly under some kernels' accounting.
        self.signal(libc::SIGCONT);
        self.kill();
    }
}

/// A directory of its own under the system's temporary directory, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "a8r-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("a temporary directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends one command to `127.0.0.1:port` in RESP and returns what arrives within a short wait.
pub fn command_on(port: u16, args: &[&str]) -> Option<String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_millis(300)))
        .ok()?;
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.write_all(out.as_bytes()).ok()?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                reply.extend_from_slice(&buf[..n]);
                if complete(&reply) {
                    break;
                }
            }
            Err(_) if !reply.is_empty() => break,
            Err(_) => return None,
        }
    }
    Some(String::from_utf8_lossy(&reply).into_owned())
}

/// Whether `reply` holds one whole RESP value (enough for the short replies tests read).
fn complete(reply: &[u8]) -> bool {
    fn value(r: &[u8], at: usize) -> Option<usize> {
        let line_end = r[at..].windows(2).position(|w| w == b"\r\n")? + at;
        let head = std::str::from_utf8(&r[at + 1..line_end]).ok()?;
        match r.get(at)? {
            b'+' | b'-' | b':' => Some(line_end + 2),
            b'$' => {
                let n: i64 = head.parse().ok()?;
                if n < 0 {
                    return Some(line_end + 2);
                }
                let end = line_end + 2 + n as usize + 2;
                (r.len() >= end).then_some(end)
            }
            b'*' => {
                let n: i64 = head.parse().ok()?;
                let mut next = line_end + 2;
                for _ in 0..n.max(0) {
                    next = value(r, next)?;
                }
                Some(next)
            }
            _ => None,
        }
    }
    !reply.is_empty() && value(reply, 0).is_some()
}
