//! The configuration's outer contract: the file format and every environment variable name.
//!
//! The origin reads defaults, then a TOML file (`--config` or [`CONFIG_FILE`]), then the environment
//! variables below, each starting with [`ENV_PREFIX`]; later layers win. Every variable Cascade reads
//! is declared here and nowhere else.

/// Prefix of every Cascade environment variable.
pub const ENV_PREFIX: &str = "CASCADE_";
/// Path of the config file.
pub const CONFIG_FILE: &str = "CASCADE_CONFIG";
/// The shared edge ↔ origin signing secret (also a wrangler secret named `ORIGIN_SECRET`).
pub const SECRET: &str = "CASCADE_SECRET";
/// `development` or `production`.
pub const MODE: &str = "CASCADE_MODE";
/// Address the origin listens on.
pub const LISTEN: &str = "CASCADE_LISTEN";
/// The model bundle folder.
pub const BUNDLE: &str = "CASCADE_BUNDLE";
/// The feature log's folder (served lists and events as JSON lines; empty or unset: off).
pub const FEATURE_LOG: &str = "CASCADE_FEATURE_LOG";
/// Comma-separated Redis shard URLs, in shard order.
pub const REDIS_SHARDS: &str = "CASCADE_REDIS_SHARDS";
/// Comma-separated seed URLs of a Redis Cluster holding the embeddings (instead of the shards).
pub const REDIS_CLUSTER: &str = "CASCADE_REDIS_CLUSTER";
/// During an online reshard: the shard list being left (comma-separated URLs).
pub const REDIS_PREVIOUS_SHARDS: &str = "CASCADE_REDIS_PREVIOUS_SHARDS";
/// PEM file of the CA for `rediss://` servers.
pub const REDIS_TLS_CA: &str = "CASCADE_REDIS_TLS_CA";
/// PEM client certificate for `rediss://` servers that check clients.
pub const REDIS_TLS_CERT: &str = "CASCADE_REDIS_TLS_CERT";
/// PEM key of that client certificate.
pub const REDIS_TLS_KEY: &str = "CASCADE_REDIS_TLS_KEY";
/// Comma-separated bearer keys for internal callers.
pub const API_KEYS: &str = "CASCADE_API_KEYS";
/// Log filter (`tracing` env-filter syntax) and format (`text` or `json`).
pub const LOG: &str = "CASCADE_LOG";
/// `text` or `json`.
pub const LOG_FORMAT: &str = "CASCADE_LOG_FORMAT";

/// The Worker's `ADMIN_TOKEN`, for the origin's edge purges (`[edge] purge_token`).
pub const EDGE_PURGE_TOKEN: &str = "CASCADE_EDGE_PURGE_TOKEN";

/// The OpenTelemetry collector's OTLP/HTTP URL (`[tracing] otlp_endpoint`; unset: no traces).
pub const OTLP_ENDPOINT: &str = "CASCADE_OTLP_ENDPOINT";

/// Every variable, for `--help` and the docs.
pub const ALL: &[&str] = &[
    CONFIG_FILE,
    SECRET,
    MODE,
    LISTEN,
    BUNDLE,
    REDIS_SHARDS,
    REDIS_CLUSTER,
    REDIS_PREVIOUS_SHARDS,
    REDIS_TLS_CA,
    REDIS_TLS_CERT,
    REDIS_TLS_KEY,
    API_KEYS,
    LOG,
    LOG_FORMAT,
    EDGE_PURGE_TOKEN,
    OTLP_ENDPOINT,
];
