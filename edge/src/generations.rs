//! Global invalidation without a zone API token: a generation per segment and one for all segments,
//! kept in Workers KV (the `CASCADE_KV` binding) and folded into the Cache API key. A purge writes a
//! new generation; every data centre's next lookup builds another key and misses, within KV's
//! propagation time (about a minute) plus [`EdgeConfig::generation_cache_secs`] (each isolate keeps
//! the generations it read for that long, so the cost is one KV read per key every few seconds per
//! isolate, not one per request). Without the binding, keys carry no generation and a purge reaches
//! only the data centre that takes it.
//!
//! A generation is the purge's time in Unix milliseconds: KV has no atomic increment, and a time
//! needs no read before the write; two purges in the same millisecond make the same key, which is
//! still a new one.

use std::collections::HashMap;

use cascade_shared::segment::SegmentKey;

use crate::config::EdgeConfig;

/// The KV key of the generation every segment's key carries.
pub const ALL_SEGMENTS: &str = "gen:all";

/// The KV key of one segment's generation.
pub fn segment_generation_key(segment: &SegmentKey) -> String {
    format!("gen:{segment}")
}

/// A generation as stored, if it is one (digits, at most 20): anything else counts as none.
fn clean(value: Option<&str>) -> &str {
    match value {
        Some(v) if !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()) => v,
        _ => "0",
    }
}

/// The Cache API key for `base` (the segment's unversioned key) at these generations, as a last
/// path segment.
pub fn versioned_key(base: &str, all: Option<&str>, segment: Option<&str>) -> String {
    format!("{base}/g/{}.{}", clean(all), clean(segment))
}

/// The generations this isolate read from KV, each kept for `generation_cache_secs`.
#[derive(Debug, Default)]
pub struct GenerationCache {
    entries: HashMap<String, (Option<String>, u64)>,
}

impl GenerationCache {
    /// The cached value of `key` (itself maybe absent in KV) if read within the TTL.
    pub fn get(&self, config: &EdgeConfig, key: &str, now_ms: u64) -> Option<Option<String>> {
        let ttl_ms = u64::from(config.generation_cache_secs) * 1000;
        let (value, read_at) = self.entries.get(key)?;
        (now_ms.saturating_sub(*read_at) < ttl_ms).then(|| value.clone())
    }

    /// Remembers `value` for `key` (a read, or this isolate's own purge).
    pub fn put(&mut self, key: &str, value: Option<String>, now_ms: u64) {
        // Bounded by the segments there are (pages × devices × countries) and one global key.
        if self.entries.len() > 4_096 {
            self.entries.retain(|_, (_, read_at)| now_ms.saturating_sub(*read_at) < 60_000);
        }
        self.entries.insert(key.to_string(), (value, now_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::config;

    #[test]
    fn keys_change_with_either_generation_and_ignore_garbage() {
        let base = "https://e.example/__cascade/v1/segments/home.desktop.us";
        assert_eq!(versioned_key(base, None, None), format!("{base}/g/0.0"));
        assert_eq!(versioned_key(base, Some("17"), None), format!("{base}/g/17.0"));
        assert_eq!(versioned_key(base, Some("17"), Some("18")), format!("{base}/g/17.18"));
        assert_eq!(versioned_key(base, Some("1?x=2"), Some("")), format!("{base}/g/0.0"));
        assert_eq!(segment_generation_key(&SegmentKey::parse("home.desktop.us").unwrap()), "gen:home.desktop.us");
    }

    #[test]
    fn generations_are_kept_for_the_configured_seconds() {
        let config = config(&[("GENERATION_CACHE_SECS", "5")]);
        let mut cache = GenerationCache::default();
        assert_eq!(cache.get(&config, ALL_SEGMENTS, 0), None);
        cache.put(ALL_SEGMENTS, Some("9".into()), 1_000);
        cache.put("gen:home.desktop.us", None, 1_000);
        assert_eq!(cache.get(&config, ALL_SEGMENTS, 5_999), Some(Some("9".into())));
        assert_eq!(cache.get(&config, "gen:home.desktop.us", 2_000), Some(None), "absent in KV is cached too");
        assert_eq!(cache.get(&config, ALL_SEGMENTS, 6_000), None, "read again after 5 s");
        let never = config_with_zero();
        assert_eq!(cache.get(&never, ALL_SEGMENTS, 1_000), None, "0: read every time");
    }

    fn config_with_zero() -> EdgeConfig {
        config(&[("GENERATION_CACHE_SECS", "0")])
    }
}
