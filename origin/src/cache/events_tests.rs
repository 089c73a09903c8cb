//! Events: idempotency keys apply an event once, and never acknowledge one that was lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use cascade_shared::wire::{EventKind, RecItem};
use prometheus::{IntCounterVec, Opts};

use super::*;
use crate::cache::{CacheConfig, ListKey, MemoryUserState, UserStateBackend};

const BUDGET: Duration = Duration::from_secs(5);

fn event(key: Option<&str>) -> Event {
    Event {
        user_id: "u1".into(),
        kind: EventKind::Purchase,
        item_id: Some("i1".into()),
        timestamp_ms: None,
        idempotency_key: key.map(String::from),
        rec_id: None,
        position: None,
    }
}

fn lookups() -> IntCounterVec {
    IntCounterVec::new(Opts::new("t", "t"), &["layer", "result"]).unwrap()
}

#[tokio::test]
async fn idempotency_keys_apply_an_event_once() {
    let caches = UserCaches::in_process(&CacheConfig::default(), lookups());
    let batch = [event(Some("k1")), event(Some("k1")), event(None)];
    let accepted = caches.apply_events(&batch, BUDGET).await.unwrap();
    assert_eq!((accepted.accepted, accepted.duplicates), (2, 1));
    let again = caches.apply_events(&batch[..1], BUDGET).await.unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 1));
    assert_eq!(caches.user("u1").await.unwrap().generation, 2, "two purchases applied");
}

/// In-process state whose first purchase write waits `delay` and then fails when `fail_first` (a
/// fake standing in for a shard that dies mid-write; the fault suite kills a real one).
struct FirstWriteStalls {
    inner: MemoryUserState,
    first: AtomicBool,
    delay: Duration,
    fail_first: bool,
}

impl FirstWriteStalls {
    fn new(delay: Duration, fail_first: bool) -> Self {
        FirstWriteStalls { inner: MemoryUserState::new(100), first: AtomicBool::new(true), delay, fail_first }
    }
}

#[async_trait]
impl UserStateBackend for FirstWriteStalls {
    async fn generation(&self, user: &str) -> Result<u64, StoreError> {
        self.inner.generation(user).await
    }
    async fn bump_generation(&self, user: &str) -> Result<u64, StoreError> {
        self.inner.bump_generation(user).await
    }
    async fn add_purchase(&self, user: &str, item: &str) -> Result<(), StoreError> {
        if self.first.swap(false, Ordering::SeqCst) {
            tokio::time::sleep(self.delay).await;
            if self.fail_first {
                return Err(StoreError::Unavailable { shard: 0, message: "died mid-write (test fake)".into() });
            }
        }
        self.inner.add_purchase(user, item).await
    }
    async fn purchases(&self, user: &str) -> Result<HashSet<String>, StoreError> {
        self.inner.purchases(user).await
    }
    async fn push_recent(&self, user: &str, item: &str) -> Result<(), StoreError> {
        self.inner.push_recent(user, item).await
    }
    async fn recent(&self, user: &str) -> Result<Vec<String>, StoreError> {
        self.inner.recent(user).await
    }
    async fn l2_get(&self, _: &ListKey) -> Result<Option<Vec<RecItem>>, StoreError> {
        Ok(None)
    }
    async fn l2_set(&self, _: &ListKey, _: &[RecItem], _: Duration) -> Result<(), StoreError> {
        Ok(())
    }
}

fn caches_over(backend: FirstWriteStalls) -> Arc<UserCaches> {
    Arc::new(UserCaches::new(&CacheConfig::default(), Arc::new(backend), false, lookups()))
}

#[tokio::test]
async fn a_retry_during_a_failing_first_attempt_applies_the_event() {
    let caches = caches_over(FirstWriteStalls::new(Duration::from_millis(200), true));
    let first = tokio::spawn({
        let caches = Arc::clone(&caches);
        async move { caches.apply_events(&[event(Some("k1"))], BUDGET).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The client's retry arrives while the first attempt is still in flight.
    let retry = caches.apply_events(&[event(Some("k1"))], BUDGET).await.unwrap();
    let first = first.await.unwrap();
    assert!(first.is_err(), "the first attempt failed");
    assert_eq!((retry.accepted, retry.duplicates), (1, 0), "the retry applied it, not 'duplicate'");
    assert!(caches.user("u1").await.unwrap().purchased.contains("i1"), "nothing acknowledged was lost");
}

#[tokio::test]
async fn a_cancelled_batch_leaves_its_keys_free_and_a_slow_one_stops_at_its_budget() {
    let caches = caches_over(FirstWriteStalls::new(Duration::from_secs(10), false));
    let cancelled = tokio::spawn({
        let caches = Arc::clone(&caches);
        async move { caches.apply_events(&[event(Some("k1"))], BUDGET).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    cancelled.abort();
    let _ = cancelled.await;
    let retry = caches.apply_events(&[event(Some("k1"))], BUDGET).await.unwrap();
    assert_eq!((retry.accepted, retry.duplicates), (1, 0), "the key of a cancelled attempt is not marked");

    let slow = caches_over(FirstWriteStalls::new(Duration::from_secs(10), false));
    let started = Instant::now();
    let stopped = slow.apply_events(&[event(Some("k2")), event(None)], Duration::from_millis(100)).await;
    assert!(matches!(stopped, Err(EventsError { applied: 0, cause: EventsFailure::Budget(_) })), "{stopped:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "stopped at the budget: {:?}", started.elapsed());
}
