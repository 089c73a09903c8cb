//! The edge's decisions, as plain functions the native test suite runs.

use cascade_shared::segment::{Country, Device, Page, SegmentKey};
use cascade_shared::signing::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
use cascade_shared::validate::{FieldError, MAX_N, QueryParams, parse_n};
use cascade_shared::wire::{ErrorBody, RecList};

/// Longest URL (path and query) the edge accepts.
pub const MAX_URL_LEN: usize = 2048;
/// How long a stored segment list is served as HIT when `SEGMENT_FRESH_SECS` is not set.
pub const DEFAULT_FRESH_SECS: u32 = 300;
/// How long after that it is still served (as STALE, refreshed in the background, or while the
/// origin fails) when `SEGMENT_STALE_SECS` is not set.
pub const DEFAULT_STALE_SECS: u32 = 3_600;
/// The origin call's budget when `ORIGIN_TIMEOUT_MS` is not set; the call is aborted after it.
pub const DEFAULT_ORIGIN_TIMEOUT_MS: u32 = 1_500;
/// Header on a stored entry: when it was fetched from the origin, Unix milliseconds.
pub const STORED_AT_HEADER: &str = "x-cascade-stored-at";

/// The Worker's settings, from wrangler vars and secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    /// Origin base URL, without a trailing slash (var `ORIGIN_URL`).
    pub origin_url: String,
    /// Shared signing secret (secret `ORIGIN_SECRET`); also verifies visitor tokens.
    pub secret: String,
    /// Fresh period of a stored segment list, seconds (var `SEGMENT_FRESH_SECS`).
    pub fresh_secs: u32,
    /// Stale window after the fresh period, seconds (var `SEGMENT_STALE_SECS`).
    pub stale_secs: u32,
    /// Budget of one origin call, milliseconds (var `ORIGIN_TIMEOUT_MS`).
    pub origin_timeout_ms: u32,
    /// Browser origins allowed by CORS (var `CORS_ORIGINS`, comma-separated; `*` for any).
    pub cors_origins: Vec<String>,
    /// Bearer token of the admin routes (secret `ADMIN_TOKEN`); unset disables them.
    pub admin_token: Option<String>,
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

impl EdgeConfig {
    /// Builds and validates the config from a variable lookup; errors name the variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let origin_url = lookup("ORIGIN_URL").filter(|u| !u.is_empty()).ok_or("ORIGIN_URL is not set")?;
        if !(origin_url.starts_with("http://") || origin_url.starts_with("https://")) {
            return Err(format!("ORIGIN_URL must start with http:// or https://, got {origin_url:?}"));
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
            secret,
            fresh_secs: bounded(&lookup, "SEGMENT_FRESH_SECS", DEFAULT_FRESH_SECS, 1..=86_400)?,
            stale_secs: bounded(&lookup, "SEGMENT_STALE_SECS", DEFAULT_STALE_SECS, 0..=7 * 86_400)?,
            origin_timeout_ms: bounded(&lookup, "ORIGIN_TIMEOUT_MS", DEFAULT_ORIGIN_TIMEOUT_MS, 50..=30_000)?,
            cors_origins,
            admin_token,
        })
    }
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A list for the visitor: the segment's, or their own when they carry a user token.
    Recs {
        /// The canonical segment.
        segment: SegmentKey,
        /// Items wanted.
        n: usize,
    },
    /// `POST /admin/purge?segment=…`: delete a segment's stored list in this data centre.
    Purge {
        /// The segment to purge.
        segment: SegmentKey,
    },
    /// The demo page at `/`.
    Demo,
    /// A CORS preflight.
    Preflight,
    /// Liveness.
    Health,
}

/// Why a request is refused before any cache or origin work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400, naming the field.
    Invalid(FieldError),
    /// 401: a user token or admin token that does not verify.
    Unauthorized(String),
    /// 403: a browser origin CORS does not allow, or an admin route with no `ADMIN_TOKEN` set.
    Forbidden(String),
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
    /// `Sec-CH-UA-Mobile` client hint (`?1` on a phone), which beats the `User-Agent`.
    pub ch_mobile: Option<&'a str>,
}

/// Decides what a request is. Only allowlisted query fields shape the segment; everything else in
/// the URL is ignored.
pub fn route(facts: &RequestFacts<'_>) -> Result<Route, Refusal> {
    if facts.path.len() + facts.query.len() > MAX_URL_LEN {
        return Err(Refusal::UriTooLong);
    }
    match (facts.method, facts.path) {
        ("OPTIONS", _) => Ok(Route::Preflight),
        ("GET" | "HEAD", "/recs") => {
            let params = QueryParams::parse(facts.query).map_err(Refusal::Invalid)?;
            let n = parse_n(params.get("n")).map_err(Refusal::Invalid)?;
            let device = match (params.get("device").and_then(Device::parse), facts.ch_mobile) {
                (Some(device), _) => device,
                (None, Some("?1")) => Device::parse_or_default(Some("mobile")),
                (None, _) => {
                    facts.user_agent.map(Device::from_user_agent).unwrap_or_else(|| Device::parse_or_default(None))
                }
            };
            // Cloudflare's country wins; a query `country` only counts where the runtime has none
            // (local `wrangler dev`), and both go through the allowlist.
            let country = Country::parse_or_default(
                facts.country.filter(|c| Country::parse(c).is_some()).or(params.get("country")),
            );
            let segment = SegmentKey { page: Page::parse_or_default(params.get("page")), device, country };
            Ok(Route::Recs { segment, n })
        }
        ("POST", "/admin/purge") => {
            let params = QueryParams::parse(facts.query).map_err(Refusal::Invalid)?;
            let raw = params.get("segment").ok_or_else(|| {
                Refusal::Invalid(FieldError::new("segment", "required, e.g. segment=home.desktop.us"))
            })?;
            let segment =
                SegmentKey::parse(raw).map_err(|e| Refusal::Invalid(FieldError::new("segment", e.to_string())))?;
            Ok(Route::Purge { segment })
        }
        ("GET" | "HEAD", "/") => Ok(Route::Demo),
        ("GET", "/healthz") => Ok(Route::Health),
        (_, "/recs" | "/healthz" | "/" | "/admin/purge") => Err(Refusal::MethodNotAllowed),
        _ => Err(Refusal::NotFound),
    }
}

/// Checks an admin route's `Authorization: Bearer` against `ADMIN_TOKEN`, in constant time.
pub fn check_admin(config: &EdgeConfig, authorization: Option<&str>) -> Result<(), Refusal> {
    let Some(expected) = &config.admin_token else {
        return Err(Refusal::Forbidden("admin routes are disabled: set the ADMIN_TOKEN secret".into()));
    };
    let given = authorization.and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("").as_bytes();
    let same = given.len() == expected.len()
        && given.iter().zip(expected.as_bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if same {
        Ok(())
    } else {
        Err(Refusal::Unauthorized("admin routes need Authorization: Bearer <ADMIN_TOKEN>".into()))
    }
}

/// The user a visitor token names, verified at `now_secs`; a bad token is a 401, never a
/// silent fall back to the shared list (the visitor would not know they were signed out).
pub fn visitor(config: &EdgeConfig, token: &str, now_secs: u64) -> Result<String, Refusal> {
    cascade_shared::token::verify(config.secret.as_bytes(), token, now_secs)
        .map(str::to_string)
        .map_err(|e| Refusal::Unauthorized(e.to_string()))
}

/// The Cache API key for a segment: a URL on the Worker's own host (so a zone purge can reach
/// it), one per segment and list-format version.
pub fn cache_key(request_origin: &str, segment: &SegmentKey) -> String {
    format!("{}/__cascade/v1/segments/{segment}", request_origin.trim_end_matches('/'))
}

/// How a stored entry may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Within the fresh period: HIT.
    Fresh,
    /// Within the stale window: served as STALE while one background refresh runs.
    Stale,
    /// Past both (or without a readable stored-at): fetched again; still served if the origin fails.
    Expired,
}

/// Classifies an entry stored at `stored_at_ms` (the [`STORED_AT_HEADER`] value).
pub fn freshness(config: &EdgeConfig, stored_at_ms: Option<&str>, now_ms: u64) -> Freshness {
    let Some(stored_at) = stored_at_ms.and_then(|v| v.trim().parse::<u64>().ok()) else {
        return Freshness::Expired;
    };
    let age_ms = now_ms.saturating_sub(stored_at);
    let fresh_ms = u64::from(config.fresh_secs) * 1000;
    if age_ms < fresh_ms {
        Freshness::Fresh
    } else if age_ms < fresh_ms + u64::from(config.stale_secs) * 1000 {
        Freshness::Stale
    } else {
        Freshness::Expired
    }
}

/// `Cache-Control` of a stored entry: the Cache API keeps it for the fresh period and the stale
/// window; the edge itself decides HIT or STALE from [`STORED_AT_HEADER`].
pub fn stored_cache_control(config: &EdgeConfig) -> String {
    format!("public, max-age={}", u64::from(config.fresh_secs) + u64::from(config.stale_secs))
}

/// `Cache-Tag` of a stored entry: purge one segment, or every segment, by tag across the zone.
pub fn cache_tags(segment: &SegmentKey) -> String {
    format!("cascade-segment-{segment},cascade-segments")
}

/// A signed request to the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginRequest {
    /// Full URL.
    pub url: String,
    /// Headers to send (signature, timestamp, request id).
    pub headers: Vec<(String, String)>,
}

fn signed(config: &EdgeConfig, path: String, query: String, now_secs: u64, request_id: &str) -> OriginRequest {
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

/// The origin call for a segment's full list, signed at `now_secs`.
pub fn segment_request(config: &EdgeConfig, segment: &SegmentKey, now_secs: u64, request_id: &str) -> OriginRequest {
    signed(config, format!("/v1/segments/{segment}/recs"), format!("n={MAX_N}"), now_secs, request_id)
}

/// The origin call for a signed-in visitor's own list in their segment's context.
pub fn user_request(
    config: &EdgeConfig,
    user_id: &str,
    segment: &SegmentKey,
    n: usize,
    now_secs: u64,
    request_id: &str,
) -> OriginRequest {
    let query = format!(
        "n={n}&page={}&device={}&country={}",
        segment.page.as_str(),
        segment.device.as_str(),
        segment.country.as_str()
    );
    signed(config, format!("/v1/users/{user_id}/recs"), query, now_secs, request_id)
}

/// Cuts a stored full list to `n` items; the bytes must be a [`RecList`].
pub fn cut_list(body: &[u8], n: usize) -> Result<Vec<u8>, String> {
    let mut list: RecList = serde_json::from_slice(body).map_err(|e| format!("origin list is not a RecList: {e}"))?;
    list.truncate(n);
    serde_json::to_vec(&list).map_err(|e| e.to_string())
}

/// Why an origin call gave no list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginFailure {
    /// No answer within the budget; the call was aborted.
    Timeout(u32),
    /// The connection failed.
    Unreachable(String),
    /// A status other than 200.
    Status(u16),
    /// A 200 whose body is not a list.
    BadBody(String),
}

impl std::fmt::Display for OriginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OriginFailure::Timeout(ms) => write!(f, "no answer within {ms} ms"),
            OriginFailure::Unreachable(e) => write!(f, "unreachable: {e}"),
            OriginFailure::Status(s) => write!(f, "answered status {s}"),
            OriginFailure::BadBody(e) => write!(f, "answered a bad body: {e}"),
        }
    }
}

/// Status and JSON body when the origin failed and nothing is cached: 503 (DESIGN.md's failure
/// table), with a code that names the cause: `origin_timeout`, `origin_unavailable` or
/// `origin_error` (a bad status or body).
pub fn origin_failure_response(failure: &OriginFailure) -> (u16, String) {
    let code = match failure {
        OriginFailure::Timeout(_) => "origin_timeout",
        OriginFailure::Unreachable(_) => "origin_unavailable",
        OriginFailure::Status(_) | OriginFailure::BadBody(_) => "origin_error",
    };
    let status = 503;
    let message = format!("the origin {failure} and no copy of this list is cached");
    (status, ErrorBody::new(code, message, None).to_json())
}

/// Status and JSON body for a refusal.
pub fn refusal_response(refusal: &Refusal) -> (u16, String) {
    match refusal {
        Refusal::Invalid(error) => (400, ErrorBody::invalid(error).to_json()),
        Refusal::Unauthorized(message) => (401, ErrorBody::new("unauthorized", message.clone(), None).to_json()),
        Refusal::Forbidden(message) => (403, ErrorBody::new("forbidden", message.clone(), None).to_json()),
        Refusal::NotFound => {
            (404, ErrorBody::new("not_found", "no such route; try GET /recs?page=&device=&n=", None).to_json())
        }
        Refusal::MethodNotAllowed => (405, ErrorBody::new("method_not_allowed", "use GET", None).to_json()),
        Refusal::UriTooLong => {
            (414, ErrorBody::new("uri_too_long", format!("URL longer than {MAX_URL_LEN} bytes"), None).to_json())
        }
    }
}

/// CORS headers for a request from browser origin `origin`: `Ok(headers)` (empty when the request
/// is not cross-origin), or a refusal when `origin` is not allowed.
pub fn cors_headers(
    config: &EdgeConfig,
    origin: Option<&str>,
    preflight: bool,
) -> Result<Vec<(&'static str, String)>, Refusal> {
    let Some(origin) = origin else { return Ok(Vec::new()) };
    let allowed = config.cors_origins.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin.trim_end_matches('/')));
    if !allowed {
        // A simple cross-origin GET is answered without CORS headers (the browser withholds it);
        // a preflight is refused outright.
        return if preflight {
            Err(Refusal::Forbidden(format!("origin {origin:?} is not in CORS_ORIGINS")))
        } else {
            Ok(Vec::new())
        };
    }
    let mut headers = vec![
        ("access-control-allow-origin", origin.to_string()),
        ("access-control-allow-credentials", "true".to_string()),
        ("access-control-expose-headers", "x-cache, x-request-id, server-timing".to_string()),
        ("vary", "Origin".to_string()),
    ];
    if preflight {
        headers.push(("access-control-allow-methods", "GET, HEAD, OPTIONS".to_string()));
        headers.push(("access-control-allow-headers", "authorization, content-type, x-request-id".to_string()));
        headers.push(("access-control-max-age", "86400".to_string()));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(path: &'a str, query: &'a str) -> RequestFacts<'a> {
        RequestFacts { method: "GET", path, query, ..Default::default() }
    }

    fn segment_of(query: &str) -> String {
        match route(&facts("/recs", query)) {
            Ok(Route::Recs { segment, .. }) => segment.to_string(),
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
            ch_mobile: None,
        };
        let Ok(Route::Recs { segment, .. }) = route(&f) else { panic!() };
        assert_eq!(segment.to_string(), "home.mobile.de");
        assert_eq!(segment_of("country=fr"), "home.desktop.fr");
    }

    #[test]
    fn routes_and_limits() {
        assert_eq!(route(&facts("/healthz", "")), Ok(Route::Health));
        assert_eq!(route(&facts("/", "")), Ok(Route::Demo));
        assert_eq!(route(&RequestFacts { method: "OPTIONS", ..facts("/recs", "") }), Ok(Route::Preflight));
        assert_eq!(route(&facts("/nope", "")), Err(Refusal::NotFound));
        assert_eq!(route(&RequestFacts { method: "POST", ..facts("/recs", "") }), Err(Refusal::MethodNotAllowed));
        assert_eq!(route(&facts("/recs", &"a".repeat(MAX_URL_LEN))), Err(Refusal::UriTooLong));
    }

    fn config(extra: &[(&str, &str)]) -> EdgeConfig {
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
    fn origin_requests_are_signed() {
        let config = config(&[]);
        let segment = SegmentKey::parse("home.desktop.us").unwrap();
        let check = |request: &OriginRequest, path: &str, query: &str| {
            assert_eq!(request.url, format!("http://127.0.0.1:8080{path}?{query}"));
            let get = |name: &str| request.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
            let target = cascade_shared::signing::RequestTarget { method: "GET", path, query };
            let verified = cascade_shared::signing::verify(
                b"0123456789abcdef",
                target,
                get(TIMESTAMP_HEADER),
                get(SIGNATURE_HEADER),
                1_001,
                300,
            );
            assert_eq!(verified, Ok(()));
        };
        check(&segment_request(&config, &segment, 1_000, "rid"), "/v1/segments/home.desktop.us/recs", "n=100");
        check(
            &user_request(&config, "u-9.x", &segment, 7, 1_000, "rid"),
            "/v1/users/u-9.x/recs",
            "n=7&page=home&device=desktop&country=us",
        );
    }

    #[test]
    fn config_defaults_and_errors_name_the_variable() {
        let c = config(&[("CORS_ORIGINS", "https://a.example/, https://b.example")]);
        assert_eq!((c.fresh_secs, c.stale_secs, c.origin_timeout_ms), (300, 3_600, 1_500));
        assert_eq!(c.cors_origins, vec!["https://a.example", "https://b.example"]);
        assert_eq!(c.origin_url, "http://127.0.0.1:8080");
        assert!(config_error(&[("ORIGIN_SECRET", "0123456789abcdef")]).contains("ORIGIN_URL"));
        assert!(config_error(&[("ORIGIN_URL", "ftp://x"), ("ORIGIN_SECRET", "0123456789abcdef")]).contains("http"));
        assert!(config_error(&[("ORIGIN_URL", "http://x"), ("ORIGIN_SECRET", "short")]).contains("ORIGIN_SECRET"));
        let base = [("ORIGIN_URL", "http://x"), ("ORIGIN_SECRET", "0123456789abcdef")];
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

    #[test]
    fn freshness_windows() {
        let c = config(&[("SEGMENT_FRESH_SECS", "2"), ("SEGMENT_STALE_SECS", "10")]);
        assert_eq!(freshness(&c, Some("1000"), 1_000), Freshness::Fresh);
        assert_eq!(freshness(&c, Some("1000"), 2_999), Freshness::Fresh);
        assert_eq!(freshness(&c, Some("1000"), 3_000), Freshness::Stale);
        assert_eq!(freshness(&c, Some("1000"), 12_999), Freshness::Stale);
        assert_eq!(freshness(&c, Some("1000"), 13_000), Freshness::Expired);
        assert_eq!(freshness(&c, None, 1_000), Freshness::Expired);
        assert_eq!(freshness(&c, Some("soon"), 1_000), Freshness::Expired);
        assert_eq!(stored_cache_control(&c), "public, max-age=12");
    }

    #[test]
    fn visitor_tokens_and_admin_auth() {
        let c = config(&[("ADMIN_TOKEN", "admin-token-0123456789")]);
        let token = cascade_shared::token::issue(b"0123456789abcdef", "u7", 2_000);
        assert_eq!(visitor(&c, &token, 1_000), Ok("u7".to_string()));
        assert!(matches!(visitor(&c, &token, 2_001), Err(Refusal::Unauthorized(m)) if m.contains("expired")));
        let forged = cascade_shared::token::issue(b"not-the-secret-xx", "u7", 2_000);
        assert!(matches!(visitor(&c, &forged, 1_000), Err(Refusal::Unauthorized(_))));
        assert_eq!(check_admin(&c, Some("Bearer admin-token-0123456789")), Ok(()));
        assert!(matches!(check_admin(&c, Some("Bearer admin-token-012345678X")), Err(Refusal::Unauthorized(_))));
        assert!(matches!(check_admin(&c, None), Err(Refusal::Unauthorized(_))));
        assert!(matches!(check_admin(&config(&[]), Some("Bearer x")), Err(Refusal::Forbidden(_))));
    }

    #[test]
    fn purge_route_validates_the_segment() {
        let purge = |query| route(&RequestFacts { method: "POST", path: "/admin/purge", query, ..Default::default() });
        assert_eq!(
            purge("segment=home.mobile.de"),
            Ok(Route::Purge { segment: SegmentKey::parse("home.mobile.de").unwrap() })
        );
        assert!(matches!(purge(""), Err(Refusal::Invalid(e)) if e.field == "segment"));
        assert!(matches!(purge("segment=cart.fridge.usa"), Err(Refusal::Invalid(e)) if e.field == "segment"));
    }

    #[test]
    fn cors_allows_configured_origins_only() {
        let c = config(&[("CORS_ORIGINS", "https://shop.example")]);
        let allowed = cors_headers(&c, Some("https://shop.example"), true).unwrap();
        assert!(allowed.contains(&("access-control-allow-origin", "https://shop.example".to_string())));
        assert!(allowed.iter().any(|(k, v)| *k == "access-control-allow-headers" && v.contains("authorization")));
        assert_eq!(cors_headers(&c, Some("https://evil.example"), false), Ok(vec![]));
        assert!(matches!(cors_headers(&c, Some("https://evil.example"), true), Err(Refusal::Forbidden(_))));
        assert_eq!(cors_headers(&c, None, false), Ok(vec![]));
        let any = config(&[("CORS_ORIGINS", "*")]);
        assert_eq!(cors_headers(&any, Some("https://x.example"), false).unwrap()[0].1, "https://x.example");
    }

    #[test]
    fn device_from_client_hints_before_the_user_agent() {
        let f = RequestFacts {
            method: "GET",
            path: "/recs",
            query: "",
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64)"),
            ch_mobile: Some("?1"),
            ..Default::default()
        };
        let Ok(Route::Recs { segment, .. }) = route(&f) else { panic!() };
        assert_eq!(segment.device.as_str(), "mobile");
    }

    #[test]
    fn origin_failures_are_503_with_a_code_naming_the_cause() {
        let (status, body) = origin_failure_response(&OriginFailure::Timeout(1500));
        assert_eq!(status, 503);
        assert!(body.contains("origin_timeout") && body.contains("1500 ms"), "{body}");
        assert!(
            origin_failure_response(&OriginFailure::Unreachable("refused".into())).1.contains("origin_unavailable")
        );
        let (status, body) = origin_failure_response(&OriginFailure::Status(500));
        assert_eq!(status, 503);
        assert!(body.contains("\"code\":\"origin_error\"") && body.contains("no copy"), "{body}");
    }

    #[test]
    fn lists_are_cut_to_n() {
        let list = r#"{"segment":"home.desktop.zz","source":"segment","model_version":"b","items":[{"id":"a","score":0.5},{"id":"b","score":0.25},{"id":"c","score":0.1}]}"#;
        let cut: RecList = serde_json::from_slice(&cut_list(list.as_bytes(), 2).unwrap()).unwrap();
        assert_eq!(cut.items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
        assert!(cut_list(b"not json", 2).is_err());
    }
}
