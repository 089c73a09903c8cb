//! The cost of observability on the request path, one feature at a time, each on and off side by
//! side in one run: the feature log (every list and event written, 1% of real-time lists with
//! their query vector), and trace export (OTLP to a collector in this process, every request
//! sampled: `sample_ratio = 1.0`, the worst case, and 1%, as deploy/k8s configures it; the
//! collector stand-in answers and discards). Each on the hit path (32 users' lists from L1)
//! and the miss path (a one-entry L1: every request real time over FAISS and the ranker), closed
//! loop at concurrency 32, which origin goes first alternating over two rounds. The target: at
//! most 5% fewer requests/s with the feature on.
//!
//!     scripts/bench.sh log_overhead    (or: cargo bench -p cascade-e2e --bench log_overhead)
//!
//! Saves `target/cascade-bench/log_overhead.json`. BENCH_SECS (default 6) per origin per round.

use std::sync::Arc;

use cascade_e2e::{Origin, OtlpCollector, TempDir, bench_dir, bench_secs, bundle_dir, closed_loop, requests_per_sec};
use serde_json::json;

const API_KEY: &str = "bench-internal-key-0123456789";
const CONCURRENCY: usize = 32;

async fn start(bundle: &std::path::Path, config: &std::path::Path) -> anyhow::Result<Origin> {
    Origin::start(&[
        ("CASCADE_BUNDLE", bundle.display().to_string()),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
        ("CASCADE_LOG", "warn".to_string()),
        ("CASCADE_CONFIG", config.display().to_string()),
    ])
    .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = bench_secs(6);
    let bundle = bundle_dir()?;
    let users = cascade_shared::embedding::decode_file(&std::fs::read(bundle.join("users.emb"))?)?;
    let dir = TempDir::new("cascade-log-overhead")?;
    let log = dir.path().join("log");
    let collector = OtlpCollector::start_discarding().await?;
    let mut report = json!({"benchmark": "log_overhead", "concurrency": CONCURRENCY, "seconds": seconds});
    // OVERHEAD_FEATURES=tracing,tracing_1pct runs only those.
    let only = std::env::var("OVERHEAD_FEATURES").ok();
    let features = ["feature_log", "tracing", "tracing_1pct"]
        .into_iter()
        .filter(|f| only.as_deref().is_none_or(|only| only.split(',').any(|o| o == *f)));
    for (feature, path, l1) in features.flat_map(|f| [(f, "hit", "100000"), (f, "miss", "1")]) {
        let mut origins = Vec::new();
        for mode in ["off", "on"] {
            let config = dir.path().join(format!("{feature}-{path}-{mode}.toml"));
            let mut text = format!("[cache]\nl1_capacity = {l1}\n");
            if mode == "on" && feature == "feature_log" {
                text.push_str(&format!("[feature_log]\ndir = {:?}\n", log.join(path).display().to_string()));
            }
            if mode == "on" && feature.starts_with("tracing") {
                let ratio = if feature == "tracing_1pct" { 0.01 } else { 1.0 };
                text.push_str(&format!("[tracing]\notlp_endpoint = {:?}\nsample_ratio = {ratio}\n", collector.url));
            }
            std::fs::write(&config, text)?;
            origins.push((mode, start(&bundle, &config).await?));
        }
        // Hits: 32 users, one per worker. Misses: every user in every context, in turn.
        let paths: Vec<String> = if path == "hit" {
            users.ids.iter().take(CONCURRENCY).map(|u| format!("/v1/users/{u}/recs?n=20")).collect()
        } else {
            let contexts = ["home.desktop", "browse.mobile", "detail.tablet", "search.desktop"];
            contexts
                .iter()
                .flat_map(|c| {
                    let (page, device) = c.split_once('.').unwrap_or(("home", "desktop"));
                    users.ids.iter().map(move |u| format!("/v1/users/{u}/recs?n=20&page={page}&device={device}"))
                })
                .collect()
        };
        let paths = Arc::new(paths);
        for (_, origin) in &origins {
            closed_loop(&origin.url, Arc::clone(&paths), API_KEY, CONCURRENCY, 2).await?;
        }
        let mut rates = json!({"off": [], "on": []});
        for round in 0..2 {
            let mut order: Vec<&(&str, Origin)> = origins.iter().collect();
            if round == 1 {
                order.reverse();
            }
            for (mode, origin) in order {
                let result = closed_loop(&origin.url, Arc::clone(&paths), API_KEY, CONCURRENCY, seconds).await?;
                eprintln!("{feature}, {path} path, {mode}, round {round}: {result}");
                if let Some(runs) = rates[*mode].as_array_mut() {
                    runs.push(result);
                }
            }
        }
        let total = |mode: &str| rates[mode].as_array().map_or(0.0, |runs| runs.iter().map(requests_per_sec).sum());
        let ratio = total("on") / total("off");
        let written = std::fs::read_dir(log.join(path))
            .map(|files| files.filter_map(Result::ok).filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum::<u64>())
            .unwrap_or(0);
        let exported = collector.bytes_received();
        eprintln!(
            "{feature}, {path} path: on / off = {ratio:.3} requests/s; {written} bytes of log, {exported} bytes of spans so far"
        );
        if feature == "feature_log" {
            report[feature][path] = json!({"runs": rates, "ratio_on_to_off": ratio, "log_bytes": written});
        } else {
            report[feature][path] =
                json!({"runs": rates, "ratio_on_to_off": ratio, "span_bytes_exported_so_far": exported});
        }
    }
    report["target"] = json!("ratio_on_to_off >= 0.95 on both paths, for each feature");
    report["note"] = json!(
        "release origins (embedded default, the bench bundle) beside the client on the same 2 cores; the log on the same disk; the OTLP collector in the client's process"
    );
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(bench_dir()?.join("log_overhead.json"), &text)?;
    println!("{text}");
    Ok(())
}
