//! User and item embeddings in a Redis Cluster (the `redis` crate's async cluster client).
//!
//! The cluster owns placement (16,384 hash slots over its masters; resharding is Redis's own
//! `redis-cli --cluster reshard`). A batch is one `MGET`, which the client splits by slot and sends
//! to every master concurrently. When that fails (a master down, a slot moving), the batch is
//! retried one slot at a time (one `MGET` per slot, 16 in flight), so the ids on healthy masters are
//! still answered and only the others are [`StoreError::Unavailable`]: never a silent "unknown".
//! (Retrying every key at once made the client time out on all of them: measured in
//! `tests/components/cluster.rs`.) Run the cluster with `cluster-require-full-coverage no`, or one master down
//! stops the others from answering.

use std::time::Duration;

use crate::redis::cluster::key_slot;
use crate::redis::tls::RedisTls;
use async_trait::async_trait;
use cascade_shared::embedding::{ValueEncoding, decode_value, encode_value_as};
use cascade_shared::keys::{EntityKind, embedding_key};
use futures::StreamExt;
use redis::cluster_async::ClusterConnection;

use super::{ComponentHealth, EmbeddingStore, HealthState, Lookup, StoreError};

/// Embeddings in a Redis Cluster.
pub struct RedisClusterStore {
    connection: ClusterConnection,
    nodes: Vec<String>,
    bundle_id: String,
    dim: usize,
    encoding: ValueEncoding,
    timeout: Duration,
}

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    // The cluster, not one of our shards: shard 0 stands for "the cluster".
    StoreError::Unavailable { shard: 0, message: format!("redis cluster: {error}") }
}

impl RedisClusterStore {
    /// Connects to the cluster through any of `nodes` (seed URLs).
    /// `rediss://` seeds connect with `tls`'s CA and client certificate.
    pub async fn connect(
        nodes: &[String],
        bundle_id: &str,
        dim: usize,
        timeout: Duration,
        tls: &RedisTls,
    ) -> Result<Self, StoreError> {
        let client = crate::redis::cluster::client(nodes, timeout, tls).map_err(unavailable)?;
        let connection = client.get_async_connection().await.map_err(unavailable)?;
        Ok(RedisClusterStore {
            connection,
            nodes: nodes.to_vec(),
            bundle_id: bundle_id.to_string(),
            dim,
            encoding: ValueEncoding::F32,
            timeout,
        })
    }

    /// Writes values in `encoding` (reads accept either, by length).
    pub fn with_encoding(mut self, encoding: ValueEncoding) -> Self {
        self.encoding = encoding;
        self
    }

    fn decode(&self, key: String, value: Option<Vec<u8>>) -> Lookup {
        match value {
            None => Ok(None),
            Some(bytes) => decode_value(&bytes, self.dim)
                .map(Some)
                .map_err(|e| StoreError::Corrupt { key, message: e.to_string() }),
        }
    }

    /// One `MGET` of keys that share a slot (so one master answers it).
    async fn get_slot(&self, keys: Vec<(usize, String)>) -> Vec<(usize, Lookup)> {
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("MGET");
        for (_, key) in &keys {
            command.arg(key);
        }
        let mget = command.query_async::<Vec<Option<Vec<u8>>>>(&mut connection);
        match tokio::time::timeout(self.timeout, mget).await {
            Ok(Ok(values)) if values.len() == keys.len() => {
                keys.into_iter().zip(values).map(|((at, key), value)| (at, self.decode(key, value))).collect()
            }
            outcome => {
                let error = match outcome {
                    Ok(Err(error)) => unavailable(error),
                    _ => unavailable(format!("no answer within {:?}", self.timeout)),
                };
                keys.into_iter().map(|(at, _)| (at, Err(error.clone()))).collect()
            }
        }
    }
}

#[async_trait]
impl EmbeddingStore for RedisClusterStore {
    async fn get_batch(&self, kind: EntityKind, ids: &[String]) -> Vec<Lookup> {
        if ids.is_empty() {
            return Vec::new();
        }
        let keys: Vec<String> = ids.iter().map(|id| embedding_key(kind, &self.bundle_id, id)).collect();
        let mut connection = self.connection.clone();
        let mut command = redis::cmd("MGET");
        command.arg(&keys);
        let mget = command.query_async::<Vec<Option<Vec<u8>>>>(&mut connection);
        match tokio::time::timeout(self.timeout, mget).await {
            Ok(Ok(values)) if values.len() == keys.len() => {
                keys.into_iter().zip(values).map(|(key, value)| self.decode(key, value)).collect()
            }
            outcome => {
                let reason = match outcome {
                    Ok(Ok(values)) => format!("{} values for {} keys", values.len(), ids.len()),
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => format!("no answer within {:?}", self.timeout),
                };
                tracing::warn!(%reason, "cluster MGET failed; retrying slot by slot");
                let mut by_slot: std::collections::BTreeMap<u16, Vec<(usize, String)>> = Default::default();
                for (at, key) in keys.into_iter().enumerate() {
                    by_slot.entry(key_slot(key.as_bytes())).or_default().push((at, key));
                }
                let mut results: Vec<Lookup> = vec![Ok(None); ids.len()];
                let mut retries =
                    futures::stream::iter(by_slot.into_values().map(|keys| self.get_slot(keys))).buffer_unordered(16);
                while let Some(answers) = retries.next().await {
                    for (at, lookup) in answers {
                        results[at] = lookup;
                    }
                }
                results
            }
        }
    }

    async fn set_batch(&self, kind: EntityKind, entries: &[(String, Vec<f32>)]) -> Result<usize, StoreError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let mut command = redis::cmd("MSET");
        for (id, vector) in entries {
            command.arg(embedding_key(kind, &self.bundle_id, id)).arg(encode_value_as(vector, self.encoding));
        }
        let mut connection = self.connection.clone();
        let budget = self.timeout.max(Duration::from_secs(10));
        match tokio::time::timeout(budget, command.query_async::<()>(&mut connection)).await {
            Ok(Ok(())) => Ok(entries.len()),
            Ok(Err(error)) => Err(unavailable(error)),
            Err(_) => Err(unavailable(format!("MSET: no answer within {budget:?}"))),
        }
    }

    async fn health(&self) -> Vec<ComponentHealth> {
        let mut connection = self.connection.clone();
        let info = tokio::time::timeout(
            self.timeout,
            redis::cmd("CLUSTER").arg("INFO").query_async::<String>(&mut connection),
        )
        .await;
        // The details go to the log: `/readyz` names states, never addresses or raw errors.
        let state = match info {
            Ok(Ok(text)) if text.contains("cluster_state:ok") => HealthState::Ok,
            Ok(Ok(text)) => {
                tracing::warn!(state = text.lines().next().unwrap_or_default(), "redis cluster degraded");
                HealthState::Degraded
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "redis cluster health check failed");
                HealthState::Unreachable
            }
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "redis cluster health check: no answer");
                HealthState::Unreachable
            }
        };
        vec![ComponentHealth::new("redis_cluster", state)]
    }

    fn describe(&self) -> String {
        format!("redis cluster ({} seed nodes)", self.nodes.len())
    }
}
