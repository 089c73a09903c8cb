//! Who may call the origin: the edge with a signed request, internal callers with a bearer key.
//!
//! Signatures are `cascade_shared::signing` (HMAC-SHA256 over method, path, query and timestamp);
//! bearer keys are compared in constant time. Anything else is a 401.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use cascade_shared::signing::{RequestTarget, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify};

use crate::error::AppError;

/// Who a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The edge, by signature.
    Edge,
    /// An internal service, by bearer key.
    Internal,
}

/// The credentials the origin accepts.
pub struct Auth {
    secret: Vec<u8>,
    api_keys: Vec<Vec<u8>>,
    window_secs: u64,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    /// Credentials: the edge's secret, internal keys, and the signature window.
    pub fn new(secret: &str, api_keys: &[String], window_secs: u64) -> Self {
        Auth {
            secret: secret.as_bytes().to_vec(),
            api_keys: api_keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
            window_secs,
        }
    }

    /// A signed-in visitor token for `user_id` (`cascade_shared::token`), valid until
    /// `expires_at`: the edge verifies it with the same secret.
    pub fn issue_user_token(&self, user_id: &str, expires_at: u64) -> String {
        cascade_shared::token::issue(&self.secret, user_id, expires_at)
    }

    /// Checks a request's credentials at `now` (Unix seconds).
    pub fn check(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        now: u64,
    ) -> Result<Caller, AppError> {
        if let Some(value) = headers.get(AUTHORIZATION) {
            let key = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("").trim().as_bytes();
            return if self.api_keys.iter().any(|known| constant_time_eq(known, key)) {
                Ok(Caller::Internal)
            } else {
                Err(AppError::Unauthorized("bearer key not recognised".into()))
            };
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        verify(
            &self.secret,
            RequestTarget { method, path, query },
            header(TIMESTAMP_HEADER),
            header(SIGNATURE_HEADER),
            now,
            self.window_secs,
        )
        .map(|()| Caller::Edge)
        .map_err(|e| {
            AppError::Unauthorized(format!(
                "{e}: sign the request ({TIMESTAMP_HEADER}, {SIGNATURE_HEADER}) or send a bearer key"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use cascade_shared::signing::sign;

    const SECRET: &str = "test-secret-0123456789";

    #[test]
    fn signature_bearer_and_refusals() {
        let auth = Auth::new(SECRET, &["internal-key-0123456789".to_string()], 300);
        let mut headers = HeaderMap::new();
        assert!(matches!(auth.check("GET", "/v1/x", "", &headers, 1000), Err(AppError::Unauthorized(_))));
        let sig = sign(SECRET.as_bytes(), "GET", "/v1/x", "n=1", 1000);
        headers.insert(TIMESTAMP_HEADER, HeaderValue::from_static("1000"));
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(&sig).unwrap());
        assert_eq!(auth.check("GET", "/v1/x", "n=1", &headers, 1010).unwrap(), Caller::Edge);
        assert!(auth.check("GET", "/v1/x", "n=1", &headers, 2000).is_err(), "stale");
        assert!(auth.check("GET", "/v1/y", "n=1", &headers, 1010).is_err(), "other path");

        let mut bearer = HeaderMap::new();
        bearer.insert(AUTHORIZATION, HeaderValue::from_static("Bearer internal-key-0123456789"));
        assert_eq!(auth.check("GET", "/v1/x", "", &bearer, 0).unwrap(), Caller::Internal);
        bearer.insert(AUTHORIZATION, HeaderValue::from_static("Bearer internal-key-012345678"));
        assert!(auth.check("GET", "/v1/x", "", &bearer, 0).is_err());
    }
}
