//! Trusted roots for the HTTP clients that run on plain threads. The catalogs (Kubernetes without
//! a CA file, the remote Eureka) trust the Mozilla root list built into the binary, so they work
//! from an image without a certificate store; the sidecar, which checks the health of an
//! application on its own host, trusts the platform's roots. `SSL_CERT_FILE`, as for OpenSSL,
//! replaces either list with the bundle it names (a private CA).

/// Where platforms keep their trusted roots (Debian and Alpine; Fedora and RHEL; openSUSE;
/// others): the first file that exists is read.
const PLATFORM_ROOT_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The bundle `SSL_CERT_FILE` names, when it is set and not empty.
fn cert_file_from_env() -> Option<String> {
    std::env::var("SSL_CERT_FILE")
        .ok()
        .filter(|p| !p.is_empty())
}

/// The certificates of the first PEM file of `paths` that can be read.
fn read_first_bundle<'a>(
    paths: impl IntoIterator<Item = &'a str>,
) -> Option<Vec<ureq::tls::Certificate<'static>>> {
    paths.into_iter().find_map(|path| {
        let pem = std::fs::read(path).ok()?;
        Some(
            ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                    _ => None,
                })
                .collect(),
        )
    })
}

/// The platform's trusted roots (or `SSL_CERT_FILE`'s), read once. Empty in an image without a
/// certificate store: an `https` peer of the sidecar (its registry, a health check) then fails
/// verification until the store is mounted (or a health check names its `ca_cert_file`).
pub fn platform_roots() -> &'static [ureq::tls::Certificate<'static>] {
    static ROOTS: std::sync::OnceLock<Vec<ureq::tls::Certificate<'static>>> =
        std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let from_env = cert_file_from_env();
        let candidates = from_env
            .iter()
            .map(String::as_str)
            .chain(PLATFORM_ROOT_FILES.iter().copied());
        read_first_bundle(candidates).unwrap_or_default()
    })
}

/// TLS that trusts exactly `roots`.
pub fn trusting(roots: &[ureq::tls::Certificate<'static>]) -> ureq::tls::TlsConfig {
    ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(roots))
        .build()
}

/// TLS that trusts the root list built into the binary, or instead the bundle `SSL_CERT_FILE`
/// names (never the platform's store).
pub fn built_in_roots() -> ureq::tls::TlsConfig {
    static FROM_ENV: std::sync::OnceLock<Option<Vec<ureq::tls::Certificate<'static>>>> =
        std::sync::OnceLock::new();
    let from_env = FROM_ENV.get_or_init(|| read_first_bundle(cert_file_from_env().as_deref()));
    match from_env {
        Some(roots) => trusting(roots),
        None => ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::WebPki)
            .build(),
    }
}
