//! Retrieval benchmark: `cascade index eval` (recall@100 against exact search, single-query
//! latency, 2-thread throughput) on the generated Small tier's 100K items and on MovieLens's items,
//! and what float16 storage does to recall and to the ranker's order.
//!
//!     scripts/bench.sh    (it prepares the bundles; then: cargo bench -p cascade-e2e --bench retrieval)
//!
//! Needs CASCADE_SMALL_BUNDLE (and CASCADE_MOVIELENS_BUNDLE for MovieLens), which scripts/bench.sh
//! sets. Saves `target/cascade-bench/retrieval.json`. Target: recall@100 ≥ 0.95 with p99 ≤ 5 ms on
//! 100K items.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cascade_e2e::{TempDir, bench_dir, run_cascade, small_tier};
use cascade_origin::bundle::Bundle;
use cascade_origin::config::{DeviceChoice, RankerConfig};
use cascade_origin::metrics::BatchMetrics;
use cascade_origin::ranking::features::build_rows;
use cascade_origin::ranking::{Ranker, TorchRanker};
use cascade_shared::embedding::decode_file;
use cascade_shared::segment::{Device, Page};
use serde_json::{Value, json};

/// The serving default (`retrieval.nprobe`).
const SERVING_NPROBE: u64 = 16;

fn eval(bundle: &Path, factory: &str, nprobes: &str, f16: bool, dir: &TempDir) -> anyhow::Result<Value> {
    let out = dir.path().join(format!("eval-{}.json", rand_name()));
    let mut args = vec![
        "index",
        "eval",
        "--bundle",
        bundle.to_str().unwrap_or_default(),
        "--factory",
        factory,
        "--nprobe",
        nprobes,
        "--queries",
        "2000",
        "--k",
        "100",
        "--out",
        out.to_str().unwrap_or_default(),
    ];
    if f16 {
        args.push("--f16");
    }
    let log = run_cascade(&args)?;
    eprintln!(
        "{}",
        log.lines().filter(|l| !l.starts_with(' ') && !l.starts_with(['{', '}'])).collect::<Vec<_>>().join("\n")
    );
    Ok(serde_json::from_slice(&std::fs::read(out)?)?)
}

fn rand_name() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// The curve point at `nprobe` (or the only one), flattened for the headline.
fn headline(report: &Value, nprobe: u64) -> Value {
    let points = report["points"].as_array().cloned().unwrap_or_default();
    let point = points.iter().find(|p| p["nprobe"].as_u64() == Some(nprobe)).or(points.first()).cloned();
    let point = point.unwrap_or(Value::Null);
    json!({
        "factory": report["factory"],
        "items": report["items"],
        "nprobe": point["nprobe"],
        "recall_at_100": point["recall"],
        "p50_ms": point["p50_ms"],
        "p99_ms": point["p99_ms"],
        "qps": point["qps"],
    })
}

/// Ranks each user's exact top-100 with float32 and with float16-rounded embeddings.
async fn f16_ranking_effect(bundle_dir: &Path, users: usize) -> anyhow::Result<Value> {
    let bundle = Bundle::load(bundle_dir)?;
    let user_table = decode_file(&std::fs::read(bundle_dir.join("users.emb"))?)?;
    let config = RankerConfig {
        device: DeviceChoice::Cpu,
        queue_capacity: 4096,
        max_batch_rows: 1024,
        max_wait_ms: 2.0,
        batch_policy: Default::default(),
        threads: 1,
        intra_op_threads: 2,
        ..RankerConfig::default()
    };
    let ranker = TorchRanker::start(bundle.model(), tch::Device::Cpu, &config, BatchMetrics::new())?;
    let round = |v: &[f32]| v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect::<Vec<f32>>();
    let (page, device) = (Page::parse_or_default(None), Device::parse_or_default(None));
    let (mut same_top20, mut top20_overlap, mut pairs_kept, mut pairs, mut worst_score) = (0, 0usize, 0u64, 0u64, 0f32);
    for row in 0..users.min(user_table.ids.len()) {
        let user = user_table.row(row);
        let mut by_dot: Vec<(usize, f32)> = (0..bundle.items.ids.len())
            .map(|i| (i, bundle.items.row(i).iter().zip(user).map(|(a, b)| a * b).sum()))
            .collect();
        by_dot.sort_by(|a, b| b.1.total_cmp(&a.1));
        let candidates: Vec<usize> = by_dot.iter().take(100).map(|c| c.0).collect();
        let score = |user: Vec<f32>, items: Vec<Vec<f32>>| {
            let mut rows = Vec::new();
            build_rows(&user, items.iter().map(Vec::as_slice), page, device, &mut rows);
            ranker.score(rows, Instant::now() + Duration::from_secs(30))
        };
        let exact = score(user.to_vec(), candidates.iter().map(|&i| bundle.items.row(i).to_vec()).collect()).await?;
        let half = score(round(user), candidates.iter().map(|&i| round(bundle.items.row(i))).collect()).await?;
        let order = |scores: &[f32]| {
            let mut idx: Vec<usize> = (0..scores.len()).collect();
            idx.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
            idx
        };
        let (a, b) = (order(&exact), order(&half));
        same_top20 += usize::from(a[..20] == b[..20]);
        top20_overlap += a[..20].iter().filter(|x| b[..20].contains(x)).count();
        for i in 0..exact.len() {
            worst_score = worst_score.max((exact[i] - half[i]).abs());
            for j in i + 1..exact.len() {
                pairs += 1;
                pairs_kept += u64::from((exact[i] > exact[j]) == (half[i] > half[j]));
            }
        }
    }
    let users = users.min(user_table.ids.len());
    Ok(json!({
        "users": users,
        "candidates": 100,
        "identical_top20_share": same_top20 as f64 / users as f64,
        "top20_overlap": top20_overlap as f64 / (users * 20) as f64,
        "pairwise_order_kept": pairs_kept as f64 / pairs as f64,
        "max_score_difference": worst_score,
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (small, _) = small_tier()?;
    let dir = TempDir::new("cascade-retrieval-bench")?;
    let nprobes = "4,8,16,32,64";
    let small_f32 = eval(&small, "auto", nprobes, false, &dir)?;
    let small_f16 = eval(&small, "auto", nprobes, true, &dir)?;
    let ranking = f16_ranking_effect(&small, 200).await?;
    let movielens = match std::env::var_os("CASCADE_MOVIELENS_BUNDLE").map(PathBuf::from) {
        Some(bundle) => {
            let exact = eval(&bundle, "auto", "1", false, &dir)?;
            let items = exact["items"].as_u64().unwrap_or(0);
            let lists = ((items as f64).sqrt() * 4.0).round() as u64;
            let ivf = eval(&bundle, &format!("IVF{lists}_HNSW32,Flat"), nprobes, false, &dir)?;
            json!({"auto": headline(&exact, 1), "ivf": headline(&ivf, SERVING_NPROBE), "ivf_curve": ivf})
        }
        None => json!(
            "not run: CASCADE_MOVIELENS_BUNDLE is not set (scripts/bench.sh sets it when ../shared/data/ml-latest-small exists)"
        ),
    };
    let head = headline(&small_f32, SERVING_NPROBE);
    let report = json!({
        "benchmark": "retrieval",
        "recall_at_100": head["recall_at_100"],
        "p50_ms": head["p50_ms"],
        "p99_ms": head["p99_ms"],
        "qps": head["qps"],
        "target": "recall@100 >= 0.95 with p99 <= 5 ms on 100K items",
        "small_tier": {"headline": head, "curve": small_f32},
        "small_tier_f16": {"headline": headline(&small_f16, SERVING_NPROBE), "curve": small_f16},
        "f16_ranking_effect": ranking,
        "movielens": movielens,
        "note": "queries are the bundle's first 2000 users; latency is one thread, one query at a time; qps is 2 threads through the serving pool; f16 recall is against float32 exact search",
    });
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(bench_dir()?.join("retrieval.json"), &text)?;
    println!("{text}");
    Ok(())
}
