//! The domain: instances, their leases, and the stores that keep them. Knows nothing about HTTP.

pub mod instance;
pub mod memory;
pub mod namespace;
pub mod store;
