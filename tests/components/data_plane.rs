//! The data plane against real Redis shards: generated data loaded and verified, deterministic
//! files, float16 values, malformed files refused with the offset, a shard killed mid-batch, and
//! retrieval recall measured by `cascade index eval`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use cascade_origin::redis::tls::RedisTls;
use std::time::Duration;

use cascade_e2e::{RedisServer, TempDir, bundle_dir, run_cascade, run_cascade_json};
use cascade_origin::generate::{GenSpec, Generator};
use cascade_origin::store::redis_shards::RedisShardStore;
use cascade_origin::store::{EmbeddingRows, EmbeddingStore, StoreError};
use cascade_shared::hashing::shard_for;
use cascade_shared::keys::{EntityKind, embedding_key};
use serde_json::Value;

const SPEC: &str = "users=3000,items=4000,dim=16,clusters=20,seed=5";

async fn dbsize(url: &str) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("DBSIZE").query_async(&mut connection).await.unwrap()
}

async fn strlen(url: &str, key: &str) -> u64 {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("STRLEN").arg(key).query_async(&mut connection).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_data_is_deterministic_loaded_verified_and_bit_exact() {
    let shards = [RedisServer::start().await.unwrap(), RedisServer::start().await.unwrap()];
    let list = format!("{},{}", shards[0].url, shards[1].url);
    let dir = TempDir::new("cascade-generated").unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let out = run_cascade_json(&["load", "--generate", SPEC, "--redis", &list, "--out", a.to_str().unwrap()]).unwrap();
    let loaded: Vec<(&str, u64, u64, u64)> = out["loaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kind| {
            let count = |field: &str| kind[field].as_u64().unwrap();
            (kind["kind"].as_str().unwrap(), count("written"), count("verified"), count("total"))
        })
        .collect();
    assert_eq!(loaded, vec![("users", 3000, 3000, 3000), ("items", 4000, 4000, 4000)], "{out}");
    // Every vector, plus one marker hash per shard saying what `load` put there.
    assert_eq!(dbsize(&shards[0].url).await + dbsize(&shards[1].url).await, 7000 + 2);
    let bundle = GenSpec::parse(SPEC).unwrap().bundle_id();
    let mut marked = 0;
    for shard in &shards {
        let client = redis::Client::open(shard.url.as_str()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let mark: String = redis::cmd("HGET")
            .arg(cascade_shared::keys::MARKERS_KEY)
            .arg(&bundle)
            .query_async(&mut connection)
            .await
            .unwrap();
        let mark: Value = serde_json::from_str(&mark).unwrap();
        marked += mark["users"].as_u64().unwrap() + mark["items"].as_u64().unwrap();
    }
    assert_eq!(marked, 7000, "the marks count what each shard holds");
    // Same spec, same bytes.
    run_cascade(&["load", "--generate", SPEC, "--out", b.to_str().unwrap()]).unwrap();
    for file in ["users.emb", "items.emb"] {
        assert_eq!(std::fs::read(a.join(file)).unwrap(), std::fs::read(b.join(file)).unwrap(), "{file}");
    }

    // What Redis holds is bit-exact with the generator, read through the store.
    let spec = GenSpec::parse(SPEC).unwrap();
    let generator = Generator::new(spec);
    let urls = [shards[0].url.clone(), shards[1].url.clone()];
    let store =
        RedisShardStore::connect(&urls, &spec.bundle_id(), 16, Duration::from_secs(2), &RedisTls::default()).unwrap();
    let rows = generator.rows(EntityKind::User, 0..500);
    let ids: Vec<String> = rows.iter().map(|(id, _)| id.clone()).collect();
    for ((_, want), got) in rows.iter().zip(store.get_batch(EntityKind::User, &ids).await) {
        assert_eq!(got.unwrap().unwrap(), *want);
    }
    // The same through get_rows, into a buffer kept for another dimension (it is replaced), then
    // reused for a shorter batch with an unknown id.
    let mut kept = EmbeddingRows::new(3);
    store.get_rows(EntityKind::User, &ids, &mut kept).await;
    assert_eq!((kept.dim(), kept.len(), kept.found()), (16, 500, 500));
    for (index, (_, want)) in rows.iter().enumerate() {
        assert_eq!(kept.get(index), Ok(Some(&want[..])), "row {index}");
    }
    let some = vec![ids[3].clone(), "nobody".to_string()];
    store.get_rows(EntityKind::User, &some, &mut kept).await;
    assert_eq!((kept.len(), kept.get(0), kept.get(1)), (2, Ok(Some(&rows[3].1[..])), Ok(None)));

    // float16 halves each value; reads decode either width with no setting.
    let f16 = run_cascade_json(&["load", "--generate", SPEC, "--redis", &list, "--users-only", "--f16"]).unwrap();
    assert_eq!(f16["encoding"], "F16", "{f16}");
    let key = embedding_key(EntityKind::User, &spec.bundle_id(), "u7");
    assert_eq!(strlen(&urls[shard_for("u7", 2) as usize], &key).await, 32);
    let back = store.get(EntityKind::User, "u7").await.unwrap().unwrap();
    let exact = generator.user(7);
    let worst = back.iter().zip(&exact).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(worst > 0.0 && worst < 1e-3, "float16 error {worst}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_files_are_refused_with_the_offset_and_nothing_is_loaded() {
    let shard = RedisServer::start().await.unwrap();
    let dir = TempDir::new("cascade-malformed").unwrap();
    let bundle = dir.path().join("bundle");
    run_cascade(&["load", "--generate", SPEC, "--out", bundle.to_str().unwrap()]).unwrap();
    // A trained bundle's metadata.json, relabelled to the generated data.
    let mut meta: Value =
        serde_json::from_slice(&std::fs::read(bundle_dir().unwrap().join("metadata.json")).unwrap()).unwrap();
    meta["bundle_id"] = serde_json::json!(GenSpec::parse(SPEC).unwrap().bundle_id());
    meta["dim"] = serde_json::json!(16);
    std::fs::write(bundle.join("metadata.json"), meta.to_string()).unwrap();
    let users = std::fs::read(bundle.join("users.emb")).unwrap();
    std::fs::write(bundle.join("users.emb"), &users[..users.len() - 7]).unwrap();
    let error = run_cascade(&["load", "--bundle", bundle.to_str().unwrap(), "--redis", &shard.url]).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("truncated at offset") && text.contains("record 2999 of 3000"), "{text}");
    assert_eq!(dbsize(&shard.url).await, 0, "nothing written from a malformed file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_killed_mid_batch_is_unavailable_never_unknown() {
    let mut shards = RedisServer::start_many(3).await.unwrap();
    let urls: Vec<String> = shards.iter().map(|s| s.url.clone()).collect();
    let spec = GenSpec::parse("users=2000,items=10,dim=8,clusters=2").unwrap();
    let store = RedisShardStore::connect(&urls, &spec.bundle_id(), 8, Duration::from_millis(500), &RedisTls::default())
        .unwrap();
    let rows = Generator::new(spec).rows(EntityKind::User, 0..2000);
    assert_eq!(store.set_batch(EntityKind::User, &rows).await.unwrap(), 2000);
    let mut ids: Vec<String> = rows.iter().map(|(id, _)| id.clone()).collect();
    ids.push("never-loaded".into());

    // Many batches in flight while shard 1 dies under them.
    let killer = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        shards[1].stop();
    };
    let readers = async {
        let mut outcomes = Vec::new();
        for _ in 0..40 {
            outcomes.push(store.get_batch(EntityKind::User, &ids).await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        outcomes
    };
    let ((), outcomes) = tokio::join!(killer, readers);
    let last = outcomes.last().unwrap();
    for (id, lookup) in ids.iter().zip(last) {
        match (id.as_str(), shard_for(id, 3), lookup) {
            ("never-loaded", 1, Err(StoreError::Unavailable { shard: 1, .. })) => {}
            ("never-loaded", _, Ok(None)) => {}
            (_, 1, Err(StoreError::Unavailable { shard: 1, .. })) => {}
            (_, shard, Ok(Some(_))) if shard != 1 => {}
            other => panic!("{other:?}"),
        }
    }
    // In every batch, mid-kill included, a loaded id was never reported missing.
    for outcome in &outcomes {
        for (id, lookup) in ids.iter().zip(outcome) {
            assert!(id == "never-loaded" || !matches!(lookup, Ok(None)), "{id} reported unknown");
        }
    }
}

#[test]
fn index_eval_measures_recall_against_exact_search() {
    let dir = TempDir::new("cascade-eval").unwrap();
    let bundle = dir.path().join("g");
    run_cascade(&["load", "--generate", "users=300,items=6000,dim=16,clusters=30", "--out", bundle.to_str().unwrap()])
        .unwrap();
    let json = dir.path().join("eval.json");
    run_cascade(&[
        "index",
        "eval",
        "--bundle",
        bundle.to_str().unwrap(),
        "--factory",
        "IVF64,Flat",
        "--nprobe",
        "1,64",
        "--queries",
        "300",
        "--k",
        "50",
        "--out",
        json.to_str().unwrap(),
    ])
    .unwrap();
    let report: Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    let points = report["points"].as_array().unwrap();
    let recall = |i: usize| points[i]["recall"].as_f64().unwrap();
    assert_eq!(recall(1), 1.0, "probing every list is exact search");
    assert!(recall(0) < 1.0, "one list of 64 misses some neighbours: {}", recall(0));
    assert!(recall(0) > 0.2, "clustered data puts most neighbours in the nearest list: {}", recall(0));
    assert!(points.iter().all(|p| p["p99_ms"].as_f64().unwrap() > 0.0));
}
