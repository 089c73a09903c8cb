//! The one place where an error becomes an HTTP status, a JSON error code and `Retry-After`.
//!
//! Domain modules return their own errors ([`FieldError`], [`AuthError`], [`RecommendError`],
//! [`EventsError`], [`BuildError`]); handlers convert them into [`ApiError`] with `?`, and
//! [`ApiError::classify`] decides the answer by an exhaustive match. Client errors are answered and
//! logged at debug; server errors are logged once, here.

use crate::catalogue::CatalogueError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cascade_shared::validate::FieldError;
use cascade_shared::wire::ErrorBody;

use crate::app::BuildError;
use crate::auth::AuthError;
use crate::cache::events::{EventsError, EventsFailure};
use crate::recommend::RecommendError;

/// Why a request was not answered with what it asked for.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The caller sent something wrong.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The body is larger than the route accepts.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// No or bad credentials.
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    /// No such route or resource.
    #[error("{0}")]
    NotFound(String),
    /// A bundle offered for loading could not be built: refused, or a dependency was down.
    #[error("bundle refused: {0}")]
    Reload(#[from] BuildError),
    /// More requests in flight than configured.
    #[error("too many requests in flight; retry shortly")]
    Overloaded,
    /// The request ran past the request timeout.
    #[error("the request took longer than {0:?}; retry shortly")]
    TimedOut(std::time::Duration),
    /// An events batch stopped part way: the state store failed.
    #[error(transparent)]
    Events(#[from] EventsError),
    /// No list at all could be served.
    #[error(transparent)]
    Recommend(#[from] RecommendError),
    /// A catalogue change was refused or could not be saved.
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
    /// The configuration file offered for a reload is wrong (the rules in force stay).
    #[error("configuration refused, the rules in force stay: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// The handler panicked (the panic hook logged where); the origin goes on.
    #[error("internal error; see the log")]
    Internal,
}

/// How an error is answered.
#[derive(Debug)]
struct Classified {
    status: StatusCode,
    code: &'static str,
    /// Whether the caller may retry soon (answered with `Retry-After: 1`).
    retry: bool,
}

impl ApiError {
    /// The status, the error code and whether a retry may help: decided here and only here.
    fn classify(&self) -> Classified {
        let (status, code, retry) = match self {
            ApiError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_parameter", false),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", false),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", false),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", false),
            ApiError::Reload(error) if error.is_dependency_down() => {
                (StatusCode::SERVICE_UNAVAILABLE, "dependency_unavailable", true)
            }
            ApiError::Reload(BuildError::Task(_)) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", false),
            ApiError::Reload(BuildError::Busy) => (StatusCode::CONFLICT, "reload_in_progress", true),
            ApiError::Reload(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bundle_rejected", false),
            ApiError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded", true),
            ApiError::Catalogue(CatalogueError::Deleted(_)) => (StatusCode::CONFLICT, "item_deleted", false),
            ApiError::Catalogue(CatalogueError::Full(_)) => (StatusCode::CONFLICT, "catalogue_full", false),
            ApiError::Catalogue(CatalogueError::Persist { .. } | CatalogueError::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "catalogue_unavailable", true)
            }
            ApiError::Config(_) => (StatusCode::UNPROCESSABLE_ENTITY, "config_rejected", false),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal", false),
            ApiError::TimedOut(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout", true),
            ApiError::Events(_) => (StatusCode::SERVICE_UNAVAILABLE, "dependency_unavailable", true),
            ApiError::Recommend(RecommendError::NothingToServe(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", false)
            }
        };
        Classified { status, code, retry }
    }

    /// The message the caller reads. A caller's mistake is explained in full; a server-side
    /// failure says what to do, never what broke inside (no addresses, no raw dependency errors:
    /// those are logged, with the request id, by [`IntoResponse`]).
    fn public_message(&self) -> String {
        match self {
            ApiError::Events(error) => format!(
                "{} event(s) applied, then {}; retry the rest (idempotency keys make the retry safe)",
                error.applied,
                match error.cause {
                    EventsFailure::Store(_) => "the user state store did not answer",
                    EventsFailure::Budget(_) => "the batch ran out of time",
                }
            ),
            ApiError::Reload(error) if error.is_dependency_down() => {
                "a store the bundle needs did not answer; the current bundle keeps serving; retry".into()
            }
            ApiError::Reload(BuildError::Task(_)) => "internal error while loading the bundle; see the log".into(),
            ApiError::Catalogue(CatalogueError::Persist { .. } | CatalogueError::Unavailable(_)) => {
                "the catalogue's state could not be saved; nothing changed; retry".into()
            }
            other => other.to_string(),
        }
    }
}

/// The answer to a request shed by admission control, its body built once: under a flood the
/// refusals are what the origin spends its CPU on, so a refusal formats, logs and labels nothing
/// (`cascade_requests_shed_total` counts them; `middleware::shed` logs a summary once a second).
pub fn shed_response() -> Response {
    static BODY: std::sync::LazyLock<axum::body::Bytes> = std::sync::LazyLock::new(|| {
        axum::body::Bytes::from(ErrorBody::new("overloaded", ApiError::Overloaded.to_string(), None).to_json())
    });
    let mut response = Response::new(axum::body::Body::from(BODY.clone()));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let Classified { status, code, retry } = self.classify();
        let body = match &self {
            ApiError::Invalid(field_error) => ErrorBody::invalid(field_error),
            other => ErrorBody::new(code, other.public_message(), None),
        };
        if status.is_server_error() {
            tracing::error!(code, error = %self, "request failed");
        } else {
            tracing::debug!(code, error = %self, "request refused");
        }
        let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body.to_json()).into_response();
        if retry {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::BundleError;
    use crate::store::StoreError;

    fn answer(error: ApiError) -> (u16, &'static str, bool) {
        let Classified { status, code, retry } = error.classify();
        (status.as_u16(), code, retry)
    }

    #[test]
    fn reloads_are_refused_or_retried_by_cause() {
        let wrong = ApiError::Reload(BuildError::Bundle(BundleError::Mismatch("parts".into())));
        assert_eq!(answer(wrong), (422, "bundle_rejected", false));
        let down = StoreError::Unavailable { shard: 0, message: "connection refused".into() };
        assert_eq!(answer(ApiError::Reload(BuildError::Store(down))), (503, "dependency_unavailable", true));
        assert_eq!(answer(ApiError::Reload(BuildError::Task("panicked".into()))), (500, "internal", false));
        assert_eq!(answer(ApiError::Reload(BuildError::Busy)), (409, "reload_in_progress", true));
    }

    #[test]
    fn server_errors_say_what_to_do_not_what_broke() {
        let cause = StoreError::Unavailable { shard: 1, message: "redis://:hunter2@10.0.0.7:6379: refused".into() };
        let events = ApiError::Events(EventsError { applied: 2, cause: cause.clone().into() });
        let reload = ApiError::Reload(BuildError::Store(cause));
        for error in [events, reload, ApiError::Reload(BuildError::Task("panicked at src/x.rs".into()))] {
            let message = error.public_message();
            assert!(!message.contains("hunter2") && !message.contains("10.0.0.7"), "{message}");
            assert!(!message.contains("src/x.rs"), "{message}");
            assert!(error.to_string().contains("hunter2") || error.to_string().contains("src/x.rs"), "logged in full");
        }
    }

    #[test]
    fn overload_and_failed_events_ask_for_a_retry() {
        assert_eq!(answer(ApiError::Overloaded), (503, "overloaded", true));
        let cause = StoreError::Unavailable { shard: 1, message: "timeout".into() };
        assert_eq!(
            answer(ApiError::Events(EventsError { applied: 2, cause: cause.into() })),
            (503, "dependency_unavailable", true)
        );
        assert_eq!(answer(ApiError::Unauthorized(AuthError::UnknownKey)), (401, "unauthorized", false));
    }
}
