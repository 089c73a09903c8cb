//! Validation of what callers send: ids, `n`, and the recommendation query string.
//!
//! Both sides use these so that the edge rejects exactly what the origin would.

use crate::segment::{Country, Device, Page, SegmentKey};

/// Longest accepted user or item id, in bytes.
pub const MAX_ID_LEN: usize = 64;
/// `n` when the caller gives none.
pub const DEFAULT_N: usize = 20;
/// Largest `n`; also the length of the full list the edge caches per segment.
pub const MAX_N: usize = 100;
/// Longest query string the edge and origin will parse, in bytes.
pub const MAX_QUERY_LEN: usize = 1024;

/// A caller's mistake, naming the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field (query parameter, path segment or JSON member) that is wrong.
    pub field: String,
    /// What is wrong with it, in words a caller can act on.
    pub message: String,
}

impl FieldError {
    /// A new error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// Checks a user or item id: 1 to [`MAX_ID_LEN`] bytes of `A-Z a-z 0-9 _ - .`.
///
/// The allowed characters never need escaping in a URL path or a Redis key, and exclude `:`,
/// the key schema's separator.
pub fn validate_id(field: &str, id: &str) -> Result<(), FieldError> {
    if id.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(FieldError::new(field, format!("must be at most {MAX_ID_LEN} bytes, got {}", id.len())));
    }
    if let Some(bad) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
        return Err(FieldError::new(field, format!("must contain only A-Z, a-z, 0-9, '_', '-' or '.'; found {bad:?}")));
    }
    Ok(())
}

/// Longest `x-request-id` kept from a caller; a longer or malformed one is replaced by a new id.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Whether a caller's `x-request-id` may be kept and logged as given: 1 to
/// [`MAX_REQUEST_ID_LEN`] visible ASCII characters (no spaces or control characters, which could
/// forge log lines or break headers). The edge and the origin apply the same rule.
pub fn is_valid_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Parses `n`: absent means [`DEFAULT_N`]; otherwise an integer in `1..=MAX_N`.
pub fn parse_n(value: Option<&str>) -> Result<usize, FieldError> {
    let Some(value) = value else { return Ok(DEFAULT_N) };
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_N).contains(&n) => Ok(n),
        _ => Err(FieldError::new("n", format!("must be an integer from 1 to {MAX_N}, got {:?}", truncate(value, 32)))),
    }
}

fn truncate(value: &str, max_chars: usize) -> String {
    value.chars().take(max_chars).collect()
}

/// The parameters of a recommendation request (`?n=&page=&device=&country=`), validated.
///
/// Unknown parameters are ignored; unknown `page`/`device`/`country` values fall back to the
/// segment defaults (they never make a new cache key); a bad `n` is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecsQuery {
    /// How many items to return.
    pub n: usize,
    /// The context: page, device, country.
    pub segment: SegmentKey,
}

impl RecsQuery {
    /// Parses a raw (percent-encoded) query string, without the leading `?`.
    pub fn parse(query: &str) -> Result<Self, FieldError> {
        let params = QueryParams::parse(query)?;
        Ok(RecsQuery {
            n: parse_n(params.get("n"))?,
            segment: SegmentKey {
                page: Page::parse_or_default(params.get("page")),
                device: Device::parse_or_default(params.get("device")),
                country: Country::parse_or_default(params.get("country")),
            },
        })
    }
}

/// Decoded query parameters; the first occurrence of a name wins.
#[derive(Debug, Clone, Default)]
pub struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    /// Decodes a raw query string of at most [`MAX_QUERY_LEN`] bytes.
    pub fn parse(query: &str) -> Result<Self, FieldError> {
        if query.len() > MAX_QUERY_LEN {
            return Err(FieldError::new("query", format!("must be at most {MAX_QUERY_LEN} bytes")));
        }
        Ok(QueryParams(
            form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect(),
        ))
    }

    /// The first value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("user_id", "u-42_x.y").is_ok());
        assert_eq!(validate_id("user_id", "").unwrap_err().field, "user_id");
        assert!(validate_id("user_id", "a:b").is_err());
        assert!(validate_id("user_id", "a b").is_err());
        assert!(validate_id("user_id", "é").is_err());
        assert!(validate_id("user_id", &"a".repeat(MAX_ID_LEN)).is_ok());
        assert!(validate_id("user_id", &"a".repeat(MAX_ID_LEN + 1)).is_err());
    }

    #[test]
    fn request_ids() {
        assert!(is_valid_request_id("req-1f2e"));
        assert!(is_valid_request_id(&"r".repeat(MAX_REQUEST_ID_LEN)));
        for bad in ["", "has space", "line\nbreak", "é", &"r".repeat(MAX_REQUEST_ID_LEN + 1)] {
            assert!(!is_valid_request_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn n_bounds() {
        assert_eq!(parse_n(None), Ok(DEFAULT_N));
        assert_eq!(parse_n(Some("1")), Ok(1));
        assert_eq!(parse_n(Some("100")), Ok(100));
        for bad in ["0", "101", "-1", "ten", "", "1e3"] {
            assert_eq!(parse_n(Some(bad)).unwrap_err().field, "n", "{bad}");
        }
    }

    #[test]
    fn query_ignores_unknown_fields_and_defaults_unknown_values() {
        let q = RecsQuery::parse("n=5&page=BROWSE&device=toaster&utm_source=x&country=de").unwrap();
        assert_eq!(q.n, 5);
        assert_eq!(q.segment.to_string(), "browse.desktop.de");
        assert_eq!(RecsQuery::parse("").unwrap().segment.to_string(), "home.desktop.zz");
        assert!(RecsQuery::parse(&"a".repeat(MAX_QUERY_LEN + 1)).is_err());
    }
}
