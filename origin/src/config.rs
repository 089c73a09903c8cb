//! Typed configuration: defaults, then a TOML file, then environment variables (the names are
//! declared in [`cascade_shared::config`]), validated before anything starts.
//!
//! With no file and no variables this is the embedded default: development mode, an in-process
//! embedding store, the bundle in `data/bundle`.
//!
//! Each subsystem owns its settings type and its defaults ([`RedisConfig`], [`RetrievalConfig`],
//! [`RankerConfig`], [`ServingConfig`], [`CacheConfig`]); this file only composes them into the
//! file's tables and checks every field in one place, so an error names the field.

use std::net::SocketAddr;
use std::path::PathBuf;

use cascade_shared::config as env_names;
use cascade_shared::signing::MIN_SECRET_LEN;
use serde::Deserialize;

pub use crate::cache::CacheConfig;
pub use crate::ranking::{DeviceChoice, RankerConfig};
pub use crate::recommend::ServingConfig;
pub use crate::redis::RedisConfig;
pub use crate::retrieval::RetrievalConfig;

/// Development (a secret is generated when none is set) or production (a secret is required).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Local runs.
    Development,
    /// Anything else.
    Production,
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
    /// The feature log (served lists and events on disk; off unless `dir` is set).
    pub feature_log: crate::feature_log::FeatureLogConfig,
    /// Purging the edge's segment lists when an item is withheld (`[edge]`).
    pub edge: crate::edge_purge::EdgeConfig,
    /// The catalogue's live state (`[catalogue]`).
    pub catalogue: crate::catalogue::CatalogueConfig,
    /// Business rules on the way out (`[rules]`).
    pub rules: crate::recommend::list_rules::RulesConfig,
    /// A/B variants (`[[variants]]`): none, one bundle for everyone.
    pub variants: Vec<crate::experiment::VariantConfig>,
    /// Salt of the users' assignment to variants: a new salt reshuffles them.
    pub variant_salt: String,
    /// Traces exported over OTLP (`[tracing]`; off unless `otlp_endpoint` is set).
    pub tracing: crate::otel::TracingConfig,
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
            feature_log: crate::feature_log::FeatureLogConfig::default(),
            catalogue: crate::catalogue::CatalogueConfig::default(),
            edge: crate::edge_purge::EdgeConfig::default(),
            rules: crate::recommend::list_rules::RulesConfig::default(),
            variants: Vec::new(),
            variant_salt: "cascade".into(),
            tracing: crate::otel::TracingConfig::default(),
        }
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
        if let Some(v) = env(env_names::REDIS_PREVIOUS_SHARDS) {
            config.redis.previous_shards = split_list(&v);
        }
        if let Some(v) = env(env_names::REDIS_CLUSTER) {
            config.redis.cluster = split_list(&v);
        }
        for (name, file) in [
            (env_names::REDIS_TLS_CA, &mut config.redis.tls.ca_file),
            (env_names::REDIS_TLS_CERT, &mut config.redis.tls.cert_file),
            (env_names::REDIS_TLS_KEY, &mut config.redis.tls.key_file),
        ] {
            if let Some(v) = env(name) {
                *file = Some(PathBuf::from(v));
            }
        }
        if let Some(v) = env(env_names::EDGE_PURGE_TOKEN) {
            config.edge.purge_token = Some(v);
        }
        if let Some(v) = env(env_names::OTLP_ENDPOINT) {
            config.tracing.otlp_endpoint = v;
        }
        if let Some(v) = env(env_names::FEATURE_LOG) {
            config.feature_log.dir = (!v.is_empty()).then(|| PathBuf::from(v));
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
        let urls = self.redis.shards.iter().enumerate().map(|(index, url)| ("shards", index, url));
        let cluster = self.redis.cluster.iter().enumerate().map(|(index, url)| ("cluster", index, url));
        let previous =
            self.redis.previous_shards.iter().enumerate().map(|(index, url)| ("previous_shards", index, url));
        for (list, index, url) in urls.chain(cluster).chain(previous) {
            if let Err(error) = crate::redis::url::RedisUrl::parse(url) {
                return Err(config_error(&format!("redis.{list}[{index}]"), error.to_string()));
            }
        }
        if !self.redis.previous_shards.is_empty() && self.redis.shards.is_empty() {
            return Err(config_error(
                "redis.previous_shards",
                "an online reshard moves keys to `shards`: set them too",
            ));
        }
        if let Err(error) = crate::redis::tls::RedisTls::load(&self.redis.tls) {
            return Err(config_error("redis.tls", error.to_string()));
        }
        let ranges: [(&str, usize, usize, usize); 13] = [
            ("ranker.max_batch_rows", self.ranker.max_batch_rows, 1, 1 << 20),
            ("retrieval.candidates", self.retrieval.candidates, 1, 10_000),
            ("retrieval.nprobe", self.retrieval.nprobe, 1, 65_536),
            ("retrieval.parallelism", self.retrieval.parallelism, 1, 256),
            ("ranker.queue_capacity", self.ranker.queue_capacity, 1, 1 << 20),
            ("ranker.threads", self.ranker.threads, 1, 64),
            ("serving.max_in_flight", self.serving.max_in_flight, 1, 1 << 20),
            ("retrieval.queue_capacity", self.retrieval.queue_capacity, 1, 1 << 20),
            ("serving.events_deadline_ms", self.serving.events_deadline_ms as usize, 1, 600_000),
            ("serving.request_timeout_ms", self.serving.request_timeout_ms as usize, 1, 600_000),
            ("serving.header_read_timeout_ms", self.serving.header_read_timeout_ms as usize, 1, 600_000),
            ("serving.max_connections", self.serving.max_connections, 1, 1 << 20),
            ("serving.brownout_lag_ms", self.serving.brownout_lag_ms as usize, 0, 10_000),
        ];
        for (field, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(config_error(field, format!("must be within {min}..={max}, got {value}")));
            }
        }
        if self.mode == Mode::Production && self.serving.fault_injection {
            return Err(config_error("serving.fault_injection", "is for tests and must be off in production"));
        }
        let tracing = &self.tracing;
        let endpoint = &tracing.otlp_endpoint;
        if !(endpoint.is_empty() || endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(config_error("tracing.otlp_endpoint", "must be an http:// or https:// URL"));
        }
        if !(0.0..=1.0).contains(&tracing.sample_ratio) {
            return Err(config_error("tracing.sample_ratio", "must be within 0..=1"));
        }
        let remote = &self.ranker.remote;
        if remote.is_on() && !(remote.url.starts_with("http://") || remote.url.starts_with("https://")) {
            return Err(config_error("ranker.remote.url", "must be an http:// or https:// URL"));
        }
        if remote.is_on() && !(1..=60_000).contains(&remote.timeout_ms) {
            return Err(config_error("ranker.remote.timeout_ms", "must be within 1..=60000"));
        }
        if remote.is_on() {
            cascade_shared::validate::validate_id("ranker.remote.model", &remote.model)
                .map_err(|e| config_error("ranker.remote.model", e.message))?;
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
        if !(1..=10_000_000).contains(&self.feature_log.capacity) {
            return Err(config_error("feature_log.capacity", "must be within 1..=10000000"));
        }
        if self.feature_log.rotate_bytes < 4096 {
            return Err(config_error("feature_log.rotate_bytes", "must be at least 4096"));
        }
        if !(0.0..=1.0).contains(&self.feature_log.query_sample) {
            return Err(config_error("feature_log.query_sample", "must be within 0..=1"));
        }
        if self.rules.seen_window > 10_000 || self.rules.seen_users == 0 {
            return Err(config_error("rules", "seen_window must be within 0..=10000 and seen_users positive"));
        }
        if let Some(url) = &self.edge.purge_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(config_error("edge.purge_url", "must be an http(s) URL (the Worker's)"));
            }
            if self.edge.purge_token.as_deref().is_none_or(str::is_empty) {
                return Err(config_error("edge.purge_token", "required with purge_url (or CASCADE_EDGE_PURGE_TOKEN)"));
            }
        }
        if !(0.0..=1.0).contains(&self.rules.diversity) {
            return Err(config_error("rules.diversity", "must be within 0..=1 (0: off)"));
        }
        if self.catalogue.max_new_items > 1_000_000 {
            return Err(config_error(
                "catalogue.max_new_items",
                "must be at most 1000000 (new items are scanned, not indexed)",
            ));
        }
        if self.catalogue.fresh_candidates > 1_000 {
            return Err(config_error("catalogue.fresh_candidates", "must be at most 1000"));
        }
        for (index, pin) in self.rules.pin.iter().enumerate() {
            if !(1..=cascade_shared::validate::MAX_N).contains(&pin.position) {
                return Err(config_error(&format!("rules.pin[{index}].position"), "must be within 1..=100"));
            }
            cascade_shared::validate::validate_id("item", &pin.item)
                .map_err(|e| config_error(&format!("rules.pin[{index}].item"), e.message))?;
        }
        crate::experiment::validate(&self.variants).map_err(|(field, message)| config_error(&field, message))?;
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
        // TLS files are read when the configuration is checked, not at the first connection.
        let err = load(&[], Some("[redis.tls]\nca_file = \"/nonexistent/ca.pem\"\n")).unwrap_err();
        assert_eq!(err.field, "redis.tls");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let err = load(&[("CASCADE_REDIS_TLS_CERT", "/nonexistent/client.pem")], None).unwrap_err();
        assert_eq!(err.field, "redis.tls");
        // An online reshard's previous placement needs the new one.
        let err = load(&[("CASCADE_REDIS_PREVIOUS_SHARDS", "redis://127.0.0.1:7000")], None).unwrap_err();
        assert_eq!(err.field, "redis.previous_shards");
        let err = load(&[("CASCADE_REDIS_SHARDS", "redis://a:1"), ("CASCADE_REDIS_PREVIOUS_SHARDS", "a:1")], None);
        assert_eq!(err.unwrap_err().field, "redis.previous_shards[0]");
    }
}
