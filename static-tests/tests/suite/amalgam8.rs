//! The Amalgam8 API, `/api/v1` (spec section 3; cases 7.3 to 7.7 that need no waiting).

use a8registry_static_tests::*;
use serde_json::{json, Value};

const INSTANCES: &str = "/api/v1/instances";

fn register(server: &Server, body: &str) -> Response {
    server.post_json(INSTANCES, body)
}

#[test]
fn registration_response_links_and_overwrite() {
    let server = Server::start(&[]);
    let body = r#"{"service_name":"http","endpoint":{"type":"tcp","value":"192.168.1.1:8081"},"ttl":5,"tags":["a","b"],"metadata":{"k":"v"}}"#;
    let r = server.request(
        "POST",
        INSTANCES,
        &[
            ("Content-Type", "application/json"),
            ("Host", "localhost:8080"),
        ],
        Some(body),
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        r.text(),
        r#"{"id":"91f13d35039e1efe","ttl":10,"links":{"self":"http://localhost:8080/api/v1/instances/91f13d35039e1efe","heartbeat":"http://localhost:8080/api/v1/instances/91f13d35039e1efe/heartbeat"}}"#
    );
    assert_eq!(
        r.header("location"),
        Some("http://localhost:8080/api/v1/instances/91f13d35039e1efe")
    );

    let again = register(&server, &body.replace("\"ttl\":5", "\"ttl\":50000"));
    assert_eq!(again.status, 201);
    assert_eq!(again.json()["ttl"], 600);
    assert_eq!(again.json()["id"], "91f13d35039e1efe");
    let listing = server.get(INSTANCES).json();
    assert_eq!(ids_of(&listing), ["91f13d35039e1efe"]);
    let instance = &listing["instances"][0];
    assert_eq!(instance["ttl"], 600);
    assert_eq!(instance["tags"], json!(["a", "b"]));
    assert_eq!(instance["metadata"], json!({"k": "v"}));
    assert!(instance.get("links").is_none());

    let no_ttl = register(&server, &registration("other", "h:1", ""));
    assert_eq!(no_ttl.json()["ttl"], 30);

    let secure = server.request(
        "POST",
        INSTANCES,
        &[
            ("Content-Type", "application/json"),
            ("Host", "reg.example.com:9999"),
            ("X-Forwarded-Proto", "https"),
        ],
        Some(body),
    );
    let self_link = secure.json()["links"]["self"].as_str().unwrap().to_string();
    assert!(self_link.starts_with("https://reg.example.com:9999/api/v1/instances/"));
    assert_eq!(secure.header("location"), Some(self_link.as_str()));
    assert_eq!(
        secure.json()["links"]["heartbeat"],
        format!("{self_link}/heartbeat")
    );
}

#[test]
fn malformed_registrations_get_their_exact_answer_and_change_nothing() {
    let server = Server::start(&[]);
    assert_eq!(
        register(&server, &registration("keep", "k:1", "")).status,
        201
    );
    let before = server.get("/api/v1/instances?status=ALL").json();
    let long = |n: usize| "x".repeat(n);
    let cases: Vec<(String, u16, &str)> = vec![
        (String::new(), 400, "Failed to register instance"),
        ("{\"service_name\":".into(), 400, "Failed to register instance"),
        ("[]".into(), 400, "Failed to register instance"),
        ("{\"service_name\":\"a\"} x".into(), 400, "Failed to register instance"),
        ("{\"service_name\":\"a\",\u{0}\"x\":1}".into(), 400, "Failed to register instance"),
        (registration("a", "b", "\"ttl\":-1"), 400, "Failed to register instance"),
        (registration("a", "b", "\"ttl\":\"30\""), 400, "Failed to register instance"),
        (registration("a", "b", "\"ttl\":30.0"), 400, "Failed to register instance"),
        (registration("a", "b", "\"ttl\":4294967296"), 400, "Failed to register instance"),
        (registration("a", "b", "\"tags\":\"a\""), 400, "Failed to register instance"),
        (registration("a", "b", "\"tags\":[1]"), 400, "Failed to register instance"),
        (registration("a", "b", "\"status\":5"), 400, "Failed to register instance"),
        ("{\"service_name\":5}".into(), 400, "Failed to register instance"),
        ("{\"service_name\":\"a\",\"endpoint\":\"tcp\"}".into(), 400, "Failed to register instance"),
        ("null".into(), 400, "Service name is required"),
        ("{}".into(), 400, "Service name is required"),
        (registration("", "b", ""), 400, "Service name is required"),
        ("{\"SERVICE_NAME\":\"case\",\"Endpoint\":{\"TYPE\":\"udp\",\"Value\":\"z\"}}".into(), 400, "Service name is required"),
        ("{\"service_name\":\"service\",\"host\":\"whatnot.example.org\",\"port\":80,\"ttl\":25}".into(), 400, "Instance endpoint is required"),
        ("{\"service_name\":\"a\",\"endpoint\":null}".into(), 400, "Instance endpoint is required"),
        (registration("a", "", ""), 400, "Endpoint type or value are missing"),
        ("{\"service_name\":\"a\",\"endpoint\":{\"type\":\"\",\"value\":\"v\"}}".into(), 400, "Endpoint type or value are missing"),
        ("{\"service_name\":\"a\",\"endpoint\":{\"value\":\"v\"}}".into(), 400, "Endpoint type or value are missing"),
        ("{\"service_name\":\"a\",\"endpoint\":{\"type\":\"icmp\",\"value\":\"v\"}}".into(), 400, "Endpoint type is invalid"),
        ("{\"service_name\":\"a\",\"endpoint\":{\"type\":\"HTTP\",\"value\":\"v\"}}".into(), 400, "Endpoint type is invalid"),
        (registration("a", "b", "\"status\":\"blah\""), 400, "Valid statuses are: UP, STARTING, OUT_OF_SERVICE"),
        (registration("a", "b", "\"status\":\"DOWN\""), 400, "Valid statuses are: UP, STARTING, OUT_OF_SERVICE"),
        (registration(&long(65), "b", ""), 400, "Failed to register the instance because service name exceeded 64 bytes"),
        (registration("a", &long(129), ""), 400, "Failed to register the instance because endpoint value exceeded 128 bytes"),
        (registration("a", "b", &format!("\"metadata\":\"{}\"", long(1023))), 400, "Failed to register the instance because metadata exceeded 1024 bytes"),
    ];
    for (body, status, message) in &cases {
        register(&server, body).assert_error(*status, message);
    }
    // 65 levels of nesting: the top-level object plus 64 nested arrays in metadata.
    let deep = registration(
        "deep",
        "d",
        &format!("\"metadata\":{}{}", "[".repeat(64), "]".repeat(64)),
    );
    register(&server, &deep).assert_error(400, "Failed to register instance");
    let after = server.get("/api/v1/instances?status=ALL").json();
    assert_eq!(before, after, "the store is unchanged");

    let within = registration(
        "deep",
        "d",
        &format!("\"metadata\":{}{}", "[".repeat(63), "]".repeat(63)),
    );
    assert_eq!(register(&server, &within).status, 201);
}

#[test]
fn accepted_registration_variants() {
    let server = Server::start(&[]);
    for metadata in ["1", "true", "\"string\"", "{\"key1\":\"value1\"}", "null"] {
        let r = register(
            &server,
            &registration("meta", metadata, &format!("\"metadata\":{metadata}")),
        );
        assert_eq!(r.status, 201, "{metadata}");
    }
    let listing = server.get("/api/v1/instances?service_name=meta").json();
    let null_one = listing["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["endpoint"]["value"] == "null")
        .unwrap();
    assert!(
        null_one.get("metadata").is_some_and(Value::is_null),
        "{null_one}"
    );

    let r = register(
        &server,
        r#"{"service_name":"spaces","endpoint":{"type":"user","value":"   "},"metadata":null}"#,
    );
    assert_eq!(r.status, 201);
    let listing = server.get("/api/v1/instances?service_name=spaces").json();
    assert_eq!(
        listing["instances"][0]["endpoint"],
        json!({"type": "user", "value": "   "})
    );

    for status in ["STARTING", "OUT_OF_SERVICE", "starting", "up", ""] {
        let r = register(
            &server,
            &registration(
                "st",
                &format!("v{status}"),
                &format!("\"status\":\"{status}\""),
            ),
        );
        assert_eq!(r.status, 201, "{status:?}");
    }
    let listing = server.get("/api/v1/instances?service_name=st").json();
    let status_of = |value: &str| {
        listing["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["endpoint"]["value"] == value)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status_of("vstarting"), "STARTING");
    assert_eq!(status_of("vup"), "UP");
    assert_eq!(status_of("v"), "UP", "an empty status means UP");

    assert_eq!(status_of("vSTARTING"), "STARTING");
    assert_eq!(status_of("vOUT_OF_SERVICE"), "OUT_OF_SERVICE");

    // Tags are stored as given (empty strings and duplicates too); registering twice keeps one.
    for (tags, stored) in [
        ("[\"a\",\"b\"]", json!(["a", "b"])),
        ("[]", Value::Null),
        ("null", Value::Null),
        ("[\"\",\"a\",\"a\"]", json!(["", "a", "a"])),
    ] {
        for _ in 0..2 {
            let body = registration("tags", "t", &format!("\"tags\":{tags}"));
            assert_eq!(register(&server, &body).status, 201, "{tags}");
        }
        let listing = server.get("/api/v1/instances?service_name=tags").json();
        assert_eq!(instance_count(&listing), 1, "{tags}");
        // An empty tag list is left out of the listing.
        let shown = listing["instances"][0]
            .get("tags")
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(shown, stored, "{tags}");
    }
    assert_eq!(
        register(&server, &registration(&"s".repeat(64), "e", "")).status,
        201
    );
    assert_eq!(
        register(&server, &registration("e", &"v".repeat(128), "")).status,
        201
    );
    let metadata_1024 = format!("\"{}\"", "m".repeat(1022));
    assert_eq!(metadata_1024.len(), 1024);
    assert_eq!(
        register(
            &server,
            &registration("m", "m", &format!("\"metadata\":{metadata_1024}"))
        )
        .status,
        201
    );

    // Ignored members: the Go client sends its own id and a zero heartbeat.
    let r = register(
        &server,
        r#"{"id":"custom","service_name":"idt","endpoint":{"type":"tcp","value":"q"},"last_heartbeat":"0001-01-01T00:00:00Z","unknown":{"x":[1]}}"#,
    );
    assert_eq!(r.json()["id"], "271e8852916677be");
}

#[test]
fn same_endpoint_same_id_different_endpoint_different_id() {
    let server = Server::start(&[]);
    let first = register(
        &server,
        &registration("svc", "h:1", "\"status\":\"UP\",\"metadata\":{\"v\":1}"),
    );
    let second = register(
        &server,
        &registration(
            "svc",
            "h:1",
            "\"status\":\"STARTING\",\"metadata\":{\"v\":2}",
        ),
    );
    assert_eq!(first.json()["id"], second.json()["id"]);
    let listing = server.get("/api/v1/instances?service_name=svc").json();
    assert_eq!(listing["instances"].as_array().unwrap().len(), 1);
    assert_eq!(listing["instances"][0]["status"], "STARTING");
    assert_eq!(listing["instances"][0]["metadata"], json!({"v": 2}));

    let other_service = register(&server, &registration("svc2", "h:1", ""));
    let other_endpoint = register(&server, &registration("svc", "h:2", ""));
    let ids = [
        first.json()["id"].clone(),
        other_service.json()["id"].clone(),
        other_endpoint.json()["id"].clone(),
    ];
    assert_ne!(ids[0], ids[1]);
    assert_ne!(ids[0], ids[2]);
    assert_ne!(ids[1], ids[2]);
}

#[test]
fn heartbeat_and_deregister() {
    let server = Server::start(&[]);
    let id1 = register(&server, &registration("http", "h:1", "")).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let id2 = register(&server, &registration("http", "h:2", "")).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let heartbeat =
        |id: &str| server.request("PUT", &format!("{INSTANCES}/{id}/heartbeat"), &[], None);
    let delete = |id: &str| server.request("DELETE", &format!("{INSTANCES}/{id}"), &[], None);
    for id in [&id1, &id2] {
        let r = heartbeat(id);
        assert_eq!(r.status, 200);
        assert!(r.body.is_empty());
        assert_eq!(r.header("content-length"), Some("0"));
        assert!(r.header("content-encoding").is_none());
    }
    heartbeat("http-3").assert_error(410, "Failed to renew instance registration");
    let r = delete(&id1);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(delete(&id2).status, 200);
    delete(&id2).assert_error(410, "Failed to deregister instance");
    delete("http-3").assert_error(410, "Failed to deregister instance");
    heartbeat(&id1).assert_error(410, "Failed to renew instance registration");
    server
        .get("/api/v1/services/http")
        .assert_error(404, "Failed to enumerate service names");
    server
        .request("PUT", "/api/v1/instances//heartbeat", &[], None)
        .assert_error(400, "Missing instance identifier");
    // A body on a heartbeat is ignored.
    let id = register(&server, &registration("hb", "h:1", "")).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = server.request(
        "PUT",
        &format!("{INSTANCES}/{id}/heartbeat"),
        &[("Content-Type", "application/json")],
        Some("{\"junk\":"),
    );
    assert_eq!(r.status, 200);
}

/// The listing fixture of spec 7.5 without the Eureka-only user-defined status: `i1` UP
/// {DB,NoSQL}, `i2` UP {DB}, `i3` STARTING {DB}, `i4` OUT_OF_SERVICE {DB,NoSQL}, all of service
/// `http-1`; returns the ids by name.
fn listing_fixture(server: &Server) -> std::collections::HashMap<&'static str, String> {
    let mut ids = std::collections::HashMap::new();
    for (name, status, tags) in [
        ("i1", "UP", r#"["DB","NoSQL"]"#),
        ("i2", "UP", r#"["DB"]"#),
        ("i3", "STARTING", r#"["DB"]"#),
        ("i4", "OUT_OF_SERVICE", r#"["DB","NoSQL"]"#),
    ] {
        let r = register(
            server,
            &registration(
                "http-1",
                name,
                &format!("\"status\":\"{status}\",\"tags\":{tags}"),
            ),
        );
        ids.insert(name, r.json()["id"].as_str().unwrap().to_string());
    }
    ids
}

#[test]
fn filtering_by_tags_status_and_id() {
    let server = Server::start(&[]);
    let ids = listing_fixture(&server);
    let count = |query: &str| {
        let r = server.get(&format!("{INSTANCES}?{query}&service_name=http-1"));
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        r.json()["instances"].as_array().unwrap().len()
    };
    assert_eq!(
        count("tags=DB,NoSQL"),
        2,
        "all statuses once another filter is present"
    );
    assert_eq!(count("tags=DB"), 4);
    assert_eq!(count("tags=DB,MySQL"), 0);
    assert_eq!(count("status=UP"), 2);
    assert_eq!(count("status=DOWN"), 0);
    assert_eq!(count("tags=DB,NoSQL&status=UP"), 1);
    assert_eq!(count("tags=DB,NoSQL&status=DOWN"), 0);
    assert_eq!(count("status=up"), 2);
    assert_eq!(count("status=ALL"), 4);
    assert_eq!(count("status=all"), 4);
    assert_eq!(count("status=STARTING"), 1);
    assert_eq!(count("status=OUT_OF_SERVICE"), 1);
    assert_eq!(count("status=ALL&tags=DB"), 4);
    assert_eq!(count("status=STARTING&tags=DB"), 1);
    assert_eq!(count("tags=DB&status=STARTING"), 1);
    assert_eq!(
        count("status=STARTING&status=UP"),
        1,
        "the first value is used"
    );
    assert_eq!(count("status="), 0);
    assert_eq!(count("tags="), 0);

    // No selection at all: STARTING and OUT_OF_SERVICE are hidden.
    let plain = server.get(INSTANCES).json();
    let mut expected = vec![ids["i1"].clone(), ids["i2"].clone()];
    expected.sort();
    assert_eq!(ids_of(&plain), expected);
    let only_fields = server.get(&format!("{INSTANCES}?fields=status")).json();
    assert_eq!(ids_of(&only_fields), expected);

    let by_id = server.get(&format!("{INSTANCES}?id={}", ids["i4"])).json();
    assert_eq!(ids_of(&by_id), [ids["i4"].clone()]);
    let instance = &by_id["instances"][0];
    for key in [
        "id",
        "service_name",
        "endpoint",
        "ttl",
        "status",
        "last_heartbeat",
        "tags",
    ] {
        assert!(instance.get(key).is_some(), "{key} in {instance}");
    }
    assert_eq!(
        server
            .get(&format!("{INSTANCES}?service_name=nobody"))
            .json(),
        json!({"instances": []})
    );

    for query in [
        "ttl=5",
        "BLABLA=5",
        "endpoint=x",
        "foo=bar",
        "metadata=1",
        "last_heartbeat=x",
        "links=x",
    ] {
        server
            .get(&format!("{INSTANCES}?{query}&service_name=http-1"))
            .assert_error(400, "Malformed or invalid instance selection criteria");
    }
}

#[test]
fn projections() {
    let server = Server::start(&[]);
    register(
        &server,
        r#"{"service_name":"proj","endpoint":{"type":"tcp","value":"192.168.0.1:80"},"metadata":{"key1":"value1"},"tags":["t"]}"#,
    );
    let only = |fields: &str| {
        let r = server.get(&format!("{INSTANCES}?fields={fields}&service_name=proj"));
        assert_eq!(r.status, 200, "{fields}");
        let instances = r.json()["instances"].clone();
        assert_eq!(instances.as_array().unwrap().len(), 1);
        let mut keys: Vec<String> = instances[0].as_object().unwrap().keys().cloned().collect();
        keys.sort();
        (keys, instances[0].clone())
    };
    let (keys, instance) = only("status,ttl,status");
    assert_eq!(keys, ["endpoint", "id", "status", "ttl"]);
    assert_eq!(instance["ttl"], 30);
    assert_eq!(instance["status"], "UP");
    assert_eq!(only("status,ttl,status,endpoint").0, keys);
    assert_eq!(only("").0, ["endpoint", "id"]);
    assert_eq!(only("links").0, ["endpoint", "id"]);
    let (keys, instance) = only("endpoint,ttl,metadata,status");
    assert_eq!(keys, ["endpoint", "id", "metadata", "status", "ttl"]);
    assert_eq!(instance["metadata"], json!({"key1": "value1"}));
    assert_eq!(
        instance["endpoint"],
        json!({"type": "tcp", "value": "192.168.0.1:80"})
    );
    assert_eq!(
        only("tags,last_heartbeat,service_name").0,
        ["endpoint", "id", "last_heartbeat", "service_name", "tags"]
    );
    for fields in ["status,foo", "status,%20ttl", "status,+ttl", "STATUS"] {
        server
            .get(&format!("{INSTANCES}?fields={fields}&service_name=proj"))
            .assert_error(400, "Undefined or malformed instance fields in filter");
    }
}

#[test]
fn services_listing() {
    let server = Server::start(&[]);
    assert_eq!(
        server.get("/api/v1/services").json(),
        json!({"services": []})
    );
    assert_eq!(server.get(INSTANCES).json(), json!({"instances": []}));
    for service in ["http-1", "http-2", "http-3"] {
        register(&server, &registration(service, "h:1", ""));
    }
    register(
        &server,
        &registration("a", "h:1", "\"status\":\"STARTING\""),
    );
    let mut services: Vec<String> = server.get("/api/v1/services?foo=1").json()["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    services.sort();
    assert_eq!(services, ["a", "http-1", "http-2", "http-3"]);

    register(
        &server,
        &registration("http", "10.0.0.1:80", "\"metadata\":{\"m\":1}"),
    );
    register(
        &server,
        &registration("http", "10.0.0.2:80", "\"metadata\":{\"m\":1}"),
    );
    let one = server.get("/api/v1/services/http");
    assert_eq!(one.status, 200);
    let body = one.json();
    assert_eq!(body["service_name"], "http");
    let instances = body["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2);
    for instance in instances {
        assert_eq!(instance["status"], "UP");
        assert_eq!(instance["service_name"], "http");
        assert!(instance["last_heartbeat"].as_str().unwrap().ends_with('Z'));
        assert_eq!(instance["metadata"], json!({"m": 1}));
    }
    let starting_only = server.get("/api/v1/services/a").json();
    assert_eq!(starting_only["instances"][0]["status"], "STARTING");
    server
        .get("/api/v1/services/https")
        .assert_error(404, "Failed to enumerate service names");
    server
        .get("/api/v1/services/x?fields=bogus")
        .assert_error(404, "Failed to enumerate service names");
    assert_eq!(server.get("/api/v1/services/http?fields=bogus").status, 200);
}

#[test]
fn cached_listings_follow_every_change() {
    let server = Server::start(&[]);
    let path = "/api/v1/services/cached";
    let filtered = "/api/v1/instances?service_name=cached";
    let id = register(&server, &registration("cached", "h:1", "")).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..3 {
        assert_eq!(instance_count(&server.get(path).json()), 1);
        assert_eq!(instance_count(&server.get(filtered).json()), 1);
    }
    register(&server, &registration("cached", "h:2", ""));
    assert_eq!(instance_count(&server.get(path).json()), 2);
    assert_eq!(instance_count(&server.get(filtered).json()), 2);
    register(
        &server,
        &registration(
            "cached",
            "h:1",
            "\"status\":\"STARTING\",\"metadata\":{\"new\":true}",
        ),
    );
    let listed = server.get(path).json();
    let changed = listed["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id.as_str())
        .unwrap()
        .clone();
    assert_eq!(changed["status"], "STARTING");
    assert_eq!(changed["metadata"], json!({"new": true}));
    server.request("DELETE", &format!("{INSTANCES}/{id}"), &[], None);
    assert_eq!(instance_count(&server.get(path).json()), 1);
    assert_eq!(instance_count(&server.get(filtered).json()), 1);
}

#[test]
fn capacity_refuses_new_ids_only() {
    let server = Server::start(&["--namespace_capacity", "2"]);
    let a = register(&server, &registration("cap", "a", ""));
    assert_eq!(a.status, 201);
    assert_eq!(register(&server, &registration("cap", "b", "")).status, 201);
    register(&server, &registration("cap", "c", ""))
        .assert_error(403, "Failed to register instance");
    assert_eq!(
        register(
            &server,
            &registration("cap", "b", "\"status\":\"STARTING\"")
        )
        .status,
        201
    );
    let id = a.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        server
            .request("DELETE", &format!("{INSTANCES}/{id}"), &[], None)
            .status,
        200
    );
    assert_eq!(register(&server, &registration("cap", "c", "")).status, 201);

    let zero = Server::start(&["--namespace_capacity", "0"]);
    register(&zero, &registration("cap", "a", "")).assert_error(403, "Failed to register instance");
}

#[test]
fn error_texts_ignore_accept_language() {
    let server = Server::start(&[]);
    let r = server.request(
        "POST",
        INSTANCES,
        &[
            ("Content-Type", "application/json"),
            ("Accept-Language", "fr-FR"),
        ],
        Some("{}"),
    );
    r.assert_error(400, "Service name is required");
}

const TAGS_EXCEEDED: &str = "Failed to register the instance because tags exceeded 8192 bytes";

/// D38: a registration carries at most 256 tags whose lengths add up to at most 8,192 bytes.
/// The other limits are checked first, in the store's order.
#[test]
fn tags_are_bounded() {
    let server = Server::start(&[]);
    let tags = |list: Vec<String>| format!("\"tags\":{}", Value::from(list));
    let many = |n: usize, text: &str| vec![text.to_string(); n];
    let accepted = [
        ("count", many(256, "t")),
        ("empty", many(256, "")),
        ("bytes", many(8, &"b".repeat(1024))),
    ];
    for (value, list) in accepted {
        let r = register(&server, &registration("bounded", value, &tags(list)));
        assert_eq!(r.status, 201, "{value}: {}", r.text());
    }
    let mut just_over = many(7, &"b".repeat(1024));
    just_over.push("b".repeat(1025));
    let refused = [
        ("count", many(257, "t")),
        ("empty", many(257, "")),
        ("bytes", just_over),
        ("huge", many(200_000, "a")),
    ];
    for (value, list) in refused {
        register(&server, &registration("refused", value, &tags(list)))
            .assert_error(400, TAGS_EXCEEDED);
    }
    // Re-registering a stored instance with too many tags changes nothing either.
    register(
        &server,
        &registration("bounded", "count", &tags(many(300, "x"))),
    )
    .assert_error(400, TAGS_EXCEEDED);
    let listing = server
        .get(&format!("{INSTANCES}?service_name=bounded"))
        .json();
    assert_eq!(instance_count(&listing), 3);
    for instance in listing["instances"].as_array().unwrap() {
        let stored = instance["tags"].as_array().unwrap();
        assert!(stored.iter().all(|t| t != "x"), "{instance}");
    }
    assert_eq!(
        server
            .get(&format!("{INSTANCES}?service_name=refused"))
            .json(),
        json!({"instances": []})
    );

    let over = tags(many(257, "t"));
    register(&server, &registration(&"s".repeat(65), "v", &over)).assert_error(
        400,
        "Failed to register the instance because service name exceeded 64 bytes",
    );
    register(&server, &registration("s", &"v".repeat(129), &over)).assert_error(
        400,
        "Failed to register the instance because endpoint value exceeded 128 bytes",
    );
    let big_metadata = format!("\"metadata\":\"{}\",{over}", "m".repeat(1100));
    register(&server, &registration("s", "v", &big_metadata)).assert_error(
        400,
        "Failed to register the instance because metadata exceeded 1024 bytes",
    );
    // A type mismatch anywhere still wins over every limit.
    register(
        &server,
        &registration("s", "v", &format!("{over},\"ttl\":\"x\"")),
    )
    .assert_error(400, "Failed to register instance");
    register(&server, &registration("s", "v", "\"tags\":[\"a\",1]"))
        .assert_error(400, "Failed to register instance");
}

/// Hole: `?tags=` with thousands of tags against instances carrying many tags compared every
/// query tag with every instance tag, so four such requests froze the server for tens of
/// seconds. The query is now a set built once, and `GET /` is answered while they run. The
/// client's 10 s read timeout is the functional bound.
#[test]
fn tag_filter_with_thousands_of_query_tags_keeps_the_server_responsive() {
    let server = Server::start(&[]);
    // 3,000 instances of 256 one-byte tags each: 255 times `y`, then `z`.
    let mut tags = vec!["y"; 255];
    tags.push("z");
    let extra = format!("\"tags\":{}", Value::from(tags));
    let mut conn = server.connect();
    const INSTANCE_COUNT: usize = 3_000;
    const BATCH: usize = 100;
    for batch in 0..INSTANCE_COUNT / BATCH {
        for i in 0..BATCH {
            let body = registration("tagged", &format!("h{}", batch * BATCH + i), &extra);
            send(
                &mut conn,
                "POST",
                INSTANCES,
                &[("Content-Type", "application/json")],
                Some(&body),
            );
        }
        for _ in 0..BATCH {
            let r = read_response(&mut conn, false).unwrap();
            assert_eq!(r.status, 201, "{}", r.text());
        }
    }
    // 7,400 copies of `z`, then a tag nobody carries: nothing matches.
    let query = format!("{INSTANCES}?tags={}nope", "z,".repeat(7_400));
    let mut slow: Vec<_> = (0..4)
        .map(|_| {
            let mut conn = server.connect();
            send(&mut conn, "GET", &query, &[], None);
            conn
        })
        .collect();
    let root = server.get("/");
    assert_eq!(root.status, 200);
    for conn in &mut slow {
        let r = read_response(conn, false).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!({"instances": []}));
    }
    let query = format!("{INSTANCES}?tags={}y", "z,".repeat(7_400));
    let all = server.get(&query).json();
    assert_eq!(instance_count(&all), INSTANCE_COUNT);
}

#[test]
fn registrations_on_one_connection_each_answer_with_their_own_host() {
    // The answers of one connection are written into the room of the one before: a long answer
    // followed by short ones each come out whole, their `Location` too.
    let server = Server::start(&[]);
    let body = registration("room", "10.0.0.9:80", r#""ttl":60"#);
    let post = |host: &str| {
        format!(
            "POST /api/v1/instances HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let long = format!("{}.example.com:8080", "h".repeat(600));
    let hosts = [long.as_str(), "s", "[::1]:8080", "s:1"];
    let mut conn = server.connect();
    let pipelined: String = hosts.iter().map(|host| post(host)).collect();
    std::io::Write::write_all(&mut conn, pipelined.as_bytes()).unwrap();
    let mut id = None;
    for host in hosts {
        let answer = read_response(&mut conn, false).unwrap();
        assert_eq!(answer.status, 201, "{host}");
        let answer_id = answer.json()["id"].as_str().unwrap().to_string();
        let id = id.get_or_insert(answer_id.clone());
        assert_eq!(answer_id, *id, "the same instance again");
        let link = format!("http://{host}/api/v1/instances/{id}");
        let literal = |text: &str| serde_json::to_string(text).unwrap();
        let expected = format!(
            r#"{{"id":"{id}","ttl":60,"links":{{"self":{},"heartbeat":{}}}}}"#,
            literal(&link),
            literal(&format!("{link}/heartbeat"))
        );
        assert_eq!(answer.text(), expected, "{host}");
        assert_eq!(answer.header("location"), Some(link.as_str()), "{host}");
    }
}
