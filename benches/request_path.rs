//! Request-path benchmark: the origin on its embedded default (in-process store, FAISS, the
//! TorchScript ranker), driven closed-loop over HTTP at a fixed concurrency, for the real-time
//! user path and the segment path side by side in one run.
//!
//!     scripts/bench.sh            (or: cargo bench -p cascade-e2e --bench request_path)
//!
//! Prints and saves `target/cascade-bench/request_path.json`. Set BENCH_SECS (default 10) and
//! BENCH_CONCURRENCY (default 32).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cascade_e2e::{Origin, bench_dir, bundle_dir};
use serde_json::json;

const API_KEY: &str = "bench-internal-key-0123456789";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn drive(
    origin: &str,
    paths: Arc<Vec<String>>,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<serde_json::Value> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (client, stop, paths, origin) = (client.clone(), stop.clone(), paths.clone(), origin.to_string());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let mut i = worker;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let response =
                        client.get(format!("{origin}{}", paths[i % paths.len()])).bearer_auth(API_KEY).send().await;
                    match response {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                        _ => errors += 1,
                    }
                    i += concurrency;
                }
                (latencies, errors)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (latencies, e) = worker.await?;
        all.extend(latencies);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok(json!({
        "requests": all.len(),
        "errors": errors,
        "requests_per_sec": all.len() as f64 / elapsed,
        "p50_ms": percentile(&all, 0.50),
        "p99_ms": percentile(&all, 0.99),
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let concurrency: usize = std::env::var("BENCH_CONCURRENCY").ok().and_then(|s| s.parse().ok()).unwrap_or(32);
    let bundle = bundle_dir()?;
    let origin = Origin::start(&[
        ("CASCADE_BUNDLE", bundle.display().to_string()),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
        ("CASCADE_LOG", "warn".to_string()),
    ])
    .await?;
    let users: Arc<Vec<String>> = Arc::new((0..500).map(|u| format!("/v1/users/u{u}/recs?n=20")).collect());
    let segments: Arc<Vec<String>> = Arc::new(
        ["home.desktop.us", "browse.mobile.de", "search.tablet.zz"]
            .iter()
            .map(|s| format!("/v1/segments/{s}/recs?n=20"))
            .collect(),
    );
    // Warm up both paths, then measure them one after the other in the same run.
    drive(&origin.url, users.clone(), concurrency, 1).await?;
    let realtime = drive(&origin.url, users, concurrency, seconds).await?;
    let segment = drive(&origin.url, segments, concurrency, seconds).await?;
    let ratio =
        segment["requests_per_sec"].as_f64().unwrap_or(0.0) / realtime["requests_per_sec"].as_f64().unwrap_or(1.0);
    let report = json!({
        "benchmark": "request_path",
        "concurrency": concurrency,
        "seconds_per_path": seconds,
        "realtime_user_recs": realtime,
        "segment_recs": segment,
        "segment_over_realtime_throughput": ratio,
        "bundle": bundle.display().to_string(),
        "note": "closed loop over loopback HTTP, client and server on the same machine",
    });
    let dir = bench_dir()?;
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(dir.join("request_path.json"), &text)?;
    println!("{text}");
    Ok(())
}
