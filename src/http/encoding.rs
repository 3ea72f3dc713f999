//! Content-coding negotiation (spec D40, RFC 9110 12.5.3): a body of [`MIN_GZIP_BODY_BYTES`] or
//! more goes out gzip-compressed when the request's `Accept-Encoding` allows gzip, and plain
//! otherwise; both carry `Vary: Accept-Encoding`. Smaller and empty bodies are never compressed
//! (nor labelled so) and carry no `Vary`. A streamed body, large by definition, is compressed as
//! it is made.

use super::gzip::{self, GzipProducer};
use super::request::Request;
use super::response::{Body, Coding, Response, Streamed};

/// Bodies under this size go out as they are: compressing them saves next to nothing.
pub const MIN_GZIP_BODY_BYTES: usize = 1024;

/// True when the `Accept-Encoding` fields of the request allow gzip: `gzip` (or its alias
/// `x-gzip`) with a weight above 0, or else `*` with one, and in either case a weight no lower
/// than the one `identity` is given explicitly (by name, or by `*` when `identity` is not named).
/// Without the field nothing is compressed. Tokens are case-insensitive, whitespace around them
/// and their parameters is ignored, and an element whose weight is malformed counts as absent.
pub fn accepts_gzip(request: &Request) -> bool {
    let mut fields = request
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("accept-encoding"))
        .map(|(_, value)| value.as_str())
        .peekable();
    if fields.peek().is_none() {
        return false;
    }
    allows_gzip(fields.flat_map(|value| value.split(',')))
}

/// The rule of [`accepts_gzip`] over the elements of the field's list.
fn allows_gzip<'a>(elements: impl Iterator<Item = &'a str>) -> bool {
    let (mut gzip, mut identity, mut any) = (None, None, None);
    for element in elements {
        let mut parts = element.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let Some(weight) = weight(parts) else {
            continue;
        };
        let slot = if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            &mut gzip
        } else if coding.eq_ignore_ascii_case("identity") {
            &mut identity
        } else if coding == "*" {
            &mut any
        } else {
            continue;
        };
        // A coding named twice keeps its highest weight.
        *slot = Some(slot.map_or(weight, |w: u16| w.max(weight)));
    }
    match gzip.or(any) {
        Some(weight) => weight > 0 && identity.or(any).is_none_or(|i| weight >= i),
        None => false,
    }
}

/// The weight of an element in thousandths (1000 without a `q` parameter), from its parameters;
/// `None` when `q` is malformed (RFC 9110 12.4.2: `0`, `0.` and up to three digits, or `1`, `1.`
/// and up to three zeros).
fn weight<'a>(parameters: impl Iterator<Item = &'a str>) -> Option<u16> {
    let mut weight = 1000;
    for parameter in parameters {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("q") {
            continue;
        }
        let value = value.trim();
        let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
        if fraction.len() > 3 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let thousandths = fraction
            .bytes()
            .chain(std::iter::repeat(b'0'))
            .take(3)
            .fold(0u16, |n, digit| n * 10 + u16::from(digit - b'0'));
        weight = match whole {
            "0" => thousandths,
            "1" if thousandths == 0 => 1000,
            _ => return None,
        };
    }
    Some(weight)
}

/// Chooses the coding of `response` for a client that does (`gzip`) or does not take gzip, and
/// compresses its body if so. A cached body is compressed once and kept with it; any other body
/// is compressed for this response. `between_chunks` runs between chunks of a long compression
/// (a coroutine yields there).
pub fn negotiate(response: &mut Response, gzip: bool, between_chunks: &mut dyn FnMut()) {
    if response.coding != Coding::Fixed {
        return;
    }
    // A streamed body is large (that is why it is streamed): compressed as it is made.
    if let Body::Streamed(_) = response.body {
        response.coding = Coding::Identity;
        if gzip {
            if let Body::Streamed(Streamed(plain)) =
                std::mem::replace(&mut response.body, Body::Empty)
            {
                response.body = Body::Streamed(Streamed(Box::new(GzipProducer::new(plain))));
                response.coding = Coding::Gzip;
            }
        }
        return;
    }
    if response.body.as_bytes().len() < MIN_GZIP_BODY_BYTES {
        return;
    }
    if !gzip {
        response.coding = Coding::Identity;
        return;
    }
    let compressed = match &response.body {
        Body::Cached(body) => {
            Body::Shared(body.gzip(|plain| gzip::compress(plain, between_chunks)))
        }
        other => Body::Owned(gzip::compress(other.as_bytes(), between_chunks)),
    };
    response.detach_body_header();
    response.body = compressed;
    response.coding = Coding::Gzip;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::response::CachedBody;
    use std::sync::Arc;

    fn allows(value: &str) -> bool {
        allows_gzip(value.split(','))
    }

    #[test]
    fn gzip_is_allowed_by_name_or_by_star() {
        for value in [
            "gzip",
            "GZIP",
            "x-gzip",
            "deflate, gzip",
            " gzip ;q=0.5",
            "gzip;Q=1.0",
            "gzip;q=1.000",
            "br;q=1, gzip;q=0.001",
            "*",
            "*;q=0.1",
            "gzip;q=0, gzip;q=0.5",
            "gzip;level=9",
            "gzip;q=0.5, identity;q=0.5",
            "identity;q=0, *",
        ] {
            assert!(allows(value), "{value:?}");
        }
    }

    #[test]
    fn gzip_is_refused_by_weight_absence_or_a_preferred_identity() {
        for value in [
            "",
            "identity",
            "deflate, br",
            "gzip;q=0",
            "gzip; q=0.000",
            "gzip;q=0, *",
            "*;q=0",
            "gzip;q=1.5",
            "gzip;q=0.1234",
            "gzip;q=2",
            "gzip;q=abc",
            "gzip;q=",
            "gzip;q=0.5, identity",
            "*;q=0.5, identity;q=1",
            "gzip2",
        ] {
            assert!(!allows(value), "{value:?}");
        }
    }

    fn response(body: Body) -> Response {
        let mut response = Response::empty(200);
        response.body = body;
        response
    }

    #[test]
    fn large_bodies_are_compressed_and_small_ones_left_alone() {
        let large = vec![b'a'; MIN_GZIP_BODY_BYTES];
        let mut r = response(Body::Owned(large.clone()));
        negotiate(&mut r, true, &mut || {});
        assert_eq!(r.coding, Coding::Gzip);
        assert_eq!(&r.body.as_bytes()[..2], &[0x1f, 0x8b]);
        let mut r = response(Body::Owned(large));
        negotiate(&mut r, false, &mut || {});
        assert_eq!(r.coding, Coding::Identity, "Vary on the plain one too");
        assert_eq!(r.body.as_bytes().len(), MIN_GZIP_BODY_BYTES);
        let mut r = response(Body::Owned(vec![b'a'; MIN_GZIP_BODY_BYTES - 1]));
        negotiate(&mut r, true, &mut || {});
        assert_eq!(r.coding, Coding::Fixed);
        let mut r = response(Body::Empty);
        negotiate(&mut r, true, &mut || {});
        assert_eq!(
            r.coding,
            Coding::Fixed,
            "an empty body is never labelled gzip"
        );
    }

    #[test]
    fn a_cached_body_is_compressed_once() {
        let body = Arc::new(CachedBody::new(vec![b'b'; 4096]));
        let mut first = response(Body::Cached(body.clone()));
        negotiate(&mut first, true, &mut || {});
        let mut second = response(Body::Cached(body.clone()));
        negotiate(&mut second, true, &mut || {});
        assert_eq!(
            first.body.as_bytes().as_ptr(),
            second.body.as_bytes().as_ptr()
        );
        assert_eq!(body.plain().len(), 4096, "the plain one stays");
    }
}
