//! The edge's decisions, as plain functions the native test suite runs.

use cascade_shared::segment::{Country, Device, Page, SegmentKey};
use cascade_shared::signing::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
use cascade_shared::validate::{FieldError, MAX_N, QueryParams, parse_n};
use cascade_shared::wire::{ErrorBody, RecList};

/// Longest URL (path and query) the edge accepts.
pub const MAX_URL_LEN: usize = 2048;
/// Segment list freshness when `SEGMENT_TTL_SECS` is not set.
pub const DEFAULT_SEGMENT_TTL_SECS: u32 = 300;

/// The Worker's settings, from wrangler vars and secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    /// Origin base URL, without a trailing slash (var `ORIGIN_URL`).
    pub origin_url: String,
    /// Shared signing secret (secret `ORIGIN_SECRET`).
    pub secret: String,
    /// How long a segment list is served from cache, seconds (var `SEGMENT_TTL_SECS`).
    pub segment_ttl_secs: u32,
}

impl EdgeConfig {
    /// Builds and validates the config; errors name the variable.
    pub fn from_vars(origin_url: Option<String>, secret: Option<String>, ttl: Option<String>) -> Result<Self, String> {
        let origin_url = origin_url.filter(|u| !u.is_empty()).ok_or("ORIGIN_URL is not set")?;
        if !(origin_url.starts_with("http://") || origin_url.starts_with("https://")) {
            return Err(format!("ORIGIN_URL must start with http:// or https://, got {origin_url:?}"));
        }
        let secret = secret
            .filter(|s| s.len() >= cascade_shared::signing::MIN_SECRET_LEN)
            .ok_or("ORIGIN_SECRET is not set or shorter than 16 bytes")?;
        let segment_ttl_secs = match ttl {
            None => DEFAULT_SEGMENT_TTL_SECS,
            Some(t) => t
                .parse()
                .ok()
                .filter(|t| (1..=86_400).contains(t))
                .ok_or(format!("SEGMENT_TTL_SECS must be 1..=86400, got {t:?}"))?,
        };
        Ok(EdgeConfig { origin_url: origin_url.trim_end_matches('/').to_string(), secret, segment_ttl_secs })
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A segment's list, cut to `n`.
    SegmentRecs {
        /// The canonical segment.
        segment: SegmentKey,
        /// Items wanted.
        n: usize,
    },
    /// Liveness.
    Health,
}

/// Why a request is refused before any cache or origin work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400, naming the field.
    Invalid(FieldError),
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 414.
    UriTooLong,
}

/// Request facts the Worker runtime provides.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// URL path.
    pub path: &'a str,
    /// Raw query, without `?`.
    pub query: &'a str,
    /// Cloudflare's country for the visitor (`request.cf.country`), if any.
    pub country: Option<&'a str>,
    /// `User-Agent`, to guess the device when the query has none.
    pub user_agent: Option<&'a str>,
}

/// Decides what a request is. Only allowlisted query fields shape the segment; everything else in
/// the URL is ignored.
pub fn route(facts: &RequestFacts<'_>) -> Result<Route, Refusal> {
    if facts.path.len() + facts.query.len() > MAX_URL_LEN {
        return Err(Refusal::UriTooLong);
    }
    match (facts.method, facts.path) {
        ("GET" | "HEAD", "/recs") => {
            let params = QueryParams::parse(facts.query).map_err(Refusal::Invalid)?;
            let n = parse_n(params.get("n")).map_err(Refusal::Invalid)?;
            let device = match params.get("device").and_then(Device::parse) {
                Some(device) => device,
                None => facts.user_agent.map(Device::from_user_agent).unwrap_or_else(|| Device::parse_or_default(None)),
            };
            // Cloudflare's country wins; a query `country` only counts where the runtime has none
            // (local `wrangler dev`), and both go through the allowlist.
            let country = Country::parse_or_default(
                facts.country.filter(|c| Country::parse(c).is_some()).or(params.get("country")),
            );
            let segment = SegmentKey { page: Page::parse_or_default(params.get("page")), device, country };
            Ok(Route::SegmentRecs { segment, n })
        }
        ("GET", "/healthz") => Ok(Route::Health),
        (_, "/recs" | "/healthz") => Err(Refusal::MethodNotAllowed),
        _ => Err(Refusal::NotFound),
    }
}

/// The Cache API key for a segment: a URL on the Worker's own host (so a zone purge can reach
/// it), one per segment and list-format version.
pub fn cache_key(request_origin: &str, segment: &SegmentKey) -> String {
    format!("{}/__cascade/v1/segments/{segment}", request_origin.trim_end_matches('/'))
}

/// A signed request to the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginRequest {
    /// Full URL.
    pub url: String,
    /// Headers to send (signature, timestamp, request id).
    pub headers: Vec<(String, String)>,
}

/// The origin call for a segment's full list, signed at `now_secs`.
pub fn segment_request(config: &EdgeConfig, segment: &SegmentKey, now_secs: u64, request_id: &str) -> OriginRequest {
    let path = format!("/v1/segments/{segment}/recs");
    let query = format!("n={MAX_N}");
    let signature = sign(config.secret.as_bytes(), "GET", &path, &query, now_secs);
    OriginRequest {
        url: format!("{}{path}?{query}", config.origin_url),
        headers: vec![
            (TIMESTAMP_HEADER.to_string(), now_secs.to_string()),
            (SIGNATURE_HEADER.to_string(), signature),
            ("x-request-id".to_string(), request_id.to_string()),
        ],
    }
}

/// Cuts a stored full list to `n` items; the bytes must be a [`RecList`].
pub fn cut_list(body: &[u8], n: usize) -> Result<Vec<u8>, String> {
    let mut list: RecList = serde_json::from_slice(body).map_err(|e| format!("origin list is not a RecList: {e}"))?;
    list.truncate(n);
    serde_json::to_vec(&list).map_err(|e| e.to_string())
}

/// `Cache-Control` for a stored segment list.
pub fn segment_cache_control(ttl_secs: u32) -> String {
    format!("public, max-age={ttl_secs}")
}

/// Status and JSON body for a refusal.
pub fn refusal_response(refusal: &Refusal) -> (u16, String) {
    match refusal {
        Refusal::Invalid(error) => (400, ErrorBody::invalid(error).to_json()),
        Refusal::NotFound => {
            (404, ErrorBody::new("not_found", "no such route; try GET /recs?page=&device=&n=", None).to_json())
        }
        Refusal::MethodNotAllowed => (405, ErrorBody::new("method_not_allowed", "use GET", None).to_json()),
        Refusal::UriTooLong => {
            (414, ErrorBody::new("uri_too_long", format!("URL longer than {MAX_URL_LEN} bytes"), None).to_json())
        }
    }
}

/// The body for "the origin failed and nothing is cached".
pub fn origin_unavailable_body(detail: &str) -> String {
    ErrorBody::new(
        "origin_unavailable",
        format!("the origin could not be reached and no copy is cached: {detail}"),
        None,
    )
    .to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(path: &'a str, query: &'a str) -> RequestFacts<'a> {
        RequestFacts { method: "GET", path, query, country: None, user_agent: None }
    }

    fn segment_of(query: &str) -> String {
        match route(&facts("/recs", query)) {
            Ok(Route::SegmentRecs { segment, .. }) => segment.to_string(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_query_strings_map_to_one_segment() {
        let base = segment_of("page=browse&device=mobile");
        for noisy in [
            "page=browse&device=mobile&utm=1",
            "device=MOBILE&page=Browse&x=%00%ff",
            "page=browse&device=mobile&page=home",
        ] {
            assert_eq!(segment_of(noisy), base, "{noisy}");
        }
        assert_eq!(segment_of("page=<script>&device=fridge"), "home.desktop.zz");
    }

    #[test]
    fn n_is_validated_but_never_part_of_the_segment() {
        assert_eq!(segment_of("n=5"), segment_of("n=50"));
        assert!(matches!(route(&facts("/recs", "n=0")), Err(Refusal::Invalid(e)) if e.field == "n"));
        assert!(matches!(route(&facts("/recs", "n=101")), Err(Refusal::Invalid(_))));
        let (status, body) = refusal_response(&Refusal::Invalid(FieldError::new("n", "bad")));
        assert_eq!(status, 400);
        assert!(body.contains("\"field\":\"n\""));
    }

    #[test]
    fn country_from_cloudflare_and_device_from_user_agent() {
        let f = RequestFacts {
            method: "GET",
            path: "/recs",
            query: "country=fr",
            country: Some("DE"),
            user_agent: Some("Mozilla/5.0 (iPhone) Mobile"),
        };
        let Ok(Route::SegmentRecs { segment, .. }) = route(&f) else { panic!() };
        assert_eq!(segment.to_string(), "home.mobile.de");
        assert_eq!(segment_of("country=fr"), "home.desktop.fr");
    }

    #[test]
    fn routes_and_limits() {
        assert_eq!(route(&facts("/healthz", "")), Ok(Route::Health));
        assert_eq!(route(&facts("/nope", "")), Err(Refusal::NotFound));
        assert_eq!(route(&RequestFacts { method: "POST", ..facts("/recs", "") }), Err(Refusal::MethodNotAllowed));
        assert_eq!(route(&facts("/recs", &"a".repeat(MAX_URL_LEN))), Err(Refusal::UriTooLong));
    }

    #[test]
    fn origin_request_is_signed_for_the_full_list() {
        let config =
            EdgeConfig::from_vars(Some("http://127.0.0.1:8080/".into()), Some("0123456789abcdef".into()), None)
                .unwrap();
        let segment = SegmentKey::parse("home.desktop.us").unwrap();
        let request = segment_request(&config, &segment, 1_000, "rid");
        assert_eq!(request.url, "http://127.0.0.1:8080/v1/segments/home.desktop.us/recs?n=100");
        let get = |name: &str| request.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let verified = cascade_shared::signing::verify(
            b"0123456789abcdef",
            cascade_shared::signing::RequestTarget {
                method: "GET",
                path: "/v1/segments/home.desktop.us/recs",
                query: "n=100",
            },
            get(TIMESTAMP_HEADER),
            get(SIGNATURE_HEADER),
            1_001,
            300,
        );
        assert_eq!(verified, Ok(()));
    }

    #[test]
    fn config_errors_name_the_variable() {
        assert!(EdgeConfig::from_vars(None, Some("0123456789abcdef".into()), None).unwrap_err().contains("ORIGIN_URL"));
        assert!(EdgeConfig::from_vars(Some("ftp://x".into()), Some("0123456789abcdef".into()), None).is_err());
        assert!(
            EdgeConfig::from_vars(Some("http://x".into()), Some("short".into()), None)
                .unwrap_err()
                .contains("ORIGIN_SECRET")
        );
        assert!(
            EdgeConfig::from_vars(Some("http://x".into()), Some("0123456789abcdef".into()), Some("0".into()))
                .unwrap_err()
                .contains("SEGMENT_TTL_SECS")
        );
    }

    #[test]
    fn lists_are_cut_to_n() {
        let list = r#"{"segment":"home.desktop.zz","source":"segment","model_version":"b","items":[{"id":"a","score":0.5},{"id":"b","score":0.25},{"id":"c","score":0.1}]}"#;
        let cut: RecList = serde_json::from_slice(&cut_list(list.as_bytes(), 2).unwrap()).unwrap();
        assert_eq!(cut.items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
        assert!(cut_list(b"not json", 2).is_err());
    }
}
