//! Prometheus metrics, served as text at `/metrics`.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// Every metric the origin exports.
pub struct Metrics {
    registry: Registry,
    /// `cascade_http_requests_total{route,status}`.
    pub requests: IntCounterVec,
    /// `cascade_recs_source_total{source}`: which layer answered.
    pub sources: IntCounterVec,
    /// `cascade_fallbacks_total{reason}`: why the real-time path did not answer.
    pub fallbacks: IntCounterVec,
    /// `cascade_stage_seconds{stage}`: time per request-path stage.
    pub stage_seconds: HistogramVec,
    /// `cascade_requests_in_flight`.
    pub in_flight: IntGauge,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Names are unique constants below, so registration cannot collide.
    if let Err(error) = registry.register(Box::new(metric.clone())) {
        tracing::error!(%error, "metric registration failed");
    }
    metric
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("cascade_http_requests_total", "HTTP requests by route and status"),
            &["route", "status"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        let sources =
            IntCounterVec::new(Opts::new("cascade_recs_source_total", "Recommendation answers by source"), &["source"])
                .unwrap_or_else(|_| unreachable!("static metric definition"));
        let fallbacks =
            IntCounterVec::new(Opts::new("cascade_fallbacks_total", "Real-time path fallbacks by reason"), &["reason"])
                .unwrap_or_else(|_| unreachable!("static metric definition"));
        let buckets = vec![0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];
        let stage_seconds = HistogramVec::new(
            HistogramOpts::new("cascade_stage_seconds", "Request-path stage latency").buckets(buckets),
            &["stage"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        let in_flight = IntGauge::new("cascade_requests_in_flight", "Requests being served")
            .unwrap_or_else(|_| unreachable!("static metric definition"));
        Metrics {
            requests: register(&registry, requests),
            sources: register(&registry, sources),
            fallbacks: register(&registry, fallbacks),
            stage_seconds: register(&registry, stage_seconds),
            in_flight: register(&registry, in_flight),
            registry,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(%error, "metrics encoding failed");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
