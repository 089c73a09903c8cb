//! End to end, every hop real: two Redis shards, `cascade load`, the origin (`cascade serve` with
//! FAISS and the TorchScript model), and the Worker under `wrangler dev`, driven over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use cascade_e2e::{Edge, Origin, RedisServer, bundle_dir, run_cascade};
use cascade_shared::embedding::decode_file;
use cascade_shared::signing::{Keys, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
use cascade_shared::wire::{ErrorBody, RecList, Source};
use serde_json::Value;

const SECRET: &str = "e2e-test-secret-0123456789";
const API_KEY: &str = "e2e-internal-key-0123456789";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The list Python's model gives `user` in `context` over the exact top-`k` inner-product
/// candidates of the user's served query that are not in their history (the origin's FAISS index is
/// exact `Flat` at this catalogue size): computed here from the bundle files and `reference.json`,
/// independently of the origin.
fn expected_top(bundle: &std::path::Path, user: &str, context: &str, k: usize, n: usize) -> Vec<(String, f32)> {
    let items = decode_file(&std::fs::read(bundle.join("items.emb")).unwrap()).unwrap();
    let reference: Value = serde_json::from_slice(&std::fs::read(bundle.join("reference.json")).unwrap()).unwrap();
    let history: Value = serde_json::from_slice(&std::fs::read(bundle.join("history.json")).unwrap()).unwrap();
    let seen: Vec<&str> =
        history["users"][user].as_array().map_or(vec![], |items| items.iter().map(|i| i.as_str().unwrap()).collect());
    let floats =
        |value: &Value| -> Vec<f32> { value.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect() };
    let scores = floats(&reference["user_item_scores"][user][context]);
    let query = floats(&reference["user_item_scores"][user]["query"]);
    let mut by_similarity: Vec<(usize, f32)> = (0..items.ids.len())
        .filter(|&row| !seen.contains(&items.ids[row].as_str()))
        .map(|row| (row, items.row(row).iter().zip(&query).map(|(a, b)| a * b).sum()))
        .collect();
    by_similarity.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut ranked: Vec<(usize, f32)> = by_similarity.iter().take(k).map(|&(row, _)| (row, scores[row])).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.into_iter().take(n).map(|(row, score)| (items.ids[row].clone(), score)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_to_model_through_every_real_hop() {
    let bundle = bundle_dir().unwrap();
    let bundle_id =
        serde_json::from_slice::<Value>(&std::fs::read(bundle.join("metadata.json")).unwrap()).unwrap()["bundle_id"]
            .as_str()
            .unwrap()
            .to_string();

    // Two real Redis shards, loaded by the real command.
    let shards = [RedisServer::start().await.unwrap(), RedisServer::start().await.unwrap()];
    let shard_list = format!("{},{}", shards[0].url, shards[1].url);
    let loaded =
        run_cascade(&["load", "--bundle", bundle.to_str().unwrap(), "--redis", &shard_list, "--users-only"]).unwrap();
    assert!(loaded.contains("verified"), "{loaded}");

    let origin = Origin::start(&[
        ("CASCADE_BUNDLE", bundle.display().to_string()),
        ("CASCADE_REDIS_SHARDS", shard_list.clone()),
        ("CASCADE_SECRET", SECRET.to_string()),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
        ("CASCADE_MODE", "production".to_string()),
    ])
    .await
    .unwrap();
    let edge = Edge::start(&origin.url, SECRET, &[]).await.unwrap();
    let http = reqwest::Client::new();

    // Edge: MISS with the origin's items, then HIT with the identical body.
    let first = http.get(format!("{}/recs?page=home&device=desktop&n=5", edge.url)).send().await.unwrap();
    assert_eq!(first.status(), 200, "{}", edge.output());
    assert_eq!(first.headers()["x-cache"], "MISS");
    let first_body = first.text().await.unwrap();
    let list: RecList = serde_json::from_str(&first_body).unwrap();
    assert_eq!(list.items.len(), 5);
    assert_eq!(list.source, Source::Segment);
    assert_eq!(list.model_version, bundle_id, "items came from this origin's bundle");
    let second = http.get(format!("{}/recs?page=home&device=desktop&n=5", edge.url)).send().await.unwrap();
    assert_eq!(second.headers()["x-cache"], "HIT");
    assert_eq!(second.text().await.unwrap(), first_body);

    // Hostile extras map to the same entry; a smaller n is cut from it; another page is another entry.
    let noisy = http.get(format!("{}/recs?device=DESKTOP&page=home&utm_source=x&n=3", edge.url)).send().await.unwrap();
    assert_eq!(noisy.headers()["x-cache"], "HIT");
    let noisy: RecList = noisy.json().await.unwrap();
    assert_eq!(noisy.items, list.items[..3]);
    let browse = http.get(format!("{}/recs?page=browse&device=desktop&n=5", edge.url)).send().await.unwrap();
    assert_eq!(browse.headers()["x-cache"], "MISS");

    // A bad n is a 400 JSON error at the edge.
    let bad_n = http.get(format!("{}/recs?n=0", edge.url)).send().await.unwrap();
    assert_eq!(bad_n.status(), 400);
    let error: ErrorBody = bad_n.json().await.unwrap();
    assert_eq!(error.error.field.as_deref(), Some("n"));

    // The origin refuses unsigned and stale calls with 401.
    let segment_path = "/v1/segments/home.desktop.zz/recs";
    let unsigned = http.get(format!("{}{segment_path}?n=5", origin.url)).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);
    assert_eq!(unsigned.json::<ErrorBody>().await.unwrap().error.code, "unauthorized");
    let stale_ts = now() - 3600;
    let stale = http
        .get(format!("{}{segment_path}?n=5", origin.url))
        .header(TIMESTAMP_HEADER, stale_ts.to_string())
        .header(
            SIGNATURE_HEADER,
            sign(&Keys::derive(SECRET.as_bytes()).edge_requests, "GET", segment_path, "n=5", stale_ts),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 401);
    let ts = now();
    let signed = http
        .get(format!("{}{segment_path}?n=5", origin.url))
        .header(TIMESTAMP_HEADER, ts.to_string())
        .header(SIGNATURE_HEADER, sign(&Keys::derive(SECRET.as_bytes()).edge_requests, "GET", segment_path, "n=5", ts))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 200);

    // A bad user id is a 400 at the origin.
    let bad_user =
        http.get(format!("{}/v1/users/bad%20id!/recs", origin.url)).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(bad_user.status(), 400);
    assert_eq!(bad_user.json::<ErrorBody>().await.unwrap().error.field.as_deref(), Some("user_id"));

    // A user's list is in the order of the model's scores, as Python computed them.
    for (user, query, context) in
        [("u0", "page=home&device=desktop", "home.desktop"), ("u1", "page=browse&device=mobile", "browse.mobile")]
    {
        let response = http
            .get(format!("{}/v1/users/{user}/recs?n=10&{query}", origin.url))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let timing = response.headers()["server-timing"].to_str().unwrap().to_string();
        for stage in ["embed", "retrieve", "rank", "total"] {
            assert!(timing.contains(stage), "{timing}");
        }
        let list: RecList = response.json().await.unwrap();
        assert_eq!(list.source, Source::Realtime, "{}", origin.output());
        let expected = expected_top(&bundle, user, context, 100, 10);
        let got: Vec<(String, f32)> = list.items.iter().map(|i| (i.id.clone(), i.score)).collect();
        assert_eq!(got.iter().map(|g| &g.0).collect::<Vec<_>>(), expected.iter().map(|e| &e.0).collect::<Vec<_>>());
        for ((_, got), (_, want)) in got.iter().zip(&expected) {
            assert!((got - want).abs() < 1e-4, "score {got} vs python {want}");
        }
    }

    // An unknown user (cold start) gets the segment list, not an error.
    let cold =
        http.get(format!("{}/v1/users/never-seen/recs?n=4", origin.url)).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(cold.status(), 200);
    assert_eq!(cold.json::<RecList>().await.unwrap().source, Source::Segment);

    // Metrics count the sources served.
    let metrics = http.get(format!("{}/metrics", origin.url)).send().await.unwrap().text().await.unwrap();
    let counted: HashMap<&str, bool> = ["realtime", "segment"]
        .iter()
        .map(|s| (*s, metrics.contains(&format!("cascade_recs_source_total{{source=\"{s}\"}}"))))
        .collect();
    assert!(counted.values().all(|&c| c), "{counted:?}");
}
