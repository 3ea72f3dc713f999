//! Full listings too large to hold whole (issue 17): a namespace listing of
//! [`min_streamed_instances`] instances or more is not built into one body and cached, but
//! streamed from a snapshot of its instances (the store's shared instances, a pointer each),
//! rendered a piece at a time while it is written. Smaller listings keep the cached whole-body
//! path (DESIGN decision 7); both render the same bytes for the same instances. With the Redis
//! store a snapshot reads every record from Redis, so its Eureka listings stay on the cached
//! path whatever their size (built once, however many clients fetch).

use std::sync::OnceLock;

/// Instances from which a full listing is streamed: about 7 MB of Eureka JSON or 3 MB of
/// Amalgam8 JSON, so that no body of more than a few MiB is ever held (or cached, or compressed
/// whole).
const MIN_STREAMED_INSTANCES: usize = 10_000;

/// Environment variable that sets another threshold (a positive integer), so that tests can
/// stream small namespaces. Not a documented option: the threshold is not a tuning knob.
pub const MIN_STREAMED_INSTANCES_VARIABLE: &str = "A8REGISTRY_MIN_STREAMED_INSTANCES";

/// The threshold, read once.
pub fn min_streamed_instances() -> usize {
    static THRESHOLD: OnceLock<usize> = OnceLock::new();
    *THRESHOLD.get_or_init(|| {
        std::env::var(MIN_STREAMED_INSTANCES_VARIABLE)
            .ok()
            .and_then(|value| value.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(MIN_STREAMED_INSTANCES)
    })
}

/// True when a listing of `instances` instances is streamed.
pub fn is_streamed(instances: usize) -> bool {
    instances >= min_streamed_instances()
}
