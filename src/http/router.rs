//! A table of (method, path pattern) → handler and metadata, matched on the raw path (spec 1.5).
//!
//! Patterns are `/`-separated segments; `{name}` is a parameter matching one raw segment. A
//! parameter at the end of a path must be non-empty; one in the middle may be empty. Literal
//! segments are compared raw (`/api/v1/%73ervices` is not `/api/v1/services`). Parameters are
//! percent-decoded only after a route matched (D2), by [`percent_decode`].
//!
//! Each route carries a [`RouteMeta`]: what the stages before its handler do (authenticate,
//! redirect plain HTTP to https) and its operation, the name metrics and logs count it under.

use super::request::Method;
use std::borrow::Cow;

/// Most parameters a route pattern may have; routing keeps them in place, not on the heap.
pub const MAX_PARAMS: usize = 4;
/// Most segments a route pattern may have: a longer path matches no route.
const MAX_SEGMENTS: usize = 12;

/// The raw (still percent-encoded) parameters of a matched route, in order, borrowed from the
/// path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params<'p> {
    values: [&'p str; MAX_PARAMS],
    len: usize,
}

impl<'p> Params<'p> {
    /// Parameters with these values (at most [`MAX_PARAMS`]).
    pub fn from_slice(values: &[&'p str]) -> Params<'p> {
        let mut params = Params {
            values: [""; MAX_PARAMS],
            len: 0,
        };
        for value in values {
            params.push(value);
        }
        params
    }

    fn push(&mut self, value: &'p str) {
        self.values[self.len] = value;
        self.len += 1;
    }

    pub fn as_slice(&self) -> &[&'p str] {
        &self.values[..self.len]
    }
}

enum Segment {
    Literal(String),
    Param,
}

/// What the stages before a route's handler need to know of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteMeta<Op> {
    /// What the route does, for metrics and logs.
    pub operation: Op,
    /// Requests are authenticated before the handler runs.
    pub authenticated: bool,
    /// Plain-HTTP requests are redirected to https when HTTPS is required.
    pub https_redirect: bool,
}

impl<Op> RouteMeta<Op> {
    /// A route open to everyone over any scheme (liveness, health).
    pub const fn public(operation: Op) -> RouteMeta<Op> {
        RouteMeta {
            operation,
            authenticated: false,
            https_redirect: false,
        }
    }

    /// A route of a protocol: redirected to https when required, then authenticated.
    pub const fn protected(operation: Op) -> RouteMeta<Op> {
        RouteMeta {
            operation,
            authenticated: true,
            https_redirect: true,
        }
    }
}

struct Route<H, Op> {
    method: Method,
    segments: Vec<Segment>,
    handler: H,
    meta: RouteMeta<Op>,
}

/// What routing found.
#[derive(Debug, PartialEq, Eq)]
pub enum Routed<'p, H, Op> {
    /// A route matched: its handler, its metadata and the raw (still percent-encoded)
    /// parameters in order.
    Found(H, RouteMeta<Op>, Params<'p>),
    /// 405: some route has this path, none this method.
    MethodNotAllowed,
    /// 404: no route has this path.
    NotFound,
}

/// The route table. Earlier routes win, so list literal routes before parameter routes that
/// overlap them (`/apps/delta` before `/apps/{app}`).
///
/// Routes are kept by their number of segments, in the order they were added: a path is compared
/// only with the patterns as long as it (a heartbeat's with 8 of the 55, instead of checking the
/// length of each).
pub struct Router<H, Op> {
    by_segments: [Vec<Route<H, Op>>; MAX_SEGMENTS + 1],
}

impl<H: Copy, Op: Copy> Default for Router<H, Op> {
    fn default() -> Self {
        Router {
            by_segments: std::array::from_fn(|_| Vec::new()),
        }
    }
}

impl<H: Copy, Op: Copy> Router<H, Op> {
    /// Adds a route; `pattern` starts with `/`, parameters are written `{name}`.
    pub fn add(&mut self, method: Method, pattern: &str, handler: H, meta: RouteMeta<Op>) {
        let segments: Vec<Segment> = pattern
            .split('/')
            .skip(1)
            .map(|s| {
                if s.starts_with('{') && s.ends_with('}') {
                    Segment::Param
                } else {
                    Segment::Literal(s.to_string())
                }
            })
            .collect();
        assert!(
            segments.len() <= MAX_SEGMENTS,
            "too many segments: {pattern}"
        );
        let params = segments
            .iter()
            .filter(|s| matches!(s, Segment::Param))
            .count();
        assert!(params <= MAX_PARAMS, "too many parameters: {pattern}");
        self.by_segments[segments.len()].push(Route {
            method,
            segments,
            handler,
            meta,
        });
    }

    /// Finds the route for `method` and the raw `path`. HEAD is served by GET routes (D16).
    pub fn route<'p>(&self, method: Method, path: &'p str) -> Routed<'p, H, Op> {
        // A byte test: `strip_prefix('/')` is a call of some 60 instructions.
        if path.as_bytes().first() != Some(&b'/') {
            return Routed::NotFound;
        }
        let rest = &path[1..];
        let wanted = if method == Method::Head {
            Method::Get
        } else {
            method
        };
        // Split once, in place: a path of more segments than any pattern matches none.
        let mut part_slots = [""; MAX_SEGMENTS];
        let mut count = 0;
        let fits = super::scan::for_each_piece(rest, b'/', |part| {
            if count == MAX_SEGMENTS {
                return false;
            }
            part_slots[count] = part;
            count += 1;
            true
        });
        if !fits {
            return Routed::NotFound;
        }
        let parts = &part_slots[..count];
        let routes = &self.by_segments[parts.len()];
        // The routes of the method first: the path is compared with no pattern of another.
        for route in routes.iter().filter(|route| route.method == wanted) {
            if let Some(params) = match_segments(&route.segments, parts) {
                return Routed::Found(route.handler, route.meta, params);
            }
        }
        if routes
            .iter()
            .any(|route| match_segments(&route.segments, parts).is_some())
        {
            Routed::MethodNotAllowed
        } else {
            Routed::NotFound
        }
    }
}

/// The parameters of `parts` when they match the pattern's `segments`. Inlined into both loops
/// of [`Router::route`]: returned from a call, the parameters would be copied once more.
#[inline(always)]
fn match_segments<'p>(segments: &[Segment], parts: &[&'p str]) -> Option<Params<'p>> {
    if segments.len() != parts.len() {
        return None;
    }
    let mut params = Params::from_slice(&[]);
    for (i, (segment, part)) in segments.iter().zip(parts).enumerate() {
        match segment {
            Segment::Literal(literal)
                if crate::equal_bytes::equal_bytes(literal.as_bytes(), part.as_bytes()) => {}
            Segment::Literal(_) => return None,
            Segment::Param if part.is_empty() && i == parts.len() - 1 => return None,
            Segment::Param => params.push(part),
        }
    }
    Some(params)
}

/// Decodes `%XX` escapes of a path parameter; `+` stays `+`. `None` for a malformed escape or a
/// result that is not UTF-8 (spec D2: 400 `Malformed percent-encoding in request path`). A
/// parameter without escapes is borrowed, not copied.
pub fn percent_decode(raw: &str) -> Option<Cow<'_, str>> {
    if super::scan::find_byte(raw.as_bytes(), b'%', 0).is_none() {
        return Some(Cow::Borrowed(raw));
    }
    decode_bytes(raw, false)
        .and_then(|b| String::from_utf8(b).ok())
        .map(Cow::Owned)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn decode_bytes(raw: &str, plus_is_space: bool) -> Option<Vec<u8>> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let high = hex_value(*bytes.get(i + 1)?)?;
                let low = hex_value(*bytes.get(i + 2)?)?;
                out.push(high << 4 | low);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Parses a query string as Go's `url.ParseQuery` does: `&`-separated pairs, `+` is a space, a pair
/// whose name or value has a malformed escape is dropped. Pairs keep their order; a repeated name
/// is looked up by its first occurrence (see [`first_value`]).
pub fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    let Some(query) = query else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = String::from_utf8(decode_bytes(name, true)?).ok()?;
            let value = String::from_utf8(decode_bytes(value, true)?).ok()?;
            Some((name, value))
        })
        .collect()
}

/// The names of the query's pairs whose value does not decode (a bad escape, or not UTF-8),
/// which [`parse_query`] leaves out: a route that must not read such a parameter as absent
/// refuses them.
pub fn undecodable_values(query: Option<&str>) -> Vec<String> {
    let Some(query) = query else {
        return Vec::new();
    };
    query
        .split('&')
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let value_decodes =
                decode_bytes(value, true).is_some_and(|v| String::from_utf8(v).is_ok());
            if value_decodes {
                return None;
            }
            String::from_utf8(decode_bytes(name, true)?).ok()
        })
        .collect()
}

/// The first value of `name` in a parsed query.
pub fn first_value<'q>(query: &'q [(String, String)], name: &str) -> Option<&'q str> {
    query
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: RouteMeta<&str> = RouteMeta::public("Open");

    fn table() -> Router<u8, &'static str> {
        let mut r = Router::default();
        r.add(Method::Get, "/", 1, OPEN);
        r.add(Method::Get, "/api/v1/instances", 2, OPEN);
        r.add(Method::Post, "/api/v1/instances", 3, OPEN);
        r.add(Method::Delete, "/api/v1/instances/{id}", 4, OPEN);
        r.add(Method::Put, "/api/v1/instances/{id}/heartbeat", 5, OPEN);
        r.add(Method::Get, "/api/eureka/{token}/v2/apps/delta", 6, OPEN);
        r.add(Method::Get, "/api/eureka/{token}/v2/apps/{app}", 7, OPEN);
        r.add(
            Method::Post,
            "/api/eureka/{token}/v2/apps/{app}",
            8,
            RouteMeta::protected("Register"),
        );
        r
    }

    #[test]
    fn literal_routes_and_head() {
        let r = table();
        assert_eq!(
            r.route(Method::Get, "/"),
            Routed::Found(1, OPEN, Params::from_slice(&[]))
        );
        assert_eq!(
            r.route(Method::Head, "/"),
            Routed::Found(1, OPEN, Params::from_slice(&[]))
        );
        assert_eq!(
            r.route(Method::Post, "/api/v1/instances"),
            Routed::Found(3, OPEN, Params::from_slice(&[]))
        );
        assert_eq!(
            r.route(Method::Put, "/api/v1/instances"),
            Routed::MethodNotAllowed
        );
        assert_eq!(r.route(Method::Other, "/"), Routed::MethodNotAllowed);
        assert_eq!(r.route(Method::Get, "/hello"), Routed::NotFound);
        assert_eq!(
            r.route(Method::Get, "/api/v1/%69nstances"),
            Routed::NotFound
        );
        assert_eq!(r.route(Method::Get, "/api/v1/instances/"), Routed::NotFound);
        assert_eq!(r.route(Method::Get, "*"), Routed::NotFound);
    }

    #[test]
    fn parameters_and_emptiness() {
        let r = table();
        assert_eq!(
            r.route(Method::Put, "/api/v1/instances/a%3Ab/heartbeat"),
            Routed::Found(5, OPEN, Params::from_slice(&["a%3Ab"]))
        );
        assert_eq!(
            r.route(Method::Put, "/api/v1/instances//heartbeat"),
            Routed::Found(5, OPEN, Params::from_slice(&[""]))
        );
        assert_eq!(
            r.route(Method::Delete, "/api/v1/instances/"),
            Routed::NotFound
        );
        assert_eq!(
            r.route(Method::Head, "/api/v1/instances/x"),
            Routed::MethodNotAllowed
        );
        assert_eq!(
            r.route(Method::Get, "/api/eureka//v2/apps/X"),
            Routed::Found(7, OPEN, Params::from_slice(&["", "X"]))
        );
    }

    #[test]
    fn earlier_routes_win_and_methods_fall_through() {
        let r = table();
        assert_eq!(
            r.route(Method::Get, "/api/eureka/t/v2/apps/delta"),
            Routed::Found(6, OPEN, Params::from_slice(&["t"]))
        );
        assert_eq!(
            r.route(Method::Post, "/api/eureka/t/v2/apps/delta"),
            Routed::Found(
                8,
                RouteMeta::protected("Register"),
                Params::from_slice(&["t", "delta"])
            )
        );
    }

    #[test]
    fn percent_decoding_of_parameters() {
        assert_eq!(percent_decode("my%20svc").as_deref(), Some("my svc"));
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("a+b").as_deref(), Some("a+b"));
        for bad in ["%zz", "%4", "%", "%E0%A4"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn query_parsing_like_go() {
        let q = parse_query(Some("a=1&b=x+y&a=2&bad=%zz&c=%20&flag"));
        assert_eq!(first_value(&q, "a"), Some("1"));
        assert_eq!(first_value(&q, "b"), Some("x y"));
        assert_eq!(first_value(&q, "bad"), None);
        assert_eq!(first_value(&q, "c"), Some(" "));
        assert_eq!(first_value(&q, "flag"), Some(""));
    }
}
