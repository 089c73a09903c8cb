//! [`Ranker`]: scores candidate rows with the bundle's TorchScript model through tch.
//!
//! Inference is blocking, so it runs on dedicated threads fed by a bounded queue; each request's
//! rows go through the model as one batch and the scores come back through a oneshot channel.
//! A full queue refuses at once ([`RankError::Overloaded`]) and a request whose deadline passed
//! while queued is dropped before inference ([`RankError::DeadlineExceeded`]): the request path
//! turns both into its fallback list. (Cross-request batching is the ranking issue's batcher.)
//!
//! Loading checks the model against the bundle: it must accept `input_width` columns and
//! reproduce the training script's reference scores, or it is refused with an error saying which.

use std::path::Path;
use std::time::Instant;

use async_trait::async_trait;
use tch::{CModule, Device, Kind, Tensor};
use tokio::sync::oneshot;

use crate::bundle::ReferenceBatch;
use crate::config::DeviceChoice;

/// Largest difference from the reference scores accepted at load.
pub const REFERENCE_TOLERANCE: f32 = 1e-4;

/// Why rows were not scored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RankError {
    /// The queue is full.
    #[error("ranker queue full")]
    Overloaded,
    /// The deadline passed before inference started.
    #[error("deadline passed before inference")]
    DeadlineExceeded,
    /// The model failed or does not fit the bundle.
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
}

struct Job {
    rows: Vec<f32>,
    deadline: Instant,
    reply: oneshot::Sender<Result<Vec<f32>, RankError>>,
}

/// The TorchScript model on inference threads.
pub struct TorchRanker {
    queue: crossbeam_channel::Sender<Job>,
    input_width: usize,
    device: Device,
}

/// Picks the device: `auto` is CUDA when libtorch sees a GPU.
pub fn pick_device(choice: DeviceChoice) -> Result<Device, RankError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        DeviceChoice::Cuda => Err(RankError::Model("ranker.device = cuda but libtorch sees no CUDA device".into())),
        DeviceChoice::Auto => Ok(Device::cuda_if_available()),
    }
}

fn run_model(module: &CModule, rows: &[f32], width: usize, device: Device) -> Result<Vec<f32>, RankError> {
    let count = rows.len() / width;
    let input = Tensor::from_slice(rows).reshape([count as i64, width as i64]).to_device(device);
    let output = tch::no_grad(|| module.forward_ts(&[input])).map_err(|e| RankError::Model(e.to_string()))?;
    let output = output.to_device(Device::Cpu).to_kind(Kind::Float).reshape([-1]);
    let scores = Vec::<f32>::try_from(&output).map_err(|e| RankError::Model(e.to_string()))?;
    if scores.len() != count {
        return Err(RankError::Model(format!("model returned {} scores for {count} rows", scores.len())));
    }
    Ok(scores)
}

/// Loads the model and checks it against the bundle's width and reference scores.
fn load_checked(path: &Path, device: Device, width: usize, reference: &ReferenceBatch) -> Result<CModule, RankError> {
    let mut module =
        CModule::load_on_device(path, device).map_err(|e| RankError::Model(format!("{}: {e}", path.display())))?;
    module.set_eval();
    run_model(&module, &vec![0.0; width * 2], width, device)
        .map_err(|e| RankError::Model(format!("model does not take input width {width} from metadata.json: {e}")))?;
    let rows: Vec<f32> = reference.inputs.iter().flatten().copied().collect();
    if reference.inputs.iter().any(|row| row.len() != width) {
        return Err(RankError::Model(format!("reference.json rows are not {width} wide")));
    }
    let scores = run_model(&module, &rows, width, device)?;
    let worst = scores.iter().zip(&reference.scores).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    if scores.len() != reference.scores.len() || worst > REFERENCE_TOLERANCE {
        return Err(RankError::Model(format!(
            "scores differ from reference.json by {worst} (tolerance {REFERENCE_TOLERANCE})"
        )));
    }
    Ok(module)
}

impl TorchRanker {
    /// Loads `threads` copies of the model, checks each, and starts the inference threads.
    pub fn start(
        path: &Path,
        device: Device,
        width: usize,
        reference: &ReferenceBatch,
        threads: usize,
        intra_op_threads: usize,
        queue_capacity: usize,
    ) -> Result<Self, RankError> {
        tch::set_num_threads(i32::try_from(intra_op_threads.max(1)).unwrap_or(1));
        let (sender, receiver) = crossbeam_channel::bounded::<Job>(queue_capacity);
        for thread in 0..threads.max(1) {
            let module = load_checked(path, device, width, reference)?;
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("ranker-{thread}"))
                .spawn(move || {
                    while let Ok(job) = receiver.recv() {
                        let result = if Instant::now() >= job.deadline {
                            Err(RankError::DeadlineExceeded)
                        } else {
                            run_model(&module, &job.rows, width, device)
                        };
                        // The caller may have given up; that is fine.
                        let _ = job.reply.send(result);
                    }
                })
                .map_err(|e| RankError::Model(format!("cannot start inference thread: {e}")))?;
        }
        Ok(TorchRanker { queue: sender, input_width: width, device })
    }

    /// Requests waiting for inference.
    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }
}

#[async_trait]
impl Ranker for TorchRanker {
    async fn score(&self, rows: Vec<f32>, deadline: Instant) -> Result<Vec<f32>, RankError> {
        if !rows.len().is_multiple_of(self.input_width) {
            return Err(RankError::Model(format!(
                "{} floats is not a whole number of {}-wide rows",
                rows.len(),
                self.input_width
            )));
        }
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.queue.try_send(Job { rows, deadline, reply }).map_err(|e| match e {
            crossbeam_channel::TrySendError::Full(_) => RankError::Overloaded,
            crossbeam_channel::TrySendError::Disconnected(_) => RankError::Stopped,
        })?;
        answer.await.map_err(|_| RankError::Stopped)?
    }

    fn input_width(&self) -> usize {
        self.input_width
    }

    fn describe(&self) -> String {
        format!("torchscript on {:?} (input width {})", self.device, self.input_width)
    }
}
