//! [`ShardSet`]: where a deployment's Redis state lives: independent Redis servers addressed by
//! position with jump consistent hashing, or one Redis Cluster (which places keys by slot itself,
//! so it counts as a single "shard" 0 here). Connections are lazy (a shard that is down at start
//! does not stop the origin) and every call has a timeout (a slow shard counts as unavailable).
//!
//! One `ShardSet` is built per process (by `crate::app`) and shared by everything that reaches
//! Redis: the embedding store, user state, L2, precomputed lists and the catalogue. With a
//! cluster, a pipeline that spans slots is split by slot ([`super::cluster::split_by_slot`]);
//! transactions touch one user's keys, which share a hash tag. Each independent shard has one
//! multiplexed redis-rs connection and, for plain URLs, a pool of lean `MGET` connections.

use std::time::Duration;

use cascade_shared::hashing::shard_for;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
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

/// One Redis Cluster, reached through its seed nodes.
struct Cluster {
    seeds: Vec<String>,
    client: ClusterClient,
    connection: OnceCell<ClusterConnection>,
}

enum Backend {
    /// Independent servers, in configured order (jump hashing names them by position).
    Shards(Vec<Shard>),
    /// A cluster: placement is the cluster's.
    Cluster(Box<Cluster>),
}

/// A connection to one shard, or to the cluster.
enum Connection {
    Shard(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    async fn run<T: redis::FromRedisValue>(&mut self, command: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            Connection::Shard(connection) => command.query_async(connection).await,
            Connection::Cluster(connection) => command.query_async(connection).await,
        }
    }

    async fn run_pipeline<T: redis::FromRedisValue>(&mut self, pipeline: &redis::Pipeline) -> redis::RedisResult<T> {
        match self {
            Connection::Shard(connection) => pipeline.query_async(connection).await,
            Connection::Cluster(connection) => pipeline.query_async(connection).await,
        }
    }
}

/// The shards, or the cluster.
pub struct ShardSet {
    backend: Backend,
    timeout: Duration,
    /// During an online reshard: the placement being left ([`super::moving`]).
    moving: Option<Box<Moving>>,
}

/// The previous placement of an online reshard, and the key groups this process has moved.
struct Moving {
    previous: ShardSet,
    moved: moka::sync::Cache<String, ()>,
}

/// Key groups remembered as moved per process (a forgotten one costs one more `DUMP`).
const MOVED_CAPACITY: u64 = 1_000_000;

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
        Ok(ShardSet { backend: Backend::Shards(shards), timeout, moving: None })
    }

    /// The Redis Cluster reached through `seeds`, with a per-call `timeout`; `rediss://` seeds
    /// with `tls`.
    pub fn cluster(seeds: &[String], timeout: Duration, tls: &RedisTls) -> Result<Self, ShardError> {
        let client = super::cluster::client(seeds, timeout, tls)
            .map_err(|e| ShardError { shard: 0, message: format!("redis cluster: {e}") })?;
        let cluster = Cluster { seeds: seeds.to_vec(), client, connection: OnceCell::new() };
        Ok(ShardSet { backend: Backend::Cluster(Box::new(cluster)), timeout, moving: None })
    }

    /// The same shards while an online reshard moves keys here from `previous` (the `--from`
    /// list): reads and writes go here, each id's keys moved on first access
    /// ([`ShardSet::ensure_moved`]); embeddings missing here are read there ([`ShardSet::previous`]).
    pub fn moving_from(mut self, previous: ShardSet) -> Result<Self, ShardError> {
        if self.is_cluster() || previous.is_cluster() {
            let message = "an online reshard moves keys between independent shards; a cluster reshards itself".into();
            return Err(ShardError { shard: 0, message });
        }
        let moved = moka::sync::Cache::new(MOVED_CAPACITY);
        self.moving = Some(Box::new(Moving { previous, moved }));
        Ok(self)
    }

    /// The placement being left, during an online reshard.
    pub fn previous(&self) -> Option<&ShardSet> {
        self.moving.as_deref().map(|moving| &moving.previous)
    }

    /// The shard `id` had in the placement being left, when it differs from its shard now.
    pub fn previous_shard_of(&self, id: &str) -> Option<usize> {
        let previous = self.previous()?;
        let (from, to) = (previous.shard_of(id), self.shard_of(id));
        (previous.url(from) != self.url(to)).then_some(from)
    }

    /// Whether shard `index` joined in the online reshard under way (its server is not in the
    /// placement being left).
    pub fn is_new_in_move(&self, index: usize) -> bool {
        self.previous().is_some_and(|previous| (0..previous.len()).all(|old| previous.url(old) != self.url(index)))
    }

    /// During an online reshard, moves `keys` (a group of the id `id`'s keys: its user state, its
    /// precomputed list) from the id's old shard to its shard now, once per process; a no-op
    /// otherwise, or when the id's shard did not change. See [`super::moving`].
    pub async fn ensure_moved(&self, id: &str, keys: &[String]) -> Result<(), ShardError> {
        let (Some(moving), Some(from), Some(group)) = (&self.moving, self.previous_shard_of(id), keys.first()) else {
            return Ok(());
        };
        if moving.moved.contains_key(group) {
            return Ok(());
        }
        let to = self.shard_of(id);
        let values: Vec<(Option<Vec<u8>>, i64)> =
            moving.previous.pipeline_query(from, &super::moving::dump_pipeline(keys), None).await?;
        let present: Vec<(&str, &[u8], i64)> = keys
            .iter()
            .zip(&values)
            .filter_map(|(key, (dump, pttl))| dump.as_deref().map(|dump| (key.as_str(), dump, *pttl)))
            .collect();
        if !present.is_empty() {
            let names: Vec<&str> = present.iter().map(|(key, _, _)| *key).collect();
            let replies: Vec<redis::RedisResult<()>> =
                self.pipeline_query(to, &super::moving::restore_pipeline(present), None).await?;
            super::moving::restored_or_there(replies)
                .map_err(|e| ShardError { shard: to, message: format!("moving {id}'s keys: {e}") })?;
            moving.previous.query::<i64>(from, redis::cmd("DEL").arg(&names), None).await?;
        }
        moving.moved.insert(group.clone(), ());
        Ok(())
    }

    /// Number of shards (a cluster counts as one).
    pub fn len(&self) -> usize {
        match &self.backend {
            Backend::Shards(shards) => shards.len(),
            Backend::Cluster(_) => 1,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster(_))
    }

    /// The shard that owns `id` (0 in a cluster, which places keys itself).
    pub fn shard_of(&self, id: &str) -> usize {
        shard_for(id, u32::try_from(self.len()).unwrap_or(u32::MAX)) as usize
    }

    /// A shard's URL (a cluster's first seed), for logs: pass it through `redact`.
    pub fn url(&self, index: usize) -> &str {
        match &self.backend {
            Backend::Shards(shards) => &shards[index].url,
            Backend::Cluster(cluster) => cluster.seeds.first().map_or("", String::as_str),
        }
    }

    /// A shard's lean `MGET` pool (none for a URL with `?` parameters, or in a cluster).
    pub fn mget_pool(&self, index: usize) -> Option<&MgetPool> {
        match &self.backend {
            Backend::Shards(shards) => shards[index].mget.as_ref(),
            Backend::Cluster(_) => None,
        }
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A connection to shard `index` (shared, multiplexed, reconnecting), or to the cluster.
    async fn connection(&self, index: usize) -> Result<Connection, ShardError> {
        let connect_budget = self.timeout.max(Duration::from_millis(200));
        let shard = match &self.backend {
            Backend::Shards(shards) => &shards[index],
            Backend::Cluster(cluster) => {
                let connect = cluster.connection.get_or_try_init(|| cluster.client.get_async_connection());
                let message = match tokio::time::timeout(connect_budget, connect).await {
                    Ok(Ok(connection)) => return Ok(Connection::Cluster(connection.clone())),
                    Ok(Err(e)) => format!("redis cluster: {e}"),
                    Err(_) => "redis cluster: connect timed out".to_string(),
                };
                return Err(ShardError { shard: 0, message });
            }
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(connect_budget))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let connect = shard.connection.get_or_try_init(|| shard.client.get_connection_manager_with_config(config));
        match tokio::time::timeout(connect_budget, connect).await {
            Ok(Ok(connection)) => Ok(Connection::Shard(connection.clone())),
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
        match tokio::time::timeout(budget, connection.run(command)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(ShardError { shard: index, message: e.to_string() }),
            Err(_) => Err(ShardError { shard: index, message: format!("no answer within {budget:?}") }),
        }
    }

    /// Runs a pipeline on shard `index` within `budget` (the shard's timeout when `None`). In a
    /// cluster, a plain pipeline whose keys span slots is sent as one pipeline per slot, at once.
    pub async fn pipeline(
        &self,
        index: usize,
        pipeline: &redis::Pipeline,
        budget: Option<Duration>,
    ) -> Result<(), ShardError> {
        if self.is_cluster()
            && !pipeline.is_transaction()
            && let Some(parts) = super::cluster::split_by_slot(pipeline)
        {
            let sent = futures::future::join_all(parts.iter().map(|part| self.pipeline_query::<()>(0, part, budget)));
            return sent.await.into_iter().collect();
        }
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
        match tokio::time::timeout(budget, connection.run_pipeline::<T>(pipeline)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(ShardError { shard: index, message: e.to_string() }),
            Err(_) => Err(ShardError { shard: index, message: format!("no answer within {budget:?}") }),
        }
    }
}
