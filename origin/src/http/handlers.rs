//! The API's handlers: lists, events, health, readiness and metrics. Each validates its input,
//! asks the domain, and turns the answer into a response; errors go through [`ApiError`].

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cascade_shared::segment::SegmentKey;
use cascade_shared::validate::{FieldError, QueryParams, RecsQuery, parse_n, validate_id};
use cascade_shared::wire::parse_events;
use cascade_shared::wire::{ErrorBody, EventsAccepted, RecList};

use super::openapi::{EventsBody, Health, ListParams, SegmentParams};
use crate::health::ComponentHealth;

use super::AppState;
use super::error::ApiError;
use super::middleware::unix_now;
use super::server_timing;
use crate::auth::Caller;
use crate::feature_log::{Entry, LoggedItem, Served};
use crate::recommend::Answer;

/// Logs the answer (when the feature log is on) and makes it the response.
fn recs_response(state: &AppState, answer: Answer, cache_control: &'static str) -> Response {
    let log = state.serving.feature_log();
    if log.is_on() {
        let list = &answer.list;
        log.record(Entry::Served(Served {
            ts_ms: unix_now().as_millis() as u64,
            rec_id: list.rec_id.clone(),
            user_id: list.user_id.clone(),
            segment: list.segment.clone(),
            source: list.source,
            bundle_id: list.model_version.clone(),
            variant: list.variant.clone(),
            items: LoggedItem::from_items(&list.items),
            query: answer.query,
        }));
    }
    let mut response = Json(answer.list).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&server_timing::header_value(&answer.timings)) {
        headers.insert(HeaderName::from_static("server-timing"), value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    if state.tracer.is_some() {
        // The middleware turns the stages into the request's child spans.
        response.extensions_mut().insert(answer.timings);
    }
    response
}

#[utoipa::path(get, path = "/v1/users/{user_id}/recs", tag = "lists",
    summary = "A user's list",
    description = "Precomputed lists combined with real-time ranking under the request's deadline; a \
                   slow or failed stage degrades to the precomputed, segment or popular list (`source` \
                   says which). Each answer has a new `rec_id`.",
    params(("user_id" = String, Path, description = "1-64 characters of A-Z a-z 0-9 _ - .", example = "42"),
           ListParams),
    security(("bearer" = []), ("edge_timestamp" = [], "edge_signature" = [])),
    responses(
        (status = 200, description = "The list", body = RecList, headers(
            ("server-timing" = String, description = "Time per stage, ms (`total`, `state`, `cache`, `retrieve`, `rank`, ...)"),
            ("cache-control" = String, description = "`private, no-store`"))),
        (status = 400, description = "A parameter is wrong: `invalid_parameter`, `field` names it", body = ErrorBody),
        (status = 401, description = "No or bad credentials: `unauthorized`", body = ErrorBody),
        (status = 503, description = "`overloaded` or `timeout` (with `Retry-After`), or nothing at all to serve \
                                      (`unavailable`)", body = ErrorBody,
            headers(("retry-after" = u32, description = "Seconds; present when a retry may help"))),
    ))]
/// `GET /v1/users/{user_id}/recs?n=&page=&device=&country=`.
pub async fn user_recs(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    validate_id("user_id", &user_id)?;
    let query = RecsQuery::parse(query.as_deref().unwrap_or(""))?;
    let arm = state.variants.assign(&user_id);
    let recommender = arm.serving.current();
    let mut answer = recommender.user_recs(&user_id, query, &state.caches).await?;
    recommender.remember_shown(&user_id, &answer.list.items);
    if state.variants.is_experiment() {
        state.metrics.variant_lists.with_label_values(&[&arm.name]).inc();
        answer.list.variant = Some(arm.name.clone());
    }
    Ok(recs_response(&state, answer, "private, no-store"))
}

#[utoipa::path(get, path = "/v1/segments/{segment}/recs", tag = "lists",
    summary = "A segment's list",
    description = "The list the edge caches for every anonymous visitor of a context: the segment's \
                   precomputed list, else the popular list, with the catalogue's withheld items removed.",
    params(("segment" = String, Path, description = "Canonical `page.device.country`, all lowercase", example = "home.mobile.us"),
           SegmentParams),
    security(("bearer" = []), ("edge_timestamp" = [], "edge_signature" = [])),
    responses(
        (status = 200, description = "The list", body = RecList, headers(
            ("server-timing" = String, description = "Time per stage, ms"),
            ("cache-control" = String, description = "`public, max-age=60`"))),
        (status = 400, description = "The segment or `n` is wrong: `invalid_parameter`", body = ErrorBody),
        (status = 401, description = "No or bad credentials: `unauthorized`", body = ErrorBody),
        (status = 503, description = "`overloaded` or `timeout` (with `Retry-After`), or nothing to serve (`unavailable`)",
            body = ErrorBody, headers(("retry-after" = u32, description = "Seconds; present when a retry may help"))),
    ))]
/// `GET /v1/segments/{segment}/recs?n=`.
pub async fn segment_recs(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    Path(segment): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let segment = SegmentKey::parse(&segment).map_err(|e| FieldError::new("segment", e.to_string()))?;
    let params = QueryParams::parse(query.as_deref().unwrap_or(""))?;
    let n = parse_n(params.get("n"))?;
    let answer = state.serving.current().segment_recs(segment, n)?;
    // The edge stores this list: remember what it holds, to purge it if one of them is withheld.
    if let (Some(purger), Some(axum::Extension(Caller::Edge))) = (&state.edge_purge, caller) {
        purger.served(&answer.list.segment, &answer.list.items);
    }
    Ok(recs_response(&state, answer, "public, max-age=60"))
}

#[utoipa::path(post, path = "/v1/events", tag = "events",
    summary = "Record what users did",
    description = "One event or up to 1,000, validated whole before any is applied. A purchase or \
                   profile update invalidates the user's cached lists. Events with an idempotency key \
                   seen before are counted once. The edge may forward a signed-in visitor's view, \
                   click and add_to_cart events with the body's SHA-256 in its signed query \
                   (`body_sha256`); other kinds need a bearer key.",
    request_body(content = EventsBody, content_type = "application/json"),
    security(("bearer" = []), ("edge_timestamp" = [], "edge_signature" = [])),
    responses(
        (status = 202, description = "Applied (or recognised as duplicates)", body = EventsAccepted),
        (status = 400, description = "An event is wrong: `invalid_parameter`, `field` names it as `events[i].field`", body = ErrorBody),
        (status = 401, description = "No or bad credentials, or an edge request without its body digest: `unauthorized`", body = ErrorBody),
        (status = 413, description = "The body is over 2 MiB: `payload_too_large`", body = ErrorBody),
        (status = 503, description = "`overloaded`, `timeout` or `dependency_unavailable` (the message says how many \
                                      events were applied; retrying with the same idempotency keys is safe)",
            body = ErrorBody, headers(("retry-after" = u32, description = "Seconds"))),
    ))]
/// `POST /v1/events`: a JSON batch, validated whole before any event is applied.
pub async fn events(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge(format!("the body is over {} bytes; send smaller batches", super::MAX_BODY_BYTES))
        }
        _ => ApiError::Invalid(FieldError::new("body", rejection.body_text())),
    })?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(FieldError::new("content-type", "must be application/json").into());
    }
    let from_edge = caller.is_some_and(|axum::Extension(caller)| caller == Caller::Edge);
    if from_edge {
        check_body_digest(uri.query().unwrap_or(""), &body)?;
    }
    let received_ms = unix_now().as_millis() as u64;
    let events = parse_events(&body, received_ms)?;
    if from_edge {
        check_visitor_kinds(&events)?;
    }
    let accepted = state.caches.apply_events(&events, state.events_budget).await?;
    let log = state.serving.feature_log();
    if log.is_on() {
        // Every event of an accepted batch; a retried batch logs again (its idempotency keys
        // tell the copies apart: scripts/train.py keeps the first).
        for event in events {
            log.record(Entry::Event { received_ms, event });
        }
    }
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}

/// A visitor's events forwarded by the edge: the signed query carries the body's digest, so the
/// signature covers the body.
fn check_body_digest(query: &str, body: &[u8]) -> Result<(), ApiError> {
    use cascade_shared::signing::{BODY_DIGEST_PARAM, body_digest};
    let digest = QueryParams::parse(query).ok().and_then(|params| params.get(BODY_DIGEST_PARAM).map(str::to_string));
    if digest.as_deref() == Some(body_digest(body).as_str()) {
        Ok(())
    } else {
        Err(crate::auth::AuthError::InternalOnly("an events body without its signed digest (body_sha256)").into())
    }
}

/// The edge forwards only the kinds a browser may report.
fn check_visitor_kinds(events: &[cascade_shared::wire::Event]) -> Result<(), ApiError> {
    match events.iter().position(|event| !event.kind.from_visitors()) {
        None => Ok(()),
        Some(index) => Err(FieldError::new(
            format!("events[{index}].kind"),
            format!("the edge forwards only {}", cascade_shared::wire::EventKind::FROM_VISITORS.join(", ")),
        )
        .into()),
    }
}

#[utoipa::path(get, path = "/healthz", tag = "operations", summary = "Liveness",
    responses((status = 200, description = "The process answers", body = Health)))]
/// `GET /healthz`: the process is up.
pub async fn healthz() -> Response {
    Json(Health { status: "ok" }).into_response()
}

#[utoipa::path(get, path = "/readyz", tag = "operations", summary = "Readiness",
    description = "Ready while the origin can answer at all (fallbacks cover a shard that is down); \
                   degraded components are named, never an address or an error text.",
    responses((status = 200, description = "Ready, with the state of each component", body = Readiness)))]
/// `GET /readyz`: ready while the origin can answer at all (fallbacks cover a shard that is down),
/// with the degraded components named.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let recommender = state.serving.current();
    let components = recommender.health().await;
    let degraded: Vec<&str> = components.iter().filter(|c| !c.healthy()).map(|c| c.name.as_str()).collect();
    let serving = recommender.describe().into_iter().collect();
    let body = Readiness {
        ready: true,
        degraded,
        components: &components,
        serving,
        training_metrics: &recommender.bundle().metadata.metrics,
    };
    Json(body).into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "operations", summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String,
        content_type = "text/plain")))]
/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], Body::from(state.metrics.render())).into_response()
}

/// `GET /readyz`'s answer.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Readiness<'a> {
    /// Always true: a process that answers can serve (from its fallbacks at worst).
    pub ready: bool,
    /// The names of the components that are not `ok`.
    pub degraded: Vec<&'a str>,
    /// Every component's state.
    pub components: &'a [ComponentHealth],
    /// What is being served: bundle, store, index, ranker, ...
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub serving: std::collections::BTreeMap<&'static str, String>,
    /// The bundle's training metrics (`metadata.json`), as trained; null when it has none.
    #[schema(value_type = Option<Object>)]
    pub training_metrics: &'a serde_json::Value,
}

/// Any other path.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such route; see README.md for the API".into())
}
