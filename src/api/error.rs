//! The error texts of the contract (spec 1.4), in one place, and the domain-error mapping.

use crate::http::response::Response;
use crate::registry::instance::LimitError;
use crate::registry::{Error, ErrorKind};

pub const RESOURCE_NOT_FOUND: &str = "Resource not found";
pub const METHOD_NOT_ALLOWED: &str = "Method not allowed";
pub const BAD_CONTENT_TYPE: &str = "Bad Content-Type or charset, expected 'application/json'";
pub const MALFORMED_PERCENT_ENCODING: &str = "Malformed percent-encoding in request path";

pub const FILTER_BAD_FIELDS: &str = "Undefined or malformed instance fields in filter";
pub const FILTER_SELECTION_CRITERIA: &str = "Malformed or invalid instance selection criteria";
pub const ENDPOINT_MISSING: &str = "Instance endpoint is required";
pub const ENDPOINT_TYPE_OR_VALUE_MISSING: &str = "Endpoint type or value are missing";
pub const ENDPOINT_TYPE_INVALID: &str = "Endpoint type is invalid";
pub const INSTANCE_ID_MISSING: &str = "Missing instance identifier";
pub const INSTANCE_ENUMERATION: &str = "Failed to enumerate instances";
pub const STATUS_INVALID: &str = "Valid statuses are: UP, STARTING, OUT_OF_SERVICE";
pub const DEREGISTRATION_FAILURE: &str = "Failed to deregister instance";
pub const HEARTBEAT_FAILURE: &str = "Failed to renew instance registration";
pub const REGISTRATION_FAILURE: &str = "Failed to register instance";
pub const SERVICE_NAME_MISSING: &str = "Service name is required";
pub const SERVICE_ENUMERATION: &str = "Failed to enumerate service names";
/// A blocking query's `index` or `wait` is malformed (observability contract §1.2).
pub const INVALID_WATCH: &str = "Invalid index or wait parameter";

const SERVICE_NAME_TOO_LONG: &str =
    "Failed to register the instance because service name exceeded 64 bytes";
const ENDPOINT_TOO_LONG: &str =
    "Failed to register the instance because endpoint value exceeded 128 bytes";
const STATUS_TOO_LONG: &str = "Failed to register the instance because status exceeded 32 bytes";
const METADATA_TOO_LONG: &str =
    "Failed to register the instance because metadata exceeded 1024 bytes";
/// D38: also for too many tags, whatever their length.
const TAGS_TOO_LONG: &str = "Failed to register the instance because tags exceeded 8192 bytes";

/// The answer when the store could not be reached in time, on every route of both APIs.
pub const STORE_UNAVAILABLE: &str = "Registry store unavailable";
/// A blocking query beyond the waiting requests a process holds (see [`super::watch`]).
pub const TOO_MANY_WATCHERS: &str = "Too many waiting requests, retry later";

/// The one mapping of registry errors to answers, for both protocols: `unavailable` is always
/// 503, a limit the 400 of spec 3.4 step 9, capacity 403; `not_found` is the protocol's own
/// (410 on Amalgam8 leases, 404 on Eureka), and anything else is 500 with the route's message.
pub fn failure(error: &Error, not_found_status: u16, message: &'static str) -> Response {
    match error.kind() {
        ErrorKind::Unavailable => {
            crate::warn!("store unavailable", "error" => error);
            Response::error(503, STORE_UNAVAILABLE)
        }
        ErrorKind::Limit => Response::error(
            400,
            match error.broken_limit() {
                Some(LimitError::ServiceName) => SERVICE_NAME_TOO_LONG,
                Some(LimitError::EndpointValue) => ENDPOINT_TOO_LONG,
                Some(LimitError::Status) => STATUS_TOO_LONG,
                Some(LimitError::Metadata) | None => METADATA_TOO_LONG,
                Some(LimitError::Tags) => TAGS_TOO_LONG,
            },
        ),
        ErrorKind::Capacity => Response::error(403, REGISTRATION_FAILURE),
        ErrorKind::NotFound => Response::error(not_found_status, message),
        ErrorKind::Internal => {
            crate::error!("registry failure", "error" => error);
            Response::error(500, message)
        }
    }
}

/// The answer to a failed registration (spec 3.4 step 9).
pub fn registration_error(error: &Error) -> Response {
    failure(error, 500, REGISTRATION_FAILURE)
}

/// The answer to a failed heartbeat or deregistration on the Amalgam8 API: 410 for an unknown id
/// (clients re-register on 410, D18).
pub fn lease_error(error: &Error, message: &'static str) -> Response {
    failure(error, 410, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(error: &Error, not_found_status: u16) -> (u16, String) {
        let response = failure(error, not_found_status, HEARTBEAT_FAILURE);
        let body = String::from_utf8(response.body.as_bytes().to_vec()).unwrap();
        (response.status, body)
    }

    #[test]
    fn every_kind_has_one_answer() {
        assert_eq!(
            answer(&Error::unavailable("timed out"), 410),
            (503, r#"{"Error":"Registry store unavailable"}"#.to_string()),
            "never 500"
        );
        assert_eq!(answer(&Error::not_found(), 410).0, 410);
        assert_eq!(answer(&Error::not_found(), 404).0, 404);
        assert_eq!(answer(&Error::capacity(), 410).0, 403);
        let (status, body) = answer(&Error::limit(LimitError::Tags), 410);
        assert_eq!(status, 400);
        assert!(body.contains("tags exceeded 8192 bytes"), "{body}");
        assert_eq!(answer(&Error::internal("bug"), 410).0, 500);
    }
}
