//! The router under faulty dependencies: stalled state and embeddings (fakes named as such;
//! the real faults are in the fault suite) and a shard that refuses connections.

use super::*;

#[tokio::test]
async fn readiness_and_503_bodies_name_components_never_addresses_or_credentials() {
    // A Redis shard with a password, on a port where nothing listens.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("redis://:hunter2@127.0.0.1:{closed_port}");
    let shards = Arc::new(ShardSet::new(&[url], std::time::Duration::from_millis(100)).unwrap());
    let stores = Stores {
        embeddings: Arc::new(RedisShardStore::new(Arc::clone(&shards), "router-test", DIM)),
        state: Arc::new(RedisUserState::new(shards)),
    };
    let h = harness_over(&["i1"], None, Config::default(), Some(stores)).await;
    let leaks = |body: &Value| {
        let text = body.to_string();
        text.contains("hunter2") || text.contains("127.0.0.1") || text.contains(&closed_port.to_string())
    };
    let (status, _, ready) = get(&h.state, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["degraded"], json!(["redis_shard_0"]), "{ready}");
    assert_eq!(ready["components"][0]["state"], "unreachable", "{ready}");
    assert!(!leaks(&ready), "{ready}");

    let batch = json!({"events": [{"user_id": "u1", "kind": "purchase", "item_id": "i1"}]}).to_string();
    let post = bearer("POST", "/v1/events").header(header::CONTENT_TYPE, "application/json").body(Body::from(batch));
    let (status, _, body) = send(&h.state, post.unwrap()).await;
    assert_eq!((status, error_code(&body)), (StatusCode::SERVICE_UNAVAILABLE, "dependency_unavailable"), "{body}");
    assert!(!leaks(&body), "{body}");
}

/// A user state backend that answers nothing for 2 s (a fake standing in for a blackholed shard;
/// the real one is in the fault suite).
struct StalledState;

#[async_trait]
impl UserStateBackend for StalledState {
    async fn generation(&self, _: &str) -> Result<u64, StoreError> {
        stall().await
    }
    async fn bump_generation(&self, _: &str) -> Result<u64, StoreError> {
        stall().await
    }
    async fn add_purchase(&self, _: &str, _: &str) -> Result<(), StoreError> {
        stall().await
    }
    async fn purchases(&self, _: &str) -> Result<std::collections::HashSet<String>, StoreError> {
        stall().await
    }
    async fn push_recent(&self, _: &str, _: &str) -> Result<(), StoreError> {
        stall().await
    }
    async fn recent(&self, _: &str) -> Result<Vec<String>, StoreError> {
        stall().await
    }
    async fn l2_get(&self, _: &ListKey) -> Result<Option<Vec<cascade_shared::wire::RecItem>>, StoreError> {
        stall().await
    }
    async fn l2_set(&self, _: &ListKey, _: &[cascade_shared::wire::RecItem], _: Duration) -> Result<(), StoreError> {
        stall().await
    }
}

async fn stall<T>() -> Result<T, StoreError> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    Err(StoreError::Unavailable { shard: 0, message: "stalled (test fake)".into() })
}

/// An embedding store that answers nothing for 2 s (a fake, as above).
struct StalledStore;

#[async_trait]
impl EmbeddingStore for StalledStore {
    async fn get_batch(&self, _: cascade_shared::keys::EntityKind, ids: &[String]) -> Vec<crate::store::Lookup> {
        tokio::time::sleep(Duration::from_secs(2)).await;
        vec![Ok(None); ids.len()]
    }
    async fn set_batch(
        &self,
        _: cascade_shared::keys::EntityKind,
        entries: &[(String, Vec<f32>)],
    ) -> Result<usize, StoreError> {
        Ok(entries.len())
    }
    async fn health(&self) -> Vec<crate::store::ComponentHealth> {
        Vec::new()
    }
    fn describe(&self) -> String {
        "stalled (test fake)".into()
    }
}

#[tokio::test]
async fn a_stalled_dependency_costs_the_deadline_not_its_timeout() {
    let memory_state = || Arc::new(crate::cache::MemoryUserState::new(1000)) as Arc<dyn UserStateBackend>;
    let cases: [(&str, Stores, &str); 2] = [
        ("state", Stores { embeddings: Arc::new(StalledStore), state: Arc::new(StalledState) }, "state_unavailable"),
        ("embeddings", Stores { embeddings: Arc::new(StalledStore), state: memory_state() }, "deadline"),
    ];
    for (stalled, stores, reason) in cases {
        let h = harness_over(&["i1", "i2"], None, Config::default(), Some(stores)).await;
        let started = std::time::Instant::now();
        let (status, _, body) = get(&h.state, "/v1/users/u1/recs?n=2").await;
        let took = started.elapsed();
        assert_eq!((status, body["source"].as_str()), (StatusCode::OK, Some("segment")), "{stalled}: {body}");
        // The deadline is 80 ms; the stalled call would take 2 s.
        assert!(took < Duration::from_millis(1000), "{stalled} stalled: answered in {took:?}");
        let metrics = h.state.metrics.render();
        assert!(metrics.contains(&format!("cascade_fallbacks_total{{reason=\"{reason}\"}} 1")), "{stalled}: {metrics}");
    }
}

#[tokio::test]
async fn a_request_past_the_request_timeout_is_503_with_retry_after() {
    let mut config = Config::default();
    config.serving.deadline_ms = 10_000; // a misconfigured deadline: the timeout is the backstop
    config.serving.request_timeout_ms = 100;
    let memory_state = Arc::new(crate::cache::MemoryUserState::new(1000));
    let h =
        harness_over(&["i1"], None, config, Some(Stores { embeddings: Arc::new(StalledStore), state: memory_state }))
            .await;
    let started = std::time::Instant::now();
    let (status, headers, body) = get(&h.state, "/v1/users/u1/recs").await;
    assert_eq!((status, error_code(&body)), (StatusCode::SERVICE_UNAVAILABLE, "timeout"), "{body}");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
}

#[tokio::test]
async fn in_brownout_users_get_the_fallback_chain_and_real_time_resumes_after() {
    let h = default_harness().await;
    h.brownout.observe(Duration::from_millis(40));
    let (status, _, body) = get(&h.state, "/v1/users/u1/recs?n=3&page=browse").await;
    assert_eq!((status, body["source"].as_str()), (StatusCode::OK, Some("segment")), "{body}");
    let metrics = h.state.metrics.render();
    assert!(metrics.contains("cascade_fallbacks_total{reason=\"brownout\"} 1"), "{metrics}");
    assert!(metrics.contains("cascade_pipeline_runs_total 0"), "no real-time run started: {metrics}");
    // Lag under half the threshold ends it: the same user is ranked in real time again.
    h.brownout.observe(Duration::from_millis(1));
    let (_, _, body) = get(&h.state, "/v1/users/u1/recs?n=3&page=browse").await;
    assert_eq!(body["source"], "realtime", "{body}");
}

/// A user state backend whose reads panic (a fake standing in for a bug in a handler's path).
struct PanickingState;

#[async_trait]
impl UserStateBackend for PanickingState {
    async fn generation(&self, _: &str) -> Result<u64, StoreError> {
        panic!("a bug in the state read (test fake)")
    }
    async fn bump_generation(&self, _: &str) -> Result<u64, StoreError> {
        Ok(1)
    }
    async fn add_purchase(&self, _: &str, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn purchases(&self, _: &str) -> Result<std::collections::HashSet<String>, StoreError> {
        Ok(Default::default())
    }
    async fn push_recent(&self, _: &str, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
    async fn recent(&self, _: &str) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
    async fn l2_get(&self, _: &ListKey) -> Result<Option<Vec<cascade_shared::wire::RecItem>>, StoreError> {
        Ok(None)
    }
    async fn l2_set(&self, _: &ListKey, _: &[cascade_shared::wire::RecItem], _: Duration) -> Result<(), StoreError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_panicking_handler_is_answered_500_and_gives_its_permit_back() {
    let mut config = Config::default();
    config.serving.max_in_flight = 1;
    let stores = Stores { embeddings: Arc::new(StalledStore), state: Arc::new(PanickingState) };
    let h = harness_over(&["i1"], None, config, Some(stores)).await;
    for attempt in 0..2 {
        let (status, headers, body) = get(&h.state, "/v1/users/u1/recs").await;
        assert_eq!((status, error_code(&body)), (StatusCode::INTERNAL_SERVER_ERROR, "internal"), "{attempt}: {body}");
        assert!(headers.contains_key(REQUEST_ID), "the answer carries the request id");
        assert!(!body.to_string().contains("test fake"), "no panic message leaks: {body}");
    }
    // The one permit came back each time (the second request was not shed), and the gauge is 0.
    let metrics = h.state.metrics.render();
    assert!(metrics.contains("cascade_requests_in_flight 0"), "{metrics}");
    assert!(metrics.contains("status=\"500\"} 2"), "both counted as 500: {metrics}");
}
