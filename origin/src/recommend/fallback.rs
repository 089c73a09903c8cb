//! The fallback chain, for when the real-time path cannot answer: the user's precomputed list,
//! else the segment list, else the popular list, filtered by the user's purchases.

use std::collections::HashSet;
use std::time::Instant;

use cascade_shared::validate::{MAX_N, RecsQuery};
use cascade_shared::wire::{RecItem, Source};

use super::{Answer, RecommendError, Recommender, Timings};

/// Why the real-time path did not answer; [`FallbackReason::as_str`] is the
/// `cascade_fallbacks_total{reason}` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackReason {
    /// The user has no embedding (a new user).
    ColdStart,
    /// The shard holding the user's embedding did not answer.
    ShardUnavailable,
    /// The user's stored embedding is malformed.
    CorruptEmbedding,
    /// The deadline passed (in retrieval, in the ranker's queue, or in inference).
    Deadline,
    /// The ranker's queue was full: load shed.
    RankerOverloaded,
    /// The ranker failed.
    RankerError,
    /// FAISS failed.
    RetrievalError,
    /// The search queue was full: load shed.
    RetrievalOverloaded,
    /// No embedding, on a shard that lost its data (empty after a restart, or another bundle).
    MissingOnDegradedShard,
    /// The user's state (purchases, generation) was not read within the deadline, or is malformed
    /// (a shard that refused is [`FallbackReason::ShardUnavailable`]).
    StateUnavailable,
    /// The CPU is saturated (`crate::brownout`): real-time ranking is paused.
    Brownout,
}

impl FallbackReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::ColdStart => "cold_start",
            FallbackReason::ShardUnavailable => "shard_unavailable",
            FallbackReason::CorruptEmbedding => "corrupt_embedding",
            FallbackReason::Deadline => "deadline",
            FallbackReason::RankerOverloaded => "ranker_overloaded",
            FallbackReason::RankerError => "ranker_error",
            FallbackReason::RetrievalError => "retrieval_error",
            FallbackReason::RetrievalOverloaded => "retrieval_overloaded",
            FallbackReason::MissingOnDegradedShard => "missing_on_degraded_shard",
            FallbackReason::StateUnavailable => "state_unavailable",
            FallbackReason::Brownout => "brownout",
        }
    }
}

/// Why the real-time pipeline did not produce a list, with the user's precomputed list when there
/// is one: the next answer in the chain.
#[derive(Debug, Clone)]
pub struct Fallback {
    /// Why.
    pub reason: FallbackReason,
    /// The user's precomputed list, served as-is (never cached).
    pub precomputed: Option<Vec<RecItem>>,
}

impl Recommender {
    /// The fallback chain's answer for a user: the precomputed list, else the segment list (then
    /// popular), filtered.
    pub(super) fn fallback(
        &self,
        user_id: &str,
        query: RecsQuery,
        fallback: &Fallback,
        purchased: &HashSet<String>,
        started: Instant,
        mut timings: Timings,
    ) -> Result<Answer, RecommendError> {
        self.metrics.fallbacks.with_label_values(&[fallback.reason.as_str()]).inc();
        if let Some(precomputed) = &fallback.precomputed {
            let items = self.finish(precomputed, user_id, purchased, query, &mut timings);
            timings.add("total", started.elapsed());
            let list = self.list(Some(user_id), query.segment, Source::Precomputed, items, query.n);
            return Ok(Answer { list, timings, query: None });
        }
        let mut answer = self.segment_recs(query.segment, MAX_N)?;
        answer.list.user_id = Some(user_id.to_string());
        answer.list.items = self.finish(&answer.list.items, user_id, purchased, query, &mut timings);
        timings.0.extend(answer.timings.0);
        timings.add("total", started.elapsed());
        answer.timings = timings;
        Ok(answer)
    }
}
