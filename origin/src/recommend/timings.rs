//! Stage durations of one request: recorded by the request path, exported by the HTTP layer as
//! `Server-Timing` (`crate::http::server_timing`) and by the stage histogram.

use std::time::Duration;

/// Stage durations of one request, in the order they were recorded.
#[derive(Debug, Default, Clone)]
pub struct Timings(pub Vec<(&'static str, Duration)>);

impl Timings {
    /// Records a stage.
    pub fn add(&mut self, stage: &'static str, duration: Duration) {
        self.0.push((stage, duration));
    }
}
