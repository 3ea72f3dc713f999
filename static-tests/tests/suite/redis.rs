//! The Redis store (redis contract): several registry processes on one real `redis-server`,
//! races between them, namespaces that differ only by separators, and Redis failing in every way
//! a test can make it fail (killed, stopped with SIGSTOP, restarted empty, down at startup).

use a8registry_static_tests::redis::{free_port, RedisServer};
use a8registry_static_tests::{registration, Response, Server};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const INSTANCES: &str = "/api/v1/instances";
const E: &str = "/api/eureka/default/v2";
const UNAVAILABLE: &str = "Registry store unavailable";

/// A registry on `redis` with extra flags.
fn node(redis: &RedisServer, extra: &[&str]) -> Server {
    let address = format!("127.0.0.1:{}", redis.port);
    let mut args = vec!["--store", "redis", "--store_address", &address];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn register(server: &Server, service: &str, value: &str) -> Response {
    server.post_json(INSTANCES, &registration(service, value, ""))
}

fn ids(server: &Server, service: &str) -> Vec<String> {
    let r = server.get(&format!("/api/v1/services/{service}"));
    if r.status == 404 {
        return Vec::new();
    }
    assert_eq!(r.status, 200, "{}", r.text());
    let mut ids: Vec<String> = r.json()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Polls `check` until it holds, for at most `within`; true when it did.
fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn eureka_json(server: &Server, path: &str) -> Value {
    let r = server.request(
        "GET",
        &format!("{E}{path}"),
        &[("Accept", "application/json")],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn eureka_instance(app: &str, id: &str) -> String {
    json!({"instance":{"instanceId":id,"hostName":format!("{id}-host"),"app":app,"ipAddr":"10.0.0.1","status":"UP","port":{"$":80,"@enabled":"true"},"vipAddress":app.to_lowercase(),"dataCenterInfo":{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"},"metadata":{}}}).to_string()
}

#[test]
fn every_change_through_one_node_is_seen_through_the_others() {
    let redis = RedisServer::start(&[]);
    let nodes: Vec<Server> = (0..3).map(|_| node(&redis, &["--min_ttl", "1s"])).collect();
    let [a, b, c] = [&nodes[0], &nodes[1], &nodes[2]];
    // Warm every node's cached listing first, so a node that missed a change would show it.
    for n in &nodes {
        assert!(ids(n, "web").is_empty());
    }
    let r = register(a, "web", "10.0.0.1:80");
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    for n in &nodes {
        assert!(eventually(Duration::from_secs(2), || ids(n, "web") == [id.clone()]));
        let listed = n.get("/api/v1/services").json();
        assert_eq!(listed["services"], json!(["web"]));
    }
    // Heartbeat through b, deregister through c: both see the one record a registered.
    assert_eq!(
        b.request("PUT", &format!("{INSTANCES}/{id}/heartbeat"), &[], None)
            .status,
        200
    );
    assert_eq!(
        c.request("DELETE", &format!("{INSTANCES}/{id}"), &[], None)
            .status,
        200
    );
    for n in &nodes {
        assert!(eventually(Duration::from_secs(2), || ids(n, "web").is_empty()));
        assert_eq!(
            n.request("PUT", &format!("{INSTANCES}/{id}/heartbeat"), &[], None)
                .status,
            410
        );
    }

    // Eureka: registration, status and metadata changes, renewals and cancels through
    // different nodes; every node reports the same delta, version and hash code.
    let post =
        |n: &Server, id: &str| n.post_json(&format!("{E}/apps/APP"), &eureka_instance("APP", id));
    assert_eq!(post(a, "i1").status, 204);
    assert_eq!(post(b, "i2").status, 204);
    assert_eq!(
        c.request(
            "PUT",
            &format!("{E}/apps/APP/i1/status?value=OUT_OF_SERVICE"),
            &[],
            None
        )
        .status,
        200
    );
    assert_eq!(
        a.request(
            "PUT",
            &format!("{E}/apps/APP/i2/metadata?zone=z1"),
            &[],
            None
        )
        .status,
        200
    );
    assert_eq!(
        b.request("PUT", &format!("{E}/apps/APP/i2"), &[], None)
            .status,
        200
    );
    let same_everywhere = || {
        let views: Vec<(Value, Value, Value)> = nodes
            .iter()
            .map(|n| {
                let delta = eureka_json(n, "/apps/delta");
                let full = eureka_json(n, "/apps");
                (
                    delta["applications"]["versions__delta"].clone(),
                    delta["applications"]["apps__hashcode"].clone(),
                    full["applications"]["apps__hashcode"].clone(),
                )
            })
            .collect();
        views.iter().all(|v| *v == views[0]) && views[0].2 == "OUT_OF_SERVICE_1_UP_1_"
    };
    assert!(eventually(Duration::from_secs(2), same_everywhere));
    let delta = eureka_json(c, "/apps/delta");
    let instances = delta["applications"]["application"][0]["instance"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let zone = instances
        .iter()
        .find(|i| i["instanceId"] == "i2")
        .map(|i| i["metadata"]["zone"].clone());
    assert_eq!(zone, Some(json!("z1")), "{delta}");
    assert_eq!(
        c.request("DELETE", &format!("{E}/apps/APP/i2"), &[], None)
            .status,
        200
    );
    for n in &nodes {
        assert_eq!(
            n.request("PUT", &format!("{E}/apps/APP/i2"), &[], None)
                .status,
            404
        );
    }

    // Expiry is judged once, by Redis's clock, and seen by every node.
    let r = a.post_json(
        INSTANCES,
        &registration("short", "10.0.0.2:80", "\"ttl\":1"),
    );
    assert_eq!(r.status, 201);
    for n in &nodes {
        assert!(eventually(Duration::from_secs(2), || ids(n, "short").len() == 1));
    }
    for n in &nodes {
        assert!(eventually(Duration::from_secs(3), || ids(n, "short").is_empty()));
    }
}

#[test]
fn other_nodes_changes_reach_cached_listings_within_a_fraction_of_a_second() {
    let redis = RedisServer::start(&[]);
    let writer = node(&redis, &[]);
    let reader = node(&redis, &[]);
    // The reader serves a cached body (kept up to a second); only the change channel can make
    // it show another node's change sooner. Several rounds, so luck cannot pass the test.
    for round in 0..5 {
        let value = format!("10.0.1.{round}:80");
        let before = ids(&reader, "hot");
        let r = register(&writer, "hot", &value);
        assert_eq!(r.status, 201);
        let started = Instant::now();
        assert!(
            eventually(Duration::from_millis(400), || ids(&reader, "hot").len()
                == before.len() + 1),
            "round {round}: the reader still lists {before:?} after {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn heartbeats_racing_a_deregistration_never_bring_the_instance_back() {
    let redis = RedisServer::start(&[]);
    let a = node(&redis, &[]);
    let b = node(&redis, &[]);
    let ids: Vec<String> = (0..40)
        .map(|i| {
            let r = register(&a, "race", &format!("10.0.2.{i}:80"));
            assert_eq!(r.status, 201);
            r.json()["id"].as_str().unwrap().to_string()
        })
        .collect();
    let heartbeater = {
        let address = a.address;
        let ids = ids.clone();
        std::thread::spawn(move || {
            let mut late_ok = 0;
            for _ in 0..5 {
                for id in &ids {
                    let mut conn = a8registry_static_tests::connect(address);
                    a8registry_static_tests::send(
                        &mut conn,
                        "PUT",
                        &format!("{INSTANCES}/{id}/heartbeat"),
                        &[],
                        None,
                    );
                    let status = a8registry_static_tests::read_response(&mut conn, false)
                        .unwrap()
                        .status;
                    assert!(status == 200 || status == 410, "{status}");
                    late_ok += usize::from(status == 200);
                }
            }
            late_ok
        })
    };
    for id in &ids {
        assert_eq!(
            b.request("DELETE", &format!("{INSTANCES}/{id}"), &[], None)
                .status,
            200
        );
    }
    heartbeater.join().unwrap();
    for n in [&a, &b] {
        assert!(self::ids(n, "race").is_empty());
        for id in &ids {
            assert_eq!(
                n.request("PUT", &format!("{INSTANCES}/{id}/heartbeat"), &[], None)
                    .status,
                410
            );
        }
    }
    let keys = redis.command(&["KEYS", "*"]).unwrap();
    assert!(!keys.contains(":s:"), "no service index is left: {keys}");
}

#[test]
fn concurrent_registrations_at_capacity_never_over_admit() {
    let redis = RedisServer::start(&[]);
    let nodes: Vec<Server> = (0..3)
        .map(|_| node(&redis, &["--namespace_capacity", "10"]))
        .collect();
    let addresses: Vec<_> = nodes.iter().map(|n| n.address).collect();
    let workers: Vec<_> = (0..50)
        .map(|i| {
            let address = addresses[i % addresses.len()];
            std::thread::spawn(move || {
                let mut conn = a8registry_static_tests::connect(address);
                let body = registration("cap", &format!("10.0.3.{i}:80"), "");
                a8registry_static_tests::send(
                    &mut conn,
                    "POST",
                    INSTANCES,
                    &[("Content-Type", "application/json")],
                    Some(&body),
                );
                a8registry_static_tests::read_response(&mut conn, false).unwrap()
            })
        })
        .collect();
    let answers: Vec<Response> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    let admitted = answers.iter().filter(|r| r.status == 201).count();
    assert_eq!(admitted, 10, "exactly the capacity is admitted");
    for refused in answers.iter().filter(|r| r.status != 201) {
        refused.assert_error(403, "Failed to register instance");
    }
    for n in &nodes {
        assert_eq!(ids(n, "cap").len(), 10);
    }
    // Re-registering an admitted id succeeds; a freed slot is usable at once through another
    // node.
    let admitted_at = answers.iter().position(|r| r.status == 201).unwrap();
    let refused_at = answers.iter().position(|r| r.status != 201).unwrap();
    let again = register(&nodes[1], "cap", &format!("10.0.3.{admitted_at}:80"));
    assert_eq!(again.status, 201, "{}", again.text());
    let first = answers[admitted_at].json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        nodes[2]
            .request("DELETE", &format!("{INSTANCES}/{first}"), &[], None)
            .status,
        200
    );
    let freed = register(&nodes[0], "cap", &format!("10.0.3.{refused_at}:80"));
    assert_eq!(freed.status, 201, "{}", freed.text());
    register(&nodes[1], "cap", "10.0.9.9:80").assert_error(403, "Failed to register instance");
}

#[test]
fn namespaces_that_differ_by_separators_never_see_each_other() {
    let redis = RedisServer::start(&[]);
    let a = node(&redis, &["--auth_mode", "trusted"]);
    let b = node(&redis, &["--auth_mode", "trusted"]);
    let tenants = ["a", "a:inst:b", "a*", "{a}", "a}", "a:s:6262"];
    for (i, tenant) in tenants.iter().enumerate() {
        let body = registration("svc", &format!("10.0.4.{i}:80"), "");
        let r = a.post_json_as(tenant, INSTANCES, &body);
        assert_eq!(r.status, 201, "{tenant}: {}", r.text());
    }
    for tenant in tenants {
        let auth = format!("Bearer {tenant}");
        let listing = b
            .request(
                "GET",
                "/api/v1/services/svc",
                &[("Authorization", &auth)],
                None,
            )
            .json();
        assert_eq!(
            listing["instances"].as_array().unwrap().len(),
            1,
            "{tenant} sees only its own: {listing}"
        );
        let all = b
            .request("GET", INSTANCES, &[("Authorization", &auth)], None)
            .json();
        assert_eq!(all["instances"].as_array().unwrap().len(), 1, "{tenant}");
    }
    // The original registry's keys are neither read nor touched.
    redis.command(&["SET", "reg:ns:a", "original"]).unwrap();
    let keys = redis.command(&["KEYS", "*"]).unwrap();
    assert!(keys.contains("reg:ns:a"));
    assert!(
        keys.lines()
            .filter(|l| !l.starts_with(['*', '$']))
            .all(|k| k.starts_with("a8r1:") || k == "reg:ns:a"),
        "{keys}"
    );
}

/// Asserts a request answers 503 with the contract's body within 2 s.
#[track_caller]
fn unavailable_quickly(server: &Server, method: &str, path: &str, body: Option<&str>) {
    let started = Instant::now();
    let headers: &[(&str, &str)] = if body.is_some() {
        &[("Content-Type", "application/json")]
    } else {
        &[]
    };
    let r = server.request(method, path, headers, body);
    let took = started.elapsed();
    r.assert_error(503, UNAVAILABLE);
    assert!(
        took < Duration::from_secs(2),
        "{method} {path} took {took:?}"
    );
}

fn store_component(server: &Server) -> (u16, Value) {
    let r = server.get("/uptime");
    (r.status, r.json()["STORE"].clone())
}

fn every_route_is_unavailable(server: &Server, id: &str) {
    unavailable_quickly(server, "GET", "/api/v1/services/web", None);
    unavailable_quickly(server, "GET", "/api/v1/services", None);
    unavailable_quickly(server, "GET", INSTANCES, None);
    unavailable_quickly(server, "PUT", &format!("{INSTANCES}/{id}/heartbeat"), None);
    unavailable_quickly(server, "DELETE", &format!("{INSTANCES}/{id}"), None);
    let body = registration("web", "10.0.5.9:80", "");
    unavailable_quickly(server, "POST", INSTANCES, Some(&body));
    unavailable_quickly(server, "GET", &format!("{E}/apps"), None);
    unavailable_quickly(server, "GET", &format!("{E}/apps/delta"), None);
    // Decided before the store is consulted: unchanged.
    let started = Instant::now();
    assert_eq!(server.get("/").status, 200);
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(server.get("/nowhere").status, 404);
    let invalid = server.post_json(INSTANCES, "{\"service_name\":\"\"}");
    assert_eq!(invalid.status, 400, "{}", invalid.text());
}

#[test]
fn redis_killed_stopped_and_restarted_answers_503_then_recovers() {
    let mut redis = RedisServer::start(&[]);
    let server = node(&redis, &[]);
    let r = register(&server, "web", "10.0.5.1:80");
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let (status, store) = store_component(&server);
    assert_eq!(status, 200, "{store}");
    assert_eq!(store["healthy"], true);
    assert_eq!(store["properties"]["type"], "redis");
    assert_eq!(store["properties"]["mode"], "standalone");
    assert_eq!(
        store["properties"]["address"],
        format!("127.0.0.1:{}", redis.port)
    );

    // Stopped: connections stay open and nothing answers.
    redis.signal(libc::SIGSTOP);
    every_route_is_unavailable(&server, &id);
    assert!(eventually(Duration::from_secs(3), || store_component(
        &server
    )
    .0 == 503));
    let (_, store) = store_component(&server);
    assert_eq!(store["healthy"], false);
    assert!(store["properties"]["message"].is_string(), "{store}");
    redis.signal(libc::SIGCONT);
    assert!(eventually(Duration::from_secs(3), || server
        .get("/api/v1/services/web")
        .status
        == 200));
    assert!(eventually(Duration::from_secs(3), || store_component(
        &server
    )
    .0 == 200));

    // Killed: connections are refused.
    redis.kill();
    every_route_is_unavailable(&server, &id);
    assert!(eventually(Duration::from_secs(3), || store_component(
        &server
    )
    .0 == 503));
    // Restarted empty: the node serves again without a restart, and what Redis lost stays lost.
    redis.restart();
    assert!(eventually(Duration::from_secs(3), || server
        .get("/api/v1/services")
        .status
        == 200));
    assert_eq!(
        server
            .request("PUT", &format!("{INSTANCES}/{id}/heartbeat"), &[], None)
            .status,
        410
    );
    assert!(
        ids(&server, "web").is_empty(),
        "nothing is re-created from memory"
    );
    assert_eq!(register(&server, "web", "10.0.5.1:80").status, 201);
    assert_eq!(ids(&server, "web"), [id]);
    assert!(eventually(Duration::from_secs(3), || store_component(
        &server
    )
    .0 == 200));
}

#[test]
fn redis_down_at_startup_is_not_fatal() {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let server = Server::start(&["--store", "redis", "--store_address", &address]);
    assert!(server
        .stderr()
        .iter()
        .any(|l| l.contains("level=warning") && l.contains("Redis")));
    every_route_is_unavailable(&server, "0123456789abcdef");
    let (status, store) = store_component(&server);
    assert_eq!(status, 503);
    assert_eq!(
        store["properties"]["message"], "connection refused",
        "{store}"
    );
    let _redis = RedisServer::start_on(port, &[]);
    assert!(eventually(Duration::from_secs(3), || register(
        &server,
        "late",
        "10.0.6.1:80"
    )
    .status
        == 201));
    assert_eq!(ids(&server, "late").len(), 1);
    assert!(eventually(Duration::from_secs(3), || store_component(
        &server
    )
    .0 == 200));
}

#[test]
fn credentials_and_databases_from_the_address() {
    let redis = RedisServer::start(&["--requirepass", "s3cr:t@"]);
    let url = format!("redis://:s3cr%3At%40@127.0.0.1:{}/2", redis.port);
    let server = Server::start(&["--store", "redis", "--store_address", &url]);
    assert_eq!(register(&server, "db2", "10.0.7.1:80").status, 201);
    let wrong = Server::start(&[
        "--store",
        "redis",
        "--store_address",
        &format!("127.0.0.1:{}", redis.port),
        "--store_password",
        "wrong",
    ]);
    wrong.get("/api/v1/services").assert_error(503, UNAVAILABLE);
    let right = Server::start(&[
        "--store",
        "redis",
        "--store_address",
        &format!("127.0.0.1:{}", redis.port),
        "--store_password",
        "s3cr:t@",
    ]);
    // Database 0 is another registry.
    assert!(ids(&right, "db2").is_empty());
    assert_eq!(ids(&server, "db2").len(), 1);
    for line in server.stderr().iter().chain(wrong.stderr().iter()) {
        assert!(!line.contains("s3cr"), "a password reached the log: {line}");
    }
    let (_, store) = store_component(&server);
    assert!(!store.to_string().contains("s3cr"), "{store}");
}

#[test]
fn store_options_are_checked_before_redis_is_contacted() {
    use a8registry_static_tests::run_to_exit;
    for (args, names) in [
        (
            vec!["--store", "redis", "--store_address", "a:1,b:2"],
            "--store_address (A8_STORE_ADDRESS)",
        ),
        (
            vec!["--store", "redis", "--store_address", "a:1,"],
            "--store_address (A8_STORE_ADDRESS)",
        ),
        (
            vec!["--store", "redis", "--store_address", "rediss://a:1"],
            "--store_address (A8_STORE_ADDRESS)",
        ),
        (
            vec!["--store", "redis", "--store_address", "redis://a:1/x"],
            "--store_address (A8_STORE_ADDRESS)",
        ),
        (
            vec![
                "--store",
                "redis",
                "--store_address",
                "a:1,b:1",
                "--store_cluster",
                "--store_sentinel",
                "m",
            ],
            "--store_sentinel (A8_STORE_SENTINEL)",
        ),
        (
            vec![
                "--store",
                "redis",
                "--store_address",
                "redis://a:1/1",
                "--store_cluster",
            ],
            "--store_address (A8_STORE_ADDRESS)",
        ),
        (
            vec!["--store_sentinel", "m"],
            "--store_sentinel (A8_STORE_SENTINEL)",
        ),
        (
            vec!["--store_cluster"],
            "--store_cluster (A8_STORE_CLUSTER)",
        ),
        (
            vec![
                "--store",
                "redis",
                "--store_address",
                "a:1",
                "--replication",
            ],
            "--replication (A8_REPLICATION)",
        ),
    ] {
        let (code, _, stderr) = run_to_exit(&args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(names), "{args:?}: {stderr}");
    }
    let (code, _, stderr) = run_to_exit(
        &[],
        &[
            ("A8_STORE", "redis"),
            ("A8_STORE_ADDRESS", "h:1"),
            ("A8_STORE_CLUSTER", "maybe"),
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("A8_STORE_CLUSTER"), "{stderr}");
    let (code, _, stderr) = run_to_exit(
        &[
            "--store",
            "redis",
            "--store_address",
            "redis://u:hidden@h:1/x",
        ],
        &[],
    );
    assert_eq!(code, Some(2));
    assert!(!stderr.contains("hidden"), "{stderr}");
}

#[test]
fn sentinel_failover_is_followed_within_ten_seconds() {
    use a8registry_static_tests::redis::TempDir;
    let dir = TempDir::new("sentinel");
    let mut master = RedisServer::start(&[]);
    let master_port = master.port.to_string();
    let replica = RedisServer::start(&["--replicaof", "127.0.0.1", &master_port]);
    let sentinels: Vec<RedisServer> = (0..3)
        .map(|_| RedisServer::sentinel(&dir.0, "reg", master.port))
        .collect();
    let addresses: Vec<String> = sentinels
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.port))
        .collect();
    let addresses = addresses.join(",");
    let server = Server::start(&[
        "--store",
        "redis",
        "--store_sentinel",
        "reg",
        "--store_address",
        &addresses,
    ]);
    let r = register(&server, "ha", "10.0.8.1:80");
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let (status, store) = store_component(&server);
    assert_eq!(status, 200, "{store}");
    assert_eq!(store["properties"]["mode"], "sentinel");
    assert_eq!(
        store["properties"]["master"],
        format!("127.0.0.1:{}", master.port)
    );
    // The replica has the registration before the master goes.
    assert!(eventually(Duration::from_secs(10), || master
        .command(&["WAIT", "1", "100"])
        .is_some_and(|r| r.contains(":1"))));
    assert!(eventually(Duration::from_secs(10), || sentinels
        .iter()
        .all(|s| s
            .command(&["SENTINEL", "replicas", "reg"])
            .is_some_and(|r| r.contains(&replica.port.to_string())))));

    master.kill();
    let promoted = format!("{}", replica.port);
    assert!(
        eventually(Duration::from_secs(30), || sentinels[0]
            .command(&["SENTINEL", "get-master-addr-by-name", "reg"])
            .is_some_and(|r| r.contains(&promoted))),
        "the Sentinels promote the replica"
    );
    let promoted_at = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || server
            .request("PUT", &format!("{INSTANCES}/{id}/heartbeat"), &[], None)
            .status
            == 200),
        "the node follows the new master within 10 s"
    );
    let followed = promoted_at.elapsed();
    assert!(followed < Duration::from_secs(10), "{followed:?}");
    assert!(eventually(Duration::from_secs(3), || {
        register(&server, "ha", "10.0.8.2:80").status == 201
    }));
    assert!(ids(&server, "ha").contains(&id));
    assert!(eventually(Duration::from_secs(3), || {
        let (status, store) = store_component(&server);
        status == 200 && store["properties"]["master"] == format!("127.0.0.1:{promoted}")
    }));
}

/// A three-master Redis Cluster made with `redis-cli --cluster create`, once its state is `ok`;
/// the directory holds the nodes' files and must outlive them.
fn three_master_cluster() -> (
    a8registry_static_tests::redis::TempDir,
    Vec<RedisServer>,
    Vec<String>,
) {
    use a8registry_static_tests::redis::TempDir;
    let dir = TempDir::new("cluster");
    let masters: Vec<RedisServer> = (0..3)
        .map(|i| {
            let sub = dir.0.join(format!("n{i}"));
            std::fs::create_dir_all(&sub).unwrap();
            let sub = sub.display().to_string();
            RedisServer::start(&[
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "2000",
                "--dir",
                &sub,
            ])
        })
        .collect();
    let seeds: Vec<String> = masters
        .iter()
        .map(|m| format!("127.0.0.1:{}", m.port))
        .collect();
    let created = std::process::Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&seeds)
        .arg("--cluster-yes")
        .output()
        .expect("redis-cli (apt-get install redis-tools)");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stdout)
    );
    assert!(eventually(Duration::from_secs(20), || masters.iter().all(
        |m| m
            .command(&["CLUSTER", "INFO"])
            .is_some_and(|r| r.contains("cluster_state:ok"))
    )));
    (dir, masters, seeds)
}

#[test]
fn a_three_master_cluster_serves_every_namespace_from_its_slot() {
    let (_dir, masters, seeds) = three_master_cluster();
    let a = Server::start(&[
        "--store",
        "redis",
        "--store_cluster",
        "--store_address",
        &seeds[0],
        "--auth_mode",
        "trusted",
    ]);
    let b = Server::start(&[
        "--store",
        "redis",
        "--store_cluster",
        "--store_address",
        &format!("{},{}", seeds[1], seeds[2]),
        "--auth_mode",
        "trusted",
    ]);
    let (status, store) = store_component(&a);
    assert_eq!(status, 200, "{store}");
    assert_eq!(store["properties"]["mode"], "cluster");
    let tenants: Vec<String> = (0..12).map(|i| format!("tenant-{i}")).collect();
    for tenant in &tenants {
        let body = registration("svc", "10.0.9.1:80", "");
        let r = a.post_json_as(tenant, INSTANCES, &body);
        assert_eq!(r.status, 201, "{tenant}: {}", r.text());
    }
    for tenant in &tenants {
        let auth = format!("Bearer {tenant}");
        let ok = eventually(Duration::from_secs(2), || {
            let r = b.request(
                "GET",
                "/api/v1/services/svc",
                &[("Authorization", &auth)],
                None,
            );
            r.status == 200 && r.json()["instances"].as_array().unwrap().len() == 1
        });
        assert!(ok, "{tenant} through the other node");
        let id = format!("{INSTANCES}/{}/heartbeat", {
            let r = b.request("GET", INSTANCES, &[("Authorization", &auth)], None);
            r.json()["instances"][0]["id"].as_str().unwrap().to_string()
        });
        assert_eq!(
            b.request("PUT", &id, &[("Authorization", &auth)], None)
                .status,
            200
        );
    }
    // The namespaces' keys are spread over the masters, each namespace in one slot.
    let holding = masters
        .iter()
        .filter(|m| m.command(&["DBSIZE"]).is_some_and(|r| r.trim() != ":0"))
        .count();
    assert!(holding >= 2, "namespaces spread over the masters");
    // Eureka deltas through either node agree.
    let delta = |n: &Server, tenant: &str| {
        let auth = format!("Bearer {tenant}");
        let r = n.request(
            "GET",
            &format!("{E}/apps/delta"),
            &[("Accept", "application/json"), ("Authorization", &auth)],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["applications"]["versions__delta"].clone()
    };
    assert_eq!(delta(&a, "tenant-3"), delta(&b, "tenant-3"));
}

/// Redis's count of the commands it has processed.
fn commands_processed(redis: &RedisServer) -> u64 {
    let info = redis.command(&["INFO", "stats"]).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("total_commands_processed in INFO stats")
}

#[test]
fn a_delta_merging_many_catalog_instances_asks_redis_a_few_commands_not_one_each() {
    use a8registry_static_tests::redis::TempDir;
    let redis = RedisServer::start(&[]);
    let dir = TempDir::new("catalog");
    let instances: Vec<Value> = (0..200)
        .map(|i| json!({"service_name":"cat","endpoint":{"type":"tcp","value":format!("10.9.0.{i}:80")}}))
        .collect();
    std::fs::write(
        dir.0.join("default.json"),
        json!({ "instances": instances }).to_string(),
    )
    .unwrap();
    let server = node(&redis, &["--fs_catalog", &dir.0.display().to_string()]);
    // A registration of a catalog instance's service and endpoint hides it.
    assert_eq!(register(&server, "cat", "10.9.0.0:80").status, 201);
    assert!(eventually(Duration::from_secs(5), || ids(&server, "cat")
        .len()
        == 200));

    let before = commands_processed(&redis);
    let delta = server.request(
        "GET",
        "/eureka/v2/apps/delta",
        &[("Accept", "application/json")],
        None,
    );
    assert_eq!(delta.status, 200, "{}", delta.text());
    // The hidden catalog instance is counted once, as the store's.
    assert_eq!(
        delta.json()["applications"]["apps__hashcode"],
        "UP_200_",
        "{}",
        delta.text()
    );
    // Asking for each catalog instance was over 1,200 (a script call and its companions each);
    // the delta's own commands and the housekeeping in between are a few dozen.
    let asked = commands_processed(&redis) - before;
    assert!(asked < 100, "{asked} Redis commands for one merged delta");
}

/// The text of the bulk strings of a raw RESP reply (one per line of the reply that is not a
/// length line).
fn bulk_strings(reply: &str) -> Vec<String> {
    reply
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.starts_with('*') && !l.starts_with('$'))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_namespace_is_served_throughout_the_migration_of_its_cluster_slot() {
    let (_dir, masters, seeds) = three_master_cluster();
    let node = Server::start(&[
        "--store",
        "redis",
        "--store_cluster",
        "--store_address",
        &seeds.join(","),
        "--auth_mode",
        "trusted",
    ]);
    let tenant = "migrating";
    let auth = format!("Bearer {tenant}");
    let register_one = |n: usize| -> Result<String, String> {
        let body = registration("svc", &format!("10.0.7.{}:80", n % 250), "");
        let r = node.post_json_as(tenant, INSTANCES, &body);
        if r.status != 201 {
            return Err(format!("registration {n}: {} {}", r.status, r.text()));
        }
        Ok(r.json()["id"].as_str().unwrap().to_string())
    };
    let mut registered: Vec<String> = (0..5).map(|n| register_one(n).unwrap()).collect();
    // Some Eureka traffic too, so the change log's keys exist in the slot.
    let eureka = node.request(
        "POST",
        &format!("{E}/apps/MIG"),
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &auth),
        ],
        Some(&eureka_instance("MIG", "mig-1")),
    );
    assert_eq!(eureka.status, 204, "{}", eureka.text());

    // The slot of the namespace and who holds it.
    let probe_key = "a8r1:{6d6967726174696e67}:i";
    let slot: String = bulk_strings(
        &masters[0]
            .command(&["CLUSTER", "KEYSLOT", probe_key])
            .unwrap(),
    )
    .concat()
    .trim_start_matches(':')
    .to_string();
    let count = |m: &RedisServer| {
        m.command(&["CLUSTER", "COUNTKEYSINSLOT", &slot])
            .and_then(|r| r.trim().trim_start_matches(':').parse::<u64>().ok())
            .unwrap_or(0)
    };
    let source = masters
        .iter()
        .position(|m| count(m) > 0)
        .expect("the slot's owner holds keys");
    let target = (source + 1) % masters.len();
    let id_of = |m: &RedisServer| bulk_strings(&m.command(&["CLUSTER", "MYID"]).unwrap()).concat();
    let (source_id, target_id) = (id_of(&masters[source]), id_of(&masters[target]));

    let stop = std::sync::atomic::AtomicBool::new(false);
    let failures = std::sync::Mutex::new(Vec::<String>::new());
    std::thread::scope(|scope| {
        let client = scope.spawn(|| {
            let mut n = registered.len();
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || rounds < 3 {
                rounds += 1;
                match register_one(n) {
                    Ok(id) => registered.push(id),
                    Err(e) => failures.lock().unwrap().push(e),
                }
                n += 1;
                for id in registered.iter().rev().take(3) {
                    let path = format!("{INSTANCES}/{id}/heartbeat");
                    let r = node.request("PUT", &path, &[("Authorization", &auth)], None);
                    if r.status != 200 {
                        failures.lock().unwrap().push(format!(
                            "heartbeat {id}: {} {}",
                            r.status,
                            r.text()
                        ));
                    }
                }
                let r = node.request(
                    "GET",
                    "/api/v1/services/svc",
                    &[("Authorization", &auth)],
                    None,
                );
                if r.status != 200 {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("listing: {} {}", r.status, r.text()));
                    continue;
                }
                let listed = a8registry_static_tests::ids_of(&r.json());
                let lost: Vec<&String> = registered
                    .iter()
                    .filter(|id| !listed.contains(id))
                    .collect();
                if !lost.is_empty() {
                    failures
                        .lock()
                        .unwrap()
                        .push(format!("listing lost {lost:?}"));
                }
            }
        });
        // The client stops whatever the migration does, so a failed step fails the test.
        let migration = || -> Result<usize, String> {
            std::thread::sleep(Duration::from_millis(200));
            let (from, to) = (&masters[source], &masters[target]);
            let ok = |reply: Option<String>, what: &str| match reply {
                Some(r) if r.contains("OK") => Ok(()),
                other => Err(format!("{what}: {other:?}")),
            };
            ok(
                to.command(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &source_id]),
                "IMPORTING",
            )?;
            ok(
                from.command(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &target_id]),
                "MIGRATING",
            )?;
            // Key by key, with the client working between the moves.
            let mut moved = 0;
            let port = to.port.to_string();
            while let Some(key) = bulk_strings(
                &from
                    .command(&["CLUSTER", "GETKEYSINSLOT", &slot, "1"])
                    .unwrap_or_default(),
            )
            .first()
            {
                let reply = from.command(&["MIGRATE", "127.0.0.1", &port, key, "0", "5000"]);
                ok(reply, &format!("MIGRATE {key}"))?;
                moved += 1;
                if moved > 1000 {
                    return Err("the slot keeps keys".into());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            for m in [to, from].into_iter().chain(masters.iter()) {
                m.command(&["CLUSTER", "SETSLOT", &slot, "NODE", &target_id]);
            }
            std::thread::sleep(Duration::from_millis(300));
            Ok(moved)
        };
        let migrated = migration();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        client.join().unwrap();
        let moved = migrated.unwrap();
        assert!(
            moved >= 5,
            "the namespace's keys moved one by one ({moved})"
        );
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} failures: {failures:?}",
        failures.len()
    );
    assert_eq!(count(&masters[source]), 0);
    assert!(count(&masters[target]) > 0);
    let r = node.request(
        "GET",
        "/api/v1/services/svc",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(r.status, 200);
    let mut expected = registered.clone();
    expected.sort();
    assert_eq!(
        a8registry_static_tests::ids_of(&r.json()),
        expected,
        "nothing lost"
    );
}

fn listing(server: &Server, path: &str) -> Response {
    server.request("GET", path, &[], None)
}

#[test]
fn after_redis_restarts_other_nodes_changes_wake_watchers_and_no_cached_body_is_stale() {
    let mut redis = RedisServer::start(&[]);
    let a = node(&redis, &[]);
    let b = node(&redis, &[]);
    let first = register(&a, "web", "10.0.6.1:80").json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // b has answered (and may cache) the listing with the first instance.
    assert!(eventually(Duration::from_secs(2), || ids(&b, "web") == [first.clone()]));
    assert_eq!(ids(&b, "web"), [first.as_str()]);

    redis.restart();
    // Redis lost everything: once b answers again, it never serves the old body.
    assert!(eventually(Duration::from_secs(3), || {
        let r = listing(&b, "/api/v1/services/web");
        assert!(
            r.status == 503 || !r.text().contains(&first),
            "a stale body after the restart: {} {}",
            r.status,
            r.text()
        );
        r.status == 404
    }));
    let second = register(&a, "web", "10.0.6.2:80");
    assert_eq!(second.status, 201, "{}", second.text());
    let second = second.json()["id"].as_str().unwrap().to_string();
    assert!(eventually(Duration::from_millis(1000), || ids(&b, "web")
        == [second.clone()]));

    // A watcher on b is woken by a change made through a.
    let r = listing(&b, "/api/v1/services/web");
    let index: u64 = r.header("x-a8-index").expect("X-A8-Index").parse().unwrap();
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let started = Instant::now();
            let r = listing(&b, &format!("/api/v1/services/web?index={index}&wait=60s"));
            (started.elapsed(), r)
        });
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(register(&a, "web", "10.0.6.3:80").status, 201);
        let (waited, r) = watcher.join().unwrap();
        assert!(
            waited < Duration::from_secs(5),
            "the watcher was not woken ({waited:?})"
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(
            a8registry_static_tests::ids_of(&r.json()).len(),
            2,
            "{}",
            r.text()
        );
    });
}

/// The value of the series `name` in `GET /metrics`.
fn metric(server: &Server, name: &str) -> Option<f64> {
    let r = server.get("/metrics");
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn with_redis_stopped_probes_metrics_and_new_watches_answer_within_their_deadlines() {
    let redis = RedisServer::start(&[]);
    let server = node(&redis, &[]);
    assert_eq!(register(&server, "web", "10.0.0.1:80").status, 201);
    let r = server.get(INSTANCES);
    assert_eq!(r.status, 200);
    let index: u64 = r.header("x-a8-index").unwrap().parse().unwrap();

    // Stopped (SIGSTOP): connections stay open and nothing answers.
    redis.signal(libc::SIGSTOP);
    let timed = |path: &str| {
        let started = Instant::now();
        let r = server.get(path);
        (r, started.elapsed())
    };
    let (r, took) = timed("/");
    assert_eq!(r.status, 200, "liveness does not ask Redis");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(eventually(Duration::from_secs(10), || {
        let (r, took) = timed("/ready");
        assert!(took < Duration::from_secs(5), "/ready took {took:?}");
        r.status == 503
    }));
    let (r, took) = timed("/metrics");
    assert_eq!(r.status, 200);
    assert!(took < Duration::from_secs(5), "/metrics took {took:?}");
    // Concurrent scrapes share one failed count instead of taking turns at their deadlines.
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                let (r, took) = timed("/metrics");
                assert_eq!(r.status, 200);
                assert!(
                    took < Duration::from_secs(5),
                    "a concurrent scrape took {took:?}"
                );
            });
        }
    });
    assert!(
        r.text().contains("a8registry_store_up{store=\"redis\"} 0"),
        "{}",
        r.text()
    );
    // A watch begun while the store is known to be down is answered within seconds, not held for
    // its wait.
    let (r, took) = timed(&format!("{INSTANCES}?index={index}&wait=60s"));
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(took < Duration::from_secs(20), "the watch took {took:?}");

    redis.signal(libc::SIGCONT);
    assert!(eventually(Duration::from_secs(10), || server
        .get("/ready")
        .status
        == 200));
    let (r, took) = timed(&format!("{INSTANCES}?index={index}&wait=1s"));
    assert_eq!(r.status, 200);
    assert!(
        took >= Duration::from_secs(1),
        "waits again once Redis answers"
    );
}

#[test]
fn concurrent_metrics_scrapes_share_one_count_of_redis() {
    let redis = RedisServer::start(&[]);
    let server = node(&redis, &[]);
    assert_eq!(register(&server, "web", "10.0.0.1:80").status, 201);
    let calls = |redis: &RedisServer| -> u64 {
        let stats = redis.command(&["INFO", "commandstats"]).unwrap_or_default();
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_smembers:calls="))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let before = calls(&redis);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..5 {
                    assert_eq!(server.get("/metrics").status, 200);
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs() + 1;
    let counted = calls(&redis) - before;
    assert!(
        counted <= seconds + 1,
        "40 scrapes in {seconds} s made {counted} counts"
    );
}

#[test]
fn ready_and_the_store_metrics_follow_redis_going_down_and_coming_back() {
    let mut redis = RedisServer::start(&[]);
    let server = node(&redis, &[]);
    let up = "a8registry_store_up{store=\"redis\"}";
    let errors = "a8registry_store_errors_total{store=\"redis\"}";
    assert!(eventually(Duration::from_secs(3), || server
        .get("/ready")
        .status
        == 200));
    assert!(eventually(Duration::from_secs(3), || metric(&server, up) == Some(1.0)));
    let errors_before = metric(&server, errors).unwrap_or(0.0);

    redis.kill();
    assert_eq!(listing(&server, "/api/v1/services").status, 503);
    assert!(eventually(Duration::from_secs(3), || {
        let r = server.get("/ready");
        r.status == 503
            && r.json()["waiting"]
                .as_array()
                .is_some_and(|w| w.contains(&json!("store")))
    }));
    assert!(eventually(Duration::from_secs(3), || metric(&server, up) == Some(0.0)));
    assert_eq!(
        metric(&server, "a8registry_namespaces"),
        None,
        "counts the store cannot give are left out, not reported as 0"
    );
    assert!(
        metric(&server, errors).unwrap_or(0.0) > errors_before,
        "failed calls are counted"
    );

    redis.restart();
    assert!(eventually(Duration::from_secs(3), || server
        .get("/ready")
        .status
        == 200));
    assert!(eventually(Duration::from_secs(3), || metric(&server, up) == Some(1.0)));
    assert_eq!(listing(&server, "/api/v1/services").status, 200);
}

/// The `X-A8-Index` of `GET /api/v1/services` through `server`.
fn index_through(server: &Server) -> u64 {
    let r = server.get("/api/v1/services");
    assert_eq!(r.status, 200, "{}", r.text());
    r.header("x-a8-index")
        .expect("X-A8-Index")
        .parse()
        .expect("a decimal index")
}

/// Every node's index, once they all agree (within two seconds); panics if they never do.
fn agreed_index(nodes: &[&Server]) -> u64 {
    let mut seen = Vec::new();
    let agreed = eventually(Duration::from_secs(2), || {
        seen = nodes.iter().map(|n| index_through(n)).collect();
        seen.iter().all(|&i| i == seen[0])
    });
    assert!(agreed, "the nodes' indexes differ: {seen:?}");
    seen[0]
}

#[test]
fn every_node_gives_redis_s_change_index_and_it_never_goes_back() {
    let mut redis = RedisServer::start(&[]);
    let a = node(&redis, &[]);
    let b = node(&redis, &[]);
    let before = agreed_index(&[&a, &b]);

    let r = register(&a, "web", "10.0.7.1:80");
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let registered = index_through(&a);
    assert!(registered > before, "{registered} after {before}");
    assert_eq!(agreed_index(&[&a, &b]), registered);
    // A node started now has heard of no change: it reads the index from Redis.
    let c = node(&redis, &[]);
    assert_eq!(
        index_through(&c),
        registered,
        "a new node reads Redis's index"
    );

    // A heartbeat moves no index; a change through any node moves every node's.
    let heartbeat = format!("{INSTANCES}/{id}/heartbeat");
    assert_eq!(b.request("PUT", &heartbeat, &[], None).status, 200);
    assert_eq!(agreed_index(&[&a, &b, &c]), registered);
    let r = b.post_json(INSTANCES, &registration("api", "10.0.7.2:80", ""));
    assert_eq!(r.status, 201, "{}", r.text());
    let second = agreed_index(&[&a, &b, &c]);
    assert!(second > registered);
    // The index of one service's answer is the namespace's too.
    let r = c.get("/api/v1/services/web");
    assert_eq!(r.header("x-a8-index"), Some(second.to_string().as_str()));

    // Redis loses everything (no persistence): the index starts again above every value it had,
    // on every node, including one that never saw the old values.
    redis.restart();
    let mut again = String::new();
    assert!(eventually(Duration::from_secs(5), || {
        let r = register(&a, "web", "10.0.7.3:80");
        if r.status == 201 {
            again = r.json()["id"].as_str().unwrap().to_string();
        }
        r.status == 201
    }));
    let d = node(&redis, &[]);
    let after = agreed_index(&[&a, &b, &c, &d]);
    assert!(after > second, "went back from {second} to {after}");

    // The index key never expires while its namespace holds instances (heartbeats alone do not
    // renew it, and a node started a day later must still read it); it expires once it empties.
    let key = redis
        .command(&["KEYS", "a8r1:{*}:ix"])
        .expect("the index key");
    let key = key
        .lines()
        .find(|l| l.starts_with("a8r1:"))
        .unwrap_or_else(|| panic!("no index key in {key:?}"))
        .to_string();
    let ttl = |redis: &RedisServer| -> i64 {
        redis
            .command(&["PTTL", &key])
            .and_then(|t| t.trim().trim_start_matches(':').parse().ok())
            .expect("PTTL")
    };
    assert_eq!(
        ttl(&redis),
        -1,
        "no expiry while the namespace holds an instance"
    );
    let r = a.request("DELETE", &format!("{INSTANCES}/{again}"), &[], None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(agreed_index(&[&a, &b, &c, &d]) > after);
    let left = ttl(&redis);
    assert!(
        left > 0,
        "the index key expires with an empty namespace: {left}"
    );
}

#[test]
fn a_catalog_change_on_one_node_moves_redis_s_index_and_wakes_the_other_nodes_watchers() {
    use a8registry_static_tests::redis::TempDir;
    let redis = RedisServer::start(&[]);
    let dir = TempDir::new("catalog");
    let path = dir.0.display().to_string();
    let a = node(&redis, &["--fs_catalog", &path, "--catalog_poll", "100ms"]);
    let b = node(&redis, &[]);
    assert_eq!(register(&a, "web", "10.0.8.1:80").status, 201);
    let before = agreed_index(&[&a, &b]);
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let started = Instant::now();
            let r = b.get(&format!("/api/v1/services?index={before}&wait=60s"));
            (started.elapsed(), r)
        });
        std::thread::sleep(Duration::from_millis(300));
        let instances = json!({"instances": [
            {"service_name": "cat", "endpoint": {"type": "tcp", "value": "10.9.1.1:80"}}
        ]});
        std::fs::write(dir.0.join("default.json"), instances.to_string()).unwrap();
        let (waited, r) = watcher.join().unwrap();
        assert!(
            waited < Duration::from_secs(10),
            "b's watcher was not woken by a's catalog ({waited:?})"
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let woken: u64 = r.header("x-a8-index").unwrap().parse().unwrap();
        assert!(woken > before, "{woken} after {before}");
    });
    assert!(eventually(Duration::from_secs(5), || ids(&a, "cat").len() == 1));
    let after = agreed_index(&[&a, &b]);
    assert!(after > before);
}

#[test]
fn a_watcher_whose_change_went_unheard_is_woken_once_the_change_channel_is_back() {
    let mut redis = RedisServer::start(&[]);
    let a = node(&redis, &[]);
    let b = node(&redis, &[]);
    assert_eq!(register(&a, "web", "10.0.9.1:80").status, 201);
    let before = agreed_index(&[&a, &b]);
    std::thread::scope(|scope| {
        let watcher = scope.spawn(|| b.get(&format!("/api/v1/services?index={before}&wait=60s")));
        std::thread::sleep(Duration::from_millis(300));
        // b is frozen while Redis restarts and a registers: b's subscription cannot hear the
        // registration's message; its watcher's connection stays open.
        b.signal(libc::SIGSTOP);
        redis.restart();
        let registered = eventually(Duration::from_secs(5), || {
            register(&a, "api", "10.0.9.2:80").status == 201
        });
        b.signal(libc::SIGCONT);
        assert!(registered, "a registers once Redis is back");
        let resumed = Instant::now();
        let r = watcher.join().unwrap();
        let waited = resumed.elapsed();
        assert!(
            waited < Duration::from_secs(10),
            "b's watcher slept through the change it missed ({waited:?})"
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["services"], json!(["api"]), "{}", r.text());
        let woken: u64 = r.header("x-a8-index").unwrap().parse().unwrap();
        assert!(woken > before, "{woken} after {before}");
    });
}

#[test]
fn ready_and_metrics_answer_within_their_deadline_with_forty_thousand_namespaces() {
    let redis = RedisServer::start(&[]);
    let server = node(&redis, &[]);
    assert_eq!(register(&server, "web", "10.0.10.1:80").status, 201);
    // 40,000 more namespaces listed as holding instances. One script call each passed the
    // deadline (/ready answered 503 and /metrics reported the store down): /ready now only asks
    // whether Redis answers, and /metrics counts with two plain commands per namespace.
    // In four calls, each well within the harness's read timeout.
    for first in [1, 10_001, 20_001, 30_001] {
        let (first, last) = (first.to_string(), (first + 9_999).to_string());
        let seeded = redis.command(&[
            "EVAL",
            "for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do \
               local name = 'ns-' .. i \
               local hexed = (name:gsub('.', function(c) return string.format('%02x', c:byte()) end)) \
               redis.call('SADD', KEYS[1], hexed) \
             end \
             return redis.call('SCARD', KEYS[1])",
            "1",
            "a8r1:live",
            &first,
            &last,
        ]);
        assert!(
            seeded.is_some_and(|r| r.contains(':')),
            "seeding {first}..{last}"
        );
    }
    assert!(redis
        .command(&["SCARD", "a8r1:live"])
        .is_some_and(|r| r.contains("40001")));
    let r = server.get("/ready");
    assert_eq!(r.status, 200, "{}", r.text());
    let up = "a8registry_store_up{store=\"redis\"}";
    assert_eq!(metric(&server, up), Some(1.0));
    assert_eq!(
        metric(&server, "a8registry_instances{namespace=\"default\"}"),
        Some(1.0)
    );
}
