//! `GET /uptime` (spec 5.2); `GET /` is answered in `mod.rs` with an empty 200.

use super::Api;
use crate::http::response::Response;
use serde_json::{json, Map, Value};
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
    Response::json(status, Value::Object(components).to_string().into_bytes())
}
