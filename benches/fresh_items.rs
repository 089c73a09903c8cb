//! What new items cost the real-time path: the same origin with no new items, 2,000, 5,000 and
//! 10,000 (`[catalogue] max_new_items` raised to 10,000; the default is 2,000), imported with
//! `cascade items import`, side by side in one run, on the miss path (a one-entry L1: every request
//! scans the new items for the best 20, which compete with FAISS's candidates), closed loop at
//! concurrency 32, two rounds in alternating order. Also the import's rate.
//!
//!     scripts/bench.sh fresh_items    (or: cargo bench -p cascade-e2e --bench fresh_items)
//!
//! Saves `target/cascade-bench/fresh_items.json`. BENCH_SECS (default 6) per origin per round.

use std::io::Write;
use std::sync::Arc;

use cascade_e2e::{Origin, TempDir, bench_dir, bench_secs, bundle_dir, cascade_bin, closed_loop, requests_per_sec};
use serde_json::{Value, json};

const API_KEY: &str = "bench-internal-key-0123456789";
const CONCURRENCY: usize = 32;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = bench_secs(6);
    let bundle = bundle_dir()?;
    let users = cascade_shared::embedding::decode_file(&std::fs::read(bundle.join("users.emb"))?)?;
    let items = cascade_shared::embedding::decode_file(&std::fs::read(bundle.join("items.emb"))?)?;
    let dir = TempDir::new("cascade-fresh-items")?;
    let config = "[cache]\nl1_capacity = 1\n[catalogue]\nmax_new_items = 10000\n";
    let mut report = json!({"benchmark": "fresh_items", "concurrency": CONCURRENCY, "seconds": seconds});
    let mut origins = Vec::new();
    for count in [0usize, 2_000, 5_000, 10_000] {
        let origin = Origin::with_config(&bundle, API_KEY, config).await?;
        if count > 0 {
            // New items near the bundle's: an item's embedding, perturbed.
            let file = dir.path().join(format!("items-{count}.jsonl"));
            let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
            for index in 0..count {
                let row = items.row(index % items.ids.len());
                let embedding: Vec<f32> =
                    row.iter().enumerate().map(|(d, x)| x * (1.0 + 0.01 * ((index + d) % 7) as f32)).collect();
                writeln!(out, "{}", json!({"item_id": format!("new-{index}"), "embedding": embedding}))?;
            }
            out.flush()?;
            let started = std::time::Instant::now();
            let status = std::process::Command::new(cascade_bin()?)
                .args(["items", "import", &file.display().to_string(), "--origin", &origin.url, "--batch", "500"])
                .env("CASCADE_API_KEY", API_KEY)
                .status()?;
            anyhow::ensure!(status.success(), "import failed");
            let rate = count as f64 / started.elapsed().as_secs_f64();
            eprintln!("imported {count} new items at {rate:.0} items/s");
            report["import_items_per_sec"][count.to_string()] = json!(rate);
        }
        origins.push((count, origin));
    }
    let contexts = ["home.desktop", "browse.mobile", "detail.tablet", "search.desktop"];
    let paths: Vec<String> = contexts
        .iter()
        .flat_map(|c| {
            let (page, device) = c.split_once('.').unwrap_or(("home", "desktop"));
            users.ids.iter().map(move |u| format!("/v1/users/{u}/recs?n=20&page={page}&device={device}"))
        })
        .collect();
    let paths = Arc::new(paths);
    for (_, origin) in &origins {
        closed_loop(&origin.url, Arc::clone(&paths), API_KEY, CONCURRENCY, 2).await?;
    }
    let mut runs: Vec<Vec<Value>> = vec![Vec::new(); origins.len()];
    for round in 0..2 {
        let mut order: Vec<usize> = (0..origins.len()).collect();
        if round == 1 {
            order.reverse();
        }
        for index in order {
            let (count, origin) = &origins[index];
            let result = closed_loop(&origin.url, Arc::clone(&paths), API_KEY, CONCURRENCY, seconds).await?;
            eprintln!("{count} new items, round {round}: {result}");
            runs[index].push(result);
        }
    }
    let total = |index: usize| runs[index].iter().map(requests_per_sec).sum::<f64>();
    for (index, (count, _)) in origins.iter().enumerate() {
        let ratio = total(index) / total(0);
        eprintln!("{count} new items: {ratio:.3} of the requests/s with none");
        report["origins"][count.to_string()] = json!({"runs": runs[index], "ratio_to_none": ratio});
    }
    report["note"] = json!(
        "release origins (the bench bundle, one-entry L1: every request real time) beside the client on the same 2 cores"
    );
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(bench_dir()?.join("fresh_items.json"), &text)?;
    println!("{text}");
    Ok(())
}
