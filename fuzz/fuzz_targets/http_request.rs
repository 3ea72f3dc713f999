//! The HTTP/1.1 request decoder on arbitrary bytes, fed in small pieces as a connection would.
//! Nothing may panic; every request it decodes keeps the limits, and re-encoded (origin form,
//! `Content-Length` framing) it decodes again to the same method, path, query, headers and body.
#![no_main]

use a8registry::http::request::{Decoded, Decoder, Request, MAX_HEADERS, MAX_HEAD_BYTES};
use libfuzzer_sys::fuzz_target;

const MAX_BODY: usize = 4096;

fn decode_all(input: &[u8], step: usize) -> Vec<Request> {
    let mut decoder = Decoder::new(MAX_BODY);
    let mut pending: Vec<u8> = Vec::new();
    let mut requests = Vec::new();
    for piece in input.chunks(step.max(1)) {
        pending.extend_from_slice(piece);
        loop {
            match decoder.decode(&pending) {
                Ok((decoded, used)) => {
                    assert!(used <= pending.len(), "consumed more than given");
                    pending.drain(..used);
                    match decoded {
                        Decoded::NeedMore => break,
                        Decoded::SendContinue => {}
                        Decoded::Request(request) => requests.push(*request),
                    }
                }
                Err(_) => return requests,
            }
        }
    }
    requests
}

fn encode(request: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(request.method_text().as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.path.as_bytes());
    if let Some(query) = &request.query {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    out.extend_from_slice(format!(" HTTP/1.{}\r\n", request.version_minor).as_bytes());
    for (name, value) in kept_headers(request) {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if !request.body.is_empty() {
        out.extend_from_slice(format!("Content-Length: {}\r\n", request.body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&request.body);
    out
}

/// The headers that are not framing.
fn kept_headers(request: &Request) -> Vec<(&str, &str)> {
    request
        .headers
        .iter()
        .filter(|(n, _)| {
            !n.eq_ignore_ascii_case("content-length")
                && !n.eq_ignore_ascii_case("transfer-encoding")
                && !n.eq_ignore_ascii_case("expect")
        })
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let step = data.first().map_or(1, |b| usize::from(*b % 16) + 1);
    for request in decode_all(data, step) {
        assert!(
            request.path.starts_with('/') || request.path == "*",
            "{:?}",
            request.path
        );
        assert!(request.body.len() <= MAX_BODY);
        assert!(request.headers.len() <= MAX_HEADERS);
        // Header values were lossily decoded; those with U+FFFD may re-encode differently.
        if !request.non_utf8_headers.is_empty() {
            continue;
        }
        let encoded = encode(&request);
        // The re-encoding writes `name: value`; a head at the limit may not fit any more.
        if encoded.len() - request.body.len() > MAX_HEAD_BYTES {
            continue;
        }
        let again = decode_all(&encoded, 4096);
        assert_eq!(
            again.len(),
            1,
            "{request:?} re-encoded decodes to one request"
        );
        let again = &again[0];
        assert_eq!(again.method, request.method);
        assert_eq!(again.method_text(), request.method_text());
        assert_eq!(again.path, request.path);
        assert_eq!(again.query, request.query);
        assert_eq!(kept_headers(again), kept_headers(&request));
        assert_eq!(again.body, request.body);
    }
});
