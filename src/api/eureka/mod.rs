//! The Eureka-compatible protocol (spec section 4): Netflix Eureka clients register, renew,
//! discover and cancel here, in JSON or XML, under three base paths (D5).
//!
//! Eureka ids are `APP:instanceId` in the shared store (with `:` escaped in the app part where
//! it has one, see [`model::store_id`]), so both protocols see every instance. `model` decodes
//! registrations, `xml` reads and writes Netflix's XML, `render` draws instances and application
//! documents, `delta` keeps the recent-change log.

pub mod model;
pub mod render;
pub mod xml;

use super::cache::{Built, Key, View};
use super::error::{failure, registration_error};
use super::json::{ordered_members, push_string, OrderedObject};
use super::listing;
use super::yield_every;
use super::{Api, Context};
use crate::http::request::Request;
use crate::http::response::{Body, CachedBody, Producer, Response, Streamed};
use crate::http::router::{first_value, parse_query};
use crate::registry::instance::Status;
use crate::registry::store::{ChangeKind, Lookup};
use crate::registry::Error;
use listing::Lazy;
use model::RegisterError;
use render::{Action, Apps, AppsListing, Format, GroupedApps};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

const INSTANCE_NOT_FOUND: &str = "Instance not found";
const APPLICATION_NOT_FOUND: &str = "Failed to look-up application";
const APPLICATION_ENUMERATION: &str = "Failed to list applications";
const APPLICATION_MISMATCH: &str = "Application name mismatch";
const REQUIRED_FIELDS_MISSING: &str =
    "Missing required field(s): hostname, application, vipAddress or IPAddress";
const STATUS_MISSING: &str = "No status value set";
const VIP_ENUMERATION: &str = "Failed to list vip";
const REGISTRATION_FAILURE: &str = "Failed to register instance";

/// Every Eureka operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Apps,
    Delta,
    App,
    Register,
    Instance,
    Renew,
    Cancel,
    SetStatus,
    RemoveStatus,
    UpdateMetadata,
    InstanceById,
    Vip,
    SecureVip,
}

/// The response format: JSON if `Accept` mentions json, else XML if it mentions xml, else the
/// prefix's default (spec D6).
pub fn negotiate(request: &Request, default: Format) -> Format {
    match request.header("accept").map(str::to_ascii_lowercase) {
        Some(accept) if accept.contains("json") => Format::Json,
        Some(accept) if accept.contains("xml") => Format::Xml,
        _ => default,
    }
}

fn document(format: Format, status: u16, body: Body) -> Response {
    let mut response = Response::empty(status);
    response.body = body;
    if format == Format::Xml {
        response.content_type = crate::http::response::XML;
    }
    response
}

/// Serves one Eureka operation; `params` are the decoded path parameters after the token.
pub fn handle(
    api: &Api,
    ctx: &Context,
    op: Op,
    request: &Request,
    params: &[Cow<'_, str>],
    default_format: Format,
) -> Response {
    let param = |i: usize| params.get(i).map_or("", |p| p.as_ref());
    // Negotiated only by the operations that answer a document (not renew, nor cancel).
    let format = || negotiate(request, default_format);
    let store_id = || model::store_id(param(0), param(1));
    match op {
        Op::Register => register(api, ctx, request, param(0)),
        Op::Renew => lease_answer(api.registry.heartbeat(&ctx.call(), &store_id())),
        Op::Cancel => lease_answer(api.registry.deregister(&ctx.call(), &store_id())),
        Op::Apps => all_apps(api, ctx, format()),
        Op::Delta => delta(api, ctx, format()),
        Op::App => one_app(api, ctx, param(0), format()),
        Op::Instance => match api.registry.get(&ctx.call(), &store_id()) {
            Ok(Some(instance)) => {
                let format = format();
                document(
                    format,
                    200,
                    Body::Owned(render::instance_document(format, &instance)),
                )
            }
            Ok(None) => Response::error(404, INSTANCE_NOT_FOUND),
            Err(error) => failure(&error, 404, INSTANCE_NOT_FOUND),
        },
        Op::InstanceById => instance_by_id(api, ctx, param(0), format()),
        Op::SetStatus | Op::RemoveStatus => set_status(
            api,
            ctx,
            request,
            param(0),
            &store_id(),
            op == Op::SetStatus,
        ),
        Op::UpdateMetadata => update_metadata(api, ctx, request, &store_id()),
        Op::Vip | Op::SecureVip => vip_list(api, ctx, param(0), op == Op::SecureVip, format()),
    }
}

/// Renew and cancel: 200, 404 for an unknown instance (D8), 503 when the store is unavailable.
fn lease_answer(result: Result<(), Error>) -> Response {
    match result {
        Ok(()) => Response::empty(200),
        Err(error) => failure(&error, 404, INSTANCE_NOT_FOUND),
    }
}

fn is_xml_body(request: &Request) -> bool {
    request.header("content-type").is_some_and(|ct| {
        let media_type = ct.split(';').next().unwrap_or("").trim();
        media_type.eq_ignore_ascii_case("application/xml")
            || media_type.eq_ignore_ascii_case("text/xml")
    })
}

/// `POST E/apps/{app}` (spec 4.4).
fn register(api: &Api, ctx: &Context, request: &Request, app: &str) -> Response {
    let instance = match model::decode(&request.body, is_xml_body(request), app) {
        Ok(instance) => instance,
        Err(RegisterError::Invalid) => return Response::error(400, REGISTRATION_FAILURE),
        Err(RegisterError::MissingFields) => return Response::error(400, REQUIRED_FIELDS_MISSING),
        Err(RegisterError::AppMismatch) => return Response::error(400, APPLICATION_MISMATCH),
        Err(RegisterError::Limit(limit)) => return registration_error(&Error::limit(limit)),
    };
    match api.registry.register(&ctx.call(), instance) {
        Ok(_) => Response::empty(204),
        Err(error) => registration_error(&error),
    }
}

/// A document of the namespace or of one app.
enum Document {
    Cached(Arc<CachedBody>),
    /// An app without instances.
    Absent,
}

/// Builds (or takes from the cache) a document of the namespace or of one app. Documents of an
/// empty namespace are answered but not cached. A namespace's listing of many instances is
/// streamed instead ([`streamed_listing`]), as its instance count says before any snapshot: one
/// that grew past the threshold meanwhile is built and cached here, as with the Redis store.
fn cached_document(
    api: &Api,
    ctx: &Context,
    service: Option<&str>,
    view: View,
    build: &dyn Fn(&mut Apps, u64) -> Vec<u8>,
    format: Format,
) -> Result<Document, Error> {
    let key = Key {
        namespace: &ctx.namespace,
        service: service.unwrap_or(""),
        view,
    };
    let now = || api.registry.clock().monotonic_nanos();
    let cached = api.cache.get_or_build(key, &now, || {
        // The version is read before the store, so a cached body never carries a newer one
        // than its instances.
        let version = api.registry.change_log_version(&ctx.call())?;
        let snapshot = api.registry.snapshot(&ctx.call(), service)?;
        let mut apps = Apps::default();
        for (i, instance) in snapshot.instances.iter().enumerate() {
            apps.add(format, instance, Action::of(instance));
            yield_every(i);
        }
        Ok(match (service, snapshot.instances.is_empty()) {
            (Some(_), true) => Built::Absent,
            (None, true) => Built::Uncacheable(build(&mut apps, version)),
            (_, false) => Built::Cacheable(build(&mut apps, version), snapshot.stale_after),
        })
    })?;
    Ok(match cached {
        Some(body) => Document::Cached(body),
        None => Document::Absent,
    })
}

/// `GET E/apps` and `E/apps/`: every instance of the namespace, all statuses.
fn all_apps(api: &Api, ctx: &Context, format: Format) -> Response {
    if let Some(listing) = streamed_listing(api, ctx, format) {
        return document(format, 200, Body::Streamed(Streamed(Box::new(listing))));
    }
    let build = |apps: &mut Apps, version: u64| {
        apps.applications_document(format, version, &apps.hash_code())
    };
    match cached_document(api, ctx, None, View::EurekaApps(format), &build, format) {
        Ok(Document::Cached(body)) => document(format, 200, Body::Cached(body)),
        Ok(Document::Absent) => Response::error(500, APPLICATION_ENUMERATION),
        Err(error) => failure(&error, 500, APPLICATION_ENUMERATION),
    }
}

/// The namespace's listing, streamed, when its instance count (known before any snapshot) says
/// it is large and snapshots are local: the snapshot is taken on the render thread, or shared
/// with the other listings of the namespace rendering at the same change
/// ([`listing::SharedSnapshots`]). `None` for the cached path. Streamed only from a local
/// snapshot: from Redis each fetch would read every record again, so its listing is built once
/// and cached as smaller ones are.
fn streamed_listing(api: &Api, ctx: &Context, format: Format) -> Option<Lazy> {
    let (api, ctx) = listing::streamed_owner(api, ctx)?;
    Some(Lazy::new(Box::new(move || {
        let call = ctx.call();
        // Read before the store: a change from here on makes the snapshot unshareable.
        let index = api.registry.namespace_index(&call);
        let now = || api.registry.clock().monotonic_nanos();
        let grouped = api
            .shared_apps
            .get_or_take(&ctx.namespace, index, &now, || {
                // The version is read before the store, as the cached path reads it.
                let version = api.registry.change_log_version(&call)?;
                let snapshot = api.registry.snapshot(&call, None)?;
                let grouped = GroupedApps::new(version, snapshot.instances, &|_| {});
                Ok::<_, Error>((grouped, snapshot.stale_after))
            });
        let listing: Box<dyn Producer> = Box::new(AppsListing::new(format, grouped.ok()?));
        Some(listing)
    })))
}

/// `GET E/apps/{app}`: 404 when the app has no instance (D9).
fn one_app(api: &Api, ctx: &Context, app: &str, format: Format) -> Response {
    let build = |apps: &mut Apps, _version: u64| apps.application_document(format);
    match cached_document(api, ctx, Some(app), View::EurekaApp(format), &build, format) {
        Ok(Document::Cached(body)) => document(format, 200, Body::Cached(body)),
        Ok(Document::Absent) => Response::error(404, APPLICATION_NOT_FOUND),
        Err(error) => failure(&error, 500, APPLICATION_ENUMERATION),
    }
}

/// The hash code of spec §4.8 from per-status counts sorted by status; an empty status counts
/// as `UP`.
fn hash_code_of(counts: &[(Arc<str>, u64)]) -> String {
    let mut merged: Vec<(&str, u64)> = Vec::with_capacity(counts.len());
    for (status, count) in counts {
        let status = if status.is_empty() { "UP" } else { status };
        match merged.iter_mut().find(|(s, _)| *s == status) {
            Some(entry) => entry.1 += count,
            None => merged.push((status, *count)),
        }
    }
    merged.sort_unstable();
    merged
        .iter()
        .map(|(status, count)| format!("{status}_{count}_"))
        .collect()
}

/// `GET E/apps/delta` (D7): the instances changed in the last 3 minutes, with the hash code of
/// the full list. The counts, the entries and the version come from one read of the change log,
/// so they always agree; the body is cached until the namespace changes.
fn delta(api: &Api, ctx: &Context, format: Format) -> Response {
    let key = Key {
        namespace: &ctx.namespace,
        service: "",
        view: View::EurekaDelta(format),
    };
    let now = || api.registry.clock().monotonic_nanos();
    let built = api.cache.get_or_build(key, &now, || {
        let log = api.registry.change_log(&ctx.call())?;
        let mut apps = Apps::default();
        for (i, (instance, kind)) in log.entries.iter().enumerate() {
            let action = match kind {
                ChangeKind::Registered | ChangeKind::Replaced => Action::Added,
                ChangeKind::Modified => Action::Modified,
                ChangeKind::Deregistered | ChangeKind::Expired => Action::Deleted,
            };
            apps.add(format, instance, action);
            yield_every(i);
        }
        let body =
            apps.applications_document(format, log.version, &hash_code_of(&log.status_counts));
        Ok::<_, Error>(if log.entries.is_empty() && log.status_counts.is_empty() {
            Built::Uncacheable(body)
        } else {
            Built::Cacheable(body, log.stale_after)
        })
    });
    match built {
        Ok(Some(body)) => document(format, 200, Body::Cached(body)),
        Ok(None) => Response::error(500, APPLICATION_ENUMERATION),
        Err(error) => failure(&error, 500, APPLICATION_ENUMERATION),
    }
}

/// `GET E/instances/{iid}`: the first instance whose id ends with `:{iid}` (kept as the
/// original), from the store's suffix index rather than a scan of the namespace.
fn instance_by_id(api: &Api, ctx: &Context, iid: &str, format: Format) -> Response {
    match api.registry.lookup(&ctx.call(), Lookup::IdSuffix(iid)) {
        Ok(found) => match found.first() {
            Some(instance) => document(
                format,
                200,
                Body::Owned(render::instance_document(format, instance)),
            ),
            None => Response::error(404, INSTANCE_NOT_FOUND),
        },
        Err(error) => failure(&error, 404, INSTANCE_NOT_FOUND),
    }
}

/// `PUT …/status?value=S` and `DELETE …/status[?value=S]` (spec 4.3, D12): the status is stored
/// verbatim and the change counts as a heartbeat.
fn set_status(
    api: &Api,
    ctx: &Context,
    request: &Request,
    app: &str,
    id: &str,
    set: bool,
) -> Response {
    let query = parse_query(request.query.as_deref());
    let value = first_value(&query, "value").filter(|v| !v.is_empty());
    let status = match (set, value) {
        (true, None) => return Response::error(400, STATUS_MISSING),
        (_, Some(value)) => value.to_string(),
        (false, None) => "UNKNOWN".to_string(),
    };
    let current = match api.registry.get(&ctx.call(), id) {
        Ok(Some(current)) => current,
        Ok(None) => return Response::error(404, INSTANCE_NOT_FOUND),
        Err(error) => return failure(&error, 404, INSTANCE_NOT_FOUND),
    };
    if *current.service_name != *app {
        return Response::error(400, INSTANCE_NOT_FOUND);
    }
    let dirty = first_value(&query, "lastDirtyTimestamp").and_then(|d| d.parse::<i64>().ok());
    let result = api.registry.modify(&ctx.call(), id, &mut |instance| {
        instance.status = Status::new(&status);
        if let Some(dirty) = dirty.filter(|d| *d > instance.dirty_unix_millis) {
            instance.dirty_unix_millis = dirty;
        }
        Ok(())
    });
    match result {
        Ok(()) => Response::empty(200),
        Err(error) => failure(&error, 404, INSTANCE_NOT_FOUND),
    }
}

/// `PUT …/metadata?k=v…` (D12): each query parameter sets one metadata key to a string.
fn update_metadata(api: &Api, ctx: &Context, request: &Request, id: &str) -> Response {
    let query = parse_query(request.query.as_deref());
    match api.registry.get(&ctx.call(), id) {
        Ok(Some(_)) => {}
        Ok(None) => return Response::error(404, INSTANCE_NOT_FOUND),
        Err(error) => return failure(&error, 404, INSTANCE_NOT_FOUND),
    }
    // The first value of each name counts.
    let mut seen = HashSet::new();
    let updates: Vec<(&str, &str)> = query
        .iter()
        .filter(|(name, _)| seen.insert(name.as_str()))
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    if updates.is_empty() {
        return Response::empty(200);
    }
    let result = api.registry.modify(&ctx.call(), id, &mut |instance| {
        let mut members: OrderedObject<String> = OrderedObject::default();
        if let Some(stored) = instance
            .metadata
            .as_ref()
            .and_then(|m| ordered_members(m.get()))
        {
            for (name, value) in stored.iter() {
                members.insert(name, value.to_string());
            }
        }
        for (name, value) in &updates {
            let mut text = String::with_capacity(value.len() + 2);
            push_string(&mut text, value);
            members.insert(name, text);
        }
        let metadata =
            RawValue::from_string(members.to_json()).map_err(|e| Error::internal(e.to_string()))?;
        instance.metadata = Some(metadata.into());
        // The store checks the metadata length after this edit; the tags derived from it are
        // judged here, after the metadata as on registration.
        instance.check_metadata_limit().map_err(Error::limit)?;
        if updates.iter().any(|(name, _)| *name == "amalgam8.tags") {
            let metadata = instance.metadata.as_ref().map_or("", |m| m.get());
            instance.tags = model::tags_of(metadata).map_err(Error::limit)?;
        }
        Ok(())
    });
    match result {
        Ok(()) => Response::empty(200),
        Err(error) => failure(&error, 404, INSTANCE_NOT_FOUND),
    }
}

/// `GET E/vips/{vip}` and `GET E/svips/{svip}`: Eureka-registered instances with that (secure)
/// VIP address, exactly, from the store's index.
fn vip_list(api: &Api, ctx: &Context, vip: &str, secure: bool, format: Format) -> Response {
    let lookup = if secure {
        Lookup::SecureVip(vip)
    } else {
        Lookup::Vip(vip)
    };
    let found = api
        .registry
        .change_log_version(&ctx.call())
        .and_then(|version| Ok((version, api.registry.lookup(&ctx.call(), lookup)?)));
    let (version, instances) = match found {
        Ok(found) => found,
        Err(error) => return failure(&error, 500, VIP_ENUMERATION),
    };
    let mut apps = Apps::default();
    for (i, instance) in instances.iter().enumerate() {
        apps.add(format, instance, Action::of(instance));
        yield_every(i);
    }
    let body = apps.applications_document(format, version, &apps.hash_code());
    document(format, 200, Body::Owned(body))
}
