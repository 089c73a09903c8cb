//! Signed-in visitor tokens: the origin (or the site's login service, holding the same secret)
//! issues them; the edge verifies them before it forwards a visitor to the personal endpoint.
//!
//! Format: `v1.<user_id>.<expires_at>.<signature>` where `user_id` passes
//! [`validate_id`](crate::validate::validate_id) (it may contain dots, so the last two fields are
//! split from the right), `expires_at` is Unix seconds, and `signature` is the lowercase hex
//! HMAC-SHA256, under the visitor-token key ([`crate::signing::Keys`], derived from the deployment's
//! secret), of `cascade-user-token\nv1\n<user_id>\n<expires_at>`.
//! The prefix keeps a token from ever being a valid request signature and vice versa. Browsers send
//! it as `Authorization: Bearer <token>` or in the `cascade_token` cookie.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::validate::validate_id;

/// The cookie a browser may carry the token in.
pub const TOKEN_COOKIE: &str = "cascade_token";
/// Longest lifetime a token may be issued for, seconds (30 days).
pub const MAX_TOKEN_TTL_SECS: u64 = 30 * 86_400;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `v1.<user>.<expires>.<sig>`, or the user id is invalid.
    #[error("user token is malformed: {0}")]
    Malformed(String),
    /// Past its expiry.
    #[error("user token expired at {expires_at} (now {now})")]
    Expired {
        /// When it expired, Unix seconds.
        expires_at: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// The signature does not match.
    #[error("user token signature does not match")]
    Mismatch,
    /// Valid for longer than [`MAX_TOKEN_TTL_SECS`] from now.
    #[error("user token expires at {expires_at}, more than 30 days after now ({now})")]
    TooLong {
        /// When it would expire, Unix seconds.
        expires_at: u64,
        /// The verifier's clock.
        now: u64,
    },
}

fn mac(secret: &[u8], user_id: &str, expires_at: u64) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(format!("cascade-user-token\nv1\n{user_id}\n{expires_at}").as_bytes());
    mac
}

/// Issues a token for `user_id` valid until `expires_at` (Unix seconds).
pub fn issue(secret: &[u8], user_id: &str, expires_at: u64) -> String {
    let signature = hex::encode(mac(secret, user_id, expires_at).finalize().into_bytes());
    format!("v1.{user_id}.{expires_at}.{signature}")
}

/// Verifies a token at `now`; returns the user id it names.
pub fn verify<'a>(secret: &[u8], token: &'a str, now: u64) -> Result<&'a str, TokenError> {
    let rest = token.trim().strip_prefix("v1.").ok_or_else(|| TokenError::Malformed("expected a v1. prefix".into()))?;
    let mut fields = rest.rsplitn(3, '.');
    let (Some(signature), Some(expires_at), Some(user_id)) = (fields.next(), fields.next(), fields.next()) else {
        return Err(TokenError::Malformed("expected v1.<user_id>.<expires_at>.<signature>".into()));
    };
    validate_id("user_id", user_id).map_err(|e| TokenError::Malformed(e.to_string()))?;
    let expires_at = crate::signing::parse_canonical_u64(expires_at)
        .ok_or_else(|| TokenError::Malformed("expires_at is not Unix seconds".into()))?;
    let signature = hex::decode(signature).map_err(|_| TokenError::Mismatch)?;
    mac(secret, user_id, expires_at).verify_slice(&signature).map_err(|_| TokenError::Mismatch)?;
    if now > expires_at {
        return Err(TokenError::Expired { expires_at, now });
    }
    // No token outlives the longest lifetime one may be issued for: a token far in the future
    // (minted by a buggy or compromised issuer) would be a permanent credential.
    if expires_at - now > MAX_TOKEN_TTL_SECS {
        return Err(TokenError::TooLong { expires_at, now });
    }
    Ok(user_id)
}

/// Finds a token in an `Authorization` header (`Bearer <token>`) or a `Cookie` header.
pub fn from_headers<'a>(authorization: Option<&'a str>, cookie: Option<&'a str>) -> Option<&'a str> {
    let bearer = authorization
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    bearer.or_else(|| {
        cookie?.split(';').find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == TOKEN_COOKIE && !value.is_empty()).then_some(value)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef";

    #[test]
    fn round_trip_with_dots_in_the_user_id() {
        let token = issue(SECRET, "u-9.x", 2_000);
        assert!(token.starts_with("v1.u-9.x.2000."));
        assert_eq!(verify(SECRET, &token, 1_999), Ok("u-9.x"));
        assert_eq!(verify(SECRET, &token, 2_000), Ok("u-9.x"));
        assert_eq!(verify(SECRET, &token, 2_001), Err(TokenError::Expired { expires_at: 2_000, now: 2_001 }));
    }

    #[test]
    fn a_token_has_one_spelling() {
        // Found by fuzzing (tests/fuzz/corpus/tokens/leading-zero-expiry): `007` and `+7` parse as
        // 7, so the same signature covered several spellings of a token.
        let token = issue(SECRET, "u1", 2_000);
        let sig = token.rsplit('.').next().unwrap();
        for respelled in [format!("v1.u1.02000.{sig}"), format!("v1.u1.+2000.{sig}")] {
            assert!(matches!(verify(SECRET, &respelled, 1_000), Err(TokenError::Malformed(_))), "{respelled}");
        }
    }

    #[test]
    fn a_token_valid_for_more_than_30_days_is_refused() {
        let now = 1_000_000;
        let longest = issue(SECRET, "u1", now + MAX_TOKEN_TTL_SECS);
        assert_eq!(verify(SECRET, &longest, now), Ok("u1"));
        let forever = issue(SECRET, "u1", u64::MAX / 2);
        assert_eq!(verify(SECRET, &forever, now), Err(TokenError::TooLong { expires_at: u64::MAX / 2, now }));
    }

    #[test]
    fn forgeries_are_refused() {
        let token = issue(SECRET, "u1", 2_000);
        assert_eq!(verify(b"another-secret-xx", &token, 1_000), Err(TokenError::Mismatch));
        // Another user, or a later expiry, under the same signature.
        let sig = token.rsplit('.').next().unwrap();
        assert_eq!(verify(SECRET, &format!("v1.u2.2000.{sig}"), 1_000), Err(TokenError::Mismatch));
        assert_eq!(verify(SECRET, &format!("v1.u1.9999.{sig}"), 1_000), Err(TokenError::Mismatch));
        for bad in ["", "v2.u1.2000.ab", "v1.u1", "v1.u 1.2000.ab", "v1.u1.soon.ab"] {
            assert!(matches!(verify(SECRET, bad, 1_000), Err(TokenError::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn found_in_bearer_or_cookie() {
        assert_eq!(from_headers(Some("Bearer abc"), None), Some("abc"));
        assert_eq!(from_headers(None, Some("theme=dark; cascade_token=xyz; a=b")), Some("xyz"));
        assert_eq!(from_headers(Some("Basic abc"), Some("cascade_token=")), None);
        assert_eq!(from_headers(None, None), None);
    }
}
