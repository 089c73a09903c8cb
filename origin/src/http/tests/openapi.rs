//! The OpenAPI documents against the router: the checked-in copies are current, every example is
//! valid against its schema, and every route answers only statuses it documents, with bodies valid
//! against the schema documented for them.

use std::collections::BTreeSet;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{DIM, bearer, default_harness, router};
use crate::http::AppState;
use crate::http::openapi::conformance::Conformance;
use crate::http::openapi::{document, document_text, edge, edge_document_text};

/// The document as one JSON value.
fn doc() -> Value {
    serde_json::to_value(document()).unwrap()
}

#[test]
fn the_checked_in_documents_are_current() {
    let regenerate =
        "Regenerate: cargo run -p cascade-origin --bin cascade -- openapi [--edge] > docs/[edge-]openapi.json";
    let origin = include_str!("../../../../docs/openapi.json");
    assert!(origin == document_text(), "docs/openapi.json is not the router's document. {regenerate}");
    let edge = include_str!("../../../../docs/edge-openapi.json");
    assert!(edge == edge_document_text(), "docs/edge-openapi.json is not the edge's document. {regenerate}");
}

#[test]
fn every_example_is_valid_against_its_schema() {
    let origin = Conformance::new(doc()).check_examples().unwrap();
    assert!(origin >= 10, "the document has examples ({origin} checked)");
    let edge = Conformance::new(serde_json::to_value(edge::document()).unwrap()).check_examples().unwrap();
    assert!(edge >= 3, "the edge's document has examples ({edge} checked)");
}

/// Sends requests through the router and checks each answer against the document, remembering
/// which operations were called.
struct Calls {
    conformance: Conformance,
    state: AppState,
    seen: BTreeSet<String>,
}

impl Calls {
    async fn check(&mut self, request: Request<Body>, expected: StatusCode) -> Value {
        let (method, path) = (request.method().clone(), request.uri().path().to_string());
        let response = router(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let content_type =
            response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(status, expected, "{method} {path}: {body}");
        let name = self.conformance.check(method.as_str(), &path, status.as_u16(), &content_type, &bytes);
        self.seen.insert(name.unwrap_or_else(|problem| panic!("{problem}")));
        body
    }
}

fn with_body(method: &str, uri: &str, body: Value) -> Request<Body> {
    bearer(method, uri).header(header::CONTENT_TYPE, "application/json").body(Body::from(body.to_string())).unwrap()
}

fn empty(method: &str, uri: &str) -> Request<Body> {
    bearer(method, uri).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn every_route_answers_only_what_it_documents() {
    let h = default_harness().await;
    let mut c = Calls { conformance: Conformance::new(doc()), state: h.state.clone(), seen: BTreeSet::new() };
    use StatusCode as S;

    // Lists.
    c.check(empty("GET", "/v1/users/u1/recs?n=5&page=detail&device=mobile&country=us"), S::OK).await;
    c.check(empty("GET", "/v1/users/u1/recs?n=0"), S::BAD_REQUEST).await;
    c.check(Request::get("/v1/users/u1/recs").body(Body::empty()).unwrap(), S::UNAUTHORIZED).await;
    c.check(empty("GET", "/v1/segments/home.desktop.us/recs?n=3"), S::OK).await;
    c.check(empty("GET", "/v1/segments/home/recs"), S::BAD_REQUEST).await;
    let now = super::super::middleware::unix_now().as_secs();
    let path = "/v1/segments/home.mobile.us/recs";
    let signed = Request::get(path)
        .header(cascade_shared::signing::TIMESTAMP_HEADER, now.to_string())
        .header(cascade_shared::signing::SIGNATURE_HEADER, "0".repeat(64))
        .body(Body::empty())
        .unwrap();
    c.check(signed, S::UNAUTHORIZED).await;
    let held = h
        .state
        .admission
        .clone()
        .acquire_many_owned(crate::config::Config::default().serving.max_in_flight as u32)
        .await;
    c.check(empty("GET", "/v1/users/u1/recs"), S::SERVICE_UNAVAILABLE).await;
    c.check(empty("GET", "/v1/segments/home.desktop.us/recs"), S::SERVICE_UNAVAILABLE).await;
    drop(held);

    // Events.
    let click = json!({"user_id": "u1", "kind": "click", "item_id": "i1", "idempotency_key": "k1"});
    c.check(with_body("POST", "/v1/events", json!({"events": [click]})), S::ACCEPTED).await;
    c.check(with_body("POST", "/v1/events", click), S::ACCEPTED).await;
    c.check(with_body("POST", "/v1/events", json!({"events": [{"user_id": "u1", "kind": "wink"}]})), S::BAD_REQUEST)
        .await;
    let huge = vec![b' '; super::super::MAX_BODY_BYTES + 1];
    let request = bearer("POST", "/v1/events").header(header::CONTENT_TYPE, "application/json").body(Body::from(huge));
    c.check(request.unwrap(), S::PAYLOAD_TOO_LARGE).await;

    // The catalogue.
    c.check(with_body("PUT", "/v1/items/i1", json!({"hidden": true})), S::OK).await;
    c.check(with_body("PATCH", "/v1/items/i1", json!({"hidden": false, "expires_at_ms": null})), S::OK).await;
    c.check(with_body("PUT", "/v1/items/i1", json!({"colour": "red"})), S::BAD_REQUEST).await;
    c.check(with_body("PUT", "/v1/items/nope", json!({"hidden": true})), S::NOT_FOUND).await;
    let new_item = json!({"embedding": vec![0.5; DIM], "title": "New", "categories": ["c1"]});
    // The harness's catalogue takes no new items (adding one is covered by the catalogue tests).
    let full = c.check(with_body("PUT", "/v1/items/fresh1", new_item), S::CONFLICT).await;
    assert_eq!(full["error"]["code"], "catalogue_full");
    c.check(empty("DELETE", "/v1/items/i2"), S::OK).await;
    c.check(with_body("PATCH", "/v1/items/i2", json!({"hidden": false})), S::CONFLICT).await;
    c.check(with_body("POST", "/v1/items", json!({"items": [{"item_id": "i4", "hidden": true}]})), S::OK).await;
    c.check(with_body("POST", "/v1/items", json!({"items": []})), S::BAD_REQUEST).await;
    c.check(Request::delete("/v1/items/i5").body(Body::empty()).unwrap(), S::UNAUTHORIZED).await;

    // Admin.
    let empty_dir = tempfile::tempdir().unwrap();
    c.check(with_body("POST", "/admin/bundle", json!({})), S::BAD_REQUEST).await;
    c.check(with_body("POST", "/admin/bundle", json!({"path": empty_dir.path()})), S::UNPROCESSABLE_ENTITY).await;
    c.check(with_body("POST", "/admin/bundle", json!({"path": "/x", "variant": "nope"})), S::NOT_FOUND).await;
    c.check(Request::post("/admin/bundle").body(Body::from("{}")).unwrap(), S::UNAUTHORIZED).await;
    c.check(with_body("POST", "/admin/tokens", json!({"user_id": "u1", "ttl_secs": 60})), S::OK).await;
    c.check(with_body("POST", "/admin/tokens", json!({"user_id": "u1", "ttl_secs": 0})), S::BAD_REQUEST).await;
    c.check(with_body("POST", "/admin/faults", json!({"rank_panics": 1})), S::NOT_FOUND).await;
    c.check(empty("POST", "/admin/rules"), S::OK).await;

    // Operations.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        c.check(Request::get(path).body(Body::empty()).unwrap(), S::OK).await;
    }

    for operation in c.conformance.operations() {
        assert!(c.seen.contains(&operation), "{operation} is documented but this test never called it");
    }
}
