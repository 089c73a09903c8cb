//! The fault suite's promises, asserted on a short run of each fault at 30% of the measured
//! capacity (the suite shares this machine with the other tests; `benches/faults.rs` measures
//! every fault at 50% and 150% for longer and saves the figures): no 5xx while a fallback can answer, nothing acknowledged and lost, no key lost, real
//! time back within 2 s of the fault clearing, overload refused at once with `Retry-After` while
//! `/readyz` stays 200.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use cascade_e2e::fault_suite::{Fault, Rig, run_fault, run_origin_killed_behind_worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_degrades_and_recovers_without_a_5xx_or_a_lost_write() {
    let rig = Rig::start(16).await.unwrap();
    rig.capacity(1.0).await;
    let rate = (rig.capacity(2.0).await * 0.3).clamp(20.0, 400.0);
    for fault in [
        Fault::ShardBlackholed,
        Fault::ShardKilledRestarted,
        Fault::RankerPanicsOnce,
        Fault::EventsWhileShardDies,
        Fault::Overload3x,
    ] {
        let run = run_fault(&rig, fault, rate, [1.0, 1.5, 2.5]).await.unwrap();
        let report = &run.report;
        let context = format!(
            "{}: {report:#}\n{}",
            fault.name(),
            rig.origin.output().lines().rev().take(20).collect::<Vec<_>>().join("\n")
        );
        assert_eq!(report["keys_lost"], 0, "{context}");
        if fault == Fault::Overload3x {
            let extra = &report["extra"];
            assert!(extra["refused_503"].as_u64().unwrap() > 0, "3x the limit is refused: {context}");
            assert_eq!(extra["refused_503"], extra["refused_with_retry_after"], "{context}");
            assert_eq!(extra["readyz_not_200"], 0, "/readyz stays 200 under overload: {context}");
            assert!(extra["readyz_probes"].as_u64().unwrap() > 0, "{context}");
            continue;
        }
        assert_eq!(report["all"]["server_errors"], 0, "no 5xx while a fallback can answer: {context}");
        assert_eq!(report["all"]["no_answer"], 0, "{context}");
        let recovery = report["recovery_ms"].as_f64();
        assert!(recovery.is_some_and(|ms| ms <= 2000.0), "real time back within 2 s: {context}");
        if fault == Fault::EventsWhileShardDies {
            let extra = &report["extra"];
            assert_eq!(extra["acknowledged_not_applied"], 0, "{context}");
            assert_eq!(extra["acknowledged"], extra["events"], "every event got through with retries: {context}");
        }
        if fault == Fault::RankerPanicsOnce {
            assert_eq!(report["extra"]["panics_caught"], "1", "{context}");
            // The panic is in the log, with where it happened (the origin's panic hook).
            let log = rig.origin.output();
            assert!(
                log.lines().any(|l| l.contains("panic: injected ranker panic") && l.contains("faults.rs")),
                "the panic is logged with its location: {log}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_keeps_answering_while_the_origin_restarts() {
    let mut rig = Rig::start(16).await.unwrap();
    // An 8 s "after" window: on a loaded 2-core machine the restarted origin's start-up can
    // brown out its first seconds (user lists from the fallback chain while the runtime lags); a
    // 4 s window once saw only segment lists there (the bench measures recovery time itself).
    let report = run_origin_killed_behind_worker(&mut rig, 40.0, [2.0, 2.0, 8.0]).await.unwrap();
    let context = format!("{report:#}");
    assert_eq!(report["all"]["server_errors"], 0, "stale segment lists and segment fallbacks, no 5xx: {context}");
    assert_eq!(report["all"]["no_answer"], 0, "{context}");
    let during = &report["during"]["sources"];
    assert!(during["segment"].as_u64().unwrap_or(0) > 0, "the Worker served stored lists: {context}");
    // After the restart, the signed-in visitor gets their own list again (from real time, or from
    // L2 in Redis, which outlived the origin process).
    let after = &report["after"]["sources"];
    let personal: u64 = ["realtime", "cache_l1", "cache_l2"].iter().filter_map(|s| after[s].as_u64()).sum();
    assert!(personal > 0, "signed-in lists again: {context}");
}
