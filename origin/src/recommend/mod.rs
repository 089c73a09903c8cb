//! The request path: a user's list from the caches, else in real time (embedding → FAISS → ranker)
//! within a deadline, else the fallback chain (DESIGN.md, "When something fails").
//!
//! | module | owns |
//! |---|---|
//! | this file | [`Recommender`]: the components of one bundle, and the user and segment answers |
//! | [`realtime`] | one run of the real-time pipeline under the deadline, and `rank_users` for precompute |
//! | [`fallback`] | [`fallback::FallbackReason`] (also the metric label) and the chain: precomputed, segment, popular |
//! | [`segments`] | segment and popular lists, ranked once per bundle |
//! | [`precomputed`] | [`precomputed::PrecomputedLists`]: lists written offline, read as candidates or answers |
//! | [`session`] | the session query: recent items pull the user's embedding |
//! | [`timings`] | stage durations of one request (the HTTP layer formats them as `Server-Timing`) |
//!
//! Chain for a user: L1, L2, real time, then the user's precomputed list, then the segment list,
//! then the global popular list. An unknown user (cold start) and a user whose shard is down get a
//! list, not an error. Purchased items are filtered from every answer built from per-user data; a
//! user whose state cannot be read in time gets the context's segment list (never an unfiltered
//! personal one). Every stage runs inside the request's one deadline.

pub mod diversity;
pub mod fallback;
pub mod list_rules;
pub mod precomputed;
pub mod realtime;
pub mod segments;
pub mod timings;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_shared::segment::SegmentKey;
use cascade_shared::validate::RecsQuery;
use cascade_shared::wire::{RecItem, RecList, Source};
use serde::Deserialize;

use crate::brownout::Brownout;
use crate::bundle::Bundle;
use crate::cache::{ListKey, UserCaches};
use crate::faults::Faults;
use crate::feature_log::FeatureLog;
use crate::metrics::Metrics;
use crate::ranking::Ranker;
use crate::retrieval::Retriever;
use crate::store::{ComponentHealth, EmbeddingStore, StoreError};
use crate::work_queue::WorkQueue;
use fallback::{Fallback, FallbackReason};
use list_rules::{ItemFacts, ListRules};
use precomputed::PrecomputedLists;
pub use timings::Timings;

/// Request-path settings (`[serving]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServingConfig {
    /// Budget for the real-time path, milliseconds; past it the fallback chain answers.
    pub deadline_ms: u64,
    /// Requests in flight before new ones get 503 at once (the HTTP layer's admission control).
    pub max_in_flight: usize,
    /// Budget for one events batch, milliseconds; past it the rest is answered 503 (retry).
    pub events_deadline_ms: u64,
    /// Enables `POST /admin/faults` (the fault suite's knobs); refused in production mode.
    pub fault_injection: bool,
    /// Longest an API request may run, milliseconds (503 `timeout` past it; admin routes excepted).
    pub request_timeout_ms: u64,
    /// Longest wait for a request's head, and for the next one on an idle connection, milliseconds.
    pub header_read_timeout_ms: u64,
    /// Connections open at once; past it new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// A connection refused this many times in a row is read only after a pause that doubles up
    /// to the refusals' `Retry-After` (`crate::http::pacing`); 0 (the default) turns pacing off.
    pub pace_after_refusals: u32,
    /// Runtime scheduling lag, milliseconds, at which real-time ranking pauses and fallback lists
    /// are served (`crate::brownout`); 0 turns brownout off.
    pub brownout_lag_ms: u64,
}

impl Default for ServingConfig {
    fn default() -> Self {
        ServingConfig {
            deadline_ms: 80,
            max_in_flight: 1024,
            events_deadline_ms: 2_000,
            fault_injection: false,
            request_timeout_ms: 5_000,
            header_read_timeout_ms: 10_000,
            max_connections: 4_096,
            pace_after_refusals: 0,
            brownout_lag_ms: 20,
        }
    }
}

/// Why a request got no list at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecommendError {
    /// Nothing to serve: no segment or popular list in this bundle.
    #[error("{0}")]
    NothingToServe(String),
}

/// A list and how it was made.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The list.
    pub list: RecList,
    /// Stage times.
    pub timings: Timings,
    /// The real-time query vector, when the feature log sampled this list.
    pub query: Option<Vec<f32>>,
}

/// The I/O components a recommender is built from.
pub struct Components {
    /// User embeddings.
    pub store: Arc<dyn EmbeddingStore>,
    /// Candidate retrieval.
    pub retriever: Arc<dyn Retriever>,
    /// Where searches run (bounded; skips searches nobody waits for).
    pub searches: Arc<WorkQueue>,
    /// Ranking.
    pub ranker: Arc<dyn Ranker>,
    /// Precomputed lists.
    pub precomputed: Arc<dyn PrecomputedLists>,
    /// Injected faults, when fault injection is on.
    pub faults: Option<Arc<Faults>>,
    /// While on, real-time ranking is skipped (the CPU is saturated).
    pub brownout: Arc<Brownout>,
    /// Where a sampled share of real-time queries is logged.
    pub feature_log: Arc<FeatureLog>,
    /// Business rules on the way out (shared by every bundle: the impressions memory survives reloads).
    pub rules: Arc<ListRules>,
}

/// The recommender for one bundle: everything the request path needs, shared by all handlers.
pub struct Recommender {
    bundle: Arc<Bundle>,
    bundle_id: Arc<str>,
    store: Arc<dyn EmbeddingStore>,
    retriever: Arc<dyn Retriever>,
    searches: Arc<WorkQueue>,
    ranker: Arc<dyn Ranker>,
    precomputed: Arc<dyn PrecomputedLists>,
    faults: Option<Arc<Faults>>,
    brownout: Arc<Brownout>,
    feature_log: Arc<FeatureLog>,
    rules: Arc<ListRules>,
    metrics: Arc<Metrics>,
    candidates: usize,
    /// New items (from the catalogue) ranked with each real-time list's candidates.
    fresh_candidates: usize,
    deadline: Duration,
    /// Ranked list per (page, device), [`MAX_N`](cascade_shared::validate::MAX_N) long.
    segment_lists: HashMap<(usize, usize), Vec<RecItem>>,
    popular: Vec<RecItem>,
}

impl Recommender {
    /// Builds the recommender and ranks the segment lists (falling back to popularity order if the
    /// ranker cannot).
    pub async fn new(
        bundle: Arc<Bundle>,
        components: Components,
        metrics: Arc<Metrics>,
        candidates: usize,
        deadline: Duration,
    ) -> Self {
        let Components { store, retriever, searches, ranker, precomputed, faults, brownout, feature_log, rules } =
            components;
        let popular = segments::popular_list(&bundle);
        let mut recommender = Recommender {
            bundle_id: Arc::from(bundle.id()),
            bundle,
            store,
            retriever,
            searches,
            ranker,
            precomputed,
            faults,
            brownout,
            feature_log,
            rules,
            metrics,
            candidates,
            fresh_candidates: 0,
            deadline,
            segment_lists: HashMap::new(),
            popular,
        };
        recommender.segment_lists = recommender.rank_segment_lists().await;
        recommender
    }

    /// The same recommender, ranking the best `k` new items of the catalogue with each real-time
    /// list's candidates.
    pub fn with_fresh_candidates(self, k: usize) -> Self {
        Recommender { fresh_candidates: k, ..self }
    }

    /// A user's full list as they may see it: the rules applied ([`list_rules`]), cut to `n`;
    /// their time is the `rules` stage.
    fn finish(
        &self,
        items: &[RecItem],
        user_id: &str,
        purchased: &HashSet<String>,
        query: RecsQuery,
        timings: &mut Timings,
    ) -> Vec<RecItem> {
        let started = Instant::now();
        let segment = query.segment.to_string();
        let kept = self.rules.finish(items, Some(user_id), purchased, self.item_facts(), &segment, query.n);
        timings.add("rules", started.elapsed());
        kept
    }

    /// What the rules know of the bundle's items.
    fn item_facts(&self) -> ItemFacts<'_> {
        let embeddings = Some((&self.bundle.items, &self.bundle.item_index));
        ItemFacts { categories: &self.bundle.metadata.categories, embeddings }
    }

    /// Remembers what `user_id` was shown (the `seen_window` rule).
    pub fn remember_shown(&self, user_id: &str, items: &[RecItem]) {
        self.rules.remember(user_id, items);
    }

    /// The bundle being served.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// Where precomputed lists of this bundle are read and written.
    pub fn precomputed(&self) -> &Arc<dyn PrecomputedLists> {
        &self.precomputed
    }

    /// The components' health: the store's, then the ranker's.
    pub async fn health(&self) -> Vec<ComponentHealth> {
        let mut components = self.store.health().await;
        components.push(ComponentHealth::new("ranker", self.ranker.health()));
        components
    }

    /// Describes each component, for the start-up log and `/readyz`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        vec![
            ("bundle", self.bundle.id().to_string()),
            ("store", self.store.describe()),
            ("retriever", self.retriever.describe()),
            ("ranker", self.ranker.describe()),
        ]
    }

    /// Sorts (row, score) pairs by score, best first, and keeps `n` as items.
    fn top_items(&self, scored: impl IntoIterator<Item = (usize, f32)>, n: usize) -> Vec<RecItem> {
        let mut scored: Vec<(usize, f32)> = scored.into_iter().collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored
            .into_iter()
            .take(n)
            .map(|(row, score)| {
                let id = &self.bundle.items.ids[row];
                RecItem { id: id.clone(), score, title: self.bundle.title(id), position: 0 }
            })
            .collect()
    }

    /// The answer's list: cut to `n`, its items numbered from 1, a new `rec_id` (every answer is an
    /// impression of its own, an L1 hit included), counted by source.
    fn list(
        &self,
        user_id: Option<&str>,
        segment: SegmentKey,
        source: Source,
        mut items: Vec<RecItem>,
        n: usize,
    ) -> RecList {
        items.truncate(n);
        self.metrics.sources.with_label_values(&[source.as_str()]).inc();
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut list = RecList {
            user_id: user_id.map(str::to_string),
            segment: segment.to_string(),
            source,
            model_version: self.bundle.id().to_string(),
            items,
            rec_id: cascade_shared::rec_id::new(now_ms, rand::random()),
            variant: None,
        };
        list.number_positions();
        list
    }

    /// A segment's list (`GET /v1/segments/{segment}/recs`).
    pub fn segment_recs(&self, segment: SegmentKey, n: usize) -> Result<Answer, RecommendError> {
        let started = Instant::now();
        let key = (segment.page.index(), segment.device.index());
        let (source, items) = match self.segment_lists.get(&key) {
            Some(items) if !items.is_empty() => (Source::Segment, items.clone()),
            _ if !self.popular.is_empty() => (Source::Popular, self.popular.clone()),
            _ => return Err(RecommendError::NothingToServe("no segment or popular list in this bundle".into())),
        };
        let mut timings = Timings::default();
        timings.add("segment", started.elapsed());
        let name = segment.to_string();
        let items = self.rules.finish(&items, None, &HashSet::new(), self.item_facts(), &name, n);
        Ok(Answer { list: self.list(None, segment, source, items, n), timings, query: None })
    }

    /// A user's list (`GET /v1/users/{id}/recs`): L1, else L2, else real time within the deadline
    /// (computed once for concurrent identical misses), else the fallback chain. Purchased items
    /// are filtered from every answer.
    pub async fn user_recs(
        &self,
        user_id: &str,
        query: RecsQuery,
        caches: &UserCaches,
    ) -> Result<Answer, RecommendError> {
        let started = Instant::now();
        // One budget for every stage: state, L2, embeddings, retrieval and ranking each stop at
        // it, so a slow dependency costs at most the deadline, never its own timeout on top.
        let deadline = started + self.deadline;
        let mut timings = Timings::default();
        let view = match tokio::time::timeout_at(deadline.into(), caches.user(user_id)).await {
            Ok(Ok(view)) => {
                timings.add("state", started.elapsed());
                view
            }
            unknown => {
                // Without the user's state their purchases are unknown: a personal list could
                // show what they bought. Serve the context's list, bypassing the caches.
                let reason = match unknown {
                    Ok(Err(error)) => {
                        tracing::warn!(user_id, %error, "user state unavailable; segment list served");
                        match error {
                            StoreError::Unavailable { .. } => FallbackReason::ShardUnavailable,
                            StoreError::Corrupt { .. } | StoreError::MissingOnDegradedShard { .. } => {
                                FallbackReason::StateUnavailable
                            }
                        }
                    }
                    _ => {
                        tracing::warn!(user_id, "user state slower than the deadline; segment list served");
                        FallbackReason::StateUnavailable
                    }
                };
                let fallback = Fallback { reason, precomputed: None };
                return self.fallback(user_id, query, &fallback, &HashSet::new(), started, timings);
            }
        };
        let key = ListKey {
            bundle: Arc::clone(&self.bundle_id),
            user: user_id.to_string(),
            segment: query.segment,
            generation: view.generation,
        };
        let lookup = Instant::now();
        let cached = caches.get(&key).await;
        timings.add("cache", lookup.elapsed());
        if let Some(entry) = cached {
            let items = self.finish(&entry.items, user_id, &view.purchased, query, &mut timings);
            return Ok(Answer {
                list: self.list(Some(user_id), query.segment, Source::CacheL1, items, query.n),
                timings,
                query: None,
            });
        }
        let mut sampled = None;
        let compute = self.compute(user_id, query, &view.recent, deadline, &mut timings, &mut sampled);
        let computed = caches.get_or_compute(key, deadline, compute).await;
        let fallback = match computed {
            Ok(entry) => {
                timings.add("total", started.elapsed());
                let items = self.finish(&entry.items, user_id, &view.purchased, query, &mut timings);
                return Ok(Answer {
                    list: self.list(Some(user_id), query.segment, entry.source, items, query.n),
                    timings,
                    query: sampled,
                });
            }
            Err(fallback) => fallback,
        };
        self.fallback(user_id, query, &fallback, &view.purchased, started, timings)
    }
}
