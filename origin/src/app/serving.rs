//! The recommender being served, and bundle reloads: a new bundle is loaded, checked and warmed
//! beside the old one, then swapped in atomically (model, embeddings and index together).
//!
//! Requests take the current recommender at their start and keep it to their end, so a swap never
//! fails a request in flight; the old bundle's ranker threads stop when its last request is done.
//! A bundle that fails any check (unreadable or corrupt model, reference scores not reproduced,
//! parts from different bundles) is refused with the reason, logged, and the old one keeps
//! serving. Rolling back is loading the previous bundle again.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::factory::{BuildError, RecommenderFactory};
use crate::recommend::Recommender;

/// The current recommender and how to build another.
pub struct Serving {
    current: ArcSwap<Recommender>,
    factory: Arc<RecommenderFactory>,
    /// One reload at a time: two concurrent loads would race for the swap.
    reloading: tokio::sync::Mutex<()>,
}

/// What a successful reload replaced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Swapped {
    /// The bundle served before.
    pub previous: String,
    /// The bundle served now.
    pub current: String,
}

impl Serving {
    /// The business rules every recommender shares.
    pub fn rules(&self) -> &Arc<crate::recommend::list_rules::ListRules> {
        self.factory.rules()
    }

    /// The catalogue's live state.
    pub fn catalogue(&self) -> &Arc<crate::catalogue::Catalogue> {
        self.factory.catalogue()
    }

    /// Where served lists and events are logged.
    pub fn feature_log(&self) -> &Arc<crate::feature_log::FeatureLog> {
        self.factory.feature_log()
    }

    /// Serves `recommender`; reloads build with `factory`.
    pub fn new(recommender: Recommender, factory: Arc<RecommenderFactory>) -> Self {
        Serving { current: ArcSwap::from_pointee(recommender), factory, reloading: tokio::sync::Mutex::new(()) }
    }

    /// The brownout switch (its probe runs in `cascade serve`).
    pub fn brownout(&self) -> &Arc<crate::brownout::Brownout> {
        self.factory.brownout()
    }

    /// The injected faults, when fault injection is on.
    pub fn faults(&self) -> Option<&Arc<crate::faults::Faults>> {
        self.factory.faults()
    }

    /// The recommender to use for one request.
    pub fn current(&self) -> Arc<Recommender> {
        self.current.load_full()
    }

    /// Loads the bundle in `dir` beside the current one and swaps it in, or refuses it (the error
    /// says whether the bundle was wrong or a dependency was down).
    pub async fn load(&self, dir: &Path) -> Result<Swapped, BuildError> {
        // A second reload is refused at once rather than queued: each waiting one would hold a
        // request slot and, once its turn came, a second copy of a model in memory.
        let Ok(_one_at_a_time) = self.reloading.try_lock() else {
            return Err(BuildError::Busy);
        };
        let previous = self.current().bundle().id().to_string();
        match self.factory.build(dir).await {
            Ok(recommender) => {
                let current = recommender.bundle().id().to_string();
                self.current.store(Arc::new(recommender));
                tracing::info!(%previous, %current, dir = %dir.display(), "bundle swapped");
                Ok(Swapped { previous, current })
            }
            Err(error) => {
                tracing::error!(dir = %dir.display(), %error, "bundle refused; still serving {previous}");
                Err(error)
            }
        }
    }
}
