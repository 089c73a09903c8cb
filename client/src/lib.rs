//! A typed client for Cascade's origin API, for internal callers (services that show lists, send
//! events, or test and benchmark the origin).
//!
//! ```no_run
//! # async fn demo() -> Result<(), cascade_client::Error> {
//! use cascade_client::{Client, Event, EventKind, ListContext};
//! let client = Client::builder("http://127.0.0.1:8080").api_key("key-from-CASCADE_API_KEYS").build()?;
//! let list = client.user_recs("42", &ListContext { n: Some(10), ..ListContext::default() }).await?;
//! let click = Event::new("42", EventKind::Click, Some(&list.items[0].id));
//! client.send_events(vec![click]).await?;
//! # Ok(()) }
//! ```
//!
//! What it does for the caller:
//! - **Typed answers and errors**: lists are [`RecList`], events [`EventsAccepted`]; a refusal is
//!   [`Error::Api`] with the origin's status, `code`, `message` and `field`.
//! - **Checks before sending**: ids, `n` and events are validated with the origin's own rules
//!   (`cascade_shared`), so a mistake is an [`Error::Invalid`] naming the field, with no request.
//! - **Events in batches with idempotency keys**: [`Client::send_events`] sends at most
//!   [`MAX_EVENTS_PER_BATCH`] per request and gives every event without an `idempotency_key` one,
//!   so a retried batch is counted once by the origin.
//! - **Retries that respect `Retry-After`**: an answer the origin marks retryable (503 or 409
//!   with `Retry-After`) is retried after the time it asks for, when that is within
//!   [`ClientBuilder::max_retry_wait`]; a connection failure or timeout is retried with a short
//!   backoff; at most [`ClientBuilder::retries`] times. Every call is safe to retry (reads, and
//!   events with keys). A 4xx is never retried.
//! - **Timeouts**: per request ([`ClientBuilder::timeout`], default 2 s) and per connection.
//!
//! The origin's OpenAPI document (`docs/openapi.json`) describes the same API for other
//! languages.

mod error;

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;

pub use cascade_shared::validate::FieldError;
pub use cascade_shared::wire::{
    ErrorBody, Event, EventKind, EventsAccepted, MAX_EVENTS_PER_BATCH, RecItem, RecList, Source,
};
pub use error::Error;

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    api_key: Option<String>,
    timeout: Duration,
    connect_timeout: Duration,
    retries: u32,
    max_retry_wait: Duration,
    http: Option<reqwest::Client>,
}

impl ClientBuilder {
    /// The bearer key (one of the origin's `CASCADE_API_KEYS`).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The longest one request may take, answer included (default 2 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest a connection may take to open (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many times a call is retried after a retryable failure (default 3; 0: never).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The longest wait before a retry (default 5 s): an answer whose `Retry-After` asks for more
    /// is returned as the error instead of being retried early.
    pub fn max_retry_wait(mut self, wait: Duration) -> Self {
        self.max_retry_wait = wait;
        self
    }

    /// Use this `reqwest` client (its pool, its settings; the timeouts above are not applied).
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// The client.
    pub fn build(self) -> Result<Client, Error> {
        let base_url = self.base_url.trim_end_matches('/').to_string();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(Error::Config(format!("the origin URL must start with http:// or https://, got {base_url:?}")));
        }
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .timeout(self.timeout)
                .connect_timeout(self.connect_timeout)
                .build()
                .map_err(|e| Error::Config(e.to_string()))?,
        };
        let inner = Inner {
            base_url,
            authorization: self.api_key.map(|key| format!("Bearer {key}")),
            http,
            timeout: self.timeout,
            retries: self.retries,
            max_retry_wait: self.max_retry_wait,
        };
        Ok(Client { inner: Arc::new(inner) })
    }
}

/// A client for one origin (cheap to clone: clones share the connection pool).
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    base_url: String,
    authorization: Option<String>,
    http: reqwest::Client,
    timeout: Duration,
    retries: u32,
    max_retry_wait: Duration,
}

/// The context of a user's list; absent values take the origin's defaults (20 items, home,
/// desktop, unknown country).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListContext {
    /// How many items, 1..=100.
    pub n: Option<usize>,
    /// home, browse, detail or search.
    pub page: Option<String>,
    /// desktop, mobile or tablet.
    pub device: Option<String>,
    /// ISO 3166 alpha-2 country.
    pub country: Option<String>,
}

impl ListContext {
    fn query(&self) -> Result<String, Error> {
        let mut query = form_query();
        if let Some(n) = self.n {
            check_n(n)?;
            query.append_pair("n", &n.to_string());
        }
        for (name, value) in [("page", &self.page), ("device", &self.device), ("country", &self.country)] {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
        Ok(query.finish())
    }
}

fn form_query() -> form_urlencoded::Serializer<'static, String> {
    form_urlencoded::Serializer::new(String::new())
}

fn check_n(n: usize) -> Result<(), Error> {
    let max = cascade_shared::validate::MAX_N;
    if (1..=max).contains(&n) {
        Ok(())
    } else {
        Err(FieldError::new("n", format!("must be 1..={max}, got {n}")).into())
    }
}

impl Client {
    /// A builder for a client of the origin at `base_url` (e.g. `http://127.0.0.1:8080`).
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.into(),
            api_key: None,
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            retries: 3,
            max_retry_wait: Duration::from_secs(5),
            http: None,
        }
    }

    /// The origin's URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// `GET /v1/users/{user_id}/recs`: the user's list.
    pub async fn user_recs(&self, user_id: &str, context: &ListContext) -> Result<RecList, Error> {
        cascade_shared::validate::validate_id("user_id", user_id)?;
        let url = format!("{}/v1/users/{user_id}/recs?{}", self.inner.base_url, context.query()?);
        self.call(reqwest::Method::GET, &url, None).await
    }

    /// `GET /v1/segments/{segment}/recs`: a segment's list (`page.device.country`).
    pub async fn segment_recs(&self, segment: &str, n: Option<usize>) -> Result<RecList, Error> {
        cascade_shared::segment::SegmentKey::parse(segment).map_err(|e| FieldError::new("segment", e.to_string()))?;
        let mut query = form_query();
        if let Some(n) = n {
            check_n(n)?;
            query.append_pair("n", &n.to_string());
        }
        let url = format!("{}/v1/segments/{segment}/recs?{}", self.inner.base_url, query.finish());
        self.call(reqwest::Method::GET, &url, None).await
    }

    /// `POST /v1/events`, in batches of at most [`MAX_EVENTS_PER_BATCH`]: every event is checked
    /// first (an [`Error::Invalid`] names `events[i].field`, and nothing is sent); events without
    /// an idempotency key get one, so retries count once. Answers the totals. When a batch fails
    /// for good, the batches before it stay applied: calling again with the same events (their
    /// keys now set, see [`with_idempotency_keys`]) is safe.
    pub async fn send_events(&self, events: Vec<Event>) -> Result<EventsAccepted, Error> {
        let events = with_idempotency_keys(events);
        let now_ms = error::unix_ms();
        for (index, event) in events.iter().enumerate() {
            cascade_shared::wire::validate_event(event, now_ms)
                .map_err(|e| FieldError::new(format!("events[{index}].{}", e.field), e.message))?;
        }
        let mut total = EventsAccepted { accepted: 0, duplicates: 0 };
        let url = format!("{}/v1/events", self.inner.base_url);
        for batch in events.chunks(MAX_EVENTS_PER_BATCH) {
            let body = serde_json::to_vec(&serde_json::json!({ "events": batch }))
                .map_err(|e| Error::Decode(format!("could not encode the events: {e}")))?;
            let answer: EventsAccepted = self.call(reqwest::Method::POST, &url, Some(body)).await?;
            total.accepted += answer.accepted;
            total.duplicates += answer.duplicates;
        }
        Ok(total)
    }

    /// `GET /readyz`: the origin's readiness report (components and what it serves).
    pub async fn readiness(&self) -> Result<serde_json::Value, Error> {
        self.call(reqwest::Method::GET, &format!("{}/readyz", self.inner.base_url), None).await
    }

    /// One call with the retry policy.
    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, Error> {
        let mut attempt = 0;
        loop {
            let error = match self.once(method.clone(), url, body.clone()).await {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            let Some(wait) = error.retry_wait(attempt) else { return Err(error) };
            if attempt >= self.inner.retries || wait > self.inner.max_retry_wait {
                return Err(error);
            }
            attempt += 1;
            tokio::time::sleep(wait).await;
        }
    }

    async fn once<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, Error> {
        let mut request = self.inner.http.request(method, url);
        if let Some(authorization) = &self.inner.authorization {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        if let Some(body) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        }
        let response = request.send().await.map_err(|e| Error::from_transport(&e, self.inner.timeout))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await.map_err(|e| Error::from_transport(&e, self.inner.timeout))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| Error::Decode(format!("{url}: {status} with an unexpected body: {e}")));
        }
        Err(Error::from_answer(status, &bytes, retry_after))
    }
}

/// `events`, each without an idempotency key given a new one (unique per process and call:
/// time, process, a counter and a per-process random value).
pub fn with_idempotency_keys(mut events: Vec<Event>) -> Vec<Event> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.finish()
    });
    let now = error::unix_ms();
    for event in events.iter_mut().filter(|event| event.idempotency_key.is_none()) {
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        event.idempotency_key = Some(format!("cc-{now:x}-{:x}-{count:x}", *SEED));
    }
    events
}

/// Whether `status` is one the origin answers with `Retry-After` when a retry may help.
fn may_retry(status: StatusCode) -> bool {
    matches!(status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS)
}
