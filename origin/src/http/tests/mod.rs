//! The router, in process: every status DESIGN.md promises, driven with `tower::ServiceExt::oneshot`
//! and no socket. The store (in-process) and FAISS (`Flat`) are real; the ranker is
//! [`DotRanker`], a fake named as such (a TorchScript model needs a trained bundle; the ranker's
//! real behaviour is covered by `tests/components/ranker.rs` and the end-to-end tests).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use cascade_shared::embedding::encode_file;
use cascade_shared::signing::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
use cascade_shared::wire::RecList;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{AppState, REQUEST_ID, router};
use crate::app::{RecommenderFactory, Serving};
use crate::auth::Auth;
use crate::brownout::Brownout;
use crate::bundle::{Bundle, read_embeddings};
use crate::cache::{CacheConfig, ListKey, RedisUserState, UserCaches, UserStateBackend};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::ranking::features::input_layout;
use crate::ranking::{RankError, Ranker};
use crate::recommend::precomputed::NoPrecomputed;
use crate::recommend::{Components, Recommender};
use crate::redis::ShardSet;
use crate::retrieval::{FaissRetriever, build_index};
use crate::store::memory::MemoryStore;
use crate::store::redis_shards::RedisShardStore;
use crate::store::{EmbeddingStore, StoreError};
use crate::work_queue::WorkQueue;

mod faults;
mod openapi;

const SECRET: &str = "router-secret-0123456789";
const KEY: &str = "router-internal-key-0123456789";
const DIM: usize = 4;

/// A fake ranker (a stand-in for the TorchScript model): a row's score is the dot product of its
/// user and item parts (the `user*item` columns summed), or always `refusal` when set.
struct DotRanker {
    refusal: Option<RankError>,
}

#[async_trait]
impl Ranker for DotRanker {
    async fn score(&self, rows: Vec<f32>, _deadline: Instant) -> Result<Vec<f32>, RankError> {
        if let Some(refusal) = &self.refusal {
            return Err(refusal.clone());
        }
        Ok(rows.chunks(self.input_width()).map(|row| row[2 * DIM..3 * DIM].iter().sum()).collect())
    }

    fn input_width(&self) -> usize {
        crate::ranking::features::input_width(DIM)
    }

    fn describe(&self) -> String {
        "dot product (test fake)".into()
    }
}

/// Writes a small, valid bundle (no model: the fake ranker needs none) with `popular` items.
fn write_bundle(dir: &Path, id: &str, popular: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let items: Vec<String> = (0..20).map(|i| format!("i{i}")).collect();
    let item_ids: Vec<&str> = items.iter().map(String::as_str).collect();
    let item_values: Vec<f32> =
        (0..20).flat_map(|i| (0..DIM).map(move |d| ((i * 7 + d * 3) % 11) as f32 / 11.0)).collect();
    std::fs::write(dir.join("items.emb"), encode_file(id, DIM, &item_ids, &item_values)).unwrap();
    let user_values: Vec<f32> = (0..2).flat_map(|u| (0..DIM).map(move |d| ((u + d) % 3) as f32)).collect();
    std::fs::write(dir.join("users.emb"), encode_file(id, DIM, &["u1", "u2"], &user_values)).unwrap();
    let metadata = json!({
        "bundle_id": id, "dim": DIM, "input_width": crate::ranking::features::input_width(DIM),
        "input_layout": input_layout(DIM), "pages": cascade_shared::segment::PAGES,
        "devices": cascade_shared::segment::DEVICES, "popular": popular,
    });
    std::fs::write(dir.join("metadata.json"), metadata.to_string()).unwrap();
    let reference = json!({"bundle_id": id, "batch": {"inputs": [], "scores": []}});
    std::fs::write(dir.join("reference.json"), reference.to_string()).unwrap();
}

struct Harness {
    state: AppState,
    /// The recommender's brownout switch (no probe runs: tests flip it with `observe`).
    brownout: Arc<Brownout>,
    _dir: tempfile::TempDir,
}

async fn harness(popular: &[&str], refusal: Option<RankError>, config: Config) -> Harness {
    harness_over(popular, refusal, config, None).await
}

/// Where users' embeddings and state live when not in process.
struct Stores {
    embeddings: Arc<dyn EmbeddingStore>,
    state: Arc<dyn UserStateBackend>,
}

async fn harness_over(popular: &[&str], refusal: Option<RankError>, config: Config, stores: Option<Stores>) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    write_bundle(dir.path(), "router-test", popular);
    let bundle = Arc::new(Bundle::load(dir.path()).unwrap());
    let users = read_embeddings(&bundle.users_path(), bundle.id(), DIM).unwrap();
    let index = build_index("Flat", DIM, &bundle.items.values).unwrap();
    let metrics = Arc::new(Metrics::new());
    let (store, caches) = match stores {
        Some(Stores { embeddings, state }) => {
            (embeddings, UserCaches::new(&CacheConfig::default(), state, true, metrics.cache_lookups.clone()))
        }
        None => (
            Arc::new(MemoryStore::with_users(&users)) as Arc<dyn EmbeddingStore>,
            UserCaches::in_process(&CacheConfig::default(), metrics.cache_lookups.clone()),
        ),
    };
    let components = Components {
        store,
        retriever: Arc::new(FaissRetriever::new(index, 1, 1, "Flat").unwrap()),
        searches: Arc::new(WorkQueue::start("faiss", 1, 16, metrics.work_queues.clone()).unwrap()),
        ranker: Arc::new(DotRanker { refusal }),
        precomputed: Arc::new(NoPrecomputed),
        faults: None,
        brownout: Brownout::new(Duration::from_millis(10)),
        feature_log: Arc::new(crate::feature_log::FeatureLog::off()),
        rules: Arc::new(crate::recommend::list_rules::ListRules::new(&config.rules, None)),
    };
    let brownout = Arc::clone(&components.brownout);
    let deadline = std::time::Duration::from_millis(config.serving.deadline_ms);
    let recommender = Recommender::new(bundle, components, Arc::clone(&metrics), 10, deadline).await;
    let serving_config = config.serving.clone();
    let factory = Arc::new(RecommenderFactory::new(config, Arc::clone(&metrics), None));
    let state = AppState::new(
        Arc::new(Serving::new(recommender, factory)),
        Arc::new(caches),
        Arc::new(Auth::new(SECRET, &[KEY.to_string()], 300)),
        metrics,
        &serving_config,
    );
    Harness { state, brownout, _dir: dir }
}

async fn default_harness() -> Harness {
    harness(&["i3", "i1", "i2"], None, Config::default()).await
}

fn bearer(method: &str, uri: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(uri).header(header::AUTHORIZATION, format!("Bearer {KEY}"))
}

async fn send(state: &AppState, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = to_bytes(body, usize::MAX).await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, json)
}

async fn get(state: &AppState, uri: &str) -> (StatusCode, axum::http::HeaderMap, Value) {
    send(state, bearer("GET", uri).body(Body::empty()).unwrap()).await
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_known_user_gets_a_realtime_list_with_timings_and_a_request_id() {
    let h = default_harness().await;
    let request = bearer("GET", "/v1/users/u1/recs?n=3").header(REQUEST_ID, "req-42").body(Body::empty()).unwrap();
    let (status, headers, body) = send(&h.state, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let list: RecList = serde_json::from_value(body).unwrap();
    assert_eq!((list.source.as_str(), list.items.len()), ("realtime", 3));
    assert!(list.items.windows(2).all(|pair| pair[0].score >= pair[1].score), "best first");
    assert_eq!(headers[REQUEST_ID], "req-42");
    let timing = headers["server-timing"].to_str().unwrap();
    assert!(timing.contains("retrieve;dur=") && timing.contains("rank;dur="), "{timing}");
    assert!(cascade_shared::rec_id::is_valid(&list.rec_id), "{}", list.rec_id);
    assert_eq!(list.items.iter().map(|i| i.position).collect::<Vec<_>>(), vec![1, 2, 3]);
    // The second ask is an L1 hit: the same list, a new impression with its own id.
    let (_, _, again) = get(&h.state, "/v1/users/u1/recs?n=3").await;
    assert_eq!(again["source"], "cache_l1");
    assert!(again["rec_id"].as_str().is_some_and(|id| id != list.rec_id), "{again}");
}

#[tokio::test]
async fn a_bad_request_id_is_replaced_not_echoed() {
    let h = default_harness().await;
    let request = Request::builder().uri("/healthz").header(REQUEST_ID, "has space").body(Body::empty()).unwrap();
    let (status, headers, _) = send(&h.state, request).await;
    assert_eq!(status, StatusCode::OK);
    let id = headers[REQUEST_ID].to_str().unwrap();
    assert!(id != "has space" && id.len() == 32, "{id}");
}

#[tokio::test]
async fn cold_users_and_a_refusing_ranker_fall_back_to_the_segment_list() {
    let h = default_harness().await;
    let (status, _, body) = get(&h.state, "/v1/users/stranger/recs?n=2&page=browse").await;
    assert_eq!((status, body["source"].as_str()), (StatusCode::OK, Some("segment")), "{body}");
    let overloaded = harness(&["i3", "i1"], Some(RankError::Overloaded), Config::default()).await;
    let (status, _, body) = get(&overloaded.state, "/v1/users/u1/recs").await;
    // The segment lists could not be ranked either, so they are in popularity order.
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["source"], "segment");
    assert_eq!(body["items"][0]["id"], "i3");
    let metrics = overloaded.state.metrics.render();
    assert!(metrics.contains("cascade_fallbacks_total{reason=\"ranker_overloaded\"} 1"), "{metrics}");
}

#[tokio::test]
async fn mistakes_are_400_naming_the_field() {
    let h = default_harness().await;
    for (uri, field) in [
        ("/v1/users/u1/recs?n=0", "n"),
        ("/v1/users/u1/recs?n=abc", "n"),
        ("/v1/users/a:b/recs", "user_id"),
        ("/v1/segments/nope/recs", "segment"),
    ] {
        let (status, _, body) = get(&h.state, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"]["field"], field, "{uri}: {body}");
    }
    let events = |body: &str, content_type: &str| {
        bearer("POST", "/v1/events")
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let (status, _, body) = send(&h.state, events(r#"[{"user_id":"u1","kind":"teleport"}]"#, "application/json")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, _, body) = send(&h.state, events("[]", "text/plain")).await;
    assert_eq!((status, body["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("content-type")));
}

#[tokio::test]
async fn credentials_are_checked_and_admin_routes_refuse_edge_signatures() {
    let h = default_harness().await;
    let unsigned = Request::builder().uri("/v1/users/u1/recs").body(Body::empty()).unwrap();
    let (status, _, body) = send(&h.state, unsigned).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let wrong_key =
        Request::builder().uri("/v1/users/u1/recs").header(header::AUTHORIZATION, "Bearer nope").body(Body::empty());
    assert_eq!(send(&h.state, wrong_key.unwrap()).await.0, StatusCode::UNAUTHORIZED);

    let now = super::middleware::unix_now().as_secs();
    let signed_with = |method: &str, path: &str, query: &str, body: &'static str| {
        let key = cascade_shared::signing::Keys::derive(SECRET.as_bytes()).edge_requests;
        let signature = sign(&key, method, path, query, now);
        let uri = if query.is_empty() { path.to_string() } else { format!("{path}?{query}") };
        Request::builder()
            .method(method)
            .uri(uri)
            .header(TIMESTAMP_HEADER, now.to_string())
            .header(SIGNATURE_HEADER, signature)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let signed = |method: &str, path: &str| signed_with(method, path, "", "{}");
    assert_eq!(send(&h.state, signed("GET", "/v1/users/u1/recs")).await.0, StatusCode::OK);
    // A signature does not cover a body: routes that take one need a bearer key, or for events
    // (the edge forwarding a visitor's) the body's digest in the signed query.
    for path in ["/admin/bundle", "/v1/events"] {
        let (status, _, body) = send(&h.state, signed("POST", path)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("bearer key"), "{path}: {body}");
    }
    let click = r#"{"events": [{"user_id": "u1", "kind": "click", "item_id": "i1"}]}"#;
    let purchase = r#"{"events": [{"user_id": "u1", "kind": "purchase", "item_id": "i1"}]}"#;
    let digest = |body: &str| format!("body_sha256={}", cascade_shared::signing::body_digest(body.as_bytes()));
    let (status, _, body) = send(&h.state, signed_with("POST", "/v1/events", &digest(click), click)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, _, body) = send(&h.state, signed_with("POST", "/v1/events", &digest(click), purchase)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "another body than the digest's: {body}");
    let (status, _, body) = send(&h.state, signed_with("POST", "/v1/events", &digest(purchase), purchase)).await;
    assert_eq!((status, body["error"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("events[0].kind")), "{body}");
}

#[tokio::test]
async fn unknown_routes_are_404_and_oversized_bodies_413() {
    let h = default_harness().await;
    let (status, _, body) = get(&h.state, "/v2/anything").await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let huge = vec![b' '; super::MAX_BODY_BYTES + 1];
    let request =
        bearer("POST", "/v1/events").header(header::CONTENT_TYPE, "application/json").body(Body::from(huge)).unwrap();
    let (status, _, body) = send(&h.state, request).await;
    assert_eq!((status, error_code(&body)), (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"), "{body}");
}

#[tokio::test]
async fn a_full_origin_answers_503_with_retry_after_at_once() {
    let h = default_harness().await;
    let held = h.state.admission.clone().acquire_many_owned(Config::default().serving.max_in_flight as u32).await;
    let (status, headers, body) = get(&h.state, "/v1/users/u1/recs").await;
    assert_eq!((status, error_code(&body)), (StatusCode::SERVICE_UNAVAILABLE, "overloaded"));
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert!(h.state.metrics.render().contains("cascade_requests_shed_total 1"), "counted");
    // Shedding load is not being down: a load balancer must not eject every origin at once.
    for probe in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(get(&h.state, probe).await.0, StatusCode::OK, "{probe} bypasses admission");
    }
    // Nor the operator: an admin call is answered (here, a 400 for its empty body), not shed.
    let admin = bearer("POST", "/admin/bundle").body(Body::from("{}")).unwrap();
    assert_eq!(send(&h.state, admin).await.0, StatusCode::BAD_REQUEST, "admin routes bypass admission");
    drop(held);
    assert_eq!(get(&h.state, "/v1/users/u1/recs").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_bundle_with_nothing_to_serve_is_503() {
    let h = harness(&[], None, Config::default()).await;
    let (status, headers, body) = get(&h.state, "/v1/segments/home.desktop.us/recs").await;
    assert_eq!((status, error_code(&body)), (StatusCode::SERVICE_UNAVAILABLE, "unavailable"), "{body}");
    assert!(headers.get(header::RETRY_AFTER).is_none(), "retrying will not help");
}

#[tokio::test]
async fn reloads_are_refused_422_for_a_bad_bundle_and_503_when_a_dependency_is_down() {
    let h = default_harness().await;
    let empty = tempfile::tempdir().unwrap();
    let load =
        |path: &Path| bearer("POST", "/admin/bundle").body(Body::from(json!({"path": path}).to_string())).unwrap();
    let (status, _, body) = send(&h.state, load(empty.path())).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNPROCESSABLE_ENTITY, "bundle_rejected"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("metadata.json"), "{body}");

    // A valid bundle, but the embeddings' Redis Cluster does not answer: the cause is a dependency.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = Config::default();
    config.redis.cluster = vec![format!("redis://127.0.0.1:{closed_port}")];
    let down = harness(&["i1"], None, config).await;
    let next = tempfile::tempdir().unwrap();
    write_bundle(next.path(), "router-next", &["i1"]);
    let (status, headers, body) = send(&down.state, load(next.path())).await;
    assert_eq!((status, error_code(&body)), (StatusCode::SERVICE_UNAVAILABLE, "dependency_unavailable"), "{body}");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    let (_, _, ready) = get(&down.state, "/readyz").await;
    assert_eq!(ready["serving"]["bundle"], "router-test", "the old bundle keeps serving");
}

#[tokio::test]
async fn events_are_accepted_once_and_purchases_filtered() {
    let h = default_harness().await;
    let (_, _, before) = get(&h.state, "/v1/users/u1/recs?n=1").await;
    let top = before["items"][0]["id"].as_str().unwrap().to_string();
    let batch =
        json!({"events": [{"user_id": "u1", "kind": "purchase", "item_id": top, "idempotency_key": "k1"}]}).to_string();
    let post = || {
        bearer("POST", "/v1/events").header(header::CONTENT_TYPE, "application/json").body(Body::from(batch.clone()))
    };
    let (status, _, body) = send(&h.state, post().unwrap()).await;
    assert_eq!((status, body["accepted"].as_u64()), (StatusCode::ACCEPTED, Some(1)), "{body}");
    let (_, _, body) = send(&h.state, post().unwrap()).await;
    assert_eq!(body["duplicates"], 1);
    let (_, _, after) = get(&h.state, "/v1/users/u1/recs?n=20").await;
    assert!(after["items"].as_array().unwrap().iter().all(|item| item["id"] != top.as_str()), "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranking_users_in_a_batch_gives_each_the_list_ranking_alone_does() {
    let h = default_harness().await;
    let recommender = h.state.serving.current();
    let bundle = recommender.bundle();
    let users = read_embeddings(&bundle.users_path(), bundle.id(), DIM).unwrap();
    // 500 queries of 10 candidates: 5,000 rows, so two model calls (OFFLINE_ROWS_PER_CALL 4096).
    let rows: Vec<(Vec<f32>, &[u32])> = (0..500)
        .map(|i| {
            let user = i % users.ids.len();
            bundle.query(users.row(user), &users.ids[user], &[])
        })
        .collect();
    let segment = cascade_shared::segment::SegmentKey::from_parts(Some("browse"), None, None);
    let far = Instant::now() + Duration::from_secs(10);
    let batch = recommender.rank_users(&rows, segment, far).await.unwrap();
    assert_eq!(batch.len(), rows.len());
    for ((user, seen), listed) in rows.iter().zip(&batch).step_by(37) {
        let alone = recommender.rank_user(user, seen, segment, far).await.unwrap();
        let ids = |items: &[cascade_shared::wire::RecItem]| items.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(listed), ids(&alone));
        assert!(!alone.is_empty());
    }
    assert!(recommender.rank_users(&[], segment, far).await.unwrap().is_empty());
}
