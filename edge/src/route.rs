//! What a request is: the route, the visitor's segment, and the refusals decided before any cache
//! or origin work (bad input, credentials, method, length).

use cascade_shared::segment::{Country, Device, Page, SegmentKey};
use cascade_shared::signing::constant_time_eq;
use cascade_shared::validate::{FieldError, QueryParams, parse_n};

use crate::config::EdgeConfig;

/// Longest URL (path and query) the edge accepts.
pub const MAX_URL_LEN: usize = 2048;

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
    /// `POST /admin/purge?segment=…` (or `segment=*`): a new purge generation for a segment (or
    /// for all), and the segment's stored list deleted in this data centre.
    Purge {
        /// The segment to purge; `None`: every segment.
        segment: Option<SegmentKey>,
    },
    /// `POST /events`: a signed-in visitor's events, forwarded to the origin.
    Events,
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
    /// 429: the rate limit for this caller (a signed-in visitor, or an admin client's address)
    /// is spent; retry after this many seconds.
    RateLimited(u32),
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
                Refusal::Invalid(FieldError::new("segment", "required, e.g. segment=home.desktop.us, or * for all"))
            })?;
            if raw == "*" {
                return Ok(Route::Purge { segment: None });
            }
            let segment =
                SegmentKey::parse(raw).map_err(|e| Refusal::Invalid(FieldError::new("segment", e.to_string())))?;
            Ok(Route::Purge { segment: Some(segment) })
        }
        ("POST", "/events") => Ok(Route::Events),
        ("GET" | "HEAD", "/") => Ok(Route::Demo),
        ("GET", "/healthz") => Ok(Route::Health),
        (_, "/recs" | "/healthz" | "/" | "/admin/purge" | "/events") => Err(Refusal::MethodNotAllowed),
        _ => Err(Refusal::NotFound),
    }
}

/// Checks an admin route's `Authorization: Bearer` against `ADMIN_TOKEN`, in constant time.
pub fn check_admin(config: &EdgeConfig, authorization: Option<&str>) -> Result<(), Refusal> {
    let Some(expected) = &config.admin_token else {
        return Err(Refusal::Forbidden("admin routes are disabled: set the ADMIN_TOKEN secret".into()));
    };
    let given = authorization.and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("").as_bytes();
    if constant_time_eq(given, expected.as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::Unauthorized("admin routes need Authorization: Bearer <ADMIN_TOKEN>".into()))
    }
}

/// The user a visitor token names, verified at `now_secs`; a bad token is a 401, never a
/// silent fall back to the shared list (the visitor would not know they were signed out).
pub fn visitor(config: &EdgeConfig, token: &str, now_secs: u64) -> Result<String, Refusal> {
    cascade_shared::token::verify(&config.keys.visitor_tokens, token, now_secs)
        .map(str::to_string)
        .map_err(|e| Refusal::Unauthorized(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::config;
    use crate::respond::refusal_response;

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

    #[test]
    fn the_documented_operations_are_the_routes() {
        // docs/edge-openapi.json (`cascade openapi --edge`) against this router, both ways: each
        // documented operation is routed, and each path and method routed here is documented.
        let doc: serde_json::Value = serde_json::from_str(include_str!("../../docs/edge-openapi.json")).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        let query = |path: &str| if path == "/admin/purge" { "segment=home.desktop.us" } else { "" };
        for (path, item) in paths {
            for method in item.as_object().unwrap().keys() {
                let method = method.to_uppercase();
                let routed = route(&RequestFacts { method: &method, ..facts(path, query(path)) });
                assert!(
                    matches!(routed, Ok(ref r) if *r != Route::Preflight),
                    "{method} {path} is documented: {routed:?}"
                );
            }
        }
        let probes = ["/", "/recs", "/events", "/healthz", "/admin/purge", "/admin", "/v1/events", "/purge", "/recs/"];
        for path in probes {
            for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
                if route(&RequestFacts { method, ..facts(path, query(path)) }).is_ok() {
                    let documented = paths.get(path).and_then(|item| item.get(method.to_lowercase()));
                    assert!(documented.is_some(), "{method} {path} is routed but not in docs/edge-openapi.json");
                }
            }
        }
    }

    #[test]
    fn visitor_tokens_and_admin_auth() {
        let c = config(&[("ADMIN_TOKEN", "admin-token-0123456789")]);
        let keys = cascade_shared::signing::Keys::derive(b"0123456789abcdef");
        let token = cascade_shared::token::issue(&keys.visitor_tokens, "u7", 2_000);
        let raw_secret = cascade_shared::token::issue(b"0123456789abcdef", "u7", 2_000);
        assert!(matches!(visitor(&c, &raw_secret, 1_000), Err(Refusal::Unauthorized(_))), "the master signs nothing");
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
            Ok(Route::Purge { segment: Some(SegmentKey::parse("home.mobile.de").unwrap()) })
        );
        assert_eq!(purge("segment=*"), Ok(Route::Purge { segment: None }));
        assert!(matches!(purge(""), Err(Refusal::Invalid(e)) if e.field == "segment"));
        assert!(matches!(purge("segment=cart.fridge.usa"), Err(Refusal::Invalid(e)) if e.field == "segment"));
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
}
