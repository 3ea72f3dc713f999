//! Trusted roots for the HTTP clients that run on plain threads. The catalogs (Kubernetes without
//! a CA file, the remote Eureka) trust the Mozilla root list built into the binary, so they work
//! from an image without a certificate store; the sidecar, which checks the health of an
//! application on its own host, trusts the platform's roots. `SSL_CERT_FILE`, as for OpenSSL,
//! replaces either list with the bundle it names (a private CA).
//!
//! Every client runs rustls on ring with [`crypto`]: the AES-GCM suites of TLS 1.3 and 1.2 only.
//! TLS 1.3 makes AES-128-GCM mandatory, Go's servers (the Kubernetes API server among them) and
//! every other TLS server offer AES-GCM, and leaving out ChaCha20-Poly1305 (ring's default has it)
//! keeps its 45 KB of code out of the 3 MB static binary.

use std::sync::Arc;

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

/// The cryptography of every TLS client (see the module doc); made once.
fn crypto() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as suite;
    static PROVIDER: std::sync::OnceLock<Arc<rustls::crypto::CryptoProvider>> =
        std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            Arc::new(rustls::crypto::CryptoProvider {
                cipher_suites: vec![
                    suite::TLS13_AES_128_GCM_SHA256,
                    suite::TLS13_AES_256_GCM_SHA384,
                    suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                    suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                    suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                    suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                ],
                kx_groups: rustls::crypto::ring::ALL_KX_GROUPS.to_vec(),
                signature_verification_algorithms: SIGNATURE_ALGORITHMS,
                secure_random: &SystemRandom,
                key_provider: &NoClientKeys,
            })
        })
        .clone()
}

/// What certificates may be signed with: ring's default set (rustls's own for ring).
static SIGNATURE_ALGORITHMS: rustls::crypto::WebPkiSupportedAlgorithms = {
    use rustls::SignatureScheme as Scheme;
    use webpki::ring as a;
    rustls::crypto::WebPkiSupportedAlgorithms {
        all: &[
            a::ECDSA_P256_SHA256,
            a::ECDSA_P256_SHA384,
            a::ECDSA_P384_SHA256,
            a::ECDSA_P384_SHA384,
            a::ED25519,
            a::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            a::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
            a::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
            a::RSA_PKCS1_2048_8192_SHA256,
            a::RSA_PKCS1_2048_8192_SHA384,
            a::RSA_PKCS1_2048_8192_SHA512,
            a::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
            a::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
            a::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
        ],
        mapping: &[
            // For TLS 1.2 the curve is not fixed by the scheme; for TLS 1.3 it is.
            (
                Scheme::ECDSA_NISTP384_SHA384,
                &[a::ECDSA_P384_SHA384, a::ECDSA_P256_SHA384],
            ),
            (
                Scheme::ECDSA_NISTP256_SHA256,
                &[a::ECDSA_P256_SHA256, a::ECDSA_P384_SHA256],
            ),
            (Scheme::ED25519, &[a::ED25519]),
            (
                Scheme::RSA_PSS_SHA512,
                &[a::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
            ),
            (
                Scheme::RSA_PSS_SHA384,
                &[a::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
            ),
            (
                Scheme::RSA_PSS_SHA256,
                &[a::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
            ),
            (Scheme::RSA_PKCS1_SHA512, &[a::RSA_PKCS1_2048_8192_SHA512]),
            (Scheme::RSA_PKCS1_SHA384, &[a::RSA_PKCS1_2048_8192_SHA384]),
            (Scheme::RSA_PKCS1_SHA256, &[a::RSA_PKCS1_2048_8192_SHA256]),
        ],
    }
};

/// Randomness from the operating system, through ring.
#[derive(Debug)]
struct SystemRandom;

impl rustls::crypto::SecureRandom for SystemRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        use ring::rand::SecureRandom;
        ring::rand::SystemRandom::new()
            .fill(buf)
            .map_err(|_| rustls::crypto::GetRandomFailed)
    }
}

/// The clients present no certificate of their own, so they load no private key.
#[derive(Debug)]
struct NoClientKeys;

impl rustls::crypto::KeyProvider for NoClientKeys {
    fn load_private_key(
        &self,
        _key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        Err(rustls::Error::General(
            "client certificates are not supported".into(),
        ))
    }
}

/// TLS that trusts exactly `roots`.
pub fn trusting(roots: &[ureq::tls::Certificate<'static>]) -> ureq::tls::TlsConfig {
    ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::new_with_certs(roots))
        .unversioned_rustls_crypto_provider(crypto())
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
            .unversioned_rustls_crypto_provider(crypto())
            .build(),
    }
}
