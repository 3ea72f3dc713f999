//! JWT verification on arbitrary tokens: never panics, and whatever it accepts names a non-empty
//! namespace. The input's tail also becomes the claims of a token we sign, which must verify to
//! its namespace under the same secret and be rejected under another.
#![no_main]

use a8registry::auth::jwt::{sign, verify, Verdict, MAX_TOKEN_BYTES};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const SECRET: &[u8] = b"fuzzing-secret";
const NOW: i64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match verify(&text, SECRET, NOW) {
        Verdict::Namespace(namespace) => assert!(!namespace.is_empty()),
        Verdict::Unrecognised | Verdict::Rejected => {}
    }
    if text.len() > MAX_TOKEN_BYTES {
        assert_eq!(verify(&text, SECRET, NOW), Verdict::Rejected);
    }
    let namespace: String = text.chars().take(40).collect();
    let mut claims = Map::new();
    claims.insert("namespace".into(), Value::String(namespace.clone()));
    claims.insert(
        "sub".into(),
        Value::String(text.chars().skip(40).take(200).collect()),
    );
    let token = sign(&claims, SECRET);
    let expected = if namespace.is_empty() {
        Verdict::Rejected
    } else {
        Verdict::Namespace(namespace)
    };
    assert_eq!(verify(&token, SECRET, NOW), expected);
    assert_eq!(verify(&token, b"another secret", NOW), Verdict::Rejected);
});
