//! The fault suite's figures: every fault of `cascade_e2e::fault_suite` (a Redis shard killed and
//! restarted empty then refilled, blackholed, slowed by 50 ms, resetting 10% of connections; FAISS
//! and the ranker 10x slower; a ranker panic; 3x the admission limit; 10 bundle reloads; events
//! posted while a shard's network dies) injected under an open-loop load at 50% and at 150% of
//! the capacity measured first, against the real origin and real Redis shards behind TCP proxies;
//! then the origin killed and restarted behind the real Worker (`wrangler dev`) at 100 req/s.
//!
//!     scripts/bench.sh faults    (BENCH_SECS: seconds each fault lasts, default 3)
//!     FAULTS=overload_3x_admission_limit,origin_killed_behind_worker scripts/bench.sh faults
//!
//! `FAULTS` (comma-separated names as in the report) runs only those faults; a partial run saves
//! `faults-partial.json`, so the full table's file is never overwritten by a subset.
//!
//! Saves `target/cascade-bench/faults.json`: per run, statuses before, during and after the fault,
//! admitted p50/p99 and answers past the 80 ms deadline, the source mix, time to recover after
//! the fault clears, connects per second to Redis, RSS before and after, keys lost, and the
//! fault's own figures (events acknowledged but not applied, refusals and their latency, ...).

use cascade_e2e::fault_suite::{Fault, Rig, run_fault, run_origin_killed_behind_worker};
use cascade_e2e::{bench_dir, bench_secs};
use serde_json::{Value, json};

fn cell(report: &Value, phase: &str, field: &str) -> String {
    match &report[phase][field] {
        Value::Number(n) => format!("{:.1}", n.as_f64().unwrap_or(0.0)),
        other => other.to_string(),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let fault_secs: f64 = bench_secs(3.0);
    let only: Option<Vec<String>> =
        std::env::var("FAULTS").ok().map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|names| names.iter().any(|n| n == name));
    if let Some(names) = &only {
        let known: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).chain(["origin_killed_behind_worker"]).collect();
        if let Some(unknown) = names.iter().find(|n| !known.contains(&n.as_str())) {
            anyhow::bail!("FAULTS names an unknown fault {unknown:?}; known: {}", known.join(", "));
        }
    }
    let mut rig = Rig::start(64).await?;
    rig.capacity(2.0).await; // warm-up: caches, connections, the model
    let capacity = rig.capacity(5.0).await;
    eprintln!("capacity (closed loop, 16 callers): {capacity:.0} req/s");
    let mut runs = Vec::new();
    println!(
        "{:<34} {:>5} {:>6} {:>5} {:>6} {:>8} {:>8} {:>8} {:>7} {:>7} {:>9} {:>5}",
        "fault", "load", "rate", "5xx", "shed", "p99 ms", "srv p99", "past dl", "recov", "conn/s", "rss MiB", "lost"
    );
    for fault in Fault::ALL.into_iter().filter(|f| wanted(f.name())) {
        for load in [0.5, 1.5] {
            let rate = (capacity * load).max(20.0);
            let run = run_fault(&rig, fault, rate, [2.0, fault_secs, 3.0]).await?;
            let r = &run.report;
            println!(
                "{:<34} {:>4.0}% {:>6.0} {:>5} {:>6} {:>8} {:>8} {:>8} {:>7} {:>7.1} {:>4.0}→{:<4.0} {:>5}  {}",
                fault.name(),
                load * 100.0,
                rate,
                r["all"]["server_errors"],
                r["all"]["shed_503"],
                cell(r, "during", "admitted_p99_ms"),
                cell(r, "during", "admitted_server_p99_ms"),
                r["all"]["past_deadline"],
                r["recovery_ms"].as_f64().map_or("never".into(), |ms| format!("{ms:.0}")),
                r["redis_connects_per_s"].as_f64().unwrap_or(0.0),
                r["rss_mib_before"].as_f64().unwrap_or(0.0),
                r["rss_mib_after"].as_f64().unwrap_or(0.0),
                r["keys_lost"],
                json!({"brownout_fallbacks": r["brownout_fallbacks"], "fault": r["extra"]}),
            );
            runs.push(json!({"load": load, "report": run.report}));
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
    // The origin killed behind the Worker: through `wrangler dev`, at a fixed rate (the local
    // Worker runtime, not the origin, is the bound here).
    if wanted("origin_killed_behind_worker") {
        let behind_worker = run_origin_killed_behind_worker(&mut rig, 100.0, [3.0, fault_secs, 4.0]).await?;
        println!(
            "{:<34} {:>5} {:>6} {:>5} {:>6} {:>8}        {:>7}  restart {:.0} ms, sources during {}",
            "origin_killed_behind_worker",
            "-",
            100,
            behind_worker["all"]["server_errors"],
            behind_worker["all"]["shed_503"],
            cell(&behind_worker, "during", "admitted_p99_ms"),
            behind_worker["recovery_ms"].as_f64().map_or("never".into(), |ms| format!("{ms:.0}")),
            behind_worker["origin_restart_ms"].as_f64().unwrap_or(0.0),
            behind_worker["during"]["sources"],
        );
        runs.push(json!({"load": null, "report": behind_worker}));
    }
    let report = json!({
        "benchmark": "faults",
        "capacity_rps": capacity,
        "deadline_ms": cascade_e2e::fault_suite::DEADLINE.as_millis() as u64,
        "fault_secs": fault_secs,
        "runs": runs,
    });
    let path = bench_dir()?.join(if only.is_some() { "faults-partial.json" } else { "faults.json" });
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    eprintln!("saved {}", path.display());
    Ok(())
}
