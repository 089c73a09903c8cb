//! The origin's failure behaviour with real Redis shards: a shard that goes down degrades answers
//! to the fallback chain, never to a 5xx, and `/readyz` stays ready while naming it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use cascade_e2e::{Origin, RedisServer, bundle_dir, run_cascade, run_cascade_json};
use cascade_shared::hashing::shard_for;
use cascade_shared::wire::{RecList, Source};
use serde_json::Value;

const API_KEY: &str = "failures-internal-key-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_down_degrades_to_the_segment_list() {
    let bundle = bundle_dir().unwrap();
    let mut shards = [RedisServer::start().await.unwrap(), RedisServer::start().await.unwrap()];
    let shard_list = format!("{},{}", shards[0].url, shards[1].url);
    run_cascade(&["load", "--bundle", bundle.to_str().unwrap(), "--redis", &shard_list, "--users-only"]).unwrap();
    let origin = Origin::start(&[
        ("CASCADE_BUNDLE", bundle.display().to_string()),
        ("CASCADE_REDIS_SHARDS", shard_list),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
    ])
    .await
    .unwrap();
    let http = reqwest::Client::new();
    // Users u0..u39 split over both shards.
    let on_shard = |shard: u32, skip: usize| {
        (0..40).map(|i| format!("u{i}")).filter(|id| shard_for(id, 2) == shard).nth(skip).unwrap()
    };
    let (alive_user, doomed_user, other_doomed_user) = (on_shard(0, 0), on_shard(1, 0), on_shard(1, 1));
    let recs = |user: String| {
        let http = http.clone();
        let url = format!("{}/v1/users/{user}/recs?n=5", origin.url);
        async move {
            let response = http.get(url).bearer_auth(API_KEY).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<RecList>().await.unwrap()
        }
    };
    assert_eq!(recs(doomed_user.clone()).await.source, Source::Realtime);

    shards[1].stop();
    // A user on the stopped shard falls back. (One cached just before may still be served from L1
    // for up to `cache.state_ttl_ms`; after that the caches are bypassed for users whose state is
    // unreachable.)
    let degraded = recs(other_doomed_user).await;
    assert_eq!(degraded.source, Source::Segment, "{}", origin.output());
    assert_eq!(degraded.items.len(), 5);
    assert_eq!(recs(alive_user).await.source, Source::Realtime, "the other shard still serves");

    let ready = http.get(format!("{}/readyz", origin.url)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["degraded"], serde_json::json!(["redis_shard_1"]));

    let metrics = http.get(format!("{}/metrics", origin.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("cascade_fallbacks_total{reason=\"shard_unavailable\"}"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_without_a_secret_refuses_to_start_and_bad_requests_get_400() {
    let bundle = bundle_dir().unwrap();
    let refused = std::process::Command::new(cascade_e2e::cascade_bin().unwrap())
        .arg("serve")
        .env("CASCADE_MODE", "production")
        .env("CASCADE_BUNDLE", &bundle)
        .env_remove("CASCADE_SECRET")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("secret"));

    let origin =
        Origin::start(&[("CASCADE_BUNDLE", bundle.display().to_string()), ("CASCADE_API_KEYS", API_KEY.to_string())])
            .await
            .unwrap();
    let http = reqwest::Client::new();
    let cases = [
        ("/v1/users/u1/recs?n=1000", "n"),
        ("/v1/users/u1/recs?n=abc", "n"),
        ("/v1/segments/Home.desktop.us/recs", "segment"),
        ("/v1/segments/home.desktop/recs", "segment"),
    ];
    for (path, field) in cases {
        let response = http.get(format!("{}{path}", origin.url)).bearer_auth(API_KEY).send().await.unwrap();
        assert_eq!(response.status(), 400, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["field"], field, "{path}");
    }
    let events = http
        .post(format!("{}/v1/events", origin.url))
        .bearer_auth(API_KEY)
        .json(&serde_json::json!({"events": [{"user_id": "u1", "kind": "view", "item_id": "i1", "idempotency_key": "k1"},
                                             {"user_id": "u1", "kind": "view", "item_id": "i1", "idempotency_key": "k1"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 202);
    let accepted: Value = events.json().await.unwrap();
    assert_eq!((accepted["accepted"].as_u64(), accepted["duplicates"].as_u64()), (Some(1), Some(1)));
    let bad_event = http
        .post(format!("{}/v1/events", origin.url))
        .bearer_auth(API_KEY)
        .json(&serde_json::json!({"events": [{"user_id": "u1", "kind": "view", "item_id": "i1"}, {"user_id": "u1", "kind": "teleport", "item_id": "i1"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_event.status(), 400);
    assert_eq!(bad_event.json::<Value>().await.unwrap()["error"]["field"], "events[1]");
    // Unknown routes are JSON 404s.
    let missing = http.get(format!("{}/nope", origin.url)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<Value>().await.unwrap()["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_that_comes_back_empty_is_noticed_and_refilled() {
    let bundle = bundle_dir().unwrap();
    let mut shards = [RedisServer::start().await.unwrap(), RedisServer::start().await.unwrap()];
    let shard_list = format!("{},{}", shards[0].url, shards[1].url);
    let load = |extra: &[&str]| {
        let mut args = vec!["load", "--bundle", bundle.to_str().unwrap(), "--redis", &shard_list, "--users-only"];
        args.extend_from_slice(extra);
        run_cascade_json(&args).unwrap()
    };
    load(&[]);
    let origin = Origin::start(&[
        ("CASCADE_BUNDLE", bundle.display().to_string()),
        ("CASCADE_REDIS_SHARDS", shard_list.clone()),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
    ])
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let on_shard_1: Vec<String> = (0..60).map(|i| format!("u{i}")).filter(|id| shard_for(id, 2) == 1).collect();
    let source = |user: &str| {
        let request = http.get(format!("{}/v1/users/{user}/recs?n=5", origin.url)).bearer_auth(API_KEY);
        async move { request.send().await.unwrap().json::<RecList>().await.unwrap().source }
    };
    let shard_1_state = || {
        let request = http.get(format!("{}/readyz", origin.url));
        async move {
            let ready: Value = request.send().await.unwrap().json().await.unwrap();
            let components = ready["components"].as_array().cloned().unwrap_or_default();
            let shard = components.into_iter().find(|c| c["name"] == "redis_shard_1").unwrap_or_default();
            shard["state"].as_str().unwrap_or_default().to_string()
        }
    };
    assert_eq!(source(&on_shard_1[0]).await, Source::Realtime);
    assert_eq!(shard_1_state().await, "ok");

    // The cache node restarts, empty: noticed as such, not as a crowd of new users.
    shards[1].restart_empty().await.unwrap();
    let noticed_by = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while shard_1_state().await != "empty" {
        assert!(std::time::Instant::now() < noticed_by, "shard 1 never reported empty: {}", origin.output());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(source(&on_shard_1[1]).await, Source::Segment, "{}", origin.output());
    let metrics = http.get(format!("{}/metrics", origin.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("cascade_fallbacks_total{reason=\"missing_on_degraded_shard\"}"), "{metrics}");
    assert!(!metrics.contains("reason=\"cold_start\""), "the lost users are not counted as new: {metrics}");

    // Refilled, shard 1 alone: its users get real-time lists again.
    let refill = load(&["--shard", "1"]);
    let users = &refill["loaded"][0];
    assert_eq!(users["verified"], users["expected"], "{refill}");
    assert!(users["expected"].as_u64().unwrap() < users["total"].as_u64().unwrap(), "only shard 1's users: {refill}");
    let refilled_by = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while shard_1_state().await != "ok" {
        assert!(std::time::Instant::now() < refilled_by, "shard 1 never recovered: {}", origin.output());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(source(&on_shard_1[2]).await, Source::Realtime, "{}", origin.output());
}
