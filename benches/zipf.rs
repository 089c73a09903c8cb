//! Cache hit rates under a Zipf(1.0) user population: the origin's real cache code (moka L1 with
//! request coalescing, L2 on a real Redis server) fed 1M warm-up requests, then measured over 1M
//! more. The "pipeline" here is a stand-in that counts its runs and returns a 100-item list: the
//! benchmark measures the caches' policy, not ranking.
//!
//!     scripts/bench.sh    (or: cargo bench -p cascade-e2e --bench zipf)
//!
//! Saves `target/cascade-bench/zipf.json`. ZIPF_USERS (default 1,000,000), ZIPF_REQUESTS per phase
//! (default 1,000,000), ZIPF_L1 (default 100,000 entries).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cascade_e2e::{RedisServer, bench_dir};
use cascade_origin::cache::{CacheConfig, ListKey, RedisUserState, UserCaches};
use cascade_origin::redis::ShardSet;
use cascade_shared::segment::SegmentKey;
use cascade_shared::wire::RecItem;
use prometheus::{IntCounterVec, Opts};
use serde_json::json;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Inverse-CDF sampler for Zipf(1.0) over `n` ranks.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|k| {
                total += 1.0 / k as f64;
                total
            })
            .collect::<Vec<_>>();
        Zipf { cumulative: cumulative.iter().map(|c| c / total).collect() }
    }

    fn sample(&self, uniform: f64) -> usize {
        self.cumulative.partition_point(|&c| c < uniform).min(self.cumulative.len() - 1)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let (users, requests, l1) =
        (env("ZIPF_USERS", 1_000_000), env("ZIPF_REQUESTS", 1_000_000), env("ZIPF_L1", 100_000));
    let redis = RedisServer::start().await?;
    let lookups = IntCounterVec::new(Opts::new("zipf_lookups", "cache lookups"), &["layer", "result"])?;
    let settings = CacheConfig { l1_capacity: l1, l2_ttl_secs: 3600, ..CacheConfig::default() };
    let shards = Arc::new(ShardSet::new(std::slice::from_ref(&redis.url), Duration::from_millis(500))?);
    let caches = Arc::new(UserCaches::new(&settings, Arc::new(RedisUserState::new(shards)), true, lookups.clone()));
    let zipf = Arc::new(Zipf::new(users as usize));
    let list: Arc<Vec<RecItem>> =
        Arc::new((0..100).map(|i| RecItem { id: format!("i{i}"), score: 1.0, title: None, position: 0 }).collect());
    let runs = Arc::new(AtomicU64::new(0));
    let bundle: Arc<str> = Arc::from("zipf");

    let mut phases = Vec::new();
    for phase in ["warm_up", "measured"] {
        let before: Vec<u64> = ["l1", "l2"]
            .iter()
            .flat_map(|l| ["hit", "miss"].map(|r| lookups.with_label_values(&[l, r]).get()))
            .collect();
        let runs_before = runs.load(Ordering::Relaxed);
        let started = Instant::now();
        let workers = 32u64;
        let tasks: Vec<_> = (0..workers)
            .map(|_| {
                let (caches, zipf, list, runs, bundle) =
                    (caches.clone(), zipf.clone(), list.clone(), runs.clone(), bundle.clone());
                tokio::spawn(async move {
                    for _ in 0..requests / workers {
                        let user = zipf.sample(rand::random::<f64>());
                        let key = ListKey {
                            bundle: bundle.clone(),
                            user: format!("u{user}"),
                            segment: SegmentKey::from_parts(None, None, None),
                            generation: 0,
                        };
                        if caches.get(&key).await.is_none() {
                            let compute = async {
                                runs.fetch_add(1, Ordering::Relaxed);
                                Ok::<_, ()>(list.as_ref().clone())
                            };
                            caches
                                .get_or_compute(key, Instant::now() + Duration::from_secs(1), compute)
                                .await
                                .map_err(|_| anyhow::anyhow!("compute failed"))?;
                        }
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        let after: Vec<u64> = ["l1", "l2"]
            .iter()
            .flat_map(|l| ["hit", "miss"].map(|r| lookups.with_label_values(&[l, r]).get()))
            .collect();
        let delta: Vec<f64> = after.iter().zip(&before).map(|(a, b)| (a - b) as f64).collect();
        let total = requests as f64;
        let pipeline = (runs.load(Ordering::Relaxed) - runs_before) as f64;
        phases.push((
            phase,
            json!({
                "requests": requests,
                "seconds": started.elapsed().as_secs_f64(),
                "l1_hit_rate": delta[0] / total,
                "l2_hit_rate_of_l1_misses": delta[2] / (delta[2] + delta[3]).max(1.0),
                "l2_hits_share_of_requests": delta[2] / total,
                "reached_pipeline_share": pipeline / total,
            }),
        ));
    }
    let report = json!({
        "benchmark": "zipf",
        "users": users,
        "distribution": "Zipf(1.0) over user ranks",
        "l1_capacity_entries": l1,
        "l1_ttl_secs": settings.l1_ttl_secs,
        "l2": "one Redis server, TTL 3600 s, unbounded (maxmemory unset)",
        "warm_up": phases[0].1,
        "measured": phases[1].1,
        "note": "the caches' real code with a stand-in pipeline that returns a fixed 100-item list; a purchase/session event would bump the user's generation and miss both layers",
    });
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(bench_dir()?.join("zipf.json"), &text)?;
    println!("{text}");
    Ok(())
}
