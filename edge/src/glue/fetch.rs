//! Outbound calls to the origin: one fetch with its method and body, aborted at
//! `ORIGIN_TIMEOUT_MS`.

use std::time::Duration;

use futures_util::future::{Either, select};
use worker::{AbortController, Delay, Fetch, Headers, Method, Request, RequestInit};

use crate::config::EdgeConfig;
use crate::origin::{OriginFailure, OriginRequest};

/// One origin GET with the configured budget: aborted when it runs out. Returns a 200's body.
pub(super) async fn call_origin(
    config: &EdgeConfig,
    origin: &OriginRequest,
) -> std::result::Result<Vec<u8>, OriginFailure> {
    match fetch_origin(config, origin).await? {
        (200, body) => Ok(body),
        (status, _) => Err(OriginFailure::Status(status)),
    }
}

/// One origin call (its method and body) with the configured budget: aborted when it runs out.
/// Returns the status and body, whatever the status.
pub(super) async fn fetch_origin(
    config: &EdgeConfig,
    origin: &OriginRequest,
) -> std::result::Result<(u16, Vec<u8>), OriginFailure> {
    let unreachable = |e: worker::Error| OriginFailure::Unreachable(e.to_string());
    let headers = Headers::new();
    for (name, value) in &origin.headers {
        headers.set(name, value).map_err(unreachable)?;
    }
    let mut init = RequestInit::new();
    let method = if origin.method == "POST" { Method::Post } else { Method::Get };
    init.with_method(method).with_headers(headers);
    if let Some(body) = &origin.body {
        init.with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
    }
    let request = Request::new_with_init(&origin.url, &init).map_err(unreachable)?;
    let controller = AbortController::default();
    let signal = controller.signal();
    let call = async move {
        let mut response = Fetch::Request(request).send_with_signal(&signal).await.map_err(unreachable)?;
        let status = response.status_code();
        response.bytes().await.map(|body| (status, body)).map_err(unreachable)
    };
    let budget = Delay::from(Duration::from_millis(u64::from(config.origin_timeout_ms)));
    futures_util::pin_mut!(call, budget);
    match select(call, budget).await {
        Either::Left((result, _)) => result,
        Either::Right(((), _)) => {
            controller.abort();
            Err(OriginFailure::Timeout(config.origin_timeout_ms))
        }
    }
}
