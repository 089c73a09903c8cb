//! Who may call the origin: the edge with a signed request, internal callers with a bearer key.
//!
//! Signatures are `cascade_shared::signing` (HMAC-SHA256 over method, path, query and timestamp,
//! under the edge-request key derived from `CASCADE_SECRET`; visitor tokens use another);
//! bearer keys are compared in constant time (`cascade_shared::signing::constant_time_eq`, the
//! same comparison the edge uses). Anything else is an [`AuthError`] (the HTTP layer answers 401).
//! Nothing here knows HTTP types: the middleware hands over the header values it found.

use cascade_shared::signing::{Keys, RequestTarget, SIGNATURE_HEADER, TIMESTAMP_HEADER, constant_time_eq, verify};

/// Credentials that do not admit the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A bearer key that is not configured.
    #[error("bearer key not recognised")]
    UnknownKey,
    /// No bearer key, and a missing, stale or wrong signature.
    #[error("{0}: sign the request ({TIMESTAMP_HEADER}, {SIGNATURE_HEADER}) or send a bearer key")]
    BadSignature(String),
    /// An edge signature on a route for internal callers only.
    #[error("{0} takes a bearer key; an edge signature is not enough")]
    InternalOnly(&'static str),
}

/// The credential headers of one request, as the HTTP layer found them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// `Authorization`.
    pub authorization: Option<&'a str>,
    /// The signature's timestamp header.
    pub timestamp: Option<&'a str>,
    /// The signature header.
    pub signature: Option<&'a str>,
}

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
    keys: Keys,
    api_keys: Vec<Vec<u8>>,
    window_secs: u64,
}

impl Auth {
    /// Credentials: the edge's secret, internal keys, and the signature window.
    pub fn new(secret: &str, api_keys: &[String], window_secs: u64) -> Self {
        Auth {
            keys: Keys::derive(secret.as_bytes()),
            api_keys: api_keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
            window_secs,
        }
    }

    /// A signed-in visitor token for `user_id` (`cascade_shared::token`), valid until
    /// `expires_at`: the edge verifies it with the same secret.
    pub fn issue_user_token(&self, user_id: &str, expires_at: u64) -> String {
        cascade_shared::token::issue(&self.keys.visitor_tokens, user_id, expires_at)
    }

    /// Checks a request's credentials for `target` at `now` (Unix seconds).
    pub fn check(
        &self,
        target: RequestTarget<'_>,
        credentials: Credentials<'_>,
        now: u64,
    ) -> Result<Caller, AuthError> {
        if let Some(value) = credentials.authorization {
            let key = value.strip_prefix("Bearer ").unwrap_or("").trim().as_bytes();
            return if self.api_keys.iter().any(|known| constant_time_eq(known, key)) {
                Ok(Caller::Internal)
            } else {
                Err(AuthError::UnknownKey)
            };
        }
        verify(&self.keys.edge_requests, target, credentials.timestamp, credentials.signature, now, self.window_secs)
            .map(|()| Caller::Edge)
            .map_err(|e| AuthError::BadSignature(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cascade_shared::signing::sign;

    const SECRET: &str = "test-secret-0123456789";

    fn target<'a>(path: &'a str, query: &'a str) -> RequestTarget<'a> {
        RequestTarget { method: "GET", path, query }
    }

    #[test]
    fn signature_bearer_and_refusals() {
        let auth = Auth::new(SECRET, &["internal-key-0123456789".to_string()], 300);
        let none = Credentials::default();
        assert!(matches!(auth.check(target("/v1/x", ""), none, 1000), Err(AuthError::BadSignature(_))));
        let sig = sign(&Keys::derive(SECRET.as_bytes()).edge_requests, "GET", "/v1/x", "n=1", 1000);
        let signed = Credentials { authorization: None, timestamp: Some("1000"), signature: Some(&sig) };
        assert_eq!(auth.check(target("/v1/x", "n=1"), signed, 1010).unwrap(), Caller::Edge);
        assert!(auth.check(target("/v1/x", "n=1"), signed, 2000).is_err(), "stale");
        assert!(auth.check(target("/v1/y", "n=1"), signed, 1010).is_err(), "other path");

        let bearer = Credentials { authorization: Some("Bearer internal-key-0123456789"), ..Credentials::default() };
        assert_eq!(auth.check(target("/v1/x", ""), bearer, 0).unwrap(), Caller::Internal);
        let wrong = Credentials { authorization: Some("Bearer internal-key-012345678"), ..Credentials::default() };
        assert_eq!(auth.check(target("/v1/x", ""), wrong, 0), Err(AuthError::UnknownKey));
    }
}
