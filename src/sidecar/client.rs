//! The HTTP shell around the pure protocol: `ureq` on plain threads (never on a may coroutine:
//! it blocks, and its TLS would overflow a coroutine stack).

use super::protocol::Request;
use crate::config::Secret;
use crate::net::tls::{platform_roots, trusting};
use std::time::Duration;

/// Bound of every registry request: connection, sending and the whole answer (S9).
pub const REGISTRY_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer body read from a registry or a health endpoint; the rest is not read.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

fn user_agent() -> String {
    format!("a8registry-sidecar/{}", env!("CARGO_PKG_VERSION"))
}

/// Sends the registry requests, with the bearer token when one is set.
pub struct RegistryClient {
    agent: ureq::Agent,
    token: Secret,
}

impl RegistryClient {
    pub fn new(token: Secret) -> RegistryClient {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(REGISTRY_REQUEST_TIMEOUT))
            .http_status_as_error(false)
            // A registry answers; it does not redirect registrations elsewhere.
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(user_agent())
            .tls_config(trusting(platform_roots()))
            .build();
        RegistryClient {
            agent: ureq::Agent::new_with_config(config),
            token,
        }
    }

    /// The answer's status and body, or why there is none (no connection, a timeout, ...).
    pub fn send(&self, request: &Request) -> Result<(u16, Vec<u8>), String> {
        let mut builder = ureq::http::Request::builder()
            .method(request.method)
            .uri(&request.url);
        if self.token.is_set() {
            builder = builder.header("Authorization", format!("Bearer {}", self.token.expose()));
        }
        let sent = match &request.json_body {
            Some(body) => builder
                .header("Content-Type", "application/json")
                .header("Accept", "application/json")
                .body(body.clone().into_bytes())
                .map(|r| self.agent.run(r)),
            // PUT goes with `Content-Length: 0`; DELETE with no body at all.
            None if request.method == "PUT" => builder.body(Vec::new()).map(|r| self.agent.run(r)),
            None => builder.body(()).map(|r| self.agent.run(r)),
        };
        read_answer(sent.map_err(|e| format!("bad request: {e}"))?)
    }
}

fn read_answer(
    answer: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<(u16, Vec<u8>), String> {
    let mut response = answer.map_err(describe)?;
    let status = response.status().as_u16();
    let body = match response
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER_BYTES)
        .read_to_vec()
    {
        Ok(body) => body,
        // A large body does not change what the status says (a health page, a heartbeat's
        // answer); only a registration reads its body, and an empty one fails there.
        Err(ureq::Error::BodyExceedsLimit(_)) => Vec::new(),
        Err(e) => return Err(describe(e)),
    };
    Ok((status, body))
}

/// A transport error as a short reason; never a header (no token can leak).
fn describe(error: ureq::Error) -> String {
    match error {
        ureq::Error::Timeout(_) => "timed out".into(),
        ureq::Error::Io(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// An HTTP client for one `http`/`https` health check: its timeout, redirects followed, the
/// check's CA certificates when it names a file, else the platform's roots.
pub fn check_agent(timeout: Duration, ca_certs: &[Vec<u8>]) -> ureq::Agent {
    let builder = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent(user_agent())
        // Health checks are frequent and tiny: no idle connection is kept between runs.
        .max_idle_connections(0)
        // They go straight to the application, as a Kubernetes probe does: a proxy named in the
        // environment (for the registry, or for the application's own use) is not for them.
        .proxy(None);
    let builder = if ca_certs.is_empty() {
        builder.tls_config(trusting(platform_roots()))
    } else {
        let certs: Vec<ureq::tls::Certificate<'static>> = ca_certs
            .iter()
            .map(|der| ureq::tls::Certificate::from_der(der).to_owned())
            .collect();
        builder.tls_config(trusting(&certs))
    };
    ureq::Agent::new_with_config(builder.build())
}

/// One health request: the status, or why there is none.
pub fn check_request(agent: &ureq::Agent, method: &str, url: &str) -> Result<u16, String> {
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .body(())
        .map_err(|e| format!("bad request: {e}"))?;
    read_answer(agent.run(request)).map(|(status, _)| status)
}
