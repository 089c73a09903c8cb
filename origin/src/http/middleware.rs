//! The middleware every request passes: admission control ([`shed`]), request id, logging span
//! and request metrics ([`observe`]), the request timeout ([`time_limit`]), and credentials ([`authenticate`],
//! [`authenticate_internal`]).
//!
//! The request id is kept when it passes `cascade_shared::validate::is_valid_request_id` (the rule
//! the edge applies too) and replaced otherwise: tower-http's `SetRequestId` keeps whatever the
//! caller sent, which would let a caller forge log lines. Admission is a semaphore answered at once
//! (no queueing), which is what tower's `ConcurrencyLimit` + `LoadShed` would do, plus the
//! in-flight gauge, in fewer moving parts.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cascade_shared::signing::{RequestTarget, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use cascade_shared::validate::is_valid_request_id;
use futures::FutureExt;
use tracing::Instrument;

use super::AppState;
use super::error::ApiError;
use crate::auth::{AuthError, Caller, Credentials};

/// Header that follows one request from edge to ranker.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Time since the Unix epoch (zero if the clock is before it).
pub fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Request id, logging span and request metrics.
pub async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    // The id as a header value, made once and cloned (a refcount) onto the request and the answer.
    let request_id = match request.headers().get(&REQUEST_ID) {
        Some(value) if value.to_str().is_ok_and(is_valid_request_id) => value.clone(),
        _ => new_request_id(),
    };
    request.headers_mut().insert(REQUEST_ID, request_id.clone());
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let id = request_id.to_str().unwrap_or_default();
    let method = request.method().clone();
    let started = Instant::now();
    let span = tracing::info_span!("request", request_id = id, %method, route, trace_id = tracing::field::Empty);
    let joined = state.tracer.as_ref().and_then(|tracer| {
        let traceparent = request.headers().get(cascade_shared::trace::HEADER).and_then(|v| v.to_str().ok());
        tracer.join(traceparent)
    });
    if let Some(joined) = &joined {
        span.record("trace_id", joined.trace_hex());
    }
    // `instrument`, never `span.enter()` across an await: a guard held over a suspension point
    // corrupts the subscriber's span stack (it panicked under the reload test's load). A panic in
    // the handler (a bug) is answered 500 `internal` here, inside admission control, so the caller
    // gets an answer with its request id, the metrics count it, and the permit and in-flight gauge
    // are given back; unwinding through hyper would drop the connection and leave the gauge up.
    let answer = AssertUnwindSafe(next.run(request)).catch_unwind().instrument(span.clone()).await;
    let mut response = answer.unwrap_or_else(|_| ApiError::Internal.into_response());
    let status = response.status();
    let elapsed = started.elapsed().as_secs_f64();
    state.metrics.requests.with_label_values(&[route, status.as_str()]).inc();
    state.metrics.request_seconds.with_label_values(&[route]).observe(elapsed);
    tracing::info!(parent: &span, status = status.as_u16(), ms = elapsed * 1000.0, "served");
    if let (Some(tracer), Some(joined)) = (&state.tracer, joined) {
        traced(tracer, joined, &mut response, format!("{method} {route}"), started, id.to_string());
    }
    response.headers_mut().insert(REQUEST_ID, request_id);
    response
}

/// A new request id: 128 random bits as 32 lowercase hex digits, without a `format!`.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bits = rand::random::<u128>();
    let mut digits = [0u8; 32];
    for (index, digit) in digits.iter_mut().enumerate() {
        *digit = HEX[((bits >> (124 - 4 * index)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&digits).unwrap_or_else(|_| HeaderValue::from_static("00000000000000000000000000000000"))
}

/// Records the request's spans and names its trace in `Server-Timing` (`trace;desc=<trace id>`).
fn traced(
    tracer: &crate::otel::Tracer,
    joined: crate::otel::Joined,
    response: &mut Response,
    name: String,
    started: Instant,
    request_id: String,
) {
    let status = response.status().as_u16().to_string();
    let timings = response.extensions_mut().remove::<crate::recommend::Timings>();
    let attributes = vec![("http.response.status_code", status), ("cascade.request_id", request_id)];
    tracer.request(joined, name, started, timings.as_ref(), attributes);
    let headers = response.headers_mut();
    let trace = format!("trace;desc=\"{}\"", joined.trace_hex());
    let value = match headers.get("server-timing").and_then(|v| v.to_str().ok()) {
        Some(stages) => format!("{stages}, {trace}"),
        None => trace,
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(HeaderName::from_static("server-timing"), value);
    }
}

/// Whether a path skips admission control: health checks (shedding load is not being down: a load
/// balancer must not eject every origin at once), metrics, and the operator's admin routes (a
/// reload or a fault switch is what an overload may need).
fn bypasses_admission(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics") || path.starts_with("/admin/")
}

/// Admission control, the outermost layer: a permit per API request, or a prebuilt 503 with
/// `Retry-After` at once. A refusal gets no request id, span, log line or labelled metric: under a
/// 3x flood the refusals were most of the origin's work (README, "Failure behaviour"). Counted in
/// `cascade_requests_shed_total`, summarised in the log at most once a second. Refusals in a row
/// on one connection pause its reading ([`super::pacing`]).
pub async fn shed(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if bypasses_admission(request.uri().path()) {
        return next.run(request).await;
    }
    let Ok(_permit) = state.admission.clone().try_acquire_owned() else {
        super::pacing::refused();
        state.metrics.shed.inc();
        log_shedding(state.metrics.shed.get());
        return super::error::shed_response();
    };
    super::pacing::admitted();
    state.metrics.in_flight.inc();
    let response = next.run(request).await;
    state.metrics.in_flight.dec();
    response
}

/// One warning a second while shedding, with the count since the last one.
fn log_shedding(total: u64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_SECOND: AtomicU64 = AtomicU64::new(0);
    static LAST_TOTAL: AtomicU64 = AtomicU64::new(0);
    let second = unix_now().as_secs();
    if LAST_SECOND.load(Ordering::Relaxed) != second && LAST_SECOND.swap(second, Ordering::Relaxed) != second {
        let since = total - LAST_TOTAL.swap(total, Ordering::Relaxed).min(total);
        tracing::warn!(refused = since, "shedding load: requests refused with 503 overloaded");
    }
}

/// API requests end within `serving.request_timeout_ms` (503 `timeout`, retry): a handler stuck
/// on something no deadline covers must not hold its admission permit for ever.
pub async fn time_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(state.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::TimedOut(state.request_timeout).into_response(),
    }
}

/// Who sent `request`, by bearer key or edge signature. Header names are pre-parsed constants:
/// looking a header up by `&str` parses and validates the name on every request.
fn caller(state: &AppState, request: &Request) -> Result<Caller, AuthError> {
    static TIMESTAMP: HeaderName = HeaderName::from_static(TIMESTAMP_HEADER);
    static SIGNATURE: HeaderName = HeaderName::from_static(SIGNATURE_HEADER);
    let uri = request.uri();
    let target =
        RequestTarget { method: request.method().as_str(), path: uri.path(), query: uri.query().unwrap_or("") };
    let headers = request.headers();
    let header = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let authorization = header(&axum::http::header::AUTHORIZATION);
    let credentials = match authorization {
        // A bearer key decides alone; the signature headers are not read.
        Some(_) => Credentials { authorization, ..Credentials::default() },
        None => Credentials { authorization, timestamp: header(&TIMESTAMP), signature: header(&SIGNATURE) },
    };
    state.auth.check(target, credentials, unix_now().as_secs())
}

/// API routes take the edge (signed) and internal callers (bearer key).
///
/// The caller is left in the request's extensions for the handler (`POST /v1/events` takes the
/// edge only with a body digest).
pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    match caller(&state, &request) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// Admin routes and routes with a body take internal callers only: an edge signature (which does
/// not cover a body) is not enough.
pub async fn authenticate_internal(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match caller(&state, &request) {
        Ok(Caller::Internal) => next.run(request).await,
        Ok(Caller::Edge) => ApiError::from(AuthError::InternalOnly("this route")).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_request_ids_are_32_lowercase_hex_digits_and_valid() {
        let (a, b) = (new_request_id(), new_request_id());
        let a = a.to_str().unwrap_or_default().to_string();
        assert_eq!(a.len(), 32, "{a}");
        assert!(a.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)), "{a}");
        assert!(is_valid_request_id(&a), "{a}");
        assert_ne!(a, b.to_str().unwrap_or_default(), "128 random bits each");
    }
}
