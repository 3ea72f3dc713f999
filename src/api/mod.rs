//! The protocols served on the API port, and the stages every request passes (spec 1.2):
//! 415 check → routing (404/405) → parameter decoding (400) → HTTPS (301) → auth (401) → handler.
//!
//! The Amalgam8 API lives under `/api/v1`; the Eureka API under three prefixes (D5):
//! `/api/eureka/{token}/v2` (the token is a path segment), `/eureka/v2` and `/eureka` (the token
//! comes from the `Authorization` header only).

pub mod amalgam8;
pub mod cache;
pub mod error;
pub mod eureka;
pub mod json;
pub mod listing;
pub mod ops;
pub mod ui;
pub mod watch;

use crate::auth::{extract_token, AuthError, Authenticator};
use crate::config::LogLevel;
use crate::http::request::{Method, Request};
use crate::http::response::{OnStreamed, Response};
use crate::http::router::{percent_decode, RouteMeta, Routed, Router, MAX_PARAMS};
use crate::http::server::Handler;
use crate::http::wait::Reply;
use crate::metrics::{HttpMetrics, Protocol};
use crate::registry::instance::Instance;
use crate::registry::namespace::Namespace;
use crate::registry::store::{Call, Store, REQUEST_DEADLINE};
use crate::registry::Registry;
use cache::ResponseCache;
use error::*;
use std::borrow::Cow;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Every route of the API port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Root,
    Uptime,
    Ready,
    Metrics,
    /// `/ui`: redirected to the page.
    UiRedirect,
    /// `/ui/` and `/ui/{file}`: the page and its files.
    Ui,
    Register,
    ListInstances,
    Deregister,
    Heartbeat,
    ListServices,
    ServiceInstances,
    Eureka(eureka::Op, EurekaPrefix),
}

/// Where a Eureka route takes its token from, and its default response format (D5, D6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EurekaPrefix {
    /// `/api/eureka/{token}/v2`: the first path parameter; JSON by default.
    PathToken,
    /// `/eureka/v2` and `/eureka`: the header only; XML by default.
    HeaderOnly,
}

impl Route {
    /// The `protocol` label of the route's requests.
    fn protocol(self) -> Protocol {
        match self {
            Route::Root
            | Route::Uptime
            | Route::Ready
            | Route::Metrics
            | Route::UiRedirect
            | Route::Ui => Protocol::Ops,
            Route::Eureka(..) => Protocol::Eureka,
            _ => Protocol::Amalgam8,
        }
    }
}

/// The `protocol` label of a request that matched no route, from the fixed prefixes of the
/// protocols (never from the rest of the path).
fn protocol_of_path(path: &str) -> Protocol {
    if path.starts_with("/api/v1/") {
        Protocol::Amalgam8
    } else if path.starts_with("/eureka/") || path.starts_with("/api/eureka/") {
        Protocol::Eureka
    } else {
        Protocol::Ops
    }
}

/// What a request does, for metrics and logs: one name per operation, whichever protocol
/// carries it (an Amalgam8 heartbeat and a Eureka renewal are both `Renew`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Root,
    Uptime,
    Ready,
    Metrics,
    /// The web page and its files.
    Ui,
    Register,
    Deregister,
    Renew,
    ListInstances,
    ListServices,
    ListServiceInstances,
    /// Eureka: all applications.
    Apps,
    /// Eureka: the recent changes.
    AppsDelta,
    /// Eureka: one application.
    App,
    /// Eureka: one instance.
    GetInfo,
    /// Eureka: a status change or its removal.
    SetStatus,
    UpdateMetadata,
    /// Eureka: the instances of a VIP or secure VIP.
    Vips,
    /// No route: 404 and 405.
    NotFound,
}

/// The names of the operations, in the order of their variants (metrics index them so).
const OPERATION_NAMES: &[&str] = &[
    "Root",
    "Uptime",
    "Ready",
    "Metrics",
    "Ui",
    "Register",
    "Deregister",
    "Renew",
    "ListInstances",
    "ListServices",
    "ListServiceInstances",
    "Apps",
    "AppsDelta",
    "App",
    "GetInfo",
    "SetStatus",
    "UpdateMetadata",
    "Vips",
    "NotFound",
];

/// The [`Response::tag`] of an answer: which (protocol, operation) pair the metrics count it
/// under, offset by one (0 is unmarked).
fn metrics_tag(protocol: Protocol, operation: Operation) -> u16 {
    let index = protocol as usize * OPERATION_NAMES.len() + operation as usize;
    (1 + index) as u16
}

fn of_metrics_tag(tag: u16) -> Option<(Protocol, usize)> {
    let index = usize::from(tag).checked_sub(1)?;
    let protocol = match index / OPERATION_NAMES.len() {
        0 => Protocol::Amalgam8,
        1 => Protocol::Eureka,
        2 => Protocol::Ops,
        _ => return None,
    };
    Some((protocol, index % OPERATION_NAMES.len()))
}

impl Operation {
    /// The name metrics and logs use.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Root => "Root",
            Operation::Uptime => "Uptime",
            Operation::Ready => "Ready",
            Operation::Metrics => "Metrics",
            Operation::Ui => "Ui",
            Operation::Register => "Register",
            Operation::Deregister => "Deregister",
            Operation::Renew => "Renew",
            Operation::ListInstances => "ListInstances",
            Operation::ListServices => "ListServices",
            Operation::ListServiceInstances => "ListServiceInstances",
            Operation::Apps => "Apps",
            Operation::AppsDelta => "AppsDelta",
            Operation::App => "App",
            Operation::GetInfo => "GetInfo",
            Operation::SetStatus => "SetStatus",
            Operation::UpdateMetadata => "UpdateMetadata",
            Operation::Vips => "Vips",
            Operation::NotFound => "NotFound",
        }
    }

    fn of_eureka(op: eureka::Op) -> Operation {
        use eureka::Op;
        match op {
            Op::Apps => Operation::Apps,
            Op::Delta => Operation::AppsDelta,
            Op::App => Operation::App,
            Op::Register => Operation::Register,
            Op::Instance | Op::InstanceById => Operation::GetInfo,
            Op::Renew => Operation::Renew,
            Op::Cancel => Operation::Deregister,
            Op::SetStatus | Op::RemoveStatus => Operation::SetStatus,
            Op::UpdateMetadata => Operation::UpdateMetadata,
            Op::Vip | Op::SecureVip => Operation::Vips,
        }
    }
}

type Meta = RouteMeta<Operation>;

/// The page's routes: not authenticated, redirected to https when the API is.
const UI: Meta = RouteMeta {
    operation: Operation::Ui,
    authenticated: false,
    https_redirect: true,
};

fn routes() -> Router<Route, Operation> {
    let mut router = Router::default();
    // `/`, `/uptime`, `/ready` and `/metrics` are never authenticated nor redirected (spec 1.2,
    // 2.5; observability contract §2, §3).
    for (method, path, route, meta) in [
        (Method::Get, "/", Route::Root, Meta::public(Operation::Root)),
        (
            Method::Get,
            "/uptime",
            Route::Uptime,
            Meta::public(Operation::Uptime),
        ),
        (
            Method::Get,
            "/ready",
            Route::Ready,
            Meta::public(Operation::Ready),
        ),
        (
            Method::Get,
            "/metrics",
            Route::Metrics,
            Meta::public(Operation::Metrics),
        ),
        // The page is public (its data requests carry the person's token), but follows the HTTPS
        // rule of the API it reads, so that it never calls an API on another origin.
        (Method::Get, "/ui", Route::UiRedirect, UI),
        (Method::Get, "/ui/", Route::Ui, UI),
        (Method::Get, "/ui/{file}", Route::Ui, UI),
        (
            Method::Post,
            "/api/v1/instances",
            Route::Register,
            Meta::protected(Operation::Register),
        ),
        (
            Method::Get,
            "/api/v1/instances",
            Route::ListInstances,
            Meta::protected(Operation::ListInstances),
        ),
        (
            Method::Delete,
            "/api/v1/instances/{id}",
            Route::Deregister,
            Meta::protected(Operation::Deregister),
        ),
        (
            Method::Put,
            "/api/v1/instances/{id}/heartbeat",
            Route::Heartbeat,
            Meta::protected(Operation::Renew),
        ),
        (
            Method::Get,
            "/api/v1/services",
            Route::ListServices,
            Meta::protected(Operation::ListServices),
        ),
        (
            Method::Get,
            "/api/v1/services/{name}",
            Route::ServiceInstances,
            Meta::protected(Operation::ListServiceInstances),
        ),
    ] {
        router.add(method, path, route, meta);
    }
    use eureka::Op;
    for (prefix, kind) in [
        ("/api/eureka/{token}/v2", EurekaPrefix::PathToken),
        ("/eureka/v2", EurekaPrefix::HeaderOnly),
        ("/eureka", EurekaPrefix::HeaderOnly),
    ] {
        // Literal routes first: `apps/delta` wins over `apps/{app}` for GET only.
        for (method, path, op) in [
            (Method::Get, "/apps", Op::Apps),
            (Method::Get, "/apps/", Op::Apps),
            (Method::Get, "/apps/delta", Op::Delta),
            (Method::Get, "/apps/{app}", Op::App),
            (Method::Post, "/apps/{app}", Op::Register),
            (Method::Get, "/apps/{app}/{iid}", Op::Instance),
            (Method::Put, "/apps/{app}/{iid}", Op::Renew),
            (Method::Delete, "/apps/{app}/{iid}", Op::Cancel),
            (Method::Put, "/apps/{app}/{iid}/status", Op::SetStatus),
            (Method::Delete, "/apps/{app}/{iid}/status", Op::RemoveStatus),
            (
                Method::Put,
                "/apps/{app}/{iid}/metadata",
                Op::UpdateMetadata,
            ),
            (Method::Get, "/instances/{iid}", Op::InstanceById),
            (Method::Get, "/vips/{vip}", Op::Vip),
            (Method::Get, "/svips/{svip}", Op::SecureVip),
        ] {
            router.add(
                method,
                &format!("{prefix}{path}"),
                Route::Eureka(op, kind),
                Meta::protected(Operation::of_eureka(op)),
            );
        }
    }
    router
}

/// What a handler knows about the request besides its bytes.
#[derive(Clone)]
pub struct Context {
    pub namespace: Namespace,
    /// The one deadline of all the request's store calls.
    pub deadline: Instant,
    /// The request came through the Eureka API.
    pub eureka: bool,
}

impl Context {
    /// The store's view of this request.
    pub fn call(&self) -> Call<'_> {
        Call {
            namespace: self.namespace.as_str(),
            deadline: self.deadline,
            eureka: self.eureka,
        }
    }
}

/// A sixteenth of the connection limit is kept from waiting requests.
const WATCHER_RESERVE_DIVISOR: usize = 16;

/// The API service: routing, the cross-cutting stages and the shared state of the handlers.
pub struct Api {
    router: Router<Route, Operation>,
    pub(crate) registry: Registry,
    pub(crate) cache: Arc<ResponseCache>,
    auth: Authenticator,
    require_https: bool,
    pub(crate) started: Instant,
    /// Itself, for waiting requests that answer later.
    me: Weak<Api>,
    pub(crate) http_metrics: HttpMetrics,
    /// Requests waiting in a blocking query.
    pub(crate) watchers: Arc<AtomicUsize>,
    /// The most requests that may wait at once, once the listener's connection limit is known.
    max_watchers: OnceLock<usize>,
    /// Open client connections, once the listener tells.
    connections: OnceLock<Box<dyn Fn() -> usize + Send + Sync>>,
    /// More `/uptime` components (the cluster's), set once at startup.
    pub(crate) health: std::sync::OnceLock<HealthComponents>,
    /// With replication: whether the initial sync has ended (finished or timed out), for
    /// `/ready`.
    pub(crate) synced: OnceLock<Box<dyn Fn() -> bool + Send + Sync>>,
    /// The replication peers' series (clustered mode), set once at startup.
    pub(crate) peers: std::sync::OnceLock<PeerSeries>,
    /// The grouped snapshots that concurrent streamed Eureka listings share.
    pub(crate) shared_apps: listing::SharedSnapshots<eureka::render::GroupedApps>,
    /// The snapshots that concurrent streamed Amalgam8 instance lists share.
    pub(crate) shared_instances: listing::SharedSnapshots<Vec<Arc<Instance>>>,
}

/// The replication peers as `/metrics` shows them.
pub type PeerSeries = Box<dyn Fn() -> Vec<crate::metrics::PeerMetrics> + Send + Sync>;

/// Extra `/uptime` components: (name, healthy, properties) each.
pub type HealthComponents =
    Box<dyn Fn() -> Vec<(&'static str, bool, serde_json::Value)> + Send + Sync>;

impl Api {
    /// The API over `store`; fails when a thread it needs (the watchers' waker) cannot start.
    pub fn new(
        store: Arc<dyn Store>,
        auth: Authenticator,
        require_https: bool,
    ) -> std::io::Result<Arc<Api>> {
        let gated = store.clone();
        let registry = Registry::new(store)?;
        let cache = Arc::new(ResponseCache::with_gate(
            registry.change_index(),
            Box::new(move || gated.cache_generation()),
        ));
        let listener = cache.clone();
        registry.subscribe(Box::new(move |change| listener.on_change(change)));
        Ok(Arc::new_cyclic(|me| Api {
            router: routes(),
            registry,
            cache,
            auth,
            require_https,
            started: Instant::now(),
            me: me.clone(),
            http_metrics: HttpMetrics::new(OPERATION_NAMES),
            watchers: Arc::new(AtomicUsize::new(0)),
            max_watchers: OnceLock::new(),
            connections: OnceLock::new(),
            health: std::sync::OnceLock::new(),
            synced: OnceLock::new(),
            peers: std::sync::OnceLock::new(),
            shared_apps: Default::default(),
            shared_instances: Default::default(),
        }))
    }

    /// Where `a8registry_connections` reads the open connections; set once.
    pub fn count_connections(&self, open: Box<dyn Fn() -> usize + Send + Sync>) {
        let _ = self.connections.set(open);
    }

    /// Lets at most `max_connections` less a sixteenth of it (at least one) wait at once, so that
    /// waiting requests, which hold their connections for up to ten minutes, always leave
    /// connections for probes and plain requests; set once.
    pub fn limit_watchers(&self, max_connections: usize) {
        let _ = self
            .max_watchers
            .set(max_connections - (max_connections / WATCHER_RESERVE_DIVISOR).max(1));
    }

    /// The most requests that may wait at once (no limit until [`Api::limit_watchers`]).
    pub(crate) fn max_watchers(&self) -> usize {
        self.max_watchers.get().copied().unwrap_or(usize::MAX)
    }

    /// Open client connections (0 until [`Api::count_connections`] was called).
    pub(crate) fn open_connections(&self) -> usize {
        self.connections.get().map_or(0, |open| open())
    }

    /// The read-only catalogs merged into this API's reads, for the sources to publish into.
    pub fn catalogs(&self) -> Arc<crate::catalogs::Catalogs> {
        self.registry.catalogs()
    }

    /// Adds components to `/uptime` (once; later calls are ignored).
    pub fn set_health(&self, components: HealthComponents) {
        let _ = self.health.set(components);
    }

    /// Makes `/ready` wait for the initial sync of clustered mode (once; later calls are
    /// ignored).
    pub fn set_sync_check(&self, ended: Box<dyn Fn() -> bool + Send + Sync>) {
        let _ = self.synced.set(ended);
    }

    /// Adds the replication series to `/metrics` (once; later calls are ignored).
    pub fn set_peer_metrics(&self, peers: PeerSeries) {
        let _ = self.peers.set(peers);
    }

    /// Forgets the bookkeeping of namespaces and services that emptied; run every so often.
    pub fn housekeeping(&self) {
        self.registry.forget_empty();
    }

    /// The "is secure" test of spec 2.6.
    pub fn is_secure(&self, request: &Request) -> bool {
        request.absolute_https
            || request.header("x-forwarded-proto") == Some("https")
            || request.header("$wssc") == Some("https")
    }

    /// The stages of spec 1.2; returns the reply, the operation with its protocol, and the
    /// namespace, once known.
    fn respond(&self, request: &Request) -> (Reply, Operation, Protocol, Option<Namespace>) {
        // Routing is pure: it runs first so that a 415 is counted under its route's operation,
        // and its answers still come in the order of spec 1.2.
        let routed = self.router.route(request.method, &request.path);
        let (operation, protocol) = match &routed {
            Routed::Found(route, meta, _) => (meta.operation, route.protocol()),
            _ => (Operation::NotFound, protocol_of_path(&request.path)),
        };
        let now = |response: Response| (Reply::Now(response), operation, protocol, None);
        if request.declared_length.is_some_and(|n| n > 0) && !acceptable_content_type(request) {
            return now(Response::error(415, BAD_CONTENT_TYPE));
        }
        let (route, meta, raw_params) = match routed {
            Routed::Found(route, meta, params) => (route, meta, params),
            Routed::MethodNotAllowed => return now(Response::error(405, METHOD_NOT_ALLOWED)),
            Routed::NotFound => return now(Response::error(404, RESOURCE_NOT_FOUND)),
        };
        // Decoded in place; a parameter without escapes stays borrowed from the path.
        let mut decoded: [Cow<'_, str>; MAX_PARAMS] = Default::default();
        for (slot, raw) in decoded.iter_mut().zip(raw_params.as_slice()) {
            match percent_decode(raw) {
                Some(p) => *slot = p,
                None => return now(Response::error(400, MALFORMED_PERCENT_ENCODING)),
            }
        }
        let mut params = &decoded[..raw_params.as_slice().len()];
        if meta.https_redirect && self.require_https && !self.is_secure(request) {
            return now(https_redirect(request));
        }
        let namespace = if meta.authenticated {
            // A path token is the first parameter; the handlers see the rest.
            let path_token = match route {
                Route::Eureka(_, EurekaPrefix::PathToken) if !params.is_empty() => {
                    let token = &params[0];
                    params = &params[1..];
                    token.as_ref()
                }
                _ => "",
            };
            match self.authenticate(request, path_token) {
                Ok(namespace) => {
                    // The Kubernetes catalog opens a namespace on its first use.
                    self.registry.namespace_used(namespace.as_str());
                    Some(namespace)
                }
                Err(response) => return now(response),
            }
        } else {
            None
        };
        let ctx = Context {
            namespace: namespace.unwrap_or_else(Namespace::default_namespace),
            // From when the request was complete: no clock read of its own.
            deadline: request.received + REQUEST_DEADLINE,
            eureka: matches!(route, Route::Eureka(..)),
        };
        let param = |i: usize| params.get(i).map_or("", |p| p.as_ref());
        let query = request.query.as_deref();
        let reply = match route {
            Route::Root => Response::empty(200).into(),
            Route::Uptime => ops::uptime(self).into(),
            Route::Ready => ops::ready(self).into(),
            Route::Metrics => ops::metrics(self).into(),
            Route::UiRedirect => ui::redirect().into(),
            Route::Ui => ui::serve(request, param(0)).into(),
            Route::Eureka(op, prefix) => {
                let default_format = match prefix {
                    EurekaPrefix::PathToken => eureka::render::Format::Json,
                    EurekaPrefix::HeaderOnly => eureka::render::Format::Xml,
                };
                eureka::handle(self, &ctx, op, request, params, default_format).into()
            }
            Route::Register => amalgam8::register(self, &ctx, request).into(),
            Route::ListInstances => {
                let watched = watch::Watched::Instances(query.map(Cow::Borrowed));
                watch::serve(self, &ctx, watched, query)
            }
            Route::Deregister => amalgam8::deregister(self, &ctx, param(0)).into(),
            Route::Heartbeat => amalgam8::heartbeat(self, &ctx, param(0)).into(),
            Route::ListServices => watch::serve(self, &ctx, watch::Watched::Services, query),
            Route::ServiceInstances => {
                let watched = watch::Watched::Service(Cow::Borrowed(param(0)));
                watch::serve(self, &ctx, watched, query)
            }
        };
        let namespace = meta.authenticated.then_some(ctx.namespace);
        (reply, operation, protocol, namespace)
    }

    /// The namespace of an authenticated route's request (`path_token` is the Eureka path's
    /// token, if any), or its 401.
    fn authenticate(&self, request: &Request, path_token: &str) -> Result<Namespace, Response> {
        // A token that is not UTF-8 would reach the namespace as a lossy copy, in which different
        // bytes look the same: refuse it rather than let two tenants share a namespace.
        if request
            .non_utf8_headers
            .iter()
            .any(|h| h == "authorization")
        {
            return Err(Response::error(401, AuthError::MalformedHeader.message()));
        }
        extract_token(request.header("authorization"), path_token)
            .and_then(|token| self.auth.namespace_at(token, unix_now_secs))
            .map_err(|error| Response::error(401, error.message()))
    }
}

/// One line of the access log (at debug level).
struct AccessLine {
    method: String,
    path: String,
    started: Instant,
    namespace: Option<Namespace>,
    operation: Operation,
    query: String,
    client: String,
    user_agent: String,
}

impl AccessLine {
    /// Writes the line of `response` now, or for a streamed body once its stream ended, with
    /// the bytes then written.
    fn write_for(self, response: &mut Response) {
        if response.body.is_streamed() {
            let status = response.status;
            response.on_streamed = Some(OnStreamed(Box::new(move |bytes| {
                self.write(status, bytes);
            })));
        } else {
            self.write(response.status, response.body.as_bytes().len() as u64);
        }
    }

    fn write(&self, status: u16, bytes: u64) {
        crate::log::write(
            LogLevel::Debug,
            "request",
            &[
                ("method", &self.method),
                ("path", &self.path),
                ("status", &status),
                ("bytes", &bytes),
                ("micros", &self.started.elapsed().as_micros()),
                (
                    "namespace",
                    &self.namespace.as_ref().map_or("", Namespace::as_str),
                ),
                // Later fields come after the first ones, so that readers matching
                // `path=… status=…` keep working.
                ("query", &self.query),
                ("client", &self.client),
                ("user_agent", &self.user_agent),
                ("operation", &self.operation.name()),
            ],
        );
    }
}

impl Handler for Api {
    fn handle(&self, request: &Request) -> Reply {
        // Reading the clock is skipped unless the access log is on.
        let started = crate::log::enabled(LogLevel::Debug).then(Instant::now);
        let (reply, operation, protocol, namespace) = self.respond(request);
        let tag = metrics_tag(protocol, operation);
        let line = started.map(|started| AccessLine {
            method: request.method_text().to_string(),
            path: request.path.clone(),
            started,
            namespace,
            operation,
            query: request.query.clone().unwrap_or_default(),
            client: request.peer.map_or_else(String::new, |p| p.to_string()),
            user_agent: request.header("user-agent").unwrap_or("").to_string(),
        });
        match reply {
            Reply::Now(mut response) => {
                if let Some(line) = line {
                    line.write_for(&mut response);
                }
                response.tag = tag;
                Reply::Now(response)
            }
            // A waiting request is logged and marked when it is answered.
            Reply::Wait(waiter) => Reply::Wait(waiter.map(move |mut response| {
                if let Some(line) = line {
                    line.write_for(&mut response);
                }
                response.tag = tag;
                response
            })),
        }
    }

    fn written(&self, tag: u16, status: u16, received_nanos: u64) {
        if let Some((protocol, operation)) = of_metrics_tag(tag) {
            let took = crate::raw_clock::monotonic_nanos().saturating_sub(received_nanos);
            self.http_metrics
                .record(protocol, operation, status, Duration::from_nanos(took));
        }
    }
}

/// Instances rendered between two yields of a long render, so one request for a large list does
/// not hold its worker while other connections wait.
const RENDER_YIELD_EVERY: usize = 256;

/// Lets other coroutines of this worker run every [`RENDER_YIELD_EVERY`] steps of a long loop.
pub(crate) fn yield_every(step: usize) {
    if step % RENDER_YIELD_EVERY == RENDER_YIELD_EVERY - 1 {
        crate::http::turn::take_turns();
    }
}

fn unix_now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The 415 rule of spec 1.6: `application/json` (and on Eureka paths `application/xml` or
/// `text/xml`, D6), with a UTF-8 charset if any.
fn acceptable_content_type(request: &Request) -> bool {
    let Some(value) = request.header("content-type") else {
        return false;
    };
    let mut parts = value.split(';');
    let media_type = parts.next().unwrap_or("").trim();
    let eureka_path =
        request.path.starts_with("/api/eureka/") || request.path.starts_with("/eureka/");
    let xml = media_type.eq_ignore_ascii_case("application/xml")
        || media_type.eq_ignore_ascii_case("text/xml");
    let json = media_type.eq_ignore_ascii_case("application/json");
    if !(json || eureka_path && xml) {
        return false;
    }
    for parameter in parts {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        if name.trim().eq_ignore_ascii_case("charset") {
            let value = value.trim().trim_matches('"');
            if !value.eq_ignore_ascii_case("utf-8") {
                return false;
            }
        }
    }
    true
}

/// 301 to the same target over https (spec 2.6).
fn https_redirect(request: &Request) -> Response {
    let host = request.header("host").unwrap_or("");
    let mut location = format!("https://{host}{}", request.path);
    if let Some(query) = &request.query {
        location.push('?');
        location.push_str(query);
    }
    Response::empty(301).with_header("Location", location)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(method: Method, path: &str) -> (Route, Meta) {
        match routes().route(method, path) {
            Routed::Found(route, meta, _) => (route, meta),
            _ => panic!("no route for {method:?} {path}"),
        }
    }

    #[test]
    fn only_root_and_uptime_are_public() {
        for path in ["/", "/uptime"] {
            let (_, meta) = found(Method::Get, path);
            assert!(!meta.authenticated && !meta.https_redirect, "{path}");
        }
        for (method, path) in [
            (Method::Post, "/api/v1/instances"),
            (Method::Get, "/api/v1/instances"),
            (Method::Delete, "/api/v1/instances/x"),
            (Method::Put, "/api/v1/instances/x/heartbeat"),
            (Method::Get, "/api/v1/services"),
            (Method::Get, "/api/v1/services/s"),
            (Method::Get, "/eureka/v2/apps"),
            (Method::Get, "/eureka/apps/delta"),
            (Method::Put, "/api/eureka/t/v2/apps/A/i/status"),
            (Method::Get, "/eureka/v2/svips/v"),
        ] {
            let (_, meta) = found(method, path);
            assert!(meta.authenticated && meta.https_redirect, "{path}");
        }
    }

    #[test]
    fn operations_are_named_across_protocols() {
        for (method, path, name) in [
            (Method::Get, "/", "Root"),
            (Method::Head, "/uptime", "Uptime"),
            (Method::Post, "/api/v1/instances", "Register"),
            (Method::Post, "/eureka/v2/apps/A", "Register"),
            (Method::Put, "/api/v1/instances/x/heartbeat", "Renew"),
            (Method::Put, "/eureka/apps/A/i", "Renew"),
            (Method::Delete, "/api/v1/instances/x", "Deregister"),
            (Method::Delete, "/api/eureka/t/v2/apps/A/i", "Deregister"),
            (Method::Get, "/api/v1/instances", "ListInstances"),
            (Method::Get, "/api/v1/services", "ListServices"),
            (Method::Get, "/api/v1/services/s", "ListServiceInstances"),
            (Method::Get, "/eureka/v2/apps", "Apps"),
            (Method::Get, "/eureka/v2/apps/delta", "AppsDelta"),
            (Method::Post, "/eureka/v2/apps/delta", "Register"),
            (Method::Get, "/eureka/v2/apps/A", "App"),
            (Method::Get, "/eureka/v2/apps/A/i", "GetInfo"),
            (Method::Get, "/eureka/v2/instances/i", "GetInfo"),
            (Method::Delete, "/eureka/v2/apps/A/i/status", "SetStatus"),
            (
                Method::Put,
                "/eureka/v2/apps/A/i/metadata",
                "UpdateMetadata",
            ),
            (Method::Get, "/eureka/v2/vips/v", "Vips"),
        ] {
            assert_eq!(found(method, path).1.operation.name(), name, "{path}");
        }
        assert_eq!(Operation::NotFound.name(), "NotFound");
    }

    #[test]
    fn metrics_name_every_operation_by_its_index_and_tags_round_trip() {
        use Operation::*;
        let all = [
            Root,
            Uptime,
            Ready,
            Metrics,
            Ui,
            Register,
            Deregister,
            Renew,
            ListInstances,
            ListServices,
            ListServiceInstances,
            Apps,
            AppsDelta,
            App,
            GetInfo,
            SetStatus,
            UpdateMetadata,
            Vips,
            NotFound,
        ];
        assert_eq!(all.len(), OPERATION_NAMES.len());
        for operation in all {
            assert_eq!(OPERATION_NAMES[operation as usize], operation.name());
            for protocol in [Protocol::Amalgam8, Protocol::Eureka, Protocol::Ops] {
                let tag = metrics_tag(protocol, operation);
                assert_eq!(of_metrics_tag(tag), Some((protocol, operation as usize)));
            }
        }
        assert_eq!(of_metrics_tag(0), None);
        assert_eq!(of_metrics_tag(u16::MAX), None);
    }

    #[test]
    fn unrouted_requests_take_their_protocol_from_fixed_prefixes() {
        assert_eq!(protocol_of_path("/api/v1/nope"), Protocol::Amalgam8);
        assert_eq!(protocol_of_path("/eureka/v2/x"), Protocol::Eureka);
        assert_eq!(protocol_of_path("/api/eureka/t/v2/x"), Protocol::Eureka);
        assert_eq!(protocol_of_path("/favicon.ico"), Protocol::Ops);
    }
}
