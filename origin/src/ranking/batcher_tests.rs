//! The batcher's tests: batching, shedding, expiry, errors and panics, with closure backends.

use super::*;
use std::sync::{Arc, Mutex};

/// A scorer with a known answer per row (the sum of its values) that records batch sizes.
fn summing_scorer(width: usize, sizes: Arc<Mutex<Vec<usize>>>, delay: Duration) -> Scorer {
    Box::new(move |rows: &[f32]| {
        sizes.lock().unwrap().push(rows.len() / width);
        std::thread::sleep(delay);
        Ok(rows.chunks(width).map(|row| row.iter().sum()).collect())
    })
}

fn config(max_batch_rows: usize, wait_ms: u64, capacity: usize) -> BatchConfig {
    BatchConfig {
        max_batch_rows,
        max_wait: Duration::from_millis(wait_ms),
        queue_capacity: capacity,
        policy: BatchPolicy::Fixed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_caller_gets_exactly_its_own_scores_in_order() {
    let width = 3;
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let batcher = Arc::new(
        Batcher::start(
            width,
            config(256, 2, 4096),
            vec![summing_scorer(width, sizes.clone(), Duration::ZERO)],
            BatchMetrics::default(),
        )
        .unwrap(),
    );
    let mut rng = cascade_shared::stats::SplitMix64::new(0x9e37_79b9_7f4a_7c15);
    for _round in 0..20 {
        let callers = 1 + rng.below(40);
        let mut tasks = Vec::new();
        for caller in 0..callers {
            let count = 1 + rng.below(90);
            let rows: Vec<f32> = (0..count * width).map(|i| ((caller * 1000 + i) % 97) as f32).collect();
            let expected: Vec<f32> = rows.chunks(width).map(|r| r.iter().sum()).collect();
            let batcher = batcher.clone();
            tasks.push(tokio::spawn(async move {
                let got = batcher.score(rows, Instant::now() + Duration::from_secs(10)).await.unwrap();
                assert_eq!(got, expected, "caller {caller}");
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }
    let sizes = sizes.lock().unwrap();
    // Requests have at most 90 rows: a bigger batch merged several.
    assert!(sizes.iter().any(|&s| s > 90), "requests were merged: {sizes:?}");
    assert!(sizes.iter().all(|&s| s <= 256), "no batch beyond max_batch_rows: {sizes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once_and_expired_rows_are_dropped() {
    let width = 1;
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let slow = summing_scorer(width, sizes.clone(), Duration::from_millis(500));
    let batcher = Arc::new(Batcher::start(width, config(1, 0, 2), vec![slow], BatchMetrics::default()).unwrap());
    let far = Instant::now() + Duration::from_secs(10);
    // The thread takes the first; two more fill the queue; the fourth is refused at once.
    let first = tokio::spawn({
        let b = batcher.clone();
        async move { b.score(vec![1.0], far).await }
    });
    // Wait until the inference thread has taken it (then the queue is empty).
    while batcher.queue_depth() > 0 || sizes.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let expiring = tokio::spawn({
        let b = batcher.clone();
        async move { b.score(vec![2.0], Instant::now() + Duration::from_millis(20)).await }
    });
    let third = tokio::spawn({
        let b = batcher.clone();
        async move { b.score(vec![3.0], far).await }
    });
    // Both are queued (the thread is still inside the first, slow, batch).
    let waiting_since = Instant::now();
    while batcher.queue_depth() < 2 && waiting_since.elapsed() < Duration::from_millis(300) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let refused_at = Instant::now();
    assert_eq!(batcher.score(vec![4.0], far).await, Err(RankError::Overloaded));
    assert!(refused_at.elapsed() < Duration::from_millis(50), "overload is answered at once");
    assert_eq!(first.await.unwrap(), Ok(vec![1.0]));
    assert_eq!(expiring.await.unwrap(), Err(RankError::DeadlineExceeded));
    assert_eq!(third.await.unwrap(), Ok(vec![3.0]));
    assert_eq!(*sizes.lock().unwrap(), vec![1, 1], "the expired request cost no inference");
}

#[tokio::test]
async fn a_panicking_model_costs_one_batch_not_the_thread() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let panics_once: Scorer = Box::new(move |rows: &[f32]| {
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("CUDA out of memory (simulated)");
        }
        Ok(rows.to_vec())
    });
    let metrics = BatchMetrics::default();
    let batcher = Batcher::start(1, config(8, 0, 8), vec![panics_once], metrics.clone()).unwrap();
    assert_eq!(batcher.health(), HealthState::Ok);
    let far = Instant::now() + Duration::from_secs(5);
    assert_eq!(batcher.score(vec![1.0], far).await, Err(RankError::Model("model call panicked".into())));
    assert_eq!(batcher.score(vec![2.0], far).await, Ok(vec![2.0]), "the same thread serves the next batch");
    assert_eq!(metrics.panics.get(), 1);
    assert_eq!(batcher.health(), HealthState::Degraded, "reported for a while after the panic");
}

#[tokio::test]
async fn malformed_input_and_model_errors_reach_the_caller() {
    let failing: Scorer = Box::new(|_rows: &[f32]| Err(RankError::Model("boom".into())));
    let batcher = Batcher::start(2, config(8, 0, 8), vec![failing], BatchMetrics::default()).unwrap();
    let far = Instant::now() + Duration::from_secs(5);
    assert!(matches!(batcher.score(vec![1.0, 2.0, 3.0], far).await, Err(RankError::BadInput(_))));
    assert_eq!(batcher.score(vec![1.0, 2.0], far).await, Err(RankError::Model("boom".into())));
    assert_eq!(batcher.score(Vec::new(), far).await, Ok(Vec::new()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_runs_a_lone_request_at_once_and_merges_what_queued_while_busy() {
    let width = 1;
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let adaptive = BatchConfig { policy: BatchPolicy::Adaptive, ..config(1024, 1000, 64) };
    let fixed = config(1024, 1000, 64);
    let far = Instant::now() + Duration::from_secs(10);
    // A 1 s window: the fixed policy holds a lone request for all of it; adaptive does not wait.
    let scorer = summing_scorer(width, sizes.clone(), Duration::ZERO);
    let batcher = Batcher::start(width, adaptive, vec![scorer], BatchMetrics::default()).unwrap();
    let started = Instant::now();
    assert_eq!(batcher.score(vec![2.0], far).await, Ok(vec![2.0]));
    assert!(started.elapsed() < Duration::from_millis(500), "lone request waited {:?}", started.elapsed());
    let slow = summing_scorer(width, Arc::new(Mutex::new(Vec::new())), Duration::ZERO);
    let batcher_fixed = Batcher::start(width, fixed, vec![slow], BatchMetrics::default()).unwrap();
    let started = Instant::now();
    assert_eq!(batcher_fixed.score(vec![2.0], far).await, Ok(vec![2.0]));
    assert!(started.elapsed() >= Duration::from_millis(900), "the fixed window is the control");

    // While a 200 ms call runs, 10 requests queue; adaptive scores them as one batch next.
    sizes.lock().unwrap().clear();
    let slow = summing_scorer(width, sizes.clone(), Duration::from_millis(200));
    let batcher = Arc::new(Batcher::start(width, adaptive, vec![slow], BatchMetrics::default()).unwrap());
    let first = tokio::spawn({
        let b = batcher.clone();
        async move { b.score(vec![1.0], far).await }
    });
    while sizes.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let queued: Vec<_> = (0..10)
        .map(|i| {
            let b = batcher.clone();
            tokio::spawn(async move { b.score(vec![i as f32], far).await })
        })
        .collect();
    assert_eq!(first.await.unwrap(), Ok(vec![1.0]));
    for (i, task) in queued.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), Ok(vec![i as f32]));
    }
    assert_eq!(*sizes.lock().unwrap(), vec![1, 10], "the ten that queued while busy became one batch");
}
