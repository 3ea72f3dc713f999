//! `GET /uptime` (spec 5.2); `GET /` is answered in `mod.rs` with an empty 200.

use super::Api;
use crate::http::response::Response;
use serde_json::{json, Map, Value};

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

/// The health report: one `UPTIME` component, always healthy.
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
    let mut body =
        json!({ "UPTIME": { "healthy": true, "properties": Value::Object(properties) } });
    let mut status = 200;
    if let Some(components) = api.health.get() {
        for (name, healthy, properties) in components() {
            if !healthy {
                status = 503;
            }
            body[name] = json!({ "healthy": healthy, "properties": properties });
        }
    }
    Response::json(status, body.to_string().into_bytes())
}
