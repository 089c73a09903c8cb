//! The client's policy (retries, Retry-After, batching, keys, typed errors, timeouts) against a
//! scripted fake origin on loopback: an axum server that answers what each test scripts and
//! records what it was sent. The client against the real origin is covered by the end-to-end
//! tests (tests/e2e/client.rs), which also use it for their calls.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use cascade_client::{Client, Error, Event, EventKind, ListContext};
use serde_json::{Value, json};

/// One scripted answer: status, `Retry-After` seconds, body, and a delay before answering.
#[derive(Clone)]
struct Answer(u16, Option<u64>, Value, Duration);

#[derive(Default)]
struct Fake {
    script: Mutex<VecDeque<Answer>>,
    /// Each request's path and JSON body (null when none).
    seen: Mutex<Vec<(String, Value)>>,
}

async fn answer(State(fake): State<Arc<Fake>>, uri: axum::http::Uri, body: axum::body::Bytes) -> impl IntoResponse {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let events = body["events"].as_array().map_or(0, Vec::len);
    fake.seen.lock().unwrap().push((uri.path().to_string(), body));
    let scripted = fake.script.lock().unwrap().pop_front();
    let Answer(status, retry_after, body, delay) =
        scripted.unwrap_or_else(|| Answer(202, None, json!({"accepted": events, "duplicates": 0}), Duration::ZERO));
    tokio::time::sleep(delay).await;
    let mut response = (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    if let Some(seconds) = retry_after {
        response.headers_mut().insert("retry-after", seconds.to_string().parse().unwrap());
    }
    response
}

/// Starts the fake with `script`; answers its URL.
async fn fake(script: Vec<Answer>) -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake { script: Mutex::new(script.into()), ..Fake::default() });
    let app = axum::Router::new().fallback(answer).with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, fake)
}

fn error(code: &str, field: Option<&str>) -> Value {
    json!({"error": {"code": code, "message": "scripted", "field": field}})
}

fn clicks(count: usize) -> Vec<Event> {
    (0..count).map(|i| Event::new("u1", EventKind::Click, Some(&format!("i{i}")))).collect()
}

fn keys(body: &Value) -> Vec<String> {
    body["events"].as_array().unwrap().iter().map(|e| e["idempotency_key"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn a_503_with_retry_after_is_retried_after_that_wait_with_the_same_idempotency_keys() {
    let (url, fake) = fake(vec![Answer(503, Some(1), error("overloaded", None), Duration::ZERO)]).await;
    let client = Client::builder(url).api_key("k").build().unwrap();
    let started = Instant::now();
    let accepted = client.send_events(clicks(3)).await.unwrap();
    assert_eq!(accepted.accepted, 3);
    assert!(started.elapsed() >= Duration::from_secs(1), "waited as asked: {:?}", started.elapsed());
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "one retry");
    let first = keys(&seen[0].1);
    assert_eq!(first.len(), 3);
    assert_eq!(first, keys(&seen[1].1), "the retry carries the same keys, so the origin counts each event once");
    assert_eq!(first.iter().collect::<std::collections::BTreeSet<_>>().len(), 3, "one key per event");
}

#[tokio::test]
async fn a_retry_after_longer_than_the_limit_is_returned_not_retried_early() {
    let (url, fake) = fake(vec![Answer(503, Some(30), error("overloaded", None), Duration::ZERO)]).await;
    let client = Client::builder(url).max_retry_wait(Duration::from_secs(2)).build().unwrap();
    let error = client.segment_recs("home.desktop.us", Some(5)).await.unwrap_err();
    assert_eq!(error.code(), Some("overloaded"));
    assert!(
        matches!(error, Error::Api { status: 503, retry_after: Some(wait), .. } if wait == Duration::from_secs(30))
    );
    assert_eq!(fake.seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_503_without_retry_after_is_not_retried() {
    let (url, fake) = fake(vec![Answer(503, None, error("unavailable", None), Duration::ZERO)]).await;
    let client = Client::builder(url).build().unwrap();
    let error = client.segment_recs("home.desktop.us", None).await.unwrap_err();
    assert_eq!((error.status(), error.code()), (Some(503), Some("unavailable")));
    assert_eq!(fake.seen.lock().unwrap().len(), 1, "nothing to serve: a retry will not help");
}

#[tokio::test]
async fn caller_mistakes_are_typed_and_never_sent_or_retried() {
    let (url, fake) = fake(vec![Answer(400, None, error("invalid_parameter", Some("n")), Duration::ZERO)]).await;
    let client = Client::builder(url).api_key("k").build().unwrap();
    let refused = client.user_recs("u1", &ListContext { page: Some("home".into()), ..Default::default() }).await;
    assert!(matches!(refused, Err(Error::Api { status: 400, ref field, .. }) if field.as_deref() == Some("n")));
    assert_eq!(fake.seen.lock().unwrap().len(), 1, "a 4xx is not retried");
    // Checked before sending, with the origin's own rules.
    let bad_id = client.user_recs("not an id", &ListContext::default()).await.unwrap_err();
    assert!(matches!(&bad_id, Error::Invalid(e) if e.field == "user_id"), "{bad_id}");
    let bad_n = client.user_recs("u1", &ListContext { n: Some(0), ..Default::default() }).await.unwrap_err();
    assert!(matches!(&bad_n, Error::Invalid(e) if e.field == "n"), "{bad_n}");
    let bad_segment = client.segment_recs("home", None).await.unwrap_err();
    assert!(matches!(&bad_segment, Error::Invalid(e) if e.field == "segment"), "{bad_segment}");
    let mut events = clicks(2);
    events[1].item_id = None;
    let bad_event = client.send_events(events).await.unwrap_err();
    assert!(matches!(&bad_event, Error::Invalid(e) if e.field == "events[1].item_id"), "{bad_event}");
    assert_eq!(fake.seen.lock().unwrap().len(), 1, "nothing sent for input the origin would refuse");
}

#[tokio::test]
async fn events_go_in_batches_of_at_most_a_thousand_and_the_totals_add_up() {
    let (url, fake) = fake(vec![]).await;
    let client = Client::builder(url).build().unwrap();
    let mut events = clicks(2_500);
    events[7].idempotency_key = Some("the-callers-own".into());
    let accepted = client.send_events(events).await.unwrap();
    assert_eq!((accepted.accepted, accepted.duplicates), (2_500, 0));
    let seen = fake.seen.lock().unwrap();
    let sizes: Vec<usize> = seen.iter().map(|(_, body)| body["events"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, [1000, 1000, 500]);
    assert_eq!(seen[0].1["events"][7]["idempotency_key"], "the-callers-own", "a caller's key is kept");
    assert!(seen.iter().all(|(path, _)| path == "/v1/events"));
}

#[tokio::test]
async fn a_slow_origin_times_out_and_a_dead_one_is_unreachable_after_the_retries() {
    let (url, _fake) = fake(vec![Answer(200, None, json!({}), Duration::from_secs(3))]).await;
    let client = Client::builder(url).timeout(Duration::from_millis(200)).retries(0).build().unwrap();
    let started = Instant::now();
    assert_eq!(client.readiness().await.unwrap_err(), Error::Timeout(Duration::from_millis(200)));
    assert!(started.elapsed() < Duration::from_secs(2));

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = Client::builder(format!("http://127.0.0.1:{port}")).retries(2).build().unwrap();
    let started = Instant::now();
    assert!(matches!(client.readiness().await, Err(Error::Unreachable(_))));
    assert!(started.elapsed() >= Duration::from_millis(300), "backed off 100 + 200 ms: {:?}", started.elapsed());
    assert!(Client::builder("localhost:8080").build().is_err(), "a URL without its scheme is refused");
}
