//! The origin's OpenAPI 3.1 description, served at `GET /openapi.json` and checked in as
//! `docs/openapi.json`; and the Worker's ([`edge`], `docs/edge-openapi.json`).
//!
//! The document and the router come from one declaration: every route is registered through
//! `utoipa_axum::routes!` from its handler's `#[utoipa::path]` annotation (method, path,
//! parameters, every status it answers and its body), so a route cannot exist undocumented (the
//! architecture test refuses a plain `.route(` in `http/mod.rs`). The bodies' schemas are derived
//! from the wire types in `cascade-shared` (feature `openapi`) and the origin's own answer types.
//! `openapi_tests.rs` checks the document: the checked-in copy is current, every example
//! validates against its schema, and the router's real answers (every documented error
//! included) validate against the schema documented for their status.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod edge;

use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use cascade_shared::wire::Event;
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

/// The document's fixed parts; the paths come from the router ([`super::documented_routes`]).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cascade origin",
        description = "Recommendation lists for users and segments, the events that update them, the \
                       catalogue, and the origin's operations. Errors are always \
                       `{\"error\": {\"code\", \"message\", \"field\"?}}`; a 503 carries `Retry-After` when a \
                       retry may help. Every answer carries `x-request-id` (the caller's, or a new one).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&Security),
    tags(
        (name = "lists", description = "Recommendation lists"),
        (name = "events", description = "What users did"),
        (name = "catalogue", description = "Hide, expire, delete and add items without a retrain"),
        (name = "admin", description = "Bundles, tokens, rules, fault injection (bearer key)"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// The two ways to call the API: an internal caller's bearer key, or the edge's signed request.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An internal caller's API key (`[auth] api_keys`)"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "edge_timestamp",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                cascade_shared::signing::TIMESTAMP_HEADER,
                "The edge's signed request: Unix seconds, within the signature window",
            ))),
        );
        components.add_security_scheme(
            "edge_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                cascade_shared::signing::SIGNATURE_HEADER,
                "HMAC-SHA256 of the canonical request (cascade_shared::signing::canonical_request) \
                 with the edge's key",
            ))),
        );
    }
}

/// The query of `GET /v1/users/{user_id}/recs`: the context that picks the segment.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // read by the document only: the handler parses the raw query (RecsQuery)
pub struct ListParams {
    /// How many items, 1..=100 (default 20).
    #[param(minimum = 1, maximum = 100, example = 10)]
    n: Option<u32>,
    /// The page the list is for: home, browse, detail or search (default home; unknown: default).
    #[param(example = "home")]
    page: Option<String>,
    /// desktop, mobile or tablet (default desktop; unknown: default).
    #[param(example = "mobile")]
    device: Option<String>,
    /// ISO 3166 alpha-2 country, lower or upper case (unknown: `zz`).
    #[param(example = "us")]
    country: Option<String>,
}

/// The query of `GET /v1/segments/{segment}/recs`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // read by the document only
pub struct SegmentParams {
    /// How many items, 1..=100 (default 20).
    #[param(minimum = 1, maximum = 100, example = 10)]
    n: Option<u32>,
}

/// `POST /v1/events` takes one event, or a batch.
#[derive(serde::Deserialize, ToSchema)]
#[allow(dead_code)] // read by the document only: the handler parses with cascade_shared::wire::parse_events
pub struct EventBatch {
    /// 1 to 1,000 events, validated whole before any is applied; errors name `events[i].field`.
    #[schema(min_items = 1, max_items = 1000)]
    events: Vec<Event>,
}

/// `POST /v1/events`' body.
#[derive(serde::Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // read by the document only
#[schema(example = json!({"events": [{"user_id": "42", "kind": "click", "item_id": "318",
    "idempotency_key": "42-318-1700000000000", "rec_id": "01JD8Y3ZP6Q9W4XK2M7N5R3T1V", "position": 2}]}))]
pub enum EventsBody {
    /// One event.
    One(Event),
    /// `{"events": [...]}`.
    Batch(EventBatch),
}

/// `GET /healthz`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the process answers.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// `GET /openapi.json`: this document (built once).
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", body = Object, content_type = "application/json")))]
pub async fn document_json() -> Response {
    static JSON: std::sync::LazyLock<Bytes> = std::sync::LazyLock::new(|| Bytes::from(document_text()));
    ([(header::CONTENT_TYPE, "application/json")], JSON.clone()).into_response()
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    super::documented_routes().into_openapi()
}

/// The origin's document as checked in (`docs/openapi.json`): pretty JSON with a final newline.
pub fn document_text() -> String {
    text(document())
}

/// The Worker's document as checked in (`docs/edge-openapi.json`).
pub fn edge_document_text() -> String {
    text(edge::document())
}

fn text(document: utoipa::openapi::OpenApi) -> String {
    let mut text = document.to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}
