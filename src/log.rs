//! Log lines on stderr: levels, and one of three formats (text, json, logstash).
//!
//! The logger is a process-wide setting written once at startup. A line is built in one buffer and
//! written with a single `write_all`, so lines from different threads never interleave. Callers
//! check [`enabled`] before building an expensive line (the access log is at debug level and runs
//! on every request).

use crate::config::{LogFormat, LogLevel};
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);
static FORMAT: AtomicU8 = AtomicU8::new(0);

/// Sets the level and format for the rest of the process.
pub fn init(level: LogLevel, format: LogFormat) {
    LEVEL.store(level as u8, Ordering::Relaxed);
    let format = match format {
        LogFormat::Text => 0,
        LogFormat::Json => 1,
        LogFormat::Logstash => 2,
    };
    FORMAT.store(format, Ordering::Relaxed);
}

/// True when a line at `level` would be written.
pub fn enabled(level: LogLevel) -> bool {
    level as u8 >= LEVEL.load(Ordering::Relaxed)
}

/// Writes one line at `level` with a message and extra key/value fields.
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
    // A failed write to stderr has nowhere better to be reported.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
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
    use std::time::Duration;

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
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["@timestamp"], "1970-01-01T00:00:01Z");
        assert_eq!(v["@version"], "1");
        assert_eq!(v["level"], "info");
        assert_eq!(v["message"], "listening");
        assert_eq!(v["address"], "x");
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
