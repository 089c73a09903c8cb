//! Calls to the origin: signed requests for a segment's full list or a visitor's own list, why a
//! call gave no list, and cutting a full list to `n`.

use cascade_shared::segment::SegmentKey;
use cascade_shared::signing::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
use cascade_shared::validate::MAX_N;
use cascade_shared::wire::RecList;

use crate::config::EdgeConfig;

/// A signed request to the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginRequest {
    /// `GET` (lists) or `POST` (a visitor's events).
    pub method: &'static str,
    /// Full URL.
    pub url: String,
    /// Headers to send (signature, timestamp, request id).
    pub headers: Vec<(String, String)>,
    /// The body, for a `POST` (JSON).
    pub body: Option<Vec<u8>>,
}

impl OriginRequest {
    /// The same request with a JSON body.
    pub fn with_body(mut self, body: Vec<u8>) -> Self {
        self.headers.push(("content-type".into(), "application/json".into()));
        OriginRequest { body: Some(body), ..self }
    }
}

/// What follows one visitor request into the origin: its request id, and the trace position the
/// origin continues (`traceparent`: the trace, with the edge's span as the parent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    /// `x-request-id`.
    pub request_id: String,
    /// `traceparent`, when the request is traced.
    pub traceparent: Option<String>,
}

impl Ids {
    /// A request id without a trace.
    pub fn new(request_id: &str) -> Self {
        Ids { request_id: request_id.to_string(), traceparent: None }
    }
}

/// A request to the origin signed at `now_secs` (method, path, query and time). The trace header
/// is not signed: a forged one only misplaces spans.
pub fn signed(
    config: &EdgeConfig,
    method: &'static str,
    path: String,
    query: String,
    now_secs: u64,
    ids: &Ids,
) -> OriginRequest {
    let signature = sign(&config.keys.edge_requests, method, &path, &query, now_secs);
    let mut headers = vec![
        (TIMESTAMP_HEADER.to_string(), now_secs.to_string()),
        (SIGNATURE_HEADER.to_string(), signature),
        ("x-request-id".to_string(), ids.request_id.clone()),
    ];
    if let Some(traceparent) = &ids.traceparent {
        headers.push((cascade_shared::trace::HEADER.to_string(), traceparent.clone()));
    }
    OriginRequest { method, url: format!("{}{path}?{query}", config.origin_url), headers, body: None }
}

/// The origin call for a segment's full list, signed at `now_secs`.
pub fn segment_request(config: &EdgeConfig, segment: &SegmentKey, now_secs: u64, ids: &Ids) -> OriginRequest {
    signed(config, "GET", format!("/v1/segments/{segment}/recs"), format!("n={MAX_N}"), now_secs, ids)
}

/// The origin call for a signed-in visitor's own list in their segment's context.
pub fn user_request(
    config: &EdgeConfig,
    user_id: &str,
    segment: &SegmentKey,
    n: usize,
    now_secs: u64,
    ids: &Ids,
) -> OriginRequest {
    let query = format!(
        "n={n}&page={}&device={}&country={}",
        segment.page.as_str(),
        segment.device.as_str(),
        segment.country.as_str()
    );
    signed(config, "GET", format!("/v1/users/{user_id}/recs"), query, now_secs, ids)
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

/// `body` cut to `n` items as a JSON string, or why it is not a list.
pub fn checked(body: &[u8], n: usize) -> Result<String, OriginFailure> {
    cut_list(body, n).map(|cut| String::from_utf8_lossy(&cut).into_owned()).map_err(OriginFailure::BadBody)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::config;

    #[test]
    fn origin_requests_are_signed() {
        let config = config(&[]);
        let segment = SegmentKey::parse("home.desktop.us").unwrap();
        let check = |request: &OriginRequest, path: &str, query: &str| {
            assert_eq!(request.url, format!("http://127.0.0.1:8080{path}?{query}"));
            let get = |name: &str| request.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
            let target = cascade_shared::signing::RequestTarget { method: "GET", path, query };
            let verified = cascade_shared::signing::verify(
                &cascade_shared::signing::Keys::derive(b"0123456789abcdef").edge_requests,
                target,
                get(TIMESTAMP_HEADER),
                get(SIGNATURE_HEADER),
                1_001,
                300,
            );
            assert_eq!(verified, Ok(()));
        };
        check(
            &segment_request(&config, &segment, 1_000, &Ids::new("rid")),
            "/v1/segments/home.desktop.us/recs",
            "n=100",
        );
        check(
            &user_request(&config, "u-9.x", &segment, 7, 1_000, &Ids::new("rid")),
            "/v1/users/u-9.x/recs",
            "n=7&page=home&device=desktop&country=us",
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
