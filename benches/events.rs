//! `POST /v1/events` throughput: 32 closed-loop callers posting batches of 100 valid events (views
//! and purchases with idempotency keys) to the origin on its embedded default, through the typed
//! client (`cascade-client`, no retries: a failed batch is counted).
//!
//!     scripts/bench.sh    (or: cargo bench -p cascade-e2e --bench events)
//!
//! Saves `target/cascade-bench/events.json`. BENCH_SECS (default 10).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cascade_client::{Client, Event, EventKind};
use cascade_e2e::{Origin, bench_dir, bench_secs, bundle_dir};
use serde_json::json;

const API_KEY: &str = "bench-internal-key-0123456789";
const CALLERS: u64 = 32;
const BATCH: u64 = 100;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = bench_secs(10);
    let origin = Origin::start(&[
        ("CASCADE_BUNDLE", bundle_dir()?.display().to_string()),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
        ("CASCADE_LOG", "warn".to_string()),
    ])
    .await?;
    let client = Client::builder(&origin.url).api_key(API_KEY).retries(0).timeout(Duration::from_secs(10)).build()?;
    let (stop, accepted, failures) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let (client, stop, accepted, failures) = (client.clone(), stop.clone(), accepted.clone(), failures.clone());
            tokio::spawn(async move {
                let mut sequence = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let events: Vec<_> = (0..BATCH)
                        .map(|i| {
                            sequence += 1;
                            let kind = if i % 10 == 0 { EventKind::Purchase } else { EventKind::View };
                            let user = format!("u{}", (caller * 31 + i) % 1000);
                            let mut event = Event::new(&user, kind, Some(&format!("i{}", (sequence * 7) % 800)));
                            event.idempotency_key = Some(format!("{caller}-{sequence}"));
                            event
                        })
                        .collect();
                    match client.send_events(events).await {
                        Ok(answer) => {
                            accepted.fetch_add(answer.accepted as u64, Ordering::Relaxed);
                        }
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let report = json!({
        "benchmark": "events",
        "callers": CALLERS,
        "events_per_request": BATCH,
        "seconds": elapsed,
        "events_accepted": accepted.load(Ordering::Relaxed),
        "events_per_sec": accepted.load(Ordering::Relaxed) as f64 / elapsed,
        "failed_requests": failures.load(Ordering::Relaxed),
        "note": "embedded default (in-process user state); each event validated, deduplicated, applied (views join the session and bump the generation; purchases are remembered)",
    });
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(bench_dir()?.join("events.json"), &text)?;
    println!("{text}");
    Ok(())
}
