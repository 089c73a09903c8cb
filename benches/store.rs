//! Embedding store benchmark: batch gets of 1000 ids over 4 real Redis shards through
//! `RedisShardStore::get_rows` (grouped by shard, one MGET per shard, all shards at once, decoded
//! into a buffer the caller keeps; `get_batch`, a vector per id, beside it), against what
//! `redis-benchmark` reaches on the same shards with pipelined GETs of the same value size, in one
//! run; plus the fraction of keys that move when a fifth shard joins four.
//!
//!     scripts/bench.sh    (or: cargo bench -p cascade-e2e --bench store)
//!
//! Saves `target/cascade-bench/store.json`. BENCH_SECS (default 10), STORE_USERS (default 100,000).

use cascade_origin::redis::tls::RedisTls;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cascade_e2e::faults::process_cpu_seconds;
use cascade_e2e::{RedisServer, bench_dir, bench_secs};
use cascade_origin::store::redis_shards::RedisShardStore;
use cascade_origin::store::{EmbeddingRows, EmbeddingStore};
use cascade_shared::hashing::shard_for;
use cascade_shared::keys::EntityKind;
use serde_json::json;

// The allocator the `cascade` binary uses, so the store's figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DIM: usize = 128;
const BATCH: usize = 1000;

/// GETs each `redis-benchmark` sends.
const BENCH_GETS: usize = 500_000;

/// Runs redis-benchmark's pipelined GET on every shard at once (one process per shard, all
/// started before any is waited for); returns the keys served per second: all GETs over the wall
/// time until the last process finished.
///
/// Before 2026-11-29 (later) the processes were started and waited for one after another (a
/// `.output()` inside the `map`), and their rates were summed: each shard had the machine to
/// itself, so the figure was up to 4x what four shards serve at once, and every store ratio
/// reported before then was against that inflated figure.
fn redis_benchmark(ports: &[u16], users: usize, fill_first: bool, cpu: Option<&str>) -> anyhow::Result<f64> {
    let value_bytes = (DIM * 4).to_string();
    let keyspace = users.to_string();
    // Random SETs over the keyspace: 5x its size leaves under 1% of keys missing, so the GETs
    // below return full values, as ours do.
    let fill = (users * 5).to_string();
    for &port in ports.iter().filter(|_| fill_first) {
        let port = port.to_string();
        let status = Command::new("redis-benchmark")
            .args(["-p", &port, "-t", "set", "-r", &keyspace, "-d", &value_bytes, "-n", &fill, "-P", "100", "-q"])
            .output()?;
        anyhow::ensure!(status.status.success(), "redis-benchmark set failed");
    }
    run_everywhere(ports, cpu, |command| {
        command.args(["-t", "get", "-r", &keyspace, "-d", &value_bytes, "-n", &BENCH_GETS.to_string()]);
        command.args(["-P", "250", "-c", "4"]);
        BENCH_GETS
    })
}

/// MGETs of [`MGET_KEYS`] keys each `redis-benchmark` sends in the MGET comparison.
const BENCH_MGETS: usize = 2_000;
/// Keys per MGET: a batch of 1000 over 4 shards, as the store sends.
const MGET_KEYS: usize = 250;

/// The store's own command from Redis's C client: `redis-benchmark` sending `MGET` of 250 random
/// keys (filled by [`redis_benchmark`]) with 8 in flight per shard, every shard at once: keys
/// served per second. Same server work as the store's, so the ratio isolates the client.
fn redis_benchmark_mget(ports: &[u16], users: usize, cpu: Option<&str>) -> anyhow::Result<f64> {
    let keyspace = users.to_string();
    run_everywhere(ports, cpu, |command| {
        command.args(["-r", &keyspace, "-n", &BENCH_MGETS.to_string(), "-c", "8", "MGET"]);
        command.args(std::iter::repeat_n("key:__rand_int__", MGET_KEYS));
        BENCH_MGETS * MGET_KEYS
    })
}

/// One `redis-benchmark` per port, all started before any is waited for, each given its
/// arguments by `load` (which returns the keys that process reads): keys read over the wall time.
fn run_everywhere(ports: &[u16], cpu: Option<&str>, load: impl Fn(&mut Command) -> usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let (mut children, mut keys) = (Vec::new(), 0);
    for port in ports {
        let mut command = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpu, "redis-benchmark"]);
                c
            }
            None => Command::new("redis-benchmark"),
        };
        command.args(["-p", &port.to_string(), "--csv"]);
        keys += load(&mut command);
        command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null());
        children.push(command.spawn()?);
    }
    for child in children {
        let output = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        // CSV: "test","rps",…: a result line after the header.
        anyhow::ensure!(
            output.status.success() && text.lines().any(|l| l.starts_with("\"GET\"") || l.starts_with("\"MGET")),
            "redis-benchmark failed: {}",
            text.chars().take(300).collect::<String>()
        );
    }
    Ok(keys as f64 / started.elapsed().as_secs_f64())
}

/// Which store call a measurement makes.
#[derive(Clone, Copy)]
enum Api {
    /// `get_rows` into a buffer each task keeps: no allocation per id.
    Rows,
    /// `get_batch`: a vector per id.
    Lookups,
}

/// Keys found per second, and this process's CPU time per key found (microseconds).
struct Measured {
    keys_per_s: f64,
    cpu_us_per_key: f64,
}

/// `in_flight` tasks of batch gets over 1000 random ids each, for `seconds`.
async fn measure_get_batch(
    store: &Arc<RedisShardStore>,
    ids: &[String],
    (api, in_flight): (Api, usize),
    seconds: u64,
) -> anyhow::Result<Measured> {
    // IN_FLIGHT batch gets at a time, each 1000 random ids.
    let (stop, keys) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let (started, cpu_before) = (Instant::now(), process_cpu_seconds(std::process::id()));
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let (store, stop, keys) = (store.clone(), stop.clone(), keys.clone());
            // Random batches made up front: the loop measures the store, not the id shuffling.
            let batches: Vec<Vec<String>> =
                (0..64).map(|_| (0..BATCH).map(|_| ids[rand::random_range(0..ids.len())].clone()).collect()).collect();
            tokio::spawn(async move {
                let mut next = 0;
                let mut rows = EmbeddingRows::new(DIM);
                while !stop.load(Ordering::Relaxed) {
                    let batch = &batches[next % batches.len()];
                    next += 1;
                    let found = match api {
                        Api::Rows => {
                            store.get_rows(EntityKind::User, batch, &mut rows).await;
                            rows.found()
                        }
                        Api::Lookups => store
                            .get_batch(EntityKind::User, batch)
                            .await
                            .into_iter()
                            .filter(|r| matches!(r, Ok(Some(_))))
                            .count(),
                    };
                    keys.fetch_add(found as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    let (found, elapsed) = (keys.load(Ordering::Relaxed) as f64, started.elapsed().as_secs_f64());
    let cpu = process_cpu_seconds(std::process::id()) - cpu_before;
    Ok(Measured { keys_per_s: found / elapsed, cpu_us_per_key: cpu * 1e6 / found.max(1.0) })
}

/// The same load as bare pipelined MGETs through redis-rs (one multiplexed connection per shard,
/// keys built up front, no decoding): what the client library alone reaches here.
async fn measure_raw_mget(urls: &[String], users: usize, in_flight: usize, seconds: u64) -> anyhow::Result<f64> {
    let raw_keys = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut connections = Vec::new();
    for url in urls {
        connections.push(redis::Client::open(url.as_str())?.get_multiplexed_async_connection().await?);
    }
    let raw_started = Instant::now();
    let raw_tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let (stop, raw_keys, connections) = (stop.clone(), raw_keys.clone(), connections.clone());
            let batches: Vec<Vec<Vec<String>>> = (0..64)
                .map(|_| {
                    let mut by_shard = vec![Vec::new(); 4];
                    for _ in 0..BATCH {
                        let id = format!("u{}", rand::random_range(0..users));
                        by_shard[shard_for(&id, 4) as usize].push(cascade_shared::keys::embedding_key(
                            EntityKind::User,
                            "bench",
                            &id,
                        ));
                    }
                    by_shard
                })
                .collect();
            tokio::spawn(async move {
                let mut next = 0;
                while !stop.load(Ordering::Relaxed) {
                    let batch = &batches[next % batches.len()];
                    next += 1;
                    let gets = batch.iter().zip(&connections).map(|(keys, connection)| {
                        let mut connection = connection.clone();
                        async move {
                            let mut command = redis::cmd("MGET");
                            command.arg(keys);
                            let values: Vec<Option<Vec<u8>>> =
                                command.query_async(&mut connection).await.unwrap_or_default();
                            values.iter().filter(|v| v.is_some()).count()
                        }
                    });
                    let found: usize = futures::future::join_all(gets).await.into_iter().sum();
                    raw_keys.fetch_add(found as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in raw_tasks {
        task.await?;
    }
    Ok(raw_keys.load(Ordering::Relaxed) as f64 / raw_started.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = bench_secs(10);
    let users: usize = std::env::var("STORE_USERS").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let shards = RedisServer::start_many(4).await?;
    let urls: Vec<String> = shards.iter().map(|s| s.url.clone()).collect();
    let store = Arc::new(RedisShardStore::connect(&urls, "bench", DIM, Duration::from_secs(2), &RedisTls::default())?);
    let ids: Vec<String> = (0..users).map(|u| format!("u{u}")).collect();
    for chunk in ids.chunks(BATCH) {
        let entries: Vec<(String, Vec<f32>)> =
            chunk.iter().enumerate().map(|(i, id)| (id.clone(), vec![i as f32; DIM])).collect();
        store.set_batch(EntityKind::User, &entries).await?;
    }

    let in_flight: usize = std::env::var("STORE_IN_FLIGHT").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let rows = measure_get_batch(&store, &ids, (Api::Rows, in_flight), seconds).await?;
    let lookups = measure_get_batch(&store, &ids, (Api::Lookups, in_flight), seconds).await?;
    let get_batch_keys_per_s = rows.keys_per_s;
    let raw_mget_keys_per_s = measure_raw_mget(&urls, users, in_flight, seconds).await?;
    let ports: Vec<u16> = shards.iter().map(|s| s.port).collect();
    let redis_benchmark_keys_per_s = redis_benchmark(&ports, users, true, None)?;
    let redis_benchmark_mget_keys_per_s = redis_benchmark_mget(&ports, users, None)?;

    // Again with the servers on CPU 0 and each client (ours, then redis-benchmark) on CPU 1, as
    // when the origin and Redis run on different machines: the clients no longer take the
    // servers' CPU, and each gets the same one core.
    let pinned = if std::env::var("STORE_PIN").map_or(true, |v| v != "0") {
        for port in &ports {
            let pids = Command::new("pgrep").args(["-f", &format!("redis-server 127.0.0.1:{port}")]).output()?;
            for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                Command::new("taskset").args(["-a", "-c", "-p", "0", pid]).output()?;
            }
        }
        Command::new("taskset").args(["-a", "-c", "-p", "1", &std::process::id().to_string()]).output()?;
        let rows = measure_get_batch(&store, &ids, (Api::Rows, in_flight), seconds).await?;
        let lookups = measure_get_batch(&store, &ids, (Api::Lookups, in_flight), seconds).await?;
        let ours = rows.keys_per_s;
        let raw = measure_raw_mget(&urls, users, in_flight, seconds).await?;
        let bench = redis_benchmark(&ports, users, false, Some("1"))?;
        let bench_mget = redis_benchmark_mget(&ports, users, Some("1"))?;
        json!({
            "get_batch_keys_per_s": ours,
            "vector_per_id_keys_per_s": lookups.keys_per_s,
            "rows_over_vector_per_id": ours / lookups.keys_per_s,
            "client_cpu_us_per_key": rows.cpu_us_per_key,
            "vector_per_id_client_cpu_us_per_key": lookups.cpu_us_per_key,
            "raw_redis_rs_mget_keys_per_s": raw,
            "redis_benchmark_keys_per_s": bench,
            "ratio": ours / bench,
            "redis_benchmark_mget_keys_per_s": bench_mget,
            "ratio_to_redis_benchmark_mget": ours / bench_mget,
            "get_batch_over_raw_mget": ours / raw,
        })
    } else {
        json!("not run (STORE_PIN=0)")
    };

    let moved = ids.iter().filter(|id| shard_for(id, 4) != shard_for(id, 5)).count() as f64 / users as f64;
    let report = json!({
        "benchmark": "store",
        "shards": 4,
        "dim": DIM,
        "value_bytes": DIM * 4,
        "users": users,
        "batch": BATCH,
        "batches_in_flight": in_flight,
        "get_batch_keys_per_s": get_batch_keys_per_s,
        "vector_per_id_keys_per_s": lookups.keys_per_s,
        "rows_over_vector_per_id": get_batch_keys_per_s / lookups.keys_per_s,
        "client_cpu_us_per_key": rows.cpu_us_per_key,
        "vector_per_id_client_cpu_us_per_key": lookups.cpu_us_per_key,
        "redis_benchmark_keys_per_s": redis_benchmark_keys_per_s,
        "ratio": get_batch_keys_per_s / redis_benchmark_keys_per_s,
        "redis_benchmark_mget_keys_per_s": redis_benchmark_mget_keys_per_s,
        "ratio_to_redis_benchmark_mget": get_batch_keys_per_s / redis_benchmark_mget_keys_per_s,
        "raw_redis_rs_mget_keys_per_s": raw_mget_keys_per_s,
        "get_batch_over_raw_mget": get_batch_keys_per_s / raw_mget_keys_per_s,
        "pinned_servers_cpu0_client_cpu1": pinned,
        "target_ratio": 0.7,
        "moved_fraction": moved,
        "ideal_fraction": 0.2,
        "moved_over_ideal": moved / 0.2,
        "note": "client_cpu_us_per_key: this process's CPU time (user + system) per key found; get_batch_keys_per_s: get_rows into a buffer each caller keeps (vector_per_id: get_batch, a Vec<f32> per id); redis-benchmark: pipelined GET (-P 250, 4 connections per shard), one process per shard, all 4 at once, same value size, all GETs over the wall time; our client runs in this process on the same 2 cores",
    });
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(bench_dir()?.join("store.json"), &text)?;
    println!("{text}");
    Ok(())
}
