//! The dynamic batcher: rows from concurrent requests merged into one model call.
//!
//! Callers send their rows (a request's candidates) with a deadline into a bounded queue and await
//! their own scores on a oneshot channel. Each inference thread takes the first waiting request,
//! then keeps taking requests until the batch holds `max_batch_rows` rows or `max_wait` has passed
//! since that first request was queued; requests whose deadline has passed are answered
//! [`RankError::DeadlineExceeded`] without inference; the rest are scored in one call and each
//! caller gets exactly its rows' scores, in order.
//!
//! A full queue refuses a new request at once ([`RankError::Overloaded`]): load is shed instead of
//! growing latency without bound, and the request path serves its fallback list. A request larger
//! than `max_batch_rows` is scored alone. A request that would overflow the current batch waits for
//! the next one, so batches never exceed `max_batch_rows` (unless one request alone does).
//!
//! The model is a [`ScoreBackend`] per thread (text-embeddings-inference's queue over a backend
//! trait), so the batching logic is tested without a model; [`super::torch`] plugs the TorchScript
//! model in.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot;

use super::RankError;
use crate::metrics::BatchMetrics;

/// How batches are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most rows in one model call (1 disables cross-request batching for one-row requests).
    pub max_batch_rows: usize,
    /// Longest a batch waits for more requests after its first was queued.
    pub max_wait: Duration,
    /// Requests waiting before new ones are refused.
    pub queue_capacity: usize,
}

/// A model the batcher can call: scores a row-major batch of rows, one score per row. Each
/// inference thread owns one (models are not shared across threads).
pub trait ScoreBackend: Send {
    /// Scores `rows` (a whole number of rows of the batcher's width).
    fn score_batch(&mut self, rows: &[f32]) -> Result<Vec<f32>, RankError>;
}

/// Any closure over a batch is a backend (tests and benchmarks use plain functions).
impl<F> ScoreBackend for F
where
    F: FnMut(&[f32]) -> Result<Vec<f32>, RankError> + Send,
{
    fn score_batch(&mut self, rows: &[f32]) -> Result<Vec<f32>, RankError> {
        self(rows)
    }
}

/// One backend per inference thread.
pub type Scorer = Box<dyn ScoreBackend>;

struct Job {
    rows: Vec<f32>,
    count: usize,
    deadline: Instant,
    queued: Instant,
    reply: oneshot::Sender<Result<Vec<f32>, RankError>>,
}

/// The batcher: a bounded queue and its inference threads.
pub struct Batcher {
    queue: Sender<Job>,
    width: usize,
    metrics: BatchMetrics,
}

impl Batcher {
    /// Starts one inference thread per scorer.
    pub fn start(
        width: usize,
        config: BatchConfig,
        scorers: Vec<Scorer>,
        metrics: BatchMetrics,
    ) -> Result<Self, RankError> {
        if width == 0 || config.max_batch_rows == 0 || config.queue_capacity == 0 || scorers.is_empty() {
            return Err(RankError::BadInput(
                "batcher needs a width, max_batch_rows, queue_capacity and a scorer".into(),
            ));
        }
        let (sender, receiver) = crossbeam_channel::bounded::<Job>(config.queue_capacity);
        for (index, scorer) in scorers.into_iter().enumerate() {
            let (receiver, metrics) = (receiver.clone(), metrics.clone());
            std::thread::Builder::new()
                .name(format!("ranker-{index}"))
                .spawn(move || inference_loop(receiver, scorer, width, config, metrics))
                .map_err(|e| RankError::Model(format!("cannot start inference thread: {e}")))?;
        }
        Ok(Batcher { queue: sender, width, metrics })
    }

    /// Scores `rows` (row-major, `width` columns) unless `deadline` passes first.
    pub async fn score(&self, rows: Vec<f32>, deadline: Instant) -> Result<Vec<f32>, RankError> {
        if !rows.len().is_multiple_of(self.width) {
            return Err(RankError::BadInput(format!(
                "{} floats is not a whole number of {}-wide rows",
                rows.len(),
                self.width
            )));
        }
        let count = rows.len() / self.width;
        if count == 0 {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        let job = Job { rows, count, deadline, queued: Instant::now(), reply };
        match self.queue.try_send(job) {
            Ok(()) => self.metrics.queue_depth.set(self.queue.len() as i64),
            Err(TrySendError::Full(_)) => {
                self.metrics.overloaded.inc();
                return Err(RankError::Overloaded);
            }
            Err(TrySendError::Disconnected(_)) => return Err(RankError::Stopped),
        }
        answer.await.map_err(|_| RankError::Stopped)?
    }

    /// Requests waiting.
    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// Row width.
    pub fn width(&self) -> usize {
        self.width
    }
}

fn inference_loop(
    receiver: Receiver<Job>,
    mut scorer: Scorer,
    width: usize,
    config: BatchConfig,
    metrics: BatchMetrics,
) {
    // A request taken from the queue that did not fit the previous batch starts the next one.
    let mut carried: Option<Job> = None;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match receiver.recv() {
                Ok(job) => job,
                Err(_) => return, // every sender is gone: the batcher was dropped
            },
        };
        let close_at = first.queued + config.max_wait;
        let mut rows = first.count;
        let mut batch = vec![first];
        while rows < config.max_batch_rows {
            let next = match close_at.checked_duration_since(Instant::now()) {
                Some(left) => receiver.recv_timeout(left),
                None => receiver.try_recv().map_err(|_| RecvTimeoutError::Timeout),
            };
            match next {
                Ok(job) if rows + job.count > config.max_batch_rows => {
                    carried = Some(job);
                    break;
                }
                Ok(job) => {
                    rows += job.count;
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        metrics.queue_depth.set(receiver.len() as i64);
        run_batch(batch, &mut scorer, width, &metrics);
    }
}

fn run_batch(batch: Vec<Job>, scorer: &mut Scorer, width: usize, metrics: &BatchMetrics) {
    let now = Instant::now();
    let (live, expired): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|job| job.deadline > now);
    for job in expired {
        metrics.expired.inc();
        let _ = job.reply.send(Err(RankError::DeadlineExceeded));
    }
    if live.is_empty() {
        return;
    }
    let total: usize = live.iter().map(|job| job.count).sum();
    let mut input = Vec::with_capacity(total * width);
    for job in &live {
        metrics.queue_wait_seconds.observe(now.duration_since(job.queued).as_secs_f64());
        input.extend_from_slice(&job.rows);
    }
    metrics.batch_requests.observe(live.len() as f64);
    metrics.batch_rows.observe(total as f64);
    let started = Instant::now();
    let result = scorer.score_batch(&input);
    metrics.inference_seconds.observe(started.elapsed().as_secs_f64());
    match result {
        Ok(scores) if scores.len() == total => {
            let mut offset = 0;
            for job in live {
                let mine = scores[offset..offset + job.count].to_vec();
                offset += job.count;
                // The caller may have given up waiting; that is fine.
                let _ = job.reply.send(Ok(mine));
            }
        }
        Ok(scores) => {
            let error = RankError::Model(format!("model returned {} scores for {total} rows", scores.len()));
            live.into_iter().for_each(|job| drop(job.reply.send(Err(error.clone()))));
        }
        Err(error) => live.into_iter().for_each(|job| drop(job.reply.send(Err(error.clone())))),
    }
}

#[cfg(test)]
mod tests {
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
        BatchConfig { max_batch_rows, max_wait: Duration::from_millis(wait_ms), queue_capacity: capacity }
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
    async fn malformed_input_and_model_errors_reach_the_caller() {
        let failing: Scorer = Box::new(|_rows: &[f32]| Err(RankError::Model("boom".into())));
        let batcher = Batcher::start(2, config(8, 0, 8), vec![failing], BatchMetrics::default()).unwrap();
        let far = Instant::now() + Duration::from_secs(5);
        assert!(matches!(batcher.score(vec![1.0, 2.0, 3.0], far).await, Err(RankError::BadInput(_))));
        assert_eq!(batcher.score(vec![1.0, 2.0], far).await, Err(RankError::Model("boom".into())));
        assert_eq!(batcher.score(Vec::new(), far).await, Ok(Vec::new()));
    }
}
