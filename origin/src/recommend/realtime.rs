//! One run of the real-time pipeline: the user's embedding (pulled by their session), candidates
//! from the precomputed list or FAISS, the ranker, all under the request's deadline.

use std::sync::Arc;
use std::time::Instant;

use cascade_shared::keys::EntityKind;
use cascade_shared::segment::SegmentKey;
use cascade_shared::validate::{MAX_N, RecsQuery};
use cascade_shared::wire::RecItem;

use super::fallback::{Fallback, FallbackReason};
use super::{Recommender, Timings};
use crate::catalogue::FreshCandidate;
use crate::catalogue::fresh::dot;
use crate::ranking::RankError;
use crate::ranking::features::build_rows;
use crate::retrieval::Candidate;
use crate::store::StoreError;
use crate::work_queue::QueueError;

/// Rows per model call when ranking offline ([`Recommender::rank_users`]): the size the ranker
/// benchmark measures the model's ceiling with.
pub const OFFLINE_ROWS_PER_CALL: usize = 4096;

/// Why the real-time stage gave up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RealtimeError {
    /// The deadline passed.
    #[error("deadline")]
    Deadline,
    /// The ranker refused or failed.
    #[error("{0}")]
    Rank(#[from] RankError),
    /// FAISS failed (or its task did).
    #[error("retrieval: {0}")]
    Retrieve(String),
    /// The search queue was full: load shed.
    #[error("retrieval queue full")]
    RetrievalOverloaded,
}

/// Why a search did not run: the queue was full (load shed), its deadline passed, or its
/// thread failed.
impl From<QueueError> for RealtimeError {
    fn from(error: QueueError) -> Self {
        match error {
            QueueError::Full => RealtimeError::RetrievalOverloaded,
            QueueError::Expired => RealtimeError::Deadline,
            QueueError::Stopped => RealtimeError::Retrieve("search task failed".into()),
        }
    }
}

impl RealtimeError {
    /// The fallback reason this failure is counted under.
    pub fn reason(&self) -> FallbackReason {
        match self {
            RealtimeError::Deadline | RealtimeError::Rank(RankError::DeadlineExceeded) => FallbackReason::Deadline,
            RealtimeError::Rank(RankError::Overloaded) => FallbackReason::RankerOverloaded,
            RealtimeError::Rank(_) => FallbackReason::RankerError,
            RealtimeError::Retrieve(_) => FallbackReason::RetrievalError,
            RealtimeError::RetrievalOverloaded => FallbackReason::RetrievalOverloaded,
        }
    }
}

impl Recommender {
    /// One run of the real-time pipeline: the user's full ranked list, or why not. With a
    /// precomputed list, its items are the candidates (re-ranked in the request's context); without
    /// one, FAISS retrieves them.
    pub(super) async fn compute(
        &self,
        user_id: &str,
        query: RecsQuery,
        recent: &[String],
        deadline: Instant,
        timings: &mut Timings,
        sampled: &mut Option<Vec<f32>>,
    ) -> Result<Vec<RecItem>, Fallback> {
        let started = Instant::now();
        if self.brownout.is_on() {
            // No CPU to rank in time: the user's precomputed list (one Redis read), or the chain.
            let precomputed = tokio::time::timeout_at(deadline.into(), self.precomputed.get(user_id)).await;
            timings.add("precomputed", started.elapsed());
            let precomputed = precomputed.ok().and_then(Result::ok).flatten();
            return Err(Fallback { reason: FallbackReason::Brownout, precomputed });
        }
        self.metrics.pipeline_runs.inc();
        let lookups =
            async { futures::join!(self.store.get(EntityKind::User, user_id), self.precomputed.get(user_id)) };
        let Ok((lookup, precomputed)) = tokio::time::timeout_at(deadline.into(), lookups).await else {
            tracing::warn!(user_id, "embedding lookup slower than the deadline; falling back");
            return Err(Fallback { reason: FallbackReason::Deadline, precomputed: None });
        };
        timings.add("embed", started.elapsed());
        let precomputed = precomputed.unwrap_or_else(|error| {
            tracing::warn!(user_id, %error, "precomputed list unavailable");
            None
        });
        let session: Vec<usize> = recent.iter().filter_map(|id| self.bundle.item_index.get(id).copied()).collect();
        let user = match lookup {
            Ok(Some(user)) => user,
            // A visitor the bundle does not know, with a session: a sequence model's query is made
            // of their recent items alone.
            Ok(None) if self.bundle.sequence.is_some() && !session.is_empty() => vec![0.0; self.bundle.metadata.dim],
            Ok(None) => return Err(Fallback { reason: FallbackReason::ColdStart, precomputed }),
            Err(StoreError::Unavailable { shard, message }) => {
                tracing::warn!(user_id, shard, %message, "user's shard unavailable; falling back");
                return Err(Fallback { reason: FallbackReason::ShardUnavailable, precomputed });
            }
            Err(StoreError::MissingOnDegradedShard { shard }) => {
                tracing::warn!(user_id, shard, "user's shard lost its data; falling back");
                return Err(Fallback { reason: FallbackReason::MissingOnDegradedShard, precomputed });
            }
            Err(StoreError::Corrupt { key, message }) => {
                tracing::error!(user_id, %key, %message, "corrupt user embedding; falling back");
                return Err(Fallback { reason: FallbackReason::CorruptEmbedding, precomputed });
            }
        };
        let (user, seen) = self.bundle.query(&user, user_id, &session);
        if self.feature_log.sample_query() {
            *sampled = Some(user.clone());
        }
        let candidates: Option<Vec<usize>> = precomputed
            .as_ref()
            .map(|list| list.iter().filter_map(|item| self.bundle.item_index.get(&item.id).copied()).collect());
        let attempt =
            tokio::time::timeout_at(deadline.into(), self.realtime(&user, seen, candidates, query, deadline, timings))
                .await;
        let failure = match attempt {
            Ok(Ok(items)) => return Ok(items),
            Ok(Err(failure)) => failure,
            Err(_) => RealtimeError::Deadline,
        };
        tracing::warn!(user_id, error = %failure, "real-time path failed; falling back");
        Err(Fallback { reason: failure.reason(), precomputed })
    }

    /// Ranks the FAISS candidates of a query (`user`, never showing the item rows in `seen`) in
    /// `segment`'s context: the full ranked list ([`MAX_N`] items), with no precomputed candidates.
    /// One user at a time; `cascade precompute` uses the batched [`Recommender::rank_users`], which
    /// must agree with it.
    pub async fn rank_user(
        &self,
        user: &[f32],
        seen: &[u32],
        segment: SegmentKey,
        deadline: Instant,
    ) -> Result<Vec<RecItem>, RealtimeError> {
        let query = RecsQuery { n: MAX_N, segment };
        self.realtime(user, seen, None, query, deadline, &mut Timings::default()).await
    }

    /// [`Recommender::rank_user`] for many users at once, at batch speed (`cascade precompute`): one
    /// FAISS call for all their queries, then their rows scored in calls of about
    /// [`OFFLINE_ROWS_PER_CALL`] rows, issued together (a call larger than the batcher's
    /// `max_batch_rows` runs alone, as one large model call).
    pub async fn rank_users(
        &self,
        users: &[(Vec<f32>, &[u32])],
        segment: SegmentKey,
        deadline: Instant,
    ) -> Result<Vec<Vec<RecItem>>, RealtimeError> {
        let dim = self.bundle.metadata.dim;
        let queries: Vec<f32> = users.iter().flat_map(|(user, _)| user.iter().copied()).collect();
        let k = self.candidates;
        let wanted = self.search_size(users.iter().map(|(_, seen)| seen.len()).max().unwrap_or(0));
        let retriever = Arc::clone(&self.retriever);
        let found = self.searches.run(deadline, move || retriever.search_batch(&queries, dim, wanted)).await?;
        let found = found.map_err(|e| RealtimeError::Retrieve(e.to_string()))?;
        let found: Vec<Vec<Candidate>> =
            found.into_iter().zip(users).map(|(found, (_, seen))| unseen(found, seen, k)).collect();
        let width = self.ranker.input_width();
        // Users grouped into calls of about OFFLINE_ROWS_PER_CALL rows: (their users, rows).
        let mut calls: Vec<(std::ops::Range<usize>, Vec<f32>)> = Vec::new();
        for (index, ((user, _), candidates)) in users.iter().zip(&found).enumerate() {
            match calls.last_mut() {
                Some((users, rows)) if rows.len() / width < OFFLINE_ROWS_PER_CALL => users.end = index + 1,
                _ => calls.push((index..index + 1, Vec::with_capacity((OFFLINE_ROWS_PER_CALL + k) * width))),
            }
            let Some((_, rows)) = calls.last_mut() else { unreachable!("a call was just pushed") };
            let items = candidates.iter().map(|c| self.bundle.items.row(c.row));
            build_rows(user, items, segment.page, segment.device, rows);
        }
        let scored =
            futures::future::join_all(calls.into_iter().map(|(users, rows)| async move {
                self.ranker.score(rows, deadline).await.map(|scores| (users, scores))
            }))
            .await;
        let mut lists = Vec::with_capacity(users.len());
        for result in scored {
            let (users, scores) = result?;
            let mut offset = 0;
            for candidates in &found[users] {
                let mine = scores.get(offset..offset + candidates.len()).ok_or_else(|| {
                    RealtimeError::Rank(crate::ranking::RankError::Model("fewer scores than rows".into()))
                })?;
                offset += candidates.len();
                lists.push(self.top_items(candidates.iter().map(|c| c.row).zip(mine.iter().copied()), MAX_N));
            }
        }
        Ok(lists)
    }

    /// How many candidates to search for so that `k` remain after dropping up to `seen` items.
    fn search_size(&self, seen: usize) -> usize {
        (self.candidates + seen).min(self.bundle.items.ids.len())
    }

    async fn realtime(
        &self,
        user: &[f32],
        seen: &[u32],
        precomputed_rows: Option<Vec<usize>>,
        query: RecsQuery,
        deadline: Instant,
        timings: &mut Timings,
    ) -> Result<Vec<RecItem>, RealtimeError> {
        let (mut candidates, scored) = match precomputed_rows {
            Some(rows) if !rows.is_empty() => {
                let rows = rows.into_iter().filter(|&row| !is_seen(seen, row));
                (rows.map(|row| Candidate { row, similarity: 0.0 }).collect(), false)
            }
            _ => {
                let stage = Instant::now();
                let retriever = Arc::clone(&self.retriever);
                let (query_vector, k, faults) = (user.to_vec(), self.search_size(seen.len()), self.faults.clone());
                let search = move || {
                    let started = Instant::now();
                    let found = retriever.search(&query_vector, k);
                    if let Some(faults) = faults {
                        faults.after_search(started.elapsed());
                    }
                    found
                };
                let candidates = self.searches.run(deadline, search).await?;
                let candidates = candidates.map_err(|e| RealtimeError::Retrieve(e.to_string()))?;
                timings.add("retrieve", stage.elapsed());
                self.metrics.stage_seconds.with_label_values(&["retrieve"]).observe(stage.elapsed().as_secs_f64());
                (unseen(candidates, seen, self.candidates), true)
            }
        };
        if Instant::now() >= deadline {
            return Err(RealtimeError::Deadline);
        }

        // New items (added through the catalogue since the bundle was trained) compete for the
        // candidate slots by the same inner product FAISS ranks by.
        let stage = Instant::now();
        let fresh = self.admit_fresh(user, &mut candidates, scored);
        if !fresh.is_empty() {
            timings.add("fresh", stage.elapsed());
        }
        let rows: Vec<usize> = candidates.into_iter().map(|c| c.row).collect();

        let stage = Instant::now();
        let mut features = Vec::with_capacity((rows.len() + fresh.len()) * self.ranker.input_width());
        build_rows(
            user,
            rows.iter().map(|&r| self.bundle.items.row(r)).chain(fresh.iter().map(|f| f.embedding.as_slice())),
            query.segment.page,
            query.segment.device,
            &mut features,
        );
        let slot = crate::ranking::batcher::TimingSlot::default();
        let scored = crate::ranking::batcher::BATCH_TIMING.scope(slot.clone(), self.ranker.score(features, deadline));
        let scores = scored.await?;
        timings.add("rank", stage.elapsed());
        if let Some(batch) = slot.get() {
            timings.add_between("rank.queue", batch.queued, batch.batched);
            timings.add_between("rank.inference", batch.batched, batch.scored);
        }
        self.metrics.stage_seconds.with_label_values(&["rank"]).observe(stage.elapsed().as_secs_f64());
        if scores.len() != rows.len() + fresh.len() {
            return Err(RealtimeError::Rank(RankError::Model("fewer scores than rows".into())));
        }
        let (bundle_scores, fresh_scores) = scores.split_at(rows.len());
        let mut items = self.top_items(rows.into_iter().zip(bundle_scores.iter().copied()), MAX_N);
        if !fresh.is_empty() {
            items.extend(fresh.into_iter().zip(fresh_scores).map(|(item, &score)| RecItem {
                id: item.id,
                score,
                title: item.title,
                position: 0,
            }));
            // Stable: a new item tied with a bundle item comes after it.
            items.sort_by(|a, b| b.score.total_cmp(&a.score));
            items.truncate(MAX_N);
        }
        Ok(items)
    }

    /// The new items of this bundle that make the query's candidates, as if they were in the index:
    /// each of the best `fresh_candidates` takes a slot when there is one free (fewer candidates
    /// than `candidates`) or when it is nearer the query than the weakest candidate, which leaves.
    /// `scored`: the candidates carry their inner product (FAISS's); else it is computed here.
    fn admit_fresh(&self, user: &[f32], candidates: &mut Vec<Candidate>, scored: bool) -> Vec<FreshCandidate> {
        if self.fresh_candidates == 0 {
            return Vec::new();
        }
        let index = self.rules.catalogue().fresh();
        if index.len(&self.bundle_id) == 0 {
            return Vec::new();
        }
        if !scored {
            for candidate in candidates.iter_mut() {
                candidate.similarity = dot(user, self.bundle.items.row(candidate.row));
            }
            candidates.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        }
        let slots = candidates.len().max(self.candidates);
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let mut admitted = Vec::new();
        for item in index.top(&self.bundle_id, user, self.fresh_candidates.min(slots), now_ms as u64) {
            if candidates.len() + admitted.len() >= slots {
                match candidates.last() {
                    Some(weakest) if item.similarity > weakest.similarity => candidates.pop(),
                    _ => break,
                };
            }
            admitted.push(item);
        }
        admitted
    }
}

/// Whether `row` is among the sorted `seen` rows.
fn is_seen(seen: &[u32], row: usize) -> bool {
    u32::try_from(row).is_ok_and(|row| seen.binary_search(&row).is_ok())
}

/// The first `k` candidates that are not `seen`.
fn unseen(candidates: Vec<Candidate>, seen: &[u32], k: usize) -> Vec<Candidate> {
    candidates.into_iter().filter(|c| !is_seen(seen, c.row)).take(k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_items_are_dropped_before_the_first_k_candidates_are_taken() {
        let found: Vec<Candidate> = [5, 1, 7, 2, 9].iter().map(|&row| Candidate { row, similarity: 0.0 }).collect();
        let rows = |c: Vec<Candidate>| c.iter().map(|c| c.row).collect::<Vec<_>>();
        assert_eq!(rows(unseen(found.clone(), &[1, 7], 2)), vec![5, 2]);
        assert_eq!(rows(unseen(found.clone(), &[], 2)), vec![5, 1]);
        assert_eq!(rows(unseen(found, &[1, 2, 5, 7, 9], 3)), Vec::<usize>::new());
    }
}
