//! The Worker's settings, from wrangler vars and secrets, validated when a request arrives; an
//! error names the variable.

/// How long a stored segment list is served as HIT when `SEGMENT_FRESH_SECS` is not set.
pub const DEFAULT_FRESH_SECS: u32 = 300;
/// How long after that it is still served (as STALE, refreshed in the background, or while the
/// origin fails) when `SEGMENT_STALE_SECS` is not set.
pub const DEFAULT_STALE_SECS: u32 = 3_600;
/// The origin call's budget when `ORIGIN_TIMEOUT_MS` is not set; the call is aborted after it.
pub const DEFAULT_ORIGIN_TIMEOUT_MS: u32 = 1_500;
/// Default seconds an isolate keeps the purge generations it read from KV.
pub const DEFAULT_GENERATION_CACHE_SECS: u32 = 5;
/// The Worker's settings, from wrangler vars and secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    /// Origin base URL, without a trailing slash (var `ORIGIN_URL`).
    pub origin_url: String,
    /// The keys derived from the shared secret (secret `ORIGIN_SECRET`): one signs origin
    /// requests, the other verifies visitor tokens.
    pub keys: cascade_shared::signing::Keys,
    /// Fresh period of a stored segment list, seconds (var `SEGMENT_FRESH_SECS`).
    pub fresh_secs: u32,
    /// Stale window after the fresh period, seconds (var `SEGMENT_STALE_SECS`).
    pub stale_secs: u32,
    /// Budget of one origin call, milliseconds (var `ORIGIN_TIMEOUT_MS`).
    pub origin_timeout_ms: u32,
    /// Browser origins allowed by CORS (var `CORS_ORIGINS`, comma-separated; `*` for any origin,
    /// without credentials).
    pub cors_origins: Vec<String>,
    /// Bearer token of the admin routes (secret `ADMIN_TOKEN`); unset disables them.
    pub admin_token: Option<String>,
    /// Seconds an isolate keeps the purge generations it read from KV (`GENERATION_CACHE_SECS`;
    /// 0: read on every request).
    pub generation_cache_secs: u32,
    /// The OpenTelemetry collector's OTLP/HTTP URL (`OTLP_ENDPOINT`): the Worker records a span
    /// per request, continuing the browser's trace, and exports it; unset, it only passes a
    /// browser's `traceparent` on to the origin.
    pub otlp_endpoint: Option<String>,
}

fn bounded(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, String> {
    match lookup(name).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(value) => value.trim().parse().ok().filter(|v| range.contains(v)).ok_or(format!(
            "{name} must be an integer in {}..={}, got {value:?}",
            range.start(),
            range.end()
        )),
    }
}

/// Whether `url` is plain HTTP to this machine (`wrangler dev` against a local origin): the only
/// plain-HTTP origin accepted, since signed requests and visitor lists would cross the network in
/// the clear otherwise.
fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(host, _port)| host),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl EdgeConfig {
    /// Builds and validates the config from a variable lookup; errors name the variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let origin_url = lookup("ORIGIN_URL").filter(|u| !u.is_empty()).ok_or("ORIGIN_URL is not set")?;
        if !origin_url.starts_with("https://") && !is_loopback_http(&origin_url) {
            return Err(format!(
                "ORIGIN_URL must be https:// (plain http:// only to a loopback origin in development), got {origin_url:?}"
            ));
        }
        let secret = lookup("ORIGIN_SECRET")
            .filter(|s| s.len() >= cascade_shared::signing::MIN_SECRET_LEN)
            .ok_or("ORIGIN_SECRET is not set or shorter than 16 bytes")?;
        let admin_token = match lookup("ADMIN_TOKEN").filter(|t| !t.is_empty()) {
            Some(token) if token.len() < cascade_shared::signing::MIN_SECRET_LEN => {
                return Err("ADMIN_TOKEN must be at least 16 bytes".into());
            }
            token => token,
        };
        let cors_origins = lookup("CORS_ORIGINS")
            .unwrap_or_default()
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        Ok(EdgeConfig {
            origin_url: origin_url.trim_end_matches('/').to_string(),
            keys: cascade_shared::signing::Keys::derive(secret.as_bytes()),
            fresh_secs: bounded(&lookup, "SEGMENT_FRESH_SECS", DEFAULT_FRESH_SECS, 1..=86_400)?,
            stale_secs: bounded(&lookup, "SEGMENT_STALE_SECS", DEFAULT_STALE_SECS, 0..=7 * 86_400)?,
            origin_timeout_ms: bounded(&lookup, "ORIGIN_TIMEOUT_MS", DEFAULT_ORIGIN_TIMEOUT_MS, 50..=30_000)?,
            cors_origins,
            admin_token,
            generation_cache_secs: bounded(&lookup, "GENERATION_CACHE_SECS", DEFAULT_GENERATION_CACHE_SECS, 0..=300)?,
            otlp_endpoint: match lookup("OTLP_ENDPOINT").filter(|u| !u.is_empty()) {
                Some(url) if !(url.starts_with("https://") || url.starts_with("http://")) => {
                    return Err(format!("OTLP_ENDPOINT must be an http(s) URL, got {url:?}"));
                }
                url => url.map(|u| u.trim_end_matches('/').to_string()),
            },
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid config with `extra` variables set (for the other modules' tests too).
    pub(crate) fn config(extra: &[(&str, &str)]) -> EdgeConfig {
        let mut vars: std::collections::HashMap<String, String> =
            [("ORIGIN_URL", "http://127.0.0.1:8080/"), ("ORIGIN_SECRET", "0123456789abcdef")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        EdgeConfig::from_lookup(|name| vars.get(name).cloned()).unwrap()
    }

    fn config_error(vars: &[(&str, &str)]) -> String {
        let vars: std::collections::HashMap<&str, &str> = vars.iter().copied().collect();
        EdgeConfig::from_lookup(|name| vars.get(name).map(|v| v.to_string())).unwrap_err()
    }

    #[test]
    fn config_defaults_and_errors_name_the_variable() {
        let c = config(&[("CORS_ORIGINS", "https://a.example/, https://b.example")]);
        assert_eq!((c.fresh_secs, c.stale_secs, c.origin_timeout_ms), (300, 3_600, 1_500));
        assert_eq!(c.cors_origins, vec!["https://a.example", "https://b.example"]);
        assert_eq!(c.origin_url, "http://127.0.0.1:8080");
        assert!(config_error(&[("ORIGIN_SECRET", "0123456789abcdef")]).contains("ORIGIN_URL"));
        assert!(config_error(&[("ORIGIN_URL", "ftp://x"), ("ORIGIN_SECRET", "0123456789abcdef")]).contains("http"));
        for insecure in ["http://origin.example", "http://127.0.0.1.evil.example", "http://10.0.0.1:8080"] {
            let error = config_error(&[("ORIGIN_URL", insecure), ("ORIGIN_SECRET", "0123456789abcdef")]);
            assert!(error.contains("https://"), "{insecure}: {error}");
        }
        for local in ["http://localhost:8080", "http://[::1]:8080/", "http://127.0.0.1:9"] {
            assert!(is_loopback_http(local), "{local}");
        }
        assert!(config_error(&[("ORIGIN_URL", "https://x"), ("ORIGIN_SECRET", "short")]).contains("ORIGIN_SECRET"));
        let base = [("ORIGIN_URL", "https://x"), ("ORIGIN_SECRET", "0123456789abcdef")];
        for (name, bad) in [
            ("SEGMENT_FRESH_SECS", "0"),
            ("SEGMENT_STALE_SECS", "-1"),
            ("ORIGIN_TIMEOUT_MS", "10"),
            ("ADMIN_TOKEN", "short"),
        ] {
            let mut vars = base.to_vec();
            vars.push((name, bad));
            assert!(config_error(&vars).contains(name), "{name}");
        }
    }
}
