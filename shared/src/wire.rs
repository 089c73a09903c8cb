//! The JSON both sides exchange: recommendation lists and errors; events live in
//! [`crate::events`] and are re-exported here.

use serde::{Deserialize, Serialize};

use crate::validate::FieldError;

/// Where a list came from. Every response names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The origin's in-process cache.
    CacheL1,
    /// The origin's Redis cache.
    CacheL2,
    /// Retrieved and ranked for this request.
    Realtime,
    /// The user's list from the offline job.
    Precomputed,
    /// The list of the user's segment.
    Segment,
    /// The global popular list.
    Popular,
}

impl Source {
    /// The JSON and metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::CacheL1 => "cache_l1",
            Source::CacheL2 => "cache_l2",
            Source::Realtime => "realtime",
            Source::Precomputed => "precomputed",
            Source::Segment => "segment",
            Source::Popular => "popular",
        }
    }
}

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecItem {
    /// Item id.
    pub id: String,
    /// The ranking model's score (higher is better); lists are sorted by it, descending.
    pub score: f32,
    /// Display title, when the bundle knows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Where it was shown, 1 for the first item of the list (0 in lists stored before positions).
    #[serde(default)]
    pub position: u32,
}

/// A recommendation list: the body of every recs response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecList {
    /// The user it is for (absent for segment lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The canonical segment of the request's context.
    pub segment: String,
    /// Where the list came from.
    pub source: Source,
    /// Version id of the model bundle that ranked it.
    pub model_version: String,
    /// The items, best first.
    pub items: Vec<RecItem>,
    /// The id of this served list ([`crate::rec_id`]): events may cite it. The origin makes one per
    /// answer; a segment list stored at the edge keeps the id it was stored with (one id per
    /// stored list). Empty in lists stored before rec ids.
    #[serde(default)]
    pub rec_id: String,
    /// The A/B variant that served it, when an experiment is running (origin `[[variants]]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl RecList {
    /// Keeps the first `n` items (the edge caches the longest list and cuts it per request);
    /// positions stay as they were (1..=n).
    pub fn truncate(&mut self, n: usize) {
        self.items.truncate(n);
    }

    /// Numbers the items from 1, in order.
    pub fn number_positions(&mut self) {
        for (index, item) in self.items.iter_mut().enumerate() {
            item.position = u32::try_from(index + 1).unwrap_or(u32::MAX);
        }
    }
}

/// The error body: `{"error": {"code": "...", "message": "...", "field": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `invalid_parameter`, `unauthorized`, `unavailable`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The offending field, for a caller's mistake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorBody {
    /// An error body.
    pub fn new(code: &str, message: impl Into<String>, field: Option<String>) -> Self {
        ErrorBody { error: ErrorDetail { code: code.to_string(), message: message.into(), field } }
    }

    /// The body for a caller's mistake.
    pub fn invalid(error: &FieldError) -> Self {
        ErrorBody::new("invalid_parameter", error.to_string(), Some(error.field.clone()))
    }

    /// Serialises to JSON (infallible for this type).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| r#"{"error":{"code":"internal","message":"error"}}"#.to_string())
    }
}

pub use crate::events::{
    Event, EventKind, EventsAccepted, MAX_EVENT_FUTURE_MS, MAX_EVENTS_PER_BATCH, parse_events, validate_event,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_labels_match_serde() {
        for source in
            [Source::CacheL1, Source::CacheL2, Source::Realtime, Source::Precomputed, Source::Segment, Source::Popular]
        {
            assert_eq!(serde_json::to_string(&source).unwrap(), format!("\"{}\"", source.as_str()));
        }
    }
}
