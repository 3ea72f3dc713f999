//! What one client must not be able to do to everyone else: make the server spend whole-namespace
//! work on small requests, rebuild large bodies for every reader, keep a change log without
//! bound, pay for idle namespaces, or see delta hash codes that its deltas cannot explain.
//!
//! Costs are measured as the server's CPU time (from /proc) over many requests, with bounds far
//! above what the indexed paths need and far below what a scan of the namespace costs, so the
//! tests tell the two apart without timing anything.

use a8registry_static_tests::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const JSON_ACCEPT: (&str, &str) = ("Accept", "application/json");

/// CPU time (user + system) the process used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// Resident memory of the process, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A Eureka instance of `app` with this id, VIP and status, with `filler` bytes of home page URL
/// (a field without a limit of its own, bounded by the body limit).
fn eureka_instance(app: &str, id: &str, vip: &str, status: &str, filler: usize) -> String {
    json!({"instance":{"instanceId":id,"hostName":format!("{id}.host"),"app":app,"ipAddr":"10.0.0.1","status":status,"port":{"$":80,"@enabled":"true"},"vipAddress":vip,"homePageUrl":"h".repeat(filler),"dataCenterInfo":{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"}}}).to_string()
}

/// Sends every request on one keep-alive connection, pipelined in batches, and reads every
/// answer; returns the statuses.
fn pipelined(server: &Server, requests: &[String]) -> Vec<u16> {
    let mut conn = server.connect();
    let mut statuses = Vec::with_capacity(requests.len());
    for batch in requests.chunks(64) {
        let mut bytes = Vec::new();
        for request in batch {
            bytes.extend_from_slice(request.as_bytes());
        }
        conn.write_all(&bytes).unwrap();
        for _ in batch {
            statuses.push(read_response(&mut conn, false).expect("answer").status);
        }
    }
    statuses
}

/// Registers `count` Eureka instances of app `APP` (ids `i0`.., VIPs `vip0`..`vip99`).
fn fill_with_eureka_instances(server: &Server, count: usize) {
    let requests: Vec<String> = (0..count)
        .map(|i| {
            let body =
                eureka_instance("APP", &format!("i{i}"), &format!("vip{}", i % 100), "UP", 0);
            raw_request("POST", "/eureka/v2/apps/APP", &[], &body)
        })
        .collect();
    let statuses = pipelined(server, &requests);
    assert!(statuses.iter().all(|s| *s == 204), "registered");
}

#[test]
fn small_eureka_reads_do_not_scan_the_namespace() {
    let server = Server::start(&[]);
    fill_with_eureka_instances(&server, 50_000);
    let amalgam8_id = server
        .post_json("/api/v1/instances", &registration("a8", "x:1", ""))
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let by_id = server.request("GET", "/eureka/v2/instances/i777", &[JSON_ACCEPT], None);
    assert_eq!(by_id.status, 200);
    assert_eq!(by_id.json()["instance"]["instanceId"], "i777");
    let vip = server
        .request("GET", "/eureka/v2/vips/vip7", &[JSON_ACCEPT], None)
        .json();
    let vip_count: usize = vip["applications"]["application"][0]["instance"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(vip_count, 500);
    let listing = server
        .get(&format!("/api/v1/instances?id={amalgam8_id}"))
        .json();
    assert_eq!(instance_count(&listing), 1);

    // A scan of 50,000 instances costs milliseconds per request; these must cost microseconds.
    let mut requests = Vec::new();
    for i in 0..300 {
        requests.push(raw_request(
            "GET",
            &format!("/eureka/v2/instances/i{i}"),
            &[],
            "",
        ));
        requests.push(raw_request("GET", "/eureka/v2/svips/none", &[], ""));
        requests.push(raw_request(
            "GET",
            &format!("/api/v1/instances?id={amalgam8_id}"),
            &[],
            "",
        ));
    }
    let before = cpu_time(server.pid());
    let statuses = pipelined(&server, &requests);
    let spent = cpu_time(server.pid()) - before;
    println!("900 small reads at 50,000 instances cost {spent:?} of CPU");
    assert!(statuses.iter().all(|s| *s == 200));
    assert!(
        spent < Duration::from_millis(600),
        "900 small reads cost {spent:?} of CPU"
    );
}

/// The CPU time the server spends on `requests`, sent at once from one thread each.
fn cpu_of_concurrent(server: &Server, requests: usize, path: &str) -> Duration {
    let address = server.address;
    let path = path.to_string();
    let before = cpu_time(server.pid());
    let readers: Vec<_> = (0..requests)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut conn = connect(address);
                send(&mut conn, "HEAD", &path, &[], None);
                let answer = read_response(&mut conn, true).expect("answer");
                assert_eq!(answer.status, 200);
            })
        })
        .collect();
    for reader in readers {
        reader.join().unwrap();
    }
    cpu_time(server.pid()) - before
}

#[test]
fn large_bodies_are_built_once_until_something_changes() {
    // Eight workers, so that eight builds could run at once if nothing stopped them.
    let server = Server::start(&["--workers", "8"]);
    fill_with_eureka_instances(&server, 20_000);
    let change = || {
        let body = eureka_instance("OTHER", "o", "o", "UP", 0);
        assert_eq!(server.post_json("/eureka/v2/apps/OTHER", &body).status, 204);
    };
    // HEAD answers carry no body, so what they cost is building it.
    for path in ["/eureka/v2/apps", "/eureka/v2/apps/delta"] {
        change();
        let one_build = cpu_of_concurrent(&server, 1, path);
        change();
        let sixteen = cpu_of_concurrent(&server, 16, path);
        println!("{path}: one build {one_build:?}, 16 concurrent reads {sixteen:?}");
        assert!(
            sixteen < one_build * 3 + Duration::from_millis(50),
            "{path}: 16 concurrent reads cost {sixteen:?}; one build costs {one_build:?}"
        );
    }
    // Polls of the delta with no change in between are answered from the cache.
    change();
    let one_build = cpu_of_concurrent(&server, 1, "/eureka/v2/apps/delta");
    let before = cpu_time(server.pid());
    for _ in 0..30 {
        let poll = server.request("HEAD", "/eureka/v2/apps/delta", &[], None);
        assert_eq!(poll.status, 200);
    }
    let thirty = cpu_time(server.pid()) - before;
    println!("delta: one build {one_build:?}, 30 polls {thirty:?}");
    assert!(
        thirty < one_build * 3 + Duration::from_millis(50),
        "30 delta polls cost {thirty:?}; one build costs {one_build:?}"
    );
}

#[test]
fn eureka_deltas_never_mismatch_under_churn() {
    let server = Server::start(&[]);
    for i in 0..200 {
        let body = eureka_instance("CHURN", &format!("c{i}"), "churn", "UP", 0);
        assert_eq!(server.post_json("/eureka/v2/apps/CHURN", &body).status, 204);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let address = server.address;
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut conn = connect(address);
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let id = format!("c{}", (n * 3 + w) % 200);
                    let (method, path, body) = match n % 3 {
                        0 => ("DELETE", format!("/eureka/v2/apps/CHURN/{id}"), None),
                        1 => {
                            let body = eureka_instance("CHURN", &id, "churn", "UP", 0);
                            ("POST", "/eureka/v2/apps/CHURN".to_string(), Some(body))
                        }
                        _ => (
                            "PUT",
                            format!("/eureka/v2/apps/CHURN/{id}/status?value=DOWN"),
                            None,
                        ),
                    };
                    let headers: &[(&str, &str)] = match body {
                        Some(_) => &[("Content-Type", "application/json")],
                        None => &[],
                    };
                    send(&mut conn, method, &path, headers, body.as_deref());
                    read_response(&mut conn, false).expect("answer");
                    n += 1;
                }
                n
            })
        })
        .collect();

    // A Netflix-style client: one full fetch, then deltas applied to its copy.
    let fetch = |path: &str| server.request("GET", path, &[JSON_ACCEPT], None).json();
    let mut copy: BTreeMap<String, String> = BTreeMap::new();
    for (id, status) in instances_of(&fetch("/eureka/v2/apps")) {
        copy.insert(id, status.0);
    }
    let mut checked = 0;
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        let delta = fetch("/eureka/v2/apps/delta");
        for (id, (status, action)) in instances_of(&delta) {
            if action == "DELETED" {
                copy.remove(&id);
            } else {
                copy.insert(id, status);
            }
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for status in copy.values() {
            *counts.entry(status).or_default() += 1;
        }
        let local: String = counts.iter().map(|(s, n)| format!("{s}_{n}_")).collect();
        assert_eq!(
            local,
            delta["applications"]["apps__hashcode"].as_str().unwrap(),
            "delta {checked} disagrees with its own hash code"
        );
        checked += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let changes: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(
        checked > 20 && changes > 1_000,
        "{checked} deltas, {changes} changes"
    );
}

/// (id, (status, actionType)) of every instance of an application list.
fn instances_of(applications: &Value) -> Vec<(String, (String, String))> {
    let mut out = Vec::new();
    for app in applications["applications"]["application"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for i in app["instance"].as_array().unwrap() {
            out.push((
                i["instanceId"].as_str().unwrap().to_string(),
                (
                    i["status"].as_str().unwrap().to_string(),
                    i["actionType"].as_str().unwrap_or("").to_string(),
                ),
            ));
        }
    }
    out
}

#[test]
fn the_change_log_is_bounded_in_bytes_across_namespaces() {
    let server = Server::start(&["--auth_mode", "trusted", "--namespace_capacity", "10"]);
    let start_rss = rss_bytes(server.pid());
    // 600 tenants each register one 400 KB instance and cancel it: 240 MB if the change log
    // kept every entry for its three minutes.
    let filler = 400 * 1024;
    for batch in 0..6 {
        let mut requests = Vec::new();
        for t in 0..100 {
            let token = format!("Bearer tenant{batch}x{t}");
            let body = eureka_instance("BIG", "b", "big", "UP", filler);
            let auth = [("Authorization", token.as_str())];
            requests.push(raw_request("POST", "/eureka/v2/apps/BIG", &auth, &body));
            requests.push(raw_request("DELETE", "/eureka/v2/apps/BIG/b", &auth, ""));
        }
        let statuses = pipelined(&server, &requests);
        assert!(
            statuses.iter().all(|s| *s == 204 || *s == 200),
            "{statuses:?}"
        );
    }
    let grown = rss_bytes(server.pid()).saturating_sub(start_rss);
    println!(
        "RSS grew by {} MiB after 600 tenants cycled a 400 KB instance",
        grown >> 20
    );
    assert!(
        grown < 140 * 1024 * 1024,
        "RSS grew by {} MiB with no live instance",
        grown >> 20
    );
    // The most recent changes are still there for a client of the last tenant.
    let last = server.request(
        "GET",
        "/eureka/v2/apps/delta",
        &[JSON_ACCEPT, ("Authorization", "Bearer tenant5x99")],
        None,
    );
    let entries = instances_of(&last.json());
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].1 .1, "DELETED");
}

#[test]
fn idle_namespaces_cost_no_cpu_and_little_memory() {
    // The in-memory store on either suite run: what is measured is its shards and reaper. (On
    // Redis the housekeeping pass asks Redis about every namespace every 30 s.)
    let server = Server::start(&["--auth_mode", "trusted", "--store", "inmem"]);
    // 50,000 tenants with one long-lived instance each.
    let requests: Vec<String> = (0..50_000)
        .map(|t| {
            let token = format!("Bearer t{t}");
            let body = registration("s", "h:1", "\"ttl\":600");
            raw_request(
                "POST",
                "/api/v1/instances",
                &[("Authorization", token.as_str())],
                &body,
            )
        })
        .collect();
    let statuses = pipelined(&server, &requests);
    assert!(statuses.iter().all(|s| *s == 201));
    std::thread::sleep(Duration::from_millis(500));
    let before = cpu_time(server.pid());
    std::thread::sleep(Duration::from_secs(3));
    let idle = cpu_time(server.pid()) - before;
    println!("3 idle seconds with 50,000 namespaces cost {idle:?} of CPU");
    assert!(
        idle < Duration::from_millis(100),
        "3 idle seconds cost {idle:?} of CPU"
    );
    let rss = rss_bytes(server.pid());
    println!(
        "RSS with 50,000 namespaces of one instance: {} MiB",
        rss >> 20
    );
    // About 2.3 KiB a namespace with its instance; 16 shards made up front cost 3.4 KiB or more.
    assert!(rss < 150 * 1024 * 1024, "{} MiB", rss >> 20);
}
