//! Multi-tenancy: token extraction, trusted and JWT modes, chains, HTTPS enforcement and isolation
//! (spec section 2; cases 7.2 and 7.12).
//!
//! Attack tokens are forged here with hmac/sha2/base64 directly, not with the server's code.

use a8registry_static_tests::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

const SECRET: &str = "s3cr3t";
const INVALID: &str = "Authorization failure, invalid token";
const MISSING: &str = "Missing request Authorization header";
const MALFORMED: &str = "Malformed request Authorization header, expecting Bearer Token";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS with this header and payload, signed with HMAC over `hash` (256/384/512).
fn forge(header: &Value, payload: &Value, secret: &str, hash: u16) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    let tag = match hash {
        256 => {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        384 => {
            let mut mac = Hmac::<sha2::Sha384>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        _ => {
            let mut mac = Hmac::<sha2::Sha512>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
    };
    format!("{input}.{}", b64(&tag))
}

fn hs256(payload: Value) -> String {
    forge(
        &json!({"alg": "HS256", "typ": "JWT"}),
        &payload,
        SECRET,
        256,
    )
}

fn services_as(server: &Server, authorization: Option<&str>) -> Response {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    server.request("GET", "/api/v1/services", &headers, None)
}

fn service_names(response: &Response) -> Vec<String> {
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn single_tenant_mode_accepts_no_token_or_default_only() {
    let server = Server::start(&[]);
    assert_eq!(services_as(&server, None).status, 200);
    assert_eq!(services_as(&server, Some("Bearer default")).status, 200);
    services_as(&server, Some("Bearer foo")).assert_error(401, INVALID);
    for header in ["Token x", "BEARER x", "Bearer", "Bearer ", "Basic xyz"] {
        services_as(&server, Some(header)).assert_error(401, MALFORMED);
    }
}

#[test]
fn trusted_mode_token_is_the_namespace() {
    let server = Server::start(&["--auth_mode", "trusted"]);
    services_as(&server, None).assert_error(401, MISSING);
    for header in ["Token x", "BEARER x", "Bearer", "Bearer "] {
        services_as(&server, Some(header)).assert_error(401, MALFORMED);
    }
    let r = server.post_json_as(
        "tenantA",
        "/api/v1/instances",
        &registration("svcA", "h:1", ""),
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        service_names(&services_as(&server, Some("Bearer tenantA"))),
        ["svcA"]
    );
    assert!(service_names(&services_as(&server, Some("Bearer tenantB"))).is_empty());
    assert_eq!(
        service_names(&services_as(&server, Some("bearer tenantA"))),
        ["svcA"]
    );
    assert!(service_names(&services_as(&server, Some("Bearer  tenantA"))).is_empty());
    assert!(service_names(&services_as(&server, Some("Bearer tenant A"))).is_empty());
    // / and /uptime need no token in any mode.
    assert_eq!(server.get("/").status, 200);
    assert_eq!(server.get("/uptime").status, 200);
}

#[test]
fn jwt_mode_validates_hs256_tokens() {
    let server = Server::start(&["--auth_mode", "jwt", "--jwt_secret", SECRET]);
    let ok = |token: &str| services_as(&server, Some(&format!("Bearer {token}")));
    assert_eq!(
        ok(&hs256(json!({"namespace": "ns1", "exp": now() + 3600}))).status,
        200
    );
    assert_eq!(
        ok(&hs256(json!({"namespace": "ns1"}))).status,
        200,
        "no exp"
    );
    assert_eq!(
        ok(&hs256(
            json!({"namespace": "ns1", "exp": (now() - 3600).to_string()})
        ))
        .status,
        200,
        "a string exp is ignored"
    );
    services_as(&server, None).assert_error(401, MISSING);
    ok("garbage").assert_error(401, INVALID);

    let valid = hs256(json!({"namespace": "ns1", "exp": now() + 3600}));
    let (input, signature) = valid.rsplit_once('.').unwrap();
    let mut flipped = URL_SAFE_NO_PAD.decode(signature).unwrap();
    flipped[0] ^= 1;
    let attacks: Vec<(&str, String)> = vec![
        (
            "exp one second past",
            hs256(json!({"namespace": "ns1", "exp": now() - 1})),
        ),
        (
            "nbf in the future",
            hs256(json!({"namespace": "ns1", "nbf": now() + 60})),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(br#"{"alg":"none","typ":"JWT"}"#),
                b64(br#"{"namespace":"ns1"}"#)
            ),
        ),
        (
            "alg None",
            forge(
                &json!({"alg": "None"}),
                &json!({"namespace": "ns1"}),
                SECRET,
                256,
            ),
        ),
        (
            "alg NONE",
            forge(
                &json!({"alg": "NONE"}),
                &json!({"namespace": "ns1"}),
                SECRET,
                256,
            ),
        ),
        (
            "alg hs256",
            forge(
                &json!({"alg": "hs256"}),
                &json!({"namespace": "ns1"}),
                SECRET,
                256,
            ),
        ),
        (
            "HS384",
            forge(
                &json!({"alg": "HS384"}),
                &json!({"namespace": "ns1"}),
                SECRET,
                384,
            ),
        ),
        (
            "HS512",
            forge(
                &json!({"alg": "HS512"}),
                &json!({"namespace": "ns1"}),
                SECRET,
                512,
            ),
        ),
        (
            "RS256 with the secret",
            forge(
                &json!({"alg": "RS256"}),
                &json!({"namespace": "ns1"}),
                SECRET,
                256,
            ),
        ),
        (
            "another secret",
            forge(
                &json!({"alg": "HS256"}),
                &json!({"namespace": "ns1"}),
                "other",
                256,
            ),
        ),
        (
            "flipped signature bit",
            format!("{input}.{}", b64(&flipped)),
        ),
        ("truncated signature", valid[..valid.len() - 4].to_string()),
        ("namespace number", hs256(json!({"namespace": 5}))),
        ("namespace object", hs256(json!({"namespace": {"a": 1}}))),
        ("namespace array", hs256(json!({"namespace": ["ns1"]}))),
        ("namespace true", hs256(json!({"namespace": true}))),
        ("namespace null", hs256(json!({"namespace": null}))),
        ("namespace empty", hs256(json!({"namespace": ""}))),
        ("namespace missing", hs256(json!({"sub": "ns1"}))),
        ("one dot", input.to_string()),
        ("three dots", format!("{valid}.x")),
        ("empty segments", "..".to_string()),
        ("bad base64", format!("{}!.{}", &input, signature)),
        (
            "payload not an object",
            forge(&json!({"alg": "HS256"}), &json!(["ns1"]), SECRET, 256),
        ),
        (
            "9 KiB token",
            hs256(json!({"namespace": "ns1", "pad": "x".repeat(9 * 1024)})),
        ),
    ];
    for (name, token) in &attacks {
        let r = ok(token);
        assert_eq!(r.status, 401, "{name}: {}", r.text());
        r.assert_error(401, INVALID);
        // Nothing is written with such a token either.
        server
            .post_json_as(token, "/api/v1/instances", &registration("evil", "h:1", ""))
            .assert_error(401, INVALID);
    }
    let ns1 = format!("Bearer {}", hs256(json!({"namespace": "ns1"})));
    assert!(
        service_names(&services_as(&server, Some(&ns1))).is_empty(),
        "the store is unchanged"
    );
    // 8193 bytes is over the limit; the limit applies before any decoding.
    ok(&"a".repeat(8193)).assert_error(401, INVALID);
}

#[test]
fn jwt_then_trusted_chain() {
    let server = Server::start_with_env(
        &["--jwt_secret", SECRET],
        &[("A8_AUTH_MODE", "jwt,trusted")],
    );
    let as_bearer = |token: &str| services_as(&server, Some(&format!("Bearer {token}")));
    let r = server.post_json_as(
        "plainns",
        "/api/v1/instances",
        &registration("plain", "h:1", ""),
    );
    assert_eq!(r.status, 201);
    assert_eq!(service_names(&as_bearer("plainns")), ["plain"]);
    let jwt = hs256(json!({"namespace": "plainns", "exp": now() + 60}));
    assert_eq!(
        service_names(&as_bearer(&jwt)),
        ["plain"],
        "namespace from the claim"
    );
    as_bearer(&hs256(json!({"namespace": "plainns", "exp": now() - 60})))
        .assert_error(401, INVALID);
    services_as(&server, None).assert_error(401, MISSING);
    // Too long for JWT: rejected, not passed on to trusted.
    as_bearer(&"a".repeat(8193)).assert_error(401, INVALID);

    let trusted_first = Server::start_with_env(
        &["--jwt_secret", SECRET],
        &[("A8_AUTH_MODE", "trusted,jwt")],
    );
    let r = trusted_first.post_json_as(
        &jwt,
        "/api/v1/instances",
        &registration("verbatim", "h:1", ""),
    );
    assert_eq!(r.status, 201);
    let listed = services_as(&trusted_first, Some(&format!("Bearer {jwt}")));
    assert_eq!(
        service_names(&listed),
        ["verbatim"],
        "the JWT string itself is the namespace"
    );
    let via_claim = hs256(json!({"namespace": "plainns"}));
    assert!(service_names(&services_as(
        &trusted_first,
        Some(&format!("Bearer {via_claim}"))
    ))
    .is_empty());
}

#[test]
fn the_token_tool_mints_tokens_the_server_accepts() {
    let (code, token, stderr) = run_to_exit(
        &[
            "token",
            "--secret",
            SECRET,
            "--namespace",
            "minted",
            "--ttl",
            "24h",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let token = token.trim();
    let server = Server::start(&["--auth_mode", "jwt", "--jwt_secret", SECRET]);
    let r = server.post_json_as(token, "/api/v1/instances", &registration("m", "h:1", ""));
    assert_eq!(r.status, 201);
    // Its claims are what was asked for.
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["namespace"], "minted");
    let exp = payload["exp"].as_i64().unwrap();
    assert!((exp - now() - 86_400).abs() < 60, "{exp}");
    let other = Server::start(&["--auth_mode", "jwt", "--jwt_secret", "different"]);
    other
        .post_json_as(token, "/api/v1/instances", &registration("m", "h:1", ""))
        .assert_error(401, INVALID);
    let (code, _, stderr) = run_to_exit(&["token", "--namespace", "x"], &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--secret"), "{stderr}");
}

#[test]
fn the_token_tool_has_its_own_options_and_refuses_bad_namespaces() {
    let (code, help, _) = run_to_exit(&["token", "--help"], &[]);
    assert_eq!(code, Some(0));
    for option in ["--secret <text>", "--namespace <text>", "--ttl <duration>"] {
        assert!(help.contains(option), "{option} in {help}");
    }
    assert!(!help.contains("--api_port"), "{help}");
    // A token for a namespace the server would refuse is refused when minted.
    for namespace in ["a\nb", "tab\there", &"n".repeat(257)] {
        let (code, token, stderr) = run_to_exit(
            &["token", "--secret", SECRET, "--namespace", namespace],
            &[],
        );
        assert_eq!(code, Some(2), "{namespace:?}: minted {token}");
        assert!(stderr.contains("--namespace"), "{stderr}");
    }
    // The environment does not change what is minted.
    let (code, token, _) = run_to_exit(
        &["token", "--secret", SECRET, "--namespace", "n"],
        &[("A8_TTL", "1s"), ("A8_NAMESPACE", "other")],
    );
    assert_eq!(code, Some(0));
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.trim().split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload, json!({"namespace": "n"}));
}

#[test]
fn require_https_redirects_api_routes_before_auth() {
    let server = Server::start(&["--require_https"]);
    let r = server.request(
        "GET",
        "/api/v1/services?x=1&y=%20",
        &[("Host", "localhost:8080")],
        None,
    );
    assert_eq!(r.status, 301);
    assert!(r.body.is_empty());
    assert_eq!(
        r.header("location"),
        Some("https://localhost:8080/api/v1/services?x=1&y=%20")
    );
    let plain = server.request("GET", "/api/v1/services", &[("Host", "h")], None);
    assert_eq!(plain.header("location"), Some("https://h/api/v1/services"));
    let post = server.post_json("/api/v1/instances", &registration("s", "h:1", ""));
    assert_eq!(post.status, 301);
    assert_eq!(
        server
            .request("DELETE", "/api/v1/instances/x", &[], None)
            .status,
        301
    );

    let forwarded = |proto: (&str, &str)| server.request("GET", "/api/v1/services", &[proto], None);
    assert_eq!(forwarded(("X-Forwarded-Proto", "https")).status, 200);
    assert_eq!(forwarded(("X-Forwarded-Proto", "HTTPS")).status, 301);
    assert_eq!(forwarded(("$WSSC", "https")).status, 200);
    assert_eq!(server.get("/uptime").status, 200);
    assert_eq!(server.get("/").status, 200);
    let absolute = server.request("GET", "https://localhost/api/v1/services", &[], None);
    assert_eq!(
        absolute.status, 200,
        "an absolute https target counts as secure"
    );

    let bad_token = server.request(
        "GET",
        "/api/v1/services",
        &[("Authorization", "Bearer foo")],
        None,
    );
    assert_eq!(bad_token.status, 301, "redirect before auth");
    let secure_bad_token = server.request(
        "GET",
        "/api/v1/services",
        &[
            ("Authorization", "Bearer foo"),
            ("X-Forwarded-Proto", "https"),
        ],
        None,
    );
    secure_bad_token.assert_error(401, INVALID);
}

#[test]
fn tenants_share_nothing() {
    let server = Server::start(&["--auth_mode", "trusted", "--namespace_capacity", "1"]);
    let tenants = [
        "A", "B", "a:b", "a/b", "*", "..", "\u{200b}", "x\u{301}", "default",
    ];
    let mut ids = Vec::new();
    for tenant in tenants {
        // Each tenant's record carries its own name, so a shared namespace would show.
        let metadata = format!("\"metadata\":{}", serde_json::json!({ "tenant": tenant }));
        let r = server.post_json_as(
            tenant,
            "/api/v1/instances",
            &registration("shared", "h:1", &metadata),
        );
        assert_eq!(r.status, 201, "{tenant:?}: {}", r.text());
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    // The same service and endpoint gives the same id in every namespace, as independent records.
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
    let id = &ids[0];
    for tenant in tenants {
        let auth = format!("Bearer {tenant}");
        let listing = server
            .request(
                "GET",
                "/api/v1/instances",
                &[("Authorization", &auth)],
                None,
            )
            .json();
        assert_eq!(instance_count(&listing), 1, "{tenant:?}");
        assert_eq!(
            listing["instances"][0]["metadata"]["tenant"], tenant,
            "{tenant:?}"
        );
        // Capacity is per namespace: each tenant is full with its one instance.
        server
            .post_json_as(
                tenant,
                "/api/v1/instances",
                &registration("other", "h:2", ""),
            )
            .assert_error(403, "Failed to register instance");
    }
    // Tokens that are not UTF-8 are refused: a lossy copy would make \xff and \xfe one tenant.
    for byte in [0xffu8, 0xfe] {
        let mut raw =
            b"GET /api/v1/services HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ".to_vec();
        raw.push(byte);
        raw.extend_from_slice(b"\r\n\r\n");
        let mut conn = server.connect();
        std::io::Write::write_all(&mut conn, &raw).unwrap();
        read_response(&mut conn, false)
            .unwrap()
            .assert_error(401, MALFORMED);
    }
    // B removes its own record; A's stays, and B can no longer renew or remove anything.
    let as_b = [("Authorization", "Bearer B")];
    assert_eq!(
        server
            .request("DELETE", &format!("/api/v1/instances/{id}"), &as_b, None)
            .status,
        200
    );
    server
        .request(
            "PUT",
            &format!("/api/v1/instances/{id}/heartbeat"),
            &as_b,
            None,
        )
        .assert_error(410, "Failed to renew instance registration");
    server
        .request("DELETE", &format!("/api/v1/instances/{id}"), &as_b, None)
        .assert_error(410, "Failed to deregister instance");
    server
        .request("GET", "/api/v1/services/shared", &as_b, None)
        .assert_error(404, "Failed to enumerate service names");
    let as_a = [("Authorization", "Bearer A")];
    assert_eq!(
        server
            .request(
                "PUT",
                &format!("/api/v1/instances/{id}/heartbeat"),
                &as_a,
                None
            )
            .status,
        200
    );
    assert_eq!(
        server
            .request("GET", "/api/v1/services/shared", &as_a, None)
            .status,
        200
    );
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn reads_with_100000_distinct_tokens_do_not_grow_memory() {
    let server = Server::start(&["--auth_mode", "trusted"]);
    let read_burst = |offset: usize, count: usize| {
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let address = server.address;
                std::thread::spawn(move || {
                    let mut conn = connect(address);
                    let per_thread = count / 8;
                    for batch in 0..per_thread / 50 {
                        let mut raw = String::new();
                        for k in 0..50 {
                            let token = offset + t * per_thread + batch * 50 + k;
                            // Every kind of read, cached or not, in both protocols.
                            let path = [
                                "/api/v1/services",
                                "/api/v1/instances?service_name=s",
                                "/api/v1/services/s",
                                "/eureka/v2/apps",
                                "/eureka/v2/apps/delta",
                                "/eureka/v2/apps/S",
                            ][k % 6];
                            raw.push_str(&format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tenant-{token}\r\n\r\n"));
                        }
                        std::io::Write::write_all(&mut conn, raw.as_bytes()).unwrap();
                        for k in 0..50 {
                            let status = read_response(&mut conn, false).unwrap().status;
                            // The absent service and app answer 404, everything else 200.
                            let expected = if k % 6 == 2 || k % 6 == 5 { 404 } else { 200 };
                            assert_eq!(status, expected, "request {k}");
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    };
    // Warm up allocator arenas and connection buffers first, then measure.
    read_burst(0, 10_000);
    let before = rss_kib(server.pid());
    read_burst(1_000_000, 100_000);
    let after = rss_kib(server.pid());
    // Per-namespace state would cost well over 100 bytes a tenant (10 MB for 100,000).
    assert!(
        after < before + 4 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

/// A minimal Eureka registration of app `APP`.
fn eureka_instance() -> String {
    json!({"instance":{"instanceId":"i1","hostName":"h1","app":"APP","ipAddr":"10.0.0.1","status":"UP","port":{"$":80,"@enabled":"true"},"vipAddress":"app","dataCenterInfo":{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"}}}).to_string()
}

/// One write and one read with `token` on every route family that authenticates: the Amalgam8
/// API and the three Eureka prefixes (the path-token prefix with the token in the header, which
/// overrides the path).
fn every_route_with(server: &Server, token: &str) -> Vec<(String, Response)> {
    let auth = format!("Bearer {token}");
    let amalgam8 = registration("svc", "h:1", "");
    let eureka = eureka_instance();
    let json_type = ("Content-Type", "application/json");
    let accept = ("Accept", "application/json");
    [
        ("POST", "/api/v1/instances", Some(amalgam8.as_str())),
        ("GET", "/api/v1/services", None),
        (
            "POST",
            "/api/eureka/path/v2/apps/APP",
            Some(eureka.as_str()),
        ),
        ("GET", "/api/eureka/path/v2/apps", None),
        ("POST", "/eureka/v2/apps/APP", Some(eureka.as_str())),
        ("GET", "/eureka/v2/apps", None),
        ("POST", "/eureka/apps/APP", Some(eureka.as_str())),
        ("GET", "/eureka/apps", None),
    ]
    .into_iter()
    .map(|(method, path, body)| {
        let headers = [("Authorization", auth.as_str()), json_type, accept];
        let response = server.request(method, path, &headers, body);
        (format!("{method} {path}"), response)
    })
    .collect()
}

#[test]
fn namespaces_with_control_characters_or_over_256_bytes_are_refused_everywhere() {
    let server = Server::start(&["--auth_mode", "trusted"]);
    // The Eureka path token is percent-decoded: this one names "../x" NUL "y".
    for token in ["..%2Fx%00y", "a%09b", "a%0Ab", "a%C2%85b", &"n".repeat(257)] {
        let base = format!("/api/eureka/{token}/v2");
        server
            .post_json(&format!("{base}/apps/APP"), &eureka_instance())
            .assert_error(401, INVALID);
        server
            .request(
                "GET",
                &format!("{base}/apps"),
                &[("Accept", "application/json")],
                None,
            )
            .assert_error(401, INVALID);
    }
    // Header tokens: a tab and a C1 control pass HTTP parsing; 257 bytes is one too many.
    let too_long = "n".repeat(257);
    for token in ["a\tb", "a\u{85}b", too_long.as_str()] {
        for (route, response) in every_route_with(&server, token) {
            assert_eq!(
                response.status,
                401,
                "{token:?} {route}: {}",
                response.text()
            );
            response.assert_error(401, INVALID);
        }
    }
    // 256 bytes is a name like any other, on every route; so are odd but printable names.
    for token in ["n".repeat(256).as_str(), "../x", "tenant é"] {
        for (route, response) in every_route_with(&server, token) {
            assert!(
                matches!(response.status, 200 | 201 | 204),
                "{token:?} {route}: {} {}",
                response.status,
                response.text()
            );
        }
    }
    let path_token = format!("/api/eureka/{}/v2/apps", "n".repeat(256));
    assert_eq!(
        server
            .request("GET", &path_token, &[("Accept", "application/json")], None)
            .status,
        200
    );
}

#[test]
fn jwt_namespace_claims_are_validated_like_trusted_tokens() {
    let server = Server::start_with_env(
        &["--jwt_secret", SECRET],
        &[("A8_AUTH_MODE", "jwt,trusted")],
    );
    for claim in ["../x\u{0}y", "a\nb", "\u{1b}[31mred", &"n".repeat(257)] {
        let token = hs256(json!({ "namespace": claim }));
        for (route, response) in every_route_with(&server, &token) {
            assert_eq!(
                response.status,
                401,
                "{claim:?} {route}: {}",
                response.text()
            );
            response.assert_error(401, INVALID);
        }
        // As the Eureka path token too.
        server
            .post_json(
                &format!("/api/eureka/{token}/v2/apps/APP"),
                &eureka_instance(),
            )
            .assert_error(401, INVALID);
    }
    let longest = "n".repeat(256);
    let token = hs256(json!({ "namespace": longest }));
    let r = server.post_json_as(&token, "/api/v1/instances", &registration("s", "h:1", ""));
    assert_eq!(r.status, 201, "{}", r.text());
    // The claim, not the token, is the namespace: trusted sees it under the plain name.
    assert_eq!(
        service_names(&services_as(&server, Some(&format!("Bearer {longest}")))),
        ["s"]
    );
}

#[test]
fn single_tenant_default_namespace_still_works_on_every_prefix() {
    let server = Server::start(&[]);
    for (route, response) in every_route_with(&server, "default") {
        assert!(
            matches!(response.status, 200 | 201 | 204),
            "{route}: {} {}",
            response.status,
            response.text()
        );
    }
    for path in [
        "/api/eureka/default/v2/apps",
        "/api/eureka//v2/apps",
        "/eureka/v2/apps",
        "/eureka/apps",
    ] {
        let r = server.request("GET", path, &[("Accept", "application/json")], None);
        assert_eq!(r.status, 200, "{path}");
    }
    let names = service_names(&server.get("/api/v1/services"));
    assert!(
        names.contains(&"svc".to_string()) && names.contains(&"APP".to_string()),
        "{names:?}"
    );
}

#[test]
fn jwt_nesting_is_bounded_before_parsing() {
    let server = Server::start_with_env(
        &["--jwt_secret", SECRET],
        &[("A8_AUTH_MODE", "jwt,trusted")],
    );
    let nested = |depth: usize| -> Value { (0..depth).fold(json!(0), |inner, _| json!([inner])) };
    // The payload object plus 15 arrays is at the limit of 16.
    let at_limit = hs256(json!({"namespace": "ns1", "x": nested(15)}));
    assert_eq!(
        services_as(&server, Some(&format!("Bearer {at_limit}"))).status,
        200
    );
    // Signed, but nested deeper: refused, also by the jwt,trusted chain.
    for depth in [16, 40, 126] {
        let token = hs256(json!({"namespace": "ns1", "x": nested(depth)}));
        services_as(&server, Some(&format!("Bearer {token}"))).assert_error(401, INVALID);
    }
    // An unsigned header 80 levels deep: refused without a signature, and the connection that
    // carried it keeps serving.
    let header = json!({"alg": "HS256", "x": nested(80)});
    let token = format!(
        "{}.{}.AAAA",
        b64(header.to_string().as_bytes()),
        b64(br#"{"namespace":"ns1"}"#)
    );
    let mut conn = server.connect();
    for _ in 0..3 {
        send(
            &mut conn,
            "GET",
            "/api/v1/services",
            &[("Authorization", &format!("Bearer {token}"))],
            None,
        );
        read_response(&mut conn, false)
            .expect("an answer on the same connection")
            .assert_error(401, INVALID);
    }
    send(
        &mut conn,
        "GET",
        "/api/v1/services",
        &[("Authorization", "Bearer plain")],
        None,
    );
    assert_eq!(read_response(&mut conn, false).unwrap().status, 200);
}

#[test]
fn jwt_with_a_crit_header_is_refused() {
    let server = Server::start(&["--auth_mode", "jwt", "--jwt_secret", SECRET]);
    let payload = json!({"namespace": "ns1", "exp": now() + 3600});
    for crit in [json!(["exp"]), json!(["b64"]), json!([]), json!("exp")] {
        let token = forge(
            &json!({"alg": "HS256", "crit": crit}),
            &payload,
            SECRET,
            256,
        );
        services_as(&server, Some(&format!("Bearer {token}"))).assert_error(401, INVALID);
    }
    let plain = forge(&json!({"alg": "HS256"}), &payload, SECRET, 256);
    assert_eq!(
        services_as(&server, Some(&format!("Bearer {plain}"))).status,
        200
    );
}

#[test]
fn a_token_without_ttl_never_expires_and_the_tool_warns() {
    let (code, token, stderr) =
        run_to_exit(&["token", "--secret", SECRET, "--namespace", "n"], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("never expires"),
        "{stderr:?}"
    );
    // The token alone is on stdout, and it has no expiry.
    assert_eq!(token.lines().count(), 1, "{token:?}");
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.trim().split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(payload.get("exp").is_none(), "{payload}");
    // With a lifetime there is no warning; --help says what an empty one means.
    let (code, _, stderr) = run_to_exit(
        &[
            "token",
            "--secret",
            SECRET,
            "--namespace",
            "n",
            "--ttl",
            "1h",
        ],
        &[],
    );
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
    let (_, help, _) = run_to_exit(&["token", "--help"], &[]);
    assert!(help.contains("never expires, with a warning"), "{help}");
}
