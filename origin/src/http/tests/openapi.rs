//! The OpenAPI document against the router: the checked-in copy is current, every example is valid
//! against its schema, and every route answers only statuses it documents, with bodies valid
//! against the schema documented for them.

use std::collections::BTreeSet;

use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{DIM, bearer, default_harness, router};
use crate::http::AppState;
use crate::http::openapi::{document, document_text};

/// The document as one JSON value.
fn doc() -> Value {
    serde_json::to_value(document()).unwrap()
}

/// A validator for `schema`, resolving `#/components/...` references against `doc`.
fn validator(doc: &Value, schema: &Value) -> jsonschema::Validator {
    let mut rooted = schema.clone();
    if let Value::Object(map) = &mut rooted {
        map.insert("components".into(), doc["components"].clone());
    } else {
        rooted = json!({"allOf": [schema], "components": doc["components"]});
    }
    jsonschema::validator_for(&rooted).unwrap_or_else(|e| panic!("schema {schema}: {e}"))
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

#[test]
fn the_checked_in_document_is_current() {
    let checked_in = include_str!("../../../../docs/openapi.json");
    assert!(
        checked_in == document_text(),
        "docs/openapi.json is not the router's document: a route or a wire type changed without it. \
         Regenerate it: cargo run -p cascade-origin --bin cascade -- openapi > docs/openapi.json"
    );
}

#[test]
fn every_example_is_valid_against_its_schema() {
    let doc = doc();
    let mut checked = 0;
    let mut stack = vec![(String::from("#"), &doc)];
    while let Some((at, node)) = stack.pop() {
        match node {
            Value::Object(map) => {
                if let Some(example) = map.get("example") {
                    // A parameter or a media type holds its schema; a schema object is its own.
                    let schema = match map.get("schema") {
                        Some(schema) => schema.clone(),
                        None => Value::Object(
                            map.iter().filter(|(k, _)| *k != "example").map(|(k, v)| (k.clone(), v.clone())).collect(),
                        ),
                    };
                    let problems = errors(&validator(&doc, &schema), example);
                    assert!(problems.is_empty(), "the example at {at} is not valid: {problems:?}");
                    checked += 1;
                }
                for (key, value) in map {
                    stack.push((format!("{at}/{key}"), value));
                }
            }
            Value::Array(values) => stack.extend(values.iter().enumerate().map(|(i, v)| (format!("{at}/{i}"), v))),
            _ => {}
        }
    }
    assert!(checked >= 10, "the document has examples ({checked} checked)");
}

/// The operation of the document that `path` (a concrete path) and `method` reach.
fn operation<'d>(doc: &'d Value, method: &Method, path: &str) -> Option<(String, &'d Value)> {
    let concrete: Vec<&str> = path.split('/').collect();
    doc["paths"].as_object()?.iter().find_map(|(template, item)| {
        let parts: Vec<&str> = template.split('/').collect();
        let same = parts.len() == concrete.len()
            && parts.iter().zip(&concrete).all(|(t, c)| t == c || (t.starts_with('{') && !c.is_empty()));
        let op = item.get(method.as_str().to_lowercase())?;
        same.then(|| (format!("{} {template}", method.as_str()), op))
    })
}

/// Sends requests and checks each answer against the document, remembering which operations and
/// statuses were seen.
struct Conformance {
    doc: Value,
    state: AppState,
    seen: BTreeSet<(String, u16)>,
}

impl Conformance {
    async fn check(&mut self, request: Request<Body>, expected: StatusCode) -> Value {
        let (method, path) = (request.method().clone(), request.uri().path().to_string());
        let response = router(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let content_type =
            response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(status, expected, "{method} {path}: {body}");
        let (name, op) =
            operation(&self.doc, &method, &path).unwrap_or_else(|| panic!("{method} {path} is not documented"));
        let documented = &op["responses"][status.as_str()];
        assert!(documented.is_object(), "{name} answered {status}, which it does not document");
        if content_type.starts_with("application/json") {
            let schema = &documented["content"]["application/json"]["schema"];
            assert!(schema.is_object(), "{name} {status}: a JSON body without a documented schema");
            let problems = errors(&validator(&self.doc, schema), &body);
            assert!(
                problems.is_empty(),
                "{name} {status}: the body is not what the document says: {problems:?}\n{body}"
            );
        }
        self.seen.insert((name, status.as_u16()));
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
    let mut c = Conformance { doc: doc(), state: h.state.clone(), seen: BTreeSet::new() };
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

    let operations: BTreeSet<&String> = c.seen.iter().map(|(name, _)| name).collect();
    let doc = c.doc.clone();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let name = format!("{} {template}", method.to_uppercase());
            assert!(operations.contains(&name), "{name} is documented but this test never called it");
        }
    }
}
