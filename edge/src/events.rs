//! A signed-in visitor's events (`POST /events`): checked at the edge, given the user the token
//! names, and forwarded to the origin's `POST /v1/events` signed, with the body's digest in the
//! signed query so the signature covers the body. Never cached.
//!
//! The visitor sends `{"events": [{"kind": "click", "item_id": "…", "rec_id": "…", "position": 3}]}`
//! (or one event object); a `user_id` other than the token's is refused, and only the kinds a
//! browser may report (`view`, `click`, `add_to_cart`) pass: a purchase comes from the site's own
//! backend, with a bearer key.

use cascade_shared::signing::{BODY_DIGEST_PARAM, body_digest};
use cascade_shared::validate::FieldError;
use cascade_shared::wire::{EventKind, parse_events};

use crate::config::EdgeConfig;
use crate::origin::{Ids, OriginRequest, signed};

/// Most events in one visitor request.
pub const MAX_VISITOR_EVENTS: usize = 20;
/// Largest visitor events body, bytes.
pub const MAX_VISITOR_BODY: usize = 16 * 1024;

/// Refuses a body whose declared `Content-Length` is over [`MAX_VISITOR_BODY`] before it is read
/// (a body sent without one is read, then measured by [`visitor_batch`]).
pub fn check_declared_length(content_length: Option<&str>) -> Result<(), FieldError> {
    match content_length.map(|v| v.trim().parse::<u64>()) {
        Some(Ok(length)) if length > MAX_VISITOR_BODY as u64 => {
            Err(FieldError::new("body", format!("at most {MAX_VISITOR_BODY} bytes, got {length}")))
        }
        Some(Err(_)) => Err(FieldError::new("content-length", "must be a number of bytes")),
        _ => Ok(()),
    }
}

/// The origin's events body for `user_id`'s `body`, or what is wrong with it (a 400).
pub fn visitor_batch(body: &[u8], user_id: &str, now_ms: u64) -> Result<Vec<u8>, FieldError> {
    if body.len() > MAX_VISITOR_BODY {
        return Err(FieldError::new("body", format!("at most {MAX_VISITOR_BODY} bytes")));
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| FieldError::new("body", format!("not valid JSON: {e}")))?;
    let mut events = match value {
        serde_json::Value::Object(mut map) if map.contains_key("events") => match map.remove("events") {
            Some(serde_json::Value::Array(events)) => events,
            _ => return Err(FieldError::new("events", "must be an array of events")),
        },
        serde_json::Value::Object(map) => vec![serde_json::Value::Object(map)],
        _ => return Err(FieldError::new("body", "must be an event object or {\"events\": [...]}")),
    };
    if events.is_empty() || events.len() > MAX_VISITOR_EVENTS {
        return Err(FieldError::new("events", format!("must hold 1..={MAX_VISITOR_EVENTS} events")));
    }
    for (index, event) in events.iter_mut().enumerate() {
        let serde_json::Value::Object(event) = event else {
            return Err(FieldError::new(format!("events[{index}]"), "must be an object"));
        };
        match event.get("user_id") {
            None => {}
            Some(serde_json::Value::String(given)) if given == user_id => {}
            Some(_) => return Err(FieldError::new(format!("events[{index}].user_id"), "must be the signed-in user's")),
        }
        event.insert("user_id".into(), serde_json::Value::String(user_id.to_string()));
    }
    let batch = serde_json::json!({ "events": events });
    let bytes = serde_json::to_vec(&batch).map_err(|e| FieldError::new("body", e.to_string()))?;
    let parsed = parse_events(&bytes, now_ms)?;
    if let Some(index) = parsed.iter().position(|event| !event.kind.from_visitors()) {
        return Err(FieldError::new(
            format!("events[{index}].kind"),
            format!("a browser may report only {}", EventKind::FROM_VISITORS.join(", ")),
        ));
    }
    Ok(bytes)
}

/// The signed origin call for a checked batch.
pub fn events_request(config: &EdgeConfig, batch: Vec<u8>, now_secs: u64, ids: &Ids) -> OriginRequest {
    let query = format!("{BODY_DIGEST_PARAM}={}", body_digest(&batch));
    signed(config, "POST", "/v1/events".into(), query, now_secs, ids).with_body(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::config;

    #[test]
    fn a_visitor_batch_gets_the_token_user_and_only_browser_kinds() {
        let body = br#"{"events": [{"kind": "click", "item_id": "i1", "rec_id": "01J0000000000000000000000A", "position": 2}]}"#;
        let batch = visitor_batch(body, "u7", 1_000).unwrap();
        let events = parse_events(&batch, 1_000).unwrap();
        assert_eq!((events[0].user_id.as_str(), events[0].kind, events[0].position), ("u7", EventKind::Click, Some(2)));
        // One object works too; the token's own user_id may be given.
        assert!(visitor_batch(br#"{"kind": "view", "item_id": "i1", "user_id": "u7"}"#, "u7", 0).is_ok());
        let field = |body: &[u8]| visitor_batch(body, "u7", 0).unwrap_err().field;
        assert_eq!(field(br#"{"kind": "view", "item_id": "i1", "user_id": "u8"}"#), "events[0].user_id");
        assert_eq!(field(br#"{"events": [{"kind": "purchase", "item_id": "i1"}]}"#), "events[0].kind");
        assert_eq!(field(br#"{"events": [{"kind": "click"}, {"kind": "jump", "item_id": "i"}]}"#), "events[0].item_id");
        assert_eq!(field(br#"{"events": []}"#), "events");
        assert_eq!(field(b"[1]"), "body");
        assert_eq!(field(&vec![b' '; MAX_VISITOR_BODY + 1]), "body");
        let many = format!("{{\"events\": [{}]}}", vec![r#"{"kind":"view","item_id":"i"}"#; 21].join(","));
        assert_eq!(field(many.as_bytes()), "events");
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_before_the_body_is_read() {
        assert!(check_declared_length(None).is_ok());
        assert!(check_declared_length(Some("16384")).is_ok());
        assert_eq!(check_declared_length(Some("16385")).unwrap_err().field, "body");
        assert_eq!(check_declared_length(Some("lots")).unwrap_err().field, "content-length");
    }

    #[test]
    fn the_forwarded_batch_is_signed_with_its_digest() {
        let config = config(&[]);
        let request = events_request(&config, b"{\"events\":[]}".to_vec(), 1_000, &Ids::new("rid"));
        let digest = body_digest(b"{\"events\":[]}");
        assert_eq!(request.url, format!("http://127.0.0.1:8080/v1/events?body_sha256={digest}"));
        assert_eq!((request.method, request.body.as_deref()), ("POST", Some(&b"{\"events\":[]}"[..])));
        let get = |name: &str| request.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let target = cascade_shared::signing::RequestTarget {
            method: "POST",
            path: "/v1/events",
            query: &format!("body_sha256={digest}"),
        };
        let keys = cascade_shared::signing::Keys::derive(b"0123456789abcdef");
        let verified = cascade_shared::signing::verify(
            &keys.edge_requests,
            target,
            get(cascade_shared::signing::TIMESTAMP_HEADER),
            get(cascade_shared::signing::SIGNATURE_HEADER),
            1_000,
            300,
        );
        assert_eq!(verified, Ok(()));
    }
}
