//! Stage durations of one request: recorded by the request path, exported by the HTTP layer as
//! `Server-Timing` (`crate::http::server_timing`), by the stage histogram, and as trace spans
//! (`crate::otel`) when tracing is on.

use std::time::{Duration, Instant};

/// One stage: when it started and how long it took. A stage named `a.b` is part of the latest
/// stage named `a` (the ranker's `rank.queue` and `rank.inference` are parts of `rank`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    /// The stage's name (`state`, `cache`, `embed`, `retrieve`, `rank`, `rank.queue`, ...).
    pub name: &'static str,
    /// When it started.
    pub start: Instant,
    /// How long it took.
    pub duration: Duration,
}

/// Stage durations of one request, in the order they were recorded.
#[derive(Debug, Default, Clone)]
pub struct Timings(pub Vec<Stage>);

impl Timings {
    /// Records a stage that ends now.
    pub fn add(&mut self, name: &'static str, duration: Duration) {
        let now = Instant::now();
        self.0.push(Stage { name, start: now.checked_sub(duration).unwrap_or(now), duration });
    }

    /// Records a stage from `start` to `end`.
    pub fn add_between(&mut self, name: &'static str, start: Instant, end: Instant) {
        self.0.push(Stage { name, start, duration: end.saturating_duration_since(start) });
    }
}
