//! Miss-path benchmark: the Small tier (1M users, 100K items, 128 dims) in 4 real Redis shards,
//! 160,000 users with precomputed lists of 50, each request a different user (so L1 and L2 miss):
//! the 50 precomputed candidates are re-ranked by the TorchScript model in the request's context,
//! n = 20. A closed loop at concurrency 32, then an open loop at fixed arrival rates stepped up:
//! the highest rate with p99 ≤ 25 ms and no fallbacks. Then `batch_policies`: two fresh origins on
//! the same shards, `ranker.batch_policy = "fixed"` (5 ms window) and `"adaptive"`, warmed alike,
//! each in an open loop at 10%, 50%, 90% and 150% of the closed loop's rate, side by side at each
//! rate (which goes first alternates), fresh users for every request (L2 is shared: no user is
//! asked twice).
//!
//!     scripts/bench.sh miss_path    (it prepares CASCADE_SMALL_BUNDLE)
//!
//! Saves `target/cascade-bench/miss_path.json`. BENCH_SECS (default 10) per closed loop, 4 s per
//! open-loop step.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_e2e::{
    Origin, RedisServer, TempDir, bench_dir, bench_secs, closed_loop, open_loop, run_cascade, small_tier,
};
use rand::seq::SliceRandom;
use serde_json::json;

const API_KEY: &str = "bench-internal-key-0123456789";
const CONCURRENCY: usize = 32;
const PRECOMPUTED_USERS: usize = 160_000;
const P99_TARGET_MS: f64 = 25.0;
/// Users kept for the batch-policy comparison.
const POLICY_USERS: usize = 50_000;
/// Seconds per policy and rate.
const POLICY_SECS: f64 = 3.0;

/// `cascade_recs_source_total` by source.
async fn sources(http: &reqwest::Client, origin: &Origin) -> anyhow::Result<HashMap<String, f64>> {
    let text = http.get(format!("{}/metrics", origin.url)).send().await?.text().await?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("cascade_recs_source_total{source=\""))
        .filter_map(|l| l.split_once("\"} "))
        .filter_map(|(source, n)| Some((source.to_string(), n.trim().parse().ok()?)))
        .collect())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = bench_secs(10);
    let (small, spec) = small_tier()?;
    let shards = RedisServer::start_many(4).await?;
    let list = shards.iter().map(|s| s.url.clone()).collect::<Vec<_>>().join(",");
    let prepared = Instant::now();
    eprint!("{}", run_cascade(&["load", "--generate", &spec, "--redis", &list, "--users-only"])?);
    let bundle = small.to_str().unwrap_or_default();
    let users = PRECOMPUTED_USERS.to_string();
    eprint!("{}", run_cascade(&["precompute", "--bundle", bundle, "--redis", &list, "--max-users", &users])?);
    let prepare_secs = prepared.elapsed().as_secs_f64();

    let origin = Origin::start(&[
        ("CASCADE_BUNDLE", small.display().to_string()),
        ("CASCADE_REDIS_SHARDS", list.clone()),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
        ("CASCADE_LOG", "warn".to_string()),
    ])
    .await?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;

    // Every request a different user: a shuffled walk over the precomputed users, split between
    // the phases so no user is asked twice.
    let mut order: Vec<usize> = (0..PRECOMPUTED_USERS).collect();
    order.shuffle(&mut rand::rng());
    let path = |u: &usize| format!("/v1/users/u{u}/recs?n=20&page=browse&device=mobile");
    let (warm, rest) = order.split_at(2_000);
    let (closed, rest) = rest.split_at(40_000);
    let (policy_users, open) = rest.split_at(POLICY_USERS);
    closed_loop(&origin.url, Arc::new(warm.iter().map(path).collect()), API_KEY, CONCURRENCY, 2).await?;

    let before = sources(&http, &origin).await?;
    let closed_result =
        closed_loop(&origin.url, Arc::new(closed.iter().map(path).collect()), API_KEY, CONCURRENCY, seconds).await?;
    let after = sources(&http, &origin).await?;
    let delta: HashMap<String, f64> =
        after.iter().map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0))).collect();
    // (A float sum of nothing is -0.0: start from +0.0.)
    let total: f64 = delta.values().fold(0.0, |a, b| a + b);
    let fallback_count: f64 = delta
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "realtime" | "cache_l1" | "cache_l2"))
        .map(|(_, v)| v)
        .fold(0.0, |a, b| a + b);

    let open_paths: Vec<String> = open.iter().map(path).collect();
    let mut curve = Vec::new();
    let mut offset = 0;
    let mut max_rate = 0.0;
    for rate in [100.0, 250.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0, 3500.0, 4000.0, 5000.0, 6000.0] {
        let needed = (rate * 4.0) as usize;
        if offset + needed > open_paths.len() {
            eprintln!("open loop: stopping before {rate}/s, not enough users left that were never asked");
            break;
        }
        let step_paths = &open_paths[offset..offset + needed];
        offset += needed;
        let point = open_loop(&http, &origin.url, step_paths, API_KEY, rate, 4.0).await;
        eprintln!("open loop {point}");
        let p99 = point["p99_ms"].as_f64().unwrap_or(f64::INFINITY);
        let clean = point["fallbacks"].as_u64() == Some(0) && point["errors"].as_u64() == Some(0);
        if p99 <= P99_TARGET_MS && clean {
            max_rate = rate;
        }
        curve.push(point);
        if p99 > 4.0 * P99_TARGET_MS {
            break;
        }
    }

    // Adaptive against fixed batching, side by side at each share of the closed loop's rate, on
    // two fresh origins (the first one's L1 is full and it has just been overloaded).
    drop(origin);
    let mut policy_origins = Vec::new();
    let configs = TempDir::new("cascade-batching")?;
    for policy in ["fixed", "adaptive"] {
        let config = configs.path().join(format!("{policy}.toml"));
        std::fs::write(&config, format!("[ranker]\nbatch_policy = \"{policy}\"\nmax_wait_ms = 5.0\n"))?;
        let policy_origin = Origin::start(&[
            ("CASCADE_BUNDLE", small.display().to_string()),
            ("CASCADE_REDIS_SHARDS", list.clone()),
            ("CASCADE_API_KEYS", API_KEY.to_string()),
            ("CASCADE_LOG", "warn".to_string()),
            ("CASCADE_CONFIG", config.display().to_string()),
        ])
        .await?;
        closed_loop(&policy_origin.url, Arc::new(warm.iter().map(path).collect()), API_KEY, CONCURRENCY, 2).await?;
        policy_origins.push((policy, policy_origin));
    }
    let closed_rate = closed_result["requests_per_sec"].as_f64().unwrap_or(1000.0);
    let policy_paths: Vec<String> = policy_users.iter().map(path).collect();
    let mut policy_offset = 0;
    let mut batch_policies = Vec::new();
    for (step, load) in [0.1, 0.5, 0.9, 1.5].into_iter().enumerate() {
        let rate = closed_rate * load;
        let mut point = json!({"load": load, "rate": rate});
        let mut order: Vec<&(&str, Origin)> = policy_origins.iter().collect();
        if step % 2 == 1 {
            order.reverse();
        }
        for (name, policy_origin) in order {
            let base = &policy_origin.url;
            let needed = ((rate * POLICY_SECS) as usize).min(policy_paths.len() - policy_offset);
            let paths = &policy_paths[policy_offset..policy_offset + needed];
            policy_offset += needed;
            let seconds = needed as f64 / rate;
            let figures = open_loop(&http, base, paths, API_KEY, rate, seconds).await;
            eprintln!("batch policy {name} at {:.0}% ({rate:.0} req/s): {figures}", load * 100.0);
            point[name] = figures;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        batch_policies.push(point);
    }
    drop(policy_origins);

    let report = json!({
        "benchmark": "miss_path",
        "tier": "small: 1M users (4 Redis shards), 100K items, 128 dims; 160K users with precomputed top-50 lists",
        "request": "GET /v1/users/{random precomputed user}/recs?n=20&page=browse&device=mobile, each user once",
        "closed_loop": {
            "concurrency": CONCURRENCY,
            "seconds": seconds,
            "result": closed_result,
            "sources": delta,
            "fallback_share": if total > 0.0 { fallback_count / total } else { f64::NAN },
        },
        "max_rate_p99_25ms": max_rate,
        "open_loop_curve": curve,
        "batch_policies": batch_policies,
        "prepare_secs": prepare_secs,
        "note": "origin (release) in its own process; client, origin and 4 Redis servers share the same 2 cores; open-loop latency counts from each request's scheduled send time",
    });
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(bench_dir()?.join("miss_path.json"), &text)?;
    println!("{text}");
    Ok(())
}
