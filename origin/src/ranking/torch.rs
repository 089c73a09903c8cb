//! [`TorchRanker`]: the bundle's TorchScript model through tch, as a [`ScoreBackend`] per
//! inference thread behind the dynamic batcher.
//!
//! Inference is blocking, so it runs on dedicated threads behind the dynamic batcher
//! ([`super::batcher`]): rows of concurrent requests are merged into one model call. A full queue
//! refuses at once ([`RankError::Overloaded`]) and a request whose deadline passed while queued is
//! dropped before inference ([`RankError::DeadlineExceeded`]): the request path turns both into
//! its fallback list.
//!
//! Loading checks the model against the bundle: it must accept `input_width` columns and
//! reproduce the training script's reference scores, or it is refused with an error saying which.

use std::path::Path;
use std::time::Instant;

use async_trait::async_trait;
use tch::{CModule, Device, Kind, Tensor};

use super::batcher::{Batcher, ScoreBackend, Scorer};
use super::{DeviceChoice, ModelSpec, RankError, Ranker, RankerConfig, ReferenceBatch};
use crate::metrics::BatchMetrics;

/// Largest difference from the reference scores accepted at load.
pub const REFERENCE_TOLERANCE: f32 = 1e-5;

/// The TorchScript model on inference threads, behind the dynamic batcher.
pub struct TorchRanker {
    batcher: Batcher,
    device: Device,
    /// The model server's URL, when the batches go there first (`[ranker.remote]`).
    remote: Option<String>,
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

/// One model call. The fallible `f_*` tensor operations: their panicking twins would end the call
/// in a panic on a CUDA error (the batcher catches that too, but an error is cheaper and clearer).
///
/// The input tensor is a view of `rows`, not a copy of them ([`Tensor::f_from_blob`]): on CPU the
/// model reads the batcher's buffer directly, on CUDA it is copied once, to the device. A scratch
/// probe (not kept) of 1024-row passes, `from_slice` (the copy) against the view alternating over
/// 12 rounds in one process, measured the view at 1.05-1.07x the rows/s.
fn run_model(module: &CModule, rows: &mut [f32], width: usize, device: Device) -> Result<Vec<f32>, RankError> {
    let model_error = |e: tch::TchError| RankError::Model(e.to_string());
    if width == 0 || !rows.len().is_multiple_of(width) {
        return Err(RankError::Model(format!("{} values are not whole rows of {width}", rows.len())));
    }
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let count = rows.len() / width;
    let (shape, strides) = ([count as i64, width as i64], [width as i64, 1]);
    // SAFETY: the view covers exactly `rows` (count × width contiguous, aligned f32s, row-major
    // strides) and is used only while `rows` is exclusively borrowed by this call: the view and
    // every tensor that may alias it (the output of a model that returns its input or a view of
    // it) are dropped before this function returns, and the scores are copied out first. A model
    // that writes its input in place writes into `rows`, which the exclusive borrow permits.
    #[allow(unsafe_code)]
    let view =
        unsafe { Tensor::f_from_blob(rows.as_mut_ptr().cast::<u8>(), &shape, &strides, Kind::Float, Device::Cpu) }
            .map_err(model_error)?;
    let input = view.f_to_device(device).map_err(model_error)?;
    let output = tch::no_grad(|| module.forward_ts(&[input])).map_err(model_error)?;
    let output = output
        .f_to_device(Device::Cpu)
        .and_then(|t| t.f_to_kind(Kind::Float))
        .and_then(|t| t.f_reshape([-1]))
        .map_err(model_error)?;
    let scores = Vec::<f32>::try_from(&output).map_err(model_error)?;
    drop((output, view));
    if scores.len() != count {
        return Err(RankError::Model(format!("model returned {} scores for {count} rows", scores.len())));
    }
    Ok(scores)
}

/// One inference thread's copy of the model.
struct TorchBackend {
    module: CModule,
    width: usize,
    device: Device,
}

impl ScoreBackend for TorchBackend {
    fn score_batch(&mut self, rows: &mut [f32]) -> Result<Vec<f32>, RankError> {
        run_model(&self.module, rows, self.width, self.device)
    }
}

/// Loads the model and checks it against the bundle's width and reference scores.
fn load_checked(path: &Path, device: Device, width: usize, reference: &ReferenceBatch) -> Result<CModule, RankError> {
    let mut module =
        CModule::load_on_device(path, device).map_err(|e| RankError::Model(format!("{}: {e}", path.display())))?;
    module.set_eval();
    run_model(&module, &mut vec![0.0; width * 2], width, device)
        .map_err(|e| RankError::Model(format!("model does not take input width {width} from metadata.json: {e}")))?;
    let mut rows: Vec<f32> = reference.inputs.iter().flatten().copied().collect();
    if reference.inputs.iter().any(|row| row.len() != width) {
        return Err(RankError::Model(format!("reference.json rows are not {width} wide")));
    }
    let scores = run_model(&module, &mut rows, width, device)?;
    let worst = scores.iter().zip(&reference.scores).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    if scores.len() != reference.scores.len() || worst > REFERENCE_TOLERANCE {
        return Err(RankError::Model(format!(
            "scores differ from reference.json by {worst} (tolerance {REFERENCE_TOLERANCE})"
        )));
    }
    Ok(module)
}

impl TorchRanker {
    /// Loads one checked copy of the bundle's model per inference thread (`config.threads`) and
    /// starts the batcher.
    pub fn start(
        model: ModelSpec<'_>,
        device: Device,
        config: &RankerConfig,
        metrics: BatchMetrics,
    ) -> Result<Self, RankError> {
        Self::start_wrapped(model, device, config, metrics, |scorer| scorer)
    }

    /// [`TorchRanker::start`], each inference thread's backend passed through `wrap` (fault
    /// injection wraps it). With `config.remote` on, each batch goes to the model server first,
    /// this model scoring what it does not ([`super::remote`]).
    pub fn start_wrapped(
        model: ModelSpec<'_>,
        device: Device,
        config: &RankerConfig,
        metrics: BatchMetrics,
        wrap: impl Fn(Scorer) -> Scorer,
    ) -> Result<Self, RankError> {
        let (path, width, reference) = (model.path, model.input_width, model.reference);
        tch::set_num_threads(i32::try_from(config.intra_op_threads.max(1)).unwrap_or(1));
        let mut scorers: Vec<Scorer> = Vec::new();
        for _ in 0..config.threads.max(1) {
            let module = load_checked(&path, device, width, reference)?;
            let local = wrap(Box::new(TorchBackend { module, width, device }));
            scorers.push(match config.remote.is_on() {
                true => super::remote::wrap(&config.remote, width, local, metrics.remote_calls.clone()),
                false => local,
            });
        }
        let remote = config.remote.is_on().then(|| {
            let fallback = match config.remote.fallback {
                super::remote::RemoteFallback::Local => "falling back to",
                super::remote::RemoteFallback::Chain => "the fallback lists when it fails; loaded:",
            };
            format!("open inference protocol at {} model {}, {fallback}", config.remote.url, config.remote.model)
        });
        Ok(TorchRanker { batcher: Batcher::start(width, config.batch_config(), scorers, metrics)?, device, remote })
    }

    /// Requests waiting for inference.
    pub fn queue_depth(&self) -> usize {
        self.batcher.queue_depth()
    }
}

#[async_trait]
impl Ranker for TorchRanker {
    async fn score(&self, rows: Vec<f32>, deadline: Instant) -> Result<Vec<f32>, RankError> {
        self.batcher.score(rows, deadline).await
    }

    fn input_width(&self) -> usize {
        self.batcher.width()
    }

    fn describe(&self) -> String {
        let local =
            format!("torchscript on {:?} (input width {}, dynamic batching)", self.device, self.batcher.width());
        match &self.remote {
            Some(remote) => format!("{remote} {local}"),
            None => local,
        }
    }

    fn health(&self) -> crate::health::HealthState {
        self.batcher.health()
    }
}
