//! The Eureka-compatible protocol (spec section 4): Netflix Eureka clients register, renew,
//! discover and cancel here, in JSON or XML, under three base paths (D5).
//!
//! Eureka ids are `APP:instanceId` in the shared store (with `:` escaped in the app part where
//! it has one, see [`model::store_id`]), so both protocols see every instance. `model` decodes
//! registrations, `xml` reads and writes Netflix's XML, `render` draws instances and application
//! documents, `delta` keeps the recent-change log.

pub mod delta;
pub mod model;
pub mod render;
pub mod xml;

use super::cache::{Built, View};
use super::error::registration_error;
use super::json::{ordered_members, push_string, OrderedObject};
use super::{Api, Context};
use crate::http::request::Request;
use crate::http::response::{Body, Response};
use crate::http::router::{first_value, parse_query};
use crate::registry::instance::Status;
use crate::registry::store::StoreError;
use model::RegisterError;
use render::{Action, Apps, Format};
use serde_json::value::RawValue;
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
    params: &[String],
    default_format: Format,
) -> Response {
    let param = |i: usize| params.get(i).map_or("", String::as_str);
    let format = negotiate(request, default_format);
    let store_id = || model::store_id(param(0), param(1));
    match op {
        Op::Register => register(api, ctx, request, param(0)),
        Op::Renew => lease_answer(api.store.heartbeat(&ctx.namespace, &store_id())),
        Op::Cancel => lease_answer(api.store.deregister(&ctx.namespace, &store_id())),
        Op::Apps => all_apps(api, ctx, format),
        Op::Delta => delta(api, ctx, format),
        Op::App => one_app(api, ctx, param(0), format),
        Op::Instance => match api.store.get(&ctx.namespace, &store_id()) {
            Some(instance) => document(
                format,
                200,
                Body::Owned(render::instance_document(format, &instance)),
            ),
            None => Response::error(404, INSTANCE_NOT_FOUND),
        },
        Op::InstanceById => instance_by_id(api, ctx, param(0), format),
        Op::SetStatus | Op::RemoveStatus => set_status(
            api,
            ctx,
            request,
            param(0),
            &store_id(),
            op == Op::SetStatus,
        ),
        Op::UpdateMetadata => update_metadata(api, ctx, request, &store_id()),
        Op::Vip | Op::SecureVip => vip_list(api, ctx, param(0), op == Op::SecureVip, format),
    }
}

/// Renew and cancel: 200, 404 for an unknown instance (D8), 500 for a store failure.
fn lease_answer(result: Result<(), StoreError>) -> Response {
    match result {
        Ok(()) => Response::empty(200),
        Err(StoreError::NotFound) => Response::error(404, INSTANCE_NOT_FOUND),
        Err(_) => Response::error(500, INSTANCE_NOT_FOUND),
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
        Err(RegisterError::Limit(limit)) => return registration_error(&StoreError::Limit(limit)),
    };
    match api.store.register(&ctx.namespace, instance) {
        Ok(_) => Response::empty(204),
        Err(error) => registration_error(&error),
    }
}

/// Builds (or takes from the cache) a document of the namespace or of one app; `None` for an
/// app without instances. Documents of an empty namespace are answered but not cached.
fn cached_document(
    api: &Api,
    ctx: &Context,
    service: Option<&str>,
    view: View,
    build: &dyn Fn(&mut Apps) -> Vec<u8>,
    format: Format,
) -> Result<Option<Arc<[u8]>>, StoreError> {
    let now = api.store.clock().monotonic_nanos();
    let key = service.unwrap_or("");
    api.cache.get_or_build(&ctx.namespace, key, view, now, || {
        let snapshot = api.store.snapshot(&ctx.namespace, service)?;
        let mut apps = Apps::default();
        for instance in &snapshot.instances {
            apps.add(format, instance, Action::of(instance));
        }
        Ok(match (service, snapshot.instances.is_empty()) {
            (Some(_), true) => Built::Absent,
            (None, true) => Built::Uncacheable(build(&mut apps)),
            (_, false) => Built::Cacheable(build(&mut apps), snapshot.stale_after),
        })
    })
}

/// `GET E/apps` and `E/apps/`: every instance of the namespace, all statuses.
fn all_apps(api: &Api, ctx: &Context, format: Format) -> Response {
    // The version is read as the body is built, so a cached body never carries an older one.
    let build = |apps: &mut Apps| {
        apps.applications_document(format, api.store.version(), &apps.hash_code())
    };
    match cached_document(api, ctx, None, View::EurekaApps(format), &build, format) {
        Ok(Some(body)) => document(format, 200, Body::Shared(body)),
        _ => Response::error(500, APPLICATION_ENUMERATION),
    }
}

/// `GET E/apps/{app}`: 404 when the app has no instance (D9).
fn one_app(api: &Api, ctx: &Context, app: &str, format: Format) -> Response {
    let build = |apps: &mut Apps| apps.application_document(format);
    match cached_document(api, ctx, Some(app), View::EurekaApp(format), &build, format) {
        Ok(Some(body)) => document(format, 200, Body::Shared(body)),
        Ok(None) => Response::error(404, APPLICATION_NOT_FOUND),
        Err(_) => Response::error(500, APPLICATION_ENUMERATION),
    }
}

/// The hash code of the whole namespace, as a full list at this moment would carry it.
fn namespace_hash_code(api: &Api, ctx: &Context) -> Result<String, StoreError> {
    let now = api.store.clock().monotonic_nanos();
    let body = api
        .cache
        .get_or_build(&ctx.namespace, "", View::EurekaHashCode, now, || {
            let snapshot = api.store.snapshot(&ctx.namespace, None)?;
            let mut apps = Apps::default();
            for instance in &snapshot.instances {
                apps.count_status(&instance.status);
            }
            let hash = apps.hash_code().into_bytes();
            Ok(match snapshot.instances.is_empty() {
                true => Built::Uncacheable(hash),
                false => Built::Cacheable(hash, snapshot.stale_after),
            })
        })?;
    Ok(body.map_or_else(String::new, |b| String::from_utf8_lossy(&b).into_owned()))
}

/// `GET E/apps/delta` (D7): the instances changed in the last 3 minutes, with the full hash code.
fn delta(api: &Api, ctx: &Context, format: Format) -> Response {
    // Expired instances leave the full list at their deadline; log their removal now too, so a
    // client never sees a hash code the delta cannot explain.
    api.store.expire(&ctx.namespace);
    let version = api.store.version();
    let Ok(hash_code) = namespace_hash_code(api, ctx) else {
        return Response::error(500, APPLICATION_ENUMERATION);
    };
    let now = api.store.clock().monotonic_nanos();
    let mut apps = Apps::default();
    for (instance, action) in api.delta.changes(&ctx.namespace, now) {
        apps.add(format, &instance, action);
    }
    let body = apps.applications_document(format, version, &hash_code);
    document(format, 200, Body::Owned(body))
}

/// `GET E/instances/{iid}`: the first instance whose id ends with `:{iid}` (kept as the original).
fn instance_by_id(api: &Api, ctx: &Context, iid: &str, format: Format) -> Response {
    let suffix = format!(":{iid}");
    let found = api
        .store
        .snapshot(&ctx.namespace, None)
        .ok()
        .and_then(|snapshot| {
            snapshot
                .instances
                .into_iter()
                .find(|instance| instance.id.ends_with(&suffix))
        });
    match found {
        Some(instance) => document(
            format,
            200,
            Body::Owned(render::instance_document(format, &instance)),
        ),
        None => Response::error(404, INSTANCE_NOT_FOUND),
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
    let Some(current) = api.store.get(&ctx.namespace, id) else {
        return Response::error(404, INSTANCE_NOT_FOUND);
    };
    if *current.service_name != *app {
        return Response::error(400, INSTANCE_NOT_FOUND);
    }
    let dirty = first_value(&query, "lastDirtyTimestamp").and_then(|d| d.parse::<i64>().ok());
    let result = api.store.modify(&ctx.namespace, id, &mut |instance| {
        instance.status = Status::new(&status);
        if let Some(dirty) = dirty.filter(|d| *d > instance.dirty_unix_millis) {
            instance.dirty_unix_millis = dirty;
        }
        Ok(())
    });
    match result {
        Ok(()) => Response::empty(200),
        Err(StoreError::NotFound) => Response::error(404, INSTANCE_NOT_FOUND),
        Err(_) => Response::error(500, INSTANCE_NOT_FOUND),
    }
}

/// `PUT …/metadata?k=v…` (D12): each query parameter sets one metadata key to a string.
fn update_metadata(api: &Api, ctx: &Context, request: &Request, id: &str) -> Response {
    let query = parse_query(request.query.as_deref());
    if api.store.get(&ctx.namespace, id).is_none() {
        return Response::error(404, INSTANCE_NOT_FOUND);
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
    let result = api.store.modify(&ctx.namespace, id, &mut |instance| {
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
        let metadata = RawValue::from_string(members.to_json())
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        instance.metadata = Some(metadata);
        // The store checks the metadata length after this edit; the tags derived from it are
        // judged here, after the metadata as on registration.
        instance.check_metadata_limit().map_err(StoreError::Limit)?;
        if updates.iter().any(|(name, _)| *name == "amalgam8.tags") {
            let metadata = instance.metadata.as_ref().map_or("", |m| m.get());
            instance.tags = model::tags_of(metadata).map_err(StoreError::Limit)?;
        }
        Ok(())
    });
    match result {
        Ok(()) => Response::empty(200),
        Err(StoreError::NotFound) => Response::error(404, INSTANCE_NOT_FOUND),
        Err(error @ StoreError::Limit(_)) => registration_error(&error),
        Err(_) => Response::error(500, INSTANCE_NOT_FOUND),
    }
}

/// `GET E/vips/{vip}` and `GET E/svips/{svip}`: Eureka-registered instances with that (secure)
/// VIP address, exactly.
fn vip_list(api: &Api, ctx: &Context, vip: &str, secure: bool, format: Format) -> Response {
    let version = api.store.version();
    let Ok(snapshot) = api.store.snapshot(&ctx.namespace, None) else {
        return Response::error(500, VIP_ENUMERATION);
    };
    let mut apps = Apps::default();
    for instance in &snapshot.instances {
        let Some(fields) = instance.eureka() else {
            continue;
        };
        let matches = if secure {
            fields.secure_vip_address() == Some(vip)
        } else {
            fields.vip_address() == vip
        };
        if matches {
            apps.add(format, instance, Action::of(instance));
        }
    }
    let body = apps.applications_document(format, version, &apps.hash_code());
    document(format, 200, Body::Owned(body))
}
