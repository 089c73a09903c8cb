//! The fuzz targets' bodies: every parser that takes bytes from outside, each checked for more
//! than "does not panic" where an invariant is cheap to state (a canonical form parses back to
//! itself, a decoded file re-encodes to the same bytes, a length never exceeds its input).
//!
//! | target | what it feeds |
//! |---|---|
//! | [`tokens`] | visitor tokens, request signatures, token headers (`cascade_shared::{token, signing}`) |
//! | [`queries`] | recs query strings and segment keys (`cascade_shared::{validate, segment}`) |
//! | [`edge_router`] | the Worker's router on arbitrary request facts (`cascade_edge::route`) |
//! | [`events`] | `POST /v1/events` bodies (`cascade_shared::wire::parse_events`) |
//! | [`embeddings`] | embedding export files and values (`cascade_shared::embedding`) |
//! | [`edge_bodies`] | the Worker's visitor events bodies (`cascade_edge::events`) and its cut index of stored lists (`cascade_edge::segment_cache`) |
//! | [`resp`] | the origin's RESP reader (`origin/src/redis/frame.rs`, included by path: the origin crate links libtorch and FAISS, which a fuzzing build should not rebuild) |

#[path = "../../../origin/src/redis/frame.rs"]
#[allow(dead_code, missing_docs)]
mod frame;

use cascade_edge::route::{MAX_URL_LEN, Refusal, RequestFacts, route};
use cascade_shared::embedding::{decode_file, decode_value, encode_file};
use cascade_shared::segment::SegmentKey;
use cascade_shared::signing::{Keys, RequestTarget, sign, verify};
use cascade_shared::token;
use cascade_shared::validate::{MAX_N, QueryParams, RecsQuery, validate_id};
use cascade_shared::wire::{MAX_EVENTS_PER_BATCH, parse_events};

/// A target's body.
pub type Target = fn(&[u8]);

/// Every target, by name (the smoke test walks this list).
pub const TARGETS: [(&str, Target); 7] = [
    ("tokens", tokens),
    ("queries", queries),
    ("edge_router", edge_router),
    ("events", events),
    ("edge_bodies", edge_bodies),
    ("embeddings", embeddings),
    ("resp", resp),
];

/// The Worker's visitor events bodies: an accepted batch holds 1..=20 events of the token's user,
/// of kinds a browser may report, and parses as the origin parses it. And its cut index of a
/// stored list: whenever the input is JSON and an index is found, every cut is JSON too (the scan
/// respects strings, escapes and nesting).
pub fn edge_bodies(data: &[u8]) {
    use cascade_edge::events::{MAX_VISITOR_EVENTS, visitor_batch};
    use cascade_edge::segment_cache::{cut_by_index, cut_index};
    if let Ok(batch) = visitor_batch(data, "u7", NOW * 1000) {
        let events =
            parse_events(&batch, NOW * 1000).unwrap_or_else(|e| panic!("accepted a batch the origin refuses: {e:?}"));
        assert!((1..=MAX_VISITOR_EVENTS).contains(&events.len()));
        assert!(events.iter().all(|e| e.user_id == "u7" && e.kind.from_visitors()), "{events:?}");
    }
    if let Some(index) = cut_index(data) {
        let is_json = serde_json::from_slice::<serde_json::Value>(data).is_ok();
        for n in 1..=3 {
            let cut = cut_by_index(data, &index, n);
            if is_json {
                let cut = cut.unwrap_or_else(|| panic!("an index that does not fit its own body: {index}"));
                assert!(serde_json::from_str::<serde_json::Value>(&cut).is_ok(), "cut {n} is not JSON: {cut}");
            }
        }
    }
}

const SECRET: &[u8] = b"fuzz-secret-0123456789";
const NOW: u64 = 1_800_000_000;

/// The input as lines (lossy UTF-8), padded so there are always `n`.
fn fields(data: &[u8], n: usize) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    let mut lines: Vec<String> = text.splitn(n, '\n').map(str::to_string).collect();
    lines.resize(n, String::new());
    lines
}

/// Visitor tokens and request signatures: never a panic; a token or signature accepted is one
/// the key really made.
pub fn tokens(data: &[u8]) {
    let keys = Keys::derive(SECRET);
    let [token_text, timestamp, signature, path, query] = <[String; 5]>::try_from(fields(data, 5)).unwrap_or_default();
    if let Ok(user) = token::verify(&keys.visitor_tokens, &token_text, NOW) {
        assert!(validate_id("user_id", user).is_ok(), "accepted a token for an invalid id {user:?}");
        let expires: u64 = token_text.trim().rsplit('.').nth(1).and_then(|e| e.parse().ok()).unwrap_or(0);
        let reissued = token::issue(&keys.visitor_tokens, user, expires);
        assert!(reissued.eq_ignore_ascii_case(token_text.trim()), "accepted a token the key did not make");
    }
    let target = RequestTarget { method: "GET", path: &path, query: &query };
    if verify(&keys.edge_requests, target, Some(&timestamp), Some(&signature), NOW, 300).is_ok() {
        let ts: u64 = timestamp.trim().parse().unwrap_or(0);
        let expected = sign(&keys.edge_requests, "GET", &path, &query, ts);
        assert!(expected.eq_ignore_ascii_case(signature.trim()), "accepted a signature the key did not make");
    }
    let _ = token::from_headers(Some(&token_text), Some(&signature));
}

/// Query strings and segment keys: a parsed query is in range and its segment is canonical; a
/// segment key that parses prints back as itself.
pub fn queries(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(query) = RecsQuery::parse(&text) {
        assert!((1..=MAX_N).contains(&query.n), "n {} out of range", query.n);
        let canonical = query.segment.to_string();
        assert_eq!(SegmentKey::parse(&canonical), Ok(query.segment), "segment {canonical:?} is not canonical");
    }
    let _ = QueryParams::parse(&text);
    if let Ok(segment) = SegmentKey::parse(&text) {
        assert_eq!(segment.to_string(), text, "a segment key parses only in its canonical form");
    }
    let [page, device, country] = <[String; 3]>::try_from(fields(data, 3)).unwrap_or_default();
    let segment = SegmentKey::from_parts(Some(&page), Some(&device), Some(&country));
    assert_eq!(SegmentKey::parse(&segment.to_string()), Ok(segment));
}

/// The Worker's router on arbitrary request facts: never a panic, long URLs refused, every list
/// route's segment canonical and `n` in range.
pub fn edge_router(data: &[u8]) {
    let [method, path, query, country, user_agent, ch_mobile] =
        <[String; 6]>::try_from(fields(data, 6)).unwrap_or_default();
    let facts = RequestFacts {
        method: &method,
        path: &path,
        query: &query,
        country: Some(&country).filter(|c| !c.is_empty()).map(String::as_str),
        user_agent: Some(&user_agent).filter(|u| !u.is_empty()).map(String::as_str),
        ch_mobile: Some(&ch_mobile).filter(|c| !c.is_empty()).map(String::as_str),
    };
    let routed = route(&facts);
    if path.len() + query.len() > MAX_URL_LEN {
        assert_eq!(routed, Err(Refusal::UriTooLong));
    }
    if let Ok(cascade_edge::route::Route::Recs { segment, n }) = routed {
        assert!((1..=MAX_N).contains(&n));
        assert_eq!(SegmentKey::parse(&segment.to_string()), Ok(segment));
    }
}

/// Events bodies: never a panic; an accepted batch is within the limit and every id valid.
pub fn events(data: &[u8]) {
    if let Ok(events) = parse_events(data, NOW * 1000) {
        assert!((1..=MAX_EVENTS_PER_BATCH).contains(&events.len()));
        for event in &events {
            assert!(validate_id("user_id", &event.user_id).is_ok());
            if let Some(item) = &event.item_id {
                assert!(validate_id("item_id", item).is_ok());
            }
        }
    }
}

/// Embedding files and values: a file that decodes re-encodes to the same bytes; a value that
/// decodes has the dimension asked for.
pub fn embeddings(data: &[u8]) {
    if let Ok(table) = decode_file(data) {
        let dim = table.header.dim;
        assert_eq!(table.values.len(), table.ids.len() * dim);
        let ids: Vec<&str> = table.ids.iter().map(String::as_str).collect();
        assert_eq!(encode_file(&table.header.bundle_id, dim, &ids, &table.values), data, "not a round trip");
    }
    let dim = data.first().map_or(1, |&b| usize::from(b % 16) + 1);
    if let Ok(values) = decode_value(data.get(1..).unwrap_or_default(), dim) {
        assert_eq!(values.len(), dim);
    }
}

/// The RESP reader on arbitrary bytes: never a panic, never past its input.
pub fn resp(data: &[u8]) {
    if let Ok(Some((line, used))) = frame::line(data) {
        assert!(line.len() < used && used <= data.len());
        let _ = frame::number(line);
    }
    let expected = data.first().map_or(0, |&b| usize::from(b % 8));
    if let Ok(Some(used)) = frame::array_header(data, expected) {
        assert!(used <= data.len());
    }
    if let Ok(Some((value, used))) = frame::bulk(data) {
        assert!(used <= data.len());
        assert!(value.is_none_or(|v| v.len() < used));
    }
    let mut remaining = expected;
    let mut seen = 0;
    if let Ok(used) = frame::bulks(data, &mut remaining, |_| seen += 1) {
        assert!(used <= data.len());
        assert_eq!(seen + remaining, expected);
    }
}
