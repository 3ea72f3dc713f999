//! Name lookups with a deadline. The system resolver (`getaddrinfo`) takes no timeout and can
//! hang for as long as its configuration lets it (unreachable name servers, retries), so a
//! lookup runs on a helper thread and the caller waits for it only until its deadline: a stuck
//! resolver fails the one check run or registration attempt, and never stalls the thread that
//! heartbeats or runs the checks. A lookup given up keeps its helper until the resolver
//! returns; at most [`MAX_PENDING_LOOKUPS`] are outstanding, further lookups fail at once.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Lookups whose helper thread has not returned yet, at most.
pub const MAX_PENDING_LOOKUPS: usize = 4;

static PENDING: AtomicUsize = AtomicUsize::new(0);

/// Gives the slot back when the helper ends, however it ends.
struct Slot;

impl Drop for Slot {
    fn drop(&mut self) {
        PENDING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The addresses of `host` (a name or an IP address) with `port`, or why there are none
/// within `timeout`.
pub fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if PENDING.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING_LOOKUPS {
        PENDING.fetch_sub(1, Ordering::SeqCst);
        return Err(format!(
            "cannot resolve {host}: {MAX_PENDING_LOOKUPS} earlier lookups are still unanswered"
        ));
    }
    let slot = Slot;
    // A lock and a condition variable rather than a channel: the same wait, less code.
    let shared = Arc::new((Mutex::new(None), Condvar::new()));
    let answer = shared.clone();
    let name = host.to_string();
    let spawned = std::thread::Builder::new()
        .name("resolve".into())
        // The lookup needs little stack; several may be stuck at once.
        .stack_size(128 * 1024)
        .spawn(move || {
            let _slot = slot;
            let found = (name.as_str(), port)
                .to_socket_addrs()
                .map(|addresses| addresses.collect::<Vec<_>>())
                .map_err(|e| e.to_string());
            // The caller may have given up: then nobody reads it.
            let (result, ready) = &*answer;
            *result.lock().unwrap_or_else(|e| e.into_inner()) = Some(found);
            ready.notify_one();
        });
    if let Err(e) = spawned {
        return Err(format!("cannot resolve {host}: no lookup thread: {e}"));
    }
    let deadline = Instant::now() + timeout;
    let (result, ready) = &*shared;
    let mut found = result.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        match found.take() {
            Some(Ok(addresses)) if addresses.is_empty() => {
                return Err(format!("{host} has no address"))
            }
            Some(Ok(addresses)) => return Ok(addresses),
            Some(Err(e)) => return Err(format!("cannot resolve {host}: {e}")),
            None => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "cannot resolve {host}: no answer within {timeout:?}"
            ));
        }
        found = ready
            .wait_timeout(found, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_need_no_lookup_and_names_resolve() {
        let second = Duration::from_secs(1);
        assert_eq!(
            resolve("127.0.0.1", 80, second).unwrap(),
            vec![SocketAddr::from(([127, 0, 0, 1], 80))]
        );
        assert_eq!(resolve("[::1]", 8, second).unwrap()[0].port(), 8);
        assert!(resolve("localhost", 9, Duration::from_secs(10))
            .unwrap()
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 9));
    }
}
