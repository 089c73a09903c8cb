//! CORS: which browser origins may read the edge's answers (`CORS_ORIGINS`).

use crate::config::EdgeConfig;
use crate::route::Refusal;

/// CORS headers for a request from browser origin `origin`: `Ok(headers)` (empty when the request
/// is not cross-origin), or a refusal when `origin` is not allowed.
pub fn cors_headers(
    config: &EdgeConfig,
    origin: Option<&str>,
    preflight: bool,
) -> Result<Vec<(&'static str, String)>, Refusal> {
    let Some(origin) = origin else { return Ok(Vec::new()) };
    let listed = config.cors_origins.iter().any(|o| o.eq_ignore_ascii_case(origin.trim_end_matches('/')));
    // `*` admits any origin to the shared lists, never with credentials: reflecting any origin
    // with `allow-credentials` would let every site read a signed-in visitor's personal list.
    let wildcard = !listed && config.cors_origins.iter().any(|o| o == "*");
    let allowed = listed || wildcard;
    if !allowed {
        // A simple cross-origin GET is answered without CORS headers (the browser withholds it);
        // a preflight is refused outright.
        return if preflight {
            Err(Refusal::Forbidden(format!("origin {origin:?} is not in CORS_ORIGINS")))
        } else {
            Ok(Vec::new())
        };
    }
    let mut headers = if wildcard {
        vec![("access-control-allow-origin", "*".to_string())]
    } else {
        vec![
            ("access-control-allow-origin", origin.to_string()),
            ("access-control-allow-credentials", "true".to_string()),
            ("vary", "Origin".to_string()),
        ]
    };
    headers.push(("access-control-expose-headers", "x-cache, x-request-id, server-timing".to_string()));
    if preflight {
        headers.push(("access-control-allow-methods", "GET, HEAD, OPTIONS".to_string()));
        // Without credentials a cross-origin caller has no token to send.
        let allowed_headers =
            if wildcard { "content-type, x-request-id" } else { "authorization, content-type, x-request-id" };
        headers.push(("access-control-allow-headers", allowed_headers.to_string()));
        headers.push(("access-control-max-age", "86400".to_string()));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::config;

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
        let wildcard = cors_headers(&any, Some("https://x.example"), true).unwrap();
        assert_eq!(wildcard[0], ("access-control-allow-origin", "*".to_string()), "never the caller's origin");
        assert!(wildcard.iter().all(|(k, _)| *k != "access-control-allow-credentials"), "{wildcard:?}");
        assert!(wildcard.iter().all(|(_, v)| !v.contains("authorization")), "{wildcard:?}");
        // A listed origin keeps credentials even when `*` is listed too.
        let both = config(&[("CORS_ORIGINS", "https://shop.example,*")]);
        assert!(
            cors_headers(&both, Some("https://shop.example"), false)
                .unwrap()
                .contains(&("access-control-allow-credentials", "true".to_string()))
        );
    }
}
