//! TLS for the tests: a CA and server certificates made with `openssl` at test time, and a TLS
//! front (`tls_proxy.py`) for a plain server of the suite.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A CA and two server certificates made for this test: one for 127.0.0.1 and localhost, one
/// for another name.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A file of the PKI (`ca.pem`, `good.pem`, `good.key`, ...), or one to write beside them.
    pub fn file(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    pub fn new() -> Pki {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "a8registry-pki-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .output()
                .expect("openssl is installed");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=test kubernetes CA",
        ]);
        for (name, san) in [
            ("good", "IP:127.0.0.1,DNS:localhost"),
            ("wrong", "DNS:elsewhere.invalid"),
        ] {
            run(&[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                "/CN=apiserver",
            ]);
            std::fs::write(
                dir.join(format!("{name}.ext")),
                format!("subjectAltName={san}\n"),
            )
            .unwrap();
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ]);
        }
        Pki { dir }
    }
}

/// The TLS front of a mock: its port; it stops when the child is dropped (stdin closes).
pub struct TlsProxy {
    child: std::process::Child,
    pub port: u16,
}

impl TlsProxy {
    pub fn start(pki: &Pki, cert: &str, upstream_port: u16) -> TlsProxy {
        use std::io::BufRead;
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tls_proxy.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(pki.file(&format!("{cert}.pem")))
            .arg(pki.file(&format!("{cert}.key")))
            .arg(upstream_port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().strip_prefix("port ").unwrap().parse().unwrap();
        TlsProxy { child, port }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Default for Pki {
    fn default() -> Pki {
        Pki::new()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
