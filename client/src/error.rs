//! The client's one error type.

use std::time::Duration;

use cascade_shared::validate::FieldError;
use cascade_shared::wire::ErrorBody;
use reqwest::StatusCode;

/// Why a call did not give its answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The input was refused before anything was sent (the origin's own rules).
    #[error("invalid {}: {}", .0.field, .0.message)]
    Invalid(#[from] FieldError),
    /// The origin answered with an error.
    #[error("{status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The origin's error code, e.g. `invalid_parameter`, `overloaded`.
        code: String,
        /// Its explanation.
        message: String,
        /// The field it concerns, for a caller's mistake.
        field: Option<String>,
        /// How long the origin asked the caller to wait before retrying, when it did.
        retry_after: Option<Duration>,
    },
    /// No answer within the request timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The origin could not be reached (connection refused, reset, DNS).
    #[error("could not reach the origin: {0}")]
    Unreachable(String),
    /// The answer was not what the API describes.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// The client was built wrong.
    #[error("client configuration: {0}")]
    Config(String),
}

impl Error {
    /// The origin's error code, for an [`Error::Api`].
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, for an [`Error::Api`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// How long to wait before retry number `attempt + 1`, or `None` when retrying cannot help:
    /// the origin's `Retry-After` on a retryable status; a short backoff (100 ms, doubling) after
    /// a timeout or a failed connection.
    pub(crate) fn retry_wait(&self, attempt: u32) -> Option<Duration> {
        match self {
            Error::Api { status, retry_after: Some(wait), .. }
                if StatusCode::from_u16(*status).is_ok_and(crate::may_retry) =>
            {
                Some(*wait)
            }
            Error::Timeout(_) | Error::Unreachable(_) => Some(Duration::from_millis(100 << attempt.min(6))),
            _ => None,
        }
    }

    pub(crate) fn from_transport(error: &reqwest::Error, timeout: Duration) -> Self {
        if error.is_timeout() { Error::Timeout(timeout) } else { Error::Unreachable(error.to_string()) }
    }

    pub(crate) fn from_answer(status: StatusCode, body: &[u8], retry_after: Option<Duration>) -> Self {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(ErrorBody { error }) => Error::Api {
                status: status.as_u16(),
                code: error.code,
                message: error.message,
                field: error.field,
                retry_after,
            },
            Err(_) => Error::Api {
                status: status.as_u16(),
                code: "unexpected".into(),
                message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                field: None,
                retry_after,
            },
        }
    }
}

/// Unix time, ms.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
