//! The state of one source as `/uptime` reports it (contract §7), and the logging of its
//! failures and recoveries (contract §2).

use super::SourceKind;
use serde_json::{Map, Value};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often an error that lasts is logged again.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Ok,
    Error,
}

struct Inner {
    state: State,
    last_success_unix_nanos: Option<i128>,
    last_error: Option<(String, i128)>,
    /// When the current error state began.
    error_since: Option<Instant>,
    last_error_logged: Option<Instant>,
    /// Source-specific properties (`url`, `files`).
    extra: Map<String, Value>,
}

/// One source's health, shared by its threads and `/uptime`.
pub struct Health {
    kind: SourceKind,
    inner: Mutex<Inner>,
}

/// What `/uptime` shows of one source.
pub struct SourceReport {
    pub name: &'static str,
    pub properties: Value,
    /// How long the source has been in the error state without interruption.
    pub failing_for: Option<Duration>,
}

fn now_unix_nanos() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

fn time_text(unix_nanos: i128) -> String {
    crate::log::rfc3339(unix_nanos, 3)
}

impl Health {
    pub fn new(kind: SourceKind, extra: Map<String, Value>) -> Health {
        Health {
            kind,
            inner: Mutex::new(Inner {
                state: State::Starting,
                last_success_unix_nanos: None,
                last_error: None,
                error_since: None,
                last_error_logged: None,
                extra,
            }),
        }
    }

    pub fn kind(&self) -> SourceKind {
        self.kind
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Something succeeded (a fetch, a file read). `all_ok`: nothing else of the source is
    /// failing now, so the source leaves the error state.
    pub fn succeeded(&self, all_ok: bool) {
        let mut inner = self.lock();
        inner.last_success_unix_nanos = Some(now_unix_nanos());
        if all_ok {
            if inner.state == State::Error {
                crate::info!("catalog recovered", "source" => self.kind.name());
            }
            inner.state = State::Ok;
            inner.error_since = None;
            inner.last_error_logged = None;
        }
    }

    /// What was failing stopped mattering (a failing Kubernetes namespace was closed): the
    /// source leaves the error state without a new success.
    pub fn recovered(&self) {
        let mut inner = self.lock();
        if inner.state == State::Error {
            crate::info!("catalog recovered", "source" => self.kind.name());
            inner.state = State::Ok;
            inner.error_since = None;
            inner.last_error_logged = None;
        }
    }

    /// Something failed; `message` names what and why.
    pub fn failed(&self, message: &str) {
        let mut inner = self.lock();
        let now = Instant::now();
        let changed = inner.last_error.as_ref().is_none_or(|(m, _)| m != message);
        let entering = inner.state != State::Error;
        let due = inner
            .last_error_logged
            .is_none_or(|at| now.duration_since(at) >= ERROR_LOG_INTERVAL);
        if entering || changed || due {
            crate::error!("catalog failed", "source" => self.kind.name(), "error" => message);
            inner.last_error_logged = Some(now);
        }
        if entering {
            inner.error_since = Some(now);
        }
        inner.state = State::Error;
        inner.last_error = Some((message.to_string(), now_unix_nanos()));
    }

    /// Sets a source-specific property.
    pub fn set(&self, key: &str, value: Value) {
        self.lock().extra.insert(key.to_string(), value);
    }

    pub fn report(&self, instances: usize) -> SourceReport {
        let inner = self.lock();
        let mut properties = inner.extra.clone();
        properties.insert("instances".into(), instances.into());
        properties.insert(
            "last_error".into(),
            match &inner.last_error {
                None => Value::Null,
                Some((message, at)) => {
                    serde_json::json!({ "message": message, "time": time_text(*at) })
                }
            },
        );
        properties.insert(
            "last_success".into(),
            inner
                .last_success_unix_nanos
                .map_or(Value::Null, |at| time_text(at).into()),
        );
        let state = match inner.state {
            State::Starting => "starting",
            State::Ok => "ok",
            State::Error => "error",
        };
        properties.insert("state".into(), state.into());
        SourceReport {
            name: self.kind.name(),
            properties: Value::Object(properties),
            failing_for: inner.error_since.map(|since| since.elapsed()),
        }
    }
}
