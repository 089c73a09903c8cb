//! Cascade's contracts: everything the edge and the origin (or two origin components) must agree on,
//! defined once and checked against the golden vectors in `shared/golden/vectors.json`, natively and
//! on wasm32.
//!
//! | module | owns |
//! |---|---|
//! | [`wire`] | request/response JSON: recommendation lists, `source`, the error body |
//! | [`events`] | events as `POST /v1/events` takes them: kinds, validation, the bounded batch parser |
//! | [`validate`] | ids, `n`, and the query-string parsing both sides use |
//! | [`segment`] | the canonical segment key (allowlisted page/device/country) |
//! | [`signing`] | HMAC-SHA256 signing of edge → origin requests, with a timestamp window |
//! | [`token`] | signed-in visitor tokens: format, issuing, verification |
//! | [`hashing`] | the stable id hash and jump consistent hashing (id → shard) |
//! | [`keys`] | the Redis key schema |
//! | [`embedding`] | the embedding export file format and the Redis value encoding |
//! | [`config`] | the environment-variable prefix and every variable name |
//! | [`stats`] | the one percentile formula and the seeded generator (SplitMix64) |
//! | [`trace`] | the W3C `traceparent` header and OTLP JSON spans: one trace from the edge to the ranker |
//!
//! Nothing here reads a clock or a random source: callers pass the time in, so the same code runs in
//! a Worker (where `SystemTime::now()` panics) and in the origin.

pub mod config;
pub mod embedding;
pub mod events;
pub mod hashing;
pub mod keys;
pub mod rec_id;
pub mod segment;
pub mod signing;
pub mod stats;
pub mod token;
pub mod trace;
pub mod validate;
pub mod wire;
