//! Prometheus metrics, served as text at `/metrics`.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The dynamic batcher's metrics (`crate::ranking::batcher`).
#[derive(Clone)]
pub struct BatchMetrics {
    /// `cascade_batch_requests`: requests merged per model call.
    pub batch_requests: Histogram,
    /// `cascade_batch_rows`: rows per model call.
    pub batch_rows: Histogram,
    /// `cascade_ranker_queue_depth`: requests waiting.
    pub queue_depth: IntGauge,
    /// `cascade_ranker_queue_wait_seconds`: time from queued to batched.
    pub queue_wait_seconds: Histogram,
    /// `cascade_ranker_inference_seconds`: one model call.
    pub inference_seconds: Histogram,
    /// `cascade_ranker_expired_total`: requests dropped because their deadline passed in the queue.
    pub expired: IntCounter,
    /// `cascade_ranker_overloaded_total`: requests refused because the queue was full.
    pub overloaded: IntCounter,
    /// `cascade_ranker_panics_total`: model calls that panicked (caught; the thread goes on).
    pub panics: IntCounter,
    /// `cascade_remote_ranker_calls_total{outcome}`: batches for the remote ranker, by what became
    /// of them (`remote`, `failed`, `breaker_open`).
    pub remote_calls: IntCounterVec,
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .unwrap_or_else(|_| unreachable!("static metric definition"))
}

impl BatchMetrics {
    /// New, unregistered metrics (benchmarks and tests use these as they are).
    pub fn new() -> Self {
        let sizes = vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];
        let seconds = vec![0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5];
        BatchMetrics {
            batch_requests: histogram("cascade_batch_requests", "Requests merged per model call", sizes.clone()),
            batch_rows: histogram("cascade_batch_rows", "Rows per model call", sizes),
            queue_depth: IntGauge::new("cascade_ranker_queue_depth", "Requests waiting for inference")
                .unwrap_or_else(|_| unreachable!("static metric definition")),
            queue_wait_seconds: histogram(
                "cascade_ranker_queue_wait_seconds",
                "Time from queued to batched",
                seconds.clone(),
            ),
            inference_seconds: histogram("cascade_ranker_inference_seconds", "One model call", seconds),
            expired: IntCounter::new("cascade_ranker_expired_total", "Requests dropped past their deadline")
                .unwrap_or_else(|_| unreachable!("static metric definition")),
            overloaded: IntCounter::new("cascade_ranker_overloaded_total", "Requests refused with a full queue")
                .unwrap_or_else(|_| unreachable!("static metric definition")),
            panics: IntCounter::new("cascade_ranker_panics_total", "Model calls that panicked (caught)")
                .unwrap_or_else(|_| unreachable!("static metric definition")),
            remote_calls: IntCounterVec::new(
                Opts::new("cascade_remote_ranker_calls_total", "Batches for the remote ranker, by outcome"),
                &["outcome"],
            )
            .unwrap_or_else(|_| unreachable!("static metric definition")),
        }
    }

    fn register(self, registry: &Registry) -> Self {
        BatchMetrics {
            batch_requests: register(registry, self.batch_requests),
            batch_rows: register(registry, self.batch_rows),
            queue_depth: register(registry, self.queue_depth),
            queue_wait_seconds: register(registry, self.queue_wait_seconds),
            inference_seconds: register(registry, self.inference_seconds),
            expired: register(registry, self.expired),
            overloaded: register(registry, self.overloaded),
            panics: register(registry, self.panics),
            remote_calls: register(registry, self.remote_calls),
        }
    }
}

impl Default for BatchMetrics {
    fn default() -> Self {
        Self::new()
    }
}

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
    /// `cascade_http_request_seconds{route}`: time per request, by route (shed requests excluded).
    pub request_seconds: HistogramVec,
    /// `cascade_requests_in_flight`.
    pub in_flight: IntGauge,
    /// `cascade_requests_shed_total`: refused by admission control (503 `overloaded`).
    pub shed: prometheus::IntCounter,
    /// `cascade_cache_lookups_total{layer,result}`: cache hits and misses per layer.
    pub cache_lookups: IntCounterVec,
    /// `cascade_pipeline_runs_total`: real-time pipeline runs (coalesced misses count once).
    pub pipeline_runs: IntCounter,
    /// The ranker's batcher.
    pub batcher: BatchMetrics,
    /// Blocking work queues (FAISS searches).
    pub work_queues: crate::work_queue::QueueMetrics,
    /// `cascade_runtime_lag_seconds`: the largest scheduling lag over the last 100 ms.
    pub runtime_lag: Gauge,
    /// `cascade_brownout`: 1 while real-time ranking is paused for lack of CPU.
    pub brownout: IntGauge,
    /// Feature log entries by outcome (`written`, `dropped`).
    pub feature_log: IntCounterVec,
    /// Items the rules removed, by rule (`cascade_rule_removals_total{rule}`).
    pub rule_removals: IntCounterVec,
    /// Edge purges by outcome (`cascade_edge_purges_total{outcome}`).
    pub edge_purges: IntCounterVec,
    /// Trace spans dropped because the export queue was full (`cascade_trace_spans_dropped_total`).
    pub trace_spans_dropped: prometheus::IntCounter,
    /// User lists by A/B variant (`cascade_variant_lists_total{variant}`).
    pub variant_lists: IntCounterVec,
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
            HistogramOpts::new("cascade_stage_seconds", "Request-path stage latency").buckets(buckets.clone()),
            &["stage"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        let request_seconds = HistogramVec::new(
            HistogramOpts::new("cascade_http_request_seconds", "Request latency by route").buckets(buckets),
            &["route"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        let in_flight = IntGauge::new("cascade_requests_in_flight", "Requests being served")
            .unwrap_or_else(|_| unreachable!("static metric definition"));
        let cache_lookups = IntCounterVec::new(
            Opts::new("cascade_cache_lookups_total", "Cache lookups by layer and result"),
            &["layer", "result"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        let pipeline_runs = IntCounter::new("cascade_pipeline_runs_total", "Real-time pipeline runs")
            .unwrap_or_else(|_| unreachable!("static metric definition"));
        let runtime_lag = Gauge::new("cascade_runtime_lag_seconds", "Largest task scheduling lag over the last 100 ms")
            .unwrap_or_else(|_| unreachable!("static metric definition"));
        let brownout = IntGauge::new("cascade_brownout", "1 while real-time ranking is paused for lack of CPU")
            .unwrap_or_else(|_| unreachable!("static metric definition"));
        let feature_log = IntCounterVec::new(
            Opts::new("cascade_feature_log_entries_total", "Feature log entries by outcome (written, dropped)"),
            &["outcome"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        let variant_lists = IntCounterVec::new(
            Opts::new("cascade_variant_lists_total", "User lists served by A/B variant"),
            &["variant"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        let rule_removals = IntCounterVec::new(
            Opts::new("cascade_rule_removals_total", "Items removed from answers by rule"),
            &["rule"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        let edge_purges = IntCounterVec::new(
            Opts::new("cascade_edge_purges_total", "Edge segment-list purges by outcome (purged, not_cached, failed)"),
            &["outcome"],
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        let shed = prometheus::IntCounter::new(
            "cascade_requests_shed_total",
            "Requests refused by admission control (503 overloaded; not in cascade_http_requests_total)",
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        let trace_spans_dropped = prometheus::IntCounter::new(
            "cascade_trace_spans_dropped_total",
            "Trace spans dropped: the export queue was full",
        )
        .unwrap_or_else(|_| unreachable!("static metric definition"));
        Metrics {
            trace_spans_dropped: register(&registry, trace_spans_dropped),
            shed: register(&registry, shed),
            edge_purges: register(&registry, edge_purges),
            rule_removals: register(&registry, rule_removals),
            variant_lists: register(&registry, variant_lists),
            feature_log: register(&registry, feature_log),
            cache_lookups: register(&registry, cache_lookups),
            pipeline_runs: register(&registry, pipeline_runs),
            requests: register(&registry, requests),
            sources: register(&registry, sources),
            fallbacks: register(&registry, fallbacks),
            stage_seconds: register(&registry, stage_seconds),
            request_seconds: register(&registry, request_seconds),
            in_flight: register(&registry, in_flight),
            batcher: BatchMetrics::new().register(&registry),
            work_queues: {
                let queues = crate::work_queue::QueueMetrics::default();
                crate::work_queue::QueueMetrics {
                    tasks: register(&registry, queues.tasks),
                    depth: register(&registry, queues.depth),
                }
            },
            runtime_lag: register(&registry, runtime_lag),
            brownout: register(&registry, brownout),
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
