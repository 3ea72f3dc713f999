//! `GET /uptime` (spec 5.2), `GET /ready` and `GET /metrics` (observability contract §3, §2);
//! `GET /` is answered in `mod.rs` with an empty 200.

use super::Api;
use crate::http::response::Response;
use crate::metrics::{self, Exposition};
use crate::registry::domain::StoreCount;
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The load averages of the last 1, 5 and 15 minutes, or zeros where the OS does not tell.
fn load_averages() -> [f64; 3] {
    let mut loads = [0f64; 3];
    // SAFETY: getloadavg writes at most `nelem` (3) doubles into the array we pass.
    let filled = unsafe { libc::getloadavg(loads.as_mut_ptr(), 3) };
    if filled < 3 {
        return [0.0; 3];
    }
    loads
}

/// A catalog source in the error state this long without interruption makes `CATALOGS`
/// unhealthy (catalogs contract §7).
const CATALOG_UNHEALTHY_AFTER: Duration = Duration::from_secs(600);

/// A duration in Go's form, to the second (`12m3s`).
fn whole_seconds(duration: Duration) -> String {
    crate::config::format_go_duration(Duration::from_secs(duration.as_secs()))
}

/// The health report: the `UPTIME` component, always healthy, and `CATALOGS` when a catalog is
/// configured.
pub fn uptime(api: &Api) -> Response {
    let [load_1m, load_5m, load_15m] = load_averages();
    let mut properties = Map::new();
    properties.insert("build_date".into(), "0001-01-01T00:00:00Z".into());
    properties.insert("build_goversion".into(), "unknown".into());
    properties.insert(
        "build_revision".into(),
        option_env!("A8_BUILD_REVISION").unwrap_or("unknown").into(),
    );
    properties.insert("build_version".into(), env!("CARGO_PKG_VERSION").into());
    properties.insert("load_15m".into(), json!(load_15m));
    properties.insert("load_1m".into(), json!(load_1m));
    properties.insert("load_5m".into(), json!(load_5m));
    properties.insert(
        "uptime".into(),
        crate::config::format_go_duration(api.started.elapsed()).into(),
    );
    let mut components = Map::new();
    components.insert(
        "UPTIME".into(),
        json!({ "healthy": true, "properties": Value::Object(properties) }),
    );
    let mut status = 200;
    let reports = api.catalogs().reports();
    if !reports.is_empty() {
        let failing: Vec<String> = reports
            .iter()
            .filter_map(|r| {
                r.failing_for
                    .filter(|d| *d > CATALOG_UNHEALTHY_AFTER)
                    .map(|d| format!("{} in error for {}", r.name, whole_seconds(d)))
            })
            .collect();
        let mut sources = Map::new();
        for report in reports {
            sources.insert(report.name.into(), report.properties);
        }
        let mut catalogs = Map::new();
        catalogs.insert("healthy".into(), failing.is_empty().into());
        if !failing.is_empty() {
            catalogs.insert("message".into(), failing.join(", ").into());
            status = 503;
        }
        catalogs.insert("properties".into(), Value::Object(sources));
        components.insert("CATALOGS".into(), Value::Object(catalogs));
    }
    if let Some(extra) = api.health.get() {
        for (name, healthy, properties) in extra() {
            if !healthy {
                status = 503;
            }
            components.insert(
                name.into(),
                json!({ "healthy": healthy, "properties": properties }),
            );
        }
    }
    Response::json(status, Value::Object(components).to_string().into_bytes())
}

/// The readiness probe: 200 when the registry can answer reads and writes, else 503 naming what
/// it waits for: the store (Redis unreachable) and, with replication, the initial sync. The API
/// opens only once the sync has ended, so in practice `sync` is never named; the check keeps
/// `/ready` true to its contract even if that order changes.
pub fn ready(api: &Api) -> Response {
    let mut waiting: Vec<&str> = Vec::new();
    if !api.registry.store_answers() {
        waiting.push("store");
    }
    if api.synced.get().is_some_and(|ended| !ended()) {
        waiting.push("sync");
    }
    if waiting.is_empty() {
        return Response::json(200, br#"{"ready":true}"#.to_vec());
    }
    let body = json!({ "ready": false, "waiting": waiting });
    Response::json(503, body.to_string().into_bytes())
}

/// The Prometheus exposition of the process; the replication series with replication on, the
/// catalog series with a catalog configured.
pub fn metrics(api: &Api) -> Response {
    let mut out = Exposition::default();
    api.http_metrics.expose(&mut out);
    let counts = api.registry.instance_counts();
    let store_up = counts.is_ok();
    // Counts the store cannot give are left out, not reported as zeros.
    if let Ok(counts) = counts {
        metrics::expose_instances(&mut out, counts);
    }
    for (name, what, help) in [
        (
            "a8registry_registrations_total",
            StoreCount::Registrations,
            "Registrations the store accepted.",
        ),
        (
            "a8registry_deregistrations_total",
            StoreCount::Deregistrations,
            "Deregistrations the store accepted.",
        ),
        (
            "a8registry_expirations_total",
            StoreCount::Expirations,
            "Instances removed because their TTL ran out.",
        ),
        (
            "a8registry_heartbeats_total",
            StoreCount::Heartbeats,
            "Heartbeats (lease renewals) the store accepted.",
        ),
    ] {
        out.family(name, "counter", help);
        out.sample(name, &[], api.registry.count(what) as f64);
    }
    out.family(
        "a8registry_watchers",
        "gauge",
        "Requests waiting in a blocking query.",
    );
    out.sample(
        "a8registry_watchers",
        &[],
        api.watchers.load(Ordering::SeqCst) as f64,
    );
    out.family(
        "a8registry_connections",
        "gauge",
        "Open client connections.",
    );
    out.sample("a8registry_connections", &[], api.open_connections() as f64);
    let store = [("store", api.registry.store_name())];
    out.family(
        "a8registry_store_up",
        "gauge",
        "1 when the store answers, else 0.",
    );
    out.sample("a8registry_store_up", &store, f64::from(u8::from(store_up)));
    out.family(
        "a8registry_store_errors_total",
        "counter",
        "Store backend calls that failed.",
    );
    out.sample(
        "a8registry_store_errors_total",
        &store,
        api.registry.count(StoreCount::Errors) as f64,
    );
    if let Some(peers) = api.peers.get() {
        metrics::expose_peers(&mut out, &peers());
    }
    let catalogs = api.catalogs().reports();
    if !catalogs.is_empty() {
        out.family(
            "a8registry_catalog_up",
            "gauge",
            "1 while the catalog source's latest read succeeded, else 0 (also while starting).",
        );
        for report in &catalogs {
            let up = report.properties["state"] == "ok";
            out.sample(
                "a8registry_catalog_up",
                &[("source", report.name)],
                f64::from(u8::from(up)),
            );
        }
        out.family(
            "a8registry_catalog_instances",
            "gauge",
            "Instances the catalog source lists.",
        );
        for report in &catalogs {
            let instances = report.properties["instances"].as_u64().unwrap_or(0);
            out.sample(
                "a8registry_catalog_instances",
                &[("source", report.name)],
                instances as f64,
            );
        }
    }
    out.family(
        "a8registry_build_info",
        "gauge",
        "Always 1; the version of the running binary in its label.",
    );
    out.sample(
        "a8registry_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    metrics::expose_process(&mut out);
    Response::typed(200, metrics::CONTENT_TYPE, out.into_bytes())
}
