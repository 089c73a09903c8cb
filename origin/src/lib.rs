//! Cascade's origin: the service behind the edge, and the `cascade` command.
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | typed configuration: defaults < TOML file < environment, validated at start |
//! | [`error`] | the service error enum and the one place it becomes an HTTP status |
//! | [`bundle`] | a model bundle on disk: metadata, embeddings, model path, consistency checks |
//! | [`store`] | [`store::EmbeddingStore`]: in-process, or N Redis shards by consistent hashing |
//! | [`retrieval`] | [`retrieval::Retriever`]: FAISS inner-product search over the item embeddings |
//! | [`features`] | the ranker's input rows (pure; the layout the training script defines) |
//! | [`batcher`] | the dynamic batcher: rows of concurrent requests merged into one model call |
//! | [`ranker`] | [`ranker::Ranker`]: the TorchScript model through tch, behind the batcher |
//! | [`cache`] | L1 list cache with request coalescing, user generations, purchase filter |
//! | [`recommend`] | the request path: retrieve, rank, and the fallback chain |
//! | [`serving`] | the recommender being served, and atomic bundle reloads |
//! | [`auth`] | edge signatures and internal bearer keys |
//! | [`metrics`] | Prometheus metrics |
//! | [`http`] | the axum router, handlers and middleware |
//! | [`commands`] | `serve`, `load`, `index`, `plan` |

pub mod auth;
pub mod batcher;
pub mod bundle;
pub mod cache;
pub mod commands;
pub mod config;
pub mod error;
pub mod features;
pub mod generate;
pub mod http;
pub mod metrics;
pub mod ranker;
pub mod recommend;
pub mod retrieval;
pub mod serving;
pub mod store;
