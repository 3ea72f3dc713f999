//! The web page (ui contract): a few hand-written files compiled into the binary and served from
//! `/ui/...` without authentication. The page reads everything it shows from the public API with
//! the token the person gives, so it shows nothing that curl would not.
//!
//! Every file is answered with an `ETag` (a hash of its bytes, computed at compile time) and
//! `Cache-Control: no-cache`: the names carry no version, so a browser must ask again after an
//! upgrade, and the question costs a 304 without a body. A strict `Content-Security-Policy` forbids
//! anything but the page's own files; the page has no inline script or style, so it satisfies it.

use crate::http::request::Request;
use crate::http::response::Response;

/// One embedded file.
struct Asset {
    /// The name under `/ui/` (`""` is the page itself).
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// 64-bit FNV-1a of the body, the `ETag`'s value.
    hash: u64,
}

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! asset {
    ($name:literal, $file:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!($file),
            hash: fnv1a(include_bytes!($file)),
        }
    };
}

/// Copies `script` into `out` (when `out` is not empty, and then exactly as long as the result)
/// without its indentation and its lines that are whole comments, and returns the length of the
/// result. The script has no template literals, the only place where a line's leading spaces or
/// a leading `//` would be text; what is left is the same program. It takes 6 KB off the binary,
/// whose size is budgeted.
const fn compact_script(script: &[u8], out: &mut [u8]) -> usize {
    let mut len = 0;
    let mut i = 0;
    while i < script.len() {
        while i < script.len() && script[i] == b' ' {
            i += 1;
        }
        let comment = i + 1 < script.len() && script[i] == b'/' && script[i + 1] == b'/';
        while i < script.len() {
            let byte = script[i];
            i += 1;
            if !comment {
                if !out.is_empty() {
                    out[len] = byte;
                }
                len += 1;
            }
            if byte == b'\n' {
                break;
            }
        }
    }
    len
}

const SCRIPT_SOURCE: &[u8] = include_bytes!("ui/ui.js");
const SCRIPT_LEN: usize = compact_script(SCRIPT_SOURCE, &mut []);
/// The page's script as served.
static SCRIPT: [u8; SCRIPT_LEN] = {
    let mut out = [0u8; SCRIPT_LEN];
    compact_script(SCRIPT_SOURCE, &mut out);
    out
};

const ASSETS: &[Asset] = &[
    asset!("", "ui/index.html", "text/html; charset=utf-8"),
    asset!("ui.css", "ui/ui.css", "text/css; charset=utf-8"),
    Asset {
        name: "ui.js",
        content_type: "text/javascript; charset=utf-8",
        body: &SCRIPT,
        hash: fnv1a(&SCRIPT),
    },
    asset!("icon.svg", "ui/icon.svg", "image/svg+xml"),
];

/// Nothing but the page's own files; no framing by other sites, no forms posted anywhere, no
/// `<base>` that could redirect its relative URLs.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's address, for `GET /ui` to redirect to and the startup log to name.
pub const PAGE_PATH: &str = "/ui/";

/// The page's URL on a server listening at `address`, for the startup log. A server listening
/// on every interface is named `localhost`, where the person running it can open it.
pub fn page_url(address: std::net::SocketAddr) -> String {
    if address.ip().is_unspecified() {
        return format!("http://localhost:{}{PAGE_PATH}", address.port());
    }
    format!("http://{address}{PAGE_PATH}")
}

/// `GET /ui`: the page lives at `/ui/`, whose relative URLs then resolve under `/ui/`.
pub fn redirect() -> Response {
    Response::empty(302).with_header("Location", PAGE_PATH.to_string())
}

/// `GET /ui/` (`name` empty) and `GET /ui/{name}`: the file, a 304 when the browser's copy is
/// current, or 404.
pub fn serve(request: &Request, name: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return Response::error(404, super::error::RESOURCE_NOT_FOUND);
    };
    let etag = format!("\"{:016x}\"", asset.hash);
    let current = request
        .header("if-none-match")
        .is_some_and(|tags| matches_any(tags, &etag));
    let response = if current {
        // No body and no Content-Length: a 304 describes the 200 it stands for (RFC 9110 §15.4.5).
        Response::static_body(304, asset.content_type, b"")
    } else {
        Response::static_body(200, asset.content_type, asset.body)
    };
    response
        .with_header("ETag", etag)
        .with_header("Cache-Control", "no-cache".to_string())
        .with_header(
            "Content-Security-Policy",
            CONTENT_SECURITY_POLICY.to_string(),
        )
        .with_header("X-Content-Type-Options", "nosniff".to_string())
        .with_header("Referrer-Policy", "no-referrer".to_string())
}

/// The weak comparison of `If-None-Match` (RFC 9110 §13.1.2): `*`, or a list of entity tags any
/// of which equals `etag` once a `W/` prefix is ignored.
fn matches_any(tags: &str, etag: &str) -> bool {
    tags.split(',').map(str::trim).any(|tag| {
        let tag = tag.strip_prefix("W/").unwrap_or(tag);
        tag == "*" || tag == etag
    })
}

/// The page and its files together, in bytes (the contract keeps them under 60 KB).
pub fn total_bytes() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_served_script_is_the_source_without_indentation_and_comment_lines() {
        let source = b"// why\n  const a = 1; // kept\n\n    //  indented comment\n  if (a) {\n    f('//x');\n  }";
        let len = compact_script(source, &mut []);
        let mut out = vec![0u8; len];
        assert_eq!(compact_script(source, &mut out), len);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "const a = 1; // kept\n\nif (a) {\nf('//x');\n}"
        );
        // The real script: every line of code is there, in order, only without its indentation.
        let code: Vec<&str> = std::str::from_utf8(SCRIPT_SOURCE)
            .unwrap()
            .lines()
            .map(str::trim_start)
            .filter(|line| !line.starts_with("//"))
            .collect();
        let served: Vec<&str> = std::str::from_utf8(&SCRIPT).unwrap().lines().collect();
        assert_eq!(served, code);
        assert!(SCRIPT.len() < SCRIPT_SOURCE.len());
    }

    #[test]
    fn the_page_and_its_files_stay_under_60_kb() {
        assert!(total_bytes() < 60_000, "{} bytes", total_bytes());
    }

    #[test]
    fn the_page_url_names_a_reachable_host() {
        let url = |a: &str| page_url(a.parse().unwrap());
        assert_eq!(url("127.0.0.1:8080"), "http://127.0.0.1:8080/ui/");
        assert_eq!(url("0.0.0.0:8080"), "http://localhost:8080/ui/");
        assert_eq!(url("[::]:80"), "http://localhost:80/ui/");
        assert_eq!(url("[::1]:9"), "http://[::1]:9/ui/");
    }

    #[test]
    fn if_none_match_compares_weakly_over_a_list() {
        let etag = "\"00ff\"";
        assert!(matches_any("\"00ff\"", etag));
        assert!(matches_any("W/\"00ff\"", etag));
        assert!(matches_any("\"aa\", \"00ff\"", etag));
        assert!(matches_any("*", etag));
        assert!(!matches_any("\"00fe\"", etag));
        assert!(!matches_any("00ff", etag));
        assert!(!matches_any("", etag));
    }

    #[test]
    fn hashes_differ_between_files() {
        let mut hashes: Vec<u64> = ASSETS.iter().map(|a| a.hash).collect();
        hashes.sort_unstable();
        hashes.dedup();
        assert_eq!(hashes.len(), ASSETS.len());
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let page = std::str::from_utf8(ASSETS[0].body).unwrap();
        assert!(!page.contains("<style"));
        assert!(!page.contains(" style="));
        let attributes = page.split(" on").skip(1);
        for rest in attributes {
            let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            assert!(
                !rest[name.len()..].starts_with('='),
                "inline event handler on{name}"
            );
        }
        for script in page.split("<script").skip(1) {
            assert!(script.trim_start().starts_with("src="), "{script}");
        }
    }
}
