//! Counters, histograms and their Prometheus text exposition (format 0.0.4, observability
//! contract §2).
//!
//! Recording is a few relaxed atomic additions on one of [`STRIPES`] copies of every counter,
//! picked per thread, so the two workers of a small machine do not pass the counters' cache lines
//! back and forth on every request; a scrape adds the stripes up. Every label value is one of a
//! fixed set known at compile time (protocols, operation names, status codes, bucket bounds) or
//! a namespace among the largest [`MAX_NAMESPACE_SERIES`], so no request can create a series.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Copies of each counter; threads beyond this many share them.
const STRIPES: usize = 8;
/// Namespaces shown by name in `a8registry_instances`; the others are summed under
/// [`OTHER_NAMESPACES`].
pub const MAX_NAMESPACE_SERIES: usize = 100;
/// The `namespace` label of the namespaces beyond the largest [`MAX_NAMESPACE_SERIES`] (and of a
/// namespace that is itself called so, which would otherwise make two series of one).
pub const OTHER_NAMESPACES: &str = "_other";
/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the request duration buckets, in seconds (Prometheus's defaults, with finer
/// steps below a millisecond, where this server answers).
pub const DURATION_BUCKETS_SECONDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
];

/// [`DURATION_BUCKETS_SECONDS`] in nanoseconds, the unit a latency is measured in: comparing
/// integers spares converting every latency to seconds. The same bounds (a unit test checks).
const DURATION_BUCKETS_NANOS: [u64; DURATION_BUCKETS_SECONDS.len()] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    10_000_000_000,
];

/// Counters kept in [`STRIPES`] copies, one per thread (round robin), added up when read.
pub struct Striped {
    stripes: Box<[Box<[AtomicU64]>]>,
}

impl Striped {
    pub fn new(slots: usize) -> Striped {
        Striped {
            stripes: (0..STRIPES)
                .map(|_| (0..slots).map(|_| AtomicU64::new(0)).collect())
                .collect(),
        }
    }

    /// Adds `by` to counter `slot` (ignored when out of range).
    pub fn add(&self, slot: usize, by: u64) {
        self.add_in(stripe(), slot, by);
    }

    /// [`Striped::add`] in a stripe looked up before, for several additions of one thread.
    fn add_in(&self, stripe: usize, slot: usize, by: u64) {
        if let Some(counter) = self.stripes[stripe].get(slot) {
            counter.fetch_add(by, Ordering::Relaxed);
        }
    }

    /// The total of counter `slot`.
    pub fn get(&self, slot: usize) -> u64 {
        self.stripes
            .iter()
            .filter_map(|stripe| stripe.get(slot))
            .map(|counter| counter.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// This thread's stripe.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

/// The `protocol` label of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Amalgam8,
    Eureka,
    Ops,
}

impl Protocol {
    const ALL: [Protocol; 3] = [Protocol::Amalgam8, Protocol::Eureka, Protocol::Ops];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Amalgam8 => "amalgam8",
            Protocol::Eureka => "eureka",
            Protocol::Ops => "ops",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The status codes counted by name; any other is counted as `other`.
const CODES: [u16; 17] = [
    200, 201, 204, 301, 400, 401, 403, 404, 405, 408, 410, 413, 415, 431, 500, 501, 503,
];
const KNOWN_CODES: usize = CODES.len();
const OTHER_CODE_SLOT: usize = KNOWN_CODES;
const CODE_SLOTS: usize = KNOWN_CODES + 1;

fn code_slot(status: u16) -> usize {
    CODES[..KNOWN_CODES]
        .iter()
        .position(|&code| code == status)
        .unwrap_or(OTHER_CODE_SLOT)
}

/// Slots of one (protocol, operation) histogram: the buckets, the one above the last bound
/// (`+Inf` only), and the sum in nanoseconds.
const HISTOGRAM_SLOTS: usize = DURATION_BUCKETS_SECONDS.len() + 2;

/// `a8registry_http_requests_total` and `a8registry_http_request_duration_seconds`.
pub struct HttpMetrics {
    operations: &'static [&'static str],
    requests: Striped,
    durations: Striped,
}

impl HttpMetrics {
    /// Metrics of requests whose operations are named by `operations` (indexes into it).
    pub fn new(operations: &'static [&'static str]) -> HttpMetrics {
        let pairs = Protocol::ALL.len() * operations.len();
        HttpMetrics {
            operations,
            requests: Striped::new(pairs * CODE_SLOTS),
            durations: Striped::new(pairs * HISTOGRAM_SLOTS),
        }
    }

    fn pair(&self, protocol: Protocol, operation: usize) -> usize {
        protocol.index() * self.operations.len() + operation
    }

    /// One answered request: its protocol, operation (an index into the names), status, and the
    /// time from its arrival to its response being written.
    pub fn record(&self, protocol: Protocol, operation: usize, status: u16, took: Duration) {
        if operation >= self.operations.len() {
            return;
        }
        let pair = self.pair(protocol, operation);
        // The thread's stripe looked up once for the three additions.
        let stripe = stripe();
        self.requests
            .add_in(stripe, pair * CODE_SLOTS + code_slot(status), 1);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = DURATION_BUCKETS_NANOS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(DURATION_BUCKETS_NANOS.len());
        let base = pair * HISTOGRAM_SLOTS;
        self.durations.add_in(stripe, base + bucket, 1);
        self.durations
            .add_in(stripe, base + HISTOGRAM_SLOTS - 1, nanos);
    }

    /// Writes both families.
    pub fn expose(&self, out: &mut Exposition) {
        out.family(
            "a8registry_http_requests_total",
            "counter",
            "Requests answered, by protocol, operation and status code.",
        );
        for protocol in Protocol::ALL {
            for (operation, name) in self.operations.iter().enumerate() {
                let pair = self.pair(protocol, operation);
                for slot in 0..CODE_SLOTS {
                    let count = self.requests.get(pair * CODE_SLOTS + slot);
                    if count == 0 {
                        continue;
                    }
                    let code = match CODES.get(slot) {
                        Some(code) => code.to_string(),
                        None => "other".to_string(),
                    };
                    out.sample(
                        "a8registry_http_requests_total",
                        &[
                            ("protocol", protocol.name()),
                            ("operation", name),
                            ("code", &code),
                        ],
                        count as f64,
                    );
                }
            }
        }
        let family = "a8registry_http_request_duration_seconds";
        out.family(
            family,
            "histogram",
            "Time from a complete request to its response written, in seconds.",
        );
        for protocol in Protocol::ALL {
            for (operation, name) in self.operations.iter().enumerate() {
                let base = self.pair(protocol, operation) * HISTOGRAM_SLOTS;
                // Read once: the count is the buckets' total, so the families agree with each
                // other even while requests are recorded.
                let buckets: Vec<u64> = (0..HISTOGRAM_SLOTS - 1)
                    .map(|b| self.durations.get(base + b))
                    .collect();
                let count: u64 = buckets.iter().sum();
                if count == 0 {
                    continue;
                }
                let sum_seconds =
                    self.durations.get(base + HISTOGRAM_SLOTS - 1) as f64 / 1_000_000_000.0;
                let labels = [("protocol", protocol.name()), ("operation", *name)];
                let mut cumulative = 0;
                for (bucket, bound) in DURATION_BUCKETS_SECONDS.iter().enumerate() {
                    cumulative += buckets[bucket];
                    let le = format_float(*bound);
                    out.bucket(family, &labels, &le, cumulative);
                }
                out.bucket(family, &labels, "+Inf", count);
                out.suffixed(family, "_sum", &labels, sum_seconds);
                out.suffixed(family, "_count", &labels, count as f64);
            }
        }
    }
}

/// A float as the exposition writes it: integers without a fraction, `+Inf`, `NaN`.
fn format_float(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// The exposition being written.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    /// The `# HELP` and `# TYPE` lines of a family; its samples follow.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.suffixed(name, "", labels, value);
    }

    /// A sample of a family under a suffixed name (`_sum`, `_count`).
    pub fn suffixed(&mut self, name: &str, suffix: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        self.text.push_str(suffix);
        self.labels(labels, None);
        self.text.push(' ');
        self.text.push_str(&format_float(value));
        self.text.push('\n');
    }

    fn bucket(&mut self, name: &str, labels: &[(&str, &str)], le: &str, count: u64) {
        self.text.push_str(name);
        self.text.push_str("_bucket");
        self.labels(labels, Some(le));
        let _ = writeln!(self.text, " {count}");
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.text.push('{');
        for (i, (name, value)) in labels.iter().enumerate() {
            if i > 0 {
                self.text.push(',');
            }
            self.text.push_str(name);
            self.text.push_str("=\"");
            escape_label_into(&mut self.text, value);
            self.text.push('"');
        }
        if let Some(le) = le {
            if !labels.is_empty() {
                self.text.push(',');
            }
            self.text.push_str("le=\"");
            self.text.push_str(le);
            self.text.push('"');
        }
        self.text.push('}');
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.text.into_bytes()
    }
}

fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `a8registry_instances` and `a8registry_namespaces` from the instances stored per namespace:
/// the largest [`MAX_NAMESPACE_SERIES`] by name (ties by name, so the choice is stable), the
/// rest summed under [`OTHER_NAMESPACES`].
/// What `/metrics` shows of one replication peer (clustered mode).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerMetrics {
    /// The peer's address, the series' `peer` label.
    pub address: String,
    /// Connected now.
    pub up: bool,
    /// Changes queued for it.
    pub queue_depth: u64,
    /// Digest repairs done with it.
    pub repairs: u64,
}

/// The replication series, one of each per peer address.
pub fn expose_peers(out: &mut Exposition, peers: &[PeerMetrics]) {
    type Pick = fn(&PeerMetrics) -> f64;
    let families: [(&str, &str, &str, Pick); 3] = [
        (
            "a8registry_replication_peer_up",
            "gauge",
            "1 while the replication link to the peer is connected, else 0.",
            |p| f64::from(u8::from(p.up)),
        ),
        (
            "a8registry_replication_queue_depth",
            "gauge",
            "Changes queued for the peer.",
            |p| p.queue_depth as f64,
        ),
        (
            "a8registry_replication_repairs_total",
            "counter",
            "Digest repairs done with the peer.",
            |p| p.repairs as f64,
        ),
    ];
    for (name, kind, help, pick) in families {
        out.family(name, kind, help);
        for peer in peers {
            out.sample(name, &[("peer", &peer.address)], pick(peer));
        }
    }
}

pub fn expose_instances(out: &mut Exposition, mut counts: Vec<(std::sync::Arc<str>, usize)>) {
    counts.retain(|(_, count)| *count > 0);
    out.family(
        "a8registry_namespaces",
        "gauge",
        "Namespaces holding at least one instance.",
    );
    out.sample("a8registry_namespaces", &[], counts.len() as f64);
    out.family(
        "a8registry_instances",
        "gauge",
        "Live instances, by namespace (the largest by name, the others as _other).",
    );
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut other = 0;
    let mut named = 0;
    for (namespace, count) in &counts {
        if named < MAX_NAMESPACE_SERIES && &**namespace != OTHER_NAMESPACES {
            out.sample(
                "a8registry_instances",
                &[("namespace", namespace)],
                *count as f64,
            );
            named += 1;
        } else {
            other += count;
        }
    }
    if other > 0 {
        out.sample(
            "a8registry_instances",
            &[("namespace", OTHER_NAMESPACES)],
            other as f64,
        );
    }
}

/// The standard `process_*` series, as Prometheus's process collector defines them, from the
/// kernel (`getrusage`, `getrlimit`, `/proc`); a figure that cannot be read is left out. Reads of
/// `/proc` are answered from kernel memory, never from a disk.
pub fn expose_process(out: &mut Exposition) {
    // SAFETY: getrusage writes one rusage struct into the zeroed one we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        (libc::getrusage(libc::RUSAGE_SELF, &mut usage) == 0).then_some(usage)
    };
    if let Some(usage) = usage {
        let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        out.family(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        );
        out.sample(
            "process_cpu_seconds_total",
            &[],
            seconds(usage.ru_utime) + seconds(usage.ru_stime),
        );
    }
    // SAFETY: sysconf has no memory effects.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
    let resident_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<f64>().ok());
    if let Some(pages) = resident_pages {
        out.family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        out.sample("process_resident_memory_bytes", &[], pages * page_bytes);
    }
    if let Some(open) = open_fds() {
        out.family(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        out.sample("process_open_fds", &[], open as f64);
    }
    // SAFETY: getrlimit writes one rlimit struct into the zeroed one we own.
    let limit = unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        (libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0).then_some(limit)
    };
    if let Some(limit) = limit {
        out.family(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
        );
        out.sample("process_max_fds", &[], limit.rlim_cur as f64);
    }
    if let Some(started) = process_start_time_seconds() {
        out.family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
        );
        out.sample("process_start_time_seconds", &[], started);
    }
}

/// How long a count of open descriptors is reused: counting costs a pass over `/proc/self/fd`,
/// one entry per connection, and scrapes come from unauthenticated clients.
const OPEN_FDS_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Open file descriptors, counted at most once per [`OPEN_FDS_REUSE`].
fn open_fds() -> Option<usize> {
    use std::sync::Mutex;
    use std::time::Instant;
    static LAST: Mutex<Option<(Instant, usize)>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, count)) = *last {
        if at.elapsed() < OPEN_FDS_REUSE {
            return Some(count);
        }
    }
    // The directory being read holds a descriptor of its own.
    let count = std::fs::read_dir("/proc/self/fd")
        .ok()?
        .count()
        .saturating_sub(1);
    *last = Some((Instant::now(), count));
    Some(count)
}

/// The process's start time in seconds since the epoch: its start in clock ticks after boot
/// (`/proc/self/stat`, field 22) plus the boot time (`/proc/stat`, `btime`).
fn process_start_time_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after its end.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let ticks: f64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no memory effects.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks_per_second <= 0 {
        return None;
    }
    Some(boot + ticks / ticks_per_second as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const OPERATIONS: &[&str] = &["Register", "ListInstances"];

    fn text(write: impl FnOnce(&mut Exposition)) -> String {
        let mut out = Exposition::default();
        write(&mut out);
        String::from_utf8(out.into_bytes()).unwrap()
    }

    #[test]
    fn striped_counters_add_up_across_threads() {
        let counters = Arc::new(Striped::new(3));
        let threads: Vec<_> = (0..12)
            .map(|_| {
                let counters = counters.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counters.add(1, 2);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(counters.get(1), 24_000);
        assert_eq!(counters.get(0), 0);
        counters.add(99, 1);
        assert_eq!(counters.get(99), 0, "out of range is ignored");
    }

    #[test]
    fn requests_and_histograms_are_exposed_consistently() {
        let http = HttpMetrics::new(OPERATIONS);
        http.record(Protocol::Amalgam8, 0, 201, Duration::from_micros(80));
        http.record(Protocol::Amalgam8, 0, 201, Duration::from_millis(3));
        http.record(Protocol::Eureka, 0, 599, Duration::from_secs(20));
        http.record(Protocol::Ops, 7, 200, Duration::ZERO);
        let text = text(|out| http.expose(out));
        assert!(text.contains(
            "a8registry_http_requests_total{protocol=\"amalgam8\",operation=\"Register\",code=\"201\"} 2\n"
        ));
        assert!(text.contains("code=\"other\"} 1\n"), "{text}");
        assert!(!text.contains("ListInstances"), "no samples for zeros");
        let family = "a8registry_http_request_duration_seconds";
        let labels = "protocol=\"amalgam8\",operation=\"Register\"";
        for (le, count) in [("0.0001", 1), ("0.0025", 1), ("0.005", 2), ("+Inf", 2)] {
            let line = format!("{family}_bucket{{{labels},le=\"{le}\"}} {count}\n");
            assert!(text.contains(&line), "{line} in {text}");
        }
        assert!(text.contains(&format!("{family}_count{{{labels}}} 2\n")));
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{family}_sum{{{labels}}} ")))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 0.00308).abs() < 1e-9, "{sum}");
        let eureka = "protocol=\"eureka\",operation=\"Register\"";
        assert!(text.contains(&format!("{family}_bucket{{{eureka},le=\"10\"}} 0\n")));
        assert!(text.contains(&format!("{family}_bucket{{{eureka},le=\"+Inf\"}} 1\n")));
    }

    #[test]
    fn namespaces_beyond_the_largest_are_summed_under_other() {
        let mut counts: Vec<(Arc<str>, usize)> = (0..150)
            .map(|i| (Arc::from(format!("ns-{i:03}")), 1000 - i))
            .collect();
        counts.push((Arc::from("empty"), 0));
        counts.push((Arc::from(OTHER_NAMESPACES), 7));
        counts.push((Arc::from("quo\"te\\"), 5000));
        let text = text(|out| expose_instances(out, counts));
        assert!(text.contains("a8registry_namespaces 152\n"), "{text}");
        let named = text
            .lines()
            .filter(|l| l.starts_with("a8registry_instances{"))
            .count();
        assert_eq!(named, MAX_NAMESPACE_SERIES + 1);
        assert!(text.contains("a8registry_instances{namespace=\"quo\\\"te\\\\\"} 5000\n"));
        assert!(text.contains("a8registry_instances{namespace=\"ns-098\"} 902\n"));
        assert!(!text.contains("ns-099"));
        // ns-099..ns-149 hold 901 down to 851, and the namespace called `_other` 7.
        let other: usize = (99..150).map(|i| 1000 - i).sum::<usize>() + 7;
        assert!(text.contains(&format!(
            "a8registry_instances{{namespace=\"_other\"}} {other}\n"
        )));
        assert!(!text.contains("\"empty\""));
    }

    #[test]
    fn process_series_are_read_from_the_kernel() {
        let text = text(expose_process);
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(text.contains(&format!("\n{name} ")), "{name} in {text}");
        }
        let started: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_start_time_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(started <= now + 1.0 && started > now - 86_400.0 * 365.0);
    }

    #[test]
    fn latencies_fall_in_the_buckets_their_seconds_name() {
        for (&nanos, &seconds) in DURATION_BUCKETS_NANOS.iter().zip(&DURATION_BUCKETS_SECONDS) {
            assert_eq!(Duration::from_nanos(nanos).as_secs_f64(), seconds);
        }
        // The bucket of a latency by its nanoseconds is the one its seconds pick.
        let by_seconds = |took: Duration| {
            DURATION_BUCKETS_SECONDS
                .iter()
                .position(|&bound| took.as_secs_f64() <= bound)
                .unwrap_or(DURATION_BUCKETS_SECONDS.len())
        };
        let metrics = HttpMetrics::new(&["Op"]);
        let mut latencies = vec![0, 1, u64::MAX];
        for &bound in &DURATION_BUCKETS_NANOS {
            latencies.extend([bound - 1, bound, bound + 1]);
        }
        for (i, &nanos) in latencies.iter().enumerate() {
            let took = Duration::from_nanos(nanos);
            let before: Vec<u64> = (0..HISTOGRAM_SLOTS - 1)
                .map(|slot| metrics.durations.get(slot))
                .collect();
            metrics.record(Protocol::Amalgam8, 0, 200, took);
            let bucket = (0..HISTOGRAM_SLOTS - 1)
                .find(|&slot| metrics.durations.get(slot) != before[slot])
                .unwrap();
            assert_eq!(bucket, by_seconds(took), "latency {i}: {nanos} ns");
        }
    }

    #[test]
    fn floats_are_written_as_the_format_reads_them() {
        assert_eq!(format_float(10.0), "10");
        assert_eq!(format_float(0.00025), "0.00025");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
    }
}
