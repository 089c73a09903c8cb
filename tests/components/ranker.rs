//! The ranker with the real TorchScript model from the test bundle: reference scores, the batcher
//! under random concurrency against scoring alone, and refusal of a corrupt or mismatched model.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_e2e::{TempDir, bundle_dir};
use cascade_origin::bundle::Bundle;
use cascade_origin::config::RankerConfig;
use cascade_origin::metrics::BatchMetrics;
use cascade_origin::ranking::{RankError, Ranker, TorchRanker};

fn config(max_batch_rows: usize) -> RankerConfig {
    RankerConfig { max_batch_rows, queue_capacity: 4096, ..RankerConfig::default() }
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_scores_equal_the_exported_reference_scores() {
    let bundle = Bundle::load(&bundle_dir().unwrap()).unwrap();
    let ranker = TorchRanker::start(bundle.model(), tch::Device::Cpu, &config(64), BatchMetrics::new()).unwrap();
    let rows: Vec<f32> = bundle.reference.batch.inputs.iter().flatten().copied().collect();
    let scores = ranker.score(rows, far()).await.unwrap();
    assert_eq!(scores.len(), bundle.reference.batch.scores.len());
    for (rust, python) in scores.iter().zip(&bundle.reference.batch.scores) {
        assert!((rust - python).abs() < 1e-5, "rust {rust} python {python}");
    }
}

/// Deterministic pseudo-random numbers (xorshift).
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_concurrent_requests_get_the_scores_they_would_get_alone() {
    let bundle = Bundle::load(&bundle_dir().unwrap()).unwrap();
    let width = bundle.metadata.input_width;
    let alone = TorchRanker::start(bundle.model(), tch::Device::Cpu, &config(1 << 20), BatchMetrics::new()).unwrap();
    let batched =
        Arc::new(TorchRanker::start(bundle.model(), tch::Device::Cpu, &config(512), BatchMetrics::new()).unwrap());
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _round in 0..8 {
        let callers = 1 + next(&mut seed) as usize % 24;
        let mut requests = Vec::new();
        for _ in 0..callers {
            let count = 1 + next(&mut seed) as usize % 150;
            let rows: Vec<f32> = (0..count * width).map(|_| (next(&mut seed) % 2001) as f32 / 1000.0 - 1.0).collect();
            let expected = alone.score(rows.clone(), far()).await.unwrap();
            requests.push((rows, expected));
        }
        let tasks: Vec<_> = requests
            .into_iter()
            .map(|(rows, expected)| {
                let batched = batched.clone();
                tokio::spawn(async move {
                    let got = batched.score(rows, far()).await.unwrap();
                    assert_eq!(got.len(), expected.len());
                    for (g, e) in got.iter().zip(&expected) {
                        assert!((g - e).abs() < 1e-5, "{g} vs alone {e}");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    }
}

#[test]
fn a_corrupt_or_mismatched_model_is_refused_with_a_reason() {
    let source = bundle_dir().unwrap();
    let scratch = TempDir::new("cascade-corrupt-model").unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), scratch.path().join(entry.file_name())).unwrap();
    }
    let model = scratch.path().join("model.pt");
    std::fs::write(&model, b"this is not a TorchScript archive").unwrap();
    let bundle = Bundle::load(scratch.path()).unwrap();
    let error =
        TorchRanker::start(bundle.model(), tch::Device::Cpu, &config(64), BatchMetrics::new()).err().expect("refused");
    assert!(matches!(&error, RankError::Model(m) if m.contains("model.pt")), "{error}");

    // Reference scores from another model: the model loads but does not reproduce them.
    std::fs::copy(source.join("model.pt"), &model).unwrap();
    let reference = scratch.path().join("reference.json");
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&reference).unwrap()).unwrap();
    json["batch"]["scores"][0] = serde_json::json!(0.123);
    std::fs::write(&reference, serde_json::to_vec(&json).unwrap()).unwrap();
    let bundle = Bundle::load(scratch.path()).unwrap();
    let error =
        TorchRanker::start(bundle.model(), tch::Device::Cpu, &config(64), BatchMetrics::new()).err().expect("refused");
    assert!(error.to_string().contains("reference.json"), "{error}");
}
