//! Events: what users did, as `POST /v1/events` takes them (one object or `{"events": [...]}`),
//! validated whole with errors naming `events[i].field`.

use serde::{Deserialize, Serialize};

use crate::validate::{FieldError, validate_id};

/// What a user did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Saw an item's page.
    View,
    /// Clicked a recommendation.
    Click,
    /// Added to the cart.
    AddToCart,
    /// Bought (significant: purchased items are filtered out of later lists).
    Purchase,
    /// Rated.
    Rate,
    /// Changed their profile (significant).
    ProfileUpdate,
}

impl EventKind {
    /// Every kind, for error messages.
    pub const ALL: [&'static str; 6] = ["view", "click", "add_to_cart", "purchase", "rate", "profile_update"];
    /// The kinds a browser may report through the edge (a purchase, a rating or a profile change
    /// comes from the site's own backend, with a bearer key).
    pub const FROM_VISITORS: [&'static str; 3] = ["view", "click", "add_to_cart"];

    /// Whether a browser may report this kind through the edge.
    pub fn from_visitors(self) -> bool {
        matches!(self, EventKind::View | EventKind::Click | EventKind::AddToCart)
    }
}

/// One user action, as `POST /v1/events` takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Who.
    pub user_id: String,
    /// What kind of action.
    pub kind: EventKind,
    /// On which item (absent only for `profile_update`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    /// When, in Unix milliseconds (default: when received).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_ms: Option<u64>,
    /// Deduplication key: an event sent twice with the same key counts once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The served list the action came from (its `rec_id`), when it came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rec_id: Option<String>,
    /// The item's position in that list (1 for the first); only with `rec_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
}

impl Event {
    /// An event of `kind` by `user_id` on `item_id`, timed by the origin when it arrives.
    pub fn new(user_id: &str, kind: EventKind, item_id: Option<&str>) -> Self {
        Event {
            user_id: user_id.to_string(),
            kind,
            item_id: item_id.map(str::to_string),
            timestamp_ms: None,
            idempotency_key: None,
            rec_id: None,
            position: None,
        }
    }
}

/// How far in the future an event's timestamp may be (clock skew allowance).
pub const MAX_EVENT_FUTURE_MS: u64 = 5 * 60 * 1000;
/// Most events in one `POST /v1/events`.
pub const MAX_EVENTS_PER_BATCH: usize = 1000;

/// The answer to `POST /v1/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventsAccepted {
    /// Events taken.
    pub accepted: usize,
    /// Events skipped as duplicates of an earlier idempotency key.
    pub duplicates: usize,
}

/// Parses a body holding one event object, or `{"events": [...]}`, and validates each event.
/// Errors name the offending event as `events[i].field`.
///
/// The batch limit is enforced while parsing: the parser stops at event
/// [`MAX_EVENTS_PER_BATCH`]` + 1`, so a body of a million tiny events is refused after a thousand
/// values, not after building a million.
pub fn parse_events(body: &[u8], now_ms: u64) -> Result<Vec<Event>, FieldError> {
    let parsed: Body = serde_json::from_slice(body).map_err(|e| {
        if e.to_string().starts_with(TOO_MANY) {
            FieldError::new("events", format!("at most {MAX_EVENTS_PER_BATCH} events per request"))
        } else {
            FieldError::new("body", format!("not valid JSON: {e}"))
        }
    })?;
    let (raw_events, batch) = match parsed {
        Body::Batch(Some(items)) => (items, true),
        Body::Batch(None) => return Err(FieldError::new("events", "must be an array of events")),
        Body::Single(map) => (vec![serde_json::Value::Object(map)], false),
        Body::Other => return Err(FieldError::new("body", "must be an event object or {\"events\": [...]}")),
    };
    if raw_events.is_empty() {
        return Err(FieldError::new("events", "must not be empty"));
    }
    raw_events
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            let prefix = if batch { format!("events[{index}]") } else { "event".to_string() };
            let event: Event = serde_json::from_value(raw)
                .map_err(|e| FieldError::new(prefix.clone(), format!("{e} (kinds: {})", EventKind::ALL.join(", "))))?;
            validate_event(&event, now_ms).map_err(|e| FieldError::new(format!("{prefix}.{}", e.field), e.message))?;
            Ok(event)
        })
        .collect()
}

/// The start of the parser's error when a batch is over the limit.
const TOO_MANY: &str = "too many events";

/// An events body as the parser sees it, before each event is read.
enum Body {
    /// `{"events": …}`: the array (at most the limit), or `None` when it is not an array.
    Batch(Option<Vec<serde_json::Value>>),
    /// An object without `events`: one event.
    Single(serde_json::Map<String, serde_json::Value>),
    /// Anything else.
    Other,
}

impl<'de> serde::Deserialize<'de> for Body {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{Error, IgnoredAny, MapAccess, SeqAccess, Visitor};

        /// An array of at most [`MAX_EVENTS_PER_BATCH`] values, or `None` for a non-array.
        struct Bounded(Option<Vec<serde_json::Value>>);
        impl<'de> serde::Deserialize<'de> for Bounded {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Items;
                impl<'de> Visitor<'de> for Items {
                    type Value = Bounded;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("an array of events")
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bounded, A::Error> {
                        let mut items = Vec::new();
                        while let Some(item) = seq.next_element::<serde_json::Value>()? {
                            if items.len() == MAX_EVENTS_PER_BATCH {
                                return Err(A::Error::custom(TOO_MANY));
                            }
                            items.push(item);
                        }
                        Ok(Bounded(Some(items)))
                    }
                    // Anything but an array is read whole (bounded by the body limit) and refused.
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Bounded, A::Error> {
                        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                        Ok(Bounded(None))
                    }
                    fn visit_str<E: Error>(self, _: &str) -> Result<Bounded, E> {
                        Ok(Bounded(None))
                    }
                    fn visit_bool<E: Error>(self, _: bool) -> Result<Bounded, E> {
                        Ok(Bounded(None))
                    }
                    fn visit_i64<E: Error>(self, _: i64) -> Result<Bounded, E> {
                        Ok(Bounded(None))
                    }
                    fn visit_u64<E: Error>(self, _: u64) -> Result<Bounded, E> {
                        Ok(Bounded(None))
                    }
                    fn visit_f64<E: Error>(self, _: f64) -> Result<Bounded, E> {
                        Ok(Bounded(None))
                    }
                    fn visit_unit<E: Error>(self) -> Result<Bounded, E> {
                        Ok(Bounded(None))
                    }
                }
                deserializer.deserialize_any(Items)
            }
        }

        struct Top;
        impl<'de> Visitor<'de> for Top {
            type Value = Body;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an event object or {\"events\": [...]}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
                let mut fields = serde_json::Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "events" {
                        let Bounded(items) = map.next_value()?;
                        // Whatever follows the batch is read and ignored.
                        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                        return Ok(Body::Batch(items));
                    }
                    fields.insert(key, map.next_value()?);
                }
                Ok(Body::Single(fields))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Body, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Body::Other)
            }
            fn visit_str<E: Error>(self, _: &str) -> Result<Body, E> {
                Ok(Body::Other)
            }
            fn visit_bool<E: Error>(self, _: bool) -> Result<Body, E> {
                Ok(Body::Other)
            }
            fn visit_i64<E: Error>(self, _: i64) -> Result<Body, E> {
                Ok(Body::Other)
            }
            fn visit_u64<E: Error>(self, _: u64) -> Result<Body, E> {
                Ok(Body::Other)
            }
            fn visit_f64<E: Error>(self, _: f64) -> Result<Body, E> {
                Ok(Body::Other)
            }
            fn visit_unit<E: Error>(self) -> Result<Body, E> {
                Ok(Body::Other)
            }
        }
        deserializer.deserialize_any(Top)
    }
}

/// Checks one event as the origin does at `now_ms` (Unix ms); the error names the field.
pub fn validate_event(event: &Event, now_ms: u64) -> Result<(), FieldError> {
    validate_id("user_id", &event.user_id)?;
    match (&event.item_id, event.kind) {
        (Some(item), _) => validate_id("item_id", item)?,
        (None, EventKind::ProfileUpdate) => {}
        (None, _) => return Err(FieldError::new("item_id", "is required for this kind")),
    }
    if let Some(ts) = event.timestamp_ms
        && ts > now_ms + MAX_EVENT_FUTURE_MS
    {
        return Err(FieldError::new("timestamp_ms", format!("is {} s in the future", (ts - now_ms) / 1000)));
    }
    if let Some(key) = &event.idempotency_key
        && (key.is_empty() || key.len() > 128)
    {
        return Err(FieldError::new("idempotency_key", "must be 1 to 128 bytes"));
    }
    if let Some(rec_id) = &event.rec_id
        && !crate::rec_id::is_valid(rec_id)
    {
        return Err(FieldError::new("rec_id", "must be the rec_id of a served list (26 characters)"));
    }
    match (event.position, &event.rec_id) {
        (Some(position), Some(_)) if !(1..=crate::validate::MAX_N as u32).contains(&position) => {
            return Err(FieldError::new("position", format!("must be within 1..={}", crate::validate::MAX_N)));
        }
        (Some(_), None) => return Err(FieldError::new("position", "is only meaningful with rec_id")),
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_may_cite_the_list_and_position_they_came_from() {
        let rec_id = crate::rec_id::new(1_764_000_000_000, 42);
        let body = format!(r#"{{"user_id":"u1","kind":"click","item_id":"i1","rec_id":"{rec_id}","position":3}}"#);
        let event = &parse_events(body.as_bytes(), 0).unwrap()[0];
        assert_eq!((event.rec_id.as_deref(), event.position), (Some(rec_id.as_str()), Some(3)));
        let field = |body: &str| parse_events(body.as_bytes(), 0).unwrap_err().field;
        assert_eq!(field(r#"{"user_id":"u1","kind":"click","item_id":"i1","rec_id":"nope"}"#), "event.rec_id");
        let zero = format!(r#"{{"user_id":"u1","kind":"click","item_id":"i1","rec_id":"{rec_id}","position":0}}"#);
        assert_eq!(field(&zero), "event.position");
        assert_eq!(field(r#"{"user_id":"u1","kind":"click","item_id":"i1","position":2}"#), "event.position");
    }

    #[test]
    fn events_single_and_batch() {
        let one = parse_events(br#"{"user_id":"u1","kind":"view","item_id":"i1"}"#, 0).unwrap();
        assert_eq!(one[0].kind, EventKind::View);
        let batch = parse_events(br#"{"events":[{"user_id":"u1","kind":"purchase","item_id":"i1"},{"user_id":"u2","kind":"profile_update"}]}"#, 0).unwrap();
        assert_eq!(batch.len(), 2);
    }

    #[test]
    fn event_errors_name_the_index_and_field() {
        let err = parse_events(br#"{"events":[{"user_id":"u1","kind":"view","item_id":"i1"},{"user_id":"u1","kind":"teleport","item_id":"i1"}]}"#, 0).unwrap_err();
        assert_eq!(err.field, "events[1]");
        let err = parse_events(br#"{"events":[{"user_id":"","kind":"view","item_id":"i1"}]}"#, 0).unwrap_err();
        assert_eq!(err.field, "events[0].user_id");
        let err =
            parse_events(br#"{"user_id":"u","kind":"view","item_id":"i","timestamp_ms":999999999}"#, 1000).unwrap_err();
        assert_eq!(err.field, "event.timestamp_ms");
        let err = parse_events(br#"{"user_id":"u","kind":"click"}"#, 0).unwrap_err();
        assert_eq!(err.field, "event.item_id");
        assert_eq!(parse_events(b"[1]", 0).unwrap_err().field, "body");
        assert_eq!(parse_events(br#"{"events":[]}"#, 0).unwrap_err().field, "events");
        assert_eq!(parse_events(br#"{"events":{"a":1}}"#, 0).unwrap_err().field, "events");
        assert_eq!(parse_events(br#"{"events":null}"#, 0).unwrap_err().field, "events");
        assert_eq!(parse_events(b"\"x\"", 0).unwrap_err().field, "body");
        assert_eq!(parse_events(b"{\"events\":[}", 0).unwrap_err().field, "body");
    }

    #[test]
    fn the_batch_limit_stops_the_parser() {
        let event = r#"{"user_id":"u1","kind":"view","item_id":"i1"}"#;
        let full = format!("{{\"events\":[{}]}}", vec![event; MAX_EVENTS_PER_BATCH].join(","));
        assert_eq!(parse_events(full.as_bytes(), 0).unwrap().len(), MAX_EVENTS_PER_BATCH);
        // One event more, then bytes that are not JSON at all: the parser stops at the count and
        // never reaches them (a parse of the whole body first would report "not valid JSON").
        let over = format!("{{\"events\":[{},{{}}, this is not json", vec![event; MAX_EVENTS_PER_BATCH].join(","));
        let error = parse_events(over.as_bytes(), 0).unwrap_err();
        assert_eq!(error.field, "events", "{error}");
        assert!(error.message.contains("at most"), "{error}");
    }
}
