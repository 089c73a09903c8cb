//! The Worker's span of a visitor request. With `OTLP_ENDPOINT` set, the Worker continues the
//! browser's trace (or starts one), sends the origin a `traceparent` whose parent is its own
//! span, and exports that span to the collector after answering (`ctx.wait_until`). Unset, it
//! only passes a browser's valid `traceparent` on.

use cascade_shared::trace::{SpanRecord, TraceParent, otlp_json};
use worker::{Context, Fetch, Headers, Method, Request, RequestInit};

use crate::config::EdgeConfig;

/// The edge's place in a request's trace.
pub(super) struct EdgeSpan {
    /// The trace with the edge's span (recorded when tracing is on).
    own: Option<TraceParent>,
    /// The browser's span (0: the edge started the trace).
    parent_id: u64,
    /// A browser's header passed on as it is (tracing off).
    forward: Option<String>,
}

/// 64 random bits from `Math.random` (ids, not secrets).
fn random_u64() -> u64 {
    let part = || (js_sys::Math::random() * 4_294_967_296.0) as u64;
    (part() << 32) | part()
}

impl EdgeSpan {
    /// The span of a request whose browser sent `browser` (its `traceparent`, if any).
    pub(super) fn start(config: &EdgeConfig, browser: Option<&str>) -> Self {
        let incoming = browser.and_then(TraceParent::parse);
        if config.otlp_endpoint.is_none() {
            return EdgeSpan { own: None, parent_id: 0, forward: incoming.map(|t| t.header()) };
        }
        let span_id = random_u64();
        match incoming {
            Some(parent) => EdgeSpan { own: Some(parent.child(span_id)), parent_id: parent.span_id, forward: None },
            None => {
                let trace_id = (u128::from(random_u64()) << 64) | u128::from(random_u64());
                EdgeSpan { own: Some(TraceParent::new_root(trace_id, span_id)), parent_id: 0, forward: None }
            }
        }
    }

    /// The `traceparent` for the origin.
    pub(super) fn traceparent(&self) -> Option<String> {
        self.own.map(|t| t.header()).or_else(|| self.forward.clone())
    }

    /// Exports the span (sampled traces only) after the answer, in the background.
    pub(super) fn export(
        &self,
        config: &EdgeConfig,
        ctx: &Context,
        name: String,
        started_ms: u64,
        status: u16,
        request_id: &str,
    ) {
        let (Some(own), Some(endpoint)) = (self.own, &config.otlp_endpoint) else { return };
        if !own.sampled {
            return;
        }
        let span = SpanRecord {
            trace_id: own.trace_id,
            span_id: own.span_id,
            parent_id: self.parent_id,
            name,
            start_ns: started_ms * 1_000_000,
            end_ns: worker::Date::now().as_millis() * 1_000_000,
            attributes: vec![
                ("http.response.status_code", status.to_string()),
                ("cascade.request_id", request_id.to_string()),
            ],
        };
        let body = otlp_json("cascade-edge", &[span]).to_string();
        let url = format!("{endpoint}/v1/traces");
        ctx.wait_until(async move {
            let headers = Headers::new();
            let _ = headers.set("content-type", "application/json");
            let mut init = RequestInit::new();
            init.with_method(Method::Post).with_headers(headers).with_body(Some(body.into()));
            let sent = match Request::new_with_init(&url, &init) {
                Ok(request) => Fetch::Request(request).send().await.map(|_| ()),
                Err(error) => Err(error),
            };
            if let Err(error) = sent {
                worker::console_error!("trace export to {url} failed: {error}");
            }
        });
    }
}
