//! Traces across the edge and the origin: the W3C Trace Context `traceparent` header (version
//! 00: `00-<trace id: 32 hex>-<parent span id: 16 hex>-<flags: 2 hex>`) and finished spans as
//! OTLP/HTTP JSON. The Worker continues a browser's trace (or starts one) and sends its own span
//! as the parent to the origin, which continues it through its stages; each exports its spans to
//! the collector.
//!
//! Parsing is strict where the specification is (lowercase hex, all-zero ids invalid, version
//! `ff` invalid) so a malformed header starts a new trace instead of corrupting one; ids come
//! from the caller (nothing here reads a random source).

/// The header's name.
pub const HEADER: &str = "traceparent";

/// A position in a trace: the trace and the span that is the parent of the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// 16 bytes, not all zero.
    pub trace_id: u128,
    /// 8 bytes, not all zero: the caller's span.
    pub span_id: u64,
    /// Whether the caller records this trace (flag bit 0).
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a `traceparent` value; `None` when it is not a valid version-00 header (a later
    /// version is read by its first four fields, as the specification asks).
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut parts = value.split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let lower_hex =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !lower_hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        if !lower_hex(trace, 32) || !lower_hex(span, 16) || !lower_hex(flags, 2) {
            return None;
        }
        // Two 64-bit halves: u128 parsing and formatting would pull 128-bit division into the
        // Worker's wasm.
        let (high, low) = (u64::from_str_radix(&trace[..16], 16).ok()?, u64::from_str_radix(&trace[16..], 16).ok()?);
        let trace_id = (u128::from(high) << 64) | u128::from(low);
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceParent { trace_id, span_id, sampled: flags & 1 == 1 })
    }

    /// A new sampled trace whose first span is `span_id` (both from the caller's random source;
    /// zero values are replaced by 1, which the specification forbids as ids).
    pub fn new_root(trace_id: u128, span_id: u64) -> Self {
        TraceParent { trace_id: trace_id.max(1), span_id: span_id.max(1), sampled: true }
    }

    /// The same trace, with `span_id` as the parent of what comes next.
    pub fn child(self, span_id: u64) -> Self {
        TraceParent { span_id: span_id.max(1), ..self }
    }

    /// The header value.
    pub fn header(&self) -> String {
        format!("00-{}-{:016x}-{:02x}", trace_hex(self.trace_id), self.span_id, u8::from(self.sampled))
    }

    /// The trace id as 32 lowercase hex characters (logs, `Server-Timing`, OTLP JSON).
    pub fn trace_hex(&self) -> String {
        trace_hex(self.trace_id)
    }
}

/// A trace id as 32 lowercase hex characters.
pub fn trace_hex(trace_id: u128) -> String {
    format!("{:016x}{:016x}", (trace_id >> 64) as u64, trace_id as u64)
}

/// A span id as 16 lowercase hex characters (OTLP JSON).
pub fn span_hex(span_id: u64) -> String {
    format!("{span_id:016x}")
}

/// One finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    /// The trace.
    pub trace_id: u128,
    /// This span.
    pub span_id: u64,
    /// Its parent (0: the trace's root).
    pub parent_id: u64,
    /// Name.
    pub name: String,
    /// Start, Unix nanoseconds (u64: until 2554, without 128-bit formatting in the Worker).
    pub start_ns: u64,
    /// End, Unix nanoseconds.
    pub end_ns: u64,
    /// String attributes.
    pub attributes: Vec<(&'static str, String)>,
}

/// The OTLP/HTTP JSON body (`POST /v1/traces`) for `spans` of `service`: ids as hex, times as
/// decimal strings, as the protobuf's JSON mapping asks.
pub fn otlp_json(service: &str, spans: &[SpanRecord]) -> serde_json::Value {
    use serde_json::json;
    let spans: Vec<serde_json::Value> = spans
        .iter()
        .map(|span| {
            let attributes: Vec<_> =
                span.attributes.iter().map(|(k, v)| json!({"key": k, "value": {"stringValue": v}})).collect();
            let mut value = json!({
                "traceId": trace_hex(span.trace_id),
                "spanId": span_hex(span.span_id),
                "name": span.name,
                "kind": if span.parent_id == 0 { 2 } else { 1 },
                "startTimeUnixNano": span.start_ns.to_string(),
                "endTimeUnixNano": span.end_ns.to_string(),
                "attributes": attributes,
            });
            if span.parent_id != 0 {
                value["parentSpanId"] = json!(span_hex(span.parent_id));
            }
            value
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": "cascade"}, "spans": spans}],
    }]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_example_round_trips() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(value).unwrap();
        assert_eq!(parsed.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span_hex(parsed.span_id), "00f067aa0ba902b7");
        assert!(parsed.sampled);
        assert_eq!(parsed.header(), value);
        let child = parsed.child(0xabc);
        assert_eq!(child.header(), "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000abc-01");
        assert!(!TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().sampled);
    }

    #[test]
    fn spans_become_otlp_json_with_hex_ids_and_string_times() {
        let span = SpanRecord {
            trace_id: 0x4bf9,
            span_id: 0xab,
            parent_id: 0xcd,
            name: "rank".into(),
            start_ns: 1_700_000_000_000_000_000,
            end_ns: 1_700_000_000_001_000_000,
            attributes: vec![("k", "v".into())],
        };
        let body = otlp_json("svc", &[span.clone(), SpanRecord { parent_id: 0, ..span }]);
        let spans = &body["resourceSpans"][0]["scopeSpans"][0]["spans"];
        assert_eq!(spans[0]["traceId"], "00000000000000000000000000004bf9");
        assert_eq!(
            (spans[0]["spanId"].as_str(), spans[0]["parentSpanId"].as_str()),
            (Some("00000000000000ab"), Some("00000000000000cd"))
        );
        assert_eq!(spans[0]["startTimeUnixNano"], "1700000000000000000");
        assert!(spans[1].get("parentSpanId").is_none(), "a root has no parent");
        assert_eq!(body["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"], "svc");
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later").is_some());
        assert_eq!(TraceParent::new_root(0, 0).header(), "00-00000000000000000000000000000001-0000000000000001-01");
    }
}
