//! Request-path benchmark: the origin on its embedded default (in-process store, FAISS, the
//! TorchScript ranker) with a one-entry L1 (so user requests run the pipeline), driven closed-loop
//! over HTTP at a fixed concurrency, for the real-time user path and the segment path side by side
//! in one run.
//!
//!     scripts/bench.sh            (or: cargo bench -p cascade-e2e --bench request_path)
//!
//! Prints and saves `target/cascade-bench/request_path.json`. Set BENCH_SECS (default 10) and
//! BENCH_CONCURRENCY (default 32).

use std::sync::Arc;

use cascade_e2e::{Origin, bench_dir, bench_secs, bundle_dir, closed_loop};
use serde_json::json;

const API_KEY: &str = "bench-internal-key-0123456789";

/// `cascade serve` on `bundle` configured by the TOML `config` (written to `file`), logging
/// warnings only (`Origin::with_config` keeps the default log level, which logs every request).
async fn start_origin(bundle: &std::path::Path, file: &std::path::Path, config: &str) -> anyhow::Result<Origin> {
    std::fs::write(file, config)?;
    Origin::start(&[
        ("CASCADE_CONFIG", file.display().to_string()),
        ("CASCADE_BUNDLE", bundle.display().to_string()),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
        ("CASCADE_LOG", "warn".to_string()),
    ])
    .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = bench_secs(10);
    let concurrency: usize = std::env::var("BENCH_CONCURRENCY").ok().and_then(|s| s.parse().ok()).unwrap_or(32);
    let bundle = bundle_dir()?;
    // One L1 entry: every user request runs the real-time pipeline (hit_path measures L1).
    let scratch = cascade_e2e::TempDir::new("cascade-bench-config")?;
    let origin = start_origin(&bundle, &scratch.path().join("cascade.toml"), "[cache]\nl1_capacity = 1\n").await?;
    let users: Arc<Vec<String>> = Arc::new((0..500).map(|u| format!("/v1/users/u{u}/recs?n=20")).collect());
    let segments: Arc<Vec<String>> = Arc::new(
        ["home.desktop.us", "browse.mobile.de", "search.tablet.zz"]
            .iter()
            .map(|s| format!("/v1/segments/{s}/recs?n=20"))
            .collect(),
    );
    // Warm up both paths, then measure them one after the other in the same run.
    closed_loop(&origin.url, users.clone(), API_KEY, concurrency, 1).await?;
    let realtime = closed_loop(&origin.url, users.clone(), API_KEY, concurrency, seconds).await?;
    let segment = closed_loop(&origin.url, segments, API_KEY, concurrency, seconds).await?;
    let ratio =
        segment["requests_per_sec"].as_f64().unwrap_or(0.0) / realtime["requests_per_sec"].as_f64().unwrap_or(1.0);

    // The ranker's thread layout on the real-time path: a second origin with two inference
    // threads (two copies of the model, one libtorch thread each) against the default one,
    // alternating rounds, which goes first swapping.
    let two_threads_config = "[cache]\nl1_capacity = 1\n[ranker]\nthreads = 2\nintra_op_threads = 1\n";
    let two = start_origin(&bundle, &scratch.path().join("cascade-two-threads.toml"), two_threads_config).await?;
    closed_loop(&two.url, users.clone(), API_KEY, concurrency, 1).await?;
    let round_secs = (seconds / 2).max(2);
    let (mut one_thread, mut two_threads) = (Vec::new(), Vec::new());
    for round in 0..4 {
        let order = if round % 2 == 0 { [&origin.url, &two.url] } else { [&two.url, &origin.url] };
        for url in order {
            let figures = closed_loop(url, users.clone(), API_KEY, concurrency, round_secs).await?;
            let rate = figures["requests_per_sec"].as_f64().unwrap_or(0.0);
            if url == &origin.url { one_thread.push(rate) } else { two_threads.push(rate) }
        }
        eprintln!(
            "round {round}: ranker.threads 1: {:.0} req/s, 2: {:.0} req/s",
            one_thread[round], two_threads[round]
        );
    }
    let total = |rates: &[f64]| rates.iter().sum::<f64>();
    let layouts = json!({
        "threads_1_requests_per_sec": one_thread,
        "threads_2_requests_per_sec": two_threads,
        "two_over_one": total(&two_threads) / total(&one_thread),
        "note": "real-time user lists, closed loop, rounds alternating which origin goes first; threads 2 = two model copies of one libtorch thread each",
    });
    let report = json!({
        "benchmark": "request_path",
        "concurrency": concurrency,
        "seconds_per_path": seconds,
        "realtime_user_recs": realtime,
        "segment_recs": segment,
        "segment_over_realtime_throughput": ratio,
        "ranker_threads": layouts,
        "bundle": bundle.display().to_string(),
        "note": "closed loop over loopback HTTP, client and server on the same machine",
    });
    let dir = bench_dir()?;
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(dir.join("request_path.json"), &text)?;
    println!("{text}");
    Ok(())
}
