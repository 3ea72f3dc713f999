//! HTTP/1.1 on `may` coroutines: a sans-IO request decoder, responses and their gzip coding, a
//! router with route metadata, the per-connection loop, and replies that wait. This layer knows
//! nothing about registries.

pub mod encoding;
mod gzip;
pub mod render;
pub mod request;
pub mod response;
pub mod router;
mod scan;
pub mod server;
pub mod turn;
pub mod wait;
