//! Per-user state on the request path: the L1 list cache with request coalescing, L2, each user's
//! generation (O(1) invalidation), purchases (filtered from every answer) and session, and the
//! intake of events that change them.
//!
//! | module | owns |
//! |---|---|
//! | this file | [`UserCaches`]: L1 (moka, coalesced misses), L2 reads and writes, the per-user view |
//! | [`state`] | [`state::UserStateBackend`] and the in-process backend of the embedded default |
//! | [`redis_state`] | generations, purchases, sessions and L2 on each user's Redis shard |
//! | [`rules`] | pure event rules (what an event changes) and the purchase filter |
//! | [`events`] | a batch of events: idempotency keys, then the rules applied to the backend |
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
//! With Redis, each process caches a user's generation and purchases for `state_ttl` (default
//! 1 s): that is the bound within which an event sent to one origin process changes the lists
//! every other process serves. It costs at most one Redis round trip per active user per second,
//! and no pub/sub connection to keep alive. If the user's shard is down, the caches are bypassed
//! (never served stale) and the request path falls back as usual.

pub mod events;
pub mod redis_state;
pub mod rules;
pub mod state;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cascade_shared::segment::SegmentKey;
use cascade_shared::wire::{EventKind, RecItem, Source};
use prometheus::IntCounterVec;
use serde::Deserialize;

pub use redis_state::RedisUserState;
pub use rules::{EventRules, filter_items};
pub use state::{MemoryUserState, UserStateBackend};

use crate::store::StoreError;

/// Cache settings (`[cache]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// L1 entries (one per user and context).
    pub l1_capacity: u64,
    /// L1 time to live, seconds.
    pub l1_ttl_secs: u64,
    /// L2 (Redis) time to live, seconds; each write gets ±10% jitter so lists written together
    /// expire apart.
    pub l2_ttl_secs: u64,
    /// How long a process reuses a user's generation and purchases read from Redis,
    /// milliseconds: the bound on cross-process invalidation.
    pub state_ttl_ms: u64,
    /// Users whose generation and purchases are remembered in process.
    pub users_capacity: u64,
    /// Event kinds that invalidate a user's cached lists.
    pub significant_events: Vec<EventKind>,
    /// Event kinds whose item joins the user's session (shifting real-time ranking).
    pub session_events: Vec<EventKind>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            l1_capacity: 100_000,
            l1_ttl_secs: 30,
            l2_ttl_secs: 120,
            state_ttl_ms: 1_000,
            users_capacity: 1_000_000,
            significant_events: vec![EventKind::Purchase, EventKind::ProfileUpdate],
            session_events: vec![EventKind::View, EventKind::Click, EventKind::AddToCart],
        }
    }
}

impl CacheConfig {
    /// The event rules these settings name.
    pub fn rules(&self) -> EventRules {
        EventRules { significant: self.significant_events.clone(), session: self.session_events.clone() }
    }
}

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
    rules: EventRules,
    l2_ttl: Duration,
    lookups: IntCounterVec,
    /// Idempotency keys applied recently and being applied now: see [`events`].
    dedup: events::Dedup,
}

impl UserCaches {
    /// Caches over `backend`; `remote` backends get a per-process copy for `state_ttl`.
    pub fn new(config: &CacheConfig, backend: Arc<dyn UserStateBackend>, remote: bool, lookups: IntCounterVec) -> Self {
        UserCaches {
            l1: moka::future::Cache::builder()
                .max_capacity(config.l1_capacity)
                .time_to_live(Duration::from_secs(config.l1_ttl_secs))
                .build(),
            backend,
            local: remote.then(|| {
                moka::future::Cache::builder()
                    .max_capacity(config.users_capacity)
                    .time_to_live(Duration::from_millis(config.state_ttl_ms))
                    .build()
            }),
            rules: config.rules(),
            l2_ttl: Duration::from_secs(config.l2_ttl_secs),
            lookups,
            dedup: events::Dedup::new(),
        }
    }

    /// In-process caches over in-process state (the embedded default).
    pub fn in_process(config: &CacheConfig, lookups: IntCounterVec) -> Self {
        Self::new(config, Arc::new(MemoryUserState::new(config.users_capacity)), false, lookups)
    }

    async fn read_view(&self, user: &str) -> Result<UserView, StoreError> {
        let (generation, purchased, recent) =
            futures::try_join!(self.backend.generation(user), self.backend.purchases(user), self.backend.recent(user))?;
        Ok(UserView { generation, purchased: Arc::new(purchased), recent: Arc::new(recent) })
    }

    /// The user's generation, purchases and session.
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
    /// many callers miss L1 at once. Errors are not cached and reach every waiting caller. An L2
    /// read still unanswered at `deadline` counts as a miss.
    pub async fn get_or_compute<E, F>(
        &self,
        key: ListKey,
        deadline: std::time::Instant,
        compute: F,
    ) -> Result<CachedList, Arc<E>>
    where
        F: std::future::Future<Output = Result<Vec<RecItem>, E>>,
        E: Send + Sync + 'static,
    {
        let fill = async {
            match tokio::time::timeout_at(deadline.into(), self.backend.l2_get(&key)).await {
                Ok(Ok(Some(items))) => {
                    self.count("l2", true);
                    return Ok(Arc::new(ListEntry { items, source: Source::CacheL2 }));
                }
                Ok(Ok(None)) => self.count("l2", false),
                Ok(Err(error)) => tracing::warn!(%error, "L2 read failed; computing"),
                Err(_) => tracing::warn!("L2 read slower than the deadline; computing"),
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
}

#[cfg(test)]
mod tests {
    use super::rules::test_event as event;
    use super::*;
    use prometheus::Opts;

    fn caches() -> UserCaches {
        let lookups = IntCounterVec::new(Opts::new("t", "t"), &["layer", "result"]).unwrap();
        UserCaches::in_process(&CacheConfig::default(), lookups)
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
                    c.get_or_compute::<(), _>(key, std::time::Instant::now() + Duration::from_secs(5), async {
                        runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(vec![RecItem { id: "x".into(), score: 1.0, title: None, position: 0 }])
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
