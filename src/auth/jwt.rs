//! HS256 JSON Web Tokens, validated and signed by hand.
//!
//! The registry is multi-tenant: a client proves which namespace it belongs to with a JWT
//! whose `namespace` claim names it, signed with HMAC-SHA256 under a secret shared with
//! whoever issues the tokens. Only HS256 is accepted. Pinning the algorithm (rather than
//! trusting the header) closes the classic `alg: none` and algorithm-confusion attacks.
//!
//! [`verify`] separates tokens that are not JWTs at all ([`Verdict::Unrecognised`]) from
//! JWTs that fail validation ([`Verdict::Rejected`]), so that a caller chaining several
//! authenticators can hand the former on to the next one, while the latter must be refused.
//!
//! Hostile input is bounded before it is parsed: the token's length, then the nesting depth of
//! its decoded header and payload (a byte scan), so the recursive JSON parser never sees more
//! than a few levels.
//!
//! The token is taken exactly as given: callers strip any `Bearer ` prefix and surrounding
//! whitespace first.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Number, Value};
use sha2::Sha256;
use std::cmp::Ordering;

type HmacSha256 = Hmac<Sha256>;

/// Largest token the verifier looks at, in bytes; longer tokens are rejected before any decoding.
///
/// The bound keeps a hostile client from making the server base64-decode and JSON-parse
/// arbitrarily large input on every request.
pub const MAX_TOKEN_BYTES: usize = 8192;

/// Deepest nesting of arrays and objects accepted in a token's header or payload, the object
/// itself counting 1. Claims are scalars in practice; the bound is checked by a byte scan before
/// any JSON parsing, because the recursive parser needs stack for every level, and a hostile
/// header 80 levels deep overflowed a coroutine's stack (in debug builds) before the signature
/// was even looked at.
pub const MAX_TOKEN_JSON_DEPTH: usize = 16;

/// The only `alg` header value accepted.
const ALG: &str = "HS256";

/// Header written by [`sign`]. A literal rather than a serialised map, so that the bytes
/// (and hence the signature) do not depend on serde_json's key ordering.
const HEADER_JSON: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Outcome of [`verify`].
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The token is a valid HS256 JWT; the namespace claim.
    Namespace(String),
    /// Structurally not a JWT (not three base64url segments whose header and payload decode to JSON objects).
    /// A caller chaining authenticators may pass such a token on to the next one.
    Unrecognised,
    /// A JWT that fails validation (too long, nested too deep, wrong alg, a `crit` header, bad
    /// signature, expired, not yet valid, bad namespace claim).
    /// The caller must refuse the request rather than try another authenticator.
    Rejected,
}

/// Verifies `token` against `secret` (raw bytes) at unix time `now_secs`.
///
/// Returns [`Verdict::Namespace`] only when all of the following hold:
/// - the token is at most [`MAX_TOKEN_BYTES`] long (otherwise [`Verdict::Rejected`]);
/// - it is three `.`-separated base64url segments, each with or without `=` padding
///   (otherwise [`Verdict::Unrecognised`]);
/// - neither the decoded header nor the decoded payload nests arrays and objects deeper than
///   [`MAX_TOKEN_JSON_DEPTH`] (otherwise [`Verdict::Rejected`], before any JSON parsing);
/// - the header and payload are JSON objects (otherwise [`Verdict::Unrecognised`]);
/// - the header's `alg` is exactly `"HS256"` (otherwise [`Verdict::Rejected`]);
/// - the header has no `crit` member: it would name extensions the verifier must understand,
///   and this one understands none (RFC 7515 §4.1.11; otherwise [`Verdict::Rejected`]);
/// - the signature is the HMAC-SHA256, under `secret`, of the first two segments exactly as
///   they appear in the token, compared in constant time (otherwise [`Verdict::Rejected`]);
/// - a numeric `exp` is not before `now_secs` and a numeric `nbf` is not after it; non-numeric
///   `exp`/`nbf` are ignored (otherwise [`Verdict::Rejected`]);
/// - the `namespace` claim is a non-empty string (otherwise [`Verdict::Rejected`]).
///
/// Never panics, whatever the input.
pub fn verify(token: &str, secret: &[u8], now_secs: i64) -> Verdict {
    match validated_claims(token, secret, now_secs) {
        Ok(mut claims) => match claims.remove("namespace") {
            Some(Value::String(namespace)) if !namespace.is_empty() => {
                Verdict::Namespace(namespace)
            }
            _ => Verdict::Rejected,
        },
        Err(verdict) => verdict,
    }
}

/// Signs a compact HS256 JWT with header {"alg":"HS256","typ":"JWT"} and the given claims object
/// (serialised compactly), base64url without padding.
///
/// The claims are written in the map's iteration order (sorted by key unless serde_json's
/// `preserve_order` feature is on). Nothing is added or checked: the caller supplies
/// `namespace`, `exp` and whatever else the token should carry. Cannot fail.
pub fn sign(claims: &Map<String, Value>, secret: &[u8]) -> String {
    // A map with string keys serialises into memory without error: serde_json's only failure
    // modes are non-string keys, non-finite floats (which `Value` cannot hold) and I/O.
    let payload = serde_json::to_vec(claims).expect("a JSON object always serialises");
    let mut token = URL_SAFE_NO_PAD.encode(HEADER_JSON);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(payload));
    // HMAC is defined for keys of any length (longer ones are hashed, shorter ones padded),
    // so the constructor never returns an error.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(token.as_bytes());
    let tag = mac.finalize().into_bytes();
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(tag));
    token
}

/// Every check of [`verify`] except the `namespace` claim: the token's claims if it is a
/// well-formed, correctly signed HS256 JWT that is valid at `now_secs`, else the verdict.
///
/// Kept apart from [`verify`] so that tests can show that third-party vectors (such as the
/// RFC 7515 example, which has no namespace) pass the signature check.
fn validated_claims(
    token: &str,
    secret: &[u8],
    now_secs: i64,
) -> Result<Map<String, Value>, Verdict> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Verdict::Rejected);
    }

    // The signature covers the first two segments and the dot between them, byte for byte as
    // received, so keep that slice of the token rather than re-encoding what was decoded.
    let (signing_input, signature) = token.rsplit_once('.').ok_or(Verdict::Unrecognised)?;
    let (header, payload) = signing_input.split_once('.').ok_or(Verdict::Unrecognised)?;
    if payload.contains('.') {
        return Err(Verdict::Unrecognised);
    }
    let header = decode_json_object(header)?;
    let claims = decode_json_object(payload)?;
    let signature = decode_segment(signature).ok_or(Verdict::Unrecognised)?;

    // Decide the algorithm ourselves; the header only gets to agree. Accepting what it names
    // would let `none` skip the signature or another algorithm reinterpret the secret.
    if header.get("alg").and_then(Value::as_str) != Some(ALG) {
        return Err(Verdict::Rejected);
    }
    // `crit` lists header extensions that a verifier must understand and enforce, or else
    // refuse the token. None is understood here, so any `crit` at all (even an empty or
    // malformed one, which RFC 7515 forbids producers to send) makes the token invalid.
    if header.contains_key("crit") {
        return Err(Verdict::Rejected);
    }

    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return Err(Verdict::Rejected);
    };
    mac.update(signing_input.as_bytes());
    // `verify_slice` compares in constant time, so response timing does not reveal how many
    // leading bytes of a forged signature were right; it also fails on a wrong length.
    mac.verify_slice(&signature)
        .map_err(|_| Verdict::Rejected)?;

    // An `exp` equal to now is still valid; only strictly later times are past it.
    if let Some(Value::Number(exp)) = claims.get("exp") {
        if !matches!(
            compare(now_secs, exp),
            Some(Ordering::Less | Ordering::Equal)
        ) {
            return Err(Verdict::Rejected);
        }
    }
    if let Some(Value::Number(nbf)) = claims.get("nbf") {
        if !matches!(
            compare(now_secs, nbf),
            Some(Ordering::Greater | Ordering::Equal)
        ) {
            return Err(Verdict::Rejected);
        }
    }

    Ok(claims)
}

/// Decodes one base64url segment, with or without `=` padding. The standard alphabet's `+`
/// and `/`, misplaced padding and non-canonical trailing bits all fail.
fn decode_segment(segment: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(segment.trim_end_matches('=')).ok()
}

/// Decodes a segment that must hold a JSON object: [`Verdict::Unrecognised`] when it does not,
/// [`Verdict::Rejected`] when it nests deeper than [`MAX_TOKEN_JSON_DEPTH`] (it is then not parsed).
fn decode_json_object(segment: &str) -> Result<Map<String, Value>, Verdict> {
    let json = decode_segment(segment).ok_or(Verdict::Unrecognised)?;
    if !crate::nesting::nesting_within(&json, MAX_TOKEN_JSON_DEPTH) {
        return Err(Verdict::Rejected);
    }
    serde_json::from_slice(&json).map_err(|_| Verdict::Unrecognised)
}

/// Compares `now` with a numeric time claim. Integers compare exactly; only fractional or
/// out-of-range claims go through f64, where any realistic unix time is still exact.
/// `None` (unreachable: JSON numbers are never NaN) makes the caller reject, failing closed.
fn compare(now: i64, claim: &Number) -> Option<Ordering> {
    if let Some(claim) = claim.as_i64() {
        Some(now.cmp(&claim))
    } else if claim.is_u64() {
        // Not an i64, so above i64::MAX and later than any `now`.
        Some(Ordering::Less)
    } else {
        (now as f64).partial_cmp(&claim.as_f64()?)
    }
}

#[cfg(test)]
mod tests {
    //! Every token literal here was computed with Python's standard library, never with this
    //! module, so a mistake in the code cannot be mirrored by the same mistake in its vectors.
    //! To regenerate one, save the script below as `vectors.py`, append the expression given
    //! in the comment next to the literal, wrapped in `print(...)`, and run `python3 vectors.py`.
    //!
    //! ```text
    //! import base64, hashlib, hmac, json
    //! def b64(b, pad=False):
    //!     s = base64.urlsafe_b64encode(b).decode()
    //!     return s if pad else s.rstrip("=")
    //! def enc(obj, pad=False):
    //!     return b64(json.dumps(obj, separators=(",", ":")).encode(), pad)
    //! def tok(header, payload, key=b"s3cr3t", hash=hashlib.sha256, pad=False):
    //!     si = enc(header, pad) + "." + enc(payload, pad)
    //!     return si + "." + b64(hmac.new(key, si.encode(), hash).digest(), pad)
    //! H = {"alg": "HS256", "typ": "JWT"}
    //! V = {"namespace": "ns1", "exp": 4102444800}
    //! ```

    use super::*;

    const SECRET: &[u8] = b"s3cr3t";
    /// 2023-11-14T22:13:20Z; the time-dependent vectors are built around it.
    const NOW: i64 = 1_700_000_000;

    /// `tok(H, V)`: namespace "ns1", expires 2100-01-01.
    const VALID: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjQxMDI0NDQ4MDB9.PyUwTYvbfD8x2wf4GgIAQCHJqJT-lB_JQeoI8bpF6sw";

    fn ns(namespace: &str) -> Verdict {
        Verdict::Namespace(namespace.to_owned())
    }

    // --- Valid tokens -------------------------------------------------------------------

    #[test]
    fn valid_token_yields_its_namespace() {
        assert_eq!(verify(VALID, SECRET, NOW), ns("ns1"));
    }

    #[test]
    fn padded_segments_are_accepted() {
        // tok(H, V, pad=True): only the 32-byte signature needs padding here.
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjQxMDI0NDQ4MDB9.PyUwTYvbfD8x2wf4GgIAQCHJqJT-lB_JQeoI8bpF6sw=";
        assert_eq!(verify(token, SECRET, NOW), ns("ns1"));
    }

    #[test]
    fn padding_in_signed_segments_is_part_of_the_signing_input() {
        // tok({"alg": "HS256", "typ": "JWT", "kid": "k1"}, {"namespace": "ns1"}, pad=True):
        // all three segments padded, and the MAC was taken over the padded text.
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImsxIn0=.eyJuYW1lc3BhY2UiOiJuczEifQ==.iTNwDOqluuhEUPyfJdxN4YSsXNJwKTktOV31BojghxM=";
        assert_eq!(verify(token, SECRET, NOW), ns("ns1"));
        // Dropping that padding leaves the same claims but a different signing input.
        let unpadded = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImsxIn0.eyJuYW1lc3BhY2UiOiJuczEifQ.iTNwDOqluuhEUPyfJdxN4YSsXNJwKTktOV31BojghxM=";
        assert_eq!(verify(unpadded, SECRET, NOW), Verdict::Rejected);
    }

    #[test]
    fn json_escapes_in_namespace_are_decoded() {
        // tok(H, {"namespace": "名前"}): Python escapes it as "\u540d\u524d".
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJcdTU0MGRcdTUyNGQifQ.ravgk_kzZGUYTUKnmtwxT71X6Jp9_rFi0WaDzpP5Dqs";
        assert_eq!(verify(token, SECRET, NOW), ns("名前"));
    }

    // --- RFC 7515 ------------------------------------------------------------------------

    /// The key of RFC 7515 appendix A.1, k = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow",
    /// base64url-decoded (the octets are also listed in the RFC):
    /// `list(base64.urlsafe_b64decode(k + "=="))`.
    const RFC7515_KEY: [u8; 64] = [
        3, 35, 53, 75, 43, 15, 165, 188, 131, 126, 6, 101, 119, 123, 166, 143, 90, 179, 40, 230,
        240, 84, 201, 40, 169, 15, 132, 178, 210, 80, 46, 191, 211, 251, 90, 146, 210, 6, 71, 239,
        150, 138, 180, 195, 119, 98, 61, 34, 61, 46, 33, 114, 5, 46, 79, 8, 192, 205, 154, 245,
        103, 208, 128, 163,
    ];
    /// The JWS of RFC 7515 appendix A.1, verbatim. Its header contains CR LF and spaces, and
    /// its payload is {"iss":"joe", "exp":1300819380, "http://example.com/is_root":true}.
    const RFC7515_JWS: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const RFC7515_EXP: i64 = 1_300_819_380;

    #[test]
    fn rfc7515_example_passes_the_signature_check() {
        let claims = validated_claims(RFC7515_JWS, &RFC7515_KEY, RFC7515_EXP)
            .expect("RFC 7515 A.1 must verify with its own key");
        assert_eq!(claims.get("iss"), Some(&Value::from("joe")));
        assert_eq!(
            validated_claims(RFC7515_JWS, SECRET, RFC7515_EXP),
            Err(Verdict::Rejected)
        );
    }

    #[test]
    fn rfc7515_example_is_rejected_for_lack_of_a_namespace() {
        assert_eq!(
            verify(RFC7515_JWS, &RFC7515_KEY, RFC7515_EXP),
            Verdict::Rejected
        );
        // And a second after its exp it fails on time alone.
        assert_eq!(
            validated_claims(RFC7515_JWS, &RFC7515_KEY, RFC7515_EXP + 1),
            Err(Verdict::Rejected)
        );
    }

    #[test]
    fn binary_secret_with_namespace_verifies() {
        // tok(H, {"namespace": "ns1"}, key=bytes(RFC7515_KEY))
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEifQ.KK2Pq1dku677sZ2ABJG_slFOKS3bI6Ida6Q0v1EwXnU";
        assert_eq!(verify(token, &RFC7515_KEY, NOW), ns("ns1"));
        assert_eq!(verify(token, SECRET, NOW), Verdict::Rejected);
    }

    // --- Algorithm ------------------------------------------------------------------------

    #[test]
    fn only_alg_hs256_is_accepted() {
        let cases = [
            // enc({"alg": "none", "typ": "JWT"}) + "." + enc(V) + "."
            ("none", "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjQxMDI0NDQ4MDB9."),
            // enc({"alg": "None", "typ": "JWT"}) + "." + enc(V) + "."
            ("None", "eyJhbGciOiJOb25lIiwidHlwIjoiSldUIn0.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjQxMDI0NDQ4MDB9."),
            // tok({"alg": "hs256", "typ": "JWT"}, V): a correct HMAC-SHA256, wrong case.
            ("hs256", "eyJhbGciOiJoczI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjQxMDI0NDQ4MDB9.WcMqvoxzAMAYYKR9EFWg3k6pqm58A7sd0z8tWilPpUg"),
            // tok({"alg": "HS384", "typ": "JWT"}, V, hash=hashlib.sha384)
            ("HS384", "eyJhbGciOiJIUzM4NCIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjQxMDI0NDQ4MDB9.CsG-0ccfLRUfFmZgmihH-Sug2_KdfgqgpsRWpMzwE432zOfFtBY-2OMTzBoXIyfN"),
            // tok({"alg": "HS512", "typ": "JWT"}, V, hash=hashlib.sha512)
            ("HS512", "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjQxMDI0NDQ4MDB9.I4pGUhw2OZD4hh0dJY68XgzyE_Oy8SCeOEyonSv7LJKTsRThfu6-oAlZ6Lg71_P11pqnU0o19YOlauA0PGKjSA"),
            // tok({"alg": "RS256", "typ": "JWT"}, V): the algorithm-confusion attack, an
            // HMAC-SHA256 keyed with the secret under an asymmetric algorithm's name.
            ("RS256", "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjQxMDI0NDQ4MDB9.zb9yzUpqkFwEIu9l7mcv2oTgKfcn-tUSc7JZNkDsKpg"),
            // tok({"typ": "JWT"}, V)
            ("missing", "eyJ0eXAiOiJKV1QifQ.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjQxMDI0NDQ4MDB9.q7xJiNxD5fuEP1N2y3oSjbNOvF0QJFVl_-pIn_UMKUw"),
            // tok({"alg": 256, "typ": "JWT"}, V)
            ("number", "eyJhbGciOjI1NiwidHlwIjoiSldUIn0.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjQxMDI0NDQ4MDB9.wfthgHlZeTOZukNJSnj84M2ZcjDMQLUlS8wZSvNhrDo"),
        ];
        for (alg, token) in cases {
            assert_eq!(verify(token, SECRET, NOW), Verdict::Rejected, "alg {alg}");
        }
    }

    // --- Signature ------------------------------------------------------------------------

    #[test]
    fn wrong_secret_is_rejected() {
        // tok(H, V, key=b"wrong")
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjQxMDI0NDQ4MDB9.90Z44p22T2UUdw5y45_aIPBejUo_dwZWSxSe0u4GGPE";
        assert_eq!(verify(token, SECRET, NOW), Verdict::Rejected);
        assert_eq!(verify(VALID, b"wrong", NOW), Verdict::Rejected);
        assert_eq!(verify(VALID, b"", NOW), Verdict::Rejected);
    }

    #[test]
    fn flipped_signature_bit_is_rejected() {
        // si = enc(H) + "." + enc(V); sig = bytearray(hmac.new(b"s3cr3t", si.encode(),
        // hashlib.sha256).digest()); sig[0] ^= 1; si + "." + b64(bytes(sig))
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjQxMDI0NDQ4MDB9.PiUwTYvbfD8x2wf4GgIAQCHJqJT-lB_JQeoI8bpF6sw";
        assert_eq!(verify(token, SECRET, NOW), Verdict::Rejected);
    }

    #[test]
    fn changing_any_signature_char_of_a_valid_token_is_rejected() {
        let (signing_input, signature) = VALID.rsplit_once('.').expect("literal has dots");
        // The last char carries two unused bits, so changing it may instead make the
        // encoding non-canonical; every other char changes the decoded signature.
        for i in 0..signature.len() - 1 {
            let mut forged = signature.as_bytes().to_vec();
            forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
            let forged = String::from_utf8(forged).expect("still ASCII");
            let token = format!("{signing_input}.{forged}");
            assert_eq!(verify(&token, SECRET, NOW), Verdict::Rejected, "char {i}");
        }
    }

    #[test]
    fn truncated_signature_is_rejected() {
        // The first 31 of the 32 signature bytes: si + "." + b64(sig[:31])
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjQxMDI0NDQ4MDB9.PyUwTYvbfD8x2wf4GgIAQCHJqJT-lB_JQeoI8bpF6g";
        assert_eq!(verify(token, SECRET, NOW), Verdict::Rejected);
        // No signature at all, for an HS256 header.
        let (unsigned, _) = VALID.rsplit_once('.').expect("literal has dots");
        assert_eq!(
            verify(&format!("{unsigned}."), SECRET, NOW),
            Verdict::Rejected
        );
    }

    #[test]
    fn signature_of_one_token_does_not_fit_another_payload() {
        // NO_EXP's header and payload with VALID's signature.
        let (_, signature) = VALID.rsplit_once('.').expect("literal has dots");
        let token =
            format!("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEifQ.{signature}");
        assert_eq!(verify(&token, SECRET, NOW), Verdict::Rejected);
    }

    #[test]
    fn no_single_char_substitution_of_a_valid_token_verifies() {
        for i in 0..VALID.len() {
            for replacement in [b'A', b'z', b'0', b'-', b'_', b'=', b'.', b'+', b'/', b' '] {
                let mut bytes = VALID.as_bytes().to_vec();
                if bytes[i] == replacement {
                    continue;
                }
                bytes[i] = replacement;
                let token = String::from_utf8(bytes).expect("still ASCII");
                assert!(
                    !matches!(verify(&token, SECRET, NOW), Verdict::Namespace(_)),
                    "position {i} replaced by {:?}",
                    replacement as char
                );
            }
        }
    }

    // --- Time claims ----------------------------------------------------------------------

    #[test]
    fn expired_token_is_rejected() {
        // tok(H, {"namespace": "ns1", "exp": 1699999999})
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjE2OTk5OTk5OTl9.TkdfTs22Ik20IgpJG2v7h3hd7k70jnHL68fxAmKQGFY";
        assert_eq!(verify(token, SECRET, NOW), Verdict::Rejected);
        assert_eq!(verify(token, SECRET, NOW - 1), ns("ns1"));
    }

    #[test]
    fn token_expiring_now_is_still_valid() {
        // tok(H, {"namespace": "ns1", "exp": 1700000000})
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjE3MDAwMDAwMDB9.aUKhS7Ty9x83ZN-AWcjKXnOs7f7e69YcmT2EqUHQF7Y";
        assert_eq!(verify(token, SECRET, NOW), ns("ns1"));
        assert_eq!(verify(token, SECRET, NOW + 1), Verdict::Rejected);
    }

    #[test]
    fn fractional_exp_compares_as_a_float() {
        // tok(H, {"namespace": "ns1", "exp": 1700000000.5})
        let later = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjE3MDAwMDAwMDAuNX0.aLEgl6jyO3tnP62jeJEMZTLGTd5YemL3gyY6BHlCY1E";
        assert_eq!(verify(later, SECRET, NOW), ns("ns1"));
        assert_eq!(verify(later, SECRET, NOW + 1), Verdict::Rejected);
        // tok(H, {"namespace": "ns1", "exp": 1699999999.5})
        let earlier = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjE2OTk5OTk5OTkuNX0.aEZSwxlp8CK0MESG07LBl6Wa8ZiVwxbMRdJDcgQVnz8";
        assert_eq!(verify(earlier, SECRET, NOW), Verdict::Rejected);
        assert_eq!(verify(earlier, SECRET, NOW - 1), ns("ns1"));
    }

    #[test]
    fn huge_exp_values_neither_panic_nor_wrap() {
        // tok(H, {"namespace": "ns1", "exp": 1e300})
        let float = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjFlKzMwMH0.06GiCiy89nuLBFBMb1mSh_l5AMODDreLc8PEfyZSMVw";
        assert_eq!(verify(float, SECRET, i64::MAX), ns("ns1"));
        // tok(H, {"namespace": "ns1", "exp": 2**64}): past u64, so serde_json holds a float.
        let past_u64 = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjE4NDQ2NzQ0MDczNzA5NTUxNjE2fQ.UIyNCdmDpgH9SKzZ34GTU7_pGdYdaCsJ-vjchsNnvP8";
        assert_eq!(verify(past_u64, SECRET, i64::MAX), ns("ns1"));
        // tok(H, {"namespace": "ns1", "exp": -2**63 - 1}): below i64::MIN, always expired.
        let below_i64 = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOi05MjIzMzcyMDM2ODU0Nzc1ODA5fQ.0HUCOhwuGh7rb8qIDBp1_F90nMkabO3AzghLhY54edk";
        assert_eq!(verify(below_i64, SECRET, NOW), Verdict::Rejected);
    }

    #[test]
    fn u64_exp_above_i64_max_is_in_the_future() {
        let mut claims = Map::new();
        claims.insert("namespace".into(), Value::from("ns1"));
        claims.insert("exp".into(), Value::from(u64::MAX));
        assert_eq!(verify(&sign(&claims, SECRET), SECRET, i64::MAX), ns("ns1"));
    }

    #[test]
    fn out_of_range_number_makes_the_payload_unparseable() {
        // serde_json refuses 1e400 rather than reading infinity, so the payload is not JSON.
        // raw = b'{"namespace":"ns1","exp":1e400}'; si = enc(H) + "." + b64(raw);
        // si + "." + b64(hmac.new(b"s3cr3t", si.encode(), hashlib.sha256).digest())
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjFlNDAwfQ.P1AGYtwlu71QFsEBP24-ZFk4TUCc9aII1S19ggF73jg";
        assert_eq!(verify(token, SECRET, NOW), Verdict::Unrecognised);
    }

    #[test]
    fn non_numeric_exp_is_ignored() {
        // tok(H, {"namespace": "ns1", "exp": "1000"}): a string, long in the past.
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOiIxMDAwIn0.ZTPoi6ppBMicIJn7WUeCkkxvFuHp8HGUypAvj1UDf7w";
        assert_eq!(verify(token, SECRET, NOW), ns("ns1"));
    }

    #[test]
    fn token_without_exp_does_not_expire() {
        // tok(H, {"namespace": "ns1"})
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEifQ.-Sa5wWahdRFgCaLdnLZkiCMQDubCfOLCdSsqKJaPuwY";
        assert_eq!(verify(token, SECRET, NOW), ns("ns1"));
        assert_eq!(verify(token, SECRET, i64::MAX), ns("ns1"));
    }

    #[test]
    fn token_not_yet_valid_is_rejected() {
        // tok(H, {"namespace": "ns1", "nbf": 1700000010})
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJuYmYiOjE3MDAwMDAwMTB9.b5EB5uInESTpIb72750iKKYZFylv10y9b0HGaSafF-4";
        assert_eq!(verify(token, SECRET, NOW), Verdict::Rejected);
        assert_eq!(verify(token, SECRET, NOW + 10), ns("ns1"));
    }

    #[test]
    fn token_valid_from_now_is_accepted() {
        // tok(H, {"namespace": "ns1", "nbf": 1700000000})
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJuYmYiOjE3MDAwMDAwMDB9.N6YLYXwiVlf041d1VlYMhxI6SH0yx5Kq1NmcifQaQA0";
        assert_eq!(verify(token, SECRET, NOW), ns("ns1"));
        assert_eq!(verify(token, SECRET, NOW - 1), Verdict::Rejected);
    }

    // --- Namespace claim ------------------------------------------------------------------

    #[test]
    fn namespace_must_be_a_non_empty_string() {
        let cases = [
            // tok(H, {"namespace": 7})
            ("number", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOjd9.99cGTPmWb1Z_i3qMxIFehMcTDAe7a90a-B_wB2FlmyM"),
            // tok(H, {"namespace": {}})
            ("object", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOnt9fQ.igMmMxF8RaJS5Wk0pf2d72EFLer-bD1PJFFsM_DJ4o0"),
            // tok(H, {"namespace": ["ns1"]})
            ("array", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOlsibnMxIl19.JeADD0uIF507KXX4Rwm7mJybFVPCO9QIxp8sKdPIWr0"),
            // tok(H, {"namespace": True})
            ("true", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOnRydWV9.Q9oDboMWjL--Jrcyxm053pPwDPliK2YrjSmOgojrXdM"),
            // tok(H, {"namespace": None})
            ("null", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOm51bGx9.MVkrm4ZrxTPh7xijqy8-8c75zhmGDuISewiJHL8B9Gs"),
            // tok(H, {"namespace": ""})
            ("empty", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiIifQ.BqwOyqYznaLyR0jKFYgutXde38_uF_nuTDkDLATKzFc"),
            // tok(H, {"exp": 4102444800})
            ("missing", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjQxMDI0NDQ4MDB9.65FvaBe9T5iTA4M4Axnlv-aKGUkSVbp5fOTtG4rqyto"),
        ];
        for (kind, token) in cases {
            assert_eq!(verify(token, SECRET, NOW), Verdict::Rejected, "{kind}");
        }
    }

    // --- Not a JWT ------------------------------------------------------------------------

    #[test]
    fn wrong_number_of_segments_is_unrecognised() {
        let (two, _) = VALID.rsplit_once('.').expect("literal has dots");
        assert_eq!(verify(two, SECRET, NOW), Verdict::Unrecognised);
        assert_eq!(
            verify(&format!("{VALID}.AAAA"), SECRET, NOW),
            Verdict::Unrecognised
        );
        assert_eq!(
            verify(&format!("{VALID}."), SECRET, NOW),
            Verdict::Unrecognised
        );
    }

    #[test]
    fn invalid_base64_is_unrecognised() {
        // '!' is in no base64 alphabet: first in the payload, then in the signature.
        let bad_payload = VALID.replacen(".eyJ", ".!yJ", 1);
        assert_eq!(verify(&bad_payload, SECRET, NOW), Verdict::Unrecognised);
        let bad_signature = VALID.replacen(".PyUw", ".P!Uw", 1);
        assert_eq!(verify(&bad_signature, SECRET, NOW), Verdict::Unrecognised);
        // "a" is one char: too short to encode even one byte.
        assert_eq!(verify("a.b.c", SECRET, NOW), Verdict::Unrecognised);
    }

    #[test]
    fn standard_base64_alphabet_is_unrecognised() {
        // VALID's signature with '-' and '_' written as the standard alphabet's '+' and '/'.
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjQxMDI0NDQ4MDB9.PyUwTYvbfD8x2wf4GgIAQCHJqJT+lB/JQeoI8bpF6sw";
        assert_eq!(verify(token, SECRET, NOW), Verdict::Unrecognised);
    }

    #[test]
    fn payload_that_is_not_a_json_object_is_unrecognised() {
        let cases = [
            // tok(H, ["ns1"])
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.WyJuczEiXQ.cT_eKgPt08JlqMMf2m9Rh3jcu6DNBGdbmbWAnKUpv2U",
            // tok(H, "ns1")
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.Im5zMSI.U7bsnaH3AsjgerrtTf9v2p-AnOa-_Pvcm8UHwPFqQKo",
            // enc(H) + "." + b64(b"not json") + "." + tok(H, V).split(".")[2]
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.bm90IGpzb24.PyUwTYvbfD8x2wf4GgIAQCHJqJT-lB_JQeoI8bpF6sw",
        ];
        for token in cases {
            assert_eq!(verify(token, SECRET, NOW), Verdict::Unrecognised, "{token}");
        }
    }

    #[test]
    fn header_that_is_not_a_json_object_is_unrecognised() {
        // b64(b"[]") + "." + enc(V) + "." + some base64: decoding fails before the MAC.
        let token = "W10.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjQxMDI0NDQ4MDB9.AAAA";
        assert_eq!(verify(token, SECRET, NOW), Verdict::Unrecognised);
    }

    #[test]
    fn non_jwt_strings_are_unrecognised() {
        for token in [
            "plainns",
            "",
            "..",
            "é.é.é",
            " eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEifQ.-Sa5wWahdRFgCaLdnLZkiCMQDubCfOLCdSsqKJaPuwY",
        ] {
            assert_eq!(verify(token, SECRET, NOW), Verdict::Unrecognised, "{token:?}");
        }
    }

    // --- Length limit ---------------------------------------------------------------------

    #[test]
    fn tokens_longer_than_the_limit_are_rejected_not_unrecognised() {
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(verify(&long, SECRET, NOW), Verdict::Rejected);
        let at_limit = "a".repeat(MAX_TOKEN_BYTES);
        assert_eq!(verify(&at_limit, SECRET, NOW), Verdict::Unrecognised);
    }

    #[test]
    fn length_limit_applies_to_otherwise_valid_tokens() {
        // Grow a filler claim until the signed token is exactly `len` bytes long. Base64 turns
        // 3 bytes into 4, so the search can start a little below three quarters of `len`.
        let signed_of_len = |len: usize| {
            (len * 3 / 4 - 200..len)
                .map(|n| {
                    let mut claims = Map::new();
                    claims.insert("namespace".into(), Value::from("ns1"));
                    claims.insert("pad".into(), Value::from("x".repeat(n)));
                    sign(&claims, SECRET)
                })
                .find(|token| token.len() == len)
                .expect("some filler length hits the target")
        };
        let at_limit = signed_of_len(MAX_TOKEN_BYTES);
        assert_eq!(verify(&at_limit, SECRET, NOW), ns("ns1"));
        let over_limit = signed_of_len(MAX_TOKEN_BYTES + 1);
        assert_eq!(verify(&over_limit, SECRET, NOW), Verdict::Rejected);
    }

    // --- Nesting and critical extensions --------------------------------------------------

    #[test]
    fn payload_nesting_up_to_the_limit_verifies() {
        // tok(H, {"namespace": "ns1", "x": nest(15)}), nest(n) = n arrays around 0: depth 16.
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJ4IjpbW1tbW1tbW1tbW1tbW1swXV1dXV1dXV1dXV1dXV1dfQ.Qc-4MLUden7cZ5sk5zjFsE9tZXt1Gu96ge6hvVf1PUE";
        assert_eq!(verify(token, SECRET, NOW), ns("ns1"));
    }

    #[test]
    fn payload_nesting_beyond_the_limit_is_rejected_though_signed() {
        // tok(H, {"namespace": "ns1", "x": nest(16)}): depth 17.
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJ4IjpbW1tbW1tbW1tbW1tbW1tbMF1dXV1dXV1dXV1dXV1dXV19.pTTtymUg0hUzRAiKvpErBsF2R7fIzkvlVEqomodb_yg";
        assert_eq!(verify(token, SECRET, NOW), Verdict::Rejected);
    }

    #[test]
    fn deep_header_is_rejected_before_parsing_and_before_the_signature() {
        // enc({"alg": "HS256", "x": nest(80)}) + "." + enc(V) + ".AAAA": the attack needs no
        // secret, and in a jwt,trusted chain it must not reach trusted either.
        let token = "eyJhbGciOiJIUzI1NiIsIngiOltbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbMF1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dXV1dfQ.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjQxMDI0NDQ4MDB9.AAAA";
        assert_eq!(verify(token, SECRET, NOW), Verdict::Rejected);
        // Far beyond what the JSON parser would accept: still a plain rejection.
        let deep = format!(
            "{}.{}.AAAA",
            URL_SAFE_NO_PAD.encode("[".repeat(5000)),
            URL_SAFE_NO_PAD.encode("{}")
        );
        assert_eq!(verify(&deep, SECRET, NOW), Verdict::Rejected);
    }

    #[test]
    fn hostile_nesting_fits_a_coroutine_stack() {
        // The server verifies tokens on coroutines with 128 KiB stacks. Nesting just below the
        // JSON parser's own limit of 128 overflowed such a stack in debug builds; the depth scan
        // refuses it first, so this passes in any build.
        const COROUTINE_STACK_BYTES: usize = 128 * 1024;
        let header = format!(
            r#"{{"alg":"HS256","x":{}0{}}}"#,
            "[".repeat(126),
            "]".repeat(126)
        );
        let token = format!(
            "{}.{}.AAAA",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(r#"{"namespace":"ns1"}"#)
        );
        let verdict = std::thread::Builder::new()
            .stack_size(COROUTINE_STACK_BYTES)
            .spawn(move || verify(&token, SECRET, NOW))
            .expect("spawn")
            .join()
            .expect("no overflow");
        assert_eq!(verdict, Verdict::Rejected);
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        // tok(H, {"namespace": "ns1", "x": "[{" * 40 + '\\"' + "[" * 40}): the string holds an
        // escaped backslash and an escaped quote, and the brackets after them are still text.
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2UiOiJuczEiLCJ4IjoiW3tbe1t7W3tbe1t7W3tbe1t7W3tbe1t7W3tbe1t7W3tbe1t7W3tbe1t7W3tbe1t7W3tbe1t7W3tbe1t7W3tbe1t7W3tbe1t7W3tbe1t7W3tcXFwiW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbWyJ9.JdI2QaCymQGYXdE-zE8jMwO54QZoEdV1ZQNwitbvQao";
        assert_eq!(verify(token, SECRET, NOW), ns("ns1"));
    }

    #[test]
    fn any_crit_header_is_rejected() {
        let cases = [
            // tok({"alg": "HS256", "crit": ["exp"]}, V): correctly signed.
            ("exp", "eyJhbGciOiJIUzI1NiIsImNyaXQiOlsiZXhwIl19.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjQxMDI0NDQ4MDB9.NLbJEzcJqMAZ7WY9VU1E1L4KgvPefsT8sT3-u-W4W8g"),
            // tok({"alg": "HS256", "crit": []}, V)
            ("empty", "eyJhbGciOiJIUzI1NiIsImNyaXQiOltdfQ.eyJuYW1lc3BhY2UiOiJuczEiLCJleHAiOjQxMDI0NDQ4MDB9.1QMheYjBR7JxenHKxmCb5nBCOYkudv2rabfenPCbxU4"),
        ];
        for (kind, token) in cases {
            assert_eq!(verify(token, SECRET, NOW), Verdict::Rejected, "crit {kind}");
        }
    }

    // --- Signing --------------------------------------------------------------------------

    #[test]
    fn sign_matches_python() {
        // tok(H, {"exp": 4102444800, "namespace": "ns1", "sub": "svc"}); keys are inserted in
        // sorted order so the output is the same with or without serde_json's preserve_order.
        let expected = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjQxMDI0NDQ4MDAsIm5hbWVzcGFjZSI6Im5zMSIsInN1YiI6InN2YyJ9.H9WoWMERrL_FuDT4C8TcJM4vknYRJFhlzVP6q2RQtuE";
        let mut claims = Map::new();
        claims.insert("exp".into(), Value::from(4_102_444_800_u64));
        claims.insert("namespace".into(), Value::from("ns1"));
        claims.insert("sub".into(), Value::from("svc"));
        assert_eq!(sign(&claims, SECRET), expected);
    }

    #[test]
    fn sign_then_verify_round_trips() {
        let mut claims = Map::new();
        claims.insert("namespace".into(), Value::from("tenant-α"));
        claims.insert("exp".into(), Value::from(NOW + 60));
        claims.insert("nbf".into(), Value::from(NOW));
        let token = sign(&claims, SECRET);
        assert_eq!(verify(&token, SECRET, NOW), ns("tenant-α"));
        assert_eq!(verify(&token, b"other", NOW), Verdict::Rejected);
        assert_eq!(verify(&token, SECRET, NOW + 61), Verdict::Rejected);
    }

    #[test]
    fn sign_accepts_empty_and_long_secrets() {
        let mut claims = Map::new();
        claims.insert("namespace".into(), Value::from("ns1"));
        for secret in [&b""[..], &[0x5a; 200][..]] {
            assert_eq!(verify(&sign(&claims, secret), secret, NOW), ns("ns1"));
        }
    }

    // --- Robustness -----------------------------------------------------------------------

    #[test]
    fn arbitrary_input_never_panics_or_verifies() {
        // A fixed xorshift sequence picks characters biased towards the ones that matter to
        // the parser, so the same few thousand odd tokens are tried on every run.
        const ALPHABET: &[char] = &[
            'e', 'y', 'J', 'A', 'z', '0', '9', '-', '_', '+', '/', '=', '.', '.', ' ', '{', '"',
            'é', '名', '\0', '\u{ffff}',
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5_000 {
            let len = (next() % 64) as usize;
            let token: String = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect();
            assert!(
                !matches!(verify(&token, SECRET, NOW), Verdict::Namespace(_)),
                "{token:?}"
            );
        }
    }
}
