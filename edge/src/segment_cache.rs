//! The segment cache's decisions: the Cache API key, how fresh a stored list is, and what to answer
//! (HIT, STALE with one background refresh, MISS from the origin, or a stale copy when the origin
//! fails). `glue` performs the Cache API calls these decisions name, and nothing else.

use cascade_shared::segment::SegmentKey;

use crate::config::EdgeConfig;
use crate::origin::{OriginFailure, checked};
use crate::respond::origin_failure_response;

/// Header on a stored entry: when it was fetched from the origin, Unix milliseconds.
pub const STORED_AT_HEADER: &str = "x-cascade-stored-at";

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

/// Decides from the stored entry (its stored-at header and body), if any.
pub fn on_lookup(config: &EdgeConfig, stored: Option<(Option<&str>, &[u8])>, now_ms: u64, n: usize) -> OnLookup {
    let Some((stored_at, body)) = stored else { return OnLookup::Fetch { delete_stored: false } };
    let (state, revalidate) = match freshness(config, stored_at, now_ms) {
        Freshness::Fresh => (CacheState::Hit, false),
        Freshness::Stale => (CacheState::Stale, true),
        Freshness::Expired => return OnLookup::Fetch { delete_stored: false },
    };
    match checked(body, n) {
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
        let stored = |at: &'static str, body: &'static str| Some((Some(at), body.as_bytes()));
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
