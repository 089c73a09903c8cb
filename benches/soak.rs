//! Soak: the origin on two real Redis shards under a steady mixed load (70% cache hits, 25%
//! misses, 5% events) at half its measured capacity, for SOAK_SECS seconds (default 600): RSS,
//! queue depths, requests in flight and Redis connections sampled every 10 s. Memory must stay
//! flat (growth under 10% from the first sample after warm-up to the last) and nothing may grow.
//!
//!     SOAK_SECS=600 scripts/bench.sh soak      (the CI smoke run: SOAK_SECS=20)
//!
//! Saves `target/cascade-bench/soak.json`.

use std::time::{Duration, Instant};

use cascade_e2e::bench_dir;
use cascade_e2e::fault_suite::Rig;
use cascade_e2e::faults::{open_loop, summarize};
use serde_json::json;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let seconds: f64 = std::env::var("SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(600.0);
    let rig = Rig::start(256).await?;
    rig.capacity(2.0).await;
    let rate = (rig.capacity(4.0).await * 0.5).max(20.0);
    eprintln!("soak: {rate:.0} req/s mixed for {seconds} s");
    let started = Instant::now();
    let sample_every = Duration::from_secs_f64((seconds / 20.0).clamp(1.0, 10.0));
    let sampler = async {
        let mut samples = Vec::new();
        while started.elapsed().as_secs_f64() < seconds {
            let mut gauges = rig.gauges().await.unwrap_or_default();
            gauges["t_s"] = json!(started.elapsed().as_secs_f64().round());
            eprintln!("{gauges}");
            samples.push(gauges);
            tokio::time::sleep(sample_every).await;
        }
        samples
    };
    let (load, samples) = tokio::join!(open_loop(rate, seconds, |i| rig.mixed(i, 11)), sampler);
    let end = rig.gauges().await?;
    // The first sample after warm-up: a tenth of the run in (caches and pools filled).
    let warm = samples.iter().find(|s| s["t_s"].as_f64().unwrap_or(0.0) >= seconds / 10.0).unwrap_or(&samples[0]);
    let (rss_start, rss_end) = (warm["rss_mib"].as_f64().unwrap_or(0.0), end["rss_mib"].as_f64().unwrap_or(0.0));
    let growth = (rss_end - rss_start) / rss_start.max(1.0) * 100.0;
    let summary = summarize(&load, cascade_e2e::fault_suite::DEADLINE);
    println!(
        "soak {seconds:.0} s at {rate:.0} req/s: {} requests, {} 5xx, {} shed, p99 {:.1} ms; RSS {rss_start:.0} → {rss_end:.0} MiB ({growth:+.1}%); end gauges {end}",
        summary["requests"],
        summary["server_errors"],
        summary["shed_503"],
        summary["admitted_p99_ms"].as_f64().unwrap_or(0.0)
    );
    let report = json!({
        "benchmark": "soak",
        "seconds": seconds,
        "rate": rate,
        "load": summary,
        "rss_mib_after_warmup": rss_start,
        "rss_mib_end": rss_end,
        "rss_growth_pct": growth,
        "end": end,
        "samples": samples,
    });
    let path = bench_dir()?.join("soak.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    eprintln!("saved {}", path.display());
    anyhow::ensure!(growth < 10.0, "RSS grew {growth:.1}% over the soak");
    Ok(())
}
