//! Cascade's edge: a Cloudflare Worker that answers browsers.
//!
//! Anonymous `GET /recs?page=&device=&n=` requests are mapped to a canonical segment
//! (`cascade_shared::segment`), answered from the Workers Cache API when it holds that segment's
//! list, and otherwise fetched from the origin with a signed request, stored, and returned. The edge
//! caches one full list per segment ([`cascade_shared::validate::MAX_N`] items) and cuts it to the
//! requested `n`, so `n` never multiplies cache entries.
//!
//! | module | owns |
//! |---|---|
//! | [`routing`] | pure decisions: route, segment, cache key, origin request, list cutting, errors |
//! | `glue` (wasm32 only) | the `worker` crate: the fetch handler, Cache API, outbound fetch |
//!
//! Everything that decides is in [`routing`] and unit-tested natively; `glue` only moves bytes.

pub mod routing;

#[cfg(target_arch = "wasm32")]
mod glue;
