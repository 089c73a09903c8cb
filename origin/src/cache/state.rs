//! [`UserStateBackend`]: where a user's generation, purchases, session and L2 lists live, and the
//! in-process implementation of the embedded default ([`MemoryUserState`], no L2).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cascade_shared::wire::RecItem;

use super::ListKey;
use super::rules::Effects;
use crate::store::StoreError;

/// Most purchases remembered per user (oldest forgotten first).
pub const MAX_PURCHASES_PER_USER: usize = 1000;
/// Recent items kept per user: the session that shifts real-time ranking.
pub const SESSION_ITEMS: usize = 10;
/// How long a session lasts after the user's last event.
pub const SESSION_TTL: Duration = Duration::from_secs(30 * 60);

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

    /// Applies one event's effects: purchase, then session, then generation. The default makes
    /// one call per effect; the Redis backend sends them as one pipeline.
    async fn apply(&self, user: &str, effects: Effects<'_>) -> Result<(), StoreError> {
        if let Some(item) = effects.purchase {
            self.add_purchase(user, item).await?;
        }
        if let Some(item) = effects.session_item {
            self.push_recent(user, item).await?;
        }
        if effects.invalidate {
            self.bump_generation(user).await?;
        }
        Ok(())
    }
}

/// In-process generations and purchases (the embedded default; no L2). Bounded by users, least
/// recently used forgotten first: LRU, not moka's default TinyLFU, whose admission policy may
/// refuse a new key when the cache is full, which would silently drop a new user's purchase or
/// generation bump.
pub struct MemoryUserState {
    generations: moka::sync::Cache<String, u64>,
    purchases: moka::sync::Cache<String, Arc<Mutex<VecDeque<String>>>>,
    recent: moka::sync::Cache<String, Arc<Mutex<VecDeque<String>>>>,
}

impl MemoryUserState {
    /// Remembers at most `users` users.
    pub fn new(users: u64) -> Self {
        let lru = || moka::policy::EvictionPolicy::lru();
        MemoryUserState {
            generations: moka::sync::Cache::builder().max_capacity(users).eviction_policy(lru()).build(),
            purchases: moka::sync::Cache::builder().max_capacity(users).eviction_policy(lru()).build(),
            recent: moka::sync::Cache::builder()
                .max_capacity(users)
                .time_to_idle(SESSION_TTL)
                .eviction_policy(lru())
                .build(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_state_still_takes_a_new_users_writes() {
        let state = MemoryUserState::new(10);
        // Ten users, each read often: under TinyLFU a newcomer would lose the admission contest.
        for round in 0..20 {
            for user in 0..10 {
                let user = format!("old{user}");
                if round == 0 {
                    state.bump_generation(&user).await.unwrap();
                    state.add_purchase(&user, "i1").await.unwrap();
                }
                state.generation(&user).await.unwrap();
                state.purchases(&user).await.unwrap();
            }
        }
        state.bump_generation("new").await.unwrap();
        state.add_purchase("new", "bought").await.unwrap();
        state.generations.run_pending_tasks();
        state.purchases.run_pending_tasks();
        assert_eq!(state.generation("new").await.unwrap(), 1, "the newest write is kept");
        assert!(state.purchases("new").await.unwrap().contains("bought"), "the newest purchase is kept");
    }
}
