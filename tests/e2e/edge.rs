//! The edge Worker under `wrangler dev` against the real origin: freshness (MISS, HIT, STALE with
//! one background refresh, HIT with the new body), the origin stopped (STALE, no 5xx), an origin
//! that never answers (aborted at the budget), signed-in visitors (their own lists, never the shared
//! cache), purge, CORS, and the demo page rendered by headless Chromium.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::time::{Duration, Instant};

use cascade_e2e::{Edge, Origin, TempDir, bundle_dir, relabel_bundle, repo_root};
use cascade_shared::wire::{ErrorBody, RecList, Source};
use serde_json::{Value, json};

const SECRET: &str = "edge-test-secret-0123456789";
const API_KEY: &str = "edge-test-internal-key-0123456789";
const ADMIN_TOKEN: &str = "edge-test-admin-token-0123456789";
const SEGMENT_ROUTE: &str = r#"cascade_http_requests_total{route="/v1/segments/{segment}/recs",status="200"}"#;

async fn start_origin(bundle: &std::path::Path) -> Origin {
    Origin::start(&[
        ("CASCADE_BUNDLE", bundle.display().to_string()),
        ("CASCADE_SECRET", SECRET.to_string()),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
        ("CASCADE_MODE", "production".to_string()),
    ])
    .await
    .unwrap()
}

/// How many segment lists the origin has served (from its Prometheus counter).
async fn origin_segment_calls(http: &reqwest::Client, origin: &Origin) -> u64 {
    let metrics = http.get(format!("{}/metrics", origin.url)).send().await.unwrap().text().await.unwrap();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(SEGMENT_ROUTE))
        .map(|count| count.trim().parse().unwrap())
        .unwrap_or(0)
}

struct Got {
    status: u16,
    cache: String,
    cache_control: String,
    body: String,
}

impl Got {
    fn list(&self) -> RecList {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn get(http: &reqwest::Client, url: String, auth: Option<&str>) -> Got {
    let mut request = http.get(url);
    if let Some(token) = auth {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let (status, cache, cache_control) = (response.status().as_u16(), header("x-cache"), header("cache-control"));
    Got { status, cache, cache_control, body: response.text().await.unwrap() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_lists_are_fresh_then_stale_then_refreshed_once_and_survive_the_origin() {
    let a = bundle_dir().unwrap();
    let dir = TempDir::new("cascade-edge-bundles").unwrap();
    let b = dir.path().join("b");
    relabel_bundle(&a, &b, "edge-next-model");
    let mut origin = start_origin(&a).await;
    let edge = Edge::start(
        &origin.url,
        SECRET,
        &[
            ("SEGMENT_FRESH_SECS", "3"),
            ("SEGMENT_STALE_SECS", "600"),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("CORS_ORIGINS", "https://shop.example"),
        ],
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let recs = format!("{}/recs?page=home&device=desktop&n=5", edge.url);

    let miss = get(&http, recs.clone(), None).await;
    assert_eq!((miss.status, miss.cache.as_str()), (200, "MISS"), "{}\n{}", miss.body, edge.output());
    let stored_at = Instant::now();
    let first = miss.list();
    assert_eq!(first.items.len(), 5);
    // The origin's rec_id and positions pass through; a HIT (same bytes) keeps the stored list's id.
    assert!(cascade_shared::rec_id::is_valid(&first.rec_id), "{}", miss.body);
    assert_eq!(first.items.iter().map(|i| i.position).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    let segment = first.segment.clone();
    let hit = get(&http, recs.clone(), None).await;
    assert_eq!((hit.cache.as_str(), hit.body.as_str()), ("HIT", miss.body.as_str()));
    assert_eq!(origin_segment_calls(&http, &origin).await, 1);

    // Hostile query strings map to the same entry.
    let noisy =
        get(&http, format!("{}/recs?n=5&device=Desktop&page=HOME&utm_source=x&q=%3Cscript%3E", edge.url), None).await;
    assert_eq!((noisy.cache.as_str(), noisy.body.as_str()), ("HIT", miss.body.as_str()));

    // A new model goes live at the origin; past the fresh period, concurrent requests are all served
    // at once from the stale copy (or, once it landed, the refreshed one), with one refresh between them.
    let swapped = http
        .post(format!("{}/admin/bundle", origin.url))
        .bearer_auth(API_KEY)
        .json(&json!({"path": b.display().to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(swapped.status(), 200, "{}", swapped.text().await.unwrap());
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(stored_at.elapsed()) + Duration::from_millis(300)).await;
    let burst: Vec<Got> = futures::future::join_all((0..8).map(|_| get(&http, recs.clone(), None))).await;
    for got in &burst {
        assert_eq!(got.status, 200);
        assert!(got.cache == "STALE" || got.cache == "HIT", "{}", got.cache);
    }
    let stale: Vec<&Got> = burst.iter().filter(|g| g.cache == "STALE").collect();
    assert!(!stale.is_empty(), "past the fresh period the first answer is STALE");
    assert!(stale.iter().all(|g| g.body == miss.body), "STALE serves the stored copy");
    let deadline = Instant::now() + Duration::from_secs(15);
    let refreshed = loop {
        let got = get(&http, recs.clone(), None).await;
        assert_eq!(got.status, 200);
        if got.cache == "HIT" && got.list().model_version == "edge-next-model" {
            break got;
        }
        assert!(Instant::now() < deadline, "no refreshed HIT: {} {}\n{}", got.cache, got.body, edge.output());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(refreshed.list().items.len(), 5);
    assert_eq!(origin_segment_calls(&http, &origin).await, 2, "one MISS and exactly one background refresh");

    // CORS: configured origins only.
    let preflight = |from: &'static str| {
        http.request(reqwest::Method::OPTIONS, format!("{}/recs", edge.url))
            .header("origin", from)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://shop.example").await.unwrap();
    assert_eq!(allowed.status(), 204);
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://shop.example");
    let refused = preflight("https://evil.example").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.json::<ErrorBody>().await.unwrap().error.code, "forbidden");
    let cross = http.get(&recs).header("origin", "https://shop.example").send().await.unwrap();
    assert_eq!(cross.headers()["access-control-allow-origin"], "https://shop.example");

    // Purge: admin only; afterwards the segment is a MISS again.
    let purge = format!("{}/admin/purge?segment={segment}", edge.url);
    let anonymous = http.post(&purge).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let bad_segment = http
        .post(format!("{}/admin/purge?segment=cart.fridge", edge.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad_segment.status(), 400);
    let purged: Value = http.post(&purge).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(purged["purged"], true, "{purged}");
    assert_eq!(get(&http, recs.clone(), None).await.cache, "MISS");

    // The origin stops: once past the fresh period the cached segment is served STALE, never a 5xx;
    // a segment never cached is a JSON error that names the cause.
    let stored_at = Instant::now();
    origin.stop();
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(stored_at.elapsed()) + Duration::from_millis(300)).await;
    for _ in 0..5 {
        let got = get(&http, recs.clone(), None).await;
        assert_eq!((got.status, got.cache.as_str()), (200, "STALE"), "{}", got.body);
        assert_eq!(got.list().model_version, "edge-next-model");
    }
    let never_cached = get(&http, format!("{}/recs?page=search&device=tablet", edge.url), None).await;
    assert_eq!(never_cached.status, 503, "{}", never_cached.body);
    let error: ErrorBody = serde_json::from_str(&never_cached.body).unwrap();
    assert_eq!(error.error.code, "origin_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_in_visitors_get_their_own_lists_and_the_demo_page_renders_in_chromium() {
    let bundle = bundle_dir().unwrap();
    let mut origin = start_origin(&bundle).await;
    let edge = Edge::start(&origin.url, SECRET, &[]).await.unwrap();
    let http = reqwest::Client::new();
    let (t0, t1) = (origin.visitor_token(API_KEY, "u0").await, origin.visitor_token(API_KEY, "u1").await);
    let recs = format!("{}/recs?page=home&device=desktop&n=8", edge.url);

    // Each visitor gets their own real-time list, private, and never from the shared cache.
    let mut lists = Vec::new();
    // (The third call reaches the origin again, whose own per-user cache answers it.)
    for (user, token, source) in
        [("u0", &t0, Source::Realtime), ("u1", &t1, Source::Realtime), ("u0", &t0, Source::CacheL1)]
    {
        let got = get(&http, recs.clone(), Some(token)).await;
        assert_eq!(got.status, 200, "{}", got.body);
        assert_eq!((got.cache.as_str(), got.cache_control.as_str()), ("BYPASS", "private, no-store"));
        let list = got.list();
        assert_eq!((list.user_id.as_deref(), list.source), (Some(user), source));
        lists.push(list.items);
    }
    assert_ne!(lists[0], lists[1], "two visitors, two lists");
    assert_eq!(lists[0], lists[2]);
    // The cookie works like the header.
    let by_cookie = http.get(&recs).header("cookie", format!("theme=dark; cascade_token={t1}")).send().await.unwrap();
    assert_eq!(by_cookie.json::<RecList>().await.unwrap().user_id.as_deref(), Some("u1"));
    // Personal answers never filled the shared entry: the first anonymous request is a MISS, and
    // its list names no user.
    let anonymous = get(&http, recs.clone(), None).await;
    assert_eq!(anonymous.cache, "MISS");
    assert_eq!(anonymous.list().user_id, None);
    assert_eq!(get(&http, recs.clone(), None).await.list().user_id, None);
    // A forged or expired token is a 401, not someone else's list.
    let forged = cascade_shared::token::issue(b"not-the-origin-secret-0123", "u0", u64::MAX / 2);
    let got = get(&http, recs.clone(), Some(&forged)).await;
    assert_eq!(got.status, 401, "{}", got.body);
    let expired =
        cascade_shared::token::issue(&cascade_shared::signing::Keys::derive(SECRET.as_bytes()).visitor_tokens, "u0", 1);
    assert!(get(&http, recs.clone(), Some(&expired)).await.body.contains("expired"));

    // The demo page, in a real headless browser: it fetches /recs and renders the titles.
    let expected: Vec<String> = {
        let list = get(&http, format!("{}/recs?page=home&device=desktop&n=10", edge.url), None).await.list();
        list.items.iter().map(|i| i.title.clone().unwrap_or_else(|| i.id.clone())).collect()
    };
    let dom = chromium(&edge.url, &["--dump-dom"]);
    assert!(dom.contains(r#"data-state="ready""#), "{dom}");
    let rendered: Vec<String> = dom
        .split("<li data-id=")
        .skip(1)
        .map(|li| li.split_once('>').unwrap().1.split("<span").next().unwrap().to_string())
        .collect();
    assert_eq!(rendered, expected, "the page shows the edge's list, titles in order");
    let shots = repo_root().join("target/cascade-test");
    std::fs::create_dir_all(&shots).unwrap();
    let png = shots.join("edge-demo.png");
    chromium(&edge.url, &[&format!("--screenshot={}", png.display()), "--window-size=900,760"]);
    assert!(std::fs::metadata(&png).unwrap().len() > 5_000, "screenshot saved at {}", png.display());

    // The origin stops: a signed-in visitor gets their segment's list, not an error.
    origin.stop();
    let fallback = get(&http, recs.clone(), Some(&t0)).await;
    assert_eq!(fallback.status, 200, "{}", fallback.body);
    assert_eq!(fallback.cache_control, "private, no-store");
    let list = fallback.list();
    assert_eq!((list.source, list.user_id), (Source::Segment, None));
}

/// Runs headless Chromium on `url` with `extra` flags; returns its stdout.
pub(crate) fn chromium(url: &str, extra: &[&str]) -> String {
    let profile = TempDir::new("cascade-chromium").unwrap();
    let output = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium runs (scripts/setup.sh installs Debian's chromium)");
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_never_answers_is_aborted_at_the_budget() {
    // Accepts connections and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = std::thread::spawn(move || listener.incoming().take(4).filter_map(Result::ok).collect::<Vec<_>>());
    let edge = Edge::start(&url, SECRET, &[("ORIGIN_TIMEOUT_MS", "300")]).await.unwrap();
    let http = reqwest::Client::new();
    let started = Instant::now();
    let got = get(&http, format!("{}/recs", edge.url), None).await;
    let waited = started.elapsed();
    assert_eq!(got.status, 503, "{}", got.body);
    let error = serde_json::from_str::<ErrorBody>(&got.body).unwrap().error;
    assert_eq!(error.code, "origin_timeout");
    assert!(error.message.contains("within 300 ms"), "the configured budget cut it: {}", error.message);
    assert!(waited < Duration::from_secs(10), "answered after {waited:?}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_staging_environment_rate_limits_admin_routes_with_429_and_retry_after() {
    // wrangler.toml's [env.staging]: ADMIN_LIMITER allows 10 admin requests a minute per client
    // address. No origin is needed: a purge never calls it.
    let edge =
        Edge::start_env(Some("staging"), "http://127.0.0.1:9", SECRET, &[("ADMIN_TOKEN", ADMIN_TOKEN)]).await.unwrap();
    let http = reqwest::Client::new();
    let purge = format!("{}/admin/purge?segment=home.desktop.us", edge.url);
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..14 {
        let response = http.post(&purge).bearer_auth("a-wrong-guess").send().await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 && refused.is_none() {
            let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            let body: ErrorBody = response.json().await.unwrap();
            refused = Some((retry_after, body.error.code));
        }
    }
    assert_eq!(&statuses[..10], &[401; 10], "the first ten are checked (and refused): {statuses:?}");
    assert!(statuses[10..].iter().all(|&s| s == 429), "then rate limited: {statuses:?}");
    assert_eq!(refused, Some((Some("60".to_string()), "rate_limited".to_string())));
}

/// Every operation of `docs/edge-openapi.json` called on the Worker: each answer's status is
/// documented for its operation and its JSON body validates against the documented schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_answers_only_what_its_openapi_document_says() {
    use cascade_origin::http::openapi::{conformance::Conformance, edge};
    let bundle = bundle_dir().unwrap();
    let origin = start_origin(&bundle).await;
    let edge_worker = Edge::start(&origin.url, SECRET, &[("ADMIN_TOKEN", ADMIN_TOKEN)]).await.unwrap();
    let conformance = Conformance::new(serde_json::to_value(edge::document()).unwrap());
    let http = reqwest::Client::new();
    let token = origin.visitor_token(API_KEY, "u2").await;
    let click = json!({"events": [{"kind": "click", "item_id": "i1"}]});
    let purchase = json!({"events": [{"kind": "purchase", "item_id": "i1"}]});
    let long = format!("/recs?x={}", "a".repeat(2100));
    /// Method, path and query, bearer, body, expected status.
    type Call<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a Value>, u16);
    let calls: Vec<Call> = vec![
        ("GET", "/recs?page=home&device=mobile&n=5", None, None, 200),
        ("GET", "/recs?page=home&device=mobile&n=5", None, None, 200),
        ("GET", "/recs?n=0", None, None, 400),
        ("GET", "/recs", Some("v1.u2.1.00"), None, 401),
        ("GET", "/recs?n=3", Some(&token), None, 200),
        ("GET", &long, None, None, 414),
        ("POST", "/events", Some(&token), Some(&click), 202),
        ("POST", "/events", None, Some(&click), 401),
        ("POST", "/events", Some(&token), Some(&purchase), 400),
        ("POST", "/admin/purge?segment=home.mobile.zz", Some(ADMIN_TOKEN), None, 200),
        ("POST", "/admin/purge", Some(ADMIN_TOKEN), None, 400),
        ("POST", "/admin/purge?segment=home.mobile.zz", Some("wrong"), None, 401),
        ("GET", "/healthz", None, None, 200),
        ("GET", "/", None, None, 200),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (method, target, bearer, body, expected) in calls {
        let url = format!("{}{target}", edge_worker.url);
        let mut request = http.request(method.parse().unwrap(), &url);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let bytes = response.bytes().await.unwrap();
        assert_eq!(status, expected, "{method} {target}: {}", String::from_utf8_lossy(&bytes));
        let path = target.split('?').next().unwrap();
        let checked = conformance.check(method, path, status, &content_type, &bytes);
        seen.insert(checked.unwrap_or_else(|problem| panic!("{problem}")));
    }
    for operation in conformance.operations() {
        assert!(seen.contains(&operation), "{operation} is documented but not called");
    }
}
