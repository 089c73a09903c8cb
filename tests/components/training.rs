//! The training script, run as part of the suite on a small generated dataset: it must beat the
//! popularity baseline, and the bundle it writes (here at 128 dimensions, the scale tiers' width)
//! must load in Rust and reproduce Python's reference scores.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::process::Command;

use cascade_e2e::{TempDir, repo_root};
use cascade_origin::bundle::Bundle;
use cascade_origin::config::RankerConfig;
use cascade_origin::metrics::BatchMetrics;
use cascade_origin::ranking::TorchRanker;

#[test]
fn training_beats_popularity_and_exports_a_bundle_rust_loads() {
    let out = TempDir::new("cascade-train").unwrap();
    let python = std::env::var("CASCADE_PYTHON").unwrap_or_else(|_| "python".into());
    let status = Command::new(&python)
        .arg(repo_root().join("scripts/train.py"))
        .args(["--out"])
        .arg(out.path())
        .args(["--users", "300", "--items", "200", "--epochs", "15", "--ranker-epochs", "3", "--dim", "128"])
        .status()
        .unwrap_or_else(|e| panic!("cannot run {python} (the venv's python; scripts/test.sh puts it on PATH): {e}"));
    assert!(status.success());

    let bundle = Bundle::load(out.path()).unwrap();
    assert_eq!(bundle.metadata.dim, 128);
    assert_eq!(bundle.metadata.input_width, 3 * 128 + 7);
    let metrics = &bundle.metadata.metrics;
    let (model, popularity) = (metrics["hr@10"].as_f64().unwrap(), metrics["popularity_hr@10"].as_f64().unwrap());
    assert!(model > popularity, "HR@10 {model} does not beat popularity {popularity}");
    assert!(metrics["ndcg@10"].as_f64().unwrap() > metrics["popularity_ndcg@10"].as_f64().unwrap());

    // Loading runs the reference batch through the model and refuses a difference over 1e-5.
    TorchRanker::start(bundle.model(), tch::Device::Cpu, &RankerConfig::default(), BatchMetrics::new()).unwrap();
}
