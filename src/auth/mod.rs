//! From a request's token to a namespace (spec section 2).
//!
//! The token comes from the `Authorization: Bearer <token>` header, or else from the Eureka path
//! (`/api/eureka/{token}/v2`). The configured modes are tried in order; a mode passes a token on
//! only when it does not recognise it (only `jwt` does that, for strings that are not JWTs).
//!
//! Whatever the mode, the name it yields becomes a [`Namespace`] here, and only here: a name that
//! is not valid (empty, over 256 bytes, or with a control character) is refused like a bad token.

mod interned;
pub mod jwt;

use crate::config::AuthMode;
use crate::registry::namespace::Namespace;
pub use crate::registry::namespace::DEFAULT_NAMESPACE;
use interned::Interned;

/// Why a request was not authenticated; each is a 401 with its own message (spec 2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// The `Authorization` header is not `Bearer <token>` or `bearer <token>`.
    MalformedHeader,
    /// The mode needs a token and there is none.
    MissingToken,
    /// The token was refused (or no mode recognised it).
    InvalidToken,
}

impl AuthError {
    /// The `Error` text of the 401 body.
    pub fn message(self) -> &'static str {
        match self {
            AuthError::MalformedHeader => {
                "Malformed request Authorization header, expecting Bearer Token"
            }
            AuthError::MissingToken => "Missing request Authorization header",
            AuthError::InvalidToken => "Authorization failure, invalid token",
        }
    }
}

/// Extracts the token: the `Authorization` header, when present and non-empty, overrides the
/// path token. The header is split at its first space; the rest is the token, untrimmed.
pub fn extract_token<'a>(
    authorization: Option<&'a str>,
    path_token: &'a str,
) -> Result<&'a str, AuthError> {
    match authorization {
        Some(header) if !header.is_empty() => match header.split_once(' ') {
            Some(("Bearer" | "bearer", token)) => Ok(token),
            _ => Err(AuthError::MalformedHeader),
        },
        _ => Ok(path_token),
    }
}

/// The configured chain of modes.
pub struct Authenticator {
    modes: Vec<AuthMode>,
    jwt_secret: Vec<u8>,
    namespaces: Interned,
}

impl Authenticator {
    pub fn new(modes: Vec<AuthMode>, jwt_secret: &str) -> Authenticator {
        Authenticator {
            modes,
            jwt_secret: jwt_secret.as_bytes().to_vec(),
            namespaces: Interned::default(),
        }
    }

    /// The namespace `token` stands for at unix time `now_secs`.
    ///
    /// # Errors
    ///
    /// [`AuthError::MissingToken`] for an empty token in `trusted` or `jwt` mode;
    /// [`AuthError::InvalidToken`] when the token is refused, no mode recognises it, or the name
    /// it yields is not a valid [`Namespace`] (spec 2.2, 2.4).
    pub fn namespace(&self, token: &str, now_secs: i64) -> Result<Namespace, AuthError> {
        self.namespace_at(token, || now_secs)
    }

    /// As [`Authenticator::namespace`], reading the time (`now_secs`) only when a JWT is
    /// verified: the other modes do not need the clock.
    pub fn namespace_at(
        &self,
        token: &str,
        now_secs: impl Fn() -> i64,
    ) -> Result<Namespace, AuthError> {
        if self.modes.is_empty() {
            return match token {
                "" | DEFAULT_NAMESPACE => Ok(Namespace::default_namespace()),
                _ => Err(AuthError::InvalidToken),
            };
        }
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        for mode in &self.modes {
            let named = match mode {
                AuthMode::Trusted => self.namespaces.namespace(token),
                AuthMode::Jwt => match jwt::verify(token, &self.jwt_secret, now_secs()) {
                    jwt::Verdict::Namespace(name) => self.namespaces.namespace(&name),
                    jwt::Verdict::Rejected => return Err(AuthError::InvalidToken),
                    jwt::Verdict::Unrecognised => continue,
                },
            };
            return named.map_err(|_| AuthError::InvalidToken);
        }
        Err(AuthError::InvalidToken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_parsing() {
        assert_eq!(extract_token(Some("Bearer a"), "p"), Ok("a"));
        assert_eq!(extract_token(Some("bearer  a"), "p"), Ok(" a"));
        assert_eq!(extract_token(Some("Bearer tenant A"), "p"), Ok("tenant A"));
        assert_eq!(extract_token(None, "p"), Ok("p"));
        assert_eq!(extract_token(Some(""), "p"), Ok("p"));
        for bad in ["BEARER x", "Token x", "Bearer", "Basic xyz"] {
            assert_eq!(
                extract_token(Some(bad), ""),
                Err(AuthError::MalformedHeader),
                "{bad}"
            );
        }
    }

    #[test]
    fn single_tenant_accepts_empty_and_default_only() {
        let auth = Authenticator::new(vec![], "");
        assert_eq!(auth.namespace("", 0).unwrap(), "default");
        assert_eq!(auth.namespace("default", 0).unwrap(), "default");
        assert_eq!(auth.namespace("foo", 0), Err(AuthError::InvalidToken));
    }

    #[test]
    fn chains_fall_through_only_on_unrecognised_tokens() {
        let secret = "s3cr3t";
        let mut claims = serde_json::Map::new();
        claims.insert("namespace".into(), "ns1".into());
        let valid = jwt::sign(&claims, secret.as_bytes());
        claims.insert("exp".into(), 10.into());
        let expired = jwt::sign(&claims, secret.as_bytes());

        let jwt_trusted = Authenticator::new(vec![AuthMode::Jwt, AuthMode::Trusted], secret);
        assert_eq!(jwt_trusted.namespace("plainns", 100).unwrap(), "plainns");
        assert_eq!(jwt_trusted.namespace(&valid, 100).unwrap(), "ns1");
        assert_eq!(
            jwt_trusted.namespace(&expired, 100),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(jwt_trusted.namespace("", 100), Err(AuthError::MissingToken));
        let huge = "a".repeat(jwt::MAX_TOKEN_BYTES + 1);
        assert_eq!(
            jwt_trusted.namespace(&huge, 100),
            Err(AuthError::InvalidToken)
        );

        let trusted_jwt = Authenticator::new(vec![AuthMode::Trusted, AuthMode::Jwt], secret);
        assert_eq!(trusted_jwt.namespace(&valid, 100).unwrap(), valid.as_str());

        let jwt_only = Authenticator::new(vec![AuthMode::Jwt], secret);
        assert_eq!(
            jwt_only.namespace("garbage", 100),
            Err(AuthError::InvalidToken)
        );
    }

    #[test]
    fn names_that_are_not_namespaces_are_invalid_tokens_in_every_mode() {
        let secret = "s3cr3t";
        let claim = |name: &str| {
            let mut claims = serde_json::Map::new();
            claims.insert("namespace".into(), name.into());
            jwt::sign(&claims, secret.as_bytes())
        };
        let longest = "n".repeat(crate::registry::namespace::MAX_NAMESPACE_BYTES);
        let too_long = format!("{longest}n");
        let trusted = Authenticator::new(vec![AuthMode::Trusted], secret);
        let jwt = Authenticator::new(vec![AuthMode::Jwt], secret);
        let jwt_trusted = Authenticator::new(vec![AuthMode::Jwt, AuthMode::Trusted], secret);
        for bad in ["../x\0y", "a\nb", "\t", "a\u{85}", too_long.as_str()] {
            assert_eq!(trusted.namespace(bad, 0), Err(AuthError::InvalidToken));
            assert_eq!(jwt.namespace(&claim(bad), 0), Err(AuthError::InvalidToken));
            assert_eq!(
                jwt_trusted.namespace(&claim(bad), 0),
                Err(AuthError::InvalidToken),
                "a JWT with a bad claim is refused, not handed to trusted"
            );
            assert_eq!(jwt_trusted.namespace(bad, 0), Err(AuthError::InvalidToken));
        }
        assert_eq!(trusted.namespace(&longest, 0).unwrap(), longest.as_str());
        assert_eq!(
            jwt.namespace(&claim(&longest), 0).unwrap(),
            longest.as_str()
        );
    }
}
