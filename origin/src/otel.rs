//! Traces: the origin continues the W3C trace a caller (the Worker) started, with one span per
//! request and one per stage it timed (`state`, `cache`, `embed`, `retrieve`, `rank` with its
//! `rank.queue` and `rank.inference` parts from the batcher, `rules`, ...), and exports them as
//! OTLP/HTTP JSON (`POST {otlp_endpoint}/v1/traces`) to any OpenTelemetry collector.
//!
//! Off by default (`[tracing] otlp_endpoint` empty): then nothing here runs. On, a request costs a
//! random span id, a few records built after its answer, and a non-blocking send to a bounded
//! queue (full: the spans are dropped and counted, never the request delayed); one background
//! task posts batches. Why not the OpenTelemetry SDK: the origin's spans are the stages it
//! already times (`recommend::Timings`), so an exporter of 200 lines covers them without the
//! SDK's dependency tree on a 2-core CI; the wire format is the standard one.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cascade_shared::trace::{SpanRecord, TraceParent, otlp_json};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::recommend::Timings;

/// `[tracing]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318` (empty: tracing off).
    pub otlp_endpoint: String,
    /// `service.name` of the spans.
    pub service_name: String,
    /// Share of requests without a caller's `traceparent` that start a trace (0..=1); a caller's
    /// sampled flag is followed.
    pub sample_ratio: f64,
    /// How often the queued spans are sent, milliseconds.
    pub flush_ms: u64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: String::new(),
            service_name: "cascade-origin".into(),
            sample_ratio: 1.0,
            flush_ms: 1000,
        }
    }
}

/// Most spans waiting to be sent; more are dropped (and counted).
const QUEUE: usize = 8192;

/// The exporter: a bounded queue and the task that posts it.
pub struct Tracer {
    config: TracingConfig,
    queue: mpsc::Sender<SpanRecord>,
    dropped: prometheus::IntCounter,
}

impl Tracer {
    /// Starts the exporter when `config` names an endpoint (`None`: tracing off).
    pub fn start(config: &TracingConfig, dropped: prometheus::IntCounter) -> Option<std::sync::Arc<Self>> {
        if config.otlp_endpoint.is_empty() {
            return None;
        }
        let (queue, spans) = mpsc::channel(QUEUE);
        let url = format!("{}/v1/traces", config.otlp_endpoint.trim_end_matches('/'));
        tokio::spawn(export(spans, url, config.service_name.clone(), Duration::from_millis(config.flush_ms.max(10))));
        tracing::info!(endpoint = %config.otlp_endpoint, "tracing: exporting spans over OTLP/HTTP");
        Some(std::sync::Arc::new(Tracer { config: config.clone(), queue, dropped }))
    }

    /// The trace a request joins, with the request's own span id: the caller's trace when its
    /// `traceparent` is valid and sampled; a new one by `sample_ratio` when it has none; `None`:
    /// not recorded.
    pub fn join(&self, traceparent: Option<&str>) -> Option<Joined> {
        let span_id = rand::random::<u64>().max(1);
        match traceparent.and_then(TraceParent::parse) {
            Some(parent) => {
                parent.sampled.then_some(Joined { trace_id: parent.trace_id, parent_id: parent.span_id, span_id })
            }
            None => (rand::random::<f64>() < self.config.sample_ratio).then(|| Joined {
                trace_id: rand::random::<u128>().max(1),
                parent_id: 0,
                span_id,
            }),
        }
    }

    /// Records a request's span (from `started` until now) and one child span per stage of
    /// `timings` (`a.b` under the latest `a`).
    pub fn request(
        &self,
        joined: Joined,
        name: String,
        started: Instant,
        timings: Option<&Timings>,
        attributes: Vec<(&'static str, String)>,
    ) {
        let clock = Clock::now();
        let Joined { trace_id, parent_id, span_id } = joined;
        let mut spans = vec![SpanRecord {
            trace_id,
            span_id,
            parent_id,
            name,
            start_ns: clock.unix_ns(started),
            end_ns: clock.unix_ns(Instant::now()),
            attributes,
        }];
        let mut latest: Vec<(&str, u64)> = Vec::new();
        for stage in timings.map(|t| t.0.as_slice()).unwrap_or_default().iter().filter(|s| s.name != "total") {
            let id = rand::random::<u64>().max(1);
            let parent_stage =
                stage.name.rsplit_once('.').and_then(|(outer, _)| latest.iter().rev().find(|(n, _)| *n == outer));
            spans.push(SpanRecord {
                trace_id,
                span_id: id,
                parent_id: parent_stage.map_or(span_id, |(_, id)| *id),
                name: stage.name.to_string(),
                start_ns: clock.unix_ns(stage.start),
                end_ns: clock.unix_ns(stage.start + stage.duration),
                attributes: Vec::new(),
            });
            latest.push((stage.name, id));
        }
        for span in spans {
            if self.queue.try_send(span).is_err() {
                self.dropped.inc();
            }
        }
    }
}

/// A request's place in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// The trace.
    pub trace_id: u128,
    /// The caller's span (0: the request starts the trace).
    pub parent_id: u64,
    /// The request's own span.
    pub span_id: u64,
}

impl Joined {
    /// The trace id as 32 hex characters (logs, `Server-Timing`).
    pub fn trace_hex(&self) -> String {
        cascade_shared::trace::trace_hex(self.trace_id)
    }
}

/// Converts `Instant`s to Unix time through one reading of both clocks.
struct Clock {
    instant: Instant,
    unix_ns: u128,
}

impl Clock {
    fn now() -> Self {
        let unix_ns = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        Clock { instant: Instant::now(), unix_ns }
    }

    fn unix_ns(&self, at: Instant) -> u64 {
        let ns = match self.instant.checked_duration_since(at) {
            Some(before) => self.unix_ns.saturating_sub(before.as_nanos()),
            None => self.unix_ns + at.duration_since(self.instant).as_nanos(),
        };
        u64::try_from(ns).unwrap_or(u64::MAX)
    }
}

/// Posts what is queued every `every` (at most 512 spans a post) until the queue closes.
async fn export(mut spans: mpsc::Receiver<SpanRecord>, url: String, service: String, every: Duration) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
    let mut batch = Vec::new();
    loop {
        let open = tokio::time::timeout(every, spans.recv_many(&mut batch, 512)).await.map_or(true, |n| n > 0);
        if !batch.is_empty() {
            let body = otlp_json(&service, &batch);
            match http.post(&url).json(&body).send().await {
                Ok(response) if response.status().is_success() => {}
                Ok(response) => {
                    tracing::warn!(status = %response.status(), spans = batch.len(), "trace export refused")
                }
                Err(error) => tracing::warn!(%error, spans = batch.len(), "trace export failed"),
            }
            batch.clear();
        }
        if !open {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracer(sample_ratio: f64) -> (Tracer, mpsc::Receiver<SpanRecord>) {
        let (queue, spans) = mpsc::channel(16);
        let config =
            TracingConfig { otlp_endpoint: "http://127.0.0.1:9".into(), sample_ratio, ..TracingConfig::default() };
        (Tracer { config, queue, dropped: prometheus::IntCounter::new("d", "d").unwrap() }, spans)
    }

    #[test]
    fn a_request_joins_the_callers_sampled_trace_or_starts_one_by_the_ratio() {
        let (always, _) = tracer(1.0);
        let joined = always.join(Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")).unwrap();
        assert_eq!(
            (joined.trace_hex().as_str(), joined.parent_id),
            ("4bf92f3577b34da6a3ce929d0e0e4736", 0x00f0_67aa_0ba9_02b7)
        );
        assert!(always.join(Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")).is_none(), "not sampled");
        let root = always.join(Some("garbage")).unwrap();
        assert_eq!(root.parent_id, 0, "a malformed header starts a new trace");
        let (never, _) = tracer(0.0);
        assert!(never.join(None).is_none());
    }

    #[test]
    fn stages_become_child_spans_and_dotted_stages_children_of_their_stage() {
        let (tracer, mut spans) = tracer(1.0);
        std::thread::sleep(Duration::from_millis(10));
        let started = Instant::now() - Duration::from_millis(10);
        let mut timings = Timings::default();
        timings.add("state", Duration::from_millis(1));
        timings.add("rank", Duration::from_millis(3));
        timings.add_between("rank.queue", started, started + Duration::from_millis(1));
        timings.add("total", Duration::from_millis(5));
        let joined = Joined { trace_id: 7, parent_id: 9, span_id: 11 };
        tracer.request(joined, "GET /x".into(), started, Some(&timings), vec![]);
        let mut got = Vec::new();
        while let Ok(span) = spans.try_recv() {
            got.push(span);
        }
        let names: Vec<&str> = got.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["GET /x", "state", "rank", "rank.queue"], "total is the request span itself");
        assert!(got.iter().all(|s| s.trace_id == 7));
        assert_eq!((got[0].span_id, got[0].parent_id), (11, 9));
        assert_eq!((got[1].parent_id, got[2].parent_id), (11, 11));
        assert_eq!(got[3].parent_id, got[2].span_id, "rank.queue under rank");
        assert!(got[3].start_ns >= got[0].start_ns && got[3].end_ns <= got[0].end_ns, "in the request");
    }
}
