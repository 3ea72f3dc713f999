//! Store backends that live outside the process. The in-memory store is in
//! [`crate::registry::memory`]; this module holds the Redis store.

pub mod redis;
