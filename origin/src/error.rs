//! The service's error enum, and the one place where an error becomes an HTTP status.
//!
//! Lower layers have their own enums ([`crate::store::StoreError`], [`crate::ranker::RankError`],
//! …); the request path turns their faults into fallbacks, so only what is left reaches here.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cascade_shared::validate::FieldError;
use cascade_shared::wire::ErrorBody;

/// Why a request could not be answered with a list.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The caller sent something wrong (400).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// No or bad credentials (401).
    #[error("{0}")]
    Unauthorized(String),
    /// No such route or resource (404).
    #[error("{0}")]
    NotFound(String),
    /// A bundle offered for loading failed its checks (422); the old one keeps serving.
    #[error("bundle refused: {0}")]
    BundleRejected(String),
    /// More requests in flight than configured (503, retry soon).
    #[error("too many requests in flight; retry shortly")]
    Overloaded,
    /// A store the request must write to is down (503, retry).
    #[error("{0}")]
    DependencyUnavailable(String),
    /// Nothing at all to serve (503).
    #[error("{0}")]
    NothingToServe(String),
    /// A bug or an unexpected fault on our side (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// The status, code and whether to log it as an error, decided here and only here.
    fn classify(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            AppError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AppError::BundleRejected(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bundle_rejected"),
            AppError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            AppError::NothingToServe(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            AppError::DependencyUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "dependency_unavailable"),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.classify();
        let body = match &self {
            AppError::Invalid(field_error) => ErrorBody::invalid(field_error),
            other => ErrorBody::new(code, other.to_string(), None),
        };
        if status.is_server_error() {
            tracing::error!(code, error = %self, "request failed");
        } else {
            tracing::debug!(code, error = %self, "request refused");
        }
        let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body.to_json()).into_response();
        if matches!(self, AppError::Overloaded | AppError::DependencyUnavailable(_)) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
