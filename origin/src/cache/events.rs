//! A batch of events from `POST /v1/events`: idempotency keys first, then each event's
//! [`Effects`](super::rules::Effects) applied to the user's state.
//!
//! An event with an `idempotency_key` already seen (per user, within a day, at most a million
//! keys) is counted as a duplicate and not applied again. A purchase is remembered; a session
//! event joins the session; a significant or session event bumps the user's generation. This
//! process sees the change at once, other processes within `state_ttl`.

use std::time::Duration;

use cascade_shared::wire::{Event, EventsAccepted};

use super::UserCaches;
use crate::store::StoreError;

/// A batch stopped part way: the state store failed on one event. The events before it were
/// applied; the caller should retry the rest (their idempotency keys make a retry safe).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{applied} event(s) applied, then the user state store failed ({cause}); retry the rest")]
pub struct EventsError {
    /// Events applied before the failure.
    pub applied: usize,
    /// What failed.
    pub cause: StoreError,
}

/// The window of remembered idempotency keys.
pub(super) fn dedup_window() -> moka::sync::Cache<String, ()> {
    moka::sync::Cache::builder().max_capacity(1_000_000).time_to_live(Duration::from_secs(86_400)).build()
}

impl UserCaches {
    /// Applies a validated batch, skipping events whose idempotency key was seen.
    pub async fn apply_events(&self, events: &[Event]) -> Result<EventsAccepted, EventsError> {
        let mut accepted = 0;
        let mut duplicates = 0;
        for event in events {
            let dedup_key = event.idempotency_key.as_ref().map(|key| format!("{}:{key}", event.user_id));
            let fresh = match &dedup_key {
                Some(key) => self.seen_events.entry(key.clone()).or_insert(()).is_fresh(),
                None => true,
            };
            if !fresh {
                duplicates += 1;
                continue;
            }
            if let Err(cause) = self.record(event).await {
                // Not applied: forget the key so the caller's retry is taken.
                if let Some(key) = &dedup_key {
                    self.seen_events.invalidate(key);
                }
                return Err(EventsError { applied: accepted, cause });
            }
            accepted += 1;
            tracing::debug!(user_id = %event.user_id, kind = ?event.kind, "event accepted");
        }
        Ok(EventsAccepted { accepted, duplicates })
    }

    /// Applies one event's effects to the user's state.
    pub async fn record(&self, event: &Event) -> Result<(), StoreError> {
        let effects = self.rules.effects(event);
        if let Some(item) = effects.purchase {
            self.backend.add_purchase(&event.user_id, item).await?;
        }
        if let Some(item) = effects.session_item {
            self.backend.push_recent(&event.user_id, item).await?;
        }
        if effects.invalidate {
            self.backend.bump_generation(&event.user_id).await?;
        }
        if let Some(local) = &self.local {
            local.invalidate(&event.user_id).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_shared::wire::EventKind;
    use prometheus::{IntCounterVec, Opts};

    fn event(key: Option<&str>) -> Event {
        Event {
            user_id: "u1".into(),
            kind: EventKind::Purchase,
            item_id: Some("i1".into()),
            timestamp_ms: None,
            idempotency_key: key.map(String::from),
        }
    }

    #[tokio::test]
    async fn idempotency_keys_apply_an_event_once() {
        let lookups = IntCounterVec::new(Opts::new("t", "t"), &["layer", "result"]).unwrap();
        let caches = UserCaches::in_process(&super::super::CacheConfig::default(), lookups);
        let batch = [event(Some("k1")), event(Some("k1")), event(None)];
        let accepted = caches.apply_events(&batch).await.unwrap();
        assert_eq!((accepted.accepted, accepted.duplicates), (2, 1));
        let again = caches.apply_events(&batch[..1]).await.unwrap();
        assert_eq!((again.accepted, again.duplicates), (0, 1));
        assert_eq!(caches.user("u1").await.unwrap().generation, 2, "two purchases applied");
    }
}
