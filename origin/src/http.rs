//! The origin's HTTP interface: `fn router(state) -> Router`, its handlers and middleware.
//!
//! | route | |
//! |---|---|
//! | `GET /v1/users/{user_id}/recs?n=&page=&device=&country=` | a user's list (signed or bearer) |
//! | `GET /v1/segments/{segment}/recs?n=` | a segment's list (what the edge caches) |
//! | `POST /v1/events` | user actions, validated and deduplicated |
//! | `GET /healthz`, `/readyz`, `/metrics` | liveness, readiness with degraded components, Prometheus |
//! | `POST /admin/bundle` `{"path": …}` | load, check and swap in a model bundle (bearer key only) |
//!
//! Every response carries `x-request-id` (the caller's, or a new one) and the recs responses a
//! `Server-Timing` header. Admission control answers 503 at once when more than
//! `serving.max_in_flight` requests are being served.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cascade_shared::segment::SegmentKey;
use cascade_shared::validate::{FieldError, QueryParams, RecsQuery, parse_n, validate_id};
use cascade_shared::wire::{EventsAccepted, parse_events};
use serde_json::json;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::auth::{Auth, Caller};
use crate::cache::UserCaches;
use crate::error::AppError;
use crate::metrics::Metrics;
use crate::recommend::Answer;
use crate::serving::Serving;

/// Header that follows one request from edge to ranker.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The request path (swapped by bundle reloads).
    pub serving: Arc<Serving>,
    /// Credentials.
    pub auth: Arc<Auth>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Admission control: one permit per request in flight.
    pub admission: Arc<Semaphore>,
    /// Per-user caches and state (survive bundle reloads; keys carry the bundle id).
    pub caches: Arc<UserCaches>,
    /// Idempotency keys seen recently (bounded, with a TTL).
    pub seen_events: moka::sync::Cache<String, ()>,
}

impl AppState {
    /// State with an events deduplication window of one day, at most a million keys.
    pub fn new(
        serving: Arc<Serving>,
        caches: Arc<UserCaches>,
        auth: Arc<Auth>,
        metrics: Arc<Metrics>,
        max_in_flight: usize,
    ) -> Self {
        AppState {
            serving,
            caches,
            auth,
            metrics,
            admission: Arc::new(Semaphore::new(max_in_flight)),
            seen_events: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(86_400))
                .build(),
        }
    }
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// The router, with every middleware; tests drive it with `tower::ServiceExt::oneshot`.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/users/{user_id}/recs", get(user_recs))
        .route("/v1/segments/{segment}/recs", get(segment_recs))
        .route("/v1/events", post(events))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let admin = Router::new()
        .route("/admin/bundle", post(load_bundle))
        .route("/admin/tokens", post(issue_token))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate_internal));
    Router::new()
        .merge(api)
        .merge(admin)
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { AppError::NotFound("no such route; see README.md for the API".into()) })
        .layer(middleware::from_fn_with_state(state.clone(), admit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Request id, logging span and request metrics.
async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        request.headers_mut().insert(REQUEST_ID, value);
    }
    let route =
        request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = request.method().clone();
    let started = Instant::now();
    let span = tracing::info_span!("request", %request_id, %method, %route);
    // `instrument`, never `span.enter()` across an await: a guard held over a suspension point
    // corrupts the subscriber's span stack (it panicked under the reload test's load).
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    state.metrics.requests.with_label_values(&[&route, status.as_str()]).inc();
    tracing::info!(parent: &span, status = status.as_u16(), ms = started.elapsed().as_secs_f64() * 1000.0, "served");
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Admission control: a permit per request, or 503 at once.
async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Ok(_permit) = state.admission.clone().try_acquire_owned() else {
        return AppError::Overloaded.into_response();
    };
    state.metrics.in_flight.inc();
    let response = next.run(request).await;
    state.metrics.in_flight.dec();
    response
}

/// Who sent `request`, by bearer key or edge signature.
fn caller(state: &AppState, request: &Request) -> Result<Caller, AppError> {
    let uri = request.uri();
    let (method, query) = (request.method().as_str(), uri.query().unwrap_or(""));
    state.auth.check(method, uri.path(), query, request.headers(), unix_now().as_secs())
}

/// API routes take the edge (signed) and internal callers (bearer key).
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match caller(&state, &request) {
        Ok(_) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// Admin routes take internal callers only: an edge signature is not enough.
async fn authenticate_internal(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match caller(&state, &request) {
        Ok(Caller::Internal) => next.run(request).await,
        Ok(Caller::Edge) => AppError::Unauthorized("admin routes take a bearer key".into()).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `POST /admin/bundle` `{"path": "/bundles/v2"}`: load, check and swap in a bundle (or roll back
/// to an earlier one the same way).
async fn load_bundle(State(state): State<AppState>, body: Bytes) -> Result<Response, AppError> {
    #[derive(serde::Deserialize)]
    struct LoadBundle {
        path: String,
    }
    let request: LoadBundle = serde_json::from_slice(&body)
        .map_err(|e| FieldError::new("body", format!("expected {{\"path\": \"<bundle folder>\"}}: {e}")))?;
    if request.path.trim().is_empty() {
        return Err(FieldError::new("path", "must not be empty").into());
    }
    let swapped = state.serving.load(std::path::Path::new(&request.path)).await?;
    Ok(Json(swapped).into_response())
}

/// `POST /admin/tokens` `{"user_id": "42", "ttl_secs": 3600}`: a signed-in visitor token for the
/// edge (`cascade_shared::token`). The site's login service calls this, or mints tokens itself with
/// the same secret.
async fn issue_token(State(state): State<AppState>, body: Bytes) -> Result<Response, AppError> {
    #[derive(serde::Deserialize)]
    struct IssueToken {
        user_id: String,
        ttl_secs: Option<u64>,
    }
    let request: IssueToken = serde_json::from_slice(&body)
        .map_err(|e| FieldError::new("body", format!("expected {{\"user_id\": \"…\", \"ttl_secs\": 3600}}: {e}")))?;
    validate_id("user_id", &request.user_id)?;
    let ttl = request.ttl_secs.unwrap_or(3_600);
    if !(1..=cascade_shared::token::MAX_TOKEN_TTL_SECS).contains(&ttl) {
        return Err(FieldError::new(
            "ttl_secs",
            format!("must be 1..={}, got {ttl}", cascade_shared::token::MAX_TOKEN_TTL_SECS),
        )
        .into());
    }
    let expires_at = unix_now().as_secs() + ttl;
    let token = state.auth.issue_user_token(&request.user_id, expires_at);
    Ok(Json(json!({"token": token, "user_id": request.user_id, "expires_at": expires_at})).into_response())
}

fn recs_response(answer: Answer, cache_control: &'static str) -> Response {
    let mut response = Json(answer.list).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&answer.timings.header_value()) {
        headers.insert(HeaderName::from_static("server-timing"), value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    response
}

async fn user_recs(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    validate_id("user_id", &user_id)?;
    let query = RecsQuery::parse(query.as_deref().unwrap_or(""))?;
    let answer = state.serving.current().user_recs(&user_id, query, &state.caches).await?;
    Ok(recs_response(answer, "private, no-store"))
}

async fn segment_recs(
    State(state): State<AppState>,
    Path(segment): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, AppError> {
    let segment = SegmentKey::parse(&segment).map_err(|e| FieldError::new("segment", e.to_string()))?;
    let params = QueryParams::parse(query.as_deref().unwrap_or(""))?;
    let n = parse_n(params.get("n"))?;
    let answer = state.serving.current().segment_recs(segment, n)?;
    Ok(recs_response(answer, "public, max-age=60"))
}

async fn events(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, AppError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(FieldError::new("content-type", "must be application/json").into());
    }
    let events = parse_events(&body, unix_now().as_millis() as u64)?;
    let mut accepted = 0;
    let mut duplicates = 0;
    for event in &events {
        let dedup_key = event.idempotency_key.as_ref().map(|key| format!("{}:{key}", event.user_id));
        let fresh = match &dedup_key {
            Some(key) => state.seen_events.entry(key.clone()).or_insert(()).is_fresh(),
            None => true,
        };
        if fresh {
            if let Err(error) = state.caches.record(event).await {
                // Not applied: forget the key so the caller's retry is taken, and say so.
                if let Some(key) = &dedup_key {
                    state.seen_events.invalidate(key);
                }
                return Err(AppError::DependencyUnavailable(format!(
                    "{accepted} event(s) applied, then the user state store failed ({error}); retry the rest"
                )));
            }
            accepted += 1;
            tracing::debug!(user_id = %event.user_id, kind = ?event.kind, "event accepted");
        } else {
            duplicates += 1;
        }
    }
    Ok((StatusCode::ACCEPTED, Json(EventsAccepted { accepted, duplicates })).into_response())
}

async fn readyz(State(state): State<AppState>) -> Response {
    let recommender = state.serving.current();
    let components = recommender.health().await;
    let degraded: Vec<&str> = components.iter().filter(|c| !c.healthy).map(|c| c.name.as_str()).collect();
    let described: serde_json::Map<String, serde_json::Value> =
        recommender.describe().into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    // Ready while the origin can answer at all: fallbacks cover a shard that is down.
    let body = json!({
        "ready": true,
        "degraded": degraded,
        "components": components,
        "serving": described,
        "training_metrics": recommender.bundle().metadata.metrics,
    });
    Json(body).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], Body::from(state.metrics.render())).into_response()
}
