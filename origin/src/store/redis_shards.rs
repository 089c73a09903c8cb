//! User and item embeddings over N independent Redis servers.
//!
//! An id's shard is `cascade_shared::hashing::shard_for(id, N)` (jump consistent hashing); the key
//! is `cascade_shared::keys::embedding_key`. A batch is grouped by shard and every shard is asked
//! at once, with one `MGET` each, under a timeout: a shard that is down or slow makes its own ids
//! [`StoreError::Unavailable`] and leaves the others' answers intact.
//!
//! **A shard that comes back empty.** `cascade load` marks each shard with what it loaded there
//! (`cascade_shared::keys::MARKERS_KEY`, one field per bundle). Each health check (every second
//! while serving, and on `/readyz`) reads the serving bundle's mark: a shard without it is
//! [`HealthState::Empty`] when it holds no keys at all (a cache node that restarted) or
//! [`HealthState::WrongBundle`] when it holds other bundles' marks. While a shard is so degraded,
//! an id it does not have is [`StoreError::MissingOnDegradedShard`], not a new user, and
//! `/readyz` says why; `cascade load --shard i` refills it. A shard with no marks but with keys
//! (loaded before markers existed) counts as healthy.

use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use super::{ComponentHealth, EmbeddingRows, EmbeddingStore, HealthState, Lookup, RowState, StoreError};
use crate::redis::ShardSet;
use crate::redis::pool::{Fill, MgetRows};
use crate::redis::tls::RedisTls;
use crate::redis::url::redact;
use async_trait::async_trait;
use cascade_shared::embedding::{ValueEncoding, decode_value_into, encode_value_as};
use cascade_shared::keys::{EntityKind, MARKERS_KEY, embedding_key, embedding_key_prefix};
use futures::future::join_all;

/// Embeddings sharded over Redis servers.
pub struct RedisShardStore {
    shards: Arc<ShardSet>,
    bundle_id: String,
    dim: usize,
    encoding: ValueEncoding,
    /// Per shard, whether the last health check found it lost its data ([`LOST`]) or not.
    lost: Vec<AtomicU8>,
    /// Reply buffers for the per-shard `MGET`s of batch lookups, kept between calls.
    replies: Mutex<Vec<MgetRows>>,
}

/// Reply buffers kept for reuse (enough for a few batches in flight over many shards).
const KEPT_REPLY_BUFFERS: usize = 64;

/// A shard state in [`RedisShardStore::lost`]: its data is fine, or was lost.
const FINE: u8 = 0;
const LOST: u8 = 1;

/// What `cascade load` records on a shard (the value of its field in the markers hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShardMark {
    /// Users loaded onto this shard.
    pub users: u64,
    /// Items loaded onto this shard.
    pub items: u64,
    /// When, Unix seconds.
    pub loaded_at: u64,
}

impl RedisShardStore {
    /// A store over `shards` for the embeddings of `bundle_id`.
    pub fn new(shards: Arc<ShardSet>, bundle_id: &str, dim: usize) -> Self {
        let lost = (0..shards.len()).map(|_| AtomicU8::new(FINE)).collect();
        RedisShardStore {
            shards,
            bundle_id: bundle_id.to_string(),
            dim,
            encoding: ValueEncoding::F32,
            lost,
            replies: Mutex::new(Vec::new()),
        }
    }

    /// A store over its own shard set at `urls` (in shard order; `rediss://` ones with `tls`), for
    /// tools and tests.
    pub fn connect(
        urls: &[String],
        bundle_id: &str,
        dim: usize,
        timeout: Duration,
        tls: &RedisTls,
    ) -> Result<Self, StoreError> {
        Ok(Self::new(Arc::new(ShardSet::with_tls(urls, timeout, tls)?), bundle_id, dim))
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

    /// The shard that owns `id`.
    pub fn shard_of(&self, id: &str) -> usize {
        self.shards.shard_of(id)
    }

    /// Marks shard `index` as holding `mark` for this store's bundle (after a verified load).
    pub async fn mark(&self, index: usize, mark: &ShardMark) -> Result<(), StoreError> {
        let value = serde_json::to_string(mark)
            .map_err(|e| StoreError::Corrupt { key: MARKERS_KEY.into(), message: e.to_string() })?;
        let command = redis::cmd("HSET").arg(MARKERS_KEY).arg(&self.bundle_id).arg(value).clone();
        self.shards.query::<i64>(index, &command, None).await?;
        self.lost[index].store(FINE, Ordering::Relaxed);
        Ok(())
    }

    /// What shard `index` holds of this store's bundle.
    async fn check(&self, index: usize) -> Result<HealthState, StoreError> {
        let mark: Option<String> =
            self.shards.query(index, redis::cmd("HGET").arg(MARKERS_KEY).arg(&self.bundle_id), None).await?;
        if mark.is_some() {
            return Ok(HealthState::Ok);
        }
        if self.shards.is_new_in_move(index) {
            // Being filled by an online reshard (ids not there yet are read at their old shard);
            // the reshard copies the marks when it is done.
            return Ok(HealthState::Ok);
        }
        let other_marks: u64 = self.shards.query(index, redis::cmd("HLEN").arg(MARKERS_KEY), None).await?;
        if other_marks > 0 {
            return Ok(HealthState::WrongBundle);
        }
        let keys: u64 = self.shards.query(index, &redis::cmd("DBSIZE"), None).await?;
        // No marks but keys: loaded before markers existed, or by hand; nothing to compare against.
        Ok(if keys == 0 { HealthState::Empty } else { HealthState::Ok })
    }

    /// Groups positions of `ids` by owning shard.
    fn group_by_shard(&self, ids: &[String]) -> Vec<Vec<usize>> {
        let mut groups = vec![Vec::new(); self.shards.len()];
        for (position, id) in ids.iter().enumerate() {
            groups[self.shards.shard_of(id)].push(position);
        }
        groups
    }

    /// `MGET` of `ids[positions]` on one shard of `shards` (this store's, or the placement an
    /// online reshard is leaving), decoded into `replies`: the lean reader when the URL allows,
    /// else redis-rs.
    async fn mget(
        &self,
        shards: &ShardSet,
        shard: usize,
        (kind, ids, positions): (EntityKind, &[String], &[usize]),
        replies: &mut MgetRows,
    ) -> Result<(), StoreError> {
        if let Some(pool) = shards.mget_pool(shard) {
            let timeout = shards.timeout();
            let prefix = embedding_key_prefix(kind, &self.bundle_id);
            let wanted = positions.iter().map(|&p| ids[p].as_str());
            let call = pool.mget_prefixed_into(&prefix, wanted, positions.len(), replies);
            return match tokio::time::timeout(timeout, call).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => {
                    Err(StoreError::Unavailable { shard, message: format!("{}: {error}", redact(shards.url(shard))) })
                }
                Err(_) => Err(StoreError::Unavailable { shard, message: format!("no answer within {timeout:?}") }),
            };
        }
        let mut command = redis::cmd("MGET");
        for &position in positions {
            command.arg(embedding_key(kind, &self.bundle_id, &ids[position]));
        }
        let values: Vec<Option<Vec<u8>>> = shards.query(shard, &command, None).await?;
        replies.reset(values.len());
        for (index, value) in values.iter().enumerate() {
            let decoded = value.as_ref().map(|bytes| decode_value_into(bytes, replies.row_mut(index)));
            replies.fill(index, decoded);
        }
        Ok(())
    }

    /// The `MGET`s of `groups` (positions of `ids` per shard of `shards`), all at once, each
    /// decoded into a kept reply buffer and copied into the callers' `rows`; an id found nowhere
    /// is `missing(shard)`.
    async fn read_groups(
        &self,
        shards: &ShardSet,
        (kind, ids): (EntityKind, &[String]),
        groups: &[Vec<usize>],
        rows: &mut EmbeddingRows,
        missing: impl Fn(usize) -> RowState,
    ) {
        let requests = groups.iter().enumerate().filter(|(_, positions)| !positions.is_empty()).map(
            |(shard, positions)| async move {
                let mut replies = self.take_reply_buffer();
                let answer = self.mget(shards, shard, (kind, ids, positions), &mut replies).await;
                (shard, positions, replies, answer)
            },
        );
        for (shard, positions, replies, answer) in join_all(requests).await {
            match answer {
                Ok(()) => {
                    for (index, &position) in positions.iter().enumerate() {
                        let state = match replies.fill_of(index) {
                            Fill::Value => {
                                rows.row_mut(position).copy_from_slice(replies.row(index));
                                RowState::Found
                            }
                            Fill::Nil => missing(shard),
                            Fill::Bad(error) => RowState::Failed(StoreError::Corrupt {
                                key: embedding_key(kind, &self.bundle_id, &ids[position]),
                                message: error.to_string(),
                            }),
                        };
                        rows.set(position, state);
                    }
                }
                Err(error) => {
                    tracing::warn!(shard, %error, "embedding shard unavailable");
                    for &position in positions {
                        rows.set(position, RowState::Failed(error.clone()));
                    }
                }
            }
            self.keep_reply_buffer(replies);
        }
    }

    fn take_reply_buffer(&self) -> MgetRows {
        let kept = self.replies.lock().ok().and_then(|mut kept| kept.pop());
        kept.unwrap_or_else(|| MgetRows::new(self.dim))
    }

    fn keep_reply_buffer(&self, replies: MgetRows) {
        if let Ok(mut kept) = self.replies.lock()
            && kept.len() < KEPT_REPLY_BUFFERS
        {
            kept.push(replies);
        }
    }
}

#[async_trait]
impl EmbeddingStore for RedisShardStore {
    async fn get_batch(&self, kind: EntityKind, ids: &[String]) -> Vec<Lookup> {
        let mut rows = EmbeddingRows::new(self.dim);
        self.get_rows(kind, ids, &mut rows).await;
        rows.to_lookups()
    }

    async fn get_rows(&self, kind: EntityKind, ids: &[String], rows: &mut EmbeddingRows) {
        if rows.dim() != self.dim {
            // Rows kept for another dimension (another bundle's store): this store's replace them.
            *rows = EmbeddingRows::new(self.dim);
        }
        rows.reset(ids.len());
        let groups = self.group_by_shard(ids);
        let missing = |shard: usize| match self.lost[shard].load(Ordering::Relaxed) {
            LOST => RowState::Failed(StoreError::MissingOnDegradedShard { shard }),
            _ => RowState::Missing,
        };
        self.read_groups(&self.shards, (kind, ids), &groups, rows, missing).await;

        // During an online reshard: ids found nowhere at their new shard, read at their old one
        // (not moved yet).
        if let Some(previous) = self.shards.previous() {
            let mut behind = vec![Vec::new(); previous.len()];
            for (position, id) in ids.iter().enumerate() {
                if *rows.state(position) == RowState::Missing
                    && let Some(old) = self.shards.previous_shard_of(id)
                {
                    behind[old].push(position);
                }
            }
            self.read_groups(previous, (kind, ids), &behind, rows, |_| RowState::Missing).await;
        }
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
            let state = match self.check(index).await {
                Ok(state) => state,
                Err(error) => {
                    // The details go to the log: `/readyz` names states, never addresses or errors.
                    tracing::warn!(shard = index, %error, "redis shard health check failed");
                    HealthState::Unreachable
                }
            };
            let lost = matches!(state, HealthState::Empty | HealthState::WrongBundle);
            let was_lost = self.lost[index].swap(if lost { LOST } else { FINE }, Ordering::Relaxed) == LOST;
            if lost && !was_lost {
                tracing::error!(
                    shard = index,
                    ?state,
                    bundle = %self.bundle_id,
                    "redis shard lost its data; its users get fallback lists until `cascade load --shard {index}` refills it"
                );
            }
            ComponentHealth::new(name, state)
        });
        join_all(checks).await
    }

    fn describe(&self) -> String {
        format!("redis ({} shards, jump consistent hashing)", self.shards.len())
    }
}
