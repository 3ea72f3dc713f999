//! Trusted roots for the HTTP clients that run on plain threads (the sidecar, the remote Eureka
//! catalog). The binary bundles no root list (it would cost about 100 KB of a static binary kept
//! under 3 MB): it reads the platform's, as OpenSSL does.

/// Where platforms keep their trusted roots (Debian and Alpine; Fedora and RHEL; openSUSE;
/// others): the first file that exists is read. `SSL_CERT_FILE` overrides them, as for OpenSSL.
const PLATFORM_ROOT_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The platform's trusted roots, read once. Empty in an image without a certificate store: an
/// `https` peer (a registry, a health check, a remote Eureka) then fails verification until the
/// store is mounted (or a health check names its `ca_cert_file`).
pub fn platform_roots() -> &'static [ureq::tls::Certificate<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<ureq::tls::Certificate<'static>>> =
        std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let from_env = std::env::var("SSL_CERT_FILE")
            .ok()
            .filter(|p| !p.is_empty());
        let candidates = from_env
            .iter()
            .map(String::as_str)
            .chain(PLATFORM_ROOT_FILES.iter().copied());
        for path in candidates {
            if let Ok(pem) = std::fs::read(path) {
                return ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                        _ => None,
                    })
                    .collect();
            }
        }
        Vec::new()
    })
}

/// TLS that trusts `roots`. Always explicit: the client has no bundled root list.
pub fn trusting(roots: &[ureq::tls::Certificate<'static>]) -> ureq::tls::TlsConfig {
    ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(roots))
        .build()
}
