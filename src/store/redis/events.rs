//! The change channel: every script publishes each change it makes on
//! [`keys::CHANGES_CHANNEL`](super::keys::CHANGES_CHANNEL) as
//! `<node> <hex namespace> <kind letter> <hex service> <hex id>`, and one plain thread per node
//! listens, so another node's change moves this node's change index (and frees its cached
//! bodies, wakes its watchers) within milliseconds: the 100 ms of spec §2.
//!
//! A subscription can miss messages while it is down, so responses may be cached only while it
//! is up and Redis is healthy ([`RedisStore::cache_generation`](super::RedisStore)); each new
//! subscription moves the generation, which makes every body cached before it stale.

use super::keys::CHANGES_CHANNEL;
use super::link::MAX_BACKOFF;
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
        let mut pubsub = connection.as_pubsub();
        if pubsub.subscribe(CHANNEL_NAME).is_err() {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        backoff = FIRST_BACKOFF;
        {
            let Some(store) = weak.upgrade() else { return };
            store.generation.fetch_add(1, Ordering::SeqCst);
            store.subscribed.store(true, Ordering::SeqCst);
        }
        loop {
            match pubsub.get_message() {
                Ok(message) => {
                    let Some(store) = weak.upgrade() else { return };
                    store.heard(message.get_payload_bytes());
                }
                // Quiet for a read timeout: the subscription still stands. The health probe
                // notices a Redis that stopped answering, and caching stops with it.
                Err(e) if e.is_timeout() => {
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

const CHANNEL_NAME: &str = CHANGES_CHANNEL;
