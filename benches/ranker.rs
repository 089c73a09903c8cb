//! Ranker benchmark: the dynamic batcher driven closed-loop by 64 concurrent callers for a fixed
//! time, same model, same threads, in two regimes and two modes each, in one run:
//!
//! - `single_row`: one row per call (the reference design's `predict`), batched
//!   (`max_batch_rows` 64) against `max_batch_rows = 1`;
//! - `multi_row`: a request's 100 candidates per call (Cascade's regime), batched
//!   (`max_batch_rows` 1024) against unbatched (`max_batch_rows` 100: each request alone);
//!
//! plus `ceiling_rows_per_s`: 4096-row forward passes back to back, no batcher (the model's compute
//! rate here, on every core), and `multi_row_batched_share_of_ceiling`: the median of 5 rounds,
//! each measuring the ceiling (the best of 1024- and 4096-row passes on one thread of 2 libtorch
//! threads, and 1024-row passes on two threads of one, each its own model copy) and then the batched
//! 100-row regime in two thread layouts (`share_of_ceiling_by_layout`: one inference thread of 2
//! libtorch threads, `1x2`, and two of one, `2x1`; the headline is the better layout). These
//! closed-loop regimes use the `fixed` batch policy (5 ms), as they always did.
//!
//! - `policies`: 100-row requests in an open loop (latency from each request's scheduled time,
//!   80 ms deadline as in serving) at 10%, 50%, 90% and 150% of the batched closed-loop call rate,
//!   the `fixed` (5 ms wait) and `adaptive` (run at once with what is queued) policies side by side
//!   at each rate.
//!
//!     scripts/bench.sh    (or: cargo bench -p cascade-e2e --bench ranker)
//!
//! - `remote`: the `multi_row` batched regime with the remote backend (`[ranker.remote]`): KServe's
//!   model server (`scripts/oip_server.py`, one worker, one torch thread) on this machine over the
//!   Open Inference Protocol, binary tensors and JSON, beside the in-process figures.
//!
//! Saves `target/cascade-bench/ranker.json`. BENCH_SECS (default 5) per mode, BENCH_DEVICE
//! (`cpu` default, `cuda`, `auto`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cascade_e2e::{OipServer, bench_dir, bench_secs, bundle_dir, p50_p99};
use cascade_origin::bundle::Bundle;
use cascade_origin::config::{DeviceChoice, RankerConfig};
use cascade_origin::metrics::BatchMetrics;
use cascade_origin::ranking::batcher::BatchPolicy;
use cascade_origin::ranking::remote::{RemoteConfig, RemoteFallback};
use cascade_origin::ranking::{Ranker, TorchRanker, pick_device};
use serde_json::{Value, json};

const CALLERS: usize = 64;
/// Rounds of ceiling-then-batcher for `multi_row_batched_share_of_ceiling` (the median round).
const CEILING_ROUNDS: usize = 5;

/// Runs `callers` closed-loop callers sending `rows_per_call` rows each for `seconds`.
async fn drive(ranker: Arc<TorchRanker>, callers: usize, rows_per_call: usize, seconds: f64) -> anyhow::Result<Value> {
    let width = ranker.input_width();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let (ranker, stop) = (ranker.clone(), stop.clone());
            let rows: Vec<f32> =
                (0..rows_per_call * width).map(|i| (((caller * 7919 + i) % 200) as f32 / 100.0) - 1.0).collect();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match ranker.score(rows.clone(), Instant::now() + Duration::from_secs(10)).await {
                        Ok(scores) if scores.len() == rows_per_call => {
                            latencies.push(t.elapsed().as_secs_f64() * 1000.0)
                        }
                        _ => failures += 1,
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (latencies, f) = task.await?;
        all.extend(latencies);
        failures += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (p50_ms, p99_ms) = p50_p99(&mut all);
    Ok(json!({
        "calls": all.len(),
        "failures": failures,
        "throughput_rows_per_s": (all.len() * rows_per_call) as f64 / elapsed,
        "p50_ms": p50_ms,
        "p99_ms": p99_ms,
    }))
}

/// Sends one `rows_per_call`-row request every `1 / rate` seconds for `seconds`, each with an
/// 80 ms deadline; latency counts from the scheduled time (no coordinated omission).
async fn open_loop(ranker: Arc<TorchRanker>, rate: f64, rows_per_call: usize, seconds: f64) -> Value {
    let width = ranker.input_width();
    let rows: Vec<f32> = (0..rows_per_call * width).map(|i| ((i % 200) as f32 / 100.0) - 1.0).collect();
    let count = (rate * seconds).round() as usize;
    let start = Instant::now() + Duration::from_millis(5);
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let (ranker, rows) = (ranker.clone(), rows.clone());
        tasks.push(tokio::spawn(async move {
            let scored = ranker.score(rows, due + Duration::from_millis(80)).await;
            (scored.is_ok(), due.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0usize;
    for task in tasks {
        match task.await {
            Ok((true, ms)) => latencies.push(ms),
            _ => failures += 1,
        }
    }
    let (p50_ms, p99_ms) = p50_p99(&mut latencies);
    json!({"rate": rate, "calls": count, "failures": failures, "p50_ms": p50_ms, "p99_ms": p99_ms})
}

fn ranker(
    bundle: &Bundle,
    device: tch::Device,
    max_batch_rows: usize,
    batch_policy: BatchPolicy,
) -> anyhow::Result<Arc<TorchRanker>> {
    ranker_on_threads(bundle, device, (max_batch_rows, batch_policy), (1, 2))
}

/// A ranker with `threads` inference threads of `intra_op_threads` libtorch threads each.
fn ranker_on_threads(
    bundle: &Bundle,
    device: tch::Device,
    (max_batch_rows, batch_policy): (usize, BatchPolicy),
    (threads, intra_op_threads): (usize, usize),
) -> anyhow::Result<Arc<TorchRanker>> {
    let config = RankerConfig {
        device: DeviceChoice::Auto,
        queue_capacity: 4096,
        max_batch_rows,
        max_wait_ms: 5.0,
        batch_policy,
        threads,
        intra_op_threads,
        remote: RemoteConfig::default(),
    };
    Ok(Arc::new(TorchRanker::start(bundle.model(), device, &config, BatchMetrics::new())?))
}

/// The model's compute rate here: `rows`-row forward passes back to back on one tensor, no batcher,
/// no copies, with libtorch on every core.
///
/// libtorch's intra-op thread count is process-wide state set by `set_num_threads` (each
/// `TorchRanker::start` sets it to its `intra_op_threads`), and a thread takes it when it first
/// runs a parallel op; this thread calls it itself, or the ceiling would be measured on however
/// many threads the last ranker started with (one run measured a one-thread "ceiling" after the
/// 2x1 ranker, and the batcher at 1.2-1.4x of it).
fn ceiling_rows_per_s(bundle: &Bundle, device: tch::Device, rows: i64, seconds: f64) -> anyhow::Result<f64> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let shape = (rows, bundle.metadata.input_width as i64);
    passes_rows_per_s(bundle.model_path(), device, (shape, cores), seconds)
}

/// The same on `threads` threads at once, each with its own copy of the model and one libtorch
/// thread (the `2x1` layout's ceiling: no barrier inside a pass).
fn ceiling_on_threads(
    bundle: &Bundle,
    device: tch::Device,
    (threads, rows): (usize, i64),
    seconds: f64,
) -> anyhow::Result<f64> {
    let runs: Vec<_> = (0..threads)
        .map(|_| {
            let (path, shape) = (bundle.model_path(), (rows, bundle.metadata.input_width as i64));
            std::thread::spawn(move || passes_rows_per_s(path, device, (shape, 1), seconds))
        })
        .collect();
    let mut total = 0.0;
    for run in runs {
        total += run.join().map_err(|_| anyhow::anyhow!("ceiling thread panicked"))??;
    }
    Ok(total)
}

/// Forward passes of a `(rows, width)` input back to back for `seconds` on this thread, with
/// `intra_op_threads` libtorch threads and a copy of the model of its own: rows per second.
fn passes_rows_per_s(
    path: std::path::PathBuf,
    device: tch::Device,
    ((rows, width), intra_op_threads): ((i64, i64), usize),
    seconds: f64,
) -> anyhow::Result<f64> {
    tch::set_num_threads(i32::try_from(intra_op_threads).unwrap_or(1));
    let mut module = tch::CModule::load_on_device(path, device)?;
    module.set_eval();
    let input = tch::Tensor::rand([rows, width], (tch::Kind::Float, device));
    let _ = tch::no_grad(|| module.forward_ts(&[&input]))?;
    let started = Instant::now();
    let mut passes = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        let output = tch::no_grad(|| module.forward_ts(&[&input]))?;
        // Wait for the result (CUDA is asynchronous) by reading one value back.
        let _ = output.double_value(&[0]);
        passes += 1;
    }
    Ok(passes as f64 * rows as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let seconds: f64 = bench_secs(5.0);
    let device_choice = match std::env::var("BENCH_DEVICE").as_deref() {
        Ok("cuda") => DeviceChoice::Cuda,
        Ok("auto") => DeviceChoice::Auto,
        _ => DeviceChoice::Cpu,
    };
    let device = pick_device(device_choice)?;
    let bundle = Bundle::load(&bundle_dir()?)?;
    let mut report = serde_json::Map::new();
    for (regime, rows_per_call, batched_rows, unbatched_rows) in
        [("single_row", 1, 64, 1), ("multi_row", 100, 1024, 100)]
    {
        let mut modes = serde_json::Map::new();
        for (mode, max_batch_rows) in [("unbatched", unbatched_rows), ("batched", batched_rows)] {
            let ranker = ranker(&bundle, device, max_batch_rows, BatchPolicy::Fixed)?;
            drive(ranker.clone(), CALLERS, rows_per_call, 0.5).await?; // warm-up
            let figures = drive(ranker, CALLERS, rows_per_call, seconds).await?;
            eprintln!("{regime} {mode} (max_batch_rows {max_batch_rows}): {figures}");
            modes.insert(mode.to_string(), figures);
        }
        report.insert(regime.to_string(), Value::Object(modes));
    }
    // The remote backend, same regime (the server shares this machine's 2 cores with the bench).
    let mut server = OipServer::start(&bundle_dir()?).await?;
    let mut remote = serde_json::Map::new();
    for (encoding, binary) in [("binary", true), ("json", false)] {
        let remote_config = RemoteConfig {
            url: server.url.clone(),
            binary,
            timeout_ms: 10_000,
            fallback: RemoteFallback::Chain,
            ..RemoteConfig::default()
        };
        let config = RankerConfig {
            queue_capacity: 4096,
            max_batch_rows: 1024,
            batch_policy: BatchPolicy::Fixed,
            intra_op_threads: 2,
            remote: remote_config,
            ..RankerConfig::default()
        };
        let ranker = Arc::new(TorchRanker::start(bundle.model(), device, &config, BatchMetrics::new())?);
        drive(ranker.clone(), CALLERS, 100, 0.5).await?; // warm-up
        let mut figures = drive(ranker, CALLERS, 100, seconds).await?;
        let share = figures["throughput_rows_per_s"].as_f64().unwrap_or(0.0)
            / report["multi_row"]["batched"]["throughput_rows_per_s"].as_f64().unwrap_or(f64::NAN);
        figures["share_of_in_process"] = json!(share);
        eprintln!("remote multi_row batched ({encoding}): {figures}");
        remote.insert(encoding.to_string(), figures);
    }
    server.stop();
    report.insert("remote".to_string(), Value::Object(remote));
    // Adaptive against fixed batching in an open loop, side by side at each share of capacity.
    let capacity_calls = report["multi_row"]["batched"]["throughput_rows_per_s"].as_f64().unwrap_or(1000.0) / 100.0;
    let rankers = [
        ("fixed", ranker(&bundle, device, 1024, BatchPolicy::Fixed)?),
        ("adaptive", ranker(&bundle, device, 1024, BatchPolicy::Adaptive)?),
    ];
    for (_, ranker) in &rankers {
        drive(ranker.clone(), CALLERS, 100, 0.5).await?; // warm-up
    }
    let mut policies = Vec::new();
    for load in [0.1, 0.5, 0.9, 1.5] {
        let rate = (capacity_calls * load).max(10.0);
        let mut point = json!({"load": load, "rate": rate});
        for (name, ranker) in &rankers {
            let figures = open_loop(ranker.clone(), rate, 100, seconds).await;
            eprintln!("open loop {:.0}% ({rate:.0} calls/s) {name}: {figures}", load * 100.0);
            point[*name] = figures;
            tokio::time::sleep(Duration::from_millis(300)).await; // let the queue drain
        }
        policies.push(point);
    }
    drop(rankers);
    // The batcher against the model's ceiling, interleaved: this shared machine's speed swings
    // by 2x within a minute, so a ceiling measured once at the end (as before) compared two
    // different machines. Each round measures the ceiling at 1024 and 4096 rows per pass (the
    // better of the two is the ceiling) and the batched 100-row regime right after.
    // Two thread layouts for the same two cores: one inference thread whose model call uses both
    // (libtorch's intra-op threads, as in the regimes above), and two inference threads of one
    // libtorch thread each (no barrier inside a model call for a preempted thread to hold up).
    let layouts = [("1x2", (1, 2)), ("2x1", (2, 1))];
    let mut batched = Vec::new();
    for (name, threads) in layouts {
        let ranker = ranker_on_threads(&bundle, device, (1024, BatchPolicy::Fixed), threads)?;
        drive(ranker.clone(), CALLERS, 100, 0.5).await?; // warm-up
        batched.push((name, ranker));
    }
    let mut rounds = Vec::new();
    for _ in 0..CEILING_ROUNDS {
        let round_secs = (seconds / 2.0).max(1.0);
        let at_4096 = ceiling_rows_per_s(&bundle, device, 4096, round_secs)?;
        let at_1024 = ceiling_rows_per_s(&bundle, device, 1024, round_secs)?;
        let two_threads = ceiling_on_threads(&bundle, device, (2, 1024), round_secs)?;
        let ceiling = at_4096.max(at_1024).max(two_threads);
        let mut round = json!({"ceiling_4096": at_4096, "ceiling_1024": at_1024, "ceiling_2x1_1024": two_threads, "ceiling": ceiling});
        for (name, ranker) in &batched {
            let figures = drive(ranker.clone(), CALLERS, 100, round_secs).await?;
            let rows_per_s = figures["throughput_rows_per_s"].as_f64().unwrap_or(0.0);
            let share = rows_per_s / ceiling;
            eprintln!("ceiling round: ceiling {ceiling:.0} rows/s, batched {name} {rows_per_s:.0}: {share:.3}");
            round[*name] = json!({"batched_rows_per_s": rows_per_s, "share": share});
        }
        rounds.push(round);
    }
    drop(batched);
    let median_share = |layout: &str| {
        let mut shares: Vec<f64> = rounds.iter().filter_map(|r| r[layout]["share"].as_f64()).collect();
        shares.sort_by(f64::total_cmp);
        shares.get(shares.len() / 2).copied().unwrap_or(0.0)
    };
    let ceiling = rounds.iter().filter_map(|r| r["ceiling"].as_f64()).fold(0.0, f64::max);
    let speedup = |regime: &str| {
        report[regime]["batched"]["throughput_rows_per_s"].as_f64().unwrap_or(0.0)
            / report[regime]["unbatched"]["throughput_rows_per_s"].as_f64().unwrap_or(f64::NAN)
    };
    let (single, multi) = (speedup("single_row"), speedup("multi_row"));
    let result = json!({
        "benchmark": "ranker",
        "device": format!("{device:?}"),
        "callers": CALLERS,
        "seconds_per_mode": seconds,
        "model": { "bundle": bundle.id(), "input_width": bundle.metadata.input_width },
        "speedup_single_row": single,
        "speedup_multi_row": multi,
        "single_row": report["single_row"],
        "multi_row": report["multi_row"],
        "remote": report["remote"],
        "policies": policies,
        "ceiling_rows_per_s": ceiling,
        "ceiling_rounds": rounds,
        "multi_row_batched_share_of_ceiling": median_share("1x2").max(median_share("2x1")),
        "share_of_ceiling_by_layout": {"1x2": median_share("1x2"), "2x1": median_share("2x1")},
        "settings": "1 inference thread, 2 libtorch intra-op threads, max_wait 5 ms; regimes closed loop with the fixed policy; policies open loop, 100-row calls, 80 ms deadline",
    });
    let dir = bench_dir()?;
    let text = serde_json::to_string_pretty(&result)?;
    std::fs::write(dir.join("ranker.json"), &text)?;
    println!("{text}");
    Ok(())
}
