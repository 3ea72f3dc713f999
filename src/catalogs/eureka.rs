//! The remote Eureka catalog (contract §4): `GET <url>/apps` and `<url>/apps/delta` from a list
//! of URLs with failover, reconciled by hash code every `--catalog_poll`, on one plain thread
//! (HTTP and TLS never run on a coroutine). Its instances join the namespace `default` only.
//!
//! A remote instance is mapped as if it had been registered through the local Eureka API with
//! the remote's instance object (the registration decoder of `api::eureka::model`), then given
//! the remote's lease times, which the remote, not this process, keeps.

use super::{retry_delay, Catalogs, Health, SourceKind};
use crate::api::eureka::model;
use crate::api::json::{nesting_within, MAX_JSON_DEPTH};
use crate::registry::instance::Instance;
use crate::registry::namespace::DEFAULT_NAMESPACE;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Connecting to a remote Eureka.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A whole fetch, body included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest body read from a remote Eureka; a larger one is a failure.
pub const MAX_BODY_BYTES: u64 = 32 << 20;

/// One remote instance as its `actionType` says it changed (deltas only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Upsert,
    Deleted,
}

/// What one `apps` or `apps/delta` body holds.
#[derive(Debug, Default)]
pub struct Fetched {
    instances: Vec<(Arc<Instance>, Action)>,
    /// `apps__hashcode` as given.
    hash_code: Option<String>,
    /// Why instances were skipped: (app, index in the list, reason).
    skipped: Vec<String>,
}

#[derive(Deserialize)]
struct Top {
    applications: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct Applications {
    #[serde(default)]
    application: Option<Box<RawValue>>,
    #[serde(default, rename = "apps__hashcode")]
    hash_code: Option<Value>,
}

#[derive(Deserialize)]
struct Application {
    #[serde(default)]
    name: Option<Value>,
    #[serde(default)]
    instance: Option<Box<RawValue>>,
}

/// A value that Eureka sends as one object or as an array of them.
fn one_or_many(raw: &RawValue) -> Result<Vec<Box<RawValue>>, String> {
    let text = raw.get().trim_start();
    if text == "null" {
        return Ok(Vec::new());
    }
    if text.starts_with('[') {
        return serde_json::from_slice(text.as_bytes()).map_err(|e| e.to_string());
    }
    RawValue::from_string(text.to_string())
        .map(|single| vec![single])
        .map_err(|e| e.to_string())
}

fn text_of(value: Option<&RawValue>) -> Option<String> {
    match serde_json::from_slice::<Value>(value?.get().as_bytes()).ok()? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// A timestamp in unix milliseconds (a number or a string of digits), when positive.
fn millis_of(value: Option<&Value>) -> Option<i64> {
    let millis = match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }?;
    (millis > 0).then_some(millis)
}

/// Maps one remote instance object (contract §4.3, §4.4).
fn remote_instance(raw: &RawValue, app_name: Option<&str>) -> Result<(Instance, Action), String> {
    let mut fields: BTreeMap<String, Box<RawValue>> =
        serde_json::from_slice(raw.get().as_bytes()).map_err(|_| "not an object".to_string())?;
    let app = text_of(fields.get("app").map(|r| &**r))
        .filter(|a| !a.is_empty())
        .or_else(|| app_name.map(str::to_string))
        .filter(|a| !a.is_empty())
        .ok_or_else(|| "no app".to_string())?;
    let host_name = text_of(fields.get("hostName").map(|r| &**r))
        .filter(|h| !h.is_empty())
        .ok_or_else(|| "no hostName".to_string())?;
    // The registration decoder requires what a registering client must send; a listing may
    // leave them out, so they default as the original read them.
    let raw_text = |text: &str| RawValue::from_string(Value::from(text).to_string());
    let fill = |fields: &mut BTreeMap<String, Box<RawValue>>, key: &str, value: &str| {
        if text_of(fields.get(key).map(|r| &**r)).is_none_or(|v| v.is_empty()) {
            if let Ok(raw) = raw_text(value) {
                fields.insert(key.to_string(), raw);
            }
        }
    };
    fill(&mut fields, "app", &app);
    fill(&mut fields, "ipAddr", &host_name);
    fill(&mut fields, "vipAddress", &app);
    let action = match text_of(fields.get("actionType").map(|r| &**r)).as_deref() {
        Some("DELETED") => Action::Deleted,
        _ => Action::Upsert,
    };
    let lease: Map<String, Value> = fields
        .get("leaseInfo")
        .and_then(|raw| serde_json::from_slice(raw.get().as_bytes()).ok())
        .unwrap_or_default();
    let updated = fields
        .get("lastUpdatedTimestamp")
        .and_then(|raw| serde_json::from_slice::<Value>(raw.get().as_bytes()).ok());
    // Timestamps are applied below; the decoder checks only their types, which vary remotely.
    fields.remove("leaseInfo");
    let mut lease_kept = Map::new();
    for key in ["renewalIntervalInSecs", "durationInSecs"] {
        if let Some(n) = lease.get(key).and_then(Value::as_u64) {
            lease_kept.insert(key.into(), n.min(u64::from(u32::MAX)).into());
        }
    }
    if let Ok(raw) = RawValue::from_string(Value::Object(lease_kept).to_string()) {
        fields.insert("leaseInfo".into(), raw);
    }
    let body = serde_json::to_string(&serde_json::json!({ "instance": fields }))
        .map_err(|e| e.to_string())?;
    let mut instance = model::decode(body.as_bytes(), false, &app)
        .map_err(|e| format!("not a mappable instance ({e:?})"))?;
    const NANOS_PER_MILLI: i64 = 1_000_000;
    let nanos = |millis: Option<i64>| millis.map_or(0, |m| m.saturating_mul(NANOS_PER_MILLI));
    instance.registered_unix_nanos = nanos(millis_of(lease.get("registrationTimestamp")));
    instance
        .last_heartbeat
        .set(nanos(millis_of(lease.get("lastRenewalTimestamp"))));
    instance.service_up_unix_nanos = nanos(millis_of(lease.get("serviceUpTimestamp")));
    instance.updated_unix_nanos = nanos(millis_of(updated.as_ref()));
    Ok((instance, action))
}

/// Reads an `apps` or `apps/delta` body; `Err` when it is no Eureka list at all.
pub fn parse(body: &[u8]) -> Result<Fetched, String> {
    if !nesting_within(body, MAX_JSON_DEPTH) {
        return Err(format!("JSON nested deeper than {MAX_JSON_DEPTH} levels"));
    }
    let top: Top = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let applications: Applications = top
        .applications
        // serde would read a struct from an array too: only an object is a list.
        .filter(|raw| raw.get().starts_with('{'))
        .and_then(|raw| serde_json::from_slice(raw.get().as_bytes()).ok())
        .ok_or_else(|| "no applications object".to_string())?;
    let mut fetched = Fetched {
        hash_code: match applications.hash_code {
            Some(Value::String(s)) => Some(s),
            _ => None,
        },
        ..Fetched::default()
    };
    let apps = match &applications.application {
        None => Vec::new(),
        Some(raw) => one_or_many(raw).map_err(|e| format!("application: {e}"))?,
    };
    for raw_app in apps {
        let app = Some(&raw_app)
            .filter(|raw| raw.get().starts_with('{'))
            .and_then(|raw| serde_json::from_slice::<Application>(raw.get().as_bytes()).ok());
        let Some(app) = app else {
            fetched
                .skipped
                .push("an application is not an object".into());
            continue;
        };
        let name = match &app.name {
            Some(Value::String(s)) => Some(s.as_str()),
            _ => None,
        };
        let instances = match &app.instance {
            None => Vec::new(),
            Some(raw) => match one_or_many(raw) {
                Ok(list) => list,
                Err(e) => {
                    fetched
                        .skipped
                        .push(format!("application {name:?}: instance: {e}"));
                    continue;
                }
            },
        };
        for (at, raw) in instances.iter().enumerate() {
            match remote_instance(raw, name) {
                Ok((instance, action)) => fetched.instances.push((Arc::new(instance), action)),
                Err(why) => fetched
                    .skipped
                    .push(format!("application {name:?} instance {at}: {why}")),
            }
        }
    }
    Ok(fetched)
}

/// Eureka's hash code of a list: counts per status, sorted, `STATUS_count_` (empty is `UP`).
fn hash_code(instances: &[Arc<Instance>]) -> String {
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for instance in instances {
        let status = if instance.status.is_empty() {
            "UP"
        } else {
            instance.status.as_str()
        };
        *counts.entry(status).or_default() += 1;
    }
    counts
        .iter()
        .map(|(status, count)| format!("{status}_{count}_"))
        .collect()
}

/// `snapshot` with a delta applied: upserts replace or add by id, deletions remove.
fn apply_delta(snapshot: &[Arc<Instance>], delta: &Fetched) -> Vec<Arc<Instance>> {
    let mut result: Vec<Option<Arc<Instance>>> = snapshot.iter().cloned().map(Some).collect();
    let mut at: HashMap<Arc<str>, usize> = snapshot
        .iter()
        .enumerate()
        .map(|(i, instance)| (instance.id.clone(), i))
        .collect();
    for (instance, action) in &delta.instances {
        match (action, at.get(&instance.id)) {
            (Action::Deleted, Some(&i)) => {
                result[i] = None;
                at.remove(&instance.id);
            }
            (Action::Deleted, None) => {}
            (Action::Upsert, Some(&i)) => result[i] = Some(instance.clone()),
            (Action::Upsert, None) => {
                at.insert(instance.id.clone(), result.len());
                result.push(Some(instance.clone()));
            }
        }
    }
    result.into_iter().flatten().collect()
}

/// A full list's instances, one per id (the later wins). A full list replaces the snapshot:
/// an `actionType` there is no instruction, so a `DELETED` one is listed like any other.
fn full_list(fetched: &Fetched) -> Vec<Arc<Instance>> {
    let mut result: Vec<Arc<Instance>> = Vec::with_capacity(fetched.instances.len());
    let mut at: HashMap<Arc<str>, usize> = HashMap::new();
    for (instance, _) in &fetched.instances {
        match at.get(&instance.id) {
            Some(&i) => result[i] = instance.clone(),
            None => {
                at.insert(instance.id.clone(), result.len());
                result.push(instance.clone());
            }
        }
    }
    result
}

struct EurekaCatalog {
    urls: Vec<String>,
    poll: Duration,
    agent: ureq::Agent,
    catalogs: Arc<Catalogs>,
    health: Arc<Health>,
    snapshot: Option<Vec<Arc<Instance>>>,
    /// Per URL and request (`apps`, `apps/delta`): whether its latest attempt failed. The
    /// warning is logged when that changes, so a remote that never answers deltas (while its
    /// full list works) is not logged about every round.
    failing: HashMap<(usize, &'static str), bool>,
}

/// Starts the Eureka catalog on a thread of its own.
pub fn start(urls: Vec<String>, poll: Duration, catalogs: Arc<Catalogs>) -> std::io::Result<()> {
    let mut extra = Map::new();
    extra.insert("url".into(), Value::Null);
    let health = Arc::new(Health::new(SourceKind::Eureka, extra));
    catalogs.add_source(health.clone());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(Some(FETCH_TIMEOUT))
        .http_status_as_error(false)
        .tls_config(crate::net::tls::built_in_roots())
        .build()
        .into();
    let mut catalog = EurekaCatalog {
        failing: HashMap::new(),
        urls,
        poll,
        agent,
        catalogs,
        health,
        snapshot: None,
    };
    std::thread::Builder::new()
        .name("catalog-eureka".into())
        .spawn(move || {
            let mut failures = 0u32;
            loop {
                if catalog.round() {
                    failures = 0;
                    std::thread::sleep(catalog.poll);
                } else {
                    failures = failures.saturating_add(1);
                    std::thread::sleep(retry_delay(failures).min(catalog.poll));
                }
            }
        })
        .map(|_| ())
}

impl EurekaCatalog {
    /// One GET of `path` below `base`: the parsed body, or why it failed.
    fn get(&self, base: &str, path: &str) -> Result<Fetched, String> {
        let url = format!("{base}/{path}");
        let mut response = self
            .agent
            .get(&url)
            .header("Accept", "application/json")
            .header(
                "User-Agent",
                concat!("a8registry/", env!("CARGO_PKG_VERSION")),
            )
            .call()
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {url}: {status}"));
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_vec()
            .map_err(|e| format!("GET {url}: {e}"))?;
        parse(&body).map_err(|e| format!("GET {url}: {e}"))
    }

    /// Tries every URL in order; the first answer that does not fail, and its URL.
    fn fetch(&mut self, path: &'static str) -> Result<(Fetched, String), String> {
        let mut last_error = String::from("no URL");
        for at in 0..self.urls.len() {
            let base = self.urls[at].clone();
            match self.get(&base, path) {
                Ok(fetched) => {
                    if self.failing.insert((at, path), false) == Some(true) {
                        crate::info!("catalog URL answers again", "source" => "eureka", "url" => base, "path" => path);
                    }
                    return Ok((fetched, base));
                }
                Err(why) => {
                    if self.failing.insert((at, path), true) != Some(true) {
                        crate::warn!("catalog URL failed", "source" => "eureka", "error" => why);
                    }
                    last_error = why;
                }
            }
        }
        Err(last_error)
    }

    fn log_skipped(fetched: &Fetched) {
        for why in &fetched.skipped {
            crate::warn!("catalog instance skipped", "source" => "eureka", "reason" => why);
        }
    }

    /// One round (contract §4.2); true when it ended with a successful fetch.
    fn round(&mut self) -> bool {
        if let Some(snapshot) = &self.snapshot {
            let snapshot = snapshot.clone();
            // A failed delta was logged by `fetch` when the URLs started failing it.
            if let Ok((delta, url)) = self.fetch("apps/delta") {
                let applied = apply_delta(&snapshot, &delta);
                if delta.hash_code.as_deref() == Some(hash_code(&applied).as_str()) {
                    Self::log_skipped(&delta);
                    self.accept(applied, url);
                    return true;
                }
                crate::warn!(
                    "catalog delta does not reconcile; fetching the full list",
                    "source" => "eureka"
                );
            }
        }
        match self.fetch("apps") {
            Ok((full, url)) => {
                Self::log_skipped(&full);
                let instances = full_list(&full);
                self.accept(instances, url);
                true
            }
            Err(why) => {
                self.health.failed(&why);
                false
            }
        }
    }

    fn accept(&mut self, instances: Vec<Arc<Instance>>, url: String) {
        self.catalogs
            .publish(SourceKind::Eureka, DEFAULT_NAMESPACE, instances.clone());
        self.snapshot = Some(instances);
        self.health.set("url", url.into());
        self.health.succeeded(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SINGLE: &str = r#"{"applications":{"versions__delta":"1","apps__hashcode":"UP_1_","application":{"name":"MYAPP","instance":{"instanceId":"host1:myapp:8080","hostName":"host1","app":"MYAPP","ipAddr":"10.0.0.7","status":"UP","port":{"$":8080,"@enabled":"true"},"securePort":{"$":443,"@enabled":false},"dataCenterInfo":{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"},"leaseInfo":{"renewalIntervalInSecs":30,"durationInSecs":120,"registrationTimestamp":1700000000000,"lastRenewalTimestamp":"1700000030000"},"metadata":{"amalgam8.tags":"v1; canary"},"vipAddress":"myapp","lastUpdatedTimestamp":"1700000000001"}}}}"#;

    #[test]
    fn single_object_forms_map_to_instances() {
        let fetched = parse(SINGLE.as_bytes()).unwrap();
        assert!(fetched.skipped.is_empty(), "{:?}", fetched.skipped);
        let (instance, action) = &fetched.instances[0];
        assert_eq!(*action, Action::Upsert);
        assert_eq!(&*instance.id, "MYAPP:host1:myapp:8080");
        assert_eq!(&*instance.service_name, "MYAPP");
        assert_eq!(instance.endpoint.value, "host1:8080");
        assert_eq!(instance.tags, ["v1", "canary"]);
        assert_eq!(instance.ttl, Duration::from_secs(120));
        assert_eq!(instance.registered_unix_nanos, 1_700_000_000_000_000_000);
        assert_eq!(instance.last_heartbeat.get(), 1_700_000_030_000_000_000);
        assert_eq!(fetched.hash_code.as_deref(), Some("UP_1_"));
        assert_eq!(hash_code(&full_list(&fetched)), "UP_1_");
    }

    #[test]
    fn unmappable_instances_are_skipped_and_the_rest_used() {
        let body = r#"{"applications":{"application":[{"name":"A","instance":[{"app":"A","status":"UP"},{"app":"A","hostName":"h","metadata":null},{"app":"A","hostName":"x","dataCenterInfo":{"name":"Mars"}}]}]}}"#;
        let fetched = parse(body.as_bytes()).unwrap();
        assert_eq!(fetched.instances.len(), 1, "{:?}", fetched.skipped);
        assert_eq!(fetched.skipped.len(), 2);
        let (instance, _) = &fetched.instances[0];
        assert_eq!(&*instance.id, "A:h");
        assert_eq!(instance.metadata.as_ref().unwrap().get(), "{}");
        assert_eq!(instance.ttl, Duration::from_secs(90));
    }

    #[test]
    fn bodies_without_applications_are_failures() {
        for bad in [&b"[]"[..], b"{}", b"{\"applications\":[]}", b"<xml/>", b""] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(parse(br#"{"applications":{}}"#)
            .unwrap()
            .instances
            .is_empty());
    }

    #[test]
    fn deltas_apply_by_id() {
        let full = parse(SINGLE.as_bytes()).unwrap();
        let snapshot = full_list(&full);
        let delta = r#"{"applications":{"apps__hashcode":"DOWN_1_","application":[{"name":"B","instance":{"app":"B","hostName":"b","status":"DOWN","actionType":"ADDED"}},{"name":"MYAPP","instance":{"instanceId":"host1:myapp:8080","app":"MYAPP","hostName":"host1","actionType":"DELETED"}}]}}"#;
        let delta = parse(delta.as_bytes()).unwrap();
        let applied = apply_delta(&snapshot, &delta);
        assert_eq!(applied.len(), 1);
        assert_eq!(&*applied[0].id, "B:b");
        assert_eq!(hash_code(&applied), "DOWN_1_");
        // In a full list the same document lists both: an actionType is no instruction there.
        let listed = full_list(&delta);
        assert_eq!(listed.len(), 2);
        assert_eq!(hash_code(&listed), "DOWN_1_UP_1_");
    }
}
