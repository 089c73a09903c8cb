//! The remote ranker against a real model server: KServe's (pip `kserve`) serving the test
//! bundle's TorchScript model over the Open Inference Protocol (`scripts/oip_server.py`). Its
//! scores equal the in-process model's within 1e-5 in both encodings (JSON and binary tensors);
//! with the server gone the batches are scored in process (`fallback = "local"`) or refused
//! (`"chain"`), and the breaker stops calling it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::time::{Duration, Instant};

use cascade_e2e::{OipServer, bundle_dir};
use cascade_origin::bundle::Bundle;
use cascade_origin::config::RankerConfig;
use cascade_origin::metrics::BatchMetrics;
use cascade_origin::ranking::remote::{RemoteConfig, RemoteFallback, check_reference};
use cascade_origin::ranking::{Ranker, TorchRanker};

fn far() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

fn remote(url: &str, binary: bool, fallback: RemoteFallback) -> RankerConfig {
    let remote = RemoteConfig {
        url: url.to_string(),
        binary,
        fallback,
        timeout_ms: 2_000,
        breaker_failures: 2,
        breaker_cooldown_ms: 60_000,
        ..RemoteConfig::default()
    };
    RankerConfig { max_batch_rows: 4096, queue_capacity: 64, remote, ..RankerConfig::default() }
}

fn calls(metrics: &BatchMetrics, outcome: &str) -> u64 {
    metrics.remote_calls.with_label_values(&[outcome]).get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_scores_equal_the_in_process_models_and_a_lost_server_falls_back() {
    let dir = bundle_dir().unwrap();
    let bundle = Bundle::load(&dir).unwrap();
    let width = bundle.metadata.input_width;
    let mut server = OipServer::start(&dir).await.unwrap();

    // The reference check at load passes against the same model.
    let config = remote(&server.url, true, RemoteFallback::Local);
    let reference = bundle.reference.batch.clone();
    let checked = tokio::task::spawn_blocking(move || check_reference(&config.remote, width, &reference));
    checked.await.unwrap().unwrap_or_else(|e| panic!("{e}\n{}", server.output()));

    let local =
        TorchRanker::start(bundle.model(), tch::Device::Cpu, &RankerConfig::default(), BatchMetrics::new()).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let rows: Vec<f32> = (0..500 * width)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    let expected = local.score(rows.clone(), far()).await.unwrap();
    for binary in [true, false] {
        let metrics = BatchMetrics::new();
        let config = remote(&server.url, binary, RemoteFallback::Local);
        let ranker = TorchRanker::start(bundle.model(), tch::Device::Cpu, &config, metrics.clone()).unwrap();
        assert!(ranker.describe().starts_with("open inference protocol"), "{}", ranker.describe());
        let scores = ranker.score(rows.clone(), far()).await.unwrap();
        let worst = scores.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-5, "binary {binary}: remote and in-process scores differ by {worst}");
        assert_eq!((calls(&metrics, "remote"), calls(&metrics, "failed")), (1, 0), "binary {binary}: scored remotely");
    }

    // The server gone: scored in process (same scores), then the breaker skips the server.
    let metrics = BatchMetrics::new();
    let local_fallback = TorchRanker::start(
        bundle.model(),
        tch::Device::Cpu,
        &remote(&server.url, true, RemoteFallback::Local),
        metrics.clone(),
    )
    .unwrap();
    let chain_metrics = BatchMetrics::new();
    let chain = TorchRanker::start(
        bundle.model(),
        tch::Device::Cpu,
        &remote(&server.url, true, RemoteFallback::Chain),
        chain_metrics.clone(),
    )
    .unwrap();
    server.stop();
    for _ in 0..3 {
        assert_eq!(local_fallback.score(rows.clone(), far()).await.unwrap(), expected, "the in-process model answers");
        assert!(
            chain.score(rows[..width].to_vec(), far()).await.is_err(),
            "chain: refused, the request path falls back"
        );
    }
    assert_eq!((calls(&metrics, "failed"), calls(&metrics, "breaker_open")), (2, 1), "two failures open the breaker");
    assert_eq!((calls(&chain_metrics, "failed"), calls(&chain_metrics, "breaker_open")), (2, 1));
}
