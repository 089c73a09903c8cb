//! L1-hit benchmark: user lists served from the origin's in-process cache, against a bare axum
//! handler returning a JSON body of the same size (the loopback ceiling), at concurrency 32, in
//! one run.
//!
//!     scripts/bench.sh    (or: cargo bench -p cascade-e2e --bench hit_path)
//!
//! Saves `target/cascade-bench/hit_path.json` with `ratio` (target ≥ 0.6). BENCH_SECS (default 10).

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use cascade_e2e::{Origin, bench_dir, bench_secs, bundle_dir, closed_loop};
use serde_json::json;

const API_KEY: &str = "bench-internal-key-0123456789";
const CONCURRENCY: usize = 32;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = bench_secs(10);
    let bundle = bundle_dir()?;
    let origin = Origin::start(&[
        ("CASCADE_BUNDLE", bundle.display().to_string()),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
        ("CASCADE_LOG", "warn".to_string()),
    ])
    .await?;
    // 32 users, one per worker: after the first request each is an L1 hit.
    let paths: Arc<Vec<String>> = Arc::new((0..CONCURRENCY).map(|u| format!("/v1/users/u{u}/recs?n=20")).collect());
    let client = reqwest::Client::new();
    let mut body = Vec::new();
    for path in paths.iter() {
        body = client.get(format!("{}{path}", origin.url)).bearer_auth(API_KEY).send().await?.bytes().await?.to_vec();
    }
    closed_loop(&origin.url, paths.clone(), API_KEY, CONCURRENCY, 1).await?; // warm-up

    // The ceiling: a bare handler returning the same number of bytes.
    let body = Arc::new(body);
    let body_len = body.len();
    let bare = Router::new().route(
        "/v1/users/{user}/recs",
        get(move || {
            let body = Arc::clone(&body);
            async move { ([(header::CONTENT_TYPE, "application/json")], body.as_ref().clone()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bare_url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, bare).await });

    let origin_hits = closed_loop(&origin.url, paths.clone(), API_KEY, CONCURRENCY, seconds).await?;
    let ceiling = closed_loop(&bare_url, paths, "", CONCURRENCY, seconds).await?;
    let metrics = client.get(format!("{}/metrics", origin.url)).send().await?.text().await?;
    let hits = metrics
        .lines()
        .find(|l| l.starts_with("cascade_cache_lookups_total{layer=\"l1\",result=\"hit\"}"))
        .unwrap_or("")
        .to_string();
    let ratio = origin_hits["requests_per_sec"].as_f64().unwrap_or(0.0)
        / ceiling["requests_per_sec"].as_f64().unwrap_or(f64::NAN);
    let report = json!({
        "benchmark": "hit_path",
        "concurrency": CONCURRENCY,
        "seconds_per_mode": seconds,
        "body_bytes": body_len,
        "origin_l1_hits": origin_hits,
        "bare_axum": ceiling,
        "ratio": ratio,
        "target_ratio": 0.6,
        "l1_hits_metric": hits,
        "note": "origin in its own process (release build, with auth, metrics, request ids); the bare handler runs in the benchmark process; one client, same 2 cores",
    });
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(bench_dir()?.join("hit_path.json"), &text)?;
    println!("{text}");
    Ok(())
}
