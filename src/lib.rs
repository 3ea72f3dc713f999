//! a8registry: the Amalgam8 service registry as one small static binary.
//!
//! Services register instances, keep them alive with heartbeats and are dropped when their TTL
//! runs out; clients discover them by service, tags and status. Data flows one way, each layer
//! knowing only the one below it:
//!
//! ```text
//! bytes ─► http (decode, frame, limits) ─► router ─► api (amalgam8 | eureka | ops | ui)
//!       ─► auth (token → namespace) ─► registry (instances, TTLs, change events)
//!       ─► store backend (sharded in-memory TTL map | Redis)
//! ```
//!
//! - [`config`]: one option table per command (flag, `A8_` env twin, default, validation, secret or
//!   not, `--help`); the startup summary is rendered from it with every secret masked.
//! - [`log`]: levelled text, json or logstash lines, queued (bounded) and written to stderr by one
//!   plain thread.
//! - [`equal_bytes`]: byte-string equality a word at a time, which the static musl binary also
//!   links as the C library's `bcmp` (musl's compares one byte at a time).
//! - [`copy_bytes`]: the static musl binary's `memcpy` and `memmove`, short copies without
//!   musl's `rep movsq` start-up cost.
//! - [`nesting`]: the nesting bound every reader of outside JSON checks before parsing.
//! - [`raw_clock`]: the monotonic and real-time clocks as plain nanoseconds, read directly.
//! - [`net`]: the acceptor every port uses (connection limit, accept-error backoff, shutdown) and
//!   the open connections with their deadlines, woken by one timer thread.
//! - [`http`]: HTTP/1.1 on `may` coroutines: `request` (sans-IO decoder, body memory budget),
//!   `response` (with cached bodies that keep their gzip form), `encoding` (`Accept-Encoding`
//!   and gzip for bodies of 1 KiB or more; `gzip` writes the format around miniz_oxide's
//!   deflate), `router` (routes with metadata), `server` (one coroutine per connection, time
//!   limits, graceful drain, telling the handler when a response is written), `render` (streamed
//!   bodies made on render threads off the workers, handed to the connection piece by piece) and
//!   `wait` (replies that wait to be woken).
//! - [`api`]: the request stages and the protocols: `amalgam8` (`/api/v1`), `eureka` (three base
//!   paths; `model` decodes registrations and derives store ids, `xml` reads and writes Netflix's
//!   XML, `render` draws Netflix's JSON and XML), `ops` (`/uptime`, `/ready`, `/metrics`), `ui`
//!   (the web page's embedded files under `/ui/`, which read only the public API),
//!   `watch` (blocking queries: `X-A8-Index`, `index` and `wait`), `cache` (serialised bodies
//!   keyed on the change index, built once for concurrent readers), `json` (the JSON helpers both
//!   protocols share), `error` (the texts and the one mapping of registry errors to answers).
//! - [`auth`]: token extraction and the none | trusted | jwt chain, ending in a validated
//!   `Namespace`; `jwt` is HS256 by hand.
//! - [`registry`]: the domain façade every handler calls (`Registry`, in `domain`), `namespace`
//!   (the validated tenant name), `instance` (record, ids, limits, TTL clamp, the typed and
//!   encodable Eureka fields), `version` (hybrid logical clock + member id), `error` (the one
//!   error type), `store` (the fallible backend trait, calls with deadlines, change events with
//!   their origin, lease events, records from elsewhere), `index` (the per-namespace and
//!   per-service change index), `watch` (the requests waiting for a change, handed by one plain
//!   thread to one waking coroutine per worker), `changelog` (the Eureka change log with its byte budget), `memory` (the sharded
//!   TTL map with tombstones and its reaper schedule) and `clock` (the in-memory store's clock,
//!   which leaves out the registry's own pauses, D39).
//! - [`metrics`]: striped counters and histograms, and the Prometheus text exposition with the
//!   standard `process_*` series; every label value comes from a fixed set or a bounded list.
//!   per-service change index), `changelog` (the Eureka change log with its byte budget) and
//!   `memory` (the sharded TTL map with tombstones and its reaper schedule).
//! - [`sidecar`]: `a8registry sidecar`, on plain threads: registers one application, heartbeats
//!   while its health checks pass, registers again after outages and supervises it (`settings`,
//!   `yaml`, `protocol`, `agent`, `health`, `process`, `client`).
//! - [`catalogs`]: read-only sources on plain threads (`kubernetes`: list + watch per namespace
//!   opened on first use; `eureka`: polled with deltas; `files`: a directory checked every
//!   second), publishing per-namespace `Arc` snapshots that the façade merges after the store's
//!   instances, and their `/uptime` health.
//!
//! - [`cluster`]: clustered mode: membership (directory, `--peers`), the sans-IO line protocol
//!   (`codec`), links on plain threads with bounded queues, sync, digest repair and leave.
//! - [`store`]: the Redis store (`store::redis`): `settings` (address forms, credentials, modes),
//!   `link` (connections on plain worker threads behind a bounded queue, deadlines, batching,
//!   Sentinel and Cluster), `resp` (RESP2, bounded), `cluster` (slot routing), `keys` (the layout, one hash tag per namespace), the one Lua script,
//!   `events` (the change channel that keeps every node's caches and watchers fresh).
//!
//! The binary (`main.rs`) wires them: configuration → store → API → listener; SIGTERM or SIGINT
//! stops accepting, answers the requests already received and exits 0 within 5 seconds.

pub mod api;
pub mod auth;
pub mod catalogs;
pub mod cluster;
pub mod config;
pub mod copy_bytes;
pub mod equal_bytes;
pub mod http;
pub mod log;
pub mod metrics;
pub mod nesting;
pub mod net;
pub mod raw_clock;
pub mod registry;
pub mod sidecar;
pub mod store;
#[cfg(test)]
mod testing;
