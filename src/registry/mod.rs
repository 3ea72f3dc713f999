//! The domain: instances, their leases, versions and change index, the stores that keep them,
//! and the façade the protocols call ([`Registry`]). Knows nothing about HTTP.

pub mod changelog;
pub mod clock;
pub mod domain;
pub mod error;
pub mod index;
pub mod instance;
pub mod keyed_hash;
pub mod memory;
pub mod namespace;
mod shard;
pub mod small_map;
pub mod store;
pub mod version;
pub mod watch;

pub use domain::Registry;
pub use error::{Error, ErrorKind};
