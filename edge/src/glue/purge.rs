//! Purge generations in Workers KV (`crate::generations` decides; this performs the KV and Cache
//! API calls): the versioned cache key of a segment, and `POST /admin/purge`.

use std::cell::RefCell;

use cascade_shared::segment::SegmentKey;
use worker::kv::KvStore;
use worker::{Cache, Date, Response, Result};

use super::{ENTRIES, json_response, refusal};
use crate::config::EdgeConfig;
use crate::generations::{self, GenerationCache};
use crate::route::Refusal;
use crate::segment_cache;

thread_local! {
    /// The purge generations this isolate read from KV, kept a few seconds.
    static GENERATIONS: RefCell<GenerationCache> = RefCell::new(GenerationCache::default());
}

/// The KV namespace of purge generations; absent: keys carry none and a purge is local.
pub(super) const GENERATIONS_BINDING: &str = "CASCADE_KV";

/// A generation from this isolate's cache, else from KV (a KV error counts as none, logged, and is
/// not cached: the next request asks again).
async fn generation(config: &EdgeConfig, kv: &KvStore, key: &str, now_ms: u64) -> Option<String> {
    if let Some(cached) = GENERATIONS.with(|cache| cache.borrow().get(config, key, now_ms)) {
        return cached;
    }
    match kv.get(key).text().await {
        Ok(value) => {
            GENERATIONS.with(|cache| cache.borrow_mut().put(key, value.clone(), now_ms));
            value
        }
        Err(error) => {
            worker::console_error!("KV read of {key} failed: {error}");
            None
        }
    }
}

/// The Cache API key of `segment`'s stored list: with KV, at the current purge generations.
pub(super) async fn segment_key(
    config: &EdgeConfig,
    kv: Option<&KvStore>,
    cache_origin: &str,
    segment: &SegmentKey,
) -> String {
    let base = segment_cache::cache_key(cache_origin, segment);
    let Some(kv) = kv else { return base };
    let now = Date::now().as_millis();
    let segment_generation = generations::segment_generation_key(segment);
    let (all, one) = futures_util::future::join(
        generation(config, kv, generations::ALL_SEGMENTS, now),
        generation(config, kv, &segment_generation, now),
    )
    .await;
    generations::versioned_key(&base, all.as_deref(), one.as_deref())
}

/// `POST /admin/purge` (auth and rate limit checked): with KV, a new generation for the segment
/// (or for all of them), which every data centre's next lookup folds into its key; and the
/// segment's entry deleted here at once. Without KV, the local delete only.
pub(super) async fn purge(
    config: &EdgeConfig,
    kv: Option<&KvStore>,
    cache_origin: &str,
    segment: Option<&SegmentKey>,
) -> Result<Response> {
    let name = segment.map_or_else(|| "*".to_string(), SegmentKey::to_string);
    let deleted = match segment {
        Some(segment) => {
            let key = segment_key(config, kv, cache_origin, segment).await;
            ENTRIES.with(|entries| entries.borrow_mut().remove(&key));
            matches!(Cache::default().delete(&key, false).await?, worker::CacheDeletionOutcome::Success)
        }
        None => false,
    };
    let generation = match kv {
        Some(kv) => {
            let now = Date::now().as_millis();
            let key =
                segment.map_or_else(|| generations::ALL_SEGMENTS.to_string(), generations::segment_generation_key);
            kv.put(&key, now.to_string())?.execute().await?;
            GENERATIONS.with(|cache| cache.borrow_mut().put(&key, Some(now.to_string()), now));
            Some(now)
        }
        None if segment.is_none() => {
            let message = "segment=* needs the CASCADE_KV binding (purge generations); purge one segment at a time";
            return refusal(&Refusal::Invalid(cascade_shared::validate::FieldError::new("segment", message)));
        }
        None => None,
    };
    worker::console_log!("purge {name}: deleted here {deleted}, generation {generation:?}");
    let scope = if generation.is_some() {
        "every data centre: a new generation in KV (within its propagation time); this one at once"
    } else {
        "this data centre only (no CASCADE_KV binding); purge tag cascade-segment-<segment> for the zone"
    };
    let body = serde_json::json!({
        "segment": name,
        "purged": deleted || generation.is_some(),
        "deleted_here": deleted,
        "generation": generation,
        "scope": scope,
    });
    json_response(200, body.to_string())
}
