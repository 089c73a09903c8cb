//! Cascade's origin: the service behind the edge, and the `cascade` command.
//!
//! Layers, from the outside in (a module uses only modules below it; `docs/architecture.md` walks
//! one request through them):
//!
//! | module | owns |
//! |---|---|
//! | [`commands`] | the `cascade` subcommands: `serve`, `load`, `precompute`, `reshard`, `index`, `plan`, `report` |
//! | [`http`] | the axum router, handlers, middleware, and the one error → status map |
//! | [`app`] | the composition root: config → components, the recommender factory, bundle reloads, A/B variants |
//! | [`config`] | the configuration file and environment, composed from each subsystem's settings |
//! | [`auth`] | edge signatures and internal bearer keys (no HTTP types) |
//! | [`recommend`] | the request path: caches → real time under a deadline → fallback chain |
//! | [`cache`] | L1, L2, per-user generations, purchases and sessions, event rules and intake |
//! | [`ranking`] | the ranker trait, the dynamic batcher over a backend trait, the TorchScript backend |
//! | [`retrieval`] | FAISS inner-product search over the item embeddings |
//! | [`store`] | [`store::EmbeddingStore`]: in-process, N Redis shards, or a Redis Cluster |
//! | [`redis`] | the shard set every Redis user shares, the URL parser, the lean RESP reader |
//! | [`bundle`] | a model bundle on disk: metadata, embeddings, model path, the query (sequence model), consistency checks |
//! | [`catalogue`] | items hidden, deleted or expiring, applied on the way out; new items with embeddings; kept in a file |
//! | [`edge_purge`] | purging the edge's stored segment lists that held an item the catalogue withholds |
//! | [`otel`] | traces: the request's and its stages' spans, exported over OTLP/HTTP when configured |
//! | [`feature_log`] | served lists and events as JSON lines, written off the request path |
//! | [`experiment`] | A/B variant settings and the users' salted-hash assignment |
//! | [`generate`] | deterministic clustered embeddings for the scale tiers |
//! | [`metrics`] | Prometheus metrics |
//! | [`work_queue`] | [`work_queue::WorkQueue`]: blocking work behind a bounded queue that skips dead work |
//! | [`brownout`] | [`brownout::Brownout`]: real-time ranking paused while the CPU is saturated |
//! | [`faults`] | fault injection for the fault suite (off unless configured) |
//! | [`health`] | [`health::ComponentHealth`]: what `/readyz` says of each component |
//!
//! Each subsystem has its own error enum; only [`http::error`] knows HTTP status codes.
//! `architecture_tests.rs` checks these rules on every test run: no dependency cycle between the
//! modules above, no HTTP types below `http`, no source file over 400 lines.

pub mod app;
pub mod auth;
pub mod brownout;
pub mod bundle;
pub mod cache;
pub mod catalogue;
pub mod commands;
pub mod config;
pub mod edge_purge;
pub mod experiment;
pub mod faults;
pub mod feature_log;
pub mod generate;
pub mod health;
pub mod http;
pub mod metrics;
pub mod otel;
pub mod ranking;
pub mod recommend;
pub mod redis;
pub mod retrieval;
pub mod store;
pub mod work_queue;

#[cfg(test)]
mod architecture_tests;
