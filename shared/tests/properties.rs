//! Property tests of the pure parsers both sides rely on: segment keys, event batches and visitor
//! tokens. (Native only: proptest needs an OS random source, which wasm32 lacks; the golden vectors
//! cover wasm32.)

#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use cascade_shared::segment::{DEVICES, PAGES, SegmentKey};
use cascade_shared::token;
use cascade_shared::validate::{MAX_N, RecsQuery};
use cascade_shared::wire::{Event, EventKind, MAX_EVENTS_PER_BATCH, parse_events};
use proptest::prelude::*;

const NOW_MS: u64 = 1_800_000_000_000;

fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,64}"
}

fn event() -> impl Strategy<Value = Event> {
    (id(), prop::sample::select(EventKind::ALL.to_vec()), id(), prop::option::of(0..NOW_MS), prop::option::of(id()))
        .prop_map(|(user_id, kind, item, timestamp_ms, idempotency_key)| {
            let kind: EventKind = serde_json::from_value(serde_json::json!(kind)).unwrap();
            let item_id = (kind != EventKind::ProfileUpdate).then_some(item);
            Event { user_id, kind, item_id, timestamp_ms, idempotency_key, rec_id: None, position: None }
        })
}

proptest! {
    /// Every canonical key parses back to itself; any other string parses to a key whose text is
    /// canonical, or is refused, never a panic.
    #[test]
    fn segment_keys_round_trip(page in 0..PAGES.len(), device in 0..DEVICES.len(), country in "[a-z]{2}", noise in ".{0,40}") {
        let key = format!("{}.{}.{country}", PAGES[page], DEVICES[device]);
        let parsed = SegmentKey::parse(&key).unwrap();
        prop_assert_eq!(parsed.to_string(), key);
        if let Ok(other) = SegmentKey::parse(&noise) {
            prop_assert_eq!(SegmentKey::parse(&other.to_string()).unwrap(), other);
        }
    }

    /// Any query string gives a valid `n` and a canonical segment, or a 400 naming a field.
    #[test]
    fn recs_queries_are_canonical_or_refused(query in ".{0,200}") {
        match RecsQuery::parse(&query) {
            Ok(parsed) => {
                prop_assert!((1..=MAX_N).contains(&parsed.n));
                prop_assert_eq!(SegmentKey::parse(&parsed.segment.to_string()).unwrap(), parsed.segment);
            }
            Err(error) => prop_assert!(!error.field.is_empty()),
        }
    }

    /// A valid batch parses back to exactly the events sent, in order.
    #[test]
    fn event_batches_round_trip(events in prop::collection::vec(event(), 1..20)) {
        let body = serde_json::to_vec(&serde_json::json!({ "events": events })).unwrap();
        prop_assert_eq!(parse_events(&body, NOW_MS).unwrap(), events);
    }

    /// Arbitrary bodies are parsed or refused with a named field, never a panic; an accepted batch
    /// is never empty or over the limit.
    #[test]
    fn arbitrary_event_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..300)) {
        match parse_events(&body, NOW_MS) {
            Ok(events) => prop_assert!((1..=MAX_EVENTS_PER_BATCH).contains(&events.len())),
            Err(error) => prop_assert!(!error.field.is_empty()),
        }
    }

    /// A token verifies to its user until it expires, and any change to it is refused.
    #[test]
    fn tokens_verify_and_tampering_is_refused(user in id(), expires_at in 1u64..u64::from(u32::MAX), flip in any::<prop::sample::Index>()) {
        let secret = b"property-secret-0123456789";
        let issued = token::issue(secret, &user, expires_at);
        prop_assert_eq!(token::verify(secret, &issued, expires_at - 1).unwrap(), user.as_str());
        prop_assert!(token::verify(secret, &issued, expires_at + 1).is_err(), "expired");
        prop_assert!(token::verify(b"another-secret-0123456789x", &issued, expires_at - 1).is_err());
        let mut bytes = issued.clone().into_bytes();
        let at = flip.index(bytes.len());
        bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(bytes).unwrap();
        if tampered != issued {
            prop_assert!(token::verify(secret, &tampered, expires_at - 1).is_err(), "{tampered}");
        }
    }
}
