//! Cascade's edge: a Cloudflare Worker that answers browsers.
//!
//! Anonymous `GET /recs?page=&device=&n=` requests are mapped to a canonical segment
//! (`cascade_shared::segment`), answered from the Workers Cache API when it holds that segment's
//! list (fresh: HIT; stale: STALE plus one background refresh), and otherwise fetched from the
//! origin with a signed request (aborted at a budget), stored, and returned; when the origin fails,
//! any stored copy is served. The edge caches one full list per segment
//! ([`cascade_shared::validate::MAX_N`] items) and cuts it to the requested `n`, so `n` never
//! multiplies cache entries. Visitors with a user token (`cascade_shared::token`) get their own
//! list from the origin, never stored, and may `POST /events` (clicks, views), forwarded signed to
//! the origin. `GET /` is a demo page; `POST /admin/purge` deletes a segment's entry.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the Worker's vars and secrets, validated; errors name the variable |
//! | [`route`] | what a request is: route, segment, refusals, visitor tokens, admin auth |
//! | [`segment_cache`] | cache key, freshness, and the HIT / STALE / MISS / stale-on-error decision |
//! | [`generations`] | purge generations in Workers KV folded into the cache key: a purge reaches every data centre |
//! | [`origin`] | signed origin requests, origin failures, cutting a list to `n` |
//! | [`events`] | a signed-in visitor's events: checked, given the token's user, forwarded signed with the body's digest |
//! | [`cors`] | which browser origins may read the answers |
//! | [`respond`] | status and JSON body of refusals and origin failures |
//! | `glue` (wasm32 only) | the `worker` crate: the fetch handler, Cache API, outbound fetch with abort, `wait_until` |
//!
//! Everything that decides is pure and unit-tested natively; `glue` only moves bytes.

pub mod config;
pub mod cors;
pub mod events;
pub mod generations;
pub mod origin;
pub mod respond;
pub mod route;
pub mod segment_cache;

#[cfg(target_arch = "wasm32")]
mod glue;
