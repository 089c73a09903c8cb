//! Ranking: scores for candidate rows, from a model behind a dynamic batcher.
//!
//! | module | owns |
//! |---|---|
//! | [`batcher`] | the dynamic batcher over a [`batcher::ScoreBackend`]: knows nothing of torch |
//! | [`torch`] | the TorchScript backend through tch, checked against the bundle at load |
//! | [`features`] | the model's input rows (pure; the layout the training script defines) |
//! | [`remote`] | a model server over the Open Inference Protocol, with a breaker and a fallback |
//!
//! The request path sees only the [`Ranker`] trait and [`RankError`]; the settings are
//! [`RankerConfig`] (the `[ranker]` table of the config file), with one default per setting.

pub mod batcher;
pub mod features;
pub mod remote;
pub mod torch;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;

pub use torch::{TorchRanker, pick_device};

/// Why rows were not scored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RankError {
    /// The queue is full: load is shed (the request path falls back).
    #[error("ranker queue full")]
    Overloaded,
    /// The deadline passed before inference started.
    #[error("deadline passed before inference")]
    DeadlineExceeded,
    /// The input does not fit the model (a bug on our side).
    #[error("bad input: {0}")]
    BadInput(String),
    /// The model failed, or does not fit the bundle.
    #[error("model: {0}")]
    Model(String),
    /// The inference threads are gone.
    #[error("ranker stopped")]
    Stopped,
}

/// Scores candidate rows.
#[async_trait]
pub trait Ranker: Send + Sync {
    /// Scores `rows` (row-major, `input_width` columns), one score per row, unless `deadline`
    /// passes first.
    async fn score(&self, rows: Vec<f32>, deadline: Instant) -> Result<Vec<f32>, RankError>;
    /// The input width.
    fn input_width(&self) -> usize;
    /// One line for logs.
    fn describe(&self) -> String;
    /// What `/readyz` says of the ranker.
    fn health(&self) -> crate::health::HealthState {
        crate::health::HealthState::Ok
    }
}

/// A model file and what it must reproduce at load (from a bundle's `metadata.json` and
/// `reference.json`): ranking knows models, not bundles.
#[derive(Debug, Clone)]
pub struct ModelSpec<'a> {
    /// The TorchScript file.
    pub path: std::path::PathBuf,
    /// Columns per input row.
    pub input_width: usize,
    /// Rows and the scores the training script computed for them.
    pub reference: &'a ReferenceBatch,
}

/// Input rows and the scores the training script computed for them (`reference.json`).
#[derive(Debug, Clone, Deserialize)]
pub struct ReferenceBatch {
    /// Rows of `input_width` floats.
    pub inputs: Vec<Vec<f32>>,
    /// One score per row.
    pub scores: Vec<f32>,
}

/// Where the ranking model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when available, else CPU.
    Auto,
    /// CPU.
    Cpu,
    /// CUDA device 0 (refused at start if absent).
    Cuda,
}

/// Ranker settings (`[ranker]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RankerConfig {
    /// `auto`, `cpu` or `cuda`.
    pub device: DeviceChoice,
    /// Requests waiting for inference before new ones are refused (and fall back).
    pub queue_capacity: usize,
    /// Most rows merged into one model call.
    pub max_batch_rows: usize,
    /// Longest a batch waits for more requests after its first, milliseconds (`fixed` policy).
    pub max_wait_ms: f64,
    /// `adaptive` (run at once with what is queued) or `fixed` (wait `max_wait_ms`).
    pub batch_policy: batcher::BatchPolicy,
    /// Inference threads.
    pub threads: usize,
    /// libtorch intra-op threads per inference thread.
    pub intra_op_threads: usize,
    /// `[ranker.remote]`: score on a model server instead (off while its `url` is empty).
    pub remote: remote::RemoteConfig,
}

impl Default for RankerConfig {
    fn default() -> Self {
        RankerConfig {
            device: DeviceChoice::Auto,
            queue_capacity: 256,
            max_batch_rows: 1024,
            max_wait_ms: 5.0,
            batch_policy: batcher::BatchPolicy::Adaptive,
            threads: 1,
            intra_op_threads: 1,
            remote: remote::RemoteConfig::default(),
        }
    }
}

impl RankerConfig {
    /// The batcher's part of these settings.
    pub fn batch_config(&self) -> batcher::BatchConfig {
        batcher::BatchConfig {
            max_batch_rows: self.max_batch_rows,
            max_wait: Duration::from_secs_f64(self.max_wait_ms / 1000.0),
            queue_capacity: self.queue_capacity,
            policy: self.batch_policy,
        }
    }
}
