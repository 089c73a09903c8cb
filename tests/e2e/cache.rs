//! The origin's L1 cache over HTTP: hits, coalesced misses, invalidation by significant events,
//! purchased items filtered from every source, and fallbacks never cached.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use cascade_e2e::{Origin, bundle_dir, user_recs};
use cascade_shared::wire::{RecList, Source};
use serde_json::json;

const API_KEY: &str = "cache-internal-key-0123456789";

async fn metric(http: &reqwest::Client, origin: &Origin, name: &str) -> f64 {
    let text = http.get(format!("{}/metrics", origin.url)).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

async fn recs(origin: &Origin, user: &str, query: &str) -> RecList {
    user_recs(origin, API_KEY, user, query).await
}

/// One event through the typed client.
async fn event(origin: &Origin, body: serde_json::Value) {
    let event: cascade_client::Event = serde_json::from_value(body).unwrap();
    assert_eq!(origin.client(API_KEY).send_events(vec![event]).await.unwrap().accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_hits_coalescing_invalidation_and_filters() {
    let bundle = bundle_dir().unwrap();
    let origin =
        Origin::start(&[("CASCADE_BUNDLE", bundle.display().to_string()), ("CASCADE_API_KEYS", API_KEY.to_string())])
            .await
            .unwrap();
    let http = reqwest::Client::new();

    // A hit returns the same list; another context is another entry.
    let first = recs(&origin, "u5", "n=10").await;
    assert_eq!(first.source, Source::Realtime);
    let again = recs(&origin, "u5", "n=10").await;
    assert_eq!((again.source, &again.items), (Source::CacheL1, &first.items));
    assert_eq!(recs(&origin, "u5", "n=3").await.items, first.items[..3], "n is cut from the cached list");
    assert_eq!(recs(&origin, "u5", "n=10&page=search").await.source, Source::Realtime);

    // Twenty identical concurrent misses run the pipeline once.
    let runs_before = metric(&http, &origin, "cascade_pipeline_runs_total").await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (http, url) = (http.clone(), origin.url.clone());
            tokio::spawn(async move {
                let r = http.get(format!("{url}/v1/users/u6/recs?n=5")).bearer_auth(API_KEY).send().await.unwrap();
                r.json::<RecList>().await.unwrap().items
            })
        })
        .collect();
    let mut lists = Vec::new();
    for task in tasks {
        lists.push(task.await.unwrap());
    }
    assert!(lists.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(metric(&http, &origin, "cascade_pipeline_runs_total").await - runs_before, 1.0);

    // A rating changes nothing cached.
    let bought = first.items[0].id.clone();
    event(&origin, json!({"user_id": "u5", "kind": "rate", "item_id": bought})).await;
    assert_eq!(recs(&origin, "u5", "n=10").await.source, Source::CacheL1);

    // Views join the session: the next list is recomputed with the query pulled toward them.
    let elsewhere: Vec<String> = recs(&origin, "u900", "n=30")
        .await
        .items
        .into_iter()
        .map(|i| i.id)
        .filter(|id| first.items.iter().all(|mine| &mine.id != id))
        .take(3)
        .collect();
    assert_eq!(elsewhere.len(), 3);
    for item in &elsewhere {
        event(&origin, json!({"user_id": "u5", "kind": "view", "item_id": item})).await;
    }
    let in_session = recs(&origin, "u5", "n=10").await;
    assert_eq!(in_session.source, Source::Realtime, "session events invalidate cached lists");
    assert_ne!(in_session.items, first.items, "the session shifted the ranking");

    // A purchase invalidates and the item never comes back.
    event(&origin, json!({"user_id": "u5", "kind": "purchase", "item_id": bought})).await;
    let after = recs(&origin, "u5", "n=10").await;
    assert_eq!(after.source, Source::Realtime, "the purchase invalidated the cached list");
    assert!(after.items.iter().all(|i| i.id != bought));
    assert_eq!(after.items.len(), 10);
    let cached = recs(&origin, "u5", "n=10").await;
    assert_eq!(cached.source, Source::CacheL1);
    assert!(cached.items.iter().all(|i| i.id != bought));

    // Fallback answers are never cached, and the purchase filter applies to them too.
    let cold = recs(&origin, "newcomer", "n=10").await;
    assert_eq!(cold.source, Source::Segment);
    let segment_top = cold.items[0].id.clone();
    assert_eq!(recs(&origin, "newcomer", "n=10").await.source, Source::Segment);
    event(&origin, json!({"user_id": "newcomer", "kind": "purchase", "item_id": segment_top})).await;
    let filtered = recs(&origin, "newcomer", "n=10").await;
    assert!(filtered.items.iter().all(|i| i.id != segment_top));
    assert_eq!(filtered.items.len(), 10);
    assert!(metric(&http, &origin, "cascade_cache_lookups_total{layer=\"l1\",result=\"hit\"}").await >= 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_ranker_falls_back_within_the_deadline_and_is_not_cached() {
    // The batcher holds every batch open for 200 ms while the deadline is 20 ms: the real-time path
    // can never finish in time, deterministically.
    let bundle = bundle_dir().unwrap();
    let dir = cascade_e2e::TempDir::new("cascade-slow").unwrap();
    let config = dir.path().join("cascade.toml");
    std::fs::write(
        &config,
        "[serving]\ndeadline_ms = 20\n[ranker]\nbatch_policy = \"fixed\"\nmax_wait_ms = 200\nmax_batch_rows = 100000\n",
    )
    .unwrap();
    let origin = Origin::start(&[
        ("CASCADE_BUNDLE", bundle.display().to_string()),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
        ("CASCADE_CONFIG", config.display().to_string()),
    ])
    .await
    .unwrap();
    let http = reqwest::Client::new();
    for _ in 0..2 {
        let started = std::time::Instant::now();
        let list = recs(&origin, "u9", "n=5").await;
        assert_eq!(list.source, Source::Segment, "fallback, and the fallback is not cached");
        assert_eq!(list.items.len(), 5);
        assert!(
            started.elapsed() < std::time::Duration::from_millis(150),
            "answered at the deadline, not after the batch"
        );
    }
    assert!(metric(&http, &origin, "cascade_fallbacks_total{reason=\"deadline\"}").await >= 2.0);
}
