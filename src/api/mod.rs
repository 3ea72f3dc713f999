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
pub mod ops;

use crate::auth::{extract_token, AuthError, Authenticator};
use crate::config::LogLevel;
use crate::http::request::{Method, Request};
use crate::http::response::Response;
use crate::http::router::{percent_decode, RouteMeta, Routed, Router};
use crate::http::server::Handler;
use crate::http::wait::Reply;
use crate::registry::namespace::Namespace;
use crate::registry::store::{Call, Store, REQUEST_DEADLINE};
use crate::registry::Registry;
use cache::ResponseCache;
use error::*;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Every route of the API port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    Root,
    Uptime,
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

/// What a request does, for metrics and logs: one name per operation, whichever protocol
/// carries it (an Amalgam8 heartbeat and a Eureka renewal are both `Renew`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Root,
    Uptime,
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

impl Operation {
    /// The name metrics and logs use.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Root => "Root",
            Operation::Uptime => "Uptime",
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

fn routes() -> Router<Route, Operation> {
    let mut router = Router::default();
    // `/` and `/uptime` are never authenticated nor redirected (spec 1.2, 2.5).
    for (method, path, route, meta) in [
        (Method::Get, "/", Route::Root, Meta::public(Operation::Root)),
        (
            Method::Get,
            "/uptime",
            Route::Uptime,
            Meta::public(Operation::Uptime),
        ),
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

/// The API service: routing, the cross-cutting stages and the shared state of the handlers.
pub struct Api {
    router: Router<Route, Operation>,
    pub(crate) registry: Registry,
    pub(crate) cache: Arc<ResponseCache>,
    auth: Authenticator,
    require_https: bool,
    pub(crate) started: Instant,
    /// More `/uptime` components (the cluster's), set once at startup.
    pub(crate) health: std::sync::OnceLock<HealthComponents>,
}

/// Extra `/uptime` components: (name, healthy, properties) each.
pub type HealthComponents =
    Box<dyn Fn() -> Vec<(&'static str, bool, serde_json::Value)> + Send + Sync>;

impl Api {
    pub fn new(store: Arc<dyn Store>, auth: Authenticator, require_https: bool) -> Api {
        let registry = Registry::new(store);
        let cache = Arc::new(ResponseCache::new(registry.change_index()));
        let listener = cache.clone();
        registry.subscribe(Box::new(move |change| listener.on_change(change)));
        Api {
            router: routes(),
            registry,
            cache,
            auth,
            require_https,
            started: Instant::now(),
            health: std::sync::OnceLock::new(),
        }
    }

    /// Adds components to `/uptime` (once; later calls are ignored).
    pub fn set_health(&self, components: HealthComponents) {
        let _ = self.health.set(components);
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

    /// The stages of spec 1.2; returns the response, the operation and the namespace, once
    /// known.
    fn respond(&self, request: &Request) -> (Response, Operation, Option<Namespace>) {
        let not_found = Operation::NotFound;
        if request.declared_length.is_some_and(|n| n > 0) && !acceptable_content_type(request) {
            return (Response::error(415, BAD_CONTENT_TYPE), not_found, None);
        }
        let (route, meta, raw_params) = match self.router.route(request.method, &request.path) {
            Routed::Found(route, meta, params) => (route, meta, params),
            Routed::MethodNotAllowed => {
                return (Response::error(405, METHOD_NOT_ALLOWED), not_found, None)
            }
            Routed::NotFound => return (Response::error(404, RESOURCE_NOT_FOUND), not_found, None),
        };
        let operation = meta.operation;
        let mut params = Vec::with_capacity(raw_params.len());
        for raw in raw_params {
            match percent_decode(raw) {
                Some(p) => params.push(p),
                None => {
                    let response = Response::error(400, MALFORMED_PERCENT_ENCODING);
                    return (response, operation, None);
                }
            }
        }
        if meta.https_redirect && self.require_https && !self.is_secure(request) {
            return (https_redirect(request), operation, None);
        }
        let namespace = if meta.authenticated {
            match self.authenticate(request, route, &mut params) {
                Ok(namespace) => Some(namespace),
                Err(response) => return (response, operation, None),
            }
        } else {
            None
        };
        let ctx = Context {
            namespace: namespace.unwrap_or_else(Namespace::default_namespace),
            deadline: Instant::now() + REQUEST_DEADLINE,
            eureka: matches!(route, Route::Eureka(..)),
        };
        let param = |i: usize| params.get(i).map_or("", String::as_str);
        let response = match route {
            Route::Root => Response::empty(200),
            Route::Uptime => ops::uptime(self),
            Route::Eureka(op, prefix) => {
                let default_format = match prefix {
                    EurekaPrefix::PathToken => eureka::render::Format::Json,
                    EurekaPrefix::HeaderOnly => eureka::render::Format::Xml,
                };
                eureka::handle(self, &ctx, op, request, &params, default_format)
            }
            Route::Register => amalgam8::register(self, &ctx, request),
            Route::ListInstances => amalgam8::list_instances(self, &ctx, request),
            Route::Deregister => amalgam8::deregister(self, &ctx, param(0)),
            Route::Heartbeat => amalgam8::heartbeat(self, &ctx, param(0)),
            Route::ListServices => amalgam8::list_services(self, &ctx),
            Route::ServiceInstances => amalgam8::service_instances(self, &ctx, param(0)),
        };
        let namespace = meta.authenticated.then_some(ctx.namespace);
        (response, operation, namespace)
    }

    /// The namespace of an authenticated route's request, or its 401. A path token is taken
    /// out of `params`.
    fn authenticate(
        &self,
        request: &Request,
        route: Route,
        params: &mut Vec<String>,
    ) -> Result<Namespace, Response> {
        let path_token = match route {
            Route::Eureka(_, EurekaPrefix::PathToken) => params.remove(0),
            _ => String::new(),
        };
        // A token that is not UTF-8 would reach the namespace as a lossy copy, in which different
        // bytes look the same: refuse it rather than let two tenants share a namespace.
        if request
            .non_utf8_headers
            .iter()
            .any(|h| h == "authorization")
        {
            return Err(Response::error(401, AuthError::MalformedHeader.message()));
        }
        extract_token(request.header("authorization"), &path_token)
            .and_then(|token| self.auth.namespace(token, unix_now_secs()))
            .map_err(|error| Response::error(401, error.message()))
    }
}

impl Handler for Api {
    fn handle(&self, request: &Request) -> Reply {
        // Reading the clock is skipped unless the access log is on.
        let started = crate::log::enabled(LogLevel::Debug).then(Instant::now);
        let (response, operation, namespace) = self.respond(request);
        if let Some(started) = started {
            crate::log::write(
                LogLevel::Debug,
                "request",
                &[
                    ("method", &request.method_text),
                    ("path", &request.path),
                    ("status", &response.status),
                    ("bytes", &response.body.as_bytes().len()),
                    ("micros", &started.elapsed().as_micros()),
                    (
                        "namespace",
                        &namespace.as_ref().map_or("", Namespace::as_str),
                    ),
                    // Later fields come after the first ones, so that readers matching
                    // `path=… status=…` keep working.
                    ("query", &request.query.as_deref().unwrap_or("")),
                    (
                        "client",
                        &request.peer.map_or_else(String::new, |p| p.to_string()),
                    ),
                    ("user_agent", &request.header("user-agent").unwrap_or("")),
                    ("operation", &operation.name()),
                ],
            );
        }
        Reply::Now(response)
    }
}

/// Instances rendered between two yields of a long render, so one request for a large list does
/// not hold its worker while other connections wait.
const RENDER_YIELD_EVERY: usize = 256;

/// Lets other coroutines of this worker run every [`RENDER_YIELD_EVERY`] steps of a long loop.
pub(crate) fn yield_every(step: usize) {
    if step % RENDER_YIELD_EVERY == RENDER_YIELD_EVERY - 1 {
        may::coroutine::yield_now();
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
}
