//! Per-user state on the request path: the L1 list cache with request coalescing, each user's
//! generation (O(1) invalidation), and the items a user purchased (filtered from every answer).
//!
//! **L1** holds a user's full ranked list ([`MAX_N`](cascade_shared::validate::MAX_N) items) per
//! context, bounded by entries, with a TTL (default 30 s), keyed by bundle, user, segment and the
//! user's generation. Concurrent misses for one key compute once: the others wait for that result
//! (moka's `try_get_with`). Only real-time answers are cached; fallback answers never are.
//!
//! **Generations**: a significant event (by default `purchase` and `profile_update`) bumps the
//! user's generation, so every cached list of that user becomes unreachable at once, without a
//! scan. **Purchases** are remembered (bounded per user) and filtered out of every list served for
//! that user, cached ones included: the filter runs after the cache.
//!
//! Where generations and purchases live is a [`UserStateBackend`]: in this process (the embedded
//! default) or on the user's Redis shard ([`RedisUserState`]), which also holds **L2** (per-user
//! lists with a TTL and ±10% jitter, keyed by generation). With Redis, each process caches a
//! user's generation and purchases for `state_ttl` (default 1 s): that is the bound within which
//! an event sent to one origin process changes the lists every other process serves. It costs at
//! most one Redis round trip per active user per second, and no pub/sub connection to keep alive.
//! If the user's shard is down, the caches are bypassed (never served stale) and the request path
//! falls back as usual.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cascade_shared::keys::{generation_key, l2_key, purchases_key, recent_key};
use cascade_shared::segment::SegmentKey;
use cascade_shared::wire::{Event, EventKind, RecItem, Source};
use prometheus::IntCounterVec;

use crate::store::StoreError;
use crate::store::shards::ShardSet;

/// Most purchases remembered per user (oldest forgotten first).
pub const MAX_PURCHASES_PER_USER: usize = 1000;
/// Recent items kept per user: the session that shifts real-time ranking.
pub const SESSION_ITEMS: usize = 10;
/// How long a session lasts after the user's last event.
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 60);

/// What identifies a cached list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListKey {
    /// Bundle that ranked it (a swap never serves the old bundle's lists).
    pub bundle: Arc<str>,
    /// The user.
    pub user: String,
    /// The context.
    pub segment: SegmentKey,
    /// The user's generation when it was computed.
    pub generation: u64,
}

/// A ranked list in the cache, and where the request that filled L1 got it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListEntry {
    /// The user's full ranked list.
    pub items: Vec<RecItem>,
    /// `Realtime` or `CacheL2`.
    pub source: Source,
}

/// A shared cached list.
pub type CachedList = Arc<ListEntry>;

/// Where generations, purchases and L2 live.
#[async_trait]
pub trait UserStateBackend: Send + Sync {
    /// The user's generation (0 until a significant event).
    async fn generation(&self, user: &str) -> Result<u64, StoreError>;
    /// Bumps and returns the user's generation.
    async fn bump_generation(&self, user: &str) -> Result<u64, StoreError>;
    /// Remembers a purchase.
    async fn add_purchase(&self, user: &str, item: &str) -> Result<(), StoreError>;
    /// Items the user purchased.
    async fn purchases(&self, user: &str) -> Result<HashSet<String>, StoreError>;
    /// Adds an item to the user's session (newest first, [`SESSION_ITEMS`] kept, [`SESSION_TTL`]).
    async fn push_recent(&self, user: &str, item: &str) -> Result<(), StoreError>;
    /// The user's session items, newest first.
    async fn recent(&self, user: &str) -> Result<Vec<String>, StoreError>;
    /// An L2 list, if this backend has L2.
    async fn l2_get(&self, key: &ListKey) -> Result<Option<Vec<RecItem>>, StoreError>;
    /// Stores an L2 list for `ttl`.
    async fn l2_set(&self, key: &ListKey, items: &[RecItem], ttl: Duration) -> Result<(), StoreError>;
}

/// In-process generations and purchases (the embedded default; no L2).
pub struct MemoryUserState {
    generations: moka::sync::Cache<String, u64>,
    purchases: moka::sync::Cache<String, Arc<Mutex<VecDeque<String>>>>,
    recent: moka::sync::Cache<String, Arc<Mutex<VecDeque<String>>>>,
}

impl MemoryUserState {
    /// Remembers at most `users` users.
    pub fn new(users: u64) -> Self {
        MemoryUserState {
            generations: moka::sync::Cache::builder().max_capacity(users).build(),
            purchases: moka::sync::Cache::builder().max_capacity(users).build(),
            recent: moka::sync::Cache::builder().max_capacity(users).time_to_idle(SESSION_TTL).build(),
        }
    }
}

#[async_trait]
impl UserStateBackend for MemoryUserState {
    async fn generation(&self, user: &str) -> Result<u64, StoreError> {
        Ok(self.generations.get(user).unwrap_or(0))
    }

    async fn bump_generation(&self, user: &str) -> Result<u64, StoreError> {
        let entry =
            self.generations.entry(user.to_string()).and_upsert_with(|old| old.map_or(1, |e| e.into_value() + 1));
        Ok(entry.into_value())
    }

    async fn add_purchase(&self, user: &str, item: &str) -> Result<(), StoreError> {
        let list = self.purchases.get_with(user.to_string(), || Arc::new(Mutex::new(VecDeque::new())));
        let mut list = list.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !list.iter().any(|known| known == item) {
            if list.len() == MAX_PURCHASES_PER_USER {
                list.pop_front();
            }
            list.push_back(item.to_string());
        }
        Ok(())
    }

    async fn purchases(&self, user: &str) -> Result<HashSet<String>, StoreError> {
        Ok(match self.purchases.get(user) {
            Some(list) => list.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().cloned().collect(),
            None => HashSet::new(),
        })
    }

    async fn push_recent(&self, user: &str, item: &str) -> Result<(), StoreError> {
        let list = self.recent.get_with(user.to_string(), || Arc::new(Mutex::new(VecDeque::new())));
        let mut list = list.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        list.push_front(item.to_string());
        list.truncate(SESSION_ITEMS);
        Ok(())
    }

    async fn recent(&self, user: &str) -> Result<Vec<String>, StoreError> {
        Ok(match self.recent.get(user) {
            Some(list) => list.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().cloned().collect(),
            None => Vec::new(),
        })
    }

    async fn l2_get(&self, _key: &ListKey) -> Result<Option<Vec<RecItem>>, StoreError> {
        Ok(None)
    }

    async fn l2_set(&self, _key: &ListKey, _items: &[RecItem], _ttl: Duration) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Generations, purchases and L2 on each user's Redis shard (`cascade_shared::keys`).
pub struct RedisUserState {
    shards: ShardSet,
}

impl RedisUserState {
    /// State over the same shards as the embeddings.
    pub fn new(shards: ShardSet) -> Self {
        RedisUserState { shards }
    }
}

#[async_trait]
impl UserStateBackend for RedisUserState {
    async fn generation(&self, user: &str) -> Result<u64, StoreError> {
        let value: Option<u64> =
            self.shards.query(self.shards.shard_of(user), redis::cmd("GET").arg(generation_key(user)), None).await?;
        Ok(value.unwrap_or(0))
    }

    async fn bump_generation(&self, user: &str) -> Result<u64, StoreError> {
        self.shards.query(self.shards.shard_of(user), redis::cmd("INCR").arg(generation_key(user)), None).await
    }

    async fn add_purchase(&self, user: &str, item: &str) -> Result<(), StoreError> {
        let command = redis::cmd("SADD").arg(purchases_key(user)).arg(item).clone();
        self.shards.query::<i64>(self.shards.shard_of(user), &command, None).await.map(|_newly_added| ())
    }

    async fn purchases(&self, user: &str) -> Result<HashSet<String>, StoreError> {
        self.shards.query(self.shards.shard_of(user), redis::cmd("SMEMBERS").arg(purchases_key(user)), None).await
    }

    async fn push_recent(&self, user: &str, item: &str) -> Result<(), StoreError> {
        let key = recent_key(user);
        let mut pipeline = redis::pipe();
        pipeline.atomic().cmd("LPUSH").arg(&key).arg(item).ignore();
        pipeline.cmd("LTRIM").arg(&key).arg(0).arg(SESSION_ITEMS as i64 - 1).ignore();
        pipeline.cmd("EXPIRE").arg(&key).arg(SESSION_TTL.as_secs()).ignore();
        self.shards.pipeline(self.shards.shard_of(user), &pipeline, None).await
    }

    async fn recent(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let command = redis::cmd("LRANGE").arg(recent_key(user)).arg(0).arg(SESSION_ITEMS as i64 - 1).clone();
        self.shards.query(self.shards.shard_of(user), &command, None).await
    }

    async fn l2_get(&self, key: &ListKey) -> Result<Option<Vec<RecItem>>, StoreError> {
        let redis_key = l2_key(&key.bundle, &key.user, &key.segment.to_string(), key.generation);
        let value: Option<Vec<u8>> =
            self.shards.query(self.shards.shard_of(&key.user), redis::cmd("GET").arg(&redis_key), None).await?;
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
        self.shards.query::<()>(self.shards.shard_of(&key.user), &command, None).await
    }
}

/// Settings.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// L1 entries.
    pub l1_capacity: u64,
    /// L1 time to live.
    pub l1_ttl: Duration,
    /// L2 time to live (each write gets ±10% jitter so lists written together expire apart).
    pub l2_ttl: Duration,
    /// How long a process reuses a user's generation and purchases read from Redis: the bound on
    /// cross-process invalidation.
    pub state_ttl: Duration,
    /// Users whose state is kept in process.
    pub users_capacity: u64,
    /// Event kinds that invalidate a user's cached lists.
    pub significant: Vec<EventKind>,
    /// Event kinds whose item joins the user's session (and invalidates their cached lists).
    pub session: Vec<EventKind>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            l1_capacity: 100_000,
            l1_ttl: Duration::from_secs(30),
            l2_ttl: Duration::from_secs(120),
            state_ttl: Duration::from_secs(1),
            users_capacity: 1_000_000,
            significant: vec![EventKind::Purchase, EventKind::ProfileUpdate],
            session: vec![EventKind::View, EventKind::Click, EventKind::AddToCart],
        }
    }
}

/// What the request path needs to know about a user before looking in the caches.
#[derive(Debug, Clone)]
pub struct UserView {
    /// The user's generation.
    pub generation: u64,
    /// Items the user purchased.
    pub purchased: Arc<HashSet<String>>,
    /// The user's session: recent items, newest first.
    pub recent: Arc<Vec<String>>,
}

/// The per-user caches and state.
pub struct UserCaches {
    l1: moka::future::Cache<ListKey, CachedList>,
    backend: Arc<dyn UserStateBackend>,
    /// Per-process copies of what a remote backend holds, for `state_ttl`.
    local: Option<moka::future::Cache<String, UserView>>,
    significant: Vec<EventKind>,
    session: Vec<EventKind>,
    l2_ttl: Duration,
    lookups: IntCounterVec,
}

impl UserCaches {
    /// Caches over `backend`; `remote` backends get a per-process copy for `state_ttl`.
    pub fn new(
        settings: &CacheSettings,
        backend: Arc<dyn UserStateBackend>,
        remote: bool,
        lookups: IntCounterVec,
    ) -> Self {
        UserCaches {
            l1: moka::future::Cache::builder().max_capacity(settings.l1_capacity).time_to_live(settings.l1_ttl).build(),
            backend,
            local: remote.then(|| {
                moka::future::Cache::builder()
                    .max_capacity(settings.users_capacity)
                    .time_to_live(settings.state_ttl)
                    .build()
            }),
            significant: settings.significant.clone(),
            session: settings.session.clone(),
            l2_ttl: settings.l2_ttl,
            lookups,
        }
    }

    /// In-process caches over in-process state (the embedded default).
    pub fn in_process(settings: &CacheSettings, lookups: IntCounterVec) -> Self {
        Self::new(settings, Arc::new(MemoryUserState::new(settings.users_capacity)), false, lookups)
    }

    async fn read_view(&self, user: &str) -> Result<UserView, StoreError> {
        let (generation, purchased, recent) =
            futures::try_join!(self.backend.generation(user), self.backend.purchases(user), self.backend.recent(user))?;
        Ok(UserView { generation, purchased: Arc::new(purchased), recent: Arc::new(recent) })
    }

    /// The user's generation and purchases.
    pub async fn user(&self, user: &str) -> Result<UserView, StoreError> {
        match &self.local {
            Some(local) => local.try_get_with(user.to_string(), self.read_view(user)).await.map_err(|e| (*e).clone()),
            None => self.read_view(user).await,
        }
    }

    /// An L1 list, counting the hit or miss.
    pub async fn get(&self, key: &ListKey) -> Option<CachedList> {
        let found = self.l1.get(key).await;
        self.count("l1", found.is_some());
        found
    }

    fn count(&self, layer: &str, hit: bool) {
        self.lookups.with_label_values(&[layer, if hit { "hit" } else { "miss" }]).inc();
    }

    /// The list for `key` from L2, else `compute`'s (then written to L2), computed once however
    /// many callers miss L1 at once. Errors are not cached and reach every waiting caller.
    pub async fn get_or_compute<E, F>(&self, key: ListKey, compute: F) -> Result<CachedList, Arc<E>>
    where
        F: std::future::Future<Output = Result<Vec<RecItem>, E>>,
        E: Send + Sync + 'static,
    {
        let fill = async {
            match self.backend.l2_get(&key).await {
                Ok(Some(items)) => {
                    self.count("l2", true);
                    return Ok(Arc::new(ListEntry { items, source: Source::CacheL2 }));
                }
                Ok(None) => self.count("l2", false),
                Err(error) => tracing::warn!(%error, "L2 read failed; computing"),
            }
            let items = compute.await?;
            let jitter = 0.9 + rand::random::<f64>() * 0.2;
            let (backend, key, stored, ttl) =
                (Arc::clone(&self.backend), key.clone(), items.clone(), self.l2_ttl.mul_f64(jitter));
            tokio::spawn(async move {
                if let Err(error) = backend.l2_set(&key, &stored, ttl).await {
                    tracing::warn!(%error, "L2 write failed");
                }
            });
            Ok(Arc::new(ListEntry { items, source: Source::Realtime }))
        };
        self.l1.try_get_with(key.clone(), fill).await
    }

    /// Applies an event: purchases are remembered; significant kinds bump the generation. This
    /// process sees the change at once, others within `state_ttl`.
    pub async fn record(&self, event: &Event) -> Result<(), StoreError> {
        if let (EventKind::Purchase, Some(item)) = (event.kind, &event.item_id) {
            self.backend.add_purchase(&event.user_id, item).await?;
        }
        let in_session = self.session.contains(&event.kind);
        if let (true, Some(item)) = (in_session, &event.item_id) {
            self.backend.push_recent(&event.user_id, item).await?;
        }
        // A session event changes the real-time ranking, so it too makes cached lists stale.
        if self.significant.contains(&event.kind) || in_session {
            self.backend.bump_generation(&event.user_id).await?;
        }
        if let Some(local) = &self.local {
            local.invalidate(&event.user_id).await;
        }
        Ok(())
    }
}

/// Drops `excluded` items and keeps the first `n`.
pub fn filter_items(items: &[RecItem], excluded: &HashSet<String>, n: usize) -> Vec<RecItem> {
    items.iter().filter(|item| !excluded.contains(&item.id)).take(n).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    fn caches() -> UserCaches {
        let lookups = IntCounterVec::new(Opts::new("t", "t"), &["layer", "result"]).unwrap();
        UserCaches::in_process(&CacheSettings::default(), lookups)
    }

    fn event(kind: EventKind, item: Option<&str>) -> Event {
        Event { user_id: "u1".into(), kind, item_id: item.map(String::from), timestamp_ms: None, idempotency_key: None }
    }

    #[tokio::test]
    async fn significant_events_bump_the_generation_and_purchases_are_remembered() {
        let c = caches();
        assert_eq!(c.user("u1").await.unwrap().generation, 0);
        c.record(&event(EventKind::Rate, Some("i1"))).await.unwrap();
        assert_eq!(c.user("u1").await.unwrap().generation, 0, "a rating is neither significant nor a session event");
        c.record(&event(EventKind::View, Some("i1"))).await.unwrap();
        c.record(&event(EventKind::Click, Some("i3"))).await.unwrap();
        let view = c.user("u1").await.unwrap();
        assert_eq!((view.generation, view.recent.as_slice()), (2, ["i3".to_string(), "i1".to_string()].as_slice()));
        c.record(&event(EventKind::Purchase, Some("i2"))).await.unwrap();
        c.record(&event(EventKind::Purchase, Some("i2"))).await.unwrap();
        let view = c.user("u1").await.unwrap();
        assert_eq!(view.generation, 4);
        assert_eq!(*view.purchased, HashSet::from(["i2".to_string()]));
        assert!(c.user("u2").await.unwrap().purchased.is_empty());
    }

    #[test]
    fn filtering_keeps_order_and_n() {
        let items: Vec<RecItem> =
            (0..5).map(|i| RecItem { id: format!("i{i}"), score: 1.0 - i as f32 / 10.0, title: None }).collect();
        let kept = filter_items(&items, &HashSet::from(["i1".to_string()]), 3);
        assert_eq!(kept.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), vec!["i0", "i2", "i3"]);
    }

    #[tokio::test]
    async fn concurrent_misses_compute_once() {
        let c = Arc::new(caches());
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let key = ListKey {
            bundle: "b".into(),
            user: "u".into(),
            segment: SegmentKey::from_parts(None, None, None),
            generation: 0,
        };
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (c, runs, key) = (c.clone(), runs.clone(), key.clone());
                tokio::spawn(async move {
                    c.get_or_compute::<(), _>(key, async {
                        runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(vec![RecItem { id: "x".into(), score: 1.0, title: None }])
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().items[0].id, "x");
        }
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
