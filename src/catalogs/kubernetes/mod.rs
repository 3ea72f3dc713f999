//! The Kubernetes catalog (catalogs contract §3): tenant namespace N mirrors Kubernetes namespace
//! N, from discovery.k8s.io/v1 EndpointSlices (core/v1 Endpoints when slices are not served)
//! and Pods (their labels become tags, their annotations metadata).
//!
//! A namespace is opened by the first API request resolved to it ([`Kubernetes::used`], a few
//! atomic operations on the request's coroutine), at most `--k8s_max_namespaces` at once, and
//! closed after `--k8s_idle_timeout` without requests. An open namespace has two plain threads,
//! one per resource ([`namespace`]), that list and watch; a manager thread starts them, probes
//! which API is served, and closes idle namespaces. Every request and TLS handshake happens on
//! those threads; requests only read published snapshots.

mod client;
mod mirror;
mod namespace;
/// Public for the fuzz crate, which feeds it arbitrary objects.
pub mod objects;

use super::{retry_delay, Catalogs, Health, SourceKind};
use crate::config::Secret;
use client::{Client, Failure};
use mirror::Resource;
use namespace::Namespace;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The namespace never closed for idleness.
const DEFAULT_NAMESPACE: &str = crate::registry::namespace::DEFAULT_NAMESPACE;
/// How often idle namespaces are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// A namespace refused at the bound is warned about at most this often.
const REFUSED_WARNING_INTERVAL: Duration = Duration::from_secs(3600);
/// Most namespaces remembered for that warning (a client cycling names cannot grow it).
const MAX_REFUSED_REMEMBERED: usize = 10_000;
/// Stack of a namespace's threads: JSON nesting is bounded (64), TLS runs there.
const THREAD_STACK_BYTES: usize = 512 << 10;

/// Where the bearer token comes from.
#[derive(Clone, Debug)]
pub enum TokenSource {
    None,
    Value(Secret),
    /// Read at startup, again after a 401 and at least every minute.
    File(PathBuf),
}

/// The validated options of the Kubernetes catalog.
#[derive(Clone)]
pub struct Settings {
    /// `http(s)://host[:port][/prefix]`, without a trailing slash.
    pub base_url: String,
    pub token: TokenSource,
    /// The CA certificates of `--k8s_ca_file`; `None`: the platform's roots.
    pub ca: Option<Vec<ureq::tls::Certificate<'static>>>,
    pub max_namespaces: usize,
    pub idle_timeout: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("base_url", &self.base_url)
            .field("token", &self.token)
            .field("ca", &self.ca.as_ref().map(Vec::len))
            .field("max_namespaces", &self.max_namespaces)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

/// Which API holds the endpoints (contract §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Slices,
    Endpoints,
}

impl Mode {
    fn api(self) -> &'static str {
        match self {
            Mode::Slices => "discovery.k8s.io/v1",
            Mode::Endpoints => "v1",
        }
    }
}

/// True for a valid Kubernetes namespace name (an RFC 1123 label): 1 to 63 of `a-z`, `0-9`
/// and `-`, beginning and ending with a letter or digit.
pub fn is_kubernetes_namespace(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (1..=63).contains(&bytes.len())
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes.iter().all(|b| edge(b) || *b == b'-')
}

/// What the source's threads share.
pub struct Shared {
    client: Client,
    catalogs: Arc<Catalogs>,
    health: Arc<Health>,
    /// The mode, once the probe answered.
    mode: Mutex<Option<Mode>>,
    mode_known: Condvar,
    /// Resources of open namespaces whose latest attempt failed, plus one while the probe does.
    failing: AtomicUsize,
}

impl Shared {
    fn known_mode(&self) -> Option<Mode> {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the mode is known; `None` when `namespace` closed meanwhile.
    fn mode(&self, namespace: &Namespace) -> Option<Mode> {
        let mut mode = self.mode.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if namespace.is_closed() {
                return None;
            }
            if let Some(known) = *mode {
                return Some(known);
            }
            mode = self
                .mode_known
                .wait_timeout(mode, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Asks `GET /apis/discovery.k8s.io/v1` (contract §3.2): the mode, or the failure.
    fn probe(&self, agent: &ureq::Agent) -> Result<Mode, String> {
        match self.client.get(agent, "apis/discovery.k8s.io/v1") {
            Ok(body) => match serves_endpoint_slices(&body) {
                Some(true) => Ok(Mode::Slices),
                Some(false) => Ok(Mode::Endpoints),
                None => Err(format!(
                    "GET {}: the answer is no APIResourceList",
                    self.client.url("apis/discovery.k8s.io/v1")
                )),
            },
            Err(Failure::NotFound(_)) => Ok(Mode::Endpoints),
            Err(failure) => Err(failure.message().to_string()),
        }
    }

    fn set_mode(&self, mode: Mode) {
        let mut current = self.mode.lock().unwrap_or_else(|e| e.into_inner());
        if *current != Some(mode) {
            if mode == Mode::Endpoints {
                crate::info!(
                    "EndpointSlices are not served: reading core/v1 Endpoints",
                    "source" => "kubernetes"
                );
            }
            *current = Some(mode);
            self.health.set("api", mode.api().into());
        }
        self.mode_known.notify_all();
    }

    /// A slice list answered 404: ask again which API is served, switching if it changed.
    fn probe_again(&self, seen: Mode) {
        if self.known_mode() != Some(seen) {
            return;
        }
        let agent = self.client.agent();
        if let Ok(mode) = self.probe(&agent) {
            self.set_mode(mode);
        }
    }

    fn resource_ok(&self, was_failing: bool, success: bool) {
        let failing = if was_failing {
            self.failing.fetch_sub(1, Ordering::SeqCst) - 1
        } else {
            self.failing.load(Ordering::SeqCst)
        };
        if success {
            self.health.succeeded(failing == 0);
        } else if failing == 0 && was_failing {
            // A failing namespace was closed: nothing else fails any more.
            self.health.recovered();
        }
    }

    fn resource_failed(&self, was_failing: bool, message: &str) {
        if !was_failing {
            self.failing.fetch_add(1, Ordering::SeqCst);
        }
        self.health.failed(message);
    }
}

/// Whether an APIResourceList names `endpointslices`; `None` when the body is no such list (a
/// failure, retried, rather than a reason to read Endpoints for good).
fn serves_endpoint_slices(body: &[u8]) -> Option<bool> {
    if !crate::nesting::nesting_within(body, objects::MAX_NESTING) {
        return None;
    }
    let list = serde_json::from_slice::<Value>(body).ok()?;
    let resources = list.get("resources")?.as_array()?;
    Some(
        resources
            .iter()
            .any(|r| r.get("name").and_then(Value::as_str) == Some("endpointslices")),
    )
}

/// The Kubernetes source: its open namespaces and the bound on them.
pub struct Kubernetes {
    shared: Arc<Shared>,
    open: RwLock<HashMap<Arc<str>, Arc<Namespace>>>,
    max_namespaces: usize,
    idle_timeout: Duration,
    started: Instant,
    refused: AtomicU64,
    /// When each refused namespace was last warned about.
    refused_warned: Mutex<HashMap<String, Instant>>,
    /// Namespaces to start threads for, to the manager thread.
    to_start: Mutex<mpsc::Sender<Arc<Namespace>>>,
}

impl Kubernetes {
    fn now_millis(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// An API request resolved to `namespace`: keeps it open, or opens it when there is room.
    /// Never waits for I/O (it runs on the request's coroutine).
    pub fn used(&self, namespace: &str) {
        if !is_kubernetes_namespace(namespace) {
            return;
        }
        let now = self.now_millis();
        let read = self.open.read().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = read.get(namespace) {
            open.last_used_millis.store(now, Ordering::Relaxed);
            return;
        }
        drop(read);
        let mut open = self.open.write().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = open.get(namespace) {
            found.last_used_millis.store(now, Ordering::Relaxed);
            return;
        }
        if open.len() >= self.max_namespaces {
            drop(open);
            self.refuse(namespace);
            return;
        }
        let name: Arc<str> = Arc::from(namespace);
        let opened = Arc::new(Namespace::new(
            name.clone(),
            self.shared.client.agent(),
            now,
        ));
        open.insert(name, opened.clone());
        self.shared.health.set("namespaces", open.len().into());
        drop(open);
        let sender = self.to_start.lock().unwrap_or_else(|e| e.into_inner());
        let _ = sender.send(opened);
    }

    fn refuse(&self, namespace: &str) {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        self.shared.health.set("namespaces_refused", refused.into());
        let mut warned = self
            .refused_warned
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let due = warned
            .get(namespace)
            .is_none_or(|at| at.elapsed() >= REFUSED_WARNING_INTERVAL);
        if due {
            if warned.len() >= MAX_REFUSED_REMEMBERED {
                warned.clear();
            }
            warned.insert(namespace.to_string(), Instant::now());
            crate::warn!(
                "catalog namespace refused: too many namespaces open",
                "source" => "kubernetes",
                "namespace" => namespace,
                "max" => self.max_namespaces
            );
        }
    }

    /// Closes the namespaces without requests for the idle timeout (never `default`).
    fn close_idle(&self) {
        let now = self.now_millis();
        let idle_millis = self.idle_timeout.as_millis() as u64;
        let idle: Vec<Arc<Namespace>> = {
            let mut open = self.open.write().unwrap_or_else(|e| e.into_inner());
            let idle: Vec<Arc<str>> = open
                .iter()
                .filter(|(name, ns)| {
                    &***name != DEFAULT_NAMESPACE
                        && now.saturating_sub(ns.last_used_millis.load(Ordering::Relaxed))
                            >= idle_millis
                })
                .map(|(name, _)| name.clone())
                .collect();
            let closed = idle.iter().filter_map(|name| open.remove(name)).collect();
            self.shared.health.set("namespaces", open.len().into());
            closed
        };
        for namespace in idle {
            crate::info!("catalog namespace closed: idle", "source" => "kubernetes", "namespace" => namespace.name);
            namespace.close(&self.shared);
        }
    }
}

/// Starts the Kubernetes catalog; the returned source must be told of every namespace an API
/// request resolves to ([`Kubernetes::used`]).
pub fn start(settings: &Settings, catalogs: Arc<Catalogs>) -> std::io::Result<Arc<Kubernetes>> {
    let mut extra = Map::new();
    extra.insert("api".into(), Value::Null);
    extra.insert("namespaces".into(), 0.into());
    extra.insert("namespaces_max".into(), settings.max_namespaces.into());
    extra.insert("namespaces_refused".into(), 0.into());
    let health = Arc::new(Health::new(SourceKind::Kubernetes, extra));
    catalogs.add_source(health.clone());
    let shared = Arc::new(Shared {
        client: Client::new(
            settings.base_url.clone(),
            settings.token.clone(),
            settings.ca.as_deref(),
        ),
        catalogs,
        health,
        mode: Mutex::new(None),
        mode_known: Condvar::new(),
        failing: AtomicUsize::new(1),
    });
    let (sender, receiver) = mpsc::channel::<Arc<Namespace>>();
    let source = Arc::new(Kubernetes {
        shared: shared.clone(),
        open: RwLock::new(HashMap::new()),
        max_namespaces: settings.max_namespaces,
        idle_timeout: settings.idle_timeout,
        started: Instant::now(),
        refused: AtomicU64::new(0),
        refused_warned: Mutex::new(HashMap::new()),
        to_start: Mutex::new(sender),
    });
    let prober = shared.clone();
    std::thread::Builder::new()
        .name("catalog-k8s-probe".into())
        .spawn(move || probe_until_known(&prober))?;
    let manager = Arc::downgrade(&source);
    std::thread::Builder::new()
        .name("catalog-k8s".into())
        .spawn(move || loop {
            let next = receiver.recv_timeout(SWEEP_INTERVAL);
            let Some(source) = manager.upgrade() else {
                return;
            };
            if let Ok(namespace) = next {
                start_threads(&source.shared, namespace);
            }
            source.close_idle();
        })?;
    Ok(source)
}

/// The probe at startup, retried with the delays of §2 until it answers.
fn probe_until_known(shared: &Shared) {
    let agent = shared.client.agent();
    let mut failures = 0u32;
    loop {
        match shared.probe(&agent) {
            Ok(mode) => {
                shared.set_mode(mode);
                shared.resource_ok(true, true);
                return;
            }
            Err(why) => {
                shared.health.failed(&why);
                failures = failures.saturating_add(1);
                std::thread::sleep(retry_delay(failures));
            }
        }
    }
}

fn start_threads(shared: &Arc<Shared>, namespace: Arc<Namespace>) {
    for resource in [Resource::Endpoints, Resource::Pods] {
        let (shared, namespace) = (shared.clone(), namespace.clone());
        let started = std::thread::Builder::new()
            .name(format!("k8s-{resource:?}").to_lowercase())
            .stack_size(THREAD_STACK_BYTES)
            .spawn(move || namespace.run(shared, resource));
        if let Err(e) = started {
            crate::error!("cannot start a catalog thread", "source" => "kubernetes", "error" => e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kubernetes_namespace_names_are_mirrored() {
        for good in ["default", "team-a", "a", "0", &"x".repeat(63)] {
            assert!(is_kubernetes_namespace(good), "{good}");
        }
        for bad in [
            "",
            "Team_A",
            "a/b",
            "../kube-system",
            "-a",
            "a-",
            "a\0b",
            "é",
            &"x".repeat(64),
        ] {
            assert!(!is_kubernetes_namespace(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_probe_reads_the_resource_list() {
        assert_eq!(
            serves_endpoint_slices(
                br#"{"kind":"APIResourceList","resources":[{"name":"endpointslices","kind":"EndpointSlice"}]}"#
            ),
            Some(true)
        );
        assert_eq!(
            serves_endpoint_slices(br#"{"resources":[{"name":"other"}]}"#),
            Some(false)
        );
        for unreadable in [&b"[]"[..], b"<html>", b"{}", br#"{"resources":7}"#] {
            assert_eq!(serves_endpoint_slices(unreadable), None);
        }
    }
}
