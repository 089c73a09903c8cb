//! The request path: a user's list in real time (embedding → FAISS → ranker) within a deadline,
//! and the fallback chain when it cannot answer (DESIGN.md, "When something fails").
//!
//! Chain for a user: real-time, then the user's segment list, then the global popular list. An
//! unknown user (cold start) and a user whose shard is down get the segment list, not an error.
//! (Caches and precomputed lists join the chain in the caching issue.)
//!
//! Segment lists are ranked once at start: the bundle's popular items, scored by the model in each
//! page/device context for a "typical visitor" (the mean embedding of the most popular items).
//! Country is part of the cache key but not of the model's context, so countries share a list.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_shared::keys::EntityKind;
use cascade_shared::segment::{DEVICES, Device, PAGES, Page, SegmentKey};
use cascade_shared::validate::{MAX_N, RecsQuery};
use cascade_shared::wire::{RecItem, RecList, Source};

use crate::bundle::Bundle;
use crate::cache::{ListKey, UserCaches, filter_items};
use crate::error::AppError;
use crate::features::build_rows;
use crate::metrics::Metrics;
use crate::ranker::Ranker;
use crate::retrieval::Retriever;
use crate::store::precomputed::PrecomputedLists;
use crate::store::{EmbeddingStore, StoreError};

/// Stage durations of one request, for `Server-Timing` and the stage histogram.
#[derive(Debug, Default, Clone)]
pub struct Timings(pub Vec<(&'static str, Duration)>);

impl Timings {
    /// Records a stage.
    pub fn add(&mut self, stage: &'static str, duration: Duration) {
        self.0.push((stage, duration));
    }

    /// The `Server-Timing` header value: `embed;dur=0.41, retrieve;dur=1.20, …` (milliseconds).
    pub fn header_value(&self) -> String {
        self.0
            .iter()
            .map(|(stage, d)| format!("{stage};dur={:.2}", d.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A list and how it was made.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The list.
    pub list: RecList,
    /// Stage times.
    pub timings: Timings,
}

/// Why the real-time path gave up (a metrics label).
#[derive(Debug, thiserror::Error)]
enum RealtimeFailure {
    #[error("deadline")]
    Deadline,
    #[error("{0}")]
    Rank(#[from] crate::ranker::RankError),
    #[error("{0}")]
    Retrieve(String),
}

/// Why the real-time pipeline did not produce a list (the reason is a metrics label), with the
/// user's precomputed list when there is one: the next answer in the chain.
#[derive(Debug, Clone)]
pub struct Fallback {
    /// Why.
    pub reason: &'static str,
    /// The user's precomputed list, served as-is (never cached).
    pub precomputed: Option<Vec<RecItem>>,
}

/// How far the session pulls the query toward the user's recent items.
pub const SESSION_WEIGHT: f32 = 0.5;

/// The query for a user in session: `(1 - weight) · user + weight · mean(recent items)`, or the
/// user's own embedding when the session is empty.
pub fn session_query(user: &[f32], recent: &[&[f32]], weight: f32) -> Vec<f32> {
    if recent.is_empty() {
        return user.to_vec();
    }
    let scale = weight / recent.len() as f32;
    let mut query: Vec<f32> = user.iter().map(|v| v * (1.0 - weight)).collect();
    for item in recent {
        query.iter_mut().zip(item.iter()).for_each(|(q, v)| *q += v * scale);
    }
    query
}

/// The I/O components a recommender is built from.
pub struct Components {
    /// User embeddings.
    pub store: Arc<dyn EmbeddingStore>,
    /// Candidate retrieval.
    pub retriever: Arc<dyn Retriever>,
    /// Ranking.
    pub ranker: Arc<dyn Ranker>,
    /// Precomputed lists.
    pub precomputed: Arc<dyn PrecomputedLists>,
}

/// The recommender: everything the request path needs, shared by all handlers.
pub struct Recommender {
    bundle: Arc<Bundle>,
    bundle_id: Arc<str>,
    store: Arc<dyn EmbeddingStore>,
    retriever: Arc<dyn Retriever>,
    ranker: Arc<dyn Ranker>,
    precomputed: Arc<dyn PrecomputedLists>,
    metrics: Arc<Metrics>,
    candidates: usize,
    deadline: Duration,
    /// Ranked list per (page, device), [`MAX_N`] long.
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
        let Components { store, retriever, ranker, precomputed } = components;
        let popular: Vec<RecItem> = bundle
            .metadata
            .popular
            .iter()
            .filter(|id| bundle.item_index.contains_key(*id))
            .enumerate()
            .map(|(rank, id)| RecItem { id: id.clone(), score: 1.0 / (rank as f32 + 1.0), title: bundle.title(id) })
            .collect();
        let mut recommender = Recommender {
            bundle_id: Arc::from(bundle.id()),
            bundle,
            store,
            retriever,
            ranker,
            precomputed,
            metrics,
            candidates,
            deadline,
            segment_lists: HashMap::new(),
            popular,
        };
        recommender.segment_lists = recommender.rank_segment_lists().await;
        recommender
    }

    /// The bundle being served.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The store's components' health.
    pub async fn health(&self) -> Vec<crate::store::ComponentHealth> {
        self.store.health().await
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

    async fn rank_segment_lists(&self) -> HashMap<(usize, usize), Vec<RecItem>> {
        let rows: Vec<usize> =
            self.popular.iter().filter_map(|item| self.bundle.item_index.get(&item.id).copied()).collect();
        let dim = self.bundle.metadata.dim;
        let typical = rows.iter().take(50).fold(vec![0.0f32; dim], |mut sum, &row| {
            sum.iter_mut().zip(self.bundle.items.row(row)).for_each(|(s, v)| *s += v);
            sum
        });
        let typical: Vec<f32> = typical.iter().map(|v| v / rows.len().clamp(1, 50) as f32).collect();
        let mut lists = HashMap::new();
        for page in PAGES.iter().filter_map(|p| Page::parse(p)) {
            for device in DEVICES.iter().filter_map(|d| Device::parse(d)) {
                let mut features = Vec::new();
                build_rows(&typical, rows.iter().map(|&r| self.bundle.items.row(r)), page, device, &mut features);
                let deadline = Instant::now() + Duration::from_secs(30);
                let list = match self.ranker.score(features, deadline).await {
                    Ok(scores) => self.top_items(rows.iter().copied().zip(scores), MAX_N),
                    Err(error) => {
                        tracing::warn!(%error, "segment lists fall back to popularity order");
                        self.popular.iter().take(MAX_N).cloned().collect()
                    }
                };
                lists.insert((page.index(), device.index()), list);
            }
        }
        lists
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
                RecItem { id: id.clone(), score, title: self.bundle.title(id) }
            })
            .collect()
    }

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
        RecList {
            user_id: user_id.map(str::to_string),
            segment: segment.to_string(),
            source,
            model_version: self.bundle.id().to_string(),
            items,
        }
    }

    /// A segment's list (`GET /v1/segments/{segment}/recs`).
    pub fn segment_recs(&self, segment: SegmentKey, n: usize) -> Result<Answer, AppError> {
        let started = Instant::now();
        let key = (segment.page.index(), segment.device.index());
        let (source, items) = match self.segment_lists.get(&key) {
            Some(items) if !items.is_empty() => (Source::Segment, items.clone()),
            _ if !self.popular.is_empty() => (Source::Popular, self.popular.clone()),
            _ => return Err(AppError::NothingToServe("no segment or popular list in this bundle".into())),
        };
        let mut timings = Timings::default();
        timings.add("segment", started.elapsed());
        Ok(Answer { list: self.list(None, segment, source, items, n), timings })
    }

    /// A user's list (`GET /v1/users/{id}/recs`): L1, else L2, else real time within the deadline
    /// (computed once for concurrent identical misses), else the fallback chain. Purchased items
    /// are filtered from every answer.
    pub async fn user_recs(&self, user_id: &str, query: RecsQuery, caches: &UserCaches) -> Result<Answer, AppError> {
        let started = Instant::now();
        let deadline = started + self.deadline;
        let mut timings = Timings::default();
        let view = match caches.user(user_id).await {
            Ok(view) => view,
            Err(error) => {
                // The user's state is unreachable: bypass the caches rather than risk a stale or
                // unfiltered cached list; the pipeline below falls back if the shard is down.
                tracing::warn!(user_id, %error, "user state unavailable; caches bypassed");
                let fallback = match self.compute(user_id, query, &[], deadline, &mut timings).await {
                    Ok(items) => {
                        timings.add("total", started.elapsed());
                        let list = self.list(Some(user_id), query.segment, Source::Realtime, items, query.n);
                        return Ok(Answer { list, timings });
                    }
                    Err(fallback) => fallback,
                };
                return self.fallback(user_id, query, &fallback, &HashSet::new(), started, timings);
            }
        };
        let key = ListKey {
            bundle: Arc::clone(&self.bundle_id),
            user: user_id.to_string(),
            segment: query.segment,
            generation: view.generation,
        };
        if let Some(entry) = caches.get(&key).await {
            timings.add("cache", started.elapsed());
            let items = filter_items(&entry.items, &view.purchased, query.n);
            return Ok(Answer {
                list: self.list(Some(user_id), query.segment, Source::CacheL1, items, query.n),
                timings,
            });
        }
        let computed =
            caches.get_or_compute(key, self.compute(user_id, query, &view.recent, deadline, &mut timings)).await;
        let fallback = match computed {
            Ok(entry) => {
                timings.add("total", started.elapsed());
                let items = filter_items(&entry.items, &view.purchased, query.n);
                return Ok(Answer {
                    list: self.list(Some(user_id), query.segment, entry.source, items, query.n),
                    timings,
                });
            }
            Err(fallback) => fallback,
        };
        self.fallback(user_id, query, &fallback, &view.purchased, started, timings)
    }

    /// The fallback chain's answer for a user: the precomputed list, else the segment list (then
    /// popular), filtered.
    fn fallback(
        &self,
        user_id: &str,
        query: RecsQuery,
        fallback: &Fallback,
        purchased: &HashSet<String>,
        started: Instant,
        mut timings: Timings,
    ) -> Result<Answer, AppError> {
        self.metrics.fallbacks.with_label_values(&[fallback.reason]).inc();
        if let Some(precomputed) = &fallback.precomputed {
            let items = filter_items(precomputed, purchased, query.n);
            timings.add("total", started.elapsed());
            let list = self.list(Some(user_id), query.segment, Source::Precomputed, items, query.n);
            return Ok(Answer { list, timings });
        }
        let mut answer = self.segment_recs(query.segment, MAX_N)?;
        answer.list.user_id = Some(user_id.to_string());
        answer.list.items = filter_items(&answer.list.items, purchased, query.n);
        timings.0.extend(answer.timings.0);
        timings.add("total", started.elapsed());
        answer.timings = timings;
        Ok(answer)
    }

    /// One run of the real-time pipeline: the user's full ranked list, or why not. With a
    /// precomputed list, its items are the candidates (re-ranked in the request's context); without
    /// one, FAISS retrieves them.
    async fn compute(
        &self,
        user_id: &str,
        query: RecsQuery,
        recent: &[String],
        deadline: Instant,
        timings: &mut Timings,
    ) -> Result<Vec<RecItem>, Fallback> {
        self.metrics.pipeline_runs.inc();
        let started = Instant::now();
        let (lookup, precomputed) =
            futures::join!(self.store.get(EntityKind::User, user_id), self.precomputed.get(user_id));
        timings.add("embed", started.elapsed());
        let precomputed = precomputed.unwrap_or_else(|error| {
            tracing::warn!(user_id, %error, "precomputed list unavailable");
            None
        });
        let user = match lookup {
            Ok(Some(user)) => user,
            Ok(None) => return Err(Fallback { reason: "cold_start", precomputed }),
            Err(StoreError::Unavailable { shard, message }) => {
                tracing::warn!(user_id, shard, %message, "user's shard unavailable; falling back");
                return Err(Fallback { reason: "shard_unavailable", precomputed });
            }
            Err(StoreError::Corrupt { key, message }) => {
                tracing::error!(user_id, %key, %message, "corrupt user embedding; falling back");
                return Err(Fallback { reason: "corrupt_embedding", precomputed });
            }
        };
        let recent_rows: Vec<&[f32]> = recent
            .iter()
            .filter_map(|id| self.bundle.item_index.get(id))
            .map(|&row| self.bundle.items.row(row))
            .collect();
        let user = session_query(&user, &recent_rows, SESSION_WEIGHT);
        let candidates: Option<Vec<usize>> = precomputed
            .as_ref()
            .map(|list| list.iter().filter_map(|item| self.bundle.item_index.get(&item.id).copied()).collect());
        let attempt =
            tokio::time::timeout_at(deadline.into(), self.realtime(&user, candidates, query, deadline, timings)).await;
        let failure = match attempt {
            Ok(Ok(items)) => return Ok(items),
            Ok(Err(failure)) => failure,
            Err(_) => RealtimeFailure::Deadline,
        };
        tracing::warn!(user_id, error = %failure, "real-time path failed; falling back");
        let reason = match failure {
            RealtimeFailure::Deadline => "deadline",
            RealtimeFailure::Rank(crate::ranker::RankError::Overloaded) => "ranker_overloaded",
            RealtimeFailure::Rank(crate::ranker::RankError::DeadlineExceeded) => "deadline",
            RealtimeFailure::Rank(_) => "ranker_error",
            RealtimeFailure::Retrieve(_) => "retrieval_error",
        };
        Err(Fallback { reason, precomputed })
    }

    /// Ranks `user`'s candidates in `segment`'s context: the full ranked list ([`MAX_N`] items).
    /// `precomputed` rows replace FAISS retrieval when given. Used by the request path and by
    /// `cascade precompute`.
    pub async fn rank_user(
        &self,
        user: &[f32],
        segment: SegmentKey,
        deadline: Instant,
    ) -> Result<Vec<RecItem>, String> {
        let query = RecsQuery { n: MAX_N, segment };
        self.realtime(user, None, query, deadline, &mut Timings::default()).await.map_err(|e| e.to_string())
    }

    async fn realtime(
        &self,
        user: &[f32],
        precomputed_rows: Option<Vec<usize>>,
        query: RecsQuery,
        deadline: Instant,
        timings: &mut Timings,
    ) -> Result<Vec<RecItem>, RealtimeFailure> {
        let rows: Vec<usize> = match precomputed_rows {
            Some(rows) if !rows.is_empty() => rows,
            _ => {
                let stage = Instant::now();
                let retriever = Arc::clone(&self.retriever);
                let (query_vector, k) = (user.to_vec(), self.candidates);
                let candidates = tokio::task::spawn_blocking(move || retriever.search(&query_vector, k))
                    .await
                    .map_err(|e| RealtimeFailure::Retrieve(e.to_string()))?
                    .map_err(|e| RealtimeFailure::Retrieve(e.to_string()))?;
                timings.add("retrieve", stage.elapsed());
                self.metrics.stage_seconds.with_label_values(&["retrieve"]).observe(stage.elapsed().as_secs_f64());
                candidates.iter().map(|c| c.row).collect()
            }
        };
        if Instant::now() >= deadline {
            return Err(RealtimeFailure::Deadline);
        }

        let stage = Instant::now();
        let mut features = Vec::with_capacity(rows.len() * self.ranker.input_width());
        build_rows(
            user,
            rows.iter().map(|&r| self.bundle.items.row(r)),
            query.segment.page,
            query.segment.device,
            &mut features,
        );
        let scores = self.ranker.score(features, deadline).await?;
        timings.add("rank", stage.elapsed());
        self.metrics.stage_seconds.with_label_values(&["rank"]).observe(stage.elapsed().as_secs_f64());
        Ok(self.top_items(rows.into_iter().zip(scores), MAX_N))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_pulls_the_query_toward_recent_items() {
        let user = [1.0, 0.0];
        assert_eq!(session_query(&user, &[], 0.5), vec![1.0, 0.0]);
        let recent: [&[f32]; 2] = [&[0.0, 2.0], &[0.0, 4.0]];
        assert_eq!(session_query(&user, &recent, 0.5), vec![0.5, 1.5]);
    }
}
