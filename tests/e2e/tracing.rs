//! One trace from the browser through the Worker into the origin and its ranker: the Worker under
//! `wrangler dev` and the origin both export to an OTLP receiver written for the test, and the
//! spans must link up (browser → edge → origin request → stages → the batcher's queue wait and
//! inference).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::time::{Duration, Instant};

use cascade_e2e::{Edge, Origin, OtlpCollector, bundle_dir};
use serde_json::Value;

const SECRET: &str = "tracing-test-secret-0123456789";
const API_KEY: &str = "tracing-test-internal-key-0123456789";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const BROWSER_SPAN: &str = "00f067aa0ba902b7";

fn nanos(span: &Value, field: &str) -> u128 {
    span[field].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_links_the_browser_the_edge_the_origin_and_the_ranker() {
    let collector = OtlpCollector::start().await.unwrap();
    let bundle = bundle_dir().unwrap();
    let origin = Origin::start(&[
        ("CASCADE_BUNDLE", bundle.display().to_string()),
        ("CASCADE_SECRET", SECRET.to_string()),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
        ("CASCADE_MODE", "production".to_string()),
        ("CASCADE_OTLP_ENDPOINT", collector.url.clone()),
    ])
    .await
    .unwrap();
    let edge = Edge::start(&origin.url, SECRET, &[("OTLP_ENDPOINT", collector.url.as_str())]).await.unwrap();
    let http = reqwest::Client::new();
    let token = &origin.visitor_token(API_KEY, "u3").await;
    // A signed-in visitor's list: the Worker calls the origin, which ranks in real time.
    let response = http
        .get(format!("{}/recs?n=5", edge.url))
        .bearer_auth(token)
        .header("traceparent", format!("00-{TRACE}-{BROWSER_SPAN}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-cache"], "BYPASS");

    let until = Instant::now() + Duration::from_secs(15);
    let spans = loop {
        let spans: Vec<Value> = collector.spans().into_iter().filter(|s| s["traceId"] == TRACE).collect();
        let has = |name: &str| spans.iter().any(|s| s["name"] == name);
        if (has("GET /recs") && has("rank.inference")) || Instant::now() > until {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let find = |name: &str| {
        spans
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name} span in {spans:#?}\n{}", origin.output()))
    };
    let edge_span = find("GET /recs");
    assert_eq!(edge_span["service"], "cascade-edge");
    assert_eq!(edge_span["parentSpanId"], BROWSER_SPAN, "the Worker continues the browser's trace");
    let request = find("GET /v1/users/{user_id}/recs");
    assert_eq!(request["service"], "cascade-origin");
    assert_eq!(request["parentSpanId"], edge_span["spanId"], "the origin's request is the Worker's child");
    for stage in ["state", "cache", "embed", "retrieve", "rank", "rules"] {
        assert_eq!(find(stage)["parentSpanId"], request["spanId"], "{stage} is a stage of the request");
    }
    let rank = find("rank");
    for part in ["rank.queue", "rank.inference"] {
        let span = find(part);
        assert_eq!(span["parentSpanId"], rank["spanId"], "{part} is part of ranking");
        assert!(
            nanos(span, "startTimeUnixNano") >= nanos(request, "startTimeUnixNano"),
            "{part} starts in the request"
        );
        assert!(nanos(span, "endTimeUnixNano") <= nanos(request, "endTimeUnixNano"), "{part} ends in the request");
    }

    // The origin names the trace in Server-Timing for a caller that sends one directly.
    let direct = http
        .get(format!("{}/v1/users/u4/recs?n=3", origin.url))
        .bearer_auth(API_KEY)
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .send()
        .await
        .unwrap();
    let timing = direct.headers()["server-timing"].to_str().unwrap().to_string();
    assert!(timing.contains(r#"trace;desc="0af7651916cd43dd8448eb211c80319c""#), "{timing}");
    assert!(timing.contains("rank.inference;dur="), "{timing}");
}
