//! The Amalgam8 protocol, `/api/v1` (spec section 3): JSON in, domain calls, JSON out.

use super::cache::{Built, Key, View};
use super::error::*;
use super::json::{self, nesting_within, write_string as write_str, Text, MAX_JSON_DEPTH};
use super::listing::{self, Lazy};
use super::{yield_every, Api, Context};
use crate::http::request::Request;
use crate::http::response::{Body, CachedBody, More, Producer, Response, Streamed};
use crate::http::router::{first_value, parse_query};
use crate::registry::instance::{
    derived_id, Endpoint, EndpointType, Instance, LimitError, TagCollector, MAX_SERVICE_NAME_BYTES,
    OUT_OF_SERVICE, STARTING, UP,
};
use crate::registry::store::Snapshot;
use crate::registry::Error;

/// `last_heartbeat` of an instance that never had one (a catalog instance).
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

const REGISTRATION_MEMBERS: &[&str] = &[
    "service_name",
    "endpoint",
    "ttl",
    "status",
    "tags",
    "metadata",
];
const ENDPOINT_MEMBERS: &[&str] = &["type", "value"];

/// A registration body, decoded and type-checked but not yet validated; its strings are borrowed
/// from the body unless they hold escapes.
struct Registration<'a> {
    service_name: Option<Text<'a>>,
    /// `None`: missing or null; `Some((type, value))` otherwise.
    endpoint: Option<(Option<Text<'a>>, Option<Text<'a>>)>,
    ttl: Option<u32>,
    status: Option<Text<'a>>,
    tags: Option<Tags>,
    metadata: Option<Arc<RawValue>>,
}

/// The `tags` of a body: every element must be a string (else the body is invalid), and beyond
/// the bound of D38 none are kept, so a body of a million tags costs no more than the bound.
struct Tags(Result<Vec<String>, LimitError>);

impl<'de> serde::Deserialize<'de> for Tags {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Tags, D::Error> {
        deserializer.deserialize_seq(TagsVisitor)
    }
}

struct TagsVisitor;

impl<'de> Visitor<'de> for TagsVisitor {
    type Value = Tags;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tags, A::Error> {
        let mut tags = TagCollector::default();
        while seq.next_element_seed(PushTag(&mut tags))?.is_some() {}
        Ok(Tags(tags.finish()))
    }
}

/// One tag, handed to the collector without a copy of its own.
struct PushTag<'c>(&'c mut TagCollector);

impl<'de> DeserializeSeed<'de> for PushTag<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for PushTag<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, tag: &str) -> Result<(), E> {
        self.0.push(tag);
        Ok(())
    }
}

fn decode_registration(body: &[u8]) -> Result<Registration<'_>, json::Malformed> {
    if !nesting_within(body, MAX_JSON_DEPTH) || !json::surrogate_escapes_paired(body) {
        return Err(json::Malformed);
    }
    let text = std::str::from_utf8(body).map_err(|_| json::Malformed)?;
    let members = json::object(text, REGISTRATION_MEMBERS)?
        .unwrap_or_else(|| json::Members::empty(REGISTRATION_MEMBERS));
    let endpoint = match members.get("endpoint") {
        None => None,
        Some(raw) => match json::object(raw.get(), ENDPOINT_MEMBERS)? {
            None => None,
            Some(inner) => Some((inner.field("type")?, inner.field("value")?)),
        },
    };
    Ok(Registration {
        service_name: members.field("service_name")?,
        endpoint,
        ttl: members.field("ttl")?,
        status: members.field("status")?,
        tags: members.field("tags")?,
        // `null` metadata is kept and echoed as `null` (spec 3.1).
        metadata: members.get("metadata").map(|raw| Arc::from(raw.to_owned())),
    })
}

/// For the sidecar's tests: a registration body as this decoder reads it, as (service name, the
/// id it gets, ttl, tags), so the sidecar's encoder is checked against the server's decoder.
#[cfg(test)]
pub(crate) fn decode_for_tests(body: &[u8]) -> (String, String, Option<u32>, Vec<String>) {
    let registration = decode_registration(body).expect("a well-formed registration body");
    let text = |text: Option<Text<'_>>| text.map(|t| t.0.into_owned()).unwrap_or_default();
    let service = text(registration.service_name);
    let (kind, value) = registration.endpoint.expect("an endpoint");
    let endpoint = Endpoint {
        kind: EndpointType::parse(&text(kind)).expect("a valid endpoint type"),
        value: text(value),
    };
    let tags = registration
        .tags
        .map(|tags| tags.0.expect("tags within the limits"))
        .unwrap_or_default();
    let id = derived_id(&service, &endpoint).as_str().to_string();
    (service, id, registration.ttl, tags)
}

/// A registration body as the instance it registers, unnamed ([`Instance::unnamed`]), and its
/// service name, borrowed from the body unless it has escapes; or the 400 (or limit) answer it
/// gets (spec 3.4). The store's own checks (capacity, namespace limits) come after.
pub fn decode_instance(body: &[u8]) -> Result<(Instance, Text<'_>), Response> {
    let Ok(registration) = decode_registration(body) else {
        return Err(Response::error(400, REGISTRATION_FAILURE));
    };
    let service_name = match registration.service_name {
        Some(name) if !name.is_empty() => name,
        _ => return Err(Response::error(400, SERVICE_NAME_MISSING)),
    };
    let Some((kind, value)) = registration.endpoint else {
        return Err(Response::error(400, ENDPOINT_MISSING));
    };
    let (Some(kind), Some(value)) = (
        kind.filter(|k| !k.is_empty()),
        value.filter(|v| !v.is_empty()),
    ) else {
        return Err(Response::error(400, ENDPOINT_TYPE_OR_VALUE_MISSING));
    };
    let Some(kind) = EndpointType::parse(&kind) else {
        return Err(Response::error(400, ENDPOINT_TYPE_INVALID));
    };
    let status = match registration.status.as_deref() {
        None | Some("") => UP,
        Some(s) => match [UP, STARTING, OUT_OF_SERVICE]
            .into_iter()
            .find(|known| known.eq_ignore_ascii_case(s))
        {
            Some(known) => known,
            None => return Err(Response::error(400, STATUS_INVALID)),
        },
    };
    // The endpoint's value is kept: its one copy.
    let endpoint = Endpoint {
        kind,
        value: value.0.into_owned(),
    };
    let id = derived_id(&service_name, &endpoint);
    let mut instance = Instance::unnamed(
        id.as_str(),
        endpoint,
        status,
        Duration::from_secs(u64::from(registration.ttl.unwrap_or(0))),
    );
    instance.metadata = registration.metadata;
    match registration.tags {
        None => {}
        Some(Tags(Ok(tags))) => instance.tags = tags,
        Some(Tags(Err(exceeded))) => {
            // The service name is checked first, and the unnamed instance cannot tell.
            let limit = if service_name.len() > MAX_SERVICE_NAME_BYTES {
                LimitError::ServiceName
            } else {
                instance.first_limit_error(exceeded)
            };
            return Err(registration_error(&Error::limit(limit)));
        }
    }
    Ok((instance, service_name))
}

/// `POST /api/v1/instances` (spec 3.4).
pub fn register(api: &Api, ctx: &Context, request: &Request) -> Response {
    let (instance, service_name) = match decode_instance(&request.body) {
        Ok(decoded) => decoded,
        Err(refused) => return refused,
    };
    let stored = match api
        .registry
        .register_named(&ctx.call(), &service_name, instance)
    {
        Ok(stored) => stored,
        Err(error) => return registration_error(&error),
    };
    let scheme = if api.is_secure(request) {
        "https"
    } else {
        "http"
    };
    let host = request.header("host").unwrap_or("");
    let link = [scheme, "://", host, "/api/v1/instances/", &stored.id];
    const HEARTBEAT: &str = "/heartbeat";
    // Written into the room of the connection's last answer. The link is written once, and
    // copied for its heartbeat form and (from the body) into the `Location` header, unless some
    // part needs escaping in JSON (no `Host` the server accepts does now; the check keeps the
    // header right should that change): then it is a string of its own.
    let mut body = request.take_room();
    body.reserve(REGISTERED_BODY_BYTES);
    body.extend_from_slice(b"{\"id\":");
    write_str(&mut body, &stored.id);
    let ttl = stored.ttl.as_secs();
    if ttl != 0 {
        use std::io::Write;
        let _ = write!(body, ",\"ttl\":{ttl}");
    }
    body.extend_from_slice(b",\"links\":{\"self\":");
    if link.iter().all(|part| json::needs_no_escape(part)) {
        body.push(b'"');
        let start = body.len();
        for part in link {
            body.extend_from_slice(part.as_bytes());
        }
        let self_link = start..body.len();
        body.extend_from_slice(b"\",\"heartbeat\":\"");
        body.extend_from_within(self_link.clone());
        body.extend_from_slice(b"/heartbeat\"}}");
        return Response::json(201, body).with_header_from_body("Location", self_link);
    }
    let mut self_link = link.concat();
    write_str(&mut body, &self_link);
    body.extend_from_slice(b",\"heartbeat\":");
    let self_len = self_link.len();
    self_link.push_str(HEARTBEAT);
    write_str(&mut body, &self_link);
    self_link.truncate(self_len);
    body.extend_from_slice(b"}}");
    Response::json(201, body).with_header("Location", self_link)
}

/// Room for a registration's answer with a `Host` of ordinary length.
const REGISTERED_BODY_BYTES: usize = 256;

/// `DELETE /api/v1/instances/{id}` (spec 3.5).
pub fn deregister(api: &Api, ctx: &Context, id: &str) -> Response {
    match api.registry.deregister(&ctx.call(), id) {
        Ok(()) => Response::empty(200),
        Err(error) => lease_error(&error, DEREGISTRATION_FAILURE),
    }
}

/// `PUT /api/v1/instances/{id}/heartbeat` (spec 3.6).
pub fn heartbeat(api: &Api, ctx: &Context, id: &str) -> Response {
    if id.is_empty() {
        return Response::error(400, INSTANCE_ID_MISSING);
    }
    match api.registry.heartbeat(&ctx.call(), id) {
        Ok(()) => Response::empty(200),
        Err(error) => lease_error(&error, HEARTBEAT_FAILURE),
    }
}

/// `GET /api/v1/services` (spec 3.8).
pub fn list_services(api: &Api, ctx: &Context) -> Response {
    match api.registry.services(&ctx.call()) {
        Ok(names) => {
            let mut body = Vec::with_capacity(16 + names.len() * 16);
            body.extend_from_slice(b"{\"services\":[");
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                write_str(&mut body, name);
            }
            body.extend_from_slice(b"]}");
            Response::json(200, body)
        }
        Err(error) => failure(&error, 500, SERVICE_ENUMERATION),
    }
}

/// `GET /api/v1/services/{name}` (spec 3.9): every status, no projection, 404 when absent.
pub fn service_instances(api: &Api, ctx: &Context, name: &str) -> Response {
    // Written only when the body is built: a cached answer allocates nothing.
    let prefix = |body: &mut Vec<u8>| {
        body.extend_from_slice(b"{\"service_name\":");
        write_str(body, name);
        body.extend_from_slice(b",\"instances\":[");
    };
    match cached_service_body(api, ctx, name, View::Service, &prefix) {
        Ok(Some(body)) => Response::cached_json(200, body),
        Ok(None) => Response::error(404, SERVICE_ENUMERATION),
        Err(error) => failure(&error, 500, SERVICE_ENUMERATION),
    }
}

/// The body `<prefix><instances>]}` of one service's instances, from the cache or built and
/// cached; `None` when the service has no live instance.
fn cached_service_body(
    api: &Api,
    ctx: &Context,
    service: &str,
    view: View,
    prefix: &dyn Fn(&mut Vec<u8>),
) -> Result<Option<Arc<CachedBody>>, Error> {
    let key = Key {
        namespace: &ctx.namespace,
        service,
        view,
    };
    let now = || api.registry.clock().monotonic_nanos();
    api.cache.get_or_build(key, &now, || {
        let snapshot = api.registry.snapshot(&ctx.call(), Some(service))?;
        // Absent services are not cached: any client could otherwise fill the cache with the
        // names of services (and namespaces) that do not exist.
        if snapshot.instances.is_empty() {
            return Ok(Built::Absent);
        }
        let mut body = Vec::new();
        prefix(&mut body);
        for (i, instance) in snapshot.instances.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            write_instance(&mut body, instance, None);
        }
        body.extend_from_slice(b"]}");
        Ok(Built::Cacheable(body, snapshot.stale_after))
    })
}

/// The instance fields a `fields` projection may name (spec 3.7).
const PROJECTABLE: [&str; 9] = [
    "id",
    "service_name",
    "endpoint",
    "ttl",
    "status",
    "metadata",
    "last_heartbeat",
    "links",
    "tags",
];

/// Which fields to write; `None` writes all. `id` and `endpoint` are always written.
#[derive(Clone, Copy, Default)]
struct Projection {
    service_name: bool,
    ttl: bool,
    status: bool,
    metadata: bool,
    last_heartbeat: bool,
    tags: bool,
}

/// The 400 that a `GET /api/v1/instances` query gets for its `fields` or selection keys, if any:
/// a blocking query checks it before it waits (observability contract §1.2).
pub fn instances_query_error(query: Option<&str>) -> Option<Response> {
    instances_projection(&parse_query(query)).err()
}

/// The `fields` projection of a `GET /api/v1/instances` query, or the 400 for a field or a
/// selection key it does not know.
fn instances_projection(query: &[(String, String)]) -> Result<Option<Projection>, Response> {
    let projection = match first_value(query, "fields") {
        None => None,
        Some(fields) => {
            let mut projection = Projection::default();
            if !fields.is_empty() {
                for field in fields.split(',') {
                    match field {
                        "service_name" => projection.service_name = true,
                        "ttl" => projection.ttl = true,
                        "status" => projection.status = true,
                        "metadata" => projection.metadata = true,
                        "last_heartbeat" => projection.last_heartbeat = true,
                        "tags" => projection.tags = true,
                        f if PROJECTABLE.contains(&f) => {}
                        _ => return Err(Response::error(400, FILTER_BAD_FIELDS)),
                    }
                }
            }
            Some(projection)
        }
    };
    // `index` and `wait` belong to blocking queries (observability contract §1.2).
    if query.iter().any(|(name, _)| {
        !matches!(
            name.as_str(),
            "fields" | "id" | "service_name" | "status" | "tags" | "index" | "wait"
        )
    }) {
        return Err(Response::error(400, FILTER_SELECTION_CRITERIA));
    }
    Ok(projection)
}

/// `GET /api/v1/instances` (spec 3.7) with the raw query string.
pub fn list_instances(api: &Api, ctx: &Context, query: Option<&str>) -> Response {
    let query = parse_query(query);
    let projection = match instances_projection(&query) {
        Ok(projection) => projection,
        Err(refused) => return refused,
    };
    let id = first_value(&query, "id");
    let service = first_value(&query, "service_name");
    let tags = first_value(&query, "tags").map(TagFilter::new);
    let status = first_value(&query, "status").map(|s| {
        match ["UP", "STARTING", "OUT_OF_SERVICE", "ALL"]
            .into_iter()
            .find(|known| known.eq_ignore_ascii_case(s))
        {
            Some(known) => known.to_string(),
            None => s.to_string(),
        }
    });
    let other_selection = id.is_some() || service.is_some() || tags.is_some();

    // The common poll "all instances of one service" is served from the cache.
    if let (Some(service), None, None, None, None) = (service, id, &tags, &status, projection) {
        return match cached_service_body(api, ctx, service, View::Instances, &|body| {
            body.extend_from_slice(b"{\"instances\":[")
        }) {
            Ok(Some(body)) => Response::cached_json(200, body),
            Ok(None) => Response::json(200, b"{\"instances\":[]}".to_vec()),
            Err(error) => failure(&error, 500, INSTANCE_ENUMERATION),
        };
    }

    // A namespace's whole list, by status at most: streamed with its snapshot taken off the
    // worker when the namespace's count says it is large.
    let every_status = match status.as_deref() {
        None => Some(false),
        Some("ALL") => Some(true),
        Some(_) => None,
    };
    if let (false, Some(every_status)) = (other_selection, every_status) {
        if let Some(listing) = streamed_namespace_list(api, ctx, every_status, projection) {
            let mut response = Response::empty(200);
            response.body = Body::Streamed(Streamed(Box::new(listing)));
            return response;
        }
    }

    let mut seen = Vec::new();
    let mut selected = |instance: &Instance| -> bool {
        if id.is_some_and(|id| *instance.id != *id) {
            return false;
        }
        if let Some(tags) = &tags {
            if !tags.matches(&instance.tags, &mut seen) {
                return false;
            }
        }
        match status.as_deref() {
            Some("ALL") => true,
            Some(wanted) => instance.status == wanted,
            None if other_selection => true,
            None => instance.status != STARTING && instance.status != OUT_OF_SERVICE,
        }
    };
    // An id names at most one instance: look it up instead of scanning the namespace.
    let found = match id {
        Some(id) => api.registry.get(&ctx.call(), id).map(|found| Snapshot {
            instances: found
                .into_iter()
                .filter(|i| service.is_none_or(|s| *i.service_name == *s))
                .collect(),
            stale_after: None,
        }),
        None => api.registry.snapshot(&ctx.call(), service),
    };
    let mut instances = match found {
        Ok(snapshot) => snapshot.instances,
        Err(error) => return failure(&error, 500, INSTANCE_ENUMERATION),
    };
    let mut looked_at = 0;
    instances.retain(|instance| {
        // Every instance looked at counts toward a yield, matched or not.
        yield_every(looked_at);
        looked_at += 1;
        selected(instance)
    });
    let listing = InstanceList {
        // Already selected.
        every_status: true,
        instances: Arc::new(instances),
        projection,
        next: None,
        written: 0,
    };
    if listing::is_streamed(listing.instances.len()) {
        let mut response = Response::empty(200);
        response.body = Body::Streamed(Streamed(Box::new(listing)));
        return response;
    }
    Response::json(200, Streamed(Box::new(listing)).collect(usize::MAX))
}

/// The namespace's instance list (`every_status`: of every status, else without the `STARTING`
/// and `OUT_OF_SERVICE` ones), streamed, when its instance count (known before any snapshot) says
/// it is large: the snapshot is taken on the render thread, or shared with the other lists of the
/// namespace rendering at the same change ([`listing::SharedSnapshots`]). The count is of every
/// status, so a namespace just over the threshold with a few instances left out may stream a
/// list of fewer: the bytes are the same either way. `None` for the path that snapshots here.
fn streamed_namespace_list(
    api: &Api,
    ctx: &Context,
    every_status: bool,
    projection: Option<Projection>,
) -> Option<Lazy> {
    let (api, ctx) = listing::streamed_owner(api, ctx)?;
    Some(Lazy::new(Box::new(move || {
        let call = ctx.call();
        // Read before the store: a change from here on makes the snapshot unshareable.
        let index = api.registry.namespace_index(&call);
        let now = || api.registry.clock().monotonic_nanos();
        let instances = api
            .shared_instances
            .get_or_take(&ctx.namespace, index, &now, || {
                let snapshot = api.registry.snapshot(&call, None)?;
                Ok::<_, Error>((snapshot.instances, snapshot.stale_after))
            })
            .ok()?;
        let listing: Box<dyn Producer> = Box::new(InstanceList {
            instances,
            every_status,
            projection,
            next: None,
            written: 0,
        });
        Some(listing)
    })))
}

/// `{"instances":[…]}` of the instances given (a namespace's shared snapshot, or what a query
/// selected), those of the selected statuses, rendered a piece at a time: whole for a short list,
/// streamed for a long one ([`crate::api::listing`]).
struct InstanceList {
    instances: Arc<Vec<Arc<Instance>>>,
    every_status: bool,
    projection: Option<Projection>,
    /// The next instance to look at; `None` before the head.
    next: Option<usize>,
    /// Instances written so far.
    written: usize,
}

impl Producer for InstanceList {
    fn produce(&mut self, out: &mut Vec<u8>, fill_to: usize) -> More {
        let mut next = match self.next {
            Some(next) => next,
            None => {
                out.extend_from_slice(b"{\"instances\":[");
                0
            }
        };
        while let Some(instance) = self.instances.get(next) {
            if out.len() >= fill_to {
                self.next = Some(next);
                return More::Yes;
            }
            next += 1;
            if !self.every_status
                && (instance.status == STARTING || instance.status == OUT_OF_SERVICE)
            {
                continue;
            }
            if self.written > 0 {
                out.push(b',');
            }
            write_instance(out, instance, self.projection);
            self.written += 1;
            // A whole body is made in one call, on a worker: it yields as a pass over a
            // snapshot does (a render thread does not).
            yield_every(next);
        }
        out.extend_from_slice(b"]}");
        More::Done
    }
}

/// A `tags=a,b` selection (spec 3.7): an instance must carry every listed tag. The distinct tags
/// are numbered once per request, and each instance's tags are looked up in them, so the cost is
/// one pass over the instance's tags whatever the length of the query.
struct TagFilter<'q> {
    wanted: HashMap<&'q str, usize>,
}

impl<'q> TagFilter<'q> {
    fn new(query: &'q str) -> TagFilter<'q> {
        let mut wanted = HashMap::new();
        for tag in query.split(',') {
            let next = wanted.len();
            wanted.entry(tag).or_insert(next);
        }
        TagFilter { wanted }
    }

    /// True when `tags` holds every wanted tag; `seen` is scratch space kept between calls.
    fn matches(&self, tags: &[String], seen: &mut Vec<bool>) -> bool {
        let needed = self.wanted.len();
        if tags.len() < needed {
            return false;
        }
        seen.clear();
        seen.resize(needed, false);
        let mut found = 0;
        for tag in tags {
            if let Some(&slot) = self.wanted.get(tag.as_str()) {
                if !seen[slot] {
                    seen[slot] = true;
                    found += 1;
                    if found == needed {
                        return true;
                    }
                }
            }
        }
        false
    }
}

/// Writes one instance in the field order of spec 3.7, leaving out empty fields.
fn write_instance(out: &mut Vec<u8>, instance: &Instance, projection: Option<Projection>) {
    let all = Projection {
        service_name: true,
        ttl: true,
        status: true,
        metadata: true,
        last_heartbeat: true,
        tags: true,
    };
    let show = projection.unwrap_or(all);
    out.extend_from_slice(b"{\"id\":");
    write_str(out, &instance.id);
    if show.service_name && !instance.service_name.is_empty() {
        out.extend_from_slice(b",\"service_name\":");
        write_str(out, &instance.service_name);
    }
    out.extend_from_slice(b",\"endpoint\":{\"type\":\"");
    out.extend_from_slice(instance.endpoint.kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"value\":");
    write_str(out, &instance.endpoint.value);
    out.push(b'}');
    let ttl = instance.ttl.as_secs();
    if show.ttl && ttl != 0 {
        out.extend_from_slice(b",\"ttl\":");
        out.extend_from_slice(ttl.to_string().as_bytes());
    }
    if show.status && !instance.status.is_empty() {
        out.extend_from_slice(b",\"status\":");
        write_str(out, &instance.status);
    }
    if let (true, Some(metadata)) = (show.metadata, &instance.metadata) {
        out.extend_from_slice(b",\"metadata\":");
        out.extend_from_slice(metadata.get().as_bytes());
    }
    if show.last_heartbeat {
        out.extend_from_slice(b",\"last_heartbeat\":\"");
        // A catalog instance has no heartbeat: Go's zero time, as the original showed it.
        let heartbeat = match instance.last_heartbeat.get() {
            0 => ZERO_TIME.to_string(),
            unix_nanos => crate::log::rfc3339(i128::from(unix_nanos), 9),
        };
        out.extend_from_slice(heartbeat.as_bytes());
        out.push(b'"');
    }
    if show.tags && !instance.tags.is_empty() {
        out.extend_from_slice(b",\"tags\":[");
        for (i, tag) in instance.tags.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, tag);
        }
        out.push(b']');
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_decoding_is_strict_about_types() {
        assert!(decode_registration(b"").is_err());
        assert!(decode_registration(b"[]").is_err());
        assert!(decode_registration(br#"{"service_name":"a"} x"#).is_err());
        assert!(decode_registration(br#"{"ttl":-1}"#).is_err());
        assert!(decode_registration(br#"{"ttl":"30"}"#).is_err());
        assert!(decode_registration(br#"{"ttl":30.0}"#).is_err());
        assert!(decode_registration(br#"{"tags":"a"}"#).is_err());
        assert!(decode_registration(br#"{"endpoint":"x"}"#).is_err());
        let null = decode_registration(b"null").unwrap();
        assert!(null.service_name.is_none());
        let dup = decode_registration(br#"{"service_name":"a","service_name":"b"}"#).unwrap();
        assert_eq!(dup.service_name.as_deref(), Some("b"));
        let meta = decode_registration(br#"{"metadata":null}"#).unwrap();
        assert_eq!(meta.metadata.unwrap().get(), "null");
        let keys = decode_registration(br#"{"SERVICE_NAME":"case"}"#).unwrap();
        assert!(keys.service_name.is_none());
        assert!(decode_registration(br#"{"tags":["a",1]}"#).is_err());
        assert!(decode_registration(br#"{"tags":["a",null]}"#).is_err());
        let tags = |n: usize| {
            let body = format!(r#"{{"tags":{}}}"#, serde_json::json!(vec!["t"; n]));
            decode_registration(body.as_bytes())
                .unwrap()
                .tags
                .unwrap()
                .0
        };
        assert_eq!(tags(256).unwrap().len(), 256);
        assert_eq!(tags(257), Err(LimitError::Tags));
        assert_eq!(tags(300_000), Err(LimitError::Tags));
    }

    #[test]
    fn tag_filters_need_every_distinct_tag() {
        let owned = |tags: &[&str]| tags.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        let mut seen = Vec::new();
        let filter = TagFilter::new("DB,NoSQL,DB");
        assert!(filter.matches(&owned(&["NoSQL", "x", "DB"]), &mut seen));
        assert!(!filter.matches(&owned(&["DB", "DB", "DB"]), &mut seen));
        assert!(!filter.matches(&owned(&["DB"]), &mut seen));
        assert!(TagFilter::new("").matches(&owned(&["a", ""]), &mut seen));
        assert!(!TagFilter::new("").matches(&owned(&["a"]), &mut seen));
        let long = "z,".repeat(10_000) + "y";
        let filter = TagFilter::new(&long);
        assert_eq!(filter.wanted.len(), 2);
        assert!(filter.matches(&owned(&["y", "z"]), &mut seen));
    }

    #[test]
    fn hostile_registration_bodies_never_panic() {
        let body = br#"{"service_name":"s","endpoint":{"type":"tcp","value":"v"},"ttl":5,"status":"up","tags":["a"],"metadata":{"k":[1,{"x":null}]}}"#;
        let mut rng = crate::testing::Rng::new(11);
        for _ in 0..20_000 {
            let _ = decode_registration(&rng.mutate(body));
        }
    }
}
