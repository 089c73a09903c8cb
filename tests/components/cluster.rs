//! Redis Cluster of three masters that the test creates: the embedding store's bit-exact round
//! trips, missing ids, and a master stopped (its ids unavailable, the others answered); the origin
//! serving from it; and every other piece of state (user state, L2, catalogue, precomputed lists)
//! kept there and shared by two origins.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use cascade_origin::redis::tls::RedisTls;
use std::time::Duration;

use cascade_e2e::RedisCluster;
use cascade_origin::generate::{GenSpec, Generator};
use cascade_origin::store::redis_cluster::RedisClusterStore;
use cascade_origin::store::{EmbeddingStore, StoreError};
use cascade_shared::embedding::ValueEncoding;
use cascade_shared::keys::{EntityKind, embedding_key};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_round_trip_and_survive_one_stopping() {
    let mut cluster = RedisCluster::start(3).await.unwrap();
    let spec = GenSpec::parse("users=3000,items=10,dim=16,clusters=4").unwrap();
    let rows = Generator::new(spec).rows(EntityKind::User, 0..3000);
    let store = RedisClusterStore::connect(
        &cluster.urls(),
        &spec.bundle_id(),
        16,
        Duration::from_millis(800),
        &RedisTls::default(),
    )
    .await
    .unwrap();
    for chunk in rows.chunks(500) {
        assert_eq!(store.set_batch(EntityKind::User, chunk).await.unwrap(), chunk.len());
    }
    let mut ids: Vec<String> = rows.iter().map(|(id, _)| id.clone()).collect();
    ids.push("never-loaded".into());
    let got = store.get_batch(EntityKind::User, &ids).await;
    for ((_, want), got) in rows.iter().zip(&got) {
        assert_eq!(got.as_ref().unwrap().as_ref(), Some(want), "bit-exact through the cluster");
    }
    assert_eq!(got.last().unwrap(), &Ok(None), "a missing id is missing, not an error");
    assert!(store.health().await[0].healthy());

    // Every master holds part of the data (the MGET was split by slot).
    for node in &cluster.nodes {
        let mut c = redis::Client::open(node.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
        let keys: u64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
        assert!(keys > 500, "{} holds {keys} keys", node.url);
    }

    // float16 values through the cluster.
    let half =
        RedisClusterStore::connect(&cluster.urls(), "half", 16, Duration::from_millis(800), &RedisTls::default())
            .await
            .unwrap()
            .with_encoding(ValueEncoding::F16);
    half.set_batch(EntityKind::User, &rows[..10]).await.unwrap();
    let back = half.get(EntityKind::User, "u3").await.unwrap().unwrap();
    assert!(back.iter().zip(&rows[3].1).all(|(a, b)| (a - b).abs() < 1e-3));

    // One master stops: its ids are unavailable, everyone else's are still answered.
    let stopped = cluster.nodes[1].port;
    cluster.nodes[1].stop();
    // Let the cluster notice (node timeout 2 s) so the answer is stable, then read everything.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = store.get_batch(EntityKind::User, &ids[..3000]).await;
    let (mut found, mut unavailable) = (0, 0);
    for (id, lookup) in ids.iter().zip(&got) {
        match lookup {
            Ok(Some(_)) => found += 1,
            Err(StoreError::Unavailable { .. }) => unavailable += 1,
            other => panic!("{id} ({}): {other:?}", embedding_key(EntityKind::User, &spec.bundle_id(), id)),
        }
    }
    assert!(unavailable > 500 && found > 1500, "found {found}, unavailable {unavailable} (stopped :{stopped})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_serves_real_time_lists_from_a_cluster_loaded_by_cascade_load() {
    let cluster = RedisCluster::start(3).await.unwrap();
    let seeds = cluster.urls().join(",");
    let bundle = cascade_e2e::bundle_dir().unwrap();
    let loaded = cascade_e2e::run_cascade_json(&[
        "load",
        "--bundle",
        bundle.to_str().unwrap(),
        "--redis",
        &seeds,
        "--cluster",
        "--users-only",
    ])
    .unwrap();
    assert!(loaded["store"].as_str().unwrap().contains("redis cluster"), "{loaded}");
    assert_eq!(loaded["loaded"][0]["verified"], loaded["loaded"][0]["total"], "{loaded}");
    let origin = cascade_e2e::Origin::start(&[
        ("CASCADE_BUNDLE", bundle.display().to_string()),
        ("CASCADE_REDIS_CLUSTER", seeds.clone()),
        ("CASCADE_API_KEYS", "cluster-test-key-0123456789".to_string()),
    ])
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let list = cascade_e2e::user_recs(&origin, "cluster-test-key-0123456789", "u1", "n=5").await;
    assert_eq!(list.source, cascade_shared::wire::Source::Realtime, "{}", origin.output());
    let ready: serde_json::Value =
        http.get(format!("{}/readyz", origin.url)).send().await.unwrap().json().await.unwrap();
    assert!(ready["components"].to_string().contains("redis_cluster"), "{ready}");
}

/// With only a cluster configured, everything Cascade keeps in Redis lives there: user state
/// (a purchase at one origin leaves the other's answers), L2 (a list computed by one origin is
/// the other's L2 hit), the catalogue (a hidden item leaves the other's lists) and precomputed
/// lists (`cascade precompute` writes them across slots).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_state_lives_in_the_cluster_and_is_shared_by_every_origin() {
    use cascade_shared::wire::Source;
    const KEY: &str = "cluster-state-key-0123456789";
    let cluster = RedisCluster::start(3).await.unwrap();
    let seeds = cluster.urls().join(",");
    let bundle = cascade_e2e::bundle_dir().unwrap();
    let bundle_str = bundle.to_str().unwrap();
    cascade_e2e::run_cascade(&["load", "--bundle", bundle_str, "--redis", &seeds, "--cluster", "--users-only"])
        .unwrap();
    // Precompute into the cluster, configured by file (no shards anywhere).
    let scratch = cascade_e2e::TempDir::new("cascade-cluster-state").unwrap();
    let config = scratch.path().join("cascade.toml");
    std::fs::write(&config, format!("[redis]\ncluster = {:?}\n", cluster.urls())).unwrap();
    let precomputed = cascade_e2e::run_cascade_json(&[
        "precompute",
        "--config",
        config.to_str().unwrap(),
        "--bundle",
        bundle_str,
        "--max-users",
        "40",
    ])
    .unwrap();
    assert_eq!(precomputed["written"].as_u64(), Some(40), "{precomputed}");
    let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
    let mut connection = client.get_async_connection().await.unwrap();
    let bundle_id = precomputed["bundle_id"].as_str().unwrap().to_string();
    let mut stored = 0;
    for n in 0..40 {
        let key = cascade_shared::keys::precomputed_key(&bundle_id, &format!("u{n}"));
        let value: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut connection).await.unwrap();
        stored += usize::from(value.is_some());
    }
    assert_eq!(stored, 40, "every precomputed list is in the cluster, across slots");

    let env = [
        ("CASCADE_BUNDLE", bundle.display().to_string()),
        ("CASCADE_REDIS_CLUSTER", seeds.clone()),
        ("CASCADE_API_KEYS", KEY.to_string()),
    ];
    let (a, b) = (cascade_e2e::Origin::start(&env).await.unwrap(), cascade_e2e::Origin::start(&env).await.unwrap());
    let first = cascade_e2e::user_recs(&a, KEY, "u101", "n=10").await;
    assert_eq!(first.source, Source::Realtime, "{}", a.output());
    // L2: B finds A's list. A writes it in the background: wait until it is in the cluster, or B
    // would compute its own and keep it in its L1.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let l2: Vec<String> = redis::cmd("KEYS").arg("cascade:l2:*{u101}*").query_async(&mut connection).await.unwrap();
        if !l2.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "A's L2 list never reached the cluster");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let from_b = loop {
        let list = cascade_e2e::user_recs(&b, KEY, "u101", "n=10").await;
        if list.source == Source::CacheL2 || std::time::Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!((from_b.source, &from_b.items), (Source::CacheL2, &first.items), "{}", b.output());
    // User state: a purchase at A leaves B's answers within the state TTL.
    let bought = first.items[0].id.clone();
    let purchase = cascade_client::Event::new("u101", cascade_client::EventKind::Purchase, Some(&bought));
    assert_eq!(a.client(KEY).send_events(vec![purchase]).await.unwrap().accepted, 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cascade_e2e::user_recs(&b, KEY, "u101", "n=10").await.items.iter().any(|i| i.id == bought) {
        assert!(std::time::Instant::now() < deadline, "B still serves {bought} after 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The catalogue: an item hidden at A leaves B's lists (B polls the version every second).
    let hidden = cascade_e2e::user_recs(&b, KEY, "u102", "n=10").await.items[0].id.clone();
    let http = reqwest::Client::new();
    let hide = http
        .patch(format!("{}/v1/items/{hidden}", a.url))
        .bearer_auth(KEY)
        .json(&serde_json::json!({"hidden": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(hide.status(), 200, "{}", a.output());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cascade_e2e::user_recs(&b, KEY, "u102", "n=10").await.items.iter().any(|i| i.id == hidden) {
        assert!(std::time::Instant::now() < deadline, "B still serves hidden {hidden} after 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
