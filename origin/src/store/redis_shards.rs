//! User and item embeddings over N independent Redis servers.
//!
//! An id's shard is `cascade_shared::hashing::shard_for(id, N)` (jump consistent hashing); the key
//! is `cascade_shared::keys::embedding_key`. A batch is grouped by shard and every shard is asked
//! at once, with one `MGET` each, under a timeout: a shard that is down or slow makes its own ids
//! [`StoreError::Unavailable`] and leaves the others' answers intact.

use std::time::Duration;

use super::shards::ShardSet;
use super::{ComponentHealth, EmbeddingStore, Lookup, StoreError};
use async_trait::async_trait;
use cascade_shared::embedding::{ValueEncoding, decode_value, encode_value_as};
use cascade_shared::keys::{EntityKind, embedding_key};
use futures::future::join_all;

/// Embeddings sharded over Redis servers.
pub struct RedisShardStore {
    shards: ShardSet,
    bundle_id: String,
    dim: usize,
    encoding: ValueEncoding,
}

impl RedisShardStore {
    /// A store over `urls` (in shard order) for the embeddings of `bundle_id`.
    pub fn new(urls: &[String], bundle_id: &str, dim: usize, timeout: Duration) -> Result<Self, StoreError> {
        let shards = ShardSet::new(urls, timeout)?;
        Ok(RedisShardStore { shards, bundle_id: bundle_id.to_string(), dim, encoding: ValueEncoding::F32 })
    }

    /// Writes values in `encoding` (reads accept either, by length).
    pub fn with_encoding(mut self, encoding: ValueEncoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Groups positions of `ids` by owning shard.
    fn group_by_shard(&self, ids: &[String]) -> Vec<Vec<usize>> {
        let mut groups = vec![Vec::new(); self.shards.len()];
        for (position, id) in ids.iter().enumerate() {
            groups[self.shards.shard_of(id)].push(position);
        }
        groups
    }

    async fn mget(&self, shard: usize, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut command = redis::cmd("MGET");
        for key in &keys {
            command.arg(key);
        }
        self.shards.query(shard, &command, None).await
    }
}

#[async_trait]
impl EmbeddingStore for RedisShardStore {
    async fn get_batch(&self, kind: EntityKind, ids: &[String]) -> Vec<Lookup> {
        let groups = self.group_by_shard(ids);
        let requests =
            groups.iter().enumerate().filter(|(_, positions)| !positions.is_empty()).map(|(shard, positions)| {
                let keys = positions.iter().map(|&p| embedding_key(kind, &self.bundle_id, &ids[p])).collect::<Vec<_>>();
                async move { (shard, positions, keys.clone(), self.mget(shard, keys).await) }
            });
        let mut results: Vec<Lookup> = vec![Ok(None); ids.len()];
        for (shard, positions, keys, answer) in join_all(requests).await {
            match answer {
                Ok(values) => {
                    for ((&position, key), value) in positions.iter().zip(keys).zip(values) {
                        results[position] = match value {
                            None => Ok(None),
                            Some(bytes) => decode_value(&bytes, self.dim)
                                .map(Some)
                                .map_err(|e| StoreError::Corrupt { key, message: e.to_string() }),
                        };
                    }
                }
                Err(error) => {
                    tracing::warn!(shard, %error, "embedding shard unavailable");
                    for &position in positions {
                        results[position] = Err(error.clone());
                    }
                }
            }
        }
        results
    }

    async fn set_batch(&self, kind: EntityKind, entries: &[(String, Vec<f32>)]) -> Result<usize, StoreError> {
        let ids: Vec<String> = entries.iter().map(|(id, _)| id.clone()).collect();
        let groups = self.group_by_shard(&ids);
        let writes = groups.iter().enumerate().filter(|(_, positions)| !positions.is_empty()).map(
            |(shard, positions)| async move {
                let mut command = redis::cmd("MSET");
                for &position in positions {
                    let (id, vector) = &entries[position];
                    command.arg(embedding_key(kind, &self.bundle_id, id)).arg(encode_value_as(vector, self.encoding));
                }
                // Writes get a longer budget than reads: bulk loads send large batches.
                let budget = self.shards.timeout().max(Duration::from_secs(10));
                self.shards.query::<()>(shard, &command, Some(budget)).await.map(|()| positions.len())
            },
        );
        let mut written = 0;
        for result in join_all(writes).await {
            written += result?;
        }
        Ok(written)
    }

    async fn health(&self) -> Vec<ComponentHealth> {
        let checks = (0..self.shards.len()).map(|index| async move {
            let name = format!("redis_shard_{index}");
            let url = self.shards.url(index).to_string();
            match self.shards.query::<String>(index, &redis::cmd("PING"), None).await {
                Ok(_) => ComponentHealth { name, healthy: true, detail: url },
                Err(error) => ComponentHealth { name, healthy: false, detail: format!("{url}: {error}") },
            }
        });
        join_all(checks).await
    }

    fn describe(&self) -> String {
        format!("redis ({} shards, jump consistent hashing)", self.shards.len())
    }
}
