//! The Medium tier served end to end: 10M users (float16) in 4 real Redis shards, 1M items with a
//! FAISS IVF index built beforehand (trained on FAISS's default sample, persisted as the bundle's
//! `items.faiss`), `cascade serve` answering real-time lists (retrieval over the 1M items, then
//! ranking) for random users, each asked once, at fixed open-loop rates stepped up: the highest
//! rate with p99 <= 25 ms and no fallbacks. Also recall@100 of the serving index at the serving
//! nprobe (`cascade index eval`), the origin's memory, Redis's memory against `cascade plan`'s
//! (the plan's error in percent), and the index's build time and peak memory (measured by
//! `scripts/bench.sh`, which builds the bundle).
//!
//!     CASCADE_BENCH_MEDIUM=1 scripts/bench.sh medium    (about 10 GB of disk, 8 GB of memory)
//!
//! Without CASCADE_MEDIUM_BUNDLE it records that it did not run. Saves
//! `target/cascade-bench/medium.json`.

use std::time::Instant;

use cascade_e2e::faults::{proc_status_bytes, redis_used_memory};
use cascade_e2e::{Origin, RedisServer, bench_dir, open_loop, run_cascade, run_cascade_json};
use cascade_origin::commands::plan::{PlanInput, plan};
use rand::Rng;
use serde_json::{Value, json};

const API_KEY: &str = "bench-internal-key-0123456789";
const USERS: u64 = 10_000_000;
const P99_TARGET_MS: f64 = 25.0;
const STEP_SECS: f64 = 4.0;
/// The serving configuration's nprobe (`retrieval.nprobe`'s default).
const NPROBE: usize = 16;

/// `seconds max_rss_kb` as `/usr/bin/time -f "%e %M"` wrote it.
fn timed(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut fields = text.split_whitespace().rev().take(2).collect::<Vec<_>>();
    fields.reverse();
    match fields.as_slice() {
        [secs, kb] => {
            json!({"seconds": secs.parse::<f64>().ok(), "peak_rss_bytes": kb.parse::<f64>().ok().map(|k| k * 1024.0)})
        }
        _ => json!(null),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let out = bench_dir()?.join("medium.json");
    let Some(bundle) = std::env::var_os("CASCADE_MEDIUM_BUNDLE").map(std::path::PathBuf::from) else {
        let skipped = json!({"benchmark": "medium", "run": false,
            "how": "CASCADE_BENCH_MEDIUM=1 scripts/bench.sh medium (about 10 GB of disk, 8 GB of memory)"});
        std::fs::write(&out, serde_json::to_string_pretty(&skipped)?)?;
        eprintln!("medium: not run (CASCADE_BENCH_MEDIUM=1 scripts/bench.sh medium runs it)");
        return Ok(());
    };
    let bundle_str = bundle.to_str().unwrap_or_default().to_string();
    let shards = RedisServer::start_many(4).await?;
    let urls: Vec<String> = shards.iter().map(|s| s.url.clone()).collect();
    let list = urls.join(",");

    let loaded = Instant::now();
    eprint!("{}", run_cascade(&["load", "--bundle", &bundle_str, "--redis", &list, "--users-only", "--f16"])?);
    let load_secs = loaded.elapsed().as_secs_f64();
    let redis_bytes = redis_used_memory(&urls).await?;
    let planned = plan(PlanInput::memory(USERS, 0, 128, true));
    let plan_error = (planned.redis_bytes as f64 - redis_bytes) / redis_bytes * 100.0;
    eprintln!(
        "medium: 10M float16 users in Redis: {:.2} GB measured, {:.2} GB planned ({plan_error:+.1}%), loaded in {load_secs:.0} s",
        redis_bytes / 1e9,
        planned.redis_bytes as f64 / 1e9
    );

    let recall = run_cascade_json(&[
        "index",
        "eval",
        "--bundle",
        &bundle_str,
        "--factory",
        "file",
        "--nprobe",
        &NPROBE.to_string(),
        "--k",
        "100",
        "--queries",
        "1000",
    ])?;
    eprintln!("medium: index eval {recall}");

    let started = Instant::now();
    let origin = Origin::start(&[
        ("CASCADE_BUNDLE", bundle_str.clone()),
        ("CASCADE_REDIS_SHARDS", list.clone()),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
        ("CASCADE_LOG", "warn".to_string()),
    ])
    .await?;
    let start_secs = started.elapsed().as_secs_f64();
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let mut rng = rand::rng();
    let mut path = || format!("/v1/users/u{}/recs?n=20&page=browse&device=mobile", rng.random_range(0..USERS));
    let warm: Vec<String> = (0..1_000).map(|_| path()).collect();
    let warmed = open_loop(&http, &origin.url, &warm, API_KEY, 250.0, 4.0).await;
    eprintln!("medium: warm-up {warmed}");
    let rss_ready = proc_status_bytes(origin.pid(), "VmRSS");

    let mut curve = Vec::new();
    let mut max_rate = 0.0;
    for rate in [100.0, 250.0, 500.0, 750.0, 1000.0, 1250.0, 1500.0, 2000.0, 2500.0, 3000.0] {
        let paths: Vec<String> = (0..(rate * STEP_SECS) as usize).map(|_| path()).collect();
        let point = open_loop(&http, &origin.url, &paths, API_KEY, rate, STEP_SECS).await;
        eprintln!("medium: open loop {point}");
        let p99 = point["p99_ms"].as_f64().unwrap_or(f64::INFINITY);
        if p99 <= P99_TARGET_MS && point["fallbacks"].as_u64() == Some(0) && point["errors"].as_u64() == Some(0) {
            max_rate = rate;
        }
        curve.push(point);
        if p99 > 4.0 * P99_TARGET_MS {
            break;
        }
    }
    let (rss_end, rss_peak) = (proc_status_bytes(origin.pid(), "VmRSS"), proc_status_bytes(origin.pid(), "VmHWM"));
    let result = json!({
        "benchmark": "medium",
        "run": true,
        "users": USERS,
        "items": 1_000_000,
        "dim": 128,
        "bundle": bundle_str,
        "redis": {"shards": 4, "encoding": "float16", "load_secs": load_secs, "used_memory_bytes": redis_bytes,
                  "planned_bytes": planned.redis_bytes, "plan_error_percent": plan_error},
        "index": {"build": timed(&bundle.join("index-build.time")), "generate": timed(&bundle.join("generate.time")),
                  "file_bytes": std::fs::metadata(bundle.join("items.faiss")).map(|m| m.len()).ok()},
        "recall": recall,
        "serving_nprobe": NPROBE,
        "origin": {"start_secs": start_secs, "rss_ready_bytes": rss_ready, "rss_end_bytes": rss_end, "rss_peak_bytes": rss_peak},
        "open_loop": curve,
        "max_rate_p99_25ms": max_rate,
        "note": "every request a different random user of 10M (L1/L2 miss): retrieval over 1M items, then ranking; open loop 4 s per step; client on the same 2 cores",
    });
    std::fs::write(&out, serde_json::to_string_pretty(&result)?)?;
    eprintln!("medium: max open-loop rate with p99 <= {P99_TARGET_MS} ms: {max_rate} req/s; saved {}", out.display());
    Ok(())
}
