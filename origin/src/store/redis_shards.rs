//! User and item embeddings over N independent Redis servers.
//!
//! An id's shard is `cascade_shared::hashing::shard_for(id, N)` (jump consistent hashing); the key
//! is `cascade_shared::keys::embedding_key`. A batch is grouped by shard and every shard is asked
//! at once, with one `MGET` each, under a timeout: a shard that is down or slow makes its own ids
//! [`StoreError::Unavailable`] and leaves the others' answers intact.

use std::time::Duration;

use async_trait::async_trait;
use cascade_shared::embedding::{decode_value, encode_value};
use cascade_shared::hashing::shard_for;
use cascade_shared::keys::{EntityKind, embedding_key};
use futures::future::join_all;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::{ComponentHealth, EmbeddingStore, Lookup, StoreError};

struct Shard {
    url: String,
    client: redis::Client,
    /// Connected on first use and retried on the next call after a failure, so a shard that is
    /// down at start does not stop the origin from starting.
    connection: OnceCell<ConnectionManager>,
}

/// Embeddings sharded over Redis servers.
pub struct RedisShardStore {
    shards: Vec<Shard>,
    bundle_id: String,
    dim: usize,
    timeout: Duration,
}

impl RedisShardStore {
    /// A store over `urls` (in shard order) for the embeddings of `bundle_id`.
    pub fn new(urls: &[String], bundle_id: &str, dim: usize, timeout: Duration) -> Result<Self, StoreError> {
        let shards = urls
            .iter()
            .enumerate()
            .map(|(index, url)| {
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| StoreError::Unavailable { shard: index, message: format!("bad URL {url}: {e}") })?;
                Ok(Shard { url: url.clone(), client, connection: OnceCell::new() })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(RedisShardStore { shards, bundle_id: bundle_id.to_string(), dim, timeout })
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    async fn connection(&self, index: usize) -> Result<ConnectionManager, StoreError> {
        let shard = &self.shards[index];
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let connect = shard.connection.get_or_try_init(|| shard.client.get_connection_manager_with_config(config));
        match tokio::time::timeout(self.timeout.max(Duration::from_millis(200)), connect).await {
            Ok(Ok(connection)) => Ok(connection.clone()),
            Ok(Err(e)) => Err(StoreError::Unavailable { shard: index, message: format!("{}: {e}", shard.url) }),
            Err(_) => {
                Err(StoreError::Unavailable { shard: index, message: format!("{}: connect timed out", shard.url) })
            }
        }
    }

    /// Groups positions of `ids` by owning shard.
    fn group_by_shard(&self, ids: &[String]) -> Vec<Vec<usize>> {
        let mut groups = vec![Vec::new(); self.shards.len()];
        let shard_count = u32::try_from(self.shards.len()).unwrap_or(u32::MAX);
        for (position, id) in ids.iter().enumerate() {
            groups[shard_for(id, shard_count) as usize].push(position);
        }
        groups
    }

    async fn mget(&self, shard: usize, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut connection = self.connection(shard).await?;
        let mut command = redis::cmd("MGET");
        for key in &keys {
            command.arg(key);
        }
        match tokio::time::timeout(self.timeout, command.query_async(&mut connection)).await {
            Ok(Ok(values)) => Ok(values),
            Ok(Err(e)) => Err(StoreError::Unavailable { shard, message: e.to_string() }),
            Err(_) => Err(StoreError::Unavailable { shard, message: format!("no answer within {:?}", self.timeout) }),
        }
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
                    command.arg(embedding_key(kind, &self.bundle_id, id)).arg(encode_value(vector));
                }
                let mut connection = self.connection(shard).await?;
                // Writes get a longer budget than reads: bulk loads send large batches.
                let budget = self.timeout.max(Duration::from_secs(10));
                match tokio::time::timeout(budget, command.query_async::<()>(&mut connection)).await {
                    Ok(Ok(())) => Ok(positions.len()),
                    Ok(Err(e)) => Err(StoreError::Unavailable { shard, message: e.to_string() }),
                    Err(_) => Err(StoreError::Unavailable { shard, message: "write timed out".into() }),
                }
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
            let url = &self.shards[index].url;
            let answer = match self.connection(index).await {
                Ok(mut connection) => {
                    tokio::time::timeout(self.timeout, redis::cmd("PING").query_async::<String>(&mut connection))
                        .await
                        .map_err(|_| "PING timed out".to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()))
                }
                Err(e) => Err(e.to_string()),
            };
            match answer {
                Ok(_) => ComponentHealth { name, healthy: true, detail: url.clone() },
                Err(error) => ComponentHealth { name, healthy: false, detail: format!("{url}: {error}") },
            }
        });
        join_all(checks).await
    }

    fn describe(&self) -> String {
        format!("redis ({} shards, jump consistent hashing)", self.shards.len())
    }
}
