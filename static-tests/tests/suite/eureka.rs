//! The Eureka-compatible API (spec section 4; cases 7.8, 7.13 to 7.15), and a real third-party
//! Eureka client (py_eureka_client, installed by run.sh into static-tests/.venv).

use a8registry_static_tests::*;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const E: &str = "/api/eureka/default/v2";
const JSON_ACCEPT: (&str, &str) = ("Accept", "application/json");

/// The Java-style body `J` of spec 7.8.
fn java_body() -> Value {
    json!({"instance":{"instanceId":"host1:myapp:8080","hostName":"host1","app":"MYAPP","ipAddr":"10.0.0.7","status":"UP","port":{"$":8080,"@enabled":"true"},"securePort":{"$":443,"@enabled":"false"},"dataCenterInfo":{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"},"leaseInfo":{"renewalIntervalInSecs":30,"durationInSecs":90},"metadata":{"amalgam8.tags":"v1; canary"},"vipAddress":"myapp"}})
}

/// A minimal valid instance for `app` with this id and status.
fn instance(app: &str, id: &str, status: &str) -> Value {
    json!({"instance":{"instanceId":id,"hostName":format!("{id}-host"),"app":app,"ipAddr":"10.0.0.1","status":status,"port":{"$":80,"@enabled":"true"},"vipAddress":app.to_lowercase(),"dataCenterInfo":{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"},"metadata":{}}})
}

fn register(server: &Server, base: &str, app: &str, body: &Value) -> Response {
    server.post_json(&format!("{base}/apps/{app}"), &body.to_string())
}

fn get_json(server: &Server, path: &str) -> Response {
    server.request("GET", path, &[JSON_ACCEPT], None)
}

fn a8_instance(server: &Server, id: &str) -> Value {
    let listing = server.get(&format!("/api/v1/instances?id={id}")).json();
    listing["instances"][0].clone()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The instance with this `instanceId` in an application list.
fn instance_in(applications: &Value, id: &str) -> Value {
    applications["applications"]["application"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|app| app["instance"].as_array().unwrap())
        .find(|i| i["instanceId"] == id)
        .unwrap_or_else(|| panic!("no {id} in {applications}"))
        .clone()
}

/// The `actionType` of every instance of one app in an application list.
fn actions_of(applications: &Value, app: &str) -> Vec<String> {
    applications["applications"]["application"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["name"] == app)
        .flat_map(|a| a["instance"].as_array().unwrap())
        .map(|i| i["actionType"].as_str().unwrap().to_string())
        .collect()
}

/// Ids and statuses of every instance in an application list.
fn listed(applications: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for app in applications["applications"]["application"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for i in app["instance"].as_array().unwrap() {
            let id = i["instanceId"]
                .as_str()
                .or(i["hostName"].as_str())
                .unwrap()
                .to_string();
            out.push((id, i["status"].as_str().unwrap_or("").to_string()));
        }
    }
    out.sort();
    out
}

#[test]
fn java_registration_is_visible_through_both_apis() {
    let server = Server::start(&[]);
    for base in [E, "/api/eureka//v2"] {
        let r = register(&server, base, "MYAPP", &java_body());
        assert_eq!(r.status, 204);
        assert!(
            r.header("content-length").is_none(),
            "no Content-Length on 204"
        );
    }
    let a8 = a8_instance(&server, "MYAPP:host1:myapp:8080");
    assert_eq!(a8["service_name"], "MYAPP");
    assert_eq!(
        a8["endpoint"],
        json!({"type": "tcp", "value": "host1:8080"})
    );
    assert_eq!(a8["ttl"], 90);
    assert_eq!(a8["status"], "UP");
    assert_eq!(a8["tags"], json!(["v1", "canary"]));
    assert_eq!(a8["metadata"], json!({"amalgam8.tags": "v1; canary"}));

    for base in [E, "/eureka/v2", "/eureka"] {
        let one = get_json(&server, &format!("{base}/apps/MYAPP/host1:myapp:8080"));
        assert_eq!(one.status, 200, "{base}");
        let i = &one.json()["instance"];
        assert_eq!(i["instanceId"], "host1:myapp:8080");
        assert_eq!(i["port"], json!({"@enabled": "true", "$": 8080}));
        assert_eq!(i["securePort"], json!({"@enabled": "false", "$": 443}));
        assert_eq!(i["overriddenstatus"], "UNKNOWN");
        assert_eq!(i["actionType"], "ADDED");
        assert_eq!(i["leaseInfo"]["durationInSecs"], 90);
        assert_eq!(i["leaseInfo"]["renewalIntervalInSecs"], 30);
        assert_eq!(i["leaseInfo"]["evictionTimestamp"], 0);
        assert!(i["leaseInfo"]["serviceUpTimestamp"].as_i64().unwrap() > 1_000_000_000_000);
        let keys: Vec<&str> = i.as_object().unwrap().keys().map(String::as_str).collect();
        assert!(keys.contains(&"lastDirtyTimestamp"));
        let by_id = get_json(&server, &format!("{base}/instances/host1%3Amyapp%3A8080"));
        assert_eq!(by_id.json(), one.json());
    }
    get_json(&server, &format!("{E}/apps/MYAPP/nope")).assert_error(404, "Instance not found");
    get_json(&server, &format!("{E}/instances/nope")).assert_error(404, "Instance not found");
    // The JSON key order of spec 4.6.
    let text = get_json(&server, &format!("{E}/apps/MYAPP/host1:myapp:8080")).text();
    let order = [
        "instanceId",
        "hostName",
        "app",
        "appGroupName",
        "ipAddr",
        "vipAddress",
        "status",
        "overriddenstatus",
        "countryId",
        "port",
        "securePort",
        "dataCenterInfo",
        "leaseInfo",
        "metadata",
        "isCoordinatingDiscoveryServer",
        "lastUpdatedTimestamp",
        "lastDirtyTimestamp",
        "actionType",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|k| text.find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn xml_documents_follow_netflix() {
    let server = Server::start(&[]);
    register(&server, "/eureka/v2", "MYAPP", &java_body());
    let mut web = instance("MYAPP", "web-2", "DOWN");
    web["instance"]["metadata"] = json!({"management_port": "8081", "a$b": "x", "bad key": "y"});
    register(&server, "/eureka/v2", "MYAPP", &web);
    register(
        &server,
        "/eureka/v2",
        "EMPTY",
        &instance("EMPTY", "e-1", "UP"),
    );

    let doc = server.get("/eureka/v2/apps/MYAPP/host1:myapp:8080");
    assert_eq!(doc.status, 200);
    assert_eq!(
        doc.header("content-type"),
        Some("application/xml; charset=utf-8")
    );
    let text = doc.text();
    let order = ["<instance>", "<instanceId>host1:myapp:8080</instanceId>", "<hostName>host1</hostName>", "<app>MYAPP</app>", "<ipAddr>10.0.0.7</ipAddr>", "<status>UP</status>", "<overriddenstatus>UNKNOWN</overriddenstatus>", "<port enabled=\"true\">8080</port>", "<securePort enabled=\"false\">443</securePort>", "<countryId>1</countryId>", "<dataCenterInfo class=\"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo\"><name>MyOwn</name></dataCenterInfo>", "<leaseInfo><renewalIntervalInSecs>30</renewalIntervalInSecs><durationInSecs>90</durationInSecs><registrationTimestamp>", "<evictionTimestamp>0</evictionTimestamp>", "<metadata><amalgam8.tags>v1; canary</amalgam8.tags></metadata>", "<appGroupName>UNKNOWN</appGroupName>", "<vipAddress>myapp</vipAddress>", "<isCoordinatingDiscoveryServer>false</isCoordinatingDiscoveryServer>", "<lastUpdatedTimestamp>", "<lastDirtyTimestamp>", "<actionType>ADDED</actionType>", "</instance>"];
    let mut at = 0;
    for piece in order {
        let found = text[at..]
            .find(piece)
            .unwrap_or_else(|| panic!("{piece} after {at} in {text}"));
        at += found + piece.len();
    }
    let web = server.get("/eureka/v2/apps/MYAPP/web-2").text();
    assert!(
        web.contains("<management__port>8081</management__port>"),
        "{web}"
    );
    assert!(web.contains("<a_-b>x</a_-b>"), "{web}");
    assert!(!web.contains("bad key"), "{web}");
    let empty = server.get("/eureka/v2/apps/EMPTY/e-1").text();
    assert!(
        empty.contains(r#"<metadata class="java.util.Collections$EmptyMap"/>"#),
        "{empty}"
    );

    let list = server.get("/eureka/apps");
    assert_eq!(
        list.header("content-type"),
        Some("application/xml; charset=utf-8")
    );
    let list = list.text();
    assert!(
        list.starts_with("<applications><versions__delta>"),
        "{list}"
    );
    assert!(
        list.contains("<apps__hashcode>DOWN_1_UP_2_</apps__hashcode><application>"),
        "{list}"
    );
    let app = server.get("/eureka/apps/EMPTY").text();
    assert!(
        app.starts_with("<application><name>EMPTY</name><instance>"),
        "{app}"
    );
    // Errors stay JSON even when XML is the format.
    let missing = server.get("/eureka/apps/NOPE");
    missing.assert_error(404, "Failed to look-up application");
}

#[test]
fn format_negotiation_per_prefix() {
    let server = Server::start(&[]);
    let is_json = |r: &Response| {
        r.header("content-type") == Some("application/json; charset=utf-8")
            && r.text()
                .starts_with("{\"applications\":{\"versions__delta\":\"")
    };
    let is_xml = |r: &Response| {
        r.header("content-type") == Some("application/xml; charset=utf-8")
            && r.text().starts_with("<applications>")
    };
    assert!(is_json(&server.get(&format!("{E}/apps"))));
    assert!(is_json(&server.request(
        "GET",
        &format!("{E}/apps/"),
        &[("Accept", "*/*")],
        None
    )));
    assert!(is_xml(&server.request(
        "GET",
        &format!("{E}/apps"),
        &[("Accept", "application/xml")],
        None
    )));
    assert!(is_json(&server.request(
        "GET",
        &format!("{E}/apps"),
        &[("Accept", "application/json, application/xml")],
        None
    )));
    assert!(is_xml(&server.get("/eureka/v2/apps")));
    assert!(is_xml(&server.get("/eureka/apps/")));
    assert!(is_json(&server.request(
        "GET",
        "/eureka/apps",
        &[JSON_ACCEPT],
        None
    )));
    let empty = get_json(&server, "/eureka/apps").json();
    assert_eq!(empty["applications"]["apps__hashcode"], "");
    assert!(empty["applications"].get("application").is_none());
    assert!(empty["applications"]["versions__delta"].is_string());
    server
        .get("/api/eureka/v2/apps")
        .assert_error(404, "Resource not found");
    server
        .get("/v2/apps")
        .assert_error(404, "Resource not found");
    assert_eq!(
        server.get("/api/eureka/v2/v2/apps").status,
        401,
        "token v2 is not default"
    );
    assert_eq!(
        server.request("POST", "/eureka/apps/", &[], None).status,
        405
    );
    assert_eq!(
        server.request("HEAD", "/eureka/apps", &[], None).status,
        200
    );
}

#[test]
fn tokens_on_eureka_paths() {
    let server = Server::start(&[]);
    assert_eq!(register(&server, E, "MYAPP", &java_body()).status, 204);
    register(&server, "/api/eureka/foo/v2", "MYAPP", &java_body())
        .assert_error(401, "Authorization failure, invalid token");
    let overridden = server.request(
        "GET",
        "/api/eureka/whatever/v2/apps/MYAPP",
        &[("Authorization", "Bearer default"), JSON_ACCEPT],
        None,
    );
    assert_eq!(overridden.status, 200);
    server
        .request(
            "GET",
            &format!("{E}/apps/MYAPP"),
            &[("Authorization", "Bearer nope")],
            None,
        )
        .assert_error(401, "Authorization failure, invalid token");
    server
        .request(
            "GET",
            "/eureka/v2/apps",
            &[("Authorization", "Bearer foo")],
            None,
        )
        .assert_error(401, "Authorization failure, invalid token");

    let trusted = Server::start(&["--auth_mode", "trusted"]);
    trusted
        .get("/eureka/apps")
        .assert_error(401, "Missing request Authorization header");
    trusted
        .get("/api/eureka//v2/apps")
        .assert_error(401, "Missing request Authorization header");
    assert_eq!(
        register(&trusted, "/api/eureka/tenantA/v2", "MYAPP", &java_body()).status,
        204
    );
    let mine = trusted.request(
        "GET",
        "/eureka/apps",
        &[("Authorization", "Bearer tenantA"), JSON_ACCEPT],
        None,
    );
    assert_eq!(
        listed(&mine.json()),
        [("host1:myapp:8080".to_string(), "UP".to_string())]
    );
    let theirs = trusted.request(
        "GET",
        "/eureka/apps",
        &[("Authorization", "Bearer tenantB"), JSON_ACCEPT],
        None,
    );
    assert!(listed(&theirs.json()).is_empty());

    let https = Server::start(&["--require_https"]);
    assert_eq!(https.get(&format!("{E}/apps")).status, 301);
    assert_eq!(https.get("/eureka/apps").status, 301);
}

#[test]
fn registration_validation() {
    let server = Server::start(&["--namespace_capacity", "3"]);
    const INVALID: &str = "Failed to register instance";
    const MISSING: &str =
        "Missing required field(s): hostname, application, vipAddress or IPAddress";
    let test_style = json!({"instance":{"hostName":"localhost","app":"http","ipAddr":"192.168.1.1","vipAddress":"http-vip","port":{"@enabled":"true","$":"8080"},"leaseInfo":{"durationInSecs":30},"metadata":{"key1":"value1"}}});
    assert_eq!(
        register(&server, "/api/eureka//v2", "http", &test_style).status,
        204
    );
    for (field, value) in [("hostName", ""), ("ipAddr", ""), ("vipAddress", "")] {
        let mut body = test_style.clone();
        body["instance"][field] = json!(value);
        register(&server, E, "http", &body).assert_error(400, MISSING);
    }
    server
        .post_json(&format!("{E}/apps/http"), "{\"instance\":")
        .assert_error(400, INVALID);
    server
        .post_json(&format!("{E}/apps/http"), "")
        .assert_error(400, INVALID);
    register(&server, E, "OTHER", &java_body()).assert_error(400, "Application name mismatch");
    register(&server, E, "myapp", &java_body()).assert_error(400, "Application name mismatch");
    let mut no_vip = java_body();
    no_vip["instance"]
        .as_object_mut()
        .unwrap()
        .remove("vipAddress");
    register(&server, E, "MYAPP", &no_vip).assert_error(400, MISSING);
    register(&server, E, "MYAPP", &json!({"foo": 1})).assert_error(400, MISSING);
    let mut bad = java_body();
    bad["instance"]["countryId"] = json!("1");
    register(&server, E, "MYAPP", &bad).assert_error(400, INVALID);
    let mut bad = java_body();
    bad["instance"]["port"]["@enabled"] = json!(5);
    register(&server, E, "MYAPP", &bad).assert_error(400, INVALID);
    let mut bad = java_body();
    bad["instance"]["metadata"] = json!([1]);
    register(&server, E, "MYAPP", &bad).assert_error(400, INVALID);
    let mut azure = java_body();
    azure["instance"]
        .as_object_mut()
        .unwrap()
        .remove("instanceId");
    azure["instance"]["dataCenterInfo"]["name"] = json!("Azure");
    register(&server, E, "MYAPP", &azure).assert_error(400, INVALID);
    let mut long_status = java_body();
    long_status["instance"]["status"] = json!("S".repeat(33));
    register(&server, E, "MYAPP", &long_status).assert_error(
        400,
        "Failed to register the instance because status exceeded 32 bytes",
    );
    // Nothing above was stored.
    let all = get_json(&server, &format!("{E}/apps")).json();
    assert_eq!(listed(&all).len(), 1);

    // Tolerant input (D10).
    let mut no_metadata = java_body();
    no_metadata["instance"]
        .as_object_mut()
        .unwrap()
        .remove("metadata");
    no_metadata["instance"]["instanceId"] = json!("nometa");
    assert_eq!(register(&server, E, "MYAPP", &no_metadata).status, 204);
    assert_eq!(a8_instance(&server, "MYAPP:nometa")["metadata"], json!({}));
    let mut boolean = java_body();
    boolean["instance"]["instanceId"] = json!("bool");
    boolean["instance"]["port"] = json!({"$": 80, "@enabled": true});
    assert_eq!(register(&server, E, "MYAPP", &boolean).status, 204);
    assert_eq!(
        a8_instance(&server, "MYAPP:bool")["endpoint"],
        json!({"type": "tcp", "value": "host1:80"})
    );
    // The namespace holds three instances now: a new id is refused, an existing one is not.
    let mut fourth = java_body();
    fourth["instance"]["instanceId"] = json!("fourth");
    register(&server, E, "MYAPP", &fourth).assert_error(403, INVALID);
    assert_eq!(register(&server, E, "MYAPP", &boolean).status, 204);
}

#[test]
fn registration_mapping_cases() {
    let server = Server::start(&[]);
    let mut amazon = instance("AMZ", "", "UP");
    amazon["instance"]
        .as_object_mut()
        .unwrap()
        .remove("instanceId");
    amazon["instance"]["hostName"] = json!("amz-host");
    amazon["instance"]["dataCenterInfo"] = json!({"name": "Amazon", "metadata": {"foo": "bar"}});
    assert_eq!(register(&server, E, "AMZ", &amazon).status, 204);
    assert_eq!(a8_instance(&server, "AMZ:amz-host")["service_name"], "AMZ");
    amazon["instance"]["dataCenterInfo"]["metadata"] = json!({"instance-id": "i-123"});
    assert_eq!(register(&server, E, "AMZ", &amazon).status, 204);
    assert_eq!(a8_instance(&server, "AMZ:i-123")["service_name"], "AMZ");
    // The default @class is kept when the registration gives only a name.
    let rendered = get_json(&server, &format!("{E}/apps/AMZ/i-123")).json();
    assert_eq!(
        rendered["instance"]["dataCenterInfo"]["@class"],
        "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"
    );
    assert_eq!(rendered["instance"]["dataCenterInfo"]["name"], "Amazon");

    let mut softlayer = instance("SL", "", "UP");
    softlayer["instance"]
        .as_object_mut()
        .unwrap()
        .remove("instanceId");
    softlayer["instance"]["hostName"] = json!("sl-host");
    softlayer["instance"]["dataCenterInfo"] = json!({"name": "SoftLayer", "metadata": {}});
    assert_eq!(register(&server, E, "SL", &softlayer).status, 204);
    assert_eq!(a8_instance(&server, "SL:sl-host")["service_name"], "SL");

    let both = json!({"instance":{"instanceId":"h6","hostName":"h6","app":"TLS","ipAddr":"1","vipAddress":"tls","status":"STARTING","port":{"$":80,"@enabled":"true"},"securePort":{"$":8443,"@enabled":"true"},"leaseInfo":{"durationInSecs":5000},"metadata":{"amalgam8.tags":"a,b;c"}}});
    assert_eq!(register(&server, E, "TLS", &both).status, 204);
    let a8 = a8_instance(&server, "TLS:h6");
    assert_eq!(a8["endpoint"], json!({"type": "https", "value": "h6:8443"}));
    assert_eq!(a8["ttl"], 600);
    assert_eq!(a8["status"], "STARTING");
    assert_eq!(a8["tags"], json!(["a", "b", "c"]));

    let mut empty_tag = instance("T", "t1", "UP");
    empty_tag["instance"]["metadata"] = json!({"amalgam8.tags": "a,,b"});
    register(&server, E, "T", &empty_tag);
    assert_eq!(a8_instance(&server, "T:t1")["tags"], json!(["a", "", "b"]));

    let mut string_port = instance("SP", "sp1", "UP");
    string_port["instance"]["port"] = json!({"$": "8080", "@enabled": "true"});
    string_port["instance"]["metadata"] = Value::Null;
    let array_form = json!({"instance": [string_port["instance"].clone()]});
    assert_eq!(register(&server, E, "SP", &array_form).status, 204);
    let a8 = a8_instance(&server, "SP:sp1");
    assert_eq!(
        a8["endpoint"],
        json!({"type": "tcp", "value": "sp1-host:8080"})
    );
    assert_eq!(a8["metadata"], json!({}));
    let rendered = get_json(&server, &format!("{E}/apps/SP/sp1")).json();
    assert_eq!(
        rendered["instance"]["port"],
        json!({"@enabled": "true", "$": "8080"}),
        "a string port stays a string"
    );
}

#[test]
fn renew_cancel_and_status_routes() {
    let server = Server::start(&[]);
    for id in ["http-1", "http-2"] {
        register(&server, E, "http", &instance("http", id, "STARTING"));
    }
    let app = get_json(&server, &format!("{E}/apps/http")).json();
    assert_eq!(app["application"]["name"], "http");
    let instances = app["application"]["instance"].as_array().unwrap();
    assert_eq!(instances.len(), 2);
    assert!(instances
        .iter()
        .all(|i| i["status"] == "STARTING" && i["metadata"] == json!({})));

    let put = |path: &str| server.request("PUT", &format!("{E}{path}"), &[], None);
    let delete = |path: &str| server.request("DELETE", &format!("{E}{path}"), &[], None);
    assert_eq!(put("/apps/http/http-1").status, 200);
    assert_eq!(
        put("/apps/http/http-2?status=UP&lastDirtyTimestamp=1").status,
        200
    );
    put("/apps/http/http-3").assert_error(404, "Instance not found");
    assert_eq!(put("/apps/http/http-1/status?value=UP").status, 200);
    assert_eq!(a8_instance(&server, "http:http-1")["status"], "UP");
    assert_eq!(put("/apps/http/http-2/status?value=DOWN").status, 200);
    assert_eq!(a8_instance(&server, "http:http-2")["status"], "DOWN");
    put("/apps/http/http-3/status?value=UNKNOWN").assert_error(404, "Instance not found");
    put("/apps/http/http-1/status").assert_error(400, "No status value set");
    put("/apps/http/http-1/status?value=").assert_error(400, "No status value set");
    let long = "x".repeat(40);
    assert_eq!(
        put(&format!("/apps/http/http-1/status?value={long}")).status,
        200
    );
    assert_eq!(a8_instance(&server, "http:http-1")["status"], long.as_str());
    // The Amalgam8 default listing: DOWN stays, OUT_OF_SERVICE leaves.
    assert_eq!(
        put("/apps/http/http-1/status?value=OUT_OF_SERVICE").status,
        200
    );
    let plain = server.get("/api/v1/instances").json();
    assert_eq!(ids_of(&plain), ["http:http-2"]);
    // Override removal (D12).
    assert_eq!(delete("/apps/http/http-1/status?value=UP").status, 200);
    assert_eq!(a8_instance(&server, "http:http-1")["status"], "UP");
    assert_eq!(delete("/apps/http/http-1/status").status, 200);
    assert_eq!(a8_instance(&server, "http:http-1")["status"], "UNKNOWN");
    delete("/apps/http/http-9/status").assert_error(404, "Instance not found");

    // Cancel, then the same ids through the Amalgam8 API are gone (410 there, 404 here).
    assert_eq!(delete("/apps/http/http-1").status, 200);
    assert_eq!(delete("/apps/http/http-2").status, 200);
    delete("/apps/http/http-2").assert_error(404, "Instance not found");
    delete("/apps/http/http-3").assert_error(404, "Instance not found");
    get_json(&server, &format!("{E}/apps/http")).assert_error(404, "Failed to look-up application");
    server
        .request("PUT", "/api/v1/instances/http:http-1/heartbeat", &[], None)
        .assert_error(410, "Failed to renew instance registration");

    // Amalgam8 ids are not `app:iid`.
    let a8_id = server
        .post_json("/api/v1/instances", &registration("s0", "x:1", ""))
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    put(&format!("/apps/s0/{a8_id}/status?value=UP")).assert_error(404, "Instance not found");
    // And a Eureka-registered instance can be renewed and removed through the Amalgam8 API.
    register(&server, E, "MYAPP", &java_body());
    assert_eq!(
        server
            .request(
                "PUT",
                "/api/v1/instances/MYAPP:host1:myapp:8080/heartbeat",
                &[],
                None
            )
            .status,
        200
    );
    assert_eq!(
        server
            .request(
                "DELETE",
                "/api/v1/instances/MYAPP%3Ahost1%3Amyapp%3A8080",
                &[],
                None
            )
            .status,
        200
    );
}

#[test]
fn metadata_updates_and_vips() {
    let server = Server::start(&[]);
    let mut body = java_body();
    body["instance"]["secureVipAddress"] = json!("myapp-secure");
    register(&server, E, "MYAPP", &body);
    register(&server, E, "OTHER", &instance("OTHER", "o1", "UP"));
    server.post_json("/api/v1/instances", &registration("myapp", "x:1", ""));

    let path = format!("{E}/apps/MYAPP/host1:myapp:8080/metadata");
    assert_eq!(
        server
            .request("PUT", &format!("{path}?a=b"), &[], None)
            .status,
        200
    );
    let a8 = a8_instance(&server, "MYAPP:host1:myapp:8080");
    assert_eq!(
        a8["metadata"],
        json!({"amalgam8.tags": "v1; canary", "a": "b"})
    );
    assert_eq!(
        server
            .request("PUT", &format!("{path}?amalgam8.tags=x,y"), &[], None)
            .status,
        200
    );
    let a8 = a8_instance(&server, "MYAPP:host1:myapp:8080");
    assert_eq!(a8["metadata"]["amalgam8.tags"], "x,y");
    assert_eq!(a8["tags"], json!(["x", "y"]));
    let big = "v".repeat(1100);
    server
        .request("PUT", &format!("{path}?big={big}"), &[], None)
        .assert_error(
            400,
            "Failed to register the instance because metadata exceeded 1024 bytes",
        );
    assert_eq!(
        a8_instance(&server, "MYAPP:host1:myapp:8080")["metadata"],
        a8["metadata"],
        "unchanged"
    );
    server
        .request(
            "PUT",
            &format!("{E}/apps/MYAPP/nope/metadata?a=b"),
            &[],
            None,
        )
        .assert_error(404, "Instance not found");
    let rendered = get_json(&server, &format!("{E}/apps/MYAPP/host1:myapp:8080")).json();
    assert_eq!(rendered["instance"]["actionType"], "MODIFIED");

    let vips = get_json(&server, &format!("{E}/vips/myapp")).json();
    assert_eq!(
        listed(&vips),
        [("host1:myapp:8080".to_string(), "UP".to_string())],
        "Amalgam8 instances never match"
    );
    for path in ["vips/none", "svips/x"] {
        let empty = get_json(&server, &format!("{E}/{path}")).json();
        assert!(empty["applications"].get("application").is_none(), "{path}");
        assert_eq!(empty["applications"]["apps__hashcode"], "");
    }
    let svips = get_json(&server, &format!("{E}/svips/myapp-secure")).json();
    assert_eq!(
        listed(&svips),
        [("host1:myapp:8080".to_string(), "UP".to_string())]
    );
}

#[test]
fn lease_timestamps_in_milliseconds() {
    let server = Server::start(&[]);
    let before = now_ms();
    let mut body = java_body();
    body["instance"]["leaseInfo"]["renewalIntervalInSecs"] = json!(10);
    body["instance"]["lastDirtyTimestamp"] = json!("1795355000000");
    register(&server, E, "MYAPP", &body);
    let after = now_ms();
    let fetch = || {
        get_json(&server, &format!("{E}/apps/MYAPP/host1:myapp:8080")).json()["instance"].clone()
    };
    let first = fetch();
    let registered = first["leaseInfo"]["registrationTimestamp"]
        .as_i64()
        .unwrap();
    assert!(
        before <= registered && registered <= after,
        "{before} <= {registered} <= {after}"
    );
    assert_eq!(first["leaseInfo"]["renewalIntervalInSecs"], 10);
    assert_eq!(first["lastDirtyTimestamp"], "1795355000000");
    std::thread::sleep(Duration::from_millis(1100));
    server.request(
        "PUT",
        &format!("{E}/apps/MYAPP/host1:myapp:8080"),
        &[],
        None,
    );
    std::thread::sleep(Duration::from_millis(1100));
    let renewed = fetch();
    assert!(
        renewed["leaseInfo"]["lastRenewalTimestamp"]
            .as_i64()
            .unwrap()
            > registered
    );
    assert_eq!(
        renewed["lastUpdatedTimestamp"], first["lastUpdatedTimestamp"],
        "a renew is not an update"
    );
    server.request(
        "PUT",
        &format!("{E}/apps/MYAPP/host1:myapp:8080/status?value=DOWN"),
        &[],
        None,
    );
    let changed = fetch();
    assert_ne!(
        changed["lastUpdatedTimestamp"],
        first["lastUpdatedTimestamp"]
    );
    register(&server, E, "OTHER", &instance("OTHER", "o", "UP"));
    assert_eq!(
        get_json(&server, &format!("{E}/apps/OTHER/o")).json()["instance"]["leaseInfo"]
            ["renewalIntervalInSecs"],
        30
    );
}

#[test]
fn xml_registration_and_hostile_xml() {
    let server = Server::start(&[]);
    let xml = r#"<instance><instanceId>host1:myapp:8080</instanceId><hostName>host1</hostName><app>MYAPP</app><ipAddr>10.0.0.7</ipAddr><status>UP</status><port enabled="true">8080</port><securePort enabled="false">443</securePort><dataCenterInfo class="com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"><name>MyOwn</name></dataCenterInfo><leaseInfo><renewalIntervalInSecs>30</renewalIntervalInSecs><durationInSecs>90</durationInSecs></leaseInfo><metadata><amalgam8.tags>v1; canary</amalgam8.tags></metadata><vipAddress>myapp</vipAddress></instance>"#;
    let post_xml = |ct: &str, body: &str| {
        server.request(
            "POST",
            "/eureka/v2/apps/MYAPP",
            &[("Content-Type", ct)],
            Some(body),
        )
    };
    assert_eq!(post_xml("application/xml", xml).status, 204);
    let a8 = a8_instance(&server, "MYAPP:host1:myapp:8080");
    assert_eq!(
        a8["endpoint"],
        json!({"type": "tcp", "value": "host1:8080"})
    );
    assert_eq!(a8["ttl"], 90);
    assert_eq!(a8["tags"], json!(["v1", "canary"]));
    assert_eq!(post_xml("text/xml; charset=utf-8", xml).status, 204);
    post_xml("text/plain", xml).assert_error(
        415,
        "Bad Content-Type or charset, expected 'application/json'",
    );
    server
        .request(
            "POST",
            "/api/v1/instances",
            &[("Content-Type", "application/xml")],
            Some(xml),
        )
        .assert_error(
            415,
            "Bad Content-Type or charset, expected 'application/json'",
        );

    let before = get_json(&server, "/eureka/apps").json()["applications"]["apps__hashcode"].clone();
    let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><instance><hostName>&lol3;</hostName></instance>"#;
    let huge_attribute = format!(
        r#"<instance><port enabled="{}">1</port></instance>"#,
        "t".repeat(900_000)
    );
    let deep = format!(
        "<instance>{}{}</instance>",
        "<a>".repeat(70),
        "</a>".repeat(70)
    );
    for bad in [
        laughs,
        "<instance><hostName>h</hostName>",
        "<instance><hostName>h</instance>",
        "<instance><hostName>&custom;</hostName></instance>",
        r#"<?xml version="1.0" encoding="ISO-8859-1"?><instance/>"#,
        deep.as_str(),
        "<instance><countryId>one</countryId></instance>",
    ] {
        post_xml("application/xml", bad).assert_error(400, "Failed to register instance");
    }
    // A huge attribute is well-formed XML; the document still lacks the required fields.
    let r = post_xml("application/xml", &huge_attribute);
    assert_eq!(r.status, 400, "{}", r.text());
    post_xml("application/xml", "<application/>").assert_error(
        400,
        "Missing required field(s): hostname, application, vipAddress or IPAddress",
    );
    let after = get_json(&server, "/eureka/apps").json()["applications"]["apps__hashcode"].clone();
    assert_eq!(before, after, "nothing changed");
    // A chunked XML body is read as XML too.
    let raw = format!("POST /eureka/apps/MYAPP HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{xml}\r\n0\r\n\r\n", xml.len());
    let mut conn = server.connect();
    std::io::Write::write_all(&mut conn, raw.as_bytes()).unwrap();
    assert_eq!(read_response(&mut conn, false).unwrap().status, 204);
}

#[test]
fn delta_and_hash_code() {
    let server = Server::start(&["--min_ttl", "1s", "--default_ttl", "1s"]);
    for (id, status) in [("u1", "UP"), ("u2", "UP"), ("u3", "UP"), ("d1", "DOWN")] {
        register(&server, E, "APP", &instance("APP", id, status));
    }
    let full = get_json(&server, &format!("{E}/apps")).json();
    assert_eq!(full["applications"]["apps__hashcode"], "DOWN_1_UP_3_");
    assert!(server
        .get("/eureka/apps")
        .text()
        .contains("<apps__hashcode>DOWN_1_UP_3_</apps__hashcode>"));
    let version = |v: &Value| {
        v["applications"]["versions__delta"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let delta = || get_json(&server, &format!("{E}/apps/delta")).json();
    let d = delta();
    assert_eq!(
        d["applications"]["apps__hashcode"],
        full["applications"]["apps__hashcode"]
    );
    assert_eq!(listed(&d).len(), 4);
    let v0 = version(&d);

    let renewed = server.request("PUT", &format!("{E}/apps/APP/u1"), &[], None);
    assert_eq!(renewed.status, 200);
    assert_eq!(version(&delta()), v0, "a renew is not a change");
    server.request(
        "PUT",
        &format!("{E}/apps/APP/u1/status?value=OUT_OF_SERVICE"),
        &[],
        None,
    );
    let d = delta();
    let v1 = version(&d);
    assert!(v1 > v0);
    let u1 = instance_in(&d, "u1");
    assert_eq!(u1["actionType"], "MODIFIED");
    assert_eq!(u1["status"], "OUT_OF_SERVICE");
    server.request("DELETE", &format!("{E}/apps/APP/u2"), &[], None);
    let d = delta();
    assert!(version(&d) > v1);
    let u2 = instance_in(&d, "u2");
    assert_eq!(u2["actionType"], "DELETED");
    assert_eq!(
        d["applications"]["apps__hashcode"],
        "DOWN_1_OUT_OF_SERVICE_1_UP_1_"
    );

    // A client that applies the deltas to its full copy computes the server's hash code.
    let mut copy: std::collections::BTreeMap<String, String> = listed(&full).into_iter().collect();
    for app in d["applications"]["application"].as_array().unwrap() {
        for i in app["instance"].as_array().unwrap() {
            let id = i["instanceId"].as_str().unwrap().to_string();
            match i["actionType"].as_str().unwrap() {
                "DELETED" => {
                    copy.remove(&id);
                }
                _ => {
                    copy.insert(id, i["status"].as_str().unwrap().to_string());
                }
            }
        }
    }
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for status in copy.values() {
        *counts.entry(status.clone()).or_default() += 1;
    }
    let local_hash: String = counts.iter().map(|(s, n)| format!("{s}_{n}_")).collect();
    assert_eq!(
        local_hash,
        d["applications"]["apps__hashcode"].as_str().unwrap()
    );

    // Changes through the Amalgam8 API are in the delta too: register, deregister, expiry.
    let a = server
        .post_json("/api/v1/instances", &registration("a8", "a:1", "\"ttl\":1"))
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = server
        .post_json(
            "/api/v1/instances",
            &registration("a8", "b:1", "\"ttl\":60"),
        )
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(actions_of(&delta(), "a8"), ["ADDED", "ADDED"]);
    server.request("DELETE", &format!("/api/v1/instances/{b}"), &[], None);
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(
        actions_of(&delta(), "a8"),
        ["DELETED", "DELETED"],
        "deregistered {b} and expired {a}"
    );
}

/// The A8 listing fixture of spec 7.5 with its user-defined status, which needs Eureka.
#[test]
fn amalgam8_listing_with_eureka_statuses() {
    let server = Server::start(&[]);
    let with_tags = |id: &str, status: &str, tags: &str| {
        let mut body = instance("http-1", id, status);
        body["instance"]["metadata"] = json!({"amalgam8.tags": tags});
        assert_eq!(register(&server, E, "http-1", &body).status, 204);
    };
    with_tags("http-1", "UP", "DB,NoSQL");
    with_tags("http-2", "UP", "DB");
    with_tags("http-3", "STARTING", "DB");
    with_tags("http-4", "OUT_OF_SERVICE", "DB,NoSQL");
    with_tags("http-5", "user_defined", "DB,NoSQL");
    let count = |query: &str| {
        let r = server.get(&format!("/api/v1/instances?{query}&service_name=http-1"));
        r.json()["instances"].as_array().unwrap().len()
    };
    for (query, expected) in [
        ("tags=DB,NoSQL", 3),
        ("tags=DB", 5),
        ("tags=DB,MySQL", 0),
        ("status=UP", 2),
        ("status=DOWN", 0),
        ("tags=DB,NoSQL&status=UP", 1),
        ("tags=DB,NoSQL&status=DOWN", 0),
        ("status=up", 2),
        ("status=ALL", 5),
        ("status=STARTING", 1),
        ("status=OUT_OF_SERVICE", 1),
        ("status=ALL&tags=DB", 5),
        ("status=STARTING&tags=DB", 1),
        ("tags=DB&status=STARTING", 1),
        ("status=user_defined", 1),
    ] {
        assert_eq!(count(query), expected, "{query}");
    }
    let plain = server.get("/api/v1/instances").json();
    assert_eq!(
        ids_of(&plain),
        ["http-1:http-1", "http-1:http-2", "http-1:http-5"]
    );
    // Statuses without a value are listed without a status key.
    let mut no_status = instance("NS", "n1", "");
    no_status["instance"]
        .as_object_mut()
        .unwrap()
        .remove("status");
    register(&server, E, "NS", &no_status);
    let listed = server.get("/api/v1/instances?service_name=NS").json();
    assert!(listed["instances"][0].get("status").is_none(), "{listed}");
    assert!(server.get("/api/v1/instances").json()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["id"] == "NS:n1"));
}

/// The interpreter of the venv that run.sh prepares with py_eureka_client.
fn venv_python() -> std::path::PathBuf {
    let python = std::env::var_os("A8_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python"))
        });
    assert!(
        python.exists(),
        "{python:?} is missing: run static-tests/run.sh, which installs py_eureka_client"
    );
    python
}

/// Runs the real client through its whole life against `eureka_url`, and checks what it and
/// the registry saw.
///
/// The client parses registry fetches as XML and sends `Accept: */*`, so it can discover only on
/// the prefixes whose default format is XML (`/eureka/v2`, `/eureka`); on `/api/eureka/{token}/v2`
/// the contract answers JSON by default (D6), and the client only registers there.
fn real_client_round_trip(server: &Server, eureka_url: &str, token: &str, discover: bool) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/eureka_client_check.py");
    let registry_url = format!("http://{}", server.address);
    let mode = if discover {
        "discover"
    } else {
        "register-only"
    };
    let output = std::process::Command::new(venv_python())
        .args([script, eureka_url, &registry_url, mode, token])
        .output()
        .expect("run the Python Eureka client");
    assert!(
        output.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)));
    let id = "PYAPP:127.0.0.1:pyapp:9000";
    assert_eq!(seen["errors"], json!([]), "{seen}");
    assert_eq!(seen["after_register"], json!([{"id": id, "status": "UP"}]));
    if discover {
        assert_eq!(
            seen["discovered"],
            json!([{"id": "127.0.0.1:pyapp:9000", "status": "UP", "port": 9000}]),
            "found through the XML registry fetch"
        );
        assert_eq!(
            seen["discovered_out_of_service"][0]["status"], "OUT_OF_SERVICE",
            "seen through a delta"
        );
        assert_eq!(seen["discovered_back_up"][0]["status"], "UP");
    }
    assert_eq!(
        seen["after_out_of_service"],
        json!([{"id": id, "status": "OUT_OF_SERVICE"}])
    );
    assert_eq!(seen["after_back_up"], json!([{"id": id, "status": "UP"}]));
    assert_eq!(seen["after_stop"], json!([]), "deregistered on stop");

    // The access log shows what the client sent: one registration until its stop (which
    // registers DOWN, then cancels), heartbeats that all succeeded, the percent-encoded id.
    std::thread::sleep(Duration::from_millis(200));
    let lines = server.stderr();
    let access: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("msg=\"request\"") && l.contains("/apps/PYAPP"))
        .collect();
    let count = |method: &str, suffix: &str, status: &str| {
        access
            .iter()
            .filter(|l| {
                l.contains(&format!("method=\"{method}\""))
                    && l.contains(&format!("{suffix}\" status=\"{status}\""))
            })
            .count()
    };
    let encoded = "/apps/PYAPP/127.0.0.1%3Apyapp%3A9000";
    assert_eq!(count("POST", "/apps/PYAPP", "204"), 2, "{access:#?}");
    assert!(
        count("PUT", encoded, "200") >= 2,
        "at least two heartbeats: {access:#?}"
    );
    assert_eq!(count("PUT", encoded, "404"), 0, "no failed heartbeat");
    assert_eq!(count("PUT", &format!("{encoded}/status"), "200"), 2);
    assert_eq!(count("DELETE", encoded, "200"), 1);
    if discover {
        let fetches = lines
            .iter()
            .filter(|l| l.contains("/apps/delta\" status=\"200\""))
            .count();
        assert!(fetches >= 2, "the client fetched deltas");
    }
}

#[test]
fn python_eureka_client_at_eureka_v2() {
    let server = Server::start(&["--log_level", "debug"]);
    real_client_round_trip(
        &server,
        &format!("http://{}/eureka/v2", server.address),
        "",
        true,
    );
}

#[test]
fn python_eureka_client_at_api_eureka_default() {
    let server = Server::start(&["--log_level", "debug"]);
    real_client_round_trip(
        &server,
        &format!("http://{}/api/eureka/default/v2", server.address),
        "",
        false,
    );
}

#[test]
fn python_eureka_client_in_a_trusted_namespace() {
    let server = Server::start(&["--log_level", "debug", "--auth_mode", "trusted"]);
    real_client_round_trip(
        &server,
        &format!("http://{}/api/eureka/tenant-py/v2", server.address),
        "tenant-py",
        false,
    );
    // Nothing of it leaked into another namespace.
    let other = server.request(
        "GET",
        "/api/v1/services",
        &[("Authorization", "Bearer other")],
        None,
    );
    assert_eq!(other.json()["services"], json!([]));
}

/// Distinct short XML element names (`a`, `b`, … `aa0`, …), `count` of them.
fn distinct_element_names(count: usize) -> Vec<String> {
    const FIRST: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const REST: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut names = Vec::with_capacity(count);
    let mut n = 0usize;
    while names.len() < count {
        let mut name = vec![FIRST[n % FIRST.len()]];
        let mut rest = n / FIRST.len();
        while rest > 0 {
            rest -= 1;
            name.push(REST[rest % REST.len()]);
            rest /= REST.len();
        }
        names.push(String::from_utf8(name).unwrap());
        n += 1;
    }
    names
}

/// An XML registration of `MANY/m1` whose `<metadata>` (or, with `in_data_center`, whose
/// `dataCenterInfo` metadata) holds `children` empty elements of distinct names, kept under the
/// 1 MiB body limit.
fn xml_with_many_metadata_children(children: usize, in_data_center: bool) -> String {
    let mut entries = String::with_capacity(children * 7);
    for name in distinct_element_names(children) {
        entries.push('<');
        entries.push_str(&name);
        entries.push_str("/>");
    }
    let (data_center, metadata) = if in_data_center {
        (format!("<dataCenterInfo class=\"com.netflix.appinfo.AmazonInfo\"><name>Amazon</name><metadata>{entries}</metadata></dataCenterInfo>"), String::new())
    } else {
        (String::new(), format!("<metadata>{entries}</metadata>"))
    };
    let xml = format!("<instance><instanceId>m1</instanceId><hostName>h</hostName><app>MANY</app><ipAddr>10.0.0.1</ipAddr><vipAddress>many</vipAddress>{data_center}{metadata}</instance>");
    assert!(xml.len() < 1_048_576, "{} bytes", xml.len());
    xml
}

/// Hole: an XML `<metadata>` of ~170,000 empty children cost tens of seconds of CPU (each key was
/// looked up in a vector of all keys before it). It is now read in one pass and refused as soon
/// as it is sure to pass its 1,024-byte limit. The client's 10 s read timeout is the functional
/// bound: the old code answered the same 400 only after about half a minute.
#[test]
fn xml_metadata_with_many_children_is_refused_promptly() {
    let server = Server::start(&[]);
    let xml = xml_with_many_metadata_children(170_000, false);
    let answer = server.request(
        "POST",
        "/eureka/v2/apps/MANY",
        &[("Content-Type", "application/xml")],
        Some(&xml),
    );
    answer.assert_error(
        400,
        "Failed to register the instance because metadata exceeded 1024 bytes",
    );
    get_json(&server, "/eureka/v2/apps/MANY").assert_error(404, "Failed to look-up application");
    // The server is still fine, and a small metadata of the same shape still registers.
    let small = xml_with_many_metadata_children(20, false);
    let r = server.request(
        "POST",
        "/eureka/v2/apps/MANY",
        &[("Content-Type", "application/xml")],
        Some(&small),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let metadata = a8_instance(&server, "MANY:m1")["metadata"].clone();
    assert_eq!(metadata.as_object().unwrap().len(), 20, "{metadata}");
}

/// The data-centre metadata of an XML registration is read in one pass too (the same vector
/// lookup made ~170,000 children cost tens of seconds).
#[test]
fn xml_data_center_metadata_with_many_children_is_read_promptly() {
    let server = Server::start(&[]);
    let xml = xml_with_many_metadata_children(170_000, true);
    let answer = server.request(
        "POST",
        "/eureka/v2/apps/MANY",
        &[("Content-Type", "application/xml")],
        Some(&xml),
    );
    assert_eq!(answer.status, 204, "{}", answer.text());
    let one = get_json(&server, "/eureka/v2/apps/MANY/m1");
    assert_eq!(one.status, 200);
    let data_center = &one.json()["instance"]["dataCenterInfo"];
    assert_eq!(data_center["name"], "Amazon");
    assert_eq!(data_center["metadata"].as_object().unwrap().len(), 170_000);
    // And rendered back as XML in one pass.
    let xml_one = server.get("/eureka/v2/apps/MANY/m1");
    assert_eq!(xml_one.status, 200);
    assert!(xml_one.text().contains("<a/>") || xml_one.text().contains("<a></a>"));
}

const TAGS_EXCEEDED: &str = "Failed to register the instance because tags exceeded 8192 bytes";

/// D38 on the Eureka API: the tags derived from `metadata["amalgam8.tags"]` are bounded like the
/// Amalgam8 API's, on registration (JSON and XML) and on a metadata update.
#[test]
fn eureka_tags_are_bounded() {
    let server = Server::start(&[]);
    let with_tags = |id: &str, tags: &str| {
        let mut body = instance("TAGS", id, "UP");
        body["instance"]["metadata"] = json!({ "amalgam8.tags": tags });
        body
    };
    let pieces = |n: usize| vec!["t"; n].join(",");
    let r = register(&server, E, "TAGS", &with_tags("ok", &pieces(256)));
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        a8_instance(&server, "TAGS:ok")["tags"]
            .as_array()
            .unwrap()
            .len(),
        256
    );
    register(&server, E, "TAGS", &with_tags("many", &pieces(257))).assert_error(400, TAGS_EXCEEDED);
    // Empty pieces are tags too: 300 commas give 301 empty tags.
    register(&server, E, "TAGS", &with_tags("empty", &",".repeat(300)))
        .assert_error(400, TAGS_EXCEEDED);
    let xml = format!(
        "<instance><instanceId>x</instanceId><hostName>h</hostName><app>TAGS</app><ipAddr>1</ipAddr><vipAddress>v</vipAddress><metadata><amalgam8.tags>{}</amalgam8.tags></metadata></instance>",
        pieces(257)
    );
    server
        .request(
            "POST",
            "/eureka/v2/apps/TAGS",
            &[("Content-Type", "application/xml")],
            Some(&xml),
        )
        .assert_error(400, TAGS_EXCEEDED);
    // The metadata limit is checked before the tags limit.
    let both = with_tags("both", &format!("{},{}", pieces(257), "x".repeat(1100)));
    register(&server, E, "TAGS", &both).assert_error(
        400,
        "Failed to register the instance because metadata exceeded 1024 bytes",
    );

    let path = format!("{E}/apps/TAGS/ok/metadata");
    let before = a8_instance(&server, "TAGS:ok");
    server
        .request(
            "PUT",
            &format!("{path}?amalgam8.tags={}", ",".repeat(400)),
            &[],
            None,
        )
        .assert_error(400, TAGS_EXCEEDED);
    assert_eq!(
        a8_instance(&server, "TAGS:ok")["tags"],
        before["tags"],
        "unchanged"
    );
    assert_eq!(
        a8_instance(&server, "TAGS:ok")["metadata"],
        before["metadata"]
    );
    let r = server.request("PUT", &format!("{path}?amalgam8.tags=a,b"), &[], None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(a8_instance(&server, "TAGS:ok")["tags"], json!(["a", "b"]));
    let ids: Vec<String> = server.get("/api/v1/instances?service_name=TAGS").json()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["TAGS:ok"], "nothing refused was stored");
}

/// Hole: app `A` with instance `B:c` and app `A:B` with instance `c` were one record `A:B:c`,
/// so the second registration silently replaced the first. They are two instances now, listed,
/// renewed and cancelled independently; ordinary ids keep the `APP:iid` form.
#[test]
fn eureka_ids_of_different_apps_never_collide() {
    let server = Server::start(&[]);
    let r = register(&server, E, "A", &instance("A", "B:c", "UP"));
    assert_eq!(r.status, 204, "{}", r.text());
    let r = register(&server, E, "A:B", &instance("A:B", "c", "DOWN"));
    assert_eq!(r.status, 204, "{}", r.text());

    let apps = get_json(&server, &format!("{E}/apps")).json();
    let mut seen: Vec<(String, String, String)> = apps["applications"]["application"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|app| {
            app["instance"].as_array().unwrap().iter().map(|i| {
                (
                    app["name"].as_str().unwrap().to_string(),
                    i["instanceId"].as_str().unwrap().to_string(),
                    i["status"].as_str().unwrap().to_string(),
                )
            })
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("A".to_string(), "B:c".to_string(), "UP".to_string()),
            ("A:B".to_string(), "c".to_string(), "DOWN".to_string())
        ]
    );
    assert_eq!(apps["applications"]["apps__hashcode"], "DOWN_1_UP_1_");
    let a = get_json(&server, &format!("{E}/apps/A/B:c")).json();
    assert_eq!(a["instance"]["app"], "A");
    let ab = get_json(&server, &format!("{E}/apps/A%3AB/c")).json();
    assert_eq!(ab["instance"]["app"], "A:B");
    assert_eq!(ab["instance"]["status"], "DOWN");

    // Both are visible through the Amalgam8 API under different ids; the plain one keeps `APP:iid`.
    let listing = server.get("/api/v1/instances?status=ALL").json();
    let ids = ids_of(&listing);
    assert_eq!(ids.len(), 2, "{listing}");
    assert!(ids.contains(&"A:B:c".to_string()), "{ids:?}");
    let other = ids.iter().find(|id| *id != "A:B:c").unwrap().clone();

    // Renewed and cancelled independently, on both APIs.
    let put = |path: &str| server.request("PUT", path, &[], None).status;
    let delete = |path: &str| server.request("DELETE", path, &[], None).status;
    assert_eq!(put(&format!("{E}/apps/A/B:c")), 200);
    assert_eq!(put(&format!("{E}/apps/A:B/c")), 200);
    let encoded: String = other.bytes().map(|b| format!("%{b:02X}")).collect();
    assert_eq!(put(&format!("/api/v1/instances/{encoded}/heartbeat")), 200);
    assert_eq!(delete(&format!("{E}/apps/A:B/c")), 200);
    assert_eq!(put(&format!("{E}/apps/A:B/c")), 404, "cancelled");
    assert_eq!(
        put(&format!("{E}/apps/A/B:c")),
        200,
        "the other one lives on"
    );
    assert_eq!(
        ids_of(&server.get("/api/v1/instances?status=ALL").json()),
        ["A:B:c"]
    );
    assert_eq!(put(&format!("/api/v1/instances/{encoded}/heartbeat")), 410);
}

/// The Amalgam8 registration of `service` at a `kind` endpoint `value`; returns its id.
fn a8_register(server: &Server, service: &str, kind: &str, value: &str) -> String {
    let body = json!({"service_name": service, "endpoint": {"type": kind, "value": value}});
    let r = server.post_json("/api/v1/instances", &body.to_string());
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

/// D37: an Amalgam8 instance at `host:port` is listed with the host in `hostName` and `ipAddr`,
/// the port in `port` (or `securePort` for https), and the registry id as `instanceId`, in JSON
/// and in XML; a value that is not `host:port` stays whole, without a port.
#[test]
fn amalgam8_host_port_endpoints_render_as_callable_eureka_instances() {
    let server = Server::start(&[]);
    let first = a8_register(&server, "reviews", "http", "10.0.0.5:9080");
    let second = a8_register(&server, "reviews", "http", "10.0.0.5:9081");
    let ipv6 = a8_register(&server, "reviews", "tcp", "[2001:db8::7]:7000");
    let secure = a8_register(&server, "reviews", "https", "web.example.com:8443");
    let plain = a8_register(&server, "reviews", "tcp", "justahost");
    let out_of_range = a8_register(&server, "reviews", "tcp", "h:99999");

    let app = get_json(&server, "/eureka/v2/apps/reviews").json();
    let listed = app["application"]["instance"].as_array().unwrap();
    let by_id = |id: &str| {
        listed
            .iter()
            .find(|i| i["instanceId"] == id)
            .unwrap_or_else(|| panic!("no instanceId {id} in {app}"))
            .clone()
    };
    for (id, host, port) in [
        (&first, "10.0.0.5", "9080"),
        (&second, "10.0.0.5", "9081"),
        (&ipv6, "2001:db8::7", "7000"),
    ] {
        let i = by_id(id);
        assert_eq!(i["hostName"], host, "{i}");
        assert_eq!(i["ipAddr"], host, "{i}");
        assert_eq!(i["port"], json!({"@enabled": "true", "$": port}), "{i}");
        assert!(i.get("securePort").is_none(), "{i}");
    }
    let i = by_id(&secure);
    assert_eq!(i["hostName"], "web.example.com");
    assert_eq!(i["securePort"], json!({"@enabled": "true", "$": "8443"}));
    assert!(i.get("port").is_none(), "{i}");
    for (id, value) in [(&plain, "justahost"), (&out_of_range, "h:99999")] {
        let i = by_id(id);
        assert_eq!(i["hostName"], value, "{i}");
        assert_eq!(i["ipAddr"], value, "{i}");
        assert!(
            i.get("port").is_none() && i.get("securePort").is_none(),
            "{i}"
        );
    }

    // The same in XML, on every list route; the hash code counts the six instances.
    let xml = server.get("/eureka/apps").text();
    for piece in [
        format!("<instanceId>{first}</instanceId><hostName>10.0.0.5</hostName><app>reviews</app><ipAddr>10.0.0.5</ipAddr><status>UP</status><overriddenstatus>UNKNOWN</overriddenstatus><port enabled=\"true\">9080</port><countryId>"),
        format!("<instanceId>{second}</instanceId><hostName>10.0.0.5</hostName>"),
        "<port enabled=\"true\">9081</port>".to_string(),
        format!("<instanceId>{ipv6}</instanceId><hostName>2001:db8::7</hostName>"),
        "<securePort enabled=\"true\">8443</securePort>".to_string(),
        format!("<instanceId>{plain}</instanceId><hostName>justahost</hostName><app>reviews</app><ipAddr>justahost</ipAddr><status>UP</status><overriddenstatus>UNKNOWN</overriddenstatus><countryId>"),
        "<apps__hashcode>UP_6_</apps__hashcode>".to_string(),
    ] {
        assert!(xml.contains(&piece), "{piece} not in {xml}");
    }
    // Deltas render the same way (the change log started with the first Eureka read above).
    let later = a8_register(&server, "ratings", "http", "10.0.0.6:9080");
    let delta = get_json(&server, "/eureka/apps/delta").json();
    let i = instance_in(&delta, &later);
    assert_eq!(
        (&i["hostName"], &i["port"]["$"]),
        (&json!("10.0.0.6"), &json!("9080"))
    );
}

#[test]
fn eureka_registrations_keep_their_own_host_ports_and_resolved_id() {
    let server = Server::start(&[]);
    // No instanceId and no port: a host name that looks like host:port must not grow a port,
    // and the id a client reads must be the one it can renew with.
    let body = json!({"instance":{"hostName":"h:9","app":"NOID","ipAddr":"10.0.0.9","status":"UP","vipAddress":"noid","dataCenterInfo":{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"}}});
    assert_eq!(register(&server, "/eureka/v2", "NOID", &body).status, 204);
    let app = get_json(&server, "/eureka/v2/apps/NOID").json();
    let listed = &app["application"]["instance"][0];
    assert_eq!(listed["hostName"], "h:9");
    assert!(
        listed.get("port").is_none(),
        "no port was registered: {listed}"
    );
    let id = listed["instanceId"].as_str().unwrap().to_string();
    let renewed = server.request("PUT", &format!("/eureka/v2/apps/NOID/{id}"), &[], None);
    assert_eq!(renewed.status, 200, "renew by the listed id {id}");
    let by_id = get_json(&server, &format!("/eureka/v2/instances/{id}"));
    assert_eq!(by_id.status, 200);
}
