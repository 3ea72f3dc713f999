//! a8registry: the Amalgam8 service registry as one small static binary.
//!
//! Services register instances, keep them alive with heartbeats and are dropped when their TTL
//! runs out; clients discover them by service, tags and status. Data flows one way, each layer
//! knowing only the one below it:
//!
//! ```text
//! bytes ─► http (decode, frame, limits) ─► router ─► api (amalgam8 | eureka | ops)
//!       ─► auth (token → namespace) ─► registry (instances, TTLs, change events)
//!       ─► store backend (sharded in-memory TTL map)
//! ```
//!
//! - [`config`]: every option once (flag, `A8_` env twin, default, validation, `--help`).
//! - [`log`]: levelled text, json or logstash lines on stderr.
//! - [`net`]: the acceptor every port uses (connection limit, accept-error backoff, shutdown) and
//!   the open connections with their deadlines, woken by one timer thread.
//! - [`http`]: HTTP/1.1 on `may` coroutines: `request` (sans-IO decoder, body memory budget),
//!   `response`, `router` (routes with metadata), `server` (one coroutine per connection, time
//!   limits, graceful drain) and `wait` (replies that wait to be woken).
//! - [`api`]: the request stages and the protocols: `amalgam8` (`/api/v1`), `eureka` (three base
//!   paths; `model` decodes JSON and XML registrations, `render` draws Netflix's JSON and XML,
//!   `delta` keeps the recent-change log), `ops` (`/uptime`), `cache` (serialised bodies
//!   invalidated by change events), `error` (the texts).
//! - [`auth`]: token extraction and the none | trusted | jwt chain; `jwt` is HS256 by hand.
//! - [`registry`]: `instance` (record, ids, limits, TTL clamp), `store` (the backend trait, change
//!   events, clock) and `memory` (the sharded TTL map with its reaper).
//!
//! The binary (`main.rs`) wires them: configuration → store → API → listener; SIGTERM or SIGINT
//! stops accepting, answers the requests already received and exits 0 within 5 seconds.

pub mod api;
pub mod auth;
pub mod config;
pub mod http;
pub mod log;
pub mod net;
pub mod registry;
#[cfg(test)]
mod testing;
