//! HTTP/1.1 on `may` coroutines: a sans-IO request decoder, responses, a router and the socket loop.
//! This layer knows nothing about registries.

pub mod request;
pub mod response;
pub mod router;
pub mod server;
