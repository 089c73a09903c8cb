//! [`RecommenderFactory`]: loads a bundle and everything built from it (embedding store, FAISS
//! index, ranker checked against the bundle's reference scores, precomputed lists), then the
//! [`Recommender`]. `serve` builds its first recommender here, every reload builds the next one
//! here, and `precompute` ranks with one built here, so all three honour the same configuration.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use faiss::Index;

use crate::brownout::Brownout;
use crate::bundle::{Bundle, BundleError, read_embeddings};
use crate::catalogue::Catalogue;
use crate::config::Config;
use crate::faults::Faults;
use crate::feature_log::FeatureLog;
use crate::metrics::Metrics;
use crate::ranking::{RankError, TorchRanker, pick_device, remote};
use crate::recommend::list_rules::ListRules;
use crate::recommend::precomputed::{NoPrecomputed, PrecomputedLists, RedisPrecomputed};
use crate::recommend::{Components, Recommender};
use crate::redis::tls::RedisTls;
use crate::redis::{ShardError, ShardSet};
use crate::retrieval::{FaissRetriever, RetrieveError, build_index};
use crate::store::memory::MemoryStore;
use crate::store::redis_cluster::RedisClusterStore;
use crate::store::redis_shards::RedisShardStore;
use crate::store::{EmbeddingStore, StoreError};
use crate::work_queue::WorkQueue;

/// Why a recommender could not be built. [`BuildError::is_dependency_down`] separates a bundle
/// that is wrong (refuse it: 422 on reload) from a dependency that is down (retry later: 503).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The bundle's files are missing, malformed or do not belong together.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The FAISS index cannot be read or built, or does not match the bundle.
    #[error("index: {0}")]
    Index(#[from] RetrieveError),
    /// The model cannot be loaded or does not reproduce the bundle's reference scores.
    #[error("ranker: {0}")]
    Model(#[from] RankError),
    /// A store the recommender needs did not answer.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A shard URL cannot be used.
    #[error("redis: {0}")]
    Shards(#[from] ShardError),
    /// A build task panicked or was cancelled (a bug).
    #[error("build task failed: {0}")]
    Task(String),
    /// Another reload is in progress.
    #[error("another bundle is being loaded; retry when it is done")]
    Busy,
    /// The catalogue's file cannot be read.
    #[error(transparent)]
    Catalogue(#[from] crate::catalogue::CatalogueError),
    /// The feature log's folder cannot be created.
    #[error("feature log: {0}")]
    FeatureLog(String),
    /// A Redis TLS file cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::redis::tls::TlsError),
}

impl BuildError {
    /// Whether a dependency was down (retrying later may succeed) rather than the bundle wrong.
    pub fn is_dependency_down(&self) -> bool {
        matches!(self, BuildError::Store(StoreError::Unavailable { .. }))
    }
}

fn task_error(error: tokio::task::JoinError) -> BuildError {
    BuildError::Task(error.to_string())
}

/// Builds recommenders from bundle folders with one configuration.
pub struct RecommenderFactory {
    config: Config,
    metrics: Arc<Metrics>,
    shards: Option<Arc<ShardSet>>,
    faults: Option<Arc<Faults>>,
    brownout: Arc<Brownout>,
    feature_log: Arc<FeatureLog>,
    rules: Arc<ListRules>,
    catalogue: Arc<Catalogue>,
    redis_tls: RedisTls,
}

impl RecommenderFactory {
    /// A factory over `config`, registering into `metrics`, sharing `shards`.
    pub fn new(config: Config, metrics: Arc<Metrics>, shards: Option<Arc<ShardSet>>) -> Self {
        let faults = config.serving.fault_injection.then(|| Arc::new(Faults::default()));
        let brownout = Brownout::new(Duration::from_millis(config.serving.brownout_lag_ms));
        let feature_log = Arc::new(FeatureLog::off());
        let rules = Arc::new(ListRules::new(&config.rules, Some(metrics.rule_removals.clone())));
        let catalogue = Arc::new(Catalogue::default());
        let redis_tls = RedisTls::default();
        RecommenderFactory { config, metrics, shards, faults, brownout, feature_log, rules, catalogue, redis_tls }
    }

    /// Connects to `rediss://` servers with `tls` (the CA and client certificate of `[redis.tls]`).
    pub fn with_redis_tls(self, redis_tls: RedisTls) -> Self {
        RecommenderFactory { redis_tls, ..self }
    }

    /// The same factory, whose recommenders sample query vectors for `feature_log`.
    pub fn with_feature_log(self, feature_log: Arc<FeatureLog>) -> Self {
        RecommenderFactory { feature_log, ..self }
    }

    /// The same factory, whose recommenders withhold what `catalogue` hides, deletes or expires.
    pub fn with_catalogue(self, catalogue: Arc<Catalogue>) -> Self {
        let rules = ListRules::new(&self.config.rules, Some(self.metrics.rule_removals.clone()))
            .with_catalogue(Arc::clone(&catalogue));
        RecommenderFactory { rules: Arc::new(rules), catalogue, ..self }
    }

    /// The business rules every recommender built here shares.
    pub fn rules(&self) -> &Arc<ListRules> {
        &self.rules
    }

    /// The catalogue's live state.
    pub fn catalogue(&self) -> &Arc<Catalogue> {
        &self.catalogue
    }

    /// Where served lists and events are logged.
    pub fn feature_log(&self) -> &Arc<FeatureLog> {
        &self.feature_log
    }

    /// The brownout switch every recommender built here obeys (`serve` runs its probe).
    pub fn brownout(&self) -> &Arc<Brownout> {
        &self.brownout
    }

    /// The injected faults every recommender built here obeys, when fault injection is on.
    pub fn faults(&self) -> Option<&Arc<Faults>> {
        self.faults.as_ref()
    }

    /// Loads the bundle in `bundle_dir` and builds its recommender.
    pub async fn build(&self, bundle_dir: &Path) -> Result<Recommender, BuildError> {
        let dir = bundle_dir.to_path_buf();
        let bundle = Arc::new(tokio::task::spawn_blocking(move || Bundle::load(&dir)).await.map_err(task_error)??);
        tracing::info!(
            bundle = bundle.id(),
            items = bundle.items.ids.len(),
            dim = bundle.metadata.dim,
            "bundle loaded"
        );
        let store = self.store(&bundle).await?;
        let retriever = self.retriever(Arc::clone(&bundle)).await?;
        let device = pick_device(self.config.ranker.device)?;
        let faults = self.faults.clone();
        let remote = self.config.ranker.remote.clone();
        if remote.is_on() {
            let (width, model) = (bundle.metadata.input_width, Arc::clone(&bundle));
            tokio::task::spawn_blocking(move || remote::check_reference(&remote, width, model.model().reference))
                .await
                .map_err(task_error)??;
        }
        let wrap = |scorer| match &faults {
            Some(faults) => faults.wrap(scorer),
            None => scorer,
        };
        let ranker = TorchRanker::start_wrapped(
            bundle.model(),
            device,
            &self.config.ranker,
            self.metrics.batcher.clone(),
            wrap,
        )?;
        let precomputed: Arc<dyn PrecomputedLists> = match &self.shards {
            Some(shards) => Arc::new(RedisPrecomputed::new(Arc::clone(shards), bundle.id())),
            None => Arc::new(NoPrecomputed),
        };
        let retrieval = &self.config.retrieval;
        let searches = WorkQueue::start(
            "faiss",
            retrieval.parallelism,
            retrieval.queue_capacity,
            self.metrics.work_queues.clone(),
        )
        .map_err(|e| BuildError::Task(format!("cannot start search threads: {e}")))?;
        let components = Components {
            store,
            retriever: Arc::new(retriever),
            searches: Arc::new(searches),
            ranker: Arc::new(ranker),
            precomputed,
            faults: self.faults.clone(),
            brownout: Arc::clone(&self.brownout),
            feature_log: Arc::clone(&self.feature_log),
            rules: Arc::clone(&self.rules),
        };
        let recommender = Recommender::new(
            bundle,
            components,
            Arc::clone(&self.metrics),
            self.config.retrieval.candidates,
            Duration::from_millis(self.config.serving.deadline_ms),
        )
        .await
        .with_fresh_candidates(self.config.catalogue.fresh_candidates);
        for (component, description) in recommender.describe() {
            tracing::info!(component, "{description}");
        }
        Ok(recommender)
    }

    /// User embeddings: the cluster, else the shards, else in process from the bundle.
    async fn store(&self, bundle: &Bundle) -> Result<Arc<dyn EmbeddingStore>, BuildError> {
        let (id, dim) = (bundle.id(), bundle.metadata.dim);
        if !self.config.redis.cluster.is_empty() {
            let (nodes, timeout) = (&self.config.redis.cluster, self.config.redis.timeout());
            let store = RedisClusterStore::connect(nodes, id, dim, timeout, &self.redis_tls);
            return Ok(Arc::new(store.await?));
        }
        if let Some(shards) = &self.shards {
            return Ok(Arc::new(RedisShardStore::new(Arc::clone(shards), id, dim)));
        }
        let users = read_embeddings(&bundle.users_path(), id, dim)?;
        tracing::info!(users = users.ids.len(), "in-process embedding store");
        Ok(Arc::new(MemoryStore::with_users(&users)))
    }

    /// The FAISS index: the bundle's `items.faiss`, else built at start.
    async fn retriever(&self, bundle: Arc<Bundle>) -> Result<FaissRetriever, BuildError> {
        let retrieval = self.config.retrieval.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let index_path = bundle.index_path();
            let (index, how) = if index_path.exists() {
                (FaissRetriever::read(&index_path)?, format!("from {}", index_path.display()))
            } else {
                let factory = &retrieval.factory;
                (
                    build_index(factory, bundle.metadata.dim, &bundle.items.values)?,
                    format!("built at start ({factory})"),
                )
            };
            if index.ntotal() as usize != bundle.items.ids.len() {
                return Err(BuildError::Bundle(BundleError::Mismatch(format!(
                    "{} holds {} vectors, the bundle {} items",
                    index_path.display(),
                    index.ntotal(),
                    bundle.items.ids.len()
                ))));
            }
            tracing::info!(ms = started.elapsed().as_millis() as u64, how = %how, "faiss index ready");
            Ok(FaissRetriever::new(index, retrieval.parallelism, retrieval.nprobe, &how)?)
        })
        .await
        .map_err(task_error)?
    }
}
