//! L2 and invalidation across two origin processes sharing two Redis shards: a list computed by
//! one process is an L2 hit for the other, and a purchase sent to one process reaches the other's
//! answers within `cache.state_ttl_ms` (1 s by default); the item catalogue, shared through Redis,
//! reaches every process within a second and survives restarts. Prints the measured times.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::time::{Duration, Instant};

use cascade_e2e::{Origin, RedisServer, bundle_dir, run_cascade, user_recs};
use cascade_shared::wire::{RecList, Source};
use serde_json::json;

const API_KEY: &str = "cache-redis-internal-key-0123456789";

async fn recs(origin: &Origin, user: &str) -> RecList {
    user_recs(origin, API_KEY, user, "n=10").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_is_shared_and_events_reach_every_process() {
    let bundle = bundle_dir().unwrap();
    let shards = [RedisServer::start().await.unwrap(), RedisServer::start().await.unwrap()];
    let shard_list = format!("{},{}", shards[0].url, shards[1].url);
    run_cascade(&["load", "--bundle", bundle.to_str().unwrap(), "--redis", &shard_list, "--users-only"]).unwrap();
    let env = [
        ("CASCADE_BUNDLE", bundle.display().to_string()),
        ("CASCADE_REDIS_SHARDS", shard_list),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
    ];
    let (a, b) = (Origin::start(&env).await.unwrap(), Origin::start(&env).await.unwrap());

    // A computes; B finds it in L2 (A writes L2 in the background), then in its own L1.
    let first = recs(&a, "u11").await;
    assert_eq!(first.source, Source::Realtime);
    let mut from_b = recs(&b, "u12").await; // warm B's connections
    assert_eq!(from_b.source, Source::Realtime);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        from_b = recs(&b, "u11").await;
        if from_b.source != Source::Realtime || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!((from_b.source, &from_b.items), (Source::CacheL2, &first.items));
    assert_eq!(recs(&b, "u11").await.source, Source::CacheL1);

    // A purchase sent to A: B stops serving that item within the state TTL (1 s), measured.
    let bought = first.items[0].id.clone();
    let sent = Instant::now();
    let purchase = cascade_client::Event::new("u11", cascade_client::EventKind::Purchase, Some(&bought));
    assert_eq!(a.client(API_KEY).send_events(vec![purchase]).await.unwrap().accepted, 1);
    assert!(recs(&a, "u11").await.items.iter().all(|i| i.id != bought), "A applies it at once");
    let propagated = loop {
        let list = recs(&b, "u11").await;
        if list.items.iter().all(|i| i.id != bought) {
            break sent.elapsed();
        }
        assert!(sent.elapsed() < Duration::from_secs(5), "B still serves {bought} after 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!(
        "purchase on A reached B's answers after {} ms (bound: cache.state_ttl_ms = 1000)",
        propagated.as_millis()
    );
    let after = recs(&b, "u11").await;
    assert_eq!(after.items.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_is_shared_through_redis_by_every_process_and_survives_restarts() {
    let bundle = bundle_dir().unwrap();
    let mut redis = RedisServer::start().await.unwrap();
    let env = [
        ("CASCADE_BUNDLE", bundle.display().to_string()),
        ("CASCADE_REDIS_SHARDS", redis.url.clone()),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
    ];
    let (a, b) = (Origin::start(&env).await.unwrap(), Origin::start(&env).await.unwrap());
    let http = reqwest::Client::new();
    let segment = |origin: &Origin| {
        let request = http.get(format!("{}/v1/segments/home.desktop.zz/recs?n=10", origin.url)).bearer_auth(API_KEY);
        async move { request.send().await.unwrap().json::<RecList>().await.unwrap() }
    };
    let ids = |list: RecList| list.items.into_iter().map(|i| i.id).collect::<Vec<_>>();
    let hidden = ids(segment(&b).await)[0].clone();
    let hide = http.patch(format!("{}/v1/items/{hidden}", a.url)).bearer_auth(API_KEY).json(&json!({"hidden": true}));
    let changed = Instant::now();
    assert_eq!(hide.send().await.unwrap().status(), 200);
    assert!(!ids(segment(&a).await).contains(&hidden), "the process that took the change: at once");
    // The other process polls the catalogue's version every second.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ids(segment(&b).await).contains(&hidden) {
        assert!(Instant::now() < deadline, "B still serves {hidden} after 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("another process stopped serving a hidden item {:?} after the change", changed.elapsed());
    // A process started later reads it before it listens.
    drop(b);
    let c = Origin::start(&env).await.unwrap();
    assert!(!ids(segment(&c).await).contains(&hidden), "a new process reads the shared state at start");
    // Redis down: a change is refused (503, nothing half-applied); lists are still served, as they were.
    redis.stop();
    let unhide =
        http.patch(format!("{}/v1/items/{hidden}", a.url)).bearer_auth(API_KEY).json(&json!({"hidden": false}));
    let refused = unhide.send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.json::<serde_json::Value>().await.unwrap()["error"]["code"], "catalogue_unavailable");
    assert!(!ids(segment(&a).await).contains(&hidden));
}
