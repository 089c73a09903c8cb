//! [`RedisUserState`]: generations, purchases, sessions and L2 lists on each user's Redis shard
//! (keys from `cascade_shared::keys`), over the process's one [`ShardSet`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cascade_shared::keys::{generation_key, l2_key, purchases_key, recent_key};
use cascade_shared::wire::RecItem;

use super::ListKey;
use super::rules::Effects;
use super::state::{SESSION_ITEMS, SESSION_TTL, UserStateBackend};
use crate::redis::ShardSet;
use crate::store::StoreError;

/// Generations, purchases and L2 on each user's Redis shard (`cascade_shared::keys`).
pub struct RedisUserState {
    shards: Arc<ShardSet>,
}

impl RedisUserState {
    /// State over the same shards as the embeddings.
    pub fn new(shards: Arc<ShardSet>) -> Self {
        RedisUserState { shards }
    }

    /// Runs `command` on the shard that owns `user` (after moving the user's state there, during
    /// an online reshard).
    async fn query<T: redis::FromRedisValue>(&self, user: &str, command: &redis::Cmd) -> Result<T, StoreError> {
        self.moved(user).await?;
        Ok(self.shards.query(self.shards.shard_of(user), command, None).await?)
    }

    /// Runs `pipeline` on the shard that owns `user`, as [`RedisUserState::query`].
    async fn pipeline(&self, user: &str, pipeline: &redis::Pipeline) -> Result<(), StoreError> {
        self.moved(user).await?;
        Ok(self.shards.pipeline(self.shards.shard_of(user), pipeline, None).await?)
    }

    /// During an online reshard, moves the user's state keys to their new shard first
    /// (`redis::moving`); L2 lists are not moved (a cache: a miss recomputes).
    async fn moved(&self, user: &str) -> Result<(), StoreError> {
        if self.shards.previous().is_some() {
            let keys = [generation_key(user), purchases_key(user), recent_key(user)];
            self.shards.ensure_moved(user, &keys).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl UserStateBackend for RedisUserState {
    async fn generation(&self, user: &str) -> Result<u64, StoreError> {
        let value: Option<u64> = self.query(user, redis::cmd("GET").arg(generation_key(user))).await?;
        Ok(value.unwrap_or(0))
    }

    async fn bump_generation(&self, user: &str) -> Result<u64, StoreError> {
        self.query(user, redis::cmd("INCR").arg(generation_key(user))).await
    }

    async fn add_purchase(&self, user: &str, item: &str) -> Result<(), StoreError> {
        let command = redis::cmd("SADD").arg(purchases_key(user)).arg(item).clone();
        self.query::<i64>(user, &command).await.map(|_newly_added| ())
    }

    async fn purchases(&self, user: &str) -> Result<HashSet<String>, StoreError> {
        self.query(user, redis::cmd("SMEMBERS").arg(purchases_key(user))).await
    }

    async fn push_recent(&self, user: &str, item: &str) -> Result<(), StoreError> {
        let key = recent_key(user);
        let mut pipeline = redis::pipe();
        pipeline.atomic().cmd("LPUSH").arg(&key).arg(item).ignore();
        pipeline.cmd("LTRIM").arg(&key).arg(0).arg(SESSION_ITEMS as i64 - 1).ignore();
        pipeline.cmd("EXPIRE").arg(&key).arg(SESSION_TTL.as_secs()).ignore();
        self.pipeline(user, &pipeline).await
    }

    async fn recent(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let command = redis::cmd("LRANGE").arg(recent_key(user)).arg(0).arg(SESSION_ITEMS as i64 - 1).clone();
        self.query(user, &command).await
    }

    async fn apply(&self, user: &str, effects: Effects<'_>) -> Result<(), StoreError> {
        // One round trip, applied whole (MULTI/EXEC): the keys share the user's shard.
        let mut pipeline = redis::pipe();
        pipeline.atomic();
        if let Some(item) = effects.purchase {
            pipeline.cmd("SADD").arg(purchases_key(user)).arg(item).ignore();
        }
        if let Some(item) = effects.session_item {
            let key = recent_key(user);
            pipeline.cmd("LPUSH").arg(&key).arg(item).ignore();
            pipeline.cmd("LTRIM").arg(&key).arg(0).arg(SESSION_ITEMS as i64 - 1).ignore();
            pipeline.cmd("EXPIRE").arg(&key).arg(SESSION_TTL.as_secs()).ignore();
        }
        if effects.invalidate {
            pipeline.cmd("INCR").arg(generation_key(user)).ignore();
        }
        if effects == Effects::default() {
            return Ok(());
        }
        self.pipeline(user, &pipeline).await
    }

    async fn l2_get(&self, key: &ListKey) -> Result<Option<Vec<RecItem>>, StoreError> {
        let redis_key = l2_key(&key.bundle, &key.user, &key.segment.to_string(), key.generation);
        let value: Option<Vec<u8>> = self.query(&key.user, redis::cmd("GET").arg(&redis_key)).await?;
        match value {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt { key: redis_key, message: e.to_string() }),
        }
    }

    async fn l2_set(&self, key: &ListKey, items: &[RecItem], ttl: Duration) -> Result<(), StoreError> {
        let redis_key = l2_key(&key.bundle, &key.user, &key.segment.to_string(), key.generation);
        let body = serde_json::to_vec(items)
            .map_err(|e| StoreError::Corrupt { key: redis_key.clone(), message: e.to_string() })?;
        let mut command = redis::cmd("SET");
        command.arg(&redis_key).arg(body).arg("PX").arg(ttl.as_millis().max(1) as u64);
        self.query::<()>(&key.user, &command).await
    }
}
