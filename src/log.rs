//! Log lines on stderr: levels, and one of three formats (text, json, logstash), written by one
//! plain thread.
//!
//! The level and format are process-wide settings written once at startup. Callers check
//! [`enabled`] before building an expensive line (the access log is at debug level and runs on
//! every request).
//!
//! Callers never write to stderr themselves: they run on may workers, and a write to a pipe that
//! nobody reads blocks until the reader catches up, which stalled every connection of the worker
//! (an unread stderr pipe stopped the server after 428 requests at debug level). [`write()`]
//! formats the line and appends it to a bounded in-memory queue ([`MAX_QUEUED_BYTES`], with a
//! reserve for lines at info level and above) under a short lock; the `log` thread takes the whole queue and writes it with one `write_all`, so lines
//! never interleave and a burst costs one system call. A line that does not fit is dropped and
//! counted; once the queue drains (or at least every [`DROP_REPORT_INTERVAL`] while it does not),
//! the writer reports the count in a warning line `log lines dropped`. [`flush`] waits, boundedly,
//! until everything queued so far is written: the process calls it before it exits, so its last
//! lines are not lost.

use crate::config::{LogFormat, LogLevel};
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most bytes of formatted lines waiting for the writer. At a few hundred bytes per access line
/// this holds thousands of lines: enough for the writer to fall behind for a moment without loss,
/// little enough that a stalled stderr costs a bounded amount of memory.
pub const MAX_QUEUED_BYTES: usize = 1024 * 1024;

/// Extra room for lines at info level and above, beyond [`MAX_QUEUED_BYTES`]: a flood of debug
/// access lines cannot crowd out a warning, an error or the process's `stopped` line.
pub const IMPORTANT_RESERVE_BYTES: usize = 64 * 1024;

/// Least time between two `log lines dropped` reports while the queue stays busy.
pub const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Longest wait of [`flush`] at exit: a stderr that nobody reads must not keep the process alive.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The writer's pause after each write: a stream of lines is then written in batches, with one
/// system call and one wake-up per pause rather than per line. An isolated line is still written
/// at once.
const BATCH_PAUSE: Duration = Duration::from_millis(1);

/// Capacity the writer keeps for its batch buffer between bursts.
const IDLE_BUFFER_BYTES: usize = 64 * 1024;

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);
static FORMAT: AtomicU8 = AtomicU8::new(0);
/// The queue of the process, once [`init`] has started its writer.
static PROCESS_QUEUE: OnceLock<&'static LineQueue> = OnceLock::new();

/// Sets the level and format for the rest of the process and starts the writer thread.
///
/// # Errors
///
/// When the writer thread cannot be started.
pub fn init(level: LogLevel, format: LogFormat) -> std::io::Result<()> {
    LEVEL.store(level as u8, Ordering::Relaxed);
    let format = match format {
        LogFormat::Text => 0,
        LogFormat::Json => 1,
        LogFormat::Logstash => 2,
    };
    FORMAT.store(format, Ordering::Relaxed);
    if PROCESS_QUEUE.get().is_some() {
        return Ok(());
    }
    let queue: &'static LineQueue = Box::leak(Box::new(LineQueue::default()));
    std::thread::Builder::new()
        .name("log".into())
        .spawn(move || queue.run_writer(&mut std::io::stderr(), report_line))?;
    let _ = PROCESS_QUEUE.set(queue);
    // Rust's default hook prints a panic straight to stderr, from the panicking thread: route it
    // through the queue too, so it keeps the log's format.
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        let thread = std::thread::current();
        write(
            LogLevel::Error,
            "panic",
            &[
                ("thread", &thread.name().unwrap_or("unnamed")),
                ("location", &location),
                ("message", &message),
            ],
        );
        // The release build aborts on panic (Cargo.toml), and a panic of the main thread ends any
        // build: the line must be out before the process goes.
        flush();
    }));
    Ok(())
}

/// True when a line at `level` would be written.
pub fn enabled(level: LogLevel) -> bool {
    level as u8 >= LEVEL.load(Ordering::Relaxed)
}

/// Writes one line at `level` with a message and extra key/value fields. Never blocks on stderr:
/// the line is queued for the writer thread, or dropped and counted when the queue is full.
pub fn write(level: LogLevel, message: &str, fields: &[(&str, &dyn std::fmt::Display)]) {
    if !enabled(level) {
        return;
    }
    let line = format_line(
        FORMAT.load(Ordering::Relaxed),
        level,
        SystemTime::now(),
        message,
        fields,
    );
    match PROCESS_QUEUE.get() {
        Some(queue) => queue.push(&line, level >= LogLevel::Info),
        // Before `init` only the main thread runs: nothing to stall.
        None => {
            // A failed write to stderr has nowhere better to be reported.
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }
}

/// Waits until every line queued so far (and the report of any dropped ones) has been written,
/// at most [`FLUSH_TIMEOUT`]. Returns false when the wait timed out.
pub fn flush() -> bool {
    PROCESS_QUEUE
        .get()
        .is_none_or(|queue| queue.flush(FLUSH_TIMEOUT))
}

/// The warning line that reports `count` dropped lines, in the process's format.
fn report_line(count: u64) -> String {
    format_line(
        FORMAT.load(Ordering::Relaxed),
        LogLevel::Warn,
        SystemTime::now(),
        "log lines dropped",
        &[("count", &count)],
    )
}

/// The bounded queue between the threads that log and the one that writes.
#[derive(Default)]
struct LineQueue {
    state: Mutex<QueueState>,
    /// Signalled when there is something for the writer: lines, or dropped lines to report.
    work: Condvar,
    /// Signalled when the writer has finished a batch.
    progress: Condvar,
}

#[derive(Default)]
struct QueueState {
    /// Complete lines, oldest first; at most [`MAX_QUEUED_BYTES`] + [`IMPORTANT_RESERVE_BYTES`].
    pending: String,
    /// Lines accepted since the start.
    accepted: u64,
    /// Lines written (or failed to write) since the start; `accepted - written` are in flight.
    written: u64,
    /// Lines dropped since the last report.
    dropped: u64,
    /// The writer holds a batch or a report it has not finished writing.
    writing: bool,
    /// The writer sleeps on `work` and must be woken for new lines.
    writer_waiting: bool,
}

impl LineQueue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one complete line, or counts it as dropped when it does not fit; an `important`
    /// line may use [`IMPORTANT_RESERVE_BYTES`] more. The lock is held for one copy of the line.
    fn push(&self, line: &str, important: bool) {
        let limit = MAX_QUEUED_BYTES
            + if important {
                IMPORTANT_RESERVE_BYTES
            } else {
                0
            };
        let mut state = self.lock();
        // Unless the writer sleeps on an empty queue, it is busy or pausing and will find this
        // line (or this drop) when it next looks: no wake-up, no system call.
        let wake_writer = std::mem::take(&mut state.writer_waiting);
        if state.pending.len() + line.len() > limit {
            state.dropped += 1;
        } else {
            state.pending.push_str(line);
            state.accepted += 1;
        }
        drop(state);
        if wake_writer {
            self.work.notify_one();
        }
    }

    /// Waits until the lines accepted before the call are written and no drop is left
    /// unreported, or until `timeout` passed (then false).
    fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        let target = state.accepted;
        while state.written < target || state.dropped > 0 || state.writing {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .progress
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// The writer thread's loop: takes the whole queue, writes it, reports drops. Runs for the
    /// life of the process; blocking here stalls no one but this thread.
    fn run_writer(&self, out: &mut dyn Write, report: fn(u64) -> String) -> ! {
        let mut batch = String::new();
        // Counted from the start, so that a first report follows the lines queued before it.
        let mut last_report = Instant::now();
        loop {
            let mut state = self.lock();
            while state.pending.is_empty() && state.dropped == 0 {
                state.writer_waiting = true;
                state = self.work.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            state.writer_waiting = false;
            std::mem::swap(&mut batch, &mut state.pending);
            let through = state.accepted;
            state.writing = true;
            drop(state);

            // A failed write to stderr has nowhere better to be reported.
            let _ = out.write_all(batch.as_bytes());
            batch.clear();
            batch.shrink_to(IDLE_BUFFER_BYTES);

            let mut state = self.lock();
            let report_due =
                state.pending.is_empty() || last_report.elapsed() >= DROP_REPORT_INTERVAL;
            let dropped = if state.dropped > 0 && report_due {
                std::mem::take(&mut state.dropped)
            } else {
                0
            };
            drop(state);
            if dropped > 0 {
                let _ = out.write_all(report(dropped).as_bytes());
                last_report = Instant::now();
            }
            let mut state = self.lock();
            state.written = through;
            state.writing = false;
            drop(state);
            self.progress.notify_all();
            std::thread::sleep(BATCH_PAUSE);
        }
    }
}

fn format_line(
    format: u8,
    level: LogLevel,
    at: SystemTime,
    message: &str,
    fields: &[(&str, &dyn std::fmt::Display)],
) -> String {
    let nanos = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    let time = rfc3339(nanos, 3);
    match format {
        0 => {
            let mut line = format!("time=\"{time}\" level={} msg={:?}", level.name(), message);
            for (key, value) in fields {
                line.push_str(&format!(" {key}={:?}", value.to_string()));
            }
            line.push('\n');
            line
        }
        _ => {
            let mut object = serde_json::Map::new();
            if format == 2 {
                object.insert("@timestamp".into(), time.into());
                object.insert("@version".into(), "1".into());
                object.insert("level".into(), level.name().into());
                object.insert("message".into(), message.into());
            } else {
                object.insert("time".into(), time.into());
                object.insert("level".into(), level.name().into());
                object.insert("msg".into(), message.into());
            }
            for (key, value) in fields {
                object.insert((*key).to_string(), value.to_string().into());
            }
            let mut line = serde_json::Value::Object(object).to_string();
            line.push('\n');
            line
        }
    }
}

/// RFC 3339 in UTC for a unix time in nanoseconds, with `digits` fraction digits (0..=9) and the
/// trailing zeros trimmed; the zero time of Go (`0001-01-01T00:00:00Z`) for `i128::MIN`.
pub fn rfc3339(unix_nanos: i128, digits: u32) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000) as i64;
    let frac = unix_nanos.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    );
    if digits > 0 {
        let scaled = frac / 10u32.pow(9 - digits.min(9));
        if scaled != 0 {
            let text = format!("{scaled:0width$}", width = digits.min(9) as usize);
            out.push('.');
            out.push_str(text.trim_end_matches('0'));
        }
    }
    out.push('Z');
    out
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's civil-from-days algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Logs at info level.
#[macro_export]
macro_rules! info {
    ($msg:expr $(, $key:literal => $value:expr)* $(,)?) => {
        $crate::log::write($crate::config::LogLevel::Info, &$msg, &[$(($key, &$value)),*])
    };
}

/// Logs at warning level.
#[macro_export]
macro_rules! warn {
    ($msg:expr $(, $key:literal => $value:expr)* $(,)?) => {
        $crate::log::write($crate::config::LogLevel::Warn, &$msg, &[$(($key, &$value)),*])
    };
}

/// Logs at error level.
#[macro_export]
macro_rules! error {
    ($msg:expr $(, $key:literal => $value:expr)* $(,)?) => {
        $crate::log::write($crate::config::LogLevel::Error, &$msg, &[$(($key, &$value)),*])
    };
}

/// Logs at debug level; the fields are only evaluated when debug is enabled.
#[macro_export]
macro_rules! debug {
    ($msg:expr $(, $key:literal => $value:expr)* $(,)?) => {
        if $crate::log::enabled($crate::config::LogLevel::Debug) {
            $crate::log::write($crate::config::LogLevel::Debug, &$msg, &[$(($key, &$value)),*])
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn rfc3339_trims_fraction_zeros() {
        assert_eq!(rfc3339(0, 9), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(1_795_355_889_624_551_895, 9),
            "2026-11-22T13:58:09.624551895Z"
        );
        assert_eq!(rfc3339(1_500_000_000, 9), "1970-01-01T00:00:01.5Z");
        assert_eq!(
            rfc3339(-62_135_596_800_000_000_000, 9),
            "0001-01-01T00:00:00Z"
        );
    }

    #[test]
    fn logstash_lines_carry_the_logstash_keys() {
        let at = UNIX_EPOCH + Duration::from_secs(1);
        let line = format_line(2, LogLevel::Info, at, "listening", &[("address", &"x")]);
        let v: serde_json::Value = serde_json::from_slice(line.as_bytes()).unwrap();
        assert_eq!(v["@timestamp"], "1970-01-01T00:00:01Z");
        assert_eq!(v["@version"], "1");
        assert_eq!(v["level"], "info");
        assert_eq!(v["message"], "listening");
        assert_eq!(v["address"], "x");
    }

    /// A stderr stand-in that blocks every write until it is opened, like a pipe nobody reads.
    #[derive(Clone, Default)]
    struct GatedSink {
        open: Arc<(Mutex<bool>, Condvar)>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl GatedSink {
        fn open(&self) {
            *self.open.0.lock().unwrap() = true;
            self.open.1.notify_all();
        }

        fn text(&self) -> String {
            String::from_utf8(self.written.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for GatedSink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let (lock, opened) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = opened.wait(open).unwrap();
            }
            self.written.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn start_writer(sink: &GatedSink) -> &'static LineQueue {
        let queue: &'static LineQueue = Box::leak(Box::default());
        let mut out = sink.clone();
        std::thread::spawn(move || queue.run_writer(&mut out, |n| format!("dropped {n}\n")));
        queue
    }

    #[test]
    fn a_stalled_writer_drops_and_counts_instead_of_blocking() {
        let sink = GatedSink::default();
        let queue = start_writer(&sink);
        queue.push("first\n", false);
        // Wait until the writer holds "first" and is stuck writing it.
        while !queue.lock().pending.is_empty() {
            std::thread::yield_now();
        }
        let line = format!("{}\n", "x".repeat(1023));
        let fit = MAX_QUEUED_BYTES / line.len();
        for _ in 0..fit + 500 {
            queue.push(&line, false);
        }
        assert_eq!(queue.lock().dropped, 500);
        // The full queue still takes an important line.
        queue.push("stopped\n", true);
        assert_eq!(queue.lock().dropped, 500);
        assert!(
            !queue.flush(Duration::from_millis(50)),
            "nothing is written yet"
        );

        sink.open();
        assert!(queue.flush(Duration::from_secs(10)));
        let text = sink.text();
        let (reports, lines): (Vec<&str>, Vec<&str>) =
            text.lines().partition(|l| l.starts_with("dropped"));
        // Once the queue drained, or after a second if the machine is that slow.
        assert_eq!(reports, ["dropped 500"]);
        assert_eq!(lines.len(), 1 + fit + 1);
        assert_eq!(lines[0], "first");
        assert!(lines[1..=fit].iter().all(|l| l.len() == 1023));
        assert_eq!(lines[fit + 1], "stopped");
        assert_eq!(queue.lock().dropped, 0);
    }

    #[test]
    fn lines_are_written_promptly_and_in_order() {
        let sink = GatedSink::default();
        sink.open();
        let queue = start_writer(&sink);
        for i in 0..1000 {
            queue.push(&format!("line {i}\n"), i % 2 == 0);
        }
        assert!(queue.flush(Duration::from_secs(10)));
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(sink.text(), expected, "no drops, no reports");
    }

    #[test]
    fn a_line_larger_than_the_queue_is_dropped_and_reported() {
        let sink = GatedSink::default();
        sink.open();
        let queue = start_writer(&sink);
        queue.push(
            &"x".repeat(MAX_QUEUED_BYTES + IMPORTANT_RESERVE_BYTES + 1),
            true,
        );
        assert!(queue.flush(Duration::from_secs(10)));
        assert_eq!(sink.text(), "dropped 1\n");
    }

    #[test]
    fn text_lines_quote_values() {
        let line = format_line(0, LogLevel::Warn, UNIX_EPOCH, "a b", &[("k", &"v w")]);
        assert_eq!(
            line,
            "time=\"1970-01-01T00:00:00Z\" level=warning msg=\"a b\" k=\"v w\"\n"
        );
    }
}
