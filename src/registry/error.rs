//! The one error type of the registry: what a store operation or a domain call can fail with.
//!
//! A public type over a private kind, so new detail can be added without breaking callers; each
//! protocol turns it into a status and a body in one place (`api::error`).

use super::instance::LimitError;
use std::fmt;

/// Why a registry operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    NotFound,
    Limit(LimitError),
    Capacity,
    Unavailable(String),
    Internal(String),
}

/// The kinds of [`Error`], for callers that branch on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// No live instance with that id in the namespace (unknown, deregistered or expired).
    NotFound,
    /// The instance breaks a length or count limit.
    Limit,
    /// A new id would take the namespace over its capacity.
    Capacity,
    /// The backend did not answer in time or could not be reached; the operation may be retried.
    Unavailable,
    /// A bug or an inconsistent backend: the operation cannot succeed as asked.
    Internal,
}

impl Error {
    pub fn not_found() -> Error {
        Error {
            kind: Kind::NotFound,
        }
    }

    pub fn limit(limit: LimitError) -> Error {
        Error {
            kind: Kind::Limit(limit),
        }
    }

    pub fn capacity() -> Error {
        Error {
            kind: Kind::Capacity,
        }
    }

    /// The backend is unreachable or late; `detail` is for the log, never for clients.
    pub fn unavailable(detail: impl Into<String>) -> Error {
        Error {
            kind: Kind::Unavailable(detail.into()),
        }
    }

    /// Something that should not happen; `detail` is for the log, never for clients.
    pub fn internal(detail: impl Into<String>) -> Error {
        Error {
            kind: Kind::Internal(detail.into()),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self.kind {
            Kind::NotFound => ErrorKind::NotFound,
            Kind::Limit(_) => ErrorKind::Limit,
            Kind::Capacity => ErrorKind::Capacity,
            Kind::Unavailable(_) => ErrorKind::Unavailable,
            Kind::Internal(_) => ErrorKind::Internal,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == Kind::NotFound
    }

    /// The limit that was broken, for a [`ErrorKind::Limit`] error.
    pub fn broken_limit(&self) -> Option<LimitError> {
        match self.kind {
            Kind::Limit(limit) => Some(limit),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::NotFound => f.write_str("no such instance"),
            Kind::Limit(limit) => write!(f, "limit exceeded: {limit:?}"),
            Kind::Capacity => f.write_str("namespace capacity exceeded"),
            Kind::Unavailable(detail) => write!(f, "store unavailable: {detail}"),
            Kind::Internal(detail) => write!(f, "internal error: {detail}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_apart() {
        assert_eq!(Error::not_found().kind(), ErrorKind::NotFound);
        assert!(Error::not_found().is_not_found());
        let limit = Error::limit(LimitError::Metadata);
        assert_eq!(limit.kind(), ErrorKind::Limit);
        assert_eq!(limit.broken_limit(), Some(LimitError::Metadata));
        assert_eq!(Error::capacity().kind(), ErrorKind::Capacity);
        assert_eq!(Error::unavailable("x").kind(), ErrorKind::Unavailable);
        assert_eq!(Error::internal("y").kind(), ErrorKind::Internal);
        assert_eq!(
            Error::unavailable("timed out").to_string(),
            "store unavailable: timed out"
        );
    }
}
