//! [`EmbeddingStore`]: where user (and item) embeddings live.
//!
//! Three implementations: [`memory::MemoryStore`] for the embedded default,
//! [`redis_cluster::RedisClusterStore`] over a Redis Cluster, and
//! [`redis_shards::RedisShardStore`] over N Redis servers with jump consistent hashing. Every lookup
//! says which of three things happened: found, missing (the store answered: no such id), or
//! unavailable (the shard that owns the id did not answer) — never a silent "unknown" for a
//! shard that is down.
//!
//! This folder owns only the embeddings. The Redis plumbing underneath is `crate::redis`; per-user
//! state and L2 are `crate::cache`; precomputed lists are `crate::recommend::precomputed`.

pub mod memory;
pub mod redis_cluster;
pub mod redis_shards;
pub mod rows;

pub use rows::{EmbeddingRows, RowState};

use async_trait::async_trait;
use cascade_shared::keys::EntityKind;

/// A lookup that could not be answered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The shard owning the id did not answer (down, or slower than the timeout).
    #[error("shard {shard} unavailable: {message}")]
    Unavailable {
        /// Position of the shard in the configured list.
        shard: usize,
        /// What happened.
        message: String,
    },
    /// No value, on a shard whose last health check found it empty or holding another bundle: the
    /// id is not new, its shard lost it (counted as `missing_on_degraded_shard`, not cold start).
    #[error("no value on shard {shard}, which lost its data (empty or another bundle)")]
    MissingOnDegradedShard {
        /// Position of the shard in the configured list.
        shard: usize,
    },
    /// The stored value is malformed (e.g. wrong length for the dimension).
    #[error("value at {key} is malformed: {message}")]
    Corrupt {
        /// The Redis key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl From<crate::redis::ShardError> for StoreError {
    fn from(error: crate::redis::ShardError) -> Self {
        StoreError::Unavailable { shard: error.shard, message: error.message }
    }
}

/// The result of looking up one id: `Ok(None)` is "the store has no such id".
pub type Lookup = Result<Option<Vec<f32>>, StoreError>;

pub use crate::health::{ComponentHealth, HealthState};

/// Embedding lookups and writes.
#[async_trait]
pub trait EmbeddingStore: Send + Sync {
    /// Looks up many ids at once; the result has one entry per id, in order.
    async fn get_batch(&self, kind: EntityKind, ids: &[String]) -> Vec<Lookup>;

    /// Looks up many ids into `rows` (reset to one row per id, in order): the answers of
    /// [`Self::get_batch`] without a vector per id, for callers that look up in bulk (`load`'s
    /// verification, the store bench). Stores with a lean batch path override it.
    async fn get_rows(&self, kind: EntityKind, ids: &[String], rows: &mut EmbeddingRows) {
        let lookups = self.get_batch(kind, ids).await;
        rows.fill_from(lookups, |index| ids[index].clone());
    }

    /// Writes many embeddings; returns how many were written.
    async fn set_batch(&self, kind: EntityKind, entries: &[(String, Vec<f32>)]) -> Result<usize, StoreError>;

    /// Health of each backing component.
    async fn health(&self) -> Vec<ComponentHealth>;

    /// One line for logs, e.g. `redis (3 shards)`.
    fn describe(&self) -> String;

    /// Looks up one id.
    async fn get(&self, kind: EntityKind, id: &str) -> Lookup {
        self.get_batch(kind, &[id.to_string()]).await.pop().unwrap_or(Ok(None))
    }
}
