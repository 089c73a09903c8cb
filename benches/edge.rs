//! Edge HIT benchmark: segment lists served by the Worker under `wrangler dev` from the Cache API,
//! against the origin serving the same list itself, at concurrency 32, in one run; plus the Worker
//! bundle's size. A `/healthz` loop on the same Worker gives the floor of `wrangler dev` itself.
//! And the purge generations' cost: the same HITs from a second Worker that reads them from KV on
//! every request (`GENERATION_CACHE_SECS=0`) against the default (kept 5 s in the isolate).
//!
//!     scripts/bench.sh    (or: cargo bench -p cascade-e2e --bench edge)
//!
//! Saves `target/cascade-bench/edge.json`. BENCH_SECS (default 10). `wrangler dev` runs workerd
//! locally: the figures say what one local workerd does on this machine, not what Cloudflare's
//! network does.

use std::sync::Arc;

use cascade_e2e::{Edge, Origin, bench_dir, bench_secs, bundle_dir, closed_loop, repo_root};
use serde_json::json;

const SECRET: &str = "bench-edge-secret-0123456789";
const API_KEY: &str = "bench-internal-key-0123456789";
const CONCURRENCY: usize = 32;

/// The one segment every measured request asks for.
fn hit_path() -> String {
    "/recs?page=home&device=desktop&country=us&n=20".to_string()
}

fn gzip_size(path: &std::path::Path) -> anyhow::Result<u64> {
    let out = std::process::Command::new("gzip").args(["-9", "-c"]).arg(path).output()?;
    anyhow::ensure!(out.status.success(), "gzip failed on {}", path.display());
    Ok(out.stdout.len() as u64)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = bench_secs(10);
    let bundle = bundle_dir()?;
    let origin = Origin::start(&[
        ("CASCADE_BUNDLE", bundle.display().to_string()),
        ("CASCADE_SECRET", SECRET.to_string()),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
        ("CASCADE_LOG", "warn".to_string()),
    ])
    .await?;
    let edge = Edge::start(&origin.url, SECRET, &[]).await?;
    let client = reqwest::Client::new();

    // One segment, warmed: every measured request is a HIT.
    let edge_paths = Arc::new(vec![hit_path()]);
    let warm = client.get(format!("{}{}", edge.url, edge_paths[0])).send().await?;
    anyhow::ensure!(warm.status() == 200, "edge warm-up failed: {}", edge.output());
    let body_bytes = warm.bytes().await?.len();
    closed_loop(&edge.url, edge_paths.clone(), "", CONCURRENCY, 1).await?;
    let check = client.get(format!("{}{}", edge.url, edge_paths[0])).send().await?;
    anyhow::ensure!(check.headers()["x-cache"] == "HIT", "expected a HIT after warm-up");

    let origin_paths = Arc::new(vec!["/v1/segments/home.desktop.us/recs?n=20".to_string()]);
    let edge_hits = closed_loop(&edge.url, edge_paths, "", CONCURRENCY, seconds).await?;
    // The Worker's floor under wrangler dev: a route that touches neither the cache nor the origin.
    let edge_floor = closed_loop(&edge.url, Arc::new(vec!["/healthz".to_string()]), "", CONCURRENCY, seconds).await?;
    let hit_over_floor = edge_hits["requests_per_sec"].as_f64().unwrap_or(0.0)
        / edge_floor["requests_per_sec"].as_f64().unwrap_or(f64::NAN);
    let origin_direct = closed_loop(&origin.url, origin_paths, API_KEY, CONCURRENCY, seconds).await?;
    // The purge generations read from KV on every request, against the isolate's copy.
    let uncached = Edge::start(&origin.url, SECRET, &[("GENERATION_CACHE_SECS", "0")]).await?;
    let warm = client.get(format!("{}{}", uncached.url, hit_path())).send().await?;
    anyhow::ensure!(warm.status() == 200, "edge warm-up failed: {}", uncached.output());
    closed_loop(&uncached.url, Arc::new(vec![hit_path()]), "", CONCURRENCY, 1).await?;
    let kv_every_request = closed_loop(&uncached.url, Arc::new(vec![hit_path()]), "", CONCURRENCY, seconds).await?;
    let cached_over_uncached = edge_hits["requests_per_sec"].as_f64().unwrap_or(0.0)
        / kv_every_request["requests_per_sec"].as_f64().unwrap_or(f64::NAN);
    let ratio = edge_hits["requests_per_sec"].as_f64().unwrap_or(0.0)
        / origin_direct["requests_per_sec"].as_f64().unwrap_or(f64::NAN);

    let build = repo_root().join("edge/build");
    let wasm = build.join("index_bg.wasm");
    let (wasm_bytes, wasm_gzip, js_gzip) =
        (std::fs::metadata(&wasm)?.len(), gzip_size(&wasm)?, gzip_size(&build.join("index.js"))?);
    let report = json!({
        "benchmark": "edge",
        "concurrency": CONCURRENCY,
        "seconds_per_mode": seconds,
        "body_bytes": body_bytes,
        "edge_hit": edge_hits,
        "edge_healthz_floor": edge_floor,
        "edge_hit_over_floor_ratio": hit_over_floor,
        "origin_segment_direct": origin_direct,
        "edge_over_origin_ratio": ratio,
        "edge_hit_kv_generations_every_request": kv_every_request,
        "generations_cached_over_every_request_ratio": cached_over_uncached,
        "bundle": {
            "wasm_bytes": wasm_bytes,
            "wasm_gzip_bytes": wasm_gzip,
            "js_glue_gzip_bytes": js_gzip,
            "gzip_total_bytes": wasm_gzip + js_gzip,
            "limit_gzip_bytes": 1_048_576,
        },
        "note": "wrangler dev (local workerd, Cache API on disk) and the origin (release build) on the same 2 cores as the client; the origin's segment list is an in-memory lookup, so the ratio is workerd's per-request cost against axum's, not a network saving",
    });
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(bench_dir()?.join("edge.json"), &text)?;
    println!("{text}");
    Ok(())
}
