//! The embedding store on a real Redis Cluster of three masters that the test creates: bit-exact
//! round trips, missing ids, and a master stopped (its ids unavailable, the others answered).

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
