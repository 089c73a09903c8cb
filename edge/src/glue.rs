//! The `worker` glue: the only file that touches the Workers runtime. It gathers request facts,
//! asks `routing` what to do, and performs the Cache API and fetch calls.

use cascade_shared::validate::MAX_N;
use worker::{Cache, Context, Date, Env, Fetch, Headers, Method, Request, RequestInit, Response, Result, event};

use crate::routing::{self, EdgeConfig, RequestFacts, Route};

fn json_response(status: u16, body: String, request_id: &str) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    headers.set("x-request-id", request_id)?;
    Ok(Response::from_bytes(body.into_bytes())?.with_status(status).with_headers(headers))
}

fn request_id(req: &Request) -> String {
    match req.headers().get("x-request-id").ok().flatten() {
        Some(id) if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()) => id,
        // Not a security token: Math.random is enough to follow one request in the logs.
        _ => format!("{:016x}{:016x}", (js_sys::Math::random() * 2f64.powi(53)) as u64, Date::now().as_millis()),
    }
}

fn config(env: &Env) -> std::result::Result<EdgeConfig, String> {
    let var = |name: &str| env.var(name).ok().map(|v| v.to_string());
    let secret = env.secret("ORIGIN_SECRET").ok().map(|v| v.to_string()).or_else(|| var("ORIGIN_SECRET"));
    EdgeConfig::from_vars(var("ORIGIN_URL"), secret, var("SEGMENT_TTL_SECS"))
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let request_id = request_id(&req);
    let url = req.url()?;
    let method = req.method().to_string();
    let country = req.cf().and_then(|cf| cf.country());
    let user_agent = req.headers().get("user-agent").ok().flatten();
    let facts = RequestFacts {
        method: &method,
        path: url.path(),
        query: url.query().unwrap_or(""),
        country: country.as_deref(),
        user_agent: user_agent.as_deref(),
    };
    let (segment, n) = match routing::route(&facts) {
        Ok(Route::Health) => return json_response(200, r#"{"status":"ok"}"#.into(), &request_id),
        Ok(Route::SegmentRecs { segment, n }) => (segment, n),
        Err(refusal) => {
            let (status, body) = routing::refusal_response(&refusal);
            return json_response(status, body, &request_id);
        }
    };
    let config = match config(&env) {
        Ok(config) => config,
        Err(message) => {
            worker::console_error!("edge misconfigured: {message}");
            return json_response(
                500,
                cascade_shared::wire::ErrorBody::new("misconfigured", message, None).to_json(),
                &request_id,
            );
        }
    };

    let cache = Cache::default();
    let key = routing::cache_key(&url.origin().ascii_serialization(), &segment);
    if let Some(mut cached) = cache.get(&key, false).await? {
        let body = cached.bytes().await?;
        if let Ok(cut) = routing::cut_list(&body, n) {
            let mut response = json_response(200, String::from_utf8_lossy(&cut).into_owned(), &request_id)?;
            response.headers_mut().set("x-cache", "HIT")?;
            return Ok(response);
        }
        // An unreadable cached entry is dropped and refetched.
        let _ = cache.delete(&key, false).await;
    }

    let origin = routing::segment_request(&config, &segment, Date::now().as_millis() / 1000, &request_id);
    let headers = Headers::new();
    for (name, value) in &origin.headers {
        headers.set(name, value)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::Get).with_headers(headers);
    let fetched = Fetch::Request(Request::new_with_init(&origin.url, &init)?).send().await;
    let mut upstream = match fetched {
        Ok(response) if response.status_code() == 200 => response,
        Ok(response) => {
            let status = response.status_code();
            worker::console_error!("origin answered {status} for {segment}");
            return json_response(
                503,
                routing::origin_unavailable_body(&format!("origin status {status}")),
                &request_id,
            );
        }
        Err(error) => return json_response(503, routing::origin_unavailable_body(&error.to_string()), &request_id),
    };
    let full = upstream.bytes().await?;
    let cut = match routing::cut_list(&full, n.min(MAX_N)) {
        Ok(cut) => cut,
        Err(message) => return json_response(502, routing::origin_unavailable_body(&message), &request_id),
    };

    let stored_headers = Headers::new();
    stored_headers.set("content-type", "application/json")?;
    stored_headers.set("cache-control", &routing::segment_cache_control(config.segment_ttl_secs))?;
    stored_headers.set("cache-tag", &format!("cascade-segment-{segment},cascade-segments"))?;
    let stored = Response::from_bytes(full)?.with_headers(stored_headers);
    if let Err(error) = cache.put(&key, stored).await {
        worker::console_error!("cache put failed for {segment}: {error}");
    }

    let mut response = json_response(200, String::from_utf8_lossy(&cut).into_owned(), &request_id)?;
    response.headers_mut().set("x-cache", "MISS")?;
    Ok(response)
}
