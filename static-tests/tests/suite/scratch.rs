//! What a `FROM scratch` image proves, without Docker: the static binary alone in an empty
//! directory, run there under chroot(2) as the unprivileged uid 65534, registers, renews and lists
//! instances over 127.0.0.1. No /etc, no shared libraries, no loader, no writable files.
//!
//! The static binary is `$A8REGISTRY_STATIC_BIN`, else whatever `./musl-build.sh` prints it built.
//! Entering a chroot needs root (CAP_SYS_CHROOT): run as anyone else, the test says so and returns.

use a8registry_static_tests::*;
use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `nobody`: the uid and gid of `USER 65534:65534` in Dockerfile.scratch.
const NOBODY: u32 = 65534;
/// How long the server may take to print its listen address.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The static binary: `$A8REGISTRY_STATIC_BIN`, else the one `./musl-build.sh` builds.
fn static_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("A8REGISTRY_STATIC_BIN") {
        return PathBuf::from(path);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = Command::new(root.join("musl-build.sh"))
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .expect("run ./musl-build.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "./musl-build.sh failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let built = stdout
        .lines()
        .find_map(|line| line.strip_prefix("binary: "))
        .unwrap_or_else(|| panic!("no `binary:` line in the output of ./musl-build.sh:\n{stdout}"));
    root.join(built.trim())
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path =
            std::env::temp_dir().join(format!("a8registry-scratch-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).expect("create the root directory");
        // The server runs as nobody: it must be able to enter its root and exec the binary.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The registry running chrooted into `root` as nobody; killed by its PID on drop.
struct ChrootedServer {
    child: Child,
    address: SocketAddr,
}

impl ChrootedServer {
    fn start(root: &Path) -> ChrootedServer {
        let root_c = CString::new(root.as_os_str().as_encoded_bytes()).unwrap();
        let mut command = Command::new("/a8registry");
        command
            .args(["--api_bind", "127.0.0.1", "--api_port", "0"])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec the hook only makes system calls (chroot, chdir,
        // setgroups, setgid, setuid), which are async-signal-safe, on memory prepared before fork.
        // What `chroot --userspec=65534:65534` does: enter the root, then drop every privilege,
        // groups first and the uid last, so nothing can be regained. The exec of `/a8registry`
        // that follows resolves inside the new root.
        unsafe {
            command.pre_exec(move || {
                if libc::chroot(root_c.as_ptr()) != 0
                    || libc::chdir(c"/".as_ptr()) != 0
                    || libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(NOBODY) != 0
                    || libc::setuid(NOBODY) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().unwrap_or_else(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::EPERM) => {
                    "chroot(2) or setuid(2) was refused: they need CAP_SYS_CHROOT and CAP_SETUID, \
                     which this container may have dropped"
                }
                Some(libc::ENOENT) => {
                    "the exec inside the root found no file: is the binary static? A dynamic one \
                     lacks its loader there"
                }
                _ => "chroot and exec as nobody failed",
            };
            panic!(
                "cannot start /a8registry chrooted into {} as uid {NOBODY}: {e}: {hint}",
                root.display()
            )
        });
        // Drain stderr for the life of the process and hand over the listen address.
        let stderr = child.stderr.take().expect("stderr is piped");
        let (found, address) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent && line.contains("listening") {
                    sent = found.send(Ok(line.clone())).is_ok();
                }
                lines.push(line);
            }
            if !sent {
                let _ = found.send(Err(lines.join("\n")));
            }
        });
        let line = match address.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(stderr)) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the chrooted server exited before listening; stderr:\n{stderr}");
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the chrooted server did not listen within {START_TIMEOUT:?}");
            }
        };
        let address = listen_address(&line)
            .unwrap_or_else(|| panic!("no address in the startup line {line:?}"));
        ChrootedServer { child, address }
    }

    fn request(&self, method: &str, path: &str, body: Option<&str>) -> Response {
        let mut conn = TcpStream::connect(self.address).expect("connect");
        conn.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        conn.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
        let headers: &[(&str, &str)] = match body {
            Some(_) => &[("Content-Type", "application/json")],
            None => &[],
        };
        send(&mut conn, method, path, headers, body);
        read_response(&mut conn, false).expect("a response")
    }
}

impl Drop for ChrootedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `127.0.0.1:PORT` out of `... msg="listening" address="127.0.0.1:PORT" ...`.
fn listen_address(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("address=\"")? + "address=\"".len()..];
    rest[..rest.find('"')?].parse().ok()
}

/// The ids of a `/proc/PID/status` line such as `Uid:` (real, effective, saved, filesystem).
fn proc_status_ids(pid: u32, field: &str) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} line in /proc/{pid}/status"))
        .split_whitespace()
        .map(|id| id.parse().unwrap())
        .collect()
}

#[test]
fn the_static_binary_alone_serves_from_an_empty_root_as_nobody() {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "scratch: skipped: entering a chroot needs root, and these tests run as non-root"
        );
        return;
    }
    let binary = static_binary();
    let root = TempDir::new();
    let inside = root.0.join("a8registry");
    std::fs::copy(&binary, &inside)
        .unwrap_or_else(|e| panic!("copy {} into the root: {e}", binary.display()));
    std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o755)).unwrap();

    // The root holds the binary and nothing else: no /etc, no /lib, no loader.
    let mut entries: Vec<String> = std::fs::read_dir(&root.0)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["a8registry"]);

    let server = ChrootedServer::start(&root.0);
    let pid = server.child.id();
    assert_eq!(proc_status_ids(pid, "Uid:"), [NOBODY; 4], "uids of {pid}");
    assert_eq!(proc_status_ids(pid, "Gid:"), [NOBODY; 4], "gids of {pid}");
    // Its root really is the empty directory.
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/root")).unwrap(),
        root.0.canonicalize().unwrap()
    );

    let registered = server.request(
        "POST",
        "/api/v1/instances",
        Some(&registration("scratch", "10.0.0.1:80", "\"ttl\":60")),
    );
    assert_eq!(registered.status, 201, "body: {}", registered.text());
    let id = registered.json()["id"].as_str().unwrap().to_string();

    let heartbeat = server.request("PUT", &format!("/api/v1/instances/{id}/heartbeat"), None);
    assert_eq!(heartbeat.status, 200, "body: {}", heartbeat.text());

    let listed = server.request("GET", "/api/v1/services/scratch", None);
    assert_eq!(listed.status, 200, "body: {}", listed.text());
    assert_eq!(ids_of(&listed.json()), [id]);

    let uptime = server.request("GET", "/uptime", None);
    assert_eq!(uptime.status, 200, "body: {}", uptime.text());
}
