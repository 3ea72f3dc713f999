//! The change channel: every script publishes each change it makes on
//! [`keys::CHANGES_CHANNEL`](super::keys::CHANGES_CHANNEL) as
//! `<node> <hex namespace> <kind letter> <hex service> <hex id> <index>` (kind `C`, a read-only
//! catalog's change of a service, has an empty id), and one plain thread per node listens, so
//! another node's change moves this node's change index to Redis's (and frees its cached bodies,
//! wakes its watchers) within milliseconds: the 100 ms of spec §2.
//!
//! A subscription can miss messages while it is down, so responses may be cached only while it
//! is up and Redis is healthy ([`RedisStore::cache_generation`](super::RedisStore)); each new
//! subscription moves the generation, which makes every body cached before it stale and every
//! index learned before it to be read again, and wakes every watcher.

use super::keys::CHANGES_CHANNEL;
use super::link::MAX_BACKOFF;
use super::resp::{is_timeout, Reply, Value};
use super::RedisStore;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// Starts the subscriber thread; it stops when the store is dropped.
pub fn start(store: &Arc<RedisStore>) -> std::io::Result<()> {
    let weak = Arc::downgrade(store);
    std::thread::Builder::new()
        .name("redis-changes".into())
        .spawn(move || listen(&weak))
        .map(|_| ())
}

fn listen(weak: &Weak<RedisStore>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(store) = weak.upgrade() else { return };
        let connection = store.link.connector.connect_plain();
        drop(store);
        let mut connection = match connection {
            Ok(connection) => connection,
            Err(_) => {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let subscribed = connection.call(&[b"SUBSCRIBE", CHANGES_CHANNEL.as_bytes()]);
        if !matches!(subscribed, Ok(Reply::Value(Value::Array(_)))) {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        backoff = FIRST_BACKOFF;
        {
            let Some(store) = weak.upgrade() else { return };
            store.generation.fetch_add(1, Ordering::SeqCst);
            store.subscribed.store(true, Ordering::SeqCst);
            // Changes made while no subscription stood were never heard: wake every watcher,
            // which reads the index again, from Redis, under the new generation.
            store.resynced();
        }
        loop {
            match connection.receive() {
                Ok(Reply::Value(Value::Array(parts))) => {
                    let Some(store) = weak.upgrade() else { return };
                    if let [Value::BulkString(kind), _, Value::BulkString(payload)] = &parts[..] {
                        if kind == b"message" {
                            store.heard(payload);
                        }
                    }
                }
                Ok(_) => {}
                // Quiet for a read timeout: the subscription still stands. The health probe
                // notices a Redis that stopped answering, and caching stops with it.
                Err(e) if is_timeout(&e) => {
                    if weak.strong_count() == 0 {
                        return;
                    }
                }
                Err(_) => break,
            }
        }
        let Some(store) = weak.upgrade() else { return };
        store.subscribed.store(false, Ordering::SeqCst);
    }
}
