//! A set of independent Redis servers addressed by position, with jump consistent hashing, lazy
//! connections (a shard that is down at start does not stop the origin) and a timeout on every
//! call (a slow shard counts as unavailable).

use std::time::Duration;

use cascade_shared::hashing::shard_for;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::StoreError;

struct Shard {
    url: String,
    client: redis::Client,
    /// Connected on first use and retried on the next call after a failure.
    connection: OnceCell<ConnectionManager>,
}

/// The shards, in configured order (jump hashing names them by position).
pub struct ShardSet {
    shards: Vec<Shard>,
    timeout: Duration,
}

impl ShardSet {
    /// Shards at `urls` with a per-call `timeout`.
    pub fn new(urls: &[String], timeout: Duration) -> Result<Self, StoreError> {
        let shards = urls
            .iter()
            .enumerate()
            .map(|(index, url)| {
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| StoreError::Unavailable { shard: index, message: format!("bad URL {url}: {e}") })?;
                Ok(Shard { url: url.clone(), client, connection: OnceCell::new() })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
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

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A connection to shard `index` (shared, multiplexed, reconnecting).
    pub async fn connection(&self, index: usize) -> Result<ConnectionManager, StoreError> {
        let shard = &self.shards[index];
        let connect_budget = self.timeout.max(Duration::from_millis(200));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_budget))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let connect = shard.connection.get_or_try_init(|| shard.client.get_connection_manager_with_config(config));
        match tokio::time::timeout(connect_budget, connect).await {
            Ok(Ok(connection)) => Ok(connection.clone()),
            Ok(Err(e)) => Err(StoreError::Unavailable { shard: index, message: format!("{}: {e}", shard.url) }),
            Err(_) => {
                Err(StoreError::Unavailable { shard: index, message: format!("{}: connect timed out", shard.url) })
            }
        }
    }

    /// Runs `command` on shard `index` within `budget` (the shard's timeout when `None`).
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        index: usize,
        command: &redis::Cmd,
        budget: Option<Duration>,
    ) -> Result<T, StoreError> {
        let mut connection = self.connection(index).await?;
        let budget = budget.unwrap_or(self.timeout);
        match tokio::time::timeout(budget, command.query_async(&mut connection)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(StoreError::Unavailable { shard: index, message: e.to_string() }),
            Err(_) => Err(StoreError::Unavailable { shard: index, message: format!("no answer within {budget:?}") }),
        }
    }

    /// Runs a pipeline on shard `index` within `budget` (the shard's timeout when `None`).
    pub async fn pipeline(
        &self,
        index: usize,
        pipeline: &redis::Pipeline,
        budget: Option<Duration>,
    ) -> Result<(), StoreError> {
        let mut connection = self.connection(index).await?;
        let budget = budget.unwrap_or(self.timeout);
        match tokio::time::timeout(budget, pipeline.query_async::<()>(&mut connection)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Unavailable { shard: index, message: e.to_string() }),
            Err(_) => Err(StoreError::Unavailable { shard: index, message: format!("no answer within {budget:?}") }),
        }
    }
}
