//! Blocking queries on the three Amalgam8 read routes (observability contract §1): every answer
//! carries `X-A8-Index`, and `index=<n>&wait=<duration>` holds the request until the index moves
//! past `n` or the wait (capped, with a random extra) has passed.
//!
//! A request that waits is a [`Waiter`] parked by the HTTP server; its wake-up is registered with
//! the registry's watches, under the namespace (`/api/v1/instances`, `/api/v1/services`) or under
//! the one service (`/api/v1/services/{name}`). When the wait ends, however it ends (woken, timed
//! out, shutdown), the route is answered in full again, with its filters, from the state then.

use super::amalgam8;
use super::error::{INVALID_WATCH, TOO_MANY_WATCHERS};
use super::{Api, Context};
use crate::http::response::Response;
use crate::http::router::{first_value, parse_query, undecodable_values};
use crate::http::wait::{Reply, Waiter, Wakeup};
use crate::registry::namespace::Namespace;
use crate::registry::store::REQUEST_DEADLINE;
use crate::registry::watch::Wake;
use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// The wait when a request gives none.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);
/// The longest wait a request can ask for (before the random extra).
pub const MAX_WAIT: Duration = Duration::from_secs(10 * 60);
/// The longest a wait is held while no change could wake it (a shared store's change feed down).
const FEEDLESS_WAIT: Duration = Duration::from_secs(2);
/// The random extra is at most the wait divided by this, so that watchers that started together
/// do not all time out together.
const JITTER_DIVISOR: u32 = 16;
/// The response header that carries the namespace's change index.
pub const INDEX_HEADER: &str = "X-A8-Index";

/// What a blocking query reads: borrowed from the request, owned only by a request that waits.
#[derive(Clone, Debug)]
pub enum Watched<'a> {
    /// `GET /api/v1/instances`, with its query.
    Instances(Option<Cow<'a, str>>),
    /// `GET /api/v1/services`.
    Services,
    /// `GET /api/v1/services/{name}`.
    Service(Cow<'a, str>),
}

impl Watched<'_> {
    fn into_owned(self) -> Watched<'static> {
        match self {
            Watched::Instances(query) => Watched::Instances(query.map(|q| q.into_owned().into())),
            Watched::Services => Watched::Services,
            Watched::Service(name) => Watched::Service(name.into_owned().into()),
        }
    }
}

/// The `index` and `wait` parameters of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WatchParams {
    index: Option<u64>,
    wait: Duration,
}

/// Parses `index` (a non-negative decimal integer) and `wait` (a non-negative Go duration) from
/// the query; `Err` for either when malformed. The wait comes back capped, without its extra.
fn parse_params(query: Option<&str>) -> Result<WatchParams, ()> {
    // `index=%ff` is a bad index, not an absent one (which would answer, or wait, at once).
    if undecodable_values(query)
        .iter()
        .any(|name| name == "index" || name == "wait")
    {
        return Err(());
    }
    let query = parse_query(query);
    let index = match first_value(&query, "index") {
        None => None,
        Some(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            Some(text.parse::<u64>().map_err(|_| ())?)
        }
        Some(_) => return Err(()),
    };
    let wait = match first_value(&query, "wait") {
        None => DEFAULT_WAIT,
        Some(text) => crate::config::parse_duration(text).map_err(|_| ())?,
    };
    Ok(WatchParams {
        index,
        wait: wait.min(MAX_WAIT),
    })
}

/// A random duration in `0..=wait/JITTER_DIVISOR`.
fn jitter(wait: Duration) -> Duration {
    let most = (wait / JITTER_DIVISOR).as_nanos() as u64;
    if most == 0 {
        return Duration::ZERO;
    }
    // std's per-process random keys, moved on for every hasher: enough to spread deadlines.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_nanos(random % (most + 1))
}

/// The index whose moving wakes a wait: the service's for one service, else the namespace's.
fn woken_by_index(api: &Api, ctx: &Context, watched: &Watched) -> u64 {
    match watched {
        Watched::Service(name) => api.registry.service_index(&ctx.call(), name.as_ref()),
        _ => api.registry.namespace_index(&ctx.call()),
    }
}

/// The route's answer now, with the namespace's index (read before the state, so the body is at
/// least as new as the index it carries).
fn answer(api: &Api, ctx: &Context, watched: &Watched) -> Response {
    let index = api.registry.namespace_index(&ctx.call());
    let response = match watched {
        Watched::Instances(query) => amalgam8::list_instances(api, ctx, query.as_deref()),
        Watched::Services => amalgam8::list_services(api, ctx),
        Watched::Service(name) => amalgam8::service_instances(api, ctx, name.as_ref()),
    };
    response.with_number_header(INDEX_HEADER, index)
}

/// Serves a read route: at once, or after a wait when the request's `index` is not behind.
pub fn serve(api: &Api, ctx: &Context, watched: Watched<'_>, query: Option<&str>) -> Reply {
    let Ok(params) = parse_params(query) else {
        return Reply::Now(Response::error(400, INVALID_WATCH));
    };
    // A bad filter is refused now, as a plain read would be, not after the wait.
    if let Watched::Instances(query) = &watched {
        if let Some(refused) = amalgam8::instances_query_error(query.as_deref()) {
            return Reply::Now(refused);
        }
    }
    let namespace = ctx.namespace.as_str();
    // An index ahead of the current one (a client that watched a process before a restart, say)
    // also waits for the next change rather than for the index to catch up with it.
    let Some(wanted) = params.index.filter(|&index| index > 0) else {
        return Reply::Now(answer(api, ctx, &watched));
    };
    // Read before the namespace's index: a change of the service after this read is seen either
    // by the comparison with the namespace's index or by the second read below.
    let seen = woken_by_index(api, ctx, &watched);
    // Compared with the index that `X-A8-Index` carries, the namespace's, also for one service
    // (§1.2: an index lower than the current one answers at once).
    if wanted < api.registry.namespace_index(&ctx.call()) {
        return Reply::Now(answer(api, ctx, &watched));
    }
    // Refused rather than answered at once: a client in a watch loop would come straight back.
    let Some(waiting) = WaitingCount::within(&api.watchers, api.max_watchers()) else {
        return Reply::Now(Response::error(503, TOO_MANY_WATCHERS));
    };
    // Without a working change feed from a shared store nothing would wake the wait: it is held
    // for at most `FEEDLESS_WAIT`, then answered with the state then (or the store's failure),
    // so that a client in a watch loop neither waits for a change that cannot be heard nor comes
    // straight back.
    let feed = api.registry.can_wake_waiters();
    let wait = if feed {
        params.wait + jitter(params.wait)
    } else {
        params.wait.min(FEEDLESS_WAIT)
    };
    let deadline = Instant::now() + wait;
    let owner = api.me.clone();
    let later = Later {
        namespace: ctx.namespace.clone(),
        eureka: ctx.eureka,
        watched: watched.clone().into_owned(),
    };
    let (waiter, wakeup) = Waiter::new(deadline, move |_end| {
        let _counted_until_answered = waiting;
        later.answer(&owner)
    });
    if !feed {
        return Reply::Wait(waiter);
    }
    let service = match &watched {
        Watched::Service(name) => Some(name.as_ref()),
        _ => None,
    };
    api.registry
        .watch(namespace, service, Box::new(WakeRequest(wakeup.clone())));
    // A change between the first read and the registration was not seen by the watches; the
    // index never goes back, so a higher one means it moved.
    if woken_by_index(api, ctx, &watched) > seen {
        wakeup.wake();
    }
    Reply::Wait(waiter)
}

/// What a waiting request needs to be answered later.
struct Later {
    namespace: Namespace,
    eureka: bool,
    watched: Watched<'static>,
}

impl Later {
    fn answer(self, owner: &Weak<Api>) -> Response {
        let Some(api) = owner.upgrade() else {
            return Response::error(503, super::error::STORE_UNAVAILABLE);
        };
        let ctx = Context {
            namespace: self.namespace,
            deadline: Instant::now() + REQUEST_DEADLINE,
            eureka: self.eureka,
        };
        answer(&api, &ctx, &self.watched)
    }
}

/// The HTTP layer's wake-up, as the registry's watches call it.
struct WakeRequest(Wakeup);

impl Wake for WakeRequest {
    fn wake(&self) {
        self.0.wake();
    }

    fn is_waiting(&self) -> bool {
        self.0.is_waiting()
    }
}

/// Counts a waiting request in `a8registry_watchers` until it is answered or dropped (its
/// client gone): it lives in the waiter's closure.
struct WaitingCount(Arc<AtomicUsize>);

impl WaitingCount {
    /// Counts one more waiting request, unless `most` are counted already.
    fn within(count: &Arc<AtomicUsize>, most: usize) -> Option<WaitingCount> {
        if count.fetch_add(1, Ordering::SeqCst) >= most {
            count.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(WaitingCount(count.clone()))
    }
}

impl Drop for WaitingCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_parameters() {
        let parse = |q: &str| parse_params(Some(q));
        assert_eq!(
            parse("service_name=a"),
            Ok(WatchParams {
                index: None,
                wait: DEFAULT_WAIT
            })
        );
        assert_eq!(
            parse("index=42&wait=1m30s"),
            Ok(WatchParams {
                index: Some(42),
                wait: Duration::from_secs(90)
            })
        );
        assert_eq!(parse("index=0").unwrap().index, Some(0));
        assert_eq!(parse("wait=2h").unwrap().wait, MAX_WAIT, "capped");
        assert_eq!(parse("wait=0").unwrap().wait, Duration::ZERO);
        assert_eq!(
            parse("index=%34%32").unwrap().index,
            Some(42),
            "escapes decode"
        );
        assert_eq!(
            parse("other=%ff&index=1").unwrap().index,
            Some(1),
            "other pairs"
        );
        for bad in [
            "index=",
            "index=-1",
            "index=+1",
            "index=1.5",
            "index=x",
            "index=99999999999999999999999",
            "wait=",
            "wait=10",
            "wait=-1s",
            "wait=soon",
            "index=1&wait=1x",
            "index=%ff",
            "index=1&wait=%ff",
            "index=%4",
        ] {
            assert_eq!(parse(bad), Err(()), "{bad}");
        }
    }

    #[test]
    fn the_random_extra_stays_within_a_sixteenth() {
        let wait = Duration::from_secs(160);
        let extras: Vec<Duration> = (0..200).map(|_| jitter(wait)).collect();
        assert!(extras.iter().all(|e| *e <= Duration::from_secs(10)));
        assert!(
            extras.iter().any(|e| *e != extras[0]),
            "the extra varies between requests"
        );
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
