//! Precomputed lists: each user's top list written by `cascade precompute`, read on the request
//! path as candidates for real-time re-ranking and, when that cannot finish, as the answer.
//!
//! Stored at `cascade_shared::keys::precomputed_key(bundle, user)` on the user's shard, as JSON
//! items, with a TTL. The embedded default has none ([`NoPrecomputed`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cascade_shared::keys::precomputed_key;
use cascade_shared::wire::RecItem;
use futures::future::join_all;

use crate::redis::ShardSet;
use crate::store::StoreError;

/// Where precomputed lists live.
#[async_trait]
pub trait PrecomputedLists: Send + Sync {
    /// The user's list, if one was precomputed.
    async fn get(&self, user: &str) -> Result<Option<Vec<RecItem>>, StoreError>;
    /// Writes lists with a TTL; returns how many were written.
    async fn put_many(&self, lists: &[(String, Vec<RecItem>)], ttl: Duration) -> Result<usize, StoreError>;
}

/// No precomputed lists (the embedded default).
pub struct NoPrecomputed;

#[async_trait]
impl PrecomputedLists for NoPrecomputed {
    async fn get(&self, _user: &str) -> Result<Option<Vec<RecItem>>, StoreError> {
        Ok(None)
    }

    async fn put_many(&self, _lists: &[(String, Vec<RecItem>)], _ttl: Duration) -> Result<usize, StoreError> {
        Ok(0)
    }
}

/// Precomputed lists on the users' Redis shards.
pub struct RedisPrecomputed {
    shards: Arc<ShardSet>,
    bundle_id: String,
}

impl RedisPrecomputed {
    /// Lists of `bundle_id` over `shards`.
    pub fn new(shards: Arc<ShardSet>, bundle_id: &str) -> Self {
        RedisPrecomputed { shards, bundle_id: bundle_id.to_string() }
    }
}

#[async_trait]
impl PrecomputedLists for RedisPrecomputed {
    async fn get(&self, user: &str) -> Result<Option<Vec<RecItem>>, StoreError> {
        let key = precomputed_key(&self.bundle_id, user);
        self.shards.ensure_moved(user, std::slice::from_ref(&key)).await?;
        let value: Option<Vec<u8>> = self
            .shards
            .query(self.shards.shard_of(user), redis::cmd("GET").arg(&key), None)
            .await
            .map_err(StoreError::from)?;
        match value {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt { key, message: e.to_string() }),
        }
    }

    async fn put_many(&self, lists: &[(String, Vec<RecItem>)], ttl: Duration) -> Result<usize, StoreError> {
        let mut by_shard: Vec<redis::Pipeline> = (0..self.shards.len()).map(|_| redis::pipe()).collect();
        let mut counts = vec![0usize; self.shards.len()];
        for (user, items) in lists {
            let key = precomputed_key(&self.bundle_id, user);
            let body = serde_json::to_vec(items)
                .map_err(|e| StoreError::Corrupt { key: key.clone(), message: e.to_string() })?;
            let shard = self.shards.shard_of(user);
            by_shard[shard].cmd("SET").arg(key).arg(body).arg("EX").arg(ttl.as_secs().max(1)).ignore();
            counts[shard] += 1;
        }
        let budget = Some(self.shards.timeout().max(Duration::from_secs(10)));
        let writes = by_shard.iter().zip(&counts).enumerate().filter(|(_, (_, count))| **count > 0).map(
            |(shard, (pipeline, &count))| async move {
                self.shards.pipeline(shard, pipeline, budget).await.map(|()| count).map_err(StoreError::from)
            },
        );
        let mut written = 0;
        for result in join_all(writes).await {
            written += result?;
        }
        Ok(written)
    }
}
