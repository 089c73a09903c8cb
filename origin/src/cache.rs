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
//! This is the in-process layer; generations and purchases live in this process, so another origin
//! process sees an event only when its own L1 entry expires (the TTL bounds it). L2 in Redis and
//! cross-process invalidation are the caching issue's next step.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cascade_shared::segment::SegmentKey;
use cascade_shared::wire::{Event, EventKind, RecItem};
use prometheus::IntCounterVec;

/// Most purchases remembered per user (oldest forgotten first).
pub const MAX_PURCHASES_PER_USER: usize = 1000;

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

/// A ranked list in the cache.
pub type CachedList = Arc<Vec<RecItem>>;

/// Settings.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// L1 entries.
    pub l1_capacity: u64,
    /// L1 time to live.
    pub l1_ttl: Duration,
    /// Users whose generation and purchases are remembered.
    pub users_capacity: u64,
    /// Event kinds that invalidate a user's cached lists.
    pub significant: Vec<EventKind>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            l1_capacity: 100_000,
            l1_ttl: Duration::from_secs(30),
            users_capacity: 1_000_000,
            significant: vec![EventKind::Purchase, EventKind::ProfileUpdate],
        }
    }
}

/// The per-user state.
pub struct UserCaches {
    l1: moka::future::Cache<ListKey, CachedList>,
    generations: moka::sync::Cache<String, u64>,
    purchases: moka::sync::Cache<String, Arc<Mutex<VecDeque<String>>>>,
    significant: Vec<EventKind>,
    lookups: IntCounterVec,
}

impl UserCaches {
    /// Caches with `settings`; `lookups` counts `{layer, result}`.
    pub fn new(settings: &CacheSettings, lookups: IntCounterVec) -> Self {
        UserCaches {
            l1: moka::future::Cache::builder().max_capacity(settings.l1_capacity).time_to_live(settings.l1_ttl).build(),
            generations: moka::sync::Cache::builder().max_capacity(settings.users_capacity).build(),
            purchases: moka::sync::Cache::builder().max_capacity(settings.users_capacity).build(),
            significant: settings.significant.clone(),
            lookups,
        }
    }

    /// The user's current generation (0 until a significant event).
    pub fn generation(&self, user: &str) -> u64 {
        self.generations.get(user).unwrap_or(0)
    }

    /// A cached list, counting the hit or miss.
    pub async fn get(&self, key: &ListKey) -> Option<CachedList> {
        let found = self.l1.get(key).await;
        self.lookups.with_label_values(&["l1", if found.is_some() { "hit" } else { "miss" }]).inc();
        found
    }

    /// The cached list for `key`, or `compute`'s, computed once however many callers miss at once.
    /// Errors are not cached and reach every waiting caller.
    pub async fn get_or_compute<E, F>(&self, key: ListKey, compute: F) -> Result<CachedList, Arc<E>>
    where
        F: std::future::Future<Output = Result<CachedList, E>>,
        E: Send + Sync + 'static,
    {
        self.l1.try_get_with(key, compute).await
    }

    /// Applies an event: purchases are remembered; significant kinds bump the generation.
    pub fn record(&self, event: &Event) {
        if let (EventKind::Purchase, Some(item)) = (event.kind, &event.item_id) {
            let list = self.purchases.get_with(event.user_id.clone(), || Arc::new(Mutex::new(VecDeque::new())));
            let mut list = list.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if !list.contains(item) {
                if list.len() == MAX_PURCHASES_PER_USER {
                    list.pop_front();
                }
                list.push_back(item.clone());
            }
        }
        if self.significant.contains(&event.kind) {
            let next = self.generation(&event.user_id) + 1;
            self.generations.insert(event.user_id.clone(), next);
        }
    }

    /// Items the user purchased.
    pub fn purchased(&self, user: &str) -> HashSet<String> {
        match self.purchases.get(user) {
            Some(list) => list.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().cloned().collect(),
            None => HashSet::new(),
        }
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
        UserCaches::new(&CacheSettings::default(), lookups)
    }

    fn event(kind: EventKind, item: Option<&str>) -> Event {
        Event { user_id: "u1".into(), kind, item_id: item.map(String::from), timestamp_ms: None, idempotency_key: None }
    }

    #[test]
    fn significant_events_bump_the_generation_and_purchases_are_remembered() {
        let c = caches();
        assert_eq!(c.generation("u1"), 0);
        c.record(&event(EventKind::View, Some("i1")));
        assert_eq!(c.generation("u1"), 0, "a view is not significant");
        c.record(&event(EventKind::Purchase, Some("i2")));
        c.record(&event(EventKind::Purchase, Some("i2")));
        assert_eq!(c.generation("u1"), 2);
        assert_eq!(c.purchased("u1"), HashSet::from(["i2".to_string()]));
        assert!(c.purchased("u2").is_empty());
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
                        Ok(Arc::new(vec![RecItem { id: "x".into(), score: 1.0, title: None }]))
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap()[0].id, "x");
        }
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
