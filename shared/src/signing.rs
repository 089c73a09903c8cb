//! HMAC-SHA256 signing of edge → origin requests.
//!
//! The edge signs `METHOD \n path \n query \n timestamp` (the raw, percent-encoded path and query
//! exactly as sent, `query` without `?`, `timestamp` in Unix seconds) with the shared secret and
//! sends the timestamp and the lowercase hex signature in [`TIMESTAMP_HEADER`] and
//! [`SIGNATURE_HEADER`]. The origin recomputes it and accepts the request only if the signature
//! matches (compared in constant time) and the timestamp is within [`DEFAULT_WINDOW_SECS`] of its
//! own clock. Callers pass the time in: nothing here reads a clock.
//!
//! **One secret, separate keys.** The deployment holds one master secret (`CASCADE_SECRET` on the
//! origin, `ORIGIN_SECRET` on the edge); [`Keys::derive`] turns it into one key per use with
//! HKDF-SHA256 (RFC 5869): edge request signatures and visitor tokens never share a key, so the
//! login service, which mints visitor tokens, holds the token key only and cannot sign requests
//! to the origin. The message prefixes (`cascade-user-token\n` against `METHOD\n`) were already
//! distinct; the keys now are too.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header carrying the signing time, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-cascade-timestamp";
/// Header carrying the lowercase hex HMAC-SHA256.
pub const SIGNATURE_HEADER: &str = "x-cascade-signature";
/// How far the signing time may be from the verifier's clock, either way.
pub const DEFAULT_WINDOW_SECS: u64 = 300;
/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// HKDF salt: names this scheme and its version.
const KEY_SALT: &[u8] = b"cascade-keys-v1";

/// HKDF-SHA256 (RFC 5869) with one block of output: `T(1) = HMAC(PRK, info || 0x01)`, where
/// `PRK = HMAC(salt, ikm)`.
pub fn hkdf_sha256(salt: &[u8], ikm: &[u8], info: &[u8]) -> [u8; 32] {
    let keyed = |key: &[u8]| {
        <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
    };
    let mut extract = keyed(salt);
    extract.update(ikm);
    let prk = extract.finalize().into_bytes();
    let mut expand = keyed(&prk);
    expand.update(info);
    expand.update(&[1]);
    expand.finalize().into_bytes().into()
}

/// The keys one master secret yields (see the module docs). `Debug` shows no key material.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    /// Signs edge → origin requests (`info` = `edge-request`).
    pub edge_requests: [u8; 32],
    /// Signs visitor tokens (`info` = `visitor-token`): the key the login service holds.
    pub visitor_tokens: [u8; 32],
}

impl Keys {
    /// Derives every key from `master`.
    pub fn derive(master: &[u8]) -> Self {
        Keys {
            edge_requests: hkdf_sha256(KEY_SALT, master, b"edge-request"),
            visitor_tokens: hkdf_sha256(KEY_SALT, master, b"visitor-token"),
        }
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(derived; not shown)")
    }
}

/// Why a request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature or timestamp header.
    #[error("missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")]
    Missing,
    /// The timestamp is not an integer.
    #[error("{TIMESTAMP_HEADER} is not a Unix timestamp")]
    BadTimestamp,
    /// The timestamp is outside the window.
    #[error("signature timestamp is {skew_secs} s away from the server clock (window {window_secs} s)")]
    Expired {
        /// Distance from the verifier's clock.
        skew_secs: u64,
        /// The allowed distance.
        window_secs: u64,
    },
    /// The signature does not match.
    #[error("signature does not match")]
    Mismatch,
}

/// The exact bytes that are signed.
pub fn canonical_request(method: &str, path: &str, query: &str, timestamp: u64) -> String {
    format!("{}\n{}\n{}\n{}", method.to_ascii_uppercase(), path, query, timestamp)
}

fn mac(secret: &[u8], message: &str) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(message.as_bytes());
    mac
}

/// Signs a request; returns the lowercase hex signature.
pub fn sign(secret: &[u8], method: &str, path: &str, query: &str, timestamp: u64) -> String {
    hex::encode(mac(secret, &canonical_request(method, path, query, timestamp)).finalize().into_bytes())
}

/// The query parameter that carries a signed request's body digest ([`body_digest`]).
pub const BODY_DIGEST_PARAM: &str = "body_sha256";

/// Lowercase hex SHA-256 of a request body. A signature covers method, path, query and time, not
/// a body: a signed request with a body (the edge forwarding a visitor's events) carries this in
/// its query as `body_sha256=…`, so the signature covers the body too, and the verifier compares it
/// with the body it received.
pub fn body_digest(body: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(Sha256::digest(body))
}

/// Whether two secrets (bearer keys, admin tokens) are equal, in time that depends only on their
/// lengths, never on where they first differ. The one comparison both the edge and the origin use.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A decimal number in its one canonical spelling: digits only, no sign, no leading zero (`u64`'s
/// `FromStr` also takes `+7` and `007`). A signed number must have one spelling, or a header can
/// be rewritten without breaking its signature (found by fuzzing: `tests/fuzz/corpus/tokens`).
pub fn parse_canonical_u64(text: &str) -> Option<u64> {
    let canonical =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text.len() == 1 || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

/// What a signature covers besides the timestamp: the method and the raw path and query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTarget<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Raw (percent-encoded) path.
    pub path: &'a str,
    /// Raw query, without `?`.
    pub query: &'a str,
}

/// Verifies a request's signature headers against `now` (Unix seconds).
pub fn verify(
    secret: &[u8],
    target: RequestTarget<'_>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    now: u64,
    window_secs: u64,
) -> Result<(), SignatureError> {
    let RequestTarget { method, path, query } = target;
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(SignatureError::Missing);
    };
    let timestamp = parse_canonical_u64(timestamp.trim()).ok_or(SignatureError::BadTimestamp)?;
    let skew_secs = now.abs_diff(timestamp);
    if skew_secs > window_secs {
        return Err(SignatureError::Expired { skew_secs, window_secs });
    }
    let signature = hex::decode(signature.trim()).map_err(|_| SignatureError::Mismatch)?;
    mac(secret, &canonical_request(method, path, query, timestamp))
        .verify_slice(&signature)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn target(query: &str) -> RequestTarget<'_> {
        RequestTarget { method: "GET", path: "/v1/segments/home.desktop.us/recs", query }
    }

    fn check(ts: &str, sig: &str, now: u64) -> Result<(), SignatureError> {
        verify(SECRET, target("n=100"), Some(ts), Some(sig), now, 300)
    }

    #[test]
    fn round_trip_and_tampering() {
        let sig = sign(SECRET, "GET", "/v1/segments/home.desktop.us/recs", "n=100", 1_000);
        assert_eq!(check("1000", &sig, 1_100), Ok(()));
        assert_eq!(check("1001", &sig, 1_100), Err(SignatureError::Mismatch));
        assert!(check("1000", &sig.replace('a', "b"), 1_100).is_err());
        let other_query = verify(SECRET, target("n=99"), Some("1000"), Some(&sig), 1_000, 300);
        assert_eq!(other_query, Err(SignatureError::Mismatch));
    }

    #[test]
    fn hkdf_matches_rfc_5869_and_keys_are_separate() {
        // RFC 5869, test case 1 (SHA-256): the first 32 bytes of OKM.
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        assert_eq!(
            hex::encode(hkdf_sha256(&salt, &ikm, &info)),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        );
        let keys = Keys::derive(SECRET);
        assert_ne!(keys.edge_requests, keys.visitor_tokens);
        assert_ne!(&keys.edge_requests[..], SECRET);
        assert_eq!(keys, Keys::derive(SECRET), "deterministic");
        assert!(!format!("{keys:?}").contains(&hex::encode(keys.edge_requests)[..8]));
    }

    #[test]
    fn constant_time_equality() {
        assert!(constant_time_eq(b"internal-key-0123", b"internal-key-0123"));
        assert!(!constant_time_eq(b"internal-key-0123", b"internal-key-0124"));
        assert!(!constant_time_eq(b"internal-key-0123", b"internal-key-012"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn numbers_have_one_spelling() {
        assert_eq!(parse_canonical_u64("1000"), Some(1000));
        assert_eq!(parse_canonical_u64("0"), Some(0));
        for other in ["+1000", "01000", "", " 1", "1e3", "18446744073709551616"] {
            assert_eq!(parse_canonical_u64(other), None, "{other:?}");
        }
        let sig = sign(SECRET, "GET", "/v1/segments/home.desktop.us/recs", "n=100", 1_000);
        assert_eq!(check("+1000", &sig, 1_000), Err(SignatureError::BadTimestamp));
        assert_eq!(check("01000", &sig, 1_000), Err(SignatureError::BadTimestamp));
    }

    #[test]
    fn window() {
        let sig = sign(SECRET, "GET", "/v1/segments/home.desktop.us/recs", "n=100", 1_000);
        assert_eq!(check("1000", &sig, 1_300), Ok(()));
        assert_eq!(check("1000", &sig, 1_301), Err(SignatureError::Expired { skew_secs: 301, window_secs: 300 }));
        assert_eq!(check("1000", &sig, 699), Err(SignatureError::Expired { skew_secs: 301, window_secs: 300 }));
        assert_eq!(check("soon", &sig, 1_000), Err(SignatureError::BadTimestamp));
        let missing = verify(SECRET, target(""), None, Some(&sig), 1_000, 300);
        assert_eq!(missing, Err(SignatureError::Missing));
    }
}
