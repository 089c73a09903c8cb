//! Status and JSON body for every answer the edge gives without a list: refusals and origin
//! failures with nothing cached. The error body is `cascade_shared::wire::ErrorBody`, the origin's.

use cascade_shared::wire::ErrorBody;

use crate::origin::OriginFailure;
use crate::route::{MAX_URL_LEN, Refusal};

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

/// Status and JSON body when a visitor's events could not reach the origin: 503, nothing recorded.
pub fn events_failure_response(failure: &OriginFailure) -> (u16, String) {
    let code = match failure {
        OriginFailure::Timeout(_) => "origin_timeout",
        OriginFailure::Unreachable(_) => "origin_unavailable",
        OriginFailure::Status(_) | OriginFailure::BadBody(_) => "origin_error",
    };
    let message = format!("the origin {failure}; the events were not recorded; retry");
    (503, ErrorBody::new(code, message, None).to_json())
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
        Refusal::MethodNotAllowed => {
            (405, ErrorBody::new("method_not_allowed", "use GET (POST for /events and /admin/purge)", None).to_json())
        }
        Refusal::UriTooLong => {
            (414, ErrorBody::new("uri_too_long", format!("URL longer than {MAX_URL_LEN} bytes"), None).to_json())
        }
        Refusal::RateLimited(seconds) => {
            let message = format!("too many requests from this caller; retry in {seconds} s");
            (429, ErrorBody::new("rate_limited", message, None).to_json())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_rate_limit_is_429_saying_when_to_retry() {
        let (status, body) = refusal_response(&Refusal::RateLimited(60));
        assert_eq!(status, 429);
        assert!(body.contains("\"code\":\"rate_limited\"") && body.contains("60 s"), "{body}");
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
        let (status, body) = events_failure_response(&OriginFailure::Timeout(1500));
        assert_eq!(status, 503);
        assert!(body.contains("origin_timeout") && body.contains("not recorded"), "{body}");
    }
}
