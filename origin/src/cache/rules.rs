//! The event rules, pure: what an event changes about a user's state and cached lists, and the
//! filter every answer passes through on the way out.

use std::collections::HashSet;

use cascade_shared::wire::{Event, EventKind, RecItem};

/// Which event kinds invalidate a user's lists and which join their session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRules {
    /// Kinds that invalidate the user's cached lists (by default `purchase`, `profile_update`).
    pub significant: Vec<EventKind>,
    /// Kinds whose item joins the user's session (and so also invalidate: the real-time ranking
    /// moves with the session).
    pub session: Vec<EventKind>,
}

/// What one event changes (the default: nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Effects<'a> {
    /// An item to remember as purchased (filtered from every later answer).
    pub purchase: Option<&'a str>,
    /// An item to push onto the user's session.
    pub session_item: Option<&'a str>,
    /// Whether the user's generation is bumped (every cached list becomes unreachable).
    pub invalidate: bool,
}

impl EventRules {
    /// The effects of `event` under these rules.
    pub fn effects<'a>(&self, event: &'a Event) -> Effects<'a> {
        let item = event.item_id.as_deref();
        let in_session = self.session.contains(&event.kind);
        Effects {
            purchase: if event.kind == EventKind::Purchase { item } else { None },
            session_item: if in_session { item } else { None },
            invalidate: self.significant.contains(&event.kind) || in_session,
        }
    }
}

/// Drops `excluded` items and keeps the first `n`.
pub fn filter_items(items: &[RecItem], excluded: &HashSet<String>, n: usize) -> Vec<RecItem> {
    items.iter().filter(|item| !excluded.contains(&item.id)).take(n).cloned().collect()
}

/// User `u1`'s event of `kind` on `item`, nothing else set (the cache tests' fixture).
#[cfg(test)]
pub(crate) fn test_event(kind: EventKind, item: Option<&str>) -> Event {
    Event {
        user_id: "u1".into(),
        kind,
        item_id: item.map(String::from),
        timestamp_ms: None,
        idempotency_key: None,
        rec_id: None,
        position: None,
    }
}

#[cfg(test)]
mod tests {
    use super::test_event as event;
    use super::*;

    #[test]
    fn effects_by_kind() {
        let rules = EventRules {
            significant: vec![EventKind::Purchase, EventKind::ProfileUpdate],
            session: vec![EventKind::View, EventKind::Click],
        };
        let purchase = event(EventKind::Purchase, Some("i1"));
        assert_eq!(rules.effects(&purchase), Effects { purchase: Some("i1"), session_item: None, invalidate: true });
        let view = event(EventKind::View, Some("i2"));
        assert_eq!(rules.effects(&view), Effects { purchase: None, session_item: Some("i2"), invalidate: true });
        let rate = event(EventKind::Rate, Some("i3"));
        assert_eq!(rules.effects(&rate), Effects { purchase: None, session_item: None, invalidate: false });
        let profile = event(EventKind::ProfileUpdate, None);
        assert!(rules.effects(&profile).invalidate);
    }

    #[test]
    fn filtering_keeps_order_and_n() {
        let items: Vec<RecItem> = (0..5)
            .map(|i| RecItem { id: format!("i{i}"), score: 1.0 - i as f32 / 10.0, title: None, position: 0 })
            .collect();
        let kept = filter_items(&items, &HashSet::from(["i1".to_string()]), 3);
        assert_eq!(kept.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), vec!["i0", "i2", "i3"]);
    }
}
