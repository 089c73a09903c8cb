//! [`ShardSet`]: the independent Redis servers of a deployment, addressed by position, with jump
//! consistent hashing, lazy connections (a shard that is down at start does not stop the origin)
//! and a timeout on every call (a slow shard counts as unavailable).
//!
//! One `ShardSet` is built per process (by `crate::app`) and shared by everything that reaches the
//! shards: the embedding store, user state, L2 and precomputed lists. Each shard has one
//! multiplexed redis-rs connection and, for plain URLs, a pool of lean `MGET` connections.

use std::time::Duration;

use cascade_shared::hashing::shard_for;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::pool::MgetPool;
use super::tls::RedisTls;
use super::url::redact;

/// A shard that did not answer (down, or slower than the timeout), or a URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shard {shard} unavailable: {message}")]
pub struct ShardError {
    /// Position of the shard in the configured list.
    pub shard: usize,
    /// What happened.
    pub message: String,
}

struct Shard {
    url: String,
    client: redis::Client,
    /// Connected on first use and retried on the next call after a failure.
    connection: OnceCell<ConnectionManager>,
    /// The lean MGET reader (every URL without `?` parameters).
    mget: Option<MgetPool>,
}

/// The shards, in configured order (jump hashing names them by position).
pub struct ShardSet {
    shards: Vec<Shard>,
    timeout: Duration,
}

impl ShardSet {
    /// Shards at `urls` with a per-call `timeout`, plain or with the system's TLS roots.
    pub fn new(urls: &[String], timeout: Duration) -> Result<Self, ShardError> {
        Self::with_tls(urls, timeout, &RedisTls::default())
    }

    /// Shards at `urls` with a per-call `timeout`; `rediss://` ones with `tls`.
    pub fn with_tls(urls: &[String], timeout: Duration, tls: &RedisTls) -> Result<Self, ShardError> {
        let shards = urls
            .iter()
            .enumerate()
            .map(|(index, url)| {
                let client = tls
                    .client(url)
                    .map_err(|e| ShardError { shard: index, message: format!("bad URL {}: {e}", redact(url)) })?;
                let mget = MgetPool::for_url(url, tls);
                Ok(Shard { url: url.clone(), client, connection: OnceCell::new(), mget })
            })
            .collect::<Result<Vec<_>, ShardError>>()?;
        Ok(ShardSet { shards, timeout })
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The shard that owns `id`.
    pub fn shard_of(&self, id: &str) -> usize {
        shard_for(id, u32::try_from(self.shards.len()).unwrap_or(u32::MAX)) as usize
    }

    /// A shard's URL.
    pub fn url(&self, index: usize) -> &str {
        &self.shards[index].url
    }

    /// A shard's lean `MGET` pool (none for a URL with `?` parameters).
    pub fn mget_pool(&self, index: usize) -> Option<&MgetPool> {
        self.shards[index].mget.as_ref()
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A connection to shard `index` (shared, multiplexed, reconnecting).
    pub async fn connection(&self, index: usize) -> Result<ConnectionManager, ShardError> {
        let shard = &self.shards[index];
        let connect_budget = self.timeout.max(Duration::from_millis(200));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_budget))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let connect = shard.connection.get_or_try_init(|| shard.client.get_connection_manager_with_config(config));
        match tokio::time::timeout(connect_budget, connect).await {
            Ok(Ok(connection)) => Ok(connection.clone()),
            Ok(Err(e)) => Err(ShardError { shard: index, message: format!("{}: {e}", redact(&shard.url)) }),
            Err(_) => Err(ShardError { shard: index, message: format!("{}: connect timed out", redact(&shard.url)) }),
        }
    }

    /// Runs `command` on shard `index` within `budget` (the shard's timeout when `None`).
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        index: usize,
        command: &redis::Cmd,
        budget: Option<Duration>,
    ) -> Result<T, ShardError> {
        let mut connection = self.connection(index).await?;
        let budget = budget.unwrap_or(self.timeout);
        match tokio::time::timeout(budget, command.query_async(&mut connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(ShardError { shard: index, message: e.to_string() }),
            Err(_) => Err(ShardError { shard: index, message: format!("no answer within {budget:?}") }),
        }
    }

    /// Runs a pipeline on shard `index` within `budget` (the shard's timeout when `None`).
    pub async fn pipeline(
        &self,
        index: usize,
        pipeline: &redis::Pipeline,
        budget: Option<Duration>,
    ) -> Result<(), ShardError> {
        self.pipeline_query(index, pipeline, budget).await
    }

    /// [`ShardSet::pipeline`], returning the replies of the commands not ignored.
    pub async fn pipeline_query<T: redis::FromRedisValue>(
        &self,
        index: usize,
        pipeline: &redis::Pipeline,
        budget: Option<Duration>,
    ) -> Result<T, ShardError> {
        let mut connection = self.connection(index).await?;
        let budget = budget.unwrap_or(self.timeout);
        match tokio::time::timeout(budget, pipeline.query_async::<T>(&mut connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(ShardError { shard: index, message: e.to_string() }),
            Err(_) => Err(ShardError { shard: index, message: format!("no answer within {budget:?}") }),
        }
    }
}
