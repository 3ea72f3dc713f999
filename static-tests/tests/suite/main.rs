//! The black-box suite: one module per capability, each starting real `a8registry` processes.

mod amalgam8;
mod auth;
mod catalogs;
mod cluster;
mod cluster_peers;
mod compression;
mod connections;
mod eureka;
mod expiry;
mod framing;
mod hardening;
mod kubernetes;
mod metrics;
mod pauses;
mod process;
mod prometheus;
mod redis;
mod scratch;
mod sidecar;
mod streaming;
mod ui;
mod watches;
