//! The composition root: the one place that turns a [`Config`] into running components.
//!
//! | module | owns |
//! |---|---|
//! | this file | [`App`]: metrics, the one [`ShardSet`], caches and credentials, built once per process |
//! | [`factory`] | [`RecommenderFactory`]: a bundle folder → a checked [`Recommender`]; used by `serve`, reloads and `precompute` |
//! | [`serving`] | [`Serving`]: the recommender being served, swapped atomically on reload |
//!
//! Every Redis-backed component (embedding store, user state and L2, precomputed lists) shares the
//! one shard set built here, so a process holds one connection (plus a small pool of lean `MGET`
//! connections) per shard however many components use it.

pub mod factory;
pub mod serving;

use std::sync::Arc;

use cascade_shared::config as env_names;

pub mod variants;

pub use factory::{BuildError, RecommenderFactory};
pub use serving::{Serving, Swapped};

use crate::auth::Auth;
use crate::cache::{RedisUserState, UserCaches};
use crate::config::Config;
use crate::feature_log::FeatureLog;
use crate::metrics::Metrics;
use crate::recommend::Recommender;
use crate::redis::ShardSet;

/// Everything a process builds from its configuration, once.
pub struct App {
    /// The configuration it was built from.
    pub config: Config,
    /// Every metric, registered once.
    pub metrics: Arc<Metrics>,
    /// The Redis shards, when configured: shared by every Redis-backed component.
    pub shards: Option<Arc<ShardSet>>,
    /// Builds recommenders (at start, on reload, for precompute).
    pub factory: Arc<RecommenderFactory>,
}

impl App {
    /// Builds the process-wide parts. Connections are opened lazily, so a shard that is down now
    /// does not stop the start.
    pub fn new(config: Config) -> Result<Self, BuildError> {
        let metrics = Arc::new(Metrics::new());
        let tls = crate::redis::tls::RedisTls::load(&config.redis.tls)?;
        // User state, L2, precomputed lists and the catalogue: on the shards, else in the cluster
        // (beside the embeddings), else in process.
        let shards = match (config.redis.shards.as_slice(), config.redis.cluster.as_slice()) {
            ([], []) => None,
            ([], seeds) => Some(Arc::new(ShardSet::cluster(seeds, config.redis.timeout(), &tls)?)),
            (urls, _) => {
                let shards = ShardSet::with_tls(urls, config.redis.timeout(), &tls)?;
                Some(Arc::new(match config.redis.previous_shards.as_slice() {
                    [] => shards,
                    previous => shards.moving_from(ShardSet::with_tls(previous, config.redis.timeout(), &tls)?)?,
                }))
            }
        };
        let feature_log = FeatureLog::start(&config.feature_log, metrics.feature_log.clone())
            .map_err(|e| BuildError::FeatureLog(e.to_string()))?;
        let catalogue = crate::catalogue::Catalogue::open(&config.catalogue)?;
        // Without a file, and with Redis shards, the catalogue is shared through Redis.
        let catalogue = match (&config.catalogue.file, &shards) {
            (None, Some(shards)) => {
                let store = Arc::new(crate::catalogue::redis_store::RedisCatalogueStore::new(Arc::clone(shards)));
                crate::catalogue::Catalogue::shared(&config.catalogue, store)
            }
            _ => catalogue,
        };
        let factory = RecommenderFactory::new(config.clone(), Arc::clone(&metrics), shards.clone())
            .with_feature_log(Arc::new(feature_log))
            .with_catalogue(Arc::new(catalogue))
            .with_redis_tls(tls);
        Ok(App { config, metrics, shards, factory: Arc::new(factory) })
    }

    /// The recommender for the configured bundle.
    pub async fn recommender(&self) -> Result<Recommender, BuildError> {
        self.factory.build(&self.config.bundle).await
    }

    /// The configured bundle, served and reloadable.
    pub async fn serving(&self) -> Result<Serving, BuildError> {
        Ok(Serving::new(self.recommender().await?, Arc::clone(&self.factory)))
    }

    /// The A/B variants over `control` (the configured bundle, already serving): each
    /// `[[variants]]` entry without a bundle of its own shares `control`, the others get theirs.
    pub async fn variants(&self, control: Arc<Serving>) -> Result<variants::Variants, BuildError> {
        if self.config.variants.is_empty() {
            return Ok(variants::Variants::single(control));
        }
        let mut arms = Vec::new();
        for variant in &self.config.variants {
            let serving = match &variant.bundle {
                Some(bundle) if *bundle != self.config.bundle => {
                    Arc::new(Serving::new(self.factory.build(bundle).await?, Arc::clone(&self.factory)))
                }
                _ => Arc::clone(&control),
            };
            arms.push(variants::Arm { name: variant.name.clone(), weight: variant.weight, serving });
        }
        Ok(variants::Variants::new(arms, &self.config.variant_salt))
    }

    /// Per-user caches and state: on the shards when configured, else in process.
    pub fn caches(&self) -> UserCaches {
        let lookups = self.metrics.cache_lookups.clone();
        match &self.shards {
            None => UserCaches::in_process(&self.config.cache, lookups),
            Some(shards) => {
                let backend = Arc::new(RedisUserState::new(Arc::clone(shards)));
                UserCaches::new(&self.config.cache, backend, true, lookups)
            }
        }
    }

    /// The credentials the origin accepts: the configured secret, or in development a random one.
    pub fn auth(&self) -> Auth {
        let secret = match &self.config.secret {
            Some(secret) => secret.clone(),
            None => {
                // `Config::validate` refuses production without a secret, so this is development.
                tracing::warn!(
                    "no {} set: development mode generated a random one; edge calls will fail until both sides share one",
                    env_names::SECRET
                );
                format!("{:032x}", rand::random::<u128>())
            }
        };
        Auth::new(&secret, &self.config.api_keys, self.config.signature_window_secs)
    }
}
