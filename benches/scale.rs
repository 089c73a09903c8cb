//! Capacity benchmark: the Small tier (1M users, 100K items, 128 dims) loaded into 4 real Redis
//! shards: load rate, Redis memory per key (the overhead `cascade plan` uses), the same users as
//! float16, and the precompute rate; with CASCADE_BENCH_MEDIUM=1 also the Medium tier's users
//! (10M) loaded into the same 4 shards.
//!
//!     scripts/bench.sh scale    (it prepares CASCADE_SMALL_BUNDLE)
//!
//! Saves `target/cascade-bench/scale.json`.

use std::time::Instant;

use anyhow::Context;
use cascade_e2e::{RedisServer, bench_dir, run_cascade, small_tier};
use serde_json::{Value, json};

/// A connection for administrative commands (`FLUSHALL SYNC`, `INFO`, `DBSIZE`) with no response
/// timeout: the client's default (500 ms) is shorter than `FLUSHALL SYNC` of a million keys on a
/// slow machine, which stopped `scripts/bench.sh scale` there with a bare "timed out".
pub async fn redis_admin(url: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url).with_context(|| format!("{url}: not a Redis URL"))?;
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    client.get_multiplexed_async_connection_with_config(&config).await.with_context(|| format!("connecting to {url}"))
}

async fn info_field(url: &str, section: &str, field: &str) -> anyhow::Result<f64> {
    let mut connection = redis_admin(url).await?;
    let info: String = redis::cmd("INFO").arg(section).query_async(&mut connection).await?;
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("INFO {section} has no {field}"))
}

async fn keys(urls: &[String]) -> anyhow::Result<u64> {
    let mut total = 0;
    for url in urls {
        let mut connection = redis_admin(url).await?;
        let n: u64 = redis::cmd("DBSIZE").query_async(&mut connection).await?;
        // Not a vector: the hash where `cascade load` marks what it put on this shard.
        let markers: u64 =
            redis::cmd("EXISTS").arg(cascade_shared::keys::MARKERS_KEY).query_async(&mut connection).await?;
        total += n - markers;
    }
    Ok(total)
}

async fn flush(urls: &[String]) -> anyhow::Result<()> {
    for url in urls {
        let mut connection = redis_admin(url).await?;
        let () = redis::cmd("FLUSHALL")
            .arg("SYNC")
            .query_async(&mut connection)
            .await
            .with_context(|| format!("FLUSHALL SYNC on {url}"))?;
    }
    Ok(())
}

/// Loads with `args` and measures wall time, keys and memory added.
async fn measured_load(urls: &[String], args: &[&str], vectors: u64, value_bytes: u64) -> anyhow::Result<Value> {
    let before = cascade_e2e::faults::redis_used_memory(urls).await?;
    let keys_before = keys(urls).await?;
    let started = Instant::now();
    let log = run_cascade(args)?;
    let seconds = started.elapsed().as_secs_f64();
    eprint!("{log}");
    let added_keys = keys(urls).await? - keys_before;
    anyhow::ensure!(added_keys == vectors, "expected {vectors} new keys, found {added_keys}");
    let added = cascade_e2e::faults::redis_used_memory(urls).await? - before;
    let per_key = added / vectors as f64;
    Ok(json!({
        "vectors": vectors,
        "seconds_including_verify": seconds,
        "vectors_per_sec_including_verify": vectors as f64 / seconds,
        "log": log.lines().filter(|l| l.contains("verified")).collect::<Vec<_>>(),
        "redis_used_memory_added_bytes": added,
        "bytes_per_key": per_key,
        "value_bytes": value_bytes,
        "overhead_bytes_per_key": per_key - value_bytes as f64,
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (small, spec) = small_tier()?;
    let shards = RedisServer::start_many(4).await?;
    let urls: Vec<String> = shards.iter().map(|s| s.url.clone()).collect();
    let list = urls.join(",");

    // Users and items, float32, generated on the fly (the same vectors as the bundle's files).
    let f32_users =
        measured_load(&urls, &["load", "--generate", &spec, "--redis", &list, "--users-only"], 1_000_000, 512)
            .await
            .context("step 1 of 4: loading the Small tier's users (float32)")?;
    let precompute_started = Instant::now();
    let precompute_log = run_cascade(&[
        "precompute",
        "--bundle",
        small.to_str().unwrap_or_default(),
        "--redis",
        &list,
        "--max-users",
        "20000",
    ])
    .context("step 2 of 4: precomputing 20,000 users' lists")?;
    let precompute_secs = precompute_started.elapsed().as_secs_f64();
    eprint!("{precompute_log}");
    let users_per_sec: f64 = precompute_log
        .split(" at ")
        .last()
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(f64::NAN);
    let shard_memory: Vec<f64> = {
        let mut v = Vec::new();
        for url in &urls {
            v.push(info_field(url, "memory", "used_memory").await.context("step 2 of 4: reading shard memory")?);
        }
        v
    };
    flush(&urls).await.context("step 3 of 4: emptying the shards before the float16 load")?;
    let f16_users =
        measured_load(&urls, &["load", "--generate", &spec, "--redis", &list, "--users-only", "--f16"], 1_000_000, 256)
            .await
            .context("step 3 of 4: loading the Small tier's users (float16)")?;
    flush(&urls).await.context("step 4 of 4: emptying the shards after the float16 load")?;

    let medium = if std::env::var("CASCADE_BENCH_MEDIUM").is_ok_and(|v| v == "1") {
        let medium_spec = "users=10000000,items=1000000,dim=128";
        match measured_load(
            &urls,
            &["load", "--generate", medium_spec, "--redis", &list, "--users-only"],
            10_000_000,
            512,
        )
        .await
        {
            Ok(report) => report,
            Err(error) => json!({"failed": error.to_string()}),
        }
    } else {
        json!("not run (CASCADE_BENCH_MEDIUM=1 runs it: about 6 GB of Redis)")
    };

    let report = json!({
        "benchmark": "scale",
        "tier": "small: 1M users, 100K items, 128 dims, 4 Redis shards on this machine",
        "load_rate_vectors_per_s": f32_users["vectors_per_sec_including_verify"],
        "redis_memory_bytes": f32_users["redis_used_memory_added_bytes"],
        "precompute_users_per_s": users_per_sec,
        "users_f32": f32_users,
        "users_f16": f16_users,
        "shard_used_memory_after_users_and_20k_lists": shard_memory,
        "precompute": {"users": 20000, "seconds": precompute_secs, "users_per_s": users_per_sec, "top": 50},
        "medium_tier_users": medium,
        "note": "load and verify run through `cascade load --generate` (vectors made on the fly); memory is INFO used_memory added over the 4 shards; precompute ranks 20,000 users (FAISS top-100, TorchScript ranker on CPU) and writes their top 50",
    });
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(bench_dir()?.join("scale.json"), &text)?;
    println!("{text}");
    Ok(())
}
