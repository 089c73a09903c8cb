//! Cascade's Redis plumbing (the `redis` crate is the client underneath): the shard set every
//! component shares, the one URL parser, and the lean `MGET` reader split as mini-redis splits it.
//!
//! | module | owns |
//! |---|---|
//! | [`shards`] | [`ShardSet`]: N servers by position with jump hashing, or one Redis Cluster; lazy connections, a timeout per call |
//! | [`cluster`] | the cluster client, key slots, pipelines split by slot |
//! | [`url`] | [`url::RedisUrl`]: the one parser of `redis://` URLs, and password redaction for logs |
//! | [`frame`] | pure RESP2 parsing: lines, array headers, bulk strings (property-tested against redis-rs) |
//! | [`connection`] | one TCP connection that owns its read buffer and reads an `MGET` reply |
//! | [`pool`] | [`pool::MgetPool`]: idle lean connections per shard |
//! | [`moving`] | an online reshard's moves: `RESTORE` that never replaces, `DUMP` pipelines |
//! | [`tls`] | [`tls::RedisTls`]: the CA and client certificate for `rediss://`, on every path |
//!
//! Its error is [`ShardError`] (which shard, what happened); the store and the caches turn it into
//! their own.

pub mod cluster;
pub mod connection;
pub mod frame;
pub mod moving;
pub mod pool;
pub mod shards;
pub mod tls;
pub mod url;

use serde::Deserialize;

pub use shards::{ShardError, ShardSet};

/// Redis settings (`[redis]`): shards for user embeddings, state, L2 and precomputed lists, or a
/// cluster for the embeddings; both empty means everything stays in process.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Shard URLs (`redis://host:port`), in shard order: jump hashing names shards by position,
    /// so only append or remove at the end.
    pub shards: Vec<String>,
    /// Seed URLs of a Redis Cluster: when set, embeddings live there, and so do user state, L2,
    /// precomputed lists and the catalogue unless `shards` are given too.
    pub cluster: Vec<String>,
    /// During an online `cascade reshard`: the shard list being left (its `--from`), while
    /// `shards` is the new one (its `--to`). See `redis::moving`.
    pub previous_shards: Vec<String>,
    /// Per-operation timeout, milliseconds: a slow shard counts as unavailable.
    pub timeout_ms: u64,
    /// TLS files for `rediss://` URLs (`[redis.tls]`; credentials go in the URLs).
    pub tls: tls::TlsFiles,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            shards: Vec::new(),
            cluster: Vec::new(),
            previous_shards: Vec::new(),
            timeout_ms: 50,
            tls: tls::TlsFiles::default(),
        }
    }
}

impl RedisConfig {
    /// The per-operation timeout.
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.timeout_ms)
    }
}
