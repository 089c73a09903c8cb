//! `cascade serve`: load the bundle, wire the components, listen.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cascade_shared::config as env_names;

use faiss::Index;

use crate::auth::Auth;
use crate::bundle::{Bundle, read_embeddings};
use crate::cache::{RedisUserState, UserCaches};
use crate::config::{Config, Mode};
use crate::http::{AppState, router};
use crate::metrics::Metrics;
use crate::ranker::{TorchRanker, pick_device};
use crate::recommend::{Components, Recommender};
use crate::retrieval::{FaissRetriever, build_index};
use crate::serving::Serving;
use crate::store::EmbeddingStore;
use crate::store::memory::MemoryStore;
use crate::store::precomputed::{NoPrecomputed, PrecomputedLists, RedisPrecomputed};
use crate::store::redis_cluster::RedisClusterStore;
use crate::store::redis_shards::RedisShardStore;
use crate::store::shards::ShardSet;

/// The secret to verify edge signatures with: the configured one, or in development a random one.
fn secret(config: &Config) -> String {
    match (&config.secret, config.mode) {
        (Some(secret), _) => secret.clone(),
        (None, _) => {
            // `Config::validate` refuses production without a secret, so this is development.
            tracing::warn!(
                "no {} set: development mode generated a random one; edge calls will fail until both sides share one",
                env_names::SECRET
            );
            format!("{:032x}", rand::random::<u128>())
        }
    }
}

/// Builds everything `serve` runs: the recommender for the configured bundle and the HTTP state.
pub async fn build_state(config: &Config) -> anyhow::Result<AppState> {
    let metrics = Arc::new(Metrics::new());
    let recommender = build_recommender(config, &config.bundle, Arc::clone(&metrics)).await?;
    let serving = Serving::new(recommender, config.clone(), Arc::clone(&metrics));
    let auth = Auth::new(&secret(config), &config.api_keys, config.signature_window_secs);
    let settings = config.cache.settings();
    let caches = if config.redis.shards.is_empty() {
        UserCaches::in_process(&settings, metrics.cache_lookups.clone())
    } else {
        let shards = ShardSet::new(&config.redis.shards, Duration::from_millis(config.redis.timeout_ms))?;
        UserCaches::new(&settings, Arc::new(RedisUserState::new(shards)), true, metrics.cache_lookups.clone())
    };
    Ok(AppState::new(Arc::new(serving), Arc::new(caches), Arc::new(auth), metrics, config.serving.max_in_flight))
}

/// Loads a bundle and everything built from it: store, FAISS index, ranker (checked against the
/// bundle's reference scores), recommender. Used at start and by every reload.
pub async fn build_recommender(
    config: &Config,
    bundle_dir: &Path,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Recommender> {
    let bundle_dir = bundle_dir.to_path_buf();
    let bundle = tokio::task::spawn_blocking(move || Bundle::load(&bundle_dir)).await??;
    let bundle = Arc::new(bundle);
    tracing::info!(bundle = bundle.id(), items = bundle.items.ids.len(), dim = bundle.metadata.dim, "bundle loaded");

    let store: Arc<dyn EmbeddingStore> = if !config.redis.cluster.is_empty() {
        let timeout = Duration::from_millis(config.redis.timeout_ms);
        let cluster = &config.redis.cluster;
        Arc::new(RedisClusterStore::connect(cluster, bundle.id(), bundle.metadata.dim, timeout).await?)
    } else if config.redis.shards.is_empty() {
        let users = read_embeddings(&bundle.users_path(), bundle.id(), bundle.metadata.dim)?;
        tracing::info!(users = users.ids.len(), "in-process embedding store");
        Arc::new(MemoryStore::with_users(&users))
    } else {
        let timeout = Duration::from_millis(config.redis.timeout_ms);
        Arc::new(RedisShardStore::new(&config.redis.shards, bundle.id(), bundle.metadata.dim, timeout)?)
    };

    let index_path = bundle.index_path();
    let (factory, nprobe, parallelism) =
        (config.retrieval.factory.clone(), config.retrieval.nprobe, config.retrieval.parallelism);
    let index_bundle = Arc::clone(&bundle);
    let retriever = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let (index, how) = if index_path.exists() {
            (FaissRetriever::read(&index_path)?, format!("from {}", index_path.display()))
        } else {
            (
                build_index(&factory, index_bundle.metadata.dim, &index_bundle.items.values)?,
                format!("built at start ({factory})"),
            )
        };
        if index.ntotal() as usize != index_bundle.items.ids.len() {
            anyhow::bail!(
                "{} holds {} vectors, the bundle {} items",
                index_path.display(),
                index.ntotal(),
                index_bundle.items.ids.len()
            );
        }
        tracing::info!(ms = started.elapsed().as_millis() as u64, how = %how, "faiss index ready");
        Ok(FaissRetriever::new(index, parallelism, nprobe, &how)?)
    })
    .await??;

    let device = pick_device(config.ranker.device)?;
    let ranker = TorchRanker::start(&bundle, device, &config.ranker, metrics.batcher.clone())
        .with_context(|| format!("loading {}", bundle.model_path().display()))?;

    let precomputed: Arc<dyn PrecomputedLists> = if config.redis.shards.is_empty() {
        Arc::new(NoPrecomputed)
    } else {
        let shards = ShardSet::new(&config.redis.shards, Duration::from_millis(config.redis.timeout_ms))?;
        Arc::new(RedisPrecomputed::new(shards, bundle.id()))
    };
    let components = Components { store, retriever: Arc::new(retriever), ranker: Arc::new(ranker), precomputed };
    let recommender = Recommender::new(
        bundle,
        components,
        Arc::clone(&metrics),
        config.retrieval.candidates,
        Duration::from_millis(config.serving.deadline_ms),
    )
    .await;
    for (component, description) in recommender.describe() {
        tracing::info!(component, "{description}");
    }
    Ok(recommender)
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    if config.mode == Mode::Development {
        tracing::info!("development mode");
    }
    let state = build_state(&config).await?;
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(address = %listener.local_addr()?, "cascade origin listening");
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
