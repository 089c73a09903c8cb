//! [`RedisCatalogueStore`]: the catalogue shared by every origin process, in one hash
//! (`cascade:catalogue:state`, item id → JSON state) and a version counter
//! (`cascade:catalogue:version`) on the shard that owns the id `catalogue` (so `cascade reshard`
//! moves both with the other keys). A change writes its items and bumps the version in one
//! MULTI/EXEC; each process polls the version and reloads the hash when it moved.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use cascade_shared::keys::{CATALOGUE_SHARD_ID, catalogue_state_key, catalogue_version_key};

use super::{CatalogueError, CatalogueStore, ItemState};
use crate::redis::ShardSet;

/// The catalogue in Redis.
pub struct RedisCatalogueStore {
    shards: Arc<ShardSet>,
    shard: usize,
}

impl RedisCatalogueStore {
    /// The store on the shard of `catalogue` among `shards`.
    pub fn new(shards: Arc<ShardSet>) -> Self {
        let shard = shards.shard_of(CATALOGUE_SHARD_ID);
        RedisCatalogueStore { shards, shard }
    }
}

fn unavailable(error: impl std::fmt::Display) -> CatalogueError {
    CatalogueError::Unavailable(error.to_string())
}

impl RedisCatalogueStore {
    /// During an online reshard, moves the catalogue's keys to their new shard first.
    async fn moved(&self) -> Result<(), CatalogueError> {
        if self.shards.previous().is_some() {
            let keys = [catalogue_state_key(), catalogue_version_key()];
            self.shards.ensure_moved(CATALOGUE_SHARD_ID, &keys).await.map_err(unavailable)?;
        }
        Ok(())
    }
}

#[async_trait]
impl CatalogueStore for RedisCatalogueStore {
    async fn load(&self) -> Result<(u64, HashMap<String, ItemState>), CatalogueError> {
        self.moved().await?;
        let mut pipeline = redis::pipe();
        pipeline.atomic().cmd("GET").arg(catalogue_version_key()).cmd("HGETALL").arg(catalogue_state_key());
        let (version, raw): (Option<u64>, HashMap<String, Vec<u8>>) =
            self.shards.pipeline_query(self.shard, &pipeline, None).await.map_err(unavailable)?;
        let mut items = HashMap::with_capacity(raw.len());
        for (id, bytes) in raw {
            match serde_json::from_slice(&bytes) {
                Ok(state) => {
                    items.insert(id, state);
                }
                // One bad entry (written by hand?) must not hide the others' state.
                Err(error) => tracing::error!(item_id = %id, %error, "unreadable catalogue entry skipped"),
            }
        }
        Ok((version.unwrap_or(0), items))
    }

    async fn version(&self) -> Result<u64, CatalogueError> {
        self.moved().await?;
        let version: Option<u64> = self
            .shards
            .query(self.shard, redis::cmd("GET").arg(catalogue_version_key()), None)
            .await
            .map_err(unavailable)?;
        Ok(version.unwrap_or(0))
    }

    async fn save(&self, changed: &[(String, Option<ItemState>)]) -> Result<(), CatalogueError> {
        self.moved().await?;
        let mut pipeline = redis::pipe();
        pipeline.atomic();
        for (id, state) in changed {
            match state {
                Some(state) => {
                    let bytes = serde_json::to_vec(state).map_err(unavailable)?;
                    pipeline.cmd("HSET").arg(catalogue_state_key()).arg(id).arg(bytes).ignore();
                }
                None => {
                    pipeline.cmd("HDEL").arg(catalogue_state_key()).arg(id).ignore();
                }
            }
        }
        pipeline.cmd("INCR").arg(catalogue_version_key()).ignore();
        self.shards.pipeline(self.shard, &pipeline, None).await.map_err(unavailable)
    }
}
