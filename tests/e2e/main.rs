//! End-to-end tests of the real processes (`cascade`, Redis, `wrangler dev`), one test binary: the
//! processes are spawned, so nothing here links libtorch or FAISS itself, and one binary links
//! faster than seven (CI time). Fixtures are `cascade_e2e` (`tests/support/lib.rs`).

mod cache;
mod cache_redis;
mod catalogue;
mod client;
mod edge;
mod edge_events;
mod every_hop;
mod faults;
mod feature_log;
mod origin_failures;
mod precompute;
mod quality;
mod redis_tls;
mod reload;
mod rules;
mod tracing;
mod variants;
