//! The `worker` glue: the only module that touches the Workers runtime (`purge`: KV generations
//! and the purge route; `fetch`: outbound origin calls). It gathers request facts,
//! asks the pure modules what to do (`route`, `segment_cache`, `origin`, `cors`, `respond`), and
//! performs the Cache API and fetch calls they name (`trace`: the Worker's span of a request).
//!
//! Segment lists: a stored entry carries [`STORED_AT_HEADER`]; within the fresh period it is a HIT,
//! within the stale window it is served at once as STALE while one background refresh
//! (`wait_until`) replaces it, and past both it is fetched again. An origin call is aborted after
//! `ORIGIN_TIMEOUT_MS`; when it fails, any stored copy is served as STALE, and only with nothing
//! stored does the visitor get a JSON error. Signed-in visitors go to the origin's user endpoint and
//! their answers never touch the shared cache.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use cascade_shared::segment::SegmentKey;
use cascade_shared::validate::{MAX_N, is_valid_request_id};
use worker::kv::KvStore;
use worker::{Cache, Context, Date, Env, Headers, Method, RateLimiter, Request, Response, Result, event};

use crate::config::EdgeConfig;
use crate::cors::cors_headers;
use crate::origin::{self, Ids, OriginFailure, checked};
use crate::respond::refusal_response;
use crate::route::{self, Refusal, RequestFacts, Route, check_admin, visitor};
use crate::segment_cache::{self, CUT_HEADER, Entry, IsolateCache, OnLookup, STORED_AT_HEADER};

mod fetch;
mod purge;
mod trace;

use self::fetch::{call_origin, fetch_origin};
use self::purge::{GENERATIONS_BINDING, purge, segment_key};
use self::trace::EdgeSpan;

const DEMO_PAGE: &str = include_str!("../demo.html");

thread_local! {
    /// Cache keys with a background refresh in flight in this isolate: concurrent STALE answers
    /// for one key start one refresh, not one each.
    static REVALIDATING: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
    /// The segment lists this isolate read or stored, kept as long as the generations.
    static ENTRIES: RefCell<IsolateCache> = RefCell::new(IsolateCache::default());
}

fn json_response(status: u16, body: String) -> Result<Response> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    Ok(Response::from_bytes(body.into_bytes())?.with_status(status).with_headers(headers))
}

fn refusal(refusal: &Refusal) -> Result<Response> {
    let (status, body) = refusal_response(refusal);
    let mut response = json_response(status, body)?;
    if let Refusal::RateLimited(seconds) = refusal {
        response.headers_mut().set("retry-after", &seconds.to_string())?;
    }
    Ok(response)
}

/// The Workers rate-limiting bindings (`[[ratelimits]]` in wrangler.toml); a binding that is not
/// configured is no limit.
struct Limits {
    /// Per signed-in visitor: their requests always reach the origin (never the shared cache).
    signed_in: Option<RateLimiter>,
    /// Per client address on admin routes: slows a guessed `ADMIN_TOKEN`.
    admin: Option<RateLimiter>,
}

/// The period of both limits in wrangler.toml, seconds: a refused caller may retry after it.
const LIMIT_PERIOD_SECS: u32 = 60;

impl Limits {
    fn from_env(env: &Env) -> Self {
        Limits { signed_in: env.rate_limiter("SIGNED_IN_LIMITER").ok(), admin: env.rate_limiter("ADMIN_LIMITER").ok() }
    }
}

/// `Err(RateLimited)` when `limiter` refuses `key`. A limiter that fails lets the request through
/// (logged): rate limiting protects the origin, it must not take the edge down with it.
async fn check_limit(limiter: Option<&RateLimiter>, key: String) -> std::result::Result<(), Refusal> {
    let Some(limiter) = limiter else { return Ok(()) };
    match limiter.limit(key).await {
        Ok(outcome) if !outcome.success => Err(Refusal::RateLimited(LIMIT_PERIOD_SECS)),
        Ok(_) => Ok(()),
        Err(error) => {
            worker::console_error!("rate limiter failed, request let through: {error}");
            Ok(())
        }
    }
}

fn request_id(req: &Request) -> String {
    match header(req, "x-request-id") {
        Some(id) if is_valid_request_id(&id) => id,
        // Not a security token: Math.random is enough to follow one request in the logs.
        _ => format!("{:016x}{:016x}", (js_sys::Math::random() * 2f64.powi(53)) as u64, Date::now().as_millis()),
    }
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).ok().flatten()
}

/// The Worker's settings, read and checked once per isolate (vars and secrets change only with a
/// new deployment, which starts new isolates): reading eight bindings and deriving the keys on every
/// request was part of what a HIT cost beyond the runtime's floor. A configuration that does not
/// validate is not kept, so every request reports it.
fn config(env: &Env) -> std::result::Result<EdgeConfig, String> {
    thread_local! {
        static CONFIG: RefCell<Option<EdgeConfig>> = const { RefCell::new(None) };
    }
    if let Some(config) = CONFIG.with(|cached| cached.borrow().clone()) {
        return Ok(config);
    }
    let config = EdgeConfig::from_lookup(|name| {
        env.secret(name).ok().map(|v| v.to_string()).or_else(|| env.var(name).ok().map(|v| v.to_string()))
    })?;
    CONFIG.with(|cached| *cached.borrow_mut() = Some(config.clone()));
    Ok(config)
}

#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> Result<Response> {
    let request_id = request_id(&req);
    let started_ms = Date::now().as_millis();
    let browser_trace = header(&req, cascade_shared::trace::HEADER);
    let browser_origin = header(&req, "origin");
    let preflight = req.method() == Method::Options;
    let (mut response, cors) = match config(&env) {
        Ok(config) => {
            let cors = cors_headers(&config, browser_origin.as_deref(), preflight);
            let response = match &cors {
                Err(refused) => refusal(refused),
                Ok(_) => {
                    let kv = env.kv(GENERATIONS_BINDING).ok();
                    let span = EdgeSpan::start(&config, browser_trace.as_deref());
                    let ids = Ids { request_id: request_id.clone(), traceparent: span.traceparent() };
                    let name = format!("{} {}", req.method(), req.path());
                    let response = handle(req, config.clone(), Limits::from_env(&env), kv, &ctx, &ids).await;
                    let status = response.as_ref().map_or(500, Response::status_code);
                    span.export(&config, &ctx, name, started_ms, status, &request_id);
                    response
                }
            };
            (response, cors.unwrap_or_default())
        }
        Err(message) => {
            worker::console_error!("edge misconfigured: {message}");
            let body = cascade_shared::wire::ErrorBody::new("misconfigured", message, None).to_json();
            (json_response(500, body), Vec::new())
        }
    };
    if let Err(error) = &response {
        worker::console_error!("request {request_id} failed inside the Worker: {error}");
        let body = cascade_shared::wire::ErrorBody::new("edge_error", error.to_string(), None).to_json();
        response = json_response(500, body);
    }
    let mut response = response?;
    let headers = response.headers_mut();
    headers.set("x-request-id", &request_id)?;
    for (name, value) in cors {
        headers.set(name, &value)?;
    }
    Ok(response)
}

async fn handle(
    mut req: Request,
    config: EdgeConfig,
    limits: Limits,
    kv: Option<KvStore>,
    ctx: &Context,
    ids: &Ids,
) -> Result<Response> {
    let url = req.url()?;
    let method = req.method().to_string();
    let country = req.cf().and_then(|cf| cf.country());
    let user_agent = header(&req, "user-agent");
    let ch_mobile = header(&req, "sec-ch-ua-mobile");
    let facts = RequestFacts {
        method: &method,
        path: url.path(),
        query: url.query().unwrap_or(""),
        country: country.as_deref(),
        user_agent: user_agent.as_deref(),
        ch_mobile: ch_mobile.as_deref(),
    };
    let route = match route::route(&facts) {
        Ok(route) => route,
        Err(refused) => return refusal(&refused),
    };
    let cache_origin = url.origin().ascii_serialization();
    match route {
        Route::Health => json_response(200, r#"{"status":"ok"}"#.into()),
        Route::Preflight => Ok(Response::empty()?.with_status(204)),
        Route::Demo => {
            let mut response = Response::from_html(DEMO_PAGE)?;
            response.headers_mut().set("cache-control", "public, max-age=300")?;
            Ok(response)
        }
        Route::Purge { segment } => {
            let address = header(&req, "cf-connecting-ip").unwrap_or_else(|| "unknown".into());
            if let Err(refused) = check_limit(limits.admin.as_ref(), format!("admin:{address}")).await {
                return refusal(&refused);
            }
            if let Err(refused) = check_admin(&config, header(&req, "authorization").as_deref()) {
                return refusal(&refused);
            }
            purge(&config, kv.as_ref(), &cache_origin, segment.as_ref()).await
        }
        Route::Events => {
            let token = cascade_shared::token::from_headers(
                header(&req, "authorization").as_deref(),
                header(&req, "cookie").as_deref(),
            )
            .map(str::to_string);
            let Some(token) = token else {
                return refusal(&Refusal::Unauthorized(
                    "POST /events needs a user token (Authorization: Bearer, or the cascade_token cookie)".into(),
                ));
            };
            if let Err(invalid) = crate::events::check_declared_length(header(&req, "content-length").as_deref()) {
                return refusal(&Refusal::Invalid(invalid));
            }
            let body = req.bytes().await?;
            let visitor = Visitor { token: &token, limiter: limits.signed_in.as_ref() };
            forward_events(&config, visitor, &body, ids).await
        }
        Route::Recs { segment, n } => {
            let token = cascade_shared::token::from_headers(
                header(&req, "authorization").as_deref(),
                header(&req, "cookie").as_deref(),
            )
            .map(str::to_string);
            match token {
                Some(token) => {
                    let visitor = Visitor { token: &token, limiter: limits.signed_in.as_ref() };
                    personal(&config, ctx, kv.as_ref(), &cache_origin, visitor, segment, n, ids).await
                }
                None => {
                    let key = segment_key(&config, kv.as_ref(), &cache_origin, &segment).await;
                    segment_list(&config, ctx, key, segment, n, ids).await
                }
            }
        }
    }
}

/// A signed-in visitor's token and the limiter their requests count against.
struct Visitor<'a> {
    token: &'a str,
    limiter: Option<&'a RateLimiter>,
}

/// The user a visitor's token names, within their rate limit (keyed by the verified user: one
/// visitor's token cannot spend another's allowance).
async fn verified(config: &EdgeConfig, caller: Visitor<'_>, now_secs: u64) -> std::result::Result<String, Refusal> {
    let user_id = visitor(config, caller.token, now_secs)?;
    check_limit(caller.limiter, format!("user:{user_id}")).await?;
    Ok(user_id)
}

/// A signed-in visitor's events, checked and forwarded signed to the origin, whose answer (202, or
/// its JSON error) is passed on; never stored.
async fn forward_events(config: &EdgeConfig, caller: Visitor<'_>, body: &[u8], ids: &Ids) -> Result<Response> {
    let now = Date::now().as_millis();
    let user_id = match verified(config, caller, now / 1000).await {
        Ok(user_id) => user_id,
        Err(refused) => return refusal(&refused),
    };
    let batch = match crate::events::visitor_batch(body, &user_id, now) {
        Ok(batch) => batch,
        Err(invalid) => return refusal(&Refusal::Invalid(invalid)),
    };
    let request = crate::events::events_request(config, batch, now / 1000, ids);
    let mut response = match fetch_origin(config, &request).await {
        Ok((status, body)) => json_response(status, String::from_utf8_lossy(&body).into_owned())?,
        Err(failure) => {
            worker::console_error!("events for {user_id}: origin {failure}");
            let (status, body) = crate::respond::events_failure_response(&failure);
            json_response(status, body)?
        }
    };
    response.headers_mut().set("cache-control", "no-store")?;
    Ok(response)
}

/// A signed-in visitor's own list, never stored in the shared cache; if the origin fails, their
/// segment's list.
#[allow(clippy::too_many_arguments)] // the request's parts, each used once
async fn personal(
    config: &EdgeConfig,
    ctx: &Context,
    kv: Option<&KvStore>,
    cache_origin: &str,
    caller: Visitor<'_>,
    segment: SegmentKey,
    n: usize,
    ids: &Ids,
) -> Result<Response> {
    let now = Date::now().as_millis();
    let user_id = match verified(config, caller, now / 1000).await {
        Ok(user_id) => user_id,
        Err(refused) => return refusal(&refused),
    };
    let request = origin::user_request(config, &user_id, &segment, n, now / 1000, ids);
    let mut response = match call_origin(config, &request).await.and_then(|body| checked(&body, n)) {
        Ok(list) => {
            let mut response = json_response(200, list)?;
            response.headers_mut().set("x-cache", "BYPASS")?;
            response
        }
        Err(failure) => {
            worker::console_error!("personal list for {user_id} failed ({failure}); serving segment {segment}");
            let key = segment_key(config, kv, cache_origin, &segment).await;
            segment_list(config, ctx, key, segment, n, ids).await?
        }
    };
    response.headers_mut().set("cache-control", "private, no-store")?;
    Ok(response)
}

/// A segment's list from the cache (HIT/STALE) or the origin (MISS), as `segment_cache` decides.
async fn segment_list(
    config: &EdgeConfig,
    ctx: &Context,
    key: String,
    segment: SegmentKey,
    n: usize,
    ids: &Ids,
) -> Result<Response> {
    let cache = Cache::default();
    let (now, ttl_ms) = (Date::now().as_millis(), u64::from(config.generation_cache_secs) * 1000);
    let stored = match ENTRIES.with(|entries| entries.borrow().get(&key, now, ttl_ms)) {
        Some(entry) => Some(entry),
        None => match cache.get(&key, false).await? {
            Some(mut response) => {
                let stored_at = response.headers().get(STORED_AT_HEADER).ok().flatten();
                let cut = response.headers().get(CUT_HEADER).ok().flatten();
                let entry = Rc::new(Entry { stored_at, cut, body: response.bytes().await? });
                ENTRIES.with(|entries| entries.borrow_mut().put(&key, Rc::clone(&entry), now, ttl_ms));
                Some(entry)
            }
            None => None,
        },
    };
    let lookup = stored.as_ref().map(|entry| entry.stored());
    match segment_cache::on_lookup(config, lookup, Date::now().as_millis(), n) {
        OnLookup::Serve { list, state, revalidate } => {
            if revalidate {
                revalidate_in_background(config, ctx, key, segment, ids);
            }
            return answer(list, state.as_str(), state.max_age(config));
        }
        OnLookup::Fetch { delete_stored: true } => {
            // An unreadable entry is dropped and refetched.
            ENTRIES.with(|entries| entries.borrow_mut().remove(&key));
            let _ = cache.delete(&key, false).await;
        }
        OnLookup::Fetch { delete_stored: false } => {}
    }
    let fetched = fetch_and_store(config, &key, &segment, ids).await;
    if let Err(failure) = &fetched {
        worker::console_error!("segment {segment}: origin {failure}");
    }
    let stored_body = stored.as_ref().map(|entry| entry.body.as_slice());
    match segment_cache::after_fetch(fetched.as_deref(), stored_body, n) {
        Ok((list, state)) => answer(list, state.as_str(), state.max_age(config)),
        Err((status, body)) => json_response(status, body),
    }
}

fn answer(list: String, cache_state: &str, max_age: u32) -> Result<Response> {
    let mut response = json_response(200, list)?;
    let headers = response.headers_mut();
    headers.set("x-cache", cache_state)?;
    headers.set("cache-control", &format!("public, max-age={max_age}"))?;
    Ok(response)
}

/// Starts one background refresh of `key`, unless one is already running in this isolate.
fn revalidate_in_background(config: &EdgeConfig, ctx: &Context, key: String, segment: SegmentKey, ids: &Ids) {
    let started = REVALIDATING.with(|set| set.borrow_mut().insert(key.clone()));
    if !started {
        return;
    }
    let (config, ids) = (config.clone(), ids.clone());
    ctx.wait_until(async move {
        match fetch_and_store(&config, &key, &segment, &ids).await {
            Ok(_) => worker::console_log!("segment {segment}: refreshed in the background"),
            Err(failure) => worker::console_error!("segment {segment}: background refresh failed: {failure}"),
        }
        REVALIDATING.with(|set| set.borrow_mut().remove(&key));
    });
}

/// Fetches a segment's full list and stores it; returns the full body.
async fn fetch_and_store(
    config: &EdgeConfig,
    key: &str,
    segment: &SegmentKey,
    ids: &Ids,
) -> std::result::Result<Vec<u8>, OriginFailure> {
    let request = origin::segment_request(config, segment, Date::now().as_millis() / 1000, ids);
    let full = call_origin(config, &request).await?;
    checked(&full, MAX_N)?;
    if let Err(error) = store(key, segment, config, full.clone()).await {
        worker::console_error!("cache put failed for {segment}: {error}");
    }
    Ok(full)
}

async fn store(key: &str, segment: &SegmentKey, config: &EdgeConfig, body: Vec<u8>) -> Result<()> {
    let headers = Headers::new();
    headers.set("content-type", "application/json")?;
    headers.set("cache-control", &segment_cache::stored_cache_control(config))?;
    headers.set("cache-tag", &segment_cache::cache_tags(segment))?;
    let now = Date::now().as_millis();
    headers.set(STORED_AT_HEADER, &now.to_string())?;
    let cut = segment_cache::cut_index(&body);
    if let Some(index) = &cut {
        headers.set(CUT_HEADER, index)?;
    }
    let entry = Rc::new(Entry { stored_at: Some(now.to_string()), cut, body: body.clone() });
    let ttl_ms = u64::from(config.generation_cache_secs) * 1000;
    ENTRIES.with(|entries| entries.borrow_mut().put(key, entry, now, ttl_ms));
    Cache::default().put(key, Response::from_bytes(body)?.with_headers(headers)).await
}
