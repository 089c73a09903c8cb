//! The dynamic batcher: rows from concurrent requests merged into one model call.
//!
//! Callers send their rows (a request's candidates) with a deadline into a bounded queue and await
//! their own scores on a oneshot channel. Each inference thread takes the first waiting request,
//! then more, up to `max_batch_rows` rows, by its [`BatchPolicy`]:
//! - [`BatchPolicy::Adaptive`] (the default) takes only what is already queued and runs at once: a
//!   request that finds the model idle is scored without waiting, and what arrives while the model
//!   is busy queues up and becomes the next batch. Batches grow with load, by themselves (what
//!   servers built for interactive inference do; a fixed wait made every lone request pay it).
//! - [`BatchPolicy::Fixed`] keeps taking requests until `max_wait` has passed since the first was
//!   queued (fuller batches at low load, for a model whose per-call cost dominates).
//!
//! Requests whose deadline has passed are answered
//! [`RankError::DeadlineExceeded`] without inference; the rest are scored in one call and each
//! caller gets exactly its rows' scores, in order.
//!
//! A full queue refuses a new request at once ([`RankError::Overloaded`]): load is shed instead of
//! growing latency without bound, and the request path serves its fallback list. A request larger
//! than `max_batch_rows` is scored alone. A request that would overflow the current batch waits for
//! the next one, so batches never exceed `max_batch_rows` (unless one request alone does).
//!
//! A model call that panics (tch panics on some errors, e.g. a CUDA out-of-memory) is caught: its
//! callers get [`RankError::Model`], `cascade_ranker_panics_total` counts it, the thread takes the
//! next batch, and [`Batcher::health`] reports the ranker degraded for [`PANIC_DEGRADED_FOR`].
//!
//! The model is a [`ScoreBackend`] per thread (text-embeddings-inference's queue over a backend
//! trait), so the batching logic is tested without a model; [`super::torch`] plugs the TorchScript
//! model in.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot;

use super::RankError;
use crate::health::HealthState;
use crate::metrics::BatchMetrics;

/// How long the ranker is reported degraded after a model call panicked.
pub const PANIC_DEGRADED_FOR: Duration = Duration::from_secs(30);

/// When a batch closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchPolicy {
    /// At once, with whatever is queued: no wait when the model is idle.
    #[default]
    Adaptive,
    /// When `max_wait` has passed since its first request was queued (or it is full).
    Fixed,
}

/// How batches are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most rows in one model call (1 disables cross-request batching for one-row requests).
    pub max_batch_rows: usize,
    /// Longest a batch waits for more requests after its first was queued ([`BatchPolicy::Fixed`]).
    pub max_wait: Duration,
    /// Requests waiting before new ones are refused.
    pub queue_capacity: usize,
    /// When a batch closes.
    pub policy: BatchPolicy,
}

/// A model the batcher can call: scores a row-major batch of rows, one score per row. Each
/// inference thread owns one (models are not shared across threads).
pub trait ScoreBackend: Send {
    /// Scores `rows` (a whole number of rows of the batcher's width). The rows are lent
    /// exclusively: a backend may hand the buffer to the model as it is (no copy into a tensor),
    /// and the model may overwrite it; the batcher does not read it afterwards.
    fn score_batch(&mut self, rows: &mut [f32]) -> Result<Vec<f32>, RankError>;
}

/// Any closure over a batch is a backend (tests and benchmarks use plain functions).
impl<F> ScoreBackend for F
where
    F: FnMut(&[f32]) -> Result<Vec<f32>, RankError> + Send,
{
    fn score_batch(&mut self, rows: &mut [f32]) -> Result<Vec<f32>, RankError> {
        self(rows)
    }
}

/// One backend per inference thread.
pub type Scorer = Box<dyn ScoreBackend>;

/// When a request waited and when its model call ran, for the caller's trace
/// ([`BATCH_TIMING`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchTiming {
    /// Queued.
    pub queued: Instant,
    /// Its batch started (the end of the queue wait).
    pub batched: Instant,
    /// The model call returned.
    pub scored: Instant,
}

/// Where the batcher leaves a request's [`BatchTiming`].
pub type TimingSlot = std::sync::Arc<std::sync::OnceLock<BatchTiming>>;

tokio::task_local! {
    /// Set around [`Batcher::score`] by a caller that wants its [`BatchTiming`] (the request
    /// path, for `Server-Timing` and traces); unset costs nothing.
    pub static BATCH_TIMING: TimingSlot;
}

struct Job {
    rows: Vec<f32>,
    count: usize,
    deadline: Instant,
    queued: Instant,
    reply: oneshot::Sender<Result<Vec<f32>, RankError>>,
    timing: Option<TimingSlot>,
}

/// What the inference threads report about themselves.
#[derive(Default)]
struct Supervision {
    /// Inference threads running.
    alive: AtomicUsize,
    /// When a model call last panicked.
    last_panic: Mutex<Option<Instant>>,
}

/// Counts a live inference thread for as long as it runs, however it ends.
struct Alive(Arc<Supervision>);

impl Alive {
    fn new(supervision: &Arc<Supervision>) -> Self {
        supervision.alive.fetch_add(1, Ordering::SeqCst);
        Alive(Arc::clone(supervision))
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The batcher: a bounded queue and its inference threads.
pub struct Batcher {
    queue: Sender<Job>,
    width: usize,
    metrics: BatchMetrics,
    supervision: Arc<Supervision>,
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
        let supervision = Arc::new(Supervision::default());
        for (index, scorer) in scorers.into_iter().enumerate() {
            let (receiver, metrics) = (receiver.clone(), metrics.clone());
            let alive = Alive::new(&supervision);
            std::thread::Builder::new()
                .name(format!("ranker-{index}"))
                .spawn(move || inference_loop(receiver, scorer, width, config, metrics, alive))
                .map_err(|e| RankError::Model(format!("cannot start inference thread: {e}")))?;
        }
        Ok(Batcher { queue: sender, width, metrics, supervision })
    }

    /// `Ok`; `Degraded` within [`PANIC_DEGRADED_FOR`] of a caught panic; `Unreachable` when no
    /// inference thread runs.
    pub fn health(&self) -> HealthState {
        if self.supervision.alive.load(Ordering::SeqCst) == 0 {
            return HealthState::Unreachable;
        }
        let last_panic = *self.supervision.last_panic.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match last_panic {
            Some(at) if at.elapsed() < PANIC_DEGRADED_FOR => HealthState::Degraded,
            _ => HealthState::Ok,
        }
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
        let timing = BATCH_TIMING.try_with(TimingSlot::clone).ok();
        let job = Job { rows, count, deadline, queued: Instant::now(), reply, timing };
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
    alive: Alive,
) {
    // A request taken from the queue that did not fit the previous batch starts the next one.
    let mut carried: Option<Job> = None;
    // The merged rows of a batch of several requests, reused from batch to batch.
    let mut merged: Vec<f32> = Vec::new();
    loop {
        let first = match carried.take() {
            Some(job) => job,
            None => match receiver.recv() {
                Ok(job) => job,
                Err(_) => return, // every sender is gone: the batcher was dropped
            },
        };
        let close_at = match config.policy {
            BatchPolicy::Adaptive => Instant::now(),
            BatchPolicy::Fixed => first.queued + config.max_wait,
        };
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
        run_batch(batch, &mut scorer, width, &metrics, &alive.0, &mut merged);
    }
}

/// A panic's message, when it has one.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

fn run_batch(
    batch: Vec<Job>,
    scorer: &mut Scorer,
    width: usize,
    metrics: &BatchMetrics,
    supervision: &Supervision,
    merged: &mut Vec<f32>,
) {
    let now = Instant::now();
    let (mut live, expired): (Vec<Job>, Vec<Job>) = batch.into_iter().partition(|job| job.deadline > now);
    for job in expired {
        metrics.expired.inc();
        let _ = job.reply.send(Err(RankError::DeadlineExceeded));
    }
    if live.is_empty() {
        return;
    }
    let total: usize = live.iter().map(|job| job.count).sum();
    for job in &live {
        metrics.queue_wait_seconds.observe(now.duration_since(job.queued).as_secs_f64());
    }
    metrics.batch_requests.observe(live.len() as f64);
    metrics.batch_rows.observe(total as f64);
    // One request's rows go to the model as they are; several are merged into the reused buffer.
    let input: &mut [f32] = match live.as_mut_slice() {
        [only] => &mut only.rows,
        live => {
            merged.clear();
            merged.reserve(total * width);
            for job in live.iter() {
                merged.extend_from_slice(&job.rows);
            }
            merged
        }
    };
    let started = Instant::now();
    // The backend is foreign code (libtorch through tch): a panic there must cost this batch, not
    // the thread. The backend is reused after a panic; tch's handles hold no Rust invariants.
    let result = catch_unwind(AssertUnwindSafe(|| scorer.score_batch(input))).unwrap_or_else(|payload| {
        metrics.panics.inc();
        *supervision.last_panic.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
        let message = panic_message(payload.as_ref());
        tracing::error!(panic = message, rows = total, "model call panicked; the inference thread goes on");
        Err(RankError::Model("model call panicked".into()))
    });
    let scored = Instant::now();
    metrics.inference_seconds.observe(scored.duration_since(started).as_secs_f64());
    for job in &live {
        if let Some(slot) = &job.timing {
            let _ = slot.set(BatchTiming { queued: job.queued, batched: started, scored });
        }
    }
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
#[path = "batcher_tests.rs"]
mod tests;
