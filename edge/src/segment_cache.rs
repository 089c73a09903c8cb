//! The segment cache's decisions: the Cache API key, how fresh a stored list is, and what to answer
//! (HIT, STALE with one background refresh, MISS from the origin, or a stale copy when the origin
//! fails). `glue` performs the Cache API calls these decisions name, and nothing else.

use cascade_shared::segment::SegmentKey;

use crate::config::EdgeConfig;
use crate::origin::{OriginFailure, checked};
use crate::respond::origin_failure_response;

/// Header on a stored entry: when it was fetched from the origin, Unix milliseconds.
pub const STORED_AT_HEADER: &str = "x-cascade-stored-at";

/// Header on a stored entry: where its items array closes and where each item ends, as byte
/// offsets (`close,end1,end2,…`), so a HIT cuts the list to `n` by splicing bytes instead of
/// parsing and re-serialising 100 items ([`cut_index`], [`cut_by_index`]).
pub const CUT_HEADER: &str = "x-cascade-cut";

/// A stored entry as the Cache API returned it.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    /// [`STORED_AT_HEADER`].
    pub stored_at: Option<&'a str>,
    /// [`CUT_HEADER`].
    pub cut: Option<&'a str>,
    /// The full list.
    pub body: &'a [u8],
}

/// A stored entry as this isolate keeps it in memory ([`IsolateCache`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// [`STORED_AT_HEADER`].
    pub stored_at: Option<String>,
    /// [`CUT_HEADER`].
    pub cut: Option<String>,
    /// The full list.
    pub body: Vec<u8>,
}

impl Entry {
    /// The entry as [`on_lookup`] reads it.
    pub fn stored(&self) -> Stored<'_> {
        Stored { stored_at: self.stored_at.as_deref(), cut: self.cut.as_deref(), body: &self.body }
    }
}

/// Most entries an isolate keeps (one per segment it served; a list is about 10 KB).
pub const ISOLATE_ENTRIES: usize = 512;

/// The stored entries this isolate read or wrote, each kept for `GENERATION_CACHE_SECS` (the
/// same bound as the purge generations, so a purge reaches each isolate within it): a HIT answered
/// from here skips the Cache API round trip, most of what a HIT cost beyond the Worker's floor
/// under `wrangler dev`. Freshness is still decided by the entry's stored-at time.
#[derive(Debug, Default)]
pub struct IsolateCache {
    entries: std::collections::HashMap<String, (std::rc::Rc<Entry>, u64)>,
}

impl IsolateCache {
    /// The entry for `key` if this isolate has held it less than `ttl_ms`.
    pub fn get(&self, key: &str, now_ms: u64, ttl_ms: u64) -> Option<std::rc::Rc<Entry>> {
        let (entry, kept_at) = self.entries.get(key)?;
        (now_ms.saturating_sub(*kept_at) < ttl_ms).then(|| std::rc::Rc::clone(entry))
    }

    /// Keeps `entry` for `key` from `now_ms`.
    pub fn put(&mut self, key: &str, entry: std::rc::Rc<Entry>, now_ms: u64, ttl_ms: u64) {
        if ttl_ms == 0 {
            return;
        }
        if self.entries.len() >= ISOLATE_ENTRIES && !self.entries.contains_key(key) {
            self.entries.retain(|_, (_, kept_at)| now_ms.saturating_sub(*kept_at) < ttl_ms);
            if self.entries.len() >= ISOLATE_ENTRIES {
                self.entries.clear();
            }
        }
        self.entries.insert(key.to_string(), (entry, now_ms));
    }

    /// Forgets `key` (purged, or unreadable).
    pub fn remove(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

/// The [`CUT_HEADER`] value for a full list body; `None` when it is not a list with items. A
/// scan of the JSON's top level for `"items": [...]` (strings and nesting respected), not a parse:
/// serde_json's `raw_value` feature did the same for 13 KB more of Worker bundle.
pub fn cut_index(body: &[u8]) -> Option<String> {
    let (close, ends) = item_offsets(body)?;
    let mut index = close.to_string();
    for end in ends {
        index.push(',');
        index.push_str(&end.to_string());
    }
    Some(index)
}

/// Where the top-level `items` array closes and where each of its elements ends.
fn item_offsets(body: &[u8]) -> Option<(usize, Vec<usize>)> {
    let skip_ws = |mut at: usize| {
        while body.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        at
    };
    // The index just past the string that starts at `at` (a `"`).
    let string_end = |mut at: usize| {
        at += 1;
        loop {
            match body.get(at)? {
                b'\\' => at += 2,
                b'"' => return Some(at + 1),
                _ => at += 1,
            }
        }
    };
    let mut at = skip_ws(0);
    if body.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    let mut depth = 1usize;
    while depth > 0 {
        at = skip_ws(at);
        match *body.get(at)? {
            b'"' => {
                let key_end = string_end(at)?;
                let key = &body[at..key_end];
                let after = skip_ws(key_end);
                if depth == 1 && body.get(after) == Some(&b':') {
                    let value = skip_ws(after + 1);
                    if key == b"\"items\"" && body.get(value) == Some(&b'[') {
                        return array_elements(body, value);
                    }
                }
                at = key_end;
            }
            b'{' | b'[' => {
                depth += 1;
                at += 1;
            }
            b'}' | b']' => {
                depth -= 1;
                at += 1;
            }
            _ => at += 1,
        }
    }
    None
}

/// The elements of the array opening at `open`: where it closes and where each element ends.
fn array_elements(body: &[u8], open: usize) -> Option<(usize, Vec<usize>)> {
    let mut ends = Vec::new();
    let (mut at, mut depth, mut last_content) = (open + 1, 0usize, None::<usize>);
    loop {
        let byte = *body.get(at)?;
        match byte {
            b'"' => {
                let mut end = at + 1;
                loop {
                    match body.get(end)? {
                        b'\\' => end += 2,
                        b'"' => break,
                        _ => end += 1,
                    }
                }
                at = end + 1;
                last_content = Some(at);
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth > 0 => depth -= 1,
            b']' => {
                ends.extend(last_content);
                return (!ends.is_empty()).then_some((at, ends));
            }
            b',' if depth == 0 => ends.push(last_content.take()?),
            _ => {}
        }
        if !byte.is_ascii_whitespace() {
            last_content = Some(at + 1);
        }
        at += 1;
    }
}

/// `body` cut to its first `n` items by the [`cut_index`] `index`; `None` when the index does not
/// fit the body (then the caller parses it).
pub fn cut_by_index(body: &[u8], index: &str, n: usize) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let mut offsets = index.split(',').map(|part| part.parse::<usize>().ok());
    let close = offsets.next()??;
    let ends: Vec<usize> = offsets.collect::<Option<_>>()?;
    let fits = text.as_bytes().get(close) == Some(&b']')
        && ends.windows(2).all(|w| w[0] < w[1])
        && ends.last().is_some_and(|&last| last <= close);
    if !fits || n == 0 {
        return None;
    }
    let Some(&end) = ends.get(n - 1) else { return Some(text.to_string()) };
    Some(format!("{}{}", text.get(..end)?, text.get(close..)?))
}

/// The Cache API key for a segment: a URL on the Worker's own host (so a zone purge can reach
/// it), one per segment and list-format version.
pub fn cache_key(request_origin: &str, segment: &SegmentKey) -> String {
    format!("{}/__cascade/v1/segments/{segment}", request_origin.trim_end_matches('/'))
}

/// How a stored entry may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Within the fresh period: HIT.
    Fresh,
    /// Within the stale window: served as STALE while one background refresh runs.
    Stale,
    /// Past both (or without a readable stored-at): fetched again; still served if the origin fails.
    Expired,
}

/// Classifies an entry stored at `stored_at_ms` (the [`STORED_AT_HEADER`] value).
pub fn freshness(config: &EdgeConfig, stored_at_ms: Option<&str>, now_ms: u64) -> Freshness {
    let Some(stored_at) = stored_at_ms.and_then(|v| v.trim().parse::<u64>().ok()) else {
        return Freshness::Expired;
    };
    let age_ms = now_ms.saturating_sub(stored_at);
    let fresh_ms = u64::from(config.fresh_secs) * 1000;
    if age_ms < fresh_ms {
        Freshness::Fresh
    } else if age_ms < fresh_ms + u64::from(config.stale_secs) * 1000 {
        Freshness::Stale
    } else {
        Freshness::Expired
    }
}

/// `Cache-Control` of a stored entry: the Cache API keeps it for the fresh period and the stale
/// window; the edge itself decides HIT or STALE from [`STORED_AT_HEADER`].
pub fn stored_cache_control(config: &EdgeConfig) -> String {
    format!("public, max-age={}", u64::from(config.fresh_secs) + u64::from(config.stale_secs))
}

/// `Cache-Tag` of a stored entry: purge one segment, or every segment, by tag across the zone.
pub fn cache_tags(segment: &SegmentKey) -> String {
    format!("cascade-segment-{segment},cascade-segments")
}

/// The `x-cache` value of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheState {
    /// Served fresh from the cache.
    Hit,
    /// Served from the cache past its fresh period (or because the origin failed).
    Stale,
    /// Fetched from the origin now.
    Miss,
}

impl CacheState {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheState::Hit => "HIT",
            CacheState::Stale => "STALE",
            CacheState::Miss => "MISS",
        }
    }

    /// The browser's `max-age` for an answer in this state: a stale answer must not be kept.
    pub fn max_age(self, config: &EdgeConfig) -> u32 {
        match self {
            CacheState::Hit | CacheState::Miss => config.fresh_secs,
            CacheState::Stale => 0,
        }
    }
}

/// What to do with what the cache held for a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnLookup {
    /// Answer with `list` now; when `revalidate`, refresh the entry in the background.
    Serve {
        /// The list cut to `n`.
        list: String,
        /// HIT or STALE.
        state: CacheState,
        /// Start one background refresh.
        revalidate: bool,
    },
    /// Fetch from the origin; first delete the stored entry when it is unreadable.
    Fetch {
        /// The stored entry could not be read as a list.
        delete_stored: bool,
    },
}

/// Decides from the stored entry, if any. A list stored with its [`CUT_HEADER`] is cut without a
/// parse (it was checked when it was stored); one without is parsed and checked.
pub fn on_lookup(config: &EdgeConfig, stored: Option<Stored<'_>>, now_ms: u64, n: usize) -> OnLookup {
    let Some(Stored { stored_at, cut, body }) = stored else { return OnLookup::Fetch { delete_stored: false } };
    let (state, revalidate) = match freshness(config, stored_at, now_ms) {
        Freshness::Fresh => (CacheState::Hit, false),
        Freshness::Stale => (CacheState::Stale, true),
        Freshness::Expired => return OnLookup::Fetch { delete_stored: false },
    };
    match cut.and_then(|index| cut_by_index(body, index, n)).map_or_else(|| checked(body, n), Ok) {
        Ok(list) => OnLookup::Serve { list, state, revalidate },
        Err(_) => OnLookup::Fetch { delete_stored: true },
    }
}

/// The answer after an origin call: the fetched list (MISS), else any stored copy (STALE), else
/// the origin failure as `(status, JSON body)`.
pub fn after_fetch(
    fetched: Result<&[u8], &OriginFailure>,
    stored: Option<&[u8]>,
    n: usize,
) -> Result<(String, CacheState), (u16, String)> {
    match fetched {
        Ok(full) => Ok((checked(full, n).unwrap_or_default(), CacheState::Miss)),
        Err(failure) => match stored.map(|body| checked(body, n)) {
            Some(Ok(list)) => Ok((list, CacheState::Stale)),
            _ => Err(origin_failure_response(failure)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::config;
    use crate::origin::cut_list;

    #[test]
    fn freshness_windows() {
        let c = config(&[("SEGMENT_FRESH_SECS", "2"), ("SEGMENT_STALE_SECS", "10")]);
        assert_eq!(freshness(&c, Some("1000"), 1_000), Freshness::Fresh);
        assert_eq!(freshness(&c, Some("1000"), 2_999), Freshness::Fresh);
        assert_eq!(freshness(&c, Some("1000"), 3_000), Freshness::Stale);
        assert_eq!(freshness(&c, Some("1000"), 12_999), Freshness::Stale);
        assert_eq!(freshness(&c, Some("1000"), 13_000), Freshness::Expired);
        assert_eq!(freshness(&c, None, 1_000), Freshness::Expired);
        assert_eq!(freshness(&c, Some("soon"), 1_000), Freshness::Expired);
        assert_eq!(stored_cache_control(&c), "public, max-age=12");
    }

    const LIST: &str = r#"{"segment":"home.desktop.zz","source":"segment","model_version":"b","items":[{"id":"a","score":0.5},{"id":"b","score":0.25}]}"#;

    #[test]
    fn lookups_serve_fresh_and_stale_and_fetch_the_rest() {
        let c = config(&[("SEGMENT_FRESH_SECS", "2"), ("SEGMENT_STALE_SECS", "10")]);
        let stored = |at: &'static str, body: &'static str| {
            Some(Stored { stored_at: Some(at), cut: None, body: body.as_bytes() })
        };
        let OnLookup::Serve { list, state, revalidate } = on_lookup(&c, stored("1000", LIST), 1_500, 1) else {
            panic!("a fresh entry is served")
        };
        assert_eq!((state, revalidate, list.matches("\"id\"").count()), (CacheState::Hit, false, 1));
        assert!(matches!(
            on_lookup(&c, stored("1000", LIST), 5_000, 1),
            OnLookup::Serve { state: CacheState::Stale, revalidate: true, .. }
        ));
        assert_eq!(on_lookup(&c, stored("1000", LIST), 20_000, 1), OnLookup::Fetch { delete_stored: false });
        assert_eq!(on_lookup(&c, stored("1000", "garbage"), 1_500, 1), OnLookup::Fetch { delete_stored: true });
        assert_eq!(on_lookup(&c, None, 1_500, 1), OnLookup::Fetch { delete_stored: false });
        assert_eq!(CacheState::Stale.max_age(&c), 0);
    }

    #[test]
    fn a_stored_list_is_cut_by_its_index_exactly_as_a_parse_would() {
        let list = r#"{"segment":"home.desktop.zz","source":"segment","model_version":"b","items":[{"id":"a","score":0.5,"title":"x]"},{"id":"b","score":0.25},{"id":"c","score":0.1}],"rec_id":"01J0000000000000000000000A"}"#;
        let index = cut_index(list.as_bytes()).unwrap();
        for n in 1..=4 {
            let cut = cut_by_index(list.as_bytes(), &index, n).unwrap();
            let parsed: cascade_shared::wire::RecList = serde_json::from_str(&cut).unwrap();
            let expected: cascade_shared::wire::RecList =
                serde_json::from_slice(&cut_list(list.as_bytes(), n).unwrap()).unwrap();
            assert_eq!(parsed, expected, "n = {n}: {cut}");
        }
        // An index that does not fit the body is refused (the caller parses instead).
        assert_eq!(cut_by_index(list.as_bytes(), "3,1,2", 1), None);
        assert_eq!(cut_by_index(list.as_bytes(), "x", 1), None);
        assert_eq!(cut_by_index(b"{}", &index, 1), None);
        assert_eq!(cut_index(b"garbage"), None);
        assert_eq!(cut_index(br#"{"items":[]}"#), None);
        // The lookup uses the index when there is one.
        let c = config(&[]);
        let stored = Stored { stored_at: Some("1000"), cut: Some(&index), body: list.as_bytes() };
        let OnLookup::Serve { list: served, .. } = on_lookup(&c, Some(stored), 1_500, 2) else { panic!() };
        assert_eq!(served.matches("\"id\"").count(), 2);
    }

    #[test]
    fn the_isolate_keeps_entries_for_its_ttl_and_bounded() {
        let entry = std::rc::Rc::new(Entry { stored_at: Some("1".into()), cut: None, body: b"{}".to_vec() });
        let mut cache = IsolateCache::default();
        cache.put("a", std::rc::Rc::clone(&entry), 1_000, 5_000);
        assert!(cache.get("a", 5_999, 5_000).is_some());
        assert!(cache.get("a", 6_000, 5_000).is_none(), "read again after the TTL");
        cache.remove("a");
        assert!(cache.get("a", 1_000, 5_000).is_none());
        cache.put("b", std::rc::Rc::clone(&entry), 1_000, 0);
        assert!(cache.get("b", 1_000, 5_000).is_none(), "TTL 0: nothing kept");
        for k in 0..ISOLATE_ENTRIES + 10 {
            cache.put(&k.to_string(), std::rc::Rc::clone(&entry), 2_000, 5_000);
        }
        assert!(cache.entries.len() <= ISOLATE_ENTRIES);
    }

    #[test]
    fn origin_failures_fall_back_to_any_stored_copy() {
        let failure = OriginFailure::Timeout(1500);
        let (_, state) = after_fetch(Ok(LIST.as_bytes()), None, 2).unwrap();
        assert_eq!(state, CacheState::Miss);
        let (_, state) = after_fetch(Err(&failure), Some(LIST.as_bytes()), 2).unwrap();
        assert_eq!(state, CacheState::Stale);
        let (status, body) = after_fetch(Err(&failure), None, 2).unwrap_err();
        assert_eq!(status, 503);
        assert!(body.contains("origin_timeout"), "{body}");
        assert!(after_fetch(Err(&failure), Some(b"garbage"), 2).is_err());
    }
}
