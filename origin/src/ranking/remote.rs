//! A remote ranker over the Open Inference Protocol (KServe v2 REST; Triton and KServe speak it):
//! each inference thread sends the batcher's merged batch as `POST /v2/models/{model}/infer`, one
//! FP32 tensor `[rows, input_width]`, and reads one FP32 score per row. With `binary = true`
//! (default) the tensors travel as raw little-endian bytes after the JSON header (Triton's binary
//! tensor extension, which KServe also speaks): no float formatting or parsing on either side.
//!
//! A call has its own timeout (`timeout_ms`) and a circuit breaker: after `breaker_failures`
//! failures in a row the server is not called for `breaker_cooldown_ms`, then one call tries it
//! again. A failed or skipped call is scored by the in-process TorchScript model (`fallback =
//! "local"`, default), or fails so the request path serves its fallback list (`"chain"`).
//! `scripts/oip_server.py` serves a bundle's model from KServe's model server.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::RankError;
use super::batcher::{ScoreBackend, Scorer};

/// The header that carries the JSON part's length in a binary-extension body.
const JSON_LENGTH_HEADER: &str = "inference-header-content-length";

/// `[ranker.remote]`: where the model server is and how to call it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteConfig {
    /// The server's base URL, e.g. `http://127.0.0.1:8500` (empty: ranking stays in process).
    pub url: String,
    /// The model's name on the server.
    pub model: String,
    /// Longest one inference call may take, milliseconds.
    pub timeout_ms: u64,
    /// Raw binary tensors (Triton's binary tensor extension) instead of JSON numbers.
    pub binary: bool,
    /// Failures in a row that open the breaker.
    pub breaker_failures: u32,
    /// How long an open breaker skips the server, milliseconds.
    pub breaker_cooldown_ms: u64,
    /// What scores a batch the server did not: `local` (the in-process model) or `chain` (the
    /// request path's fallback lists).
    pub fallback: RemoteFallback,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            url: String::new(),
            model: "cascade-ranker".into(),
            timeout_ms: 50,
            binary: true,
            breaker_failures: 5,
            breaker_cooldown_ms: 5_000,
            fallback: RemoteFallback::Local,
        }
    }
}

/// What scores a batch the server did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoteFallback {
    /// The in-process TorchScript model.
    Local,
    /// Nothing: the request path serves its fallback list.
    Chain,
}

impl RemoteConfig {
    /// Whether a remote ranker is configured.
    pub fn is_on(&self) -> bool {
        !self.url.is_empty()
    }
}

/// A blocking Open Inference Protocol client for one inference thread (its own current-thread
/// runtime: inference threads are not tokio's).
pub struct OipClient {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    infer_url: String,
    binary: bool,
    width: usize,
}

impl OipClient {
    /// A client of `config`'s model for rows `width` wide.
    pub fn new(config: &RemoteConfig, width: usize) -> Result<Self, RankError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RankError::Model(format!("remote ranker runtime: {e}")))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| RankError::Model(format!("remote ranker client: {e}")))?;
        let infer_url = format!("{}/v2/models/{}/infer", config.url.trim_end_matches('/'), config.model);
        Ok(OipClient { runtime, http, infer_url, binary: config.binary, width })
    }

    /// Scores `rows` on the server.
    pub fn infer(&self, rows: &[f32]) -> Result<Vec<f32>, RankError> {
        let count = rows.len() / self.width;
        let (body, json_length) = request_body(rows, count, self.width, self.binary);
        let mut request = self.http.post(&self.infer_url).body(body);
        request = match json_length {
            Some(length) => request
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .header(JSON_LENGTH_HEADER, length.to_string()),
            None => request.header(reqwest::header::CONTENT_TYPE, "application/json"),
        };
        let remote = |message: String| RankError::Model(format!("remote ranker {}: {message}", self.infer_url));
        self.runtime.block_on(async {
            let response = request.send().await.map_err(|e| remote(e.to_string()))?;
            let status = response.status();
            let json_length = response
                .headers()
                .get(JSON_LENGTH_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            let bytes = response.bytes().await.map_err(|e| remote(e.to_string()))?;
            if !status.is_success() {
                return Err(remote(format!("{status}: {}", String::from_utf8_lossy(&bytes[..bytes.len().min(300)]))));
            }
            parse_scores(&bytes, json_length, count).map_err(remote)
        })
    }
}

/// The infer request's body for `count` rows, and the JSON part's length when binary.
pub fn request_body(rows: &[f32], count: usize, width: usize, binary: bool) -> (Vec<u8>, Option<usize>) {
    let shape = [count, width];
    if !binary {
        let body = json!({"inputs": [{"name": "rows", "shape": shape, "datatype": "FP32", "data": rows}]});
        return (body.to_string().into_bytes(), None);
    }
    let header = json!({
        "inputs": [{"name": "rows", "shape": shape, "datatype": "FP32",
                    "parameters": {"binary_data_size": rows.len() * 4}}],
        "parameters": {"binary_data_output": true},
    })
    .to_string();
    let mut body = Vec::with_capacity(header.len() + rows.len() * 4);
    body.extend_from_slice(header.as_bytes());
    for value in rows {
        body.extend_from_slice(&value.to_le_bytes());
    }
    (body, Some(header.len()))
}

/// The scores of an infer response (JSON, or JSON then binary tensors when `json_length` is set).
pub fn parse_scores(bytes: &[u8], json_length: Option<usize>, count: usize) -> Result<Vec<f32>, String> {
    let json_part = &bytes[..json_length.unwrap_or(bytes.len()).min(bytes.len())];
    let answer: Value = serde_json::from_slice(json_part).map_err(|e| format!("not an infer response: {e}"))?;
    let output = answer["outputs"].get(0).ok_or("no outputs")?;
    if output["datatype"] != "FP32" {
        return Err(format!("output datatype {} (want FP32)", output["datatype"]));
    }
    let scores: Vec<f32> = match (json_length, output["parameters"]["binary_data_size"].as_u64()) {
        (Some(start), Some(size)) => {
            let raw = bytes.get(start..start + size as usize).ok_or("binary output shorter than declared")?;
            raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        }
        _ => output["data"]
            .as_array()
            .ok_or("output without data")?
            .iter()
            .map(|v| v.as_f64().map(|f| f as f32).ok_or("a score that is not a number"))
            .collect::<Result<_, _>>()?,
    };
    if scores.len() != count {
        return Err(format!("{} scores for {count} rows", scores.len()));
    }
    Ok(scores)
}

/// Closed until `threshold` failures in a row; then open for `cooldown`; then one trial call.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker { threshold: threshold.max(1), cooldown, failures: 0, open_until: None }
    }

    /// Whether a call may go to the server at `now`.
    pub fn allows(&self, now: Instant) -> bool {
        self.open_until.is_none_or(|until| now >= until)
    }

    /// A call succeeded: closed.
    pub fn success(&mut self) {
        (self.failures, self.open_until) = (0, None);
    }

    /// A call failed at `now`: opens at the threshold (a failed trial call reopens at once).
    pub fn failure(&mut self, now: Instant) {
        self.failures += 1;
        if self.failures >= self.threshold {
            self.open_until = Some(now + self.cooldown);
        }
    }
}

/// What became of one batch, for `cascade_remote_ranker_calls_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Scored by the server.
    Remote,
    /// The server failed; scored by the fallback.
    Failed,
    /// The breaker was open; scored by the fallback.
    Skipped,
}

impl Outcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Remote => "remote",
            Outcome::Failed => "failed",
            Outcome::Skipped => "breaker_open",
        }
    }
}

/// The remote model with its breaker and fallback, as one inference thread's backend.
pub struct RemoteBackend {
    client: OipClient,
    breaker: Breaker,
    fallback: Option<Scorer>,
    counted: prometheus::IntCounterVec,
}

/// `local` (one inference thread's in-process model) behind the server of `config`: the remote
/// backend that falls back to it, or `local` itself when no client can be made (logged).
pub fn wrap(config: &RemoteConfig, width: usize, local: Scorer, counted: prometheus::IntCounterVec) -> Scorer {
    match OipClient::new(config, width) {
        Ok(client) => Box::new(RemoteBackend {
            client,
            breaker: Breaker::new(config.breaker_failures, Duration::from_millis(config.breaker_cooldown_ms)),
            fallback: (config.fallback == RemoteFallback::Local).then_some(local),
            counted,
        }),
        Err(error) => {
            tracing::error!(%error, "remote ranker unusable; ranking in process");
            local
        }
    }
}

/// At load: the server must reproduce the bundle's reference scores (within
/// [`super::torch::REFERENCE_TOLERANCE`]) like the in-process model, or the bundle is refused; a
/// server that does not answer is logged and left to the breaker (ranking goes on in process).
pub fn check_reference(
    config: &RemoteConfig,
    width: usize,
    reference: &super::ReferenceBatch,
) -> Result<(), RankError> {
    let rows: Vec<f32> = reference.inputs.iter().flatten().copied().collect();
    let client = OipClient::new(config, width)?;
    let scores = match client.infer(&rows) {
        Ok(scores) => scores,
        Err(error) => {
            tracing::warn!(%error, "remote ranker did not answer at load; the breaker will try it again");
            return Ok(());
        }
    };
    let worst = scores.iter().zip(&reference.scores).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    if worst > super::torch::REFERENCE_TOLERANCE {
        return Err(RankError::Model(format!(
            "remote ranker {}: scores differ from reference.json by {worst} (another model?)",
            client.infer_url
        )));
    }
    tracing::info!(url = %client.infer_url, worst, "remote ranker reproduces the reference scores");
    Ok(())
}

impl ScoreBackend for RemoteBackend {
    fn score_batch(&mut self, rows: &mut [f32]) -> Result<Vec<f32>, RankError> {
        let now = Instant::now();
        let (outcome, error) = if self.breaker.allows(now) {
            match self.client.infer(rows) {
                Ok(scores) => {
                    self.breaker.success();
                    self.counted.with_label_values(&[Outcome::Remote.label()]).inc();
                    return Ok(scores);
                }
                Err(error) => {
                    self.breaker.failure(now);
                    tracing::warn!(%error, "remote ranker failed; scoring with the fallback");
                    (Outcome::Failed, error)
                }
            }
        } else {
            (Outcome::Skipped, RankError::Model("remote ranker: breaker open".into()))
        };
        self.counted.with_label_values(&[outcome.label()]).inc();
        match &mut self.fallback {
            Some(local) => local.score_batch(rows),
            None => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_in_both_encodings() {
        let rows = [0.5f32, -1.25, 3.0, 7.5e-3, 1e-7, -0.0];
        for binary in [false, true] {
            let (body, json_length) = request_body(&rows, 2, 3, binary);
            let header: Value = serde_json::from_slice(&body[..json_length.unwrap_or(body.len())]).unwrap();
            assert_eq!(header["inputs"][0]["shape"], json!([2, 3]));
            // Answer with the request's own tensor as "scores" of 6 rows: the same values back.
            let answer = if binary {
                let size = header["inputs"][0]["parameters"]["binary_data_size"].as_u64().unwrap();
                let head = json!({"outputs": [{"name": "score", "shape": [6], "datatype": "FP32",
                                               "parameters": {"binary_data_size": size}}]})
                .to_string();
                let mut bytes = head.clone().into_bytes();
                bytes.extend_from_slice(&body[json_length.unwrap()..]);
                (bytes, Some(head.len()))
            } else {
                let data = header["inputs"][0]["data"].clone();
                (
                    json!({"outputs": [{"name": "score", "shape": [6], "datatype": "FP32", "data": data}]})
                        .to_string()
                        .into_bytes(),
                    None,
                )
            };
            assert_eq!(parse_scores(&answer.0, answer.1, 6).unwrap(), rows, "binary {binary}");
            assert!(parse_scores(&answer.0, answer.1, 5).unwrap_err().contains("6 scores for 5 rows"));
        }
        assert!(parse_scores(br#"{"outputs": [{"datatype": "INT64", "data": [1]}]}"#, None, 1).is_err());
    }

    #[test]
    fn the_breaker_opens_after_failures_in_a_row_and_tries_again_after_its_cooldown() {
        let start = Instant::now();
        let mut breaker = Breaker::new(3, Duration::from_secs(5));
        breaker.failure(start);
        breaker.failure(start);
        breaker.success();
        breaker.failure(start);
        breaker.failure(start);
        assert!(breaker.allows(start), "two in a row: still closed");
        breaker.failure(start);
        assert!(!breaker.allows(start + Duration::from_secs(4)), "three in a row: open");
        assert!(breaker.allows(start + Duration::from_secs(5)), "the cooldown over: one trial call");
        breaker.failure(start + Duration::from_secs(5));
        assert!(!breaker.allows(start + Duration::from_secs(6)), "a failed trial reopens it");
        breaker.success();
        assert!(breaker.allows(start + Duration::from_secs(6)));
    }
}
