//! Typed configuration: defaults, then a TOML file, then environment variables (the names are
//! declared in [`cascade_shared::config`]), validated before anything starts.
//!
//! With no file and no variables this is the embedded default: development mode, an in-process
//! embedding store, the bundle in `data/bundle`.

use std::net::SocketAddr;
use std::path::PathBuf;

use cascade_shared::config as env_names;
use cascade_shared::signing::MIN_SECRET_LEN;
use serde::Deserialize;

/// Development (a secret is generated when none is set) or production (a secret is required).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Local runs.
    Development,
    /// Anything else.
    Production,
}

/// Where the ranking model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when available, else CPU.
    Auto,
    /// CPU.
    Cpu,
    /// CUDA device 0 (refused at start if absent).
    Cuda,
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Development or production.
    pub mode: Mode,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The model bundle folder (see docs/bundle.md).
    pub bundle: PathBuf,
    /// Shared edge ↔ origin signing secret.
    pub secret: Option<String>,
    /// Bearer keys accepted from internal callers.
    pub api_keys: Vec<String>,
    /// How far a signature's timestamp may be from our clock, seconds.
    pub signature_window_secs: u64,
    /// Embedding store.
    pub redis: RedisConfig,
    /// Candidate retrieval.
    pub retrieval: RetrievalConfig,
    /// Ranking.
    pub ranker: RankerConfig,
    /// The request path.
    pub serving: ServingConfig,
    /// Per-user caches.
    pub cache: CacheConfig,
}

/// The L1 cache and per-user state (`crate::cache`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// L1 entries (one per user and context).
    pub l1_capacity: u64,
    /// L1 time to live, seconds.
    pub l1_ttl_secs: u64,
    /// L2 (Redis) time to live, seconds; each write gets ±10% jitter.
    pub l2_ttl_secs: u64,
    /// How long a process reuses a user's generation and purchases read from Redis,
    /// milliseconds: the bound on cross-process invalidation.
    pub state_ttl_ms: u64,
    /// Users whose generation and purchases are remembered.
    pub users_capacity: u64,
    /// Event kinds that invalidate a user's cached lists.
    pub significant_events: Vec<cascade_shared::wire::EventKind>,
    /// Event kinds whose item joins the user's session (shifting real-time ranking).
    pub session_events: Vec<cascade_shared::wire::EventKind>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        let settings = crate::cache::CacheSettings::default();
        CacheConfig {
            l1_capacity: settings.l1_capacity,
            l1_ttl_secs: settings.l1_ttl.as_secs(),
            l2_ttl_secs: settings.l2_ttl.as_secs(),
            state_ttl_ms: settings.state_ttl.as_millis() as u64,
            users_capacity: settings.users_capacity,
            significant_events: settings.significant,
            session_events: settings.session,
        }
    }
}

impl CacheConfig {
    /// The cache's settings.
    pub fn settings(&self) -> crate::cache::CacheSettings {
        crate::cache::CacheSettings {
            l1_capacity: self.l1_capacity,
            l1_ttl: std::time::Duration::from_secs(self.l1_ttl_secs),
            l2_ttl: std::time::Duration::from_secs(self.l2_ttl_secs),
            state_ttl: std::time::Duration::from_millis(self.state_ttl_ms),
            users_capacity: self.users_capacity,
            significant: self.significant_events.clone(),
            session: self.session_events.clone(),
        }
    }
}

/// Redis shards for user embeddings; empty means the in-process store.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Shard URLs (`redis://host:port`), in shard order: jump hashing names shards by position,
    /// so only append or remove at the end.
    pub shards: Vec<String>,
    /// Seed URLs of a Redis Cluster: when set, embeddings live there (user state, L2 and
    /// precomputed lists stay on `shards`, or in process without them).
    pub cluster: Vec<String>,
    /// Per-operation timeout, milliseconds: a slow shard counts as unavailable.
    pub timeout_ms: u64,
}

/// FAISS settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrievalConfig {
    /// FAISS index factory string, or `auto` (exact `Flat` below 20,000 items, else
    /// `IVF{4·√n}_HNSW32,Flat`).
    pub factory: String,
    /// IVF lists probed per query.
    pub nprobe: usize,
    /// Candidates retrieved per request, before ranking.
    pub candidates: usize,
    /// Index copies searched in parallel (the faiss crate's search takes `&mut self`).
    pub parallelism: usize,
}

/// Ranker settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RankerConfig {
    /// `auto`, `cpu` or `cuda`.
    pub device: DeviceChoice,
    /// Requests waiting for inference before new ones are refused (and fall back).
    pub queue_capacity: usize,
    /// Most rows merged into one model call.
    pub max_batch_rows: usize,
    /// Longest a batch waits for more requests after its first, milliseconds.
    pub max_wait_ms: f64,
    /// Inference threads.
    pub threads: usize,
    /// libtorch intra-op threads per inference thread.
    pub intra_op_threads: usize,
}

/// Request-path settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServingConfig {
    /// Budget for the real-time path, milliseconds; past it the fallback chain answers.
    pub deadline_ms: u64,
    /// Requests in flight before new ones get 503 at once.
    pub max_in_flight: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Development,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            bundle: PathBuf::from("data/bundle"),
            secret: None,
            api_keys: Vec::new(),
            signature_window_secs: cascade_shared::signing::DEFAULT_WINDOW_SECS,
            redis: RedisConfig::default(),
            retrieval: RetrievalConfig::default(),
            ranker: RankerConfig::default(),
            serving: ServingConfig::default(),
            cache: CacheConfig::default(),
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig { shards: Vec::new(), cluster: Vec::new(), timeout_ms: 50 }
    }
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        RetrievalConfig { factory: "auto".into(), nprobe: 16, candidates: 100, parallelism: 2 }
    }
}

impl Default for RankerConfig {
    fn default() -> Self {
        RankerConfig {
            device: DeviceChoice::Auto,
            queue_capacity: 256,
            max_batch_rows: 1024,
            max_wait_ms: 5.0,
            threads: 1,
            intra_op_threads: 1,
        }
    }
}

impl RankerConfig {
    /// The batcher's settings.
    pub fn batch_config(&self) -> crate::batcher::BatchConfig {
        crate::batcher::BatchConfig {
            max_batch_rows: self.max_batch_rows,
            max_wait: std::time::Duration::from_secs_f64(self.max_wait_ms / 1000.0),
            queue_capacity: self.queue_capacity,
        }
    }
}

impl Default for ServingConfig {
    fn default() -> Self {
        ServingConfig { deadline_ms: 80, max_in_flight: 1024 }
    }
}

/// A configuration that cannot be used; names the field.
#[derive(Debug, thiserror::Error)]
#[error("config: {field}: {message}")]
pub struct ConfigError {
    /// The field (TOML path or environment variable).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn config_error(field: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { field: field.to_string(), message: message.into() }
}

fn split_list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

impl Config {
    /// Loads defaults < `file` (or `$CASCADE_CONFIG`) < environment, then validates.
    pub fn load(file: Option<&std::path::Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let file = file.map(PathBuf::from).or_else(|| env(env_names::CONFIG_FILE).map(PathBuf::from));
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| config_error(&path.display().to_string(), format!("cannot read: {e}")))?;
                toml::from_str(&text).map_err(|e| config_error(&path.display().to_string(), e.to_string()))?
            }
            None => Config::default(),
        };
        if let Some(v) = env(env_names::MODE) {
            config.mode = match v.as_str() {
                "development" => Mode::Development,
                "production" => Mode::Production,
                _ => return Err(config_error(env_names::MODE, "must be development or production")),
            };
        }
        if let Some(v) = env(env_names::LISTEN) {
            config.listen = v.parse().map_err(|e| config_error(env_names::LISTEN, format!("{e}")))?;
        }
        if let Some(v) = env(env_names::BUNDLE) {
            config.bundle = PathBuf::from(v);
        }
        if let Some(v) = env(env_names::SECRET) {
            config.secret = Some(v);
        }
        if let Some(v) = env(env_names::API_KEYS) {
            config.api_keys = split_list(&v);
        }
        if let Some(v) = env(env_names::REDIS_SHARDS) {
            config.redis.shards = split_list(&v);
        }
        if let Some(v) = env(env_names::REDIS_CLUSTER) {
            config.redis.cluster = split_list(&v);
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks every field; the first problem is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.secret, self.mode) {
            (Some(secret), _) if secret.len() < MIN_SECRET_LEN => {
                return Err(config_error("secret", format!("must be at least {MIN_SECRET_LEN} bytes")));
            }
            (None, Mode::Production) => {
                return Err(config_error(
                    "secret",
                    format!("is required in production mode (set {})", env_names::SECRET),
                ));
            }
            _ => {}
        }
        if let Some(key) = self.api_keys.iter().find(|k| k.len() < MIN_SECRET_LEN) {
            return Err(config_error(
                "api_keys",
                format!("every key must be at least {MIN_SECRET_LEN} bytes ({} is not)", key.len()),
            ));
        }
        let urls = self.redis.shards.iter().map(|u| ("shards", u)).enumerate();
        let cluster = self.redis.cluster.iter().map(|u| ("cluster", u)).enumerate();
        for (index, (list, url)) in urls.chain(cluster) {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                let index = if list == "shards" { index } else { index - self.redis.shards.len() };
                return Err(config_error(&format!("redis.{list}[{index}]"), format!("{url:?} is not a redis:// URL")));
            }
        }
        let ranges: [(&str, usize, usize, usize); 7] = [
            ("ranker.max_batch_rows", self.ranker.max_batch_rows, 1, 1 << 20),
            ("retrieval.candidates", self.retrieval.candidates, 1, 10_000),
            ("retrieval.nprobe", self.retrieval.nprobe, 1, 65_536),
            ("retrieval.parallelism", self.retrieval.parallelism, 1, 256),
            ("ranker.queue_capacity", self.ranker.queue_capacity, 1, 1 << 20),
            ("ranker.threads", self.ranker.threads, 1, 64),
            ("serving.max_in_flight", self.serving.max_in_flight, 1, 1 << 20),
        ];
        for (field, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(config_error(field, format!("must be within {min}..={max}, got {value}")));
            }
        }
        if !(0.0..=1000.0).contains(&self.ranker.max_wait_ms) {
            return Err(config_error("ranker.max_wait_ms", "must be within 0..=1000"));
        }
        if !(1..=3600).contains(&self.cache.l1_ttl_secs) {
            return Err(config_error("cache.l1_ttl_secs", "must be within 1..=3600"));
        }
        if !(1..=86_400).contains(&self.cache.l2_ttl_secs) {
            return Err(config_error("cache.l2_ttl_secs", "must be within 1..=86400"));
        }
        if !(1..=60_000).contains(&self.cache.state_ttl_ms) {
            return Err(config_error("cache.state_ttl_ms", "must be within 1..=60000"));
        }
        if self.cache.l1_capacity == 0 || self.cache.users_capacity == 0 {
            return Err(config_error("cache", "l1_capacity and users_capacity must be positive"));
        }
        if !(1..=60_000).contains(&self.serving.deadline_ms) {
            return Err(config_error("serving.deadline_ms", "must be within 1..=60000"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)], file: Option<&str>) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cascade.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        Config::load(file.map(|_| path.as_path()), &|k| vars.get(k).cloned())
    }

    #[test]
    fn defaults_are_the_embedded_development_setup() {
        let config = load(&[], None).unwrap();
        assert_eq!(config.mode, Mode::Development);
        assert!(config.redis.shards.is_empty());
    }

    #[test]
    fn environment_overrides_file() {
        let config = load(
            &[("CASCADE_LISTEN", "127.0.0.1:9999")],
            Some("listen = \"127.0.0.1:1234\"\n[serving]\ndeadline_ms = 50\n"),
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9999);
        assert_eq!(config.serving.deadline_ms, 50);
    }

    #[test]
    fn production_needs_a_secret_and_errors_name_the_field() {
        let err = load(&[("CASCADE_MODE", "production")], None).unwrap_err();
        assert_eq!(err.field, "secret");
        let err = load(&[], Some("[serving]\nmax_in_flight = 0\n")).unwrap_err();
        assert_eq!(err.field, "serving.max_in_flight");
        let err = load(&[("CASCADE_REDIS_SHARDS", "localhost:6379")], None).unwrap_err();
        assert_eq!(err.field, "redis.shards[0]");
        assert!(load(&[], Some("unknown_field = 1\n")).is_err());
    }
}
