//! A batch of events from `POST /v1/events`: each event's idempotency key claimed, its
//! [`Effects`](super::rules::Effects) applied to the user's state, then the key remembered.
//!
//! An event with an `idempotency_key` already applied (per user, within a day, at most a million
//! keys, least recently seen forgotten first) is counted as a duplicate and not applied again. A
//! key is remembered only once its event is applied: while a first attempt is in flight, a retry
//! carrying the same key waits for it (and applies the event itself if the first attempt failed
//! or was cancelled), so an event is never acknowledged and lost. A claim is released however its
//! attempt ends, a dropped (cancelled) batch included.
//!
//! The whole batch runs within a budget (`serving.events_deadline_ms`): past it, the events not
//! yet applied are answered with [`EventsError`] (503, retry the rest), so a slow shard cannot
//! hold a request slot for the Redis timeout of every event.
//!
//! A purchase is remembered; a session event joins the session; a significant or session event
//! bumps the user's generation. This process sees the change at once, other processes within
//! `state_ttl`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cascade_shared::wire::{Event, EventsAccepted};
use tokio::sync::watch;

use super::UserCaches;
use crate::store::StoreError;

/// A batch stopped part way. The events before it were applied; the caller should retry the rest
/// (their idempotency keys make a retry safe).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{applied} event(s) applied, then {cause}; retry the rest")]
pub struct EventsError {
    /// Events applied before the failure.
    pub applied: usize,
    /// What failed.
    pub cause: EventsFailure,
}

/// Why a batch stopped.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EventsFailure {
    /// The state store failed on an event.
    #[error("the user state store failed ({0})")]
    Store(#[from] StoreError),
    /// The batch's budget ran out.
    #[error("the batch's budget of {0:?} ran out")]
    Budget(Duration),
}

/// Idempotency keys: those applied (a bounded window) and those being applied now.
pub(super) struct Dedup {
    applied: moka::sync::Cache<String, ()>,
    /// Keys whose event is being applied: the sender is dropped when the attempt ends.
    in_flight: Mutex<HashMap<String, watch::Receiver<()>>>,
}

impl Dedup {
    /// The window of remembered keys (LRU: a new key is never refused admission).
    pub(super) fn new() -> Self {
        Dedup {
            applied: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(Duration::from_secs(86_400))
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .build(),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Claims `key` for one attempt, or `None` when its event was already applied. Waits while
    /// another attempt holds it.
    async fn claim<'a>(&'a self, key: &str) -> Option<Claim<'a>> {
        loop {
            if self.applied.contains_key(key) {
                return None;
            }
            let mut wait = {
                let mut in_flight = self.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                match in_flight.get(key) {
                    Some(receiver) => receiver.clone(),
                    None => {
                        let (done, receiver) = watch::channel(());
                        in_flight.insert(key.to_string(), receiver);
                        return Some(Claim { dedup: self, key: key.to_string(), _done: done });
                    }
                }
            };
            // Returns (with an error) when the other attempt's claim is dropped.
            let _ = wait.changed().await;
        }
    }
}

/// One attempt's hold on a key: released (and waiters woken) when dropped.
struct Claim<'a> {
    dedup: &'a Dedup,
    key: String,
    _done: watch::Sender<()>,
}

impl Claim<'_> {
    /// The event is applied: remember the key, then release it.
    fn applied(self) {
        self.dedup.applied.insert(self.key.clone(), ());
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.dedup.in_flight.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&self.key);
    }
}

impl UserCaches {
    /// Applies a validated batch within `budget`, skipping events whose idempotency key was
    /// applied before.
    pub async fn apply_events(&self, events: &[Event], budget: Duration) -> Result<EventsAccepted, EventsError> {
        let deadline = Instant::now() + budget;
        let mut accepted = 0;
        let mut duplicates = 0;
        for event in events {
            let attempt = async {
                let claim = match &event.idempotency_key {
                    Some(key) => match self.dedup.claim(&format!("{}:{key}", event.user_id)).await {
                        Some(claim) => Some(claim),
                        None => return Ok(false),
                    },
                    None => None,
                };
                self.record(event).await?;
                if let Some(claim) = claim {
                    claim.applied();
                }
                Ok::<bool, StoreError>(true)
            };
            match tokio::time::timeout_at(deadline.into(), attempt).await {
                Ok(Ok(true)) => {
                    accepted += 1;
                    tracing::debug!(user_id = %event.user_id, kind = ?event.kind, "event accepted");
                }
                Ok(Ok(false)) => duplicates += 1,
                Ok(Err(cause)) => return Err(EventsError { applied: accepted, cause: cause.into() }),
                Err(_) => return Err(EventsError { applied: accepted, cause: EventsFailure::Budget(budget) }),
            }
        }
        Ok(EventsAccepted { accepted, duplicates })
    }

    /// Applies one event's effects to the user's state (one round trip on Redis).
    pub async fn record(&self, event: &Event) -> Result<(), StoreError> {
        let effects = self.rules.effects(event);
        self.backend.apply(&event.user_id, effects).await?;
        if let Some(local) = &self.local {
            local.invalidate(&event.user_id).await;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
