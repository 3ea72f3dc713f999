//! One mirrored namespace (catalogs contract §3.4): two plain threads, one per resource, each
//! listing (paged) and then watching from the list's resourceVersion, re-listing on 410 Gone or
//! a broken watch, with the retry delays of §2. Both feed one [`Mirror`] and publish its
//! instances whole.

use super::client::{Failure, WatchStream, WATCH_SECONDS};
use super::mirror::{Mirror, OverBudget, Resource};
use super::objects::{self, Event};
use super::{Mode, Shared};
use crate::catalogs::{retry_delay, SourceKind};
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A watch that ends cleanly is opened again at once, but not sooner than this after it was
/// opened: a server (or proxy) that answers every watch with an empty stream gets one watch a
/// second, not thousands.
const MIN_WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Objects asked for per list page.
const PAGE_LIMIT: u32 = 500;
/// Re-lists that follow a 410 or a broken watch at once come at most this often; more often, a
/// server that keeps answering so gets the retry delays instead of a busy loop.
const QUICK_RELIST_INTERVAL: Duration = Duration::from_secs(1);
/// Most pages of one list: a server that hands out `continue` tokens forever fails the list
/// instead of keeping it going (500,000 objects, far beyond what the byte bound keeps).
const MAX_LIST_PAGES: usize = 1_000;
/// Skipped ports of one object logged at most.
const MAX_REASONS_LOGGED: usize = 8;
/// Watch events applied before the snapshot is published even though more are waiting.
const EVENTS_PER_PUBLISH: usize = 500;

struct State {
    mirror: Mirror,
    /// Set once when the namespace is closed: nothing is published any more.
    closed: bool,
}

/// An open namespace, shared by its two threads and the source.
pub struct Namespace {
    pub name: Arc<str>,
    state: Mutex<State>,
    /// Its own agent: closing shuts it down, which interrupts a blocked watch at once.
    agent: ureq::Agent,
    /// When an API request last resolved to it, in milliseconds since the source started.
    pub last_used_millis: AtomicU64,
    /// Per resource: whether its latest attempt failed.
    failing: [AtomicBool; 2],
}

/// How one watch ended.
enum WatchEnd {
    /// The server closed the stream normally: watch again from the remembered version.
    Clean,
    /// 410 Gone, as a status or an `ERROR` event: list again at once.
    Gone,
    /// An `ERROR` event with another code: list again after the retry delay.
    Error(String),
    /// The stream broke; `delivered`: it had given at least one event.
    Broken { why: String, delivered: bool },
    /// The namespace was closed.
    Closed,
}

fn index(resource: Resource) -> usize {
    match resource {
        Resource::Endpoints => 0,
        Resource::Pods => 1,
    }
}

impl Namespace {
    pub fn new(name: Arc<str>, agent: ureq::Agent, now_millis: u64) -> Namespace {
        Namespace {
            name,
            state: Mutex::new(State {
                mirror: Mirror::default(),
                closed: false,
            }),
            agent,
            last_used_millis: AtomicU64::new(now_millis),
            failing: [AtomicBool::new(false), AtomicBool::new(false)],
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Stops mirroring: ends the watches, drops the snapshot, and no longer counts as failing.
    pub fn close(&self, shared: &Shared) {
        {
            let mut state = self.lock();
            state.closed = true;
            state.mirror = Mirror::default();
            shared
                .catalogs
                .publish(SourceKind::Kubernetes, &self.name, Vec::new());
            // Under the lock: a thread's failure is either counted before this or not at all.
            for resource in [Resource::Endpoints, Resource::Pods] {
                let was_failing = self.failing[index(resource)].swap(false, Ordering::SeqCst);
                shared.resource_ok(was_failing, false);
            }
        }
        self.agent.clone().shutdown();
    }

    /// Applies `change` to the mirror and publishes the result, unless the namespace is closed.
    /// `publish: false` applies only (more events are waiting).
    fn apply(
        &self,
        shared: &Shared,
        publish: bool,
        change: impl FnOnce(&mut Mirror) -> Result<(), OverBudget>,
    ) -> Result<(), OverBudget> {
        let mut state = self.lock();
        if state.closed {
            return Ok(());
        }
        let mut result = change(&mut state.mirror);
        if state.mirror.take_truncated() {
            result = Err(OverBudget);
        }
        if publish {
            shared
                .catalogs
                .publish(SourceKind::Kubernetes, &self.name, state.mirror.instances());
        }
        result
    }

    fn publish(&self, shared: &Shared) {
        let _ = self.apply(shared, true, |_| Ok(()));
    }

    fn succeeded(&self, shared: &Shared, resource: Resource, success: bool) {
        let was_failing = self.failing[index(resource)].swap(false, Ordering::SeqCst);
        shared.resource_ok(was_failing, success);
    }

    fn failed(&self, shared: &Shared, resource: Resource, message: &str) {
        let state = self.lock();
        if state.closed {
            return;
        }
        let was_failing = self.failing[index(resource)].swap(true, Ordering::SeqCst);
        shared.resource_failed(was_failing, message);
    }

    /// The path of `resource` in this namespace, in `mode`.
    fn path(&self, resource: Resource, mode: Mode) -> String {
        let ns = &self.name;
        match (resource, mode) {
            (Resource::Pods, _) => format!("api/v1/namespaces/{ns}/pods"),
            (Resource::Endpoints, Mode::Slices) => {
                format!("apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices")
            }
            (Resource::Endpoints, Mode::Endpoints) => format!("api/v1/namespaces/{ns}/endpoints"),
        }
    }

    /// The thread of one resource: list, watch, again, until the namespace is closed.
    pub fn run(self: Arc<Self>, shared: Arc<Shared>, resource: Resource) {
        let mut failures = 0u32;
        let mut last_quick_relist: Option<Instant> = None;
        // Waits out the retry delay after a failure (in short steps, to notice a close).
        let pause = |failures: &mut u32| {
            *failures = failures.saturating_add(1);
            let until = Instant::now() + retry_delay(*failures);
            while Instant::now() < until && !self.is_closed() {
                std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
            }
        };
        while !self.is_closed() {
            let Some(mode) = shared.mode(&self) else {
                return;
            };
            let path = self.path(resource, mode);
            let version = match self.list(&shared, resource, mode, &path) {
                Ok(version) => version,
                Err(failure) => {
                    if self.is_closed() {
                        return;
                    }
                    if matches!(failure, Failure::NotFound(_))
                        && resource == Resource::Endpoints
                        && mode == Mode::Slices
                    {
                        shared.probe_again(mode);
                    }
                    self.failed(&shared, resource, failure.message());
                    pause(&mut failures);
                    continue;
                }
            };
            failures = 0;
            self.succeeded(&shared, resource, true);
            let mut version = version;
            // Watch until something makes a list necessary.
            let end = loop {
                let opened = Instant::now();
                match self.watch(&shared, resource, &path, &mut version) {
                    WatchEnd::Clean => {
                        let until = opened + MIN_WATCH_INTERVAL;
                        while Instant::now() < until && !self.is_closed() {
                            std::thread::sleep(until.saturating_duration_since(Instant::now()));
                        }
                    }
                    other => break other,
                }
            };
            let quick = match end {
                WatchEnd::Closed => return,
                WatchEnd::Gone => true,
                WatchEnd::Broken { why, delivered } => {
                    self.failed(&shared, resource, &why);
                    delivered
                }
                WatchEnd::Error(why) => {
                    self.failed(&shared, resource, &why);
                    false
                }
                WatchEnd::Clean => unreachable!("a clean end watches again"),
            };
            let too_soon = last_quick_relist.is_some_and(|at| at.elapsed() < QUICK_RELIST_INTERVAL);
            if quick && !too_soon {
                last_quick_relist = Some(Instant::now());
            } else {
                pause(&mut failures);
            }
        }
    }

    /// Lists every page; replaces the resource's state and publishes. Returns the version to
    /// watch from.
    fn list(
        &self,
        shared: &Shared,
        resource: Resource,
        mode: Mode,
        path: &str,
    ) -> Result<String, Failure> {
        let mut restarted = false;
        'restart: loop {
            let mut items: Vec<Box<RawValue>> = Vec::new();
            // Objects past the mirror's byte bound would be refused anyway: they are not kept,
            // so a long list holds at most that much (and one page) while it is read.
            let mut kept_bytes = 0usize;
            let mut over_budget = false;
            let mut continue_token: Option<String> = None;
            for pages in 1.. {
                if pages > MAX_LIST_PAGES {
                    return Err(Failure::Other(format!(
                        "GET {}: a list of more than {MAX_LIST_PAGES} pages",
                        shared.client.url(path)
                    )));
                }
                let mut url = format!("{path}?limit={PAGE_LIMIT}");
                if let Some(token) = &continue_token {
                    url.push_str("&continue=");
                    url.push_str(&percent_encode(token));
                }
                let body = match shared.client.get(&self.agent, &url) {
                    Ok(body) => body,
                    // A continue token that expired: the list starts again, once at once.
                    Err(Failure::Gone(_)) if continue_token.is_some() && !restarted => {
                        restarted = true;
                        continue 'restart;
                    }
                    Err(failure) => return Err(failure),
                };
                let page = objects::parse_page(&body).map_err(|why| {
                    Failure::Other(format!("GET {}: {why}", shared.client.url(&url)))
                })?;
                for item in page.items {
                    let size = item.get().len();
                    if kept_bytes + size > super::mirror::MAX_RESOURCE_BYTES {
                        over_budget = true;
                        continue;
                    }
                    kept_bytes += size;
                    items.push(item);
                }
                match page.continue_token {
                    Some(token) => continue_token = Some(token),
                    None => {
                        let version = page.resource_version.unwrap_or_default();
                        self.replace(shared, resource, mode, items);
                        if over_budget {
                            self.warn_over_budget(resource);
                        }
                        return Ok(version);
                    }
                }
            }
            unreachable!("the pages are bounded");
        }
    }

    /// Replaces the resource's state with listed objects (unreadable ones skipped, logged).
    fn replace(&self, shared: &Shared, resource: Resource, mode: Mode, items: Vec<Box<RawValue>>) {
        let over = match resource {
            Resource::Pods => {
                let pods = items
                    .iter()
                    .filter_map(|item| self.read_pod(item).ok())
                    .collect();
                self.apply(shared, true, |mirror| mirror.replace_pods(pods))
            }
            Resource::Endpoints => {
                let sources = items
                    .iter()
                    .filter_map(|item| self.read_source(mode, item).ok())
                    .collect();
                self.apply(shared, true, |mirror| mirror.replace_sources(sources))
            }
        };
        if over.is_err() {
            self.warn_over_budget(resource);
        }
    }

    fn warn_over_budget(&self, resource: Resource) {
        crate::warn!(
            "catalog objects skipped",
            "source" => "kubernetes",
            "namespace" => self.name,
            "resource" => format!("{resource:?}"),
            "reason" => format!(
                "more than {} bytes of objects, {} instances or {} bytes of their annotations",
                super::mirror::MAX_RESOURCE_BYTES,
                super::mirror::MAX_INSTANCES,
                super::mirror::MAX_METADATA_BYTES
            )
        );
    }

    fn skipped(&self, object: &RawValue, why: &str) {
        crate::warn!(
            "catalog object skipped",
            "source" => "kubernetes",
            "namespace" => self.name,
            "object" => objects::name_of(object).unwrap_or_default(),
            "reason" => why
        );
    }

    fn read_pod(&self, object: &RawValue) -> Result<objects::Pod, ()> {
        objects::parse_pod(object).map_err(|why| self.skipped(object, &why))
    }

    fn read_source(&self, mode: Mode, object: &RawValue) -> Result<objects::Source, ()> {
        let mut ports_skipped = Vec::new();
        let parsed = match mode {
            Mode::Slices => objects::parse_slice(object, &mut ports_skipped),
            Mode::Endpoints => objects::parse_endpoints(object, &mut ports_skipped),
        };
        // A few reasons are enough to tell: an object of a million bad ports logs a few lines.
        for why in ports_skipped.iter().take(MAX_REASONS_LOGGED) {
            self.skipped(object, why);
        }
        parsed.map_err(|why| self.skipped(object, &why))
    }

    /// One watch from `version`, applying its events; `version` follows them.
    fn watch(
        &self,
        shared: &Shared,
        resource: Resource,
        path: &str,
        version: &mut String,
    ) -> WatchEnd {
        let url = format!(
            "{path}?watch=1&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}",
            percent_encode(version)
        );
        let mut stream = match shared.client.watch(&self.agent, &url) {
            Ok(stream) => stream,
            Err(_) if self.is_closed() => return WatchEnd::Closed,
            Err(Failure::Gone(_)) => return WatchEnd::Gone,
            Err(failure) => {
                return WatchEnd::Broken {
                    why: failure.message().to_string(),
                    delivered: false,
                }
            }
        };
        let mut delivered = false;
        let mut pending = 0usize;
        loop {
            let line = match stream.next_line() {
                Ok(Some(line)) => line,
                Ok(None) if self.is_closed() => return WatchEnd::Closed,
                Ok(None) => {
                    self.flush(shared, &mut pending);
                    return WatchEnd::Clean;
                }
                Err(_) if self.is_closed() => return WatchEnd::Closed,
                Err(why) => {
                    self.flush(shared, &mut pending);
                    return WatchEnd::Broken { why, delivered };
                }
            };
            let (event, event_version) = match objects::parse_event(&line) {
                Ok(parsed) => parsed,
                Err(why) => {
                    self.flush(shared, &mut pending);
                    return WatchEnd::Broken {
                        why: format!("watch {}: {why}", shared.client.url(path)),
                        delivered,
                    };
                }
            };
            delivered = true;
            if let Some(event_version) = event_version {
                *version = event_version;
            }
            match event {
                Event::Bookmark => {}
                Event::Unknown(kind) => crate::warn!(
                    "catalog watch event skipped",
                    "source" => "kubernetes",
                    "namespace" => self.name,
                    "reason" => format!("unknown event type {kind:?}")
                ),
                Event::Error { code: 410, .. } => {
                    self.flush(shared, &mut pending);
                    return WatchEnd::Gone;
                }
                Event::Error { code, message } => {
                    self.flush(shared, &mut pending);
                    return WatchEnd::Error(format!(
                        "watch {}: ERROR {code} {message}",
                        shared.client.url(path)
                    ));
                }
                Event::Upsert(object) => {
                    let mode = shared.known_mode();
                    self.upsert(shared, resource, mode, &object);
                    pending += 1;
                }
                Event::Deleted(object) => {
                    if let Some(name) = objects::name_of(&object) {
                        let _ = self.apply(shared, false, |mirror| {
                            match resource {
                                Resource::Pods => mirror.remove_pod(&name),
                                Resource::Endpoints => mirror.remove_source(&name),
                            }
                            Ok(())
                        });
                        pending += 1;
                    }
                }
            }
            self.succeeded(shared, resource, true);
            if pending >= EVENTS_PER_PUBLISH || !stream_has_more(&stream) {
                self.flush(shared, &mut pending);
            }
        }
    }

    /// An `ADDED` or `MODIFIED` object; one that cannot be read is removed (what is listed
    /// follows what the server holds, without what cannot be mapped).
    fn upsert(&self, shared: &Shared, resource: Resource, mode: Option<Mode>, object: &RawValue) {
        let over = match resource {
            Resource::Pods => match self.read_pod(object) {
                Ok(pod) => self.apply(shared, false, |mirror| mirror.upsert_pod(pod)),
                Err(()) => {
                    if let Some(name) = objects::name_of(object) {
                        let _ = self.apply(shared, false, |mirror| {
                            mirror.remove_pod(&name);
                            Ok(())
                        });
                    }
                    Ok(())
                }
            },
            Resource::Endpoints => {
                let read = mode
                    .ok_or(())
                    .and_then(|mode| self.read_source(mode, object));
                match read {
                    Ok(source) => self.apply(shared, false, |mirror| mirror.upsert_source(source)),
                    Err(()) => {
                        if let Some(name) = objects::name_of(object) {
                            let _ = self.apply(shared, false, |mirror| {
                                mirror.remove_source(&name);
                                Ok(())
                            });
                        }
                        Ok(())
                    }
                }
            }
        };
        if over.is_err() {
            self.warn_over_budget(resource);
        }
    }

    fn flush(&self, shared: &Shared, pending: &mut usize) {
        if *pending > 0 {
            self.publish(shared);
            *pending = 0;
        }
    }
}

fn stream_has_more(stream: &WatchStream) -> bool {
    stream.has_buffered()
}

/// Percent-encodes a query value (continue tokens and resourceVersions are opaque).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_values_are_percent_encoded() {
        assert_eq!(percent_encode("12345"), "12345");
        assert_eq!(percent_encode("a b&c=d/+"), "a%20b%26c%3Dd%2F%2B");
    }
}
