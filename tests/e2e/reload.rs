//! Bundle reloads under load: swap to a new bundle and back while requests flow, refuse a corrupt
//! model and mixed parts, and fail no request.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cascade_e2e::{Origin, TempDir, bundle_dir, relabel_bundle};
use cascade_shared::signing::{Keys, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
use cascade_shared::wire::RecList;
use serde_json::{Value, json};

const API_KEY: &str = "reload-internal-key-0123456789";
const SECRET: &str = "reload-secret-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_fail_no_request_and_bad_bundles_are_refused() {
    let a = bundle_dir().unwrap();
    let a_id = serde_json::from_slice::<Value>(&std::fs::read(a.join("metadata.json")).unwrap()).unwrap()["bundle_id"]
        .as_str()
        .unwrap()
        .to_string();
    let scratch = TempDir::new("cascade-reload").unwrap();
    let b = scratch.path().join("b");
    relabel_bundle(&a, &b, "reload-b");
    let corrupt = scratch.path().join("corrupt");
    relabel_bundle(&a, &corrupt, "reload-corrupt");
    std::fs::write(corrupt.join("model.pt"), b"not a model").unwrap();
    let mixed = scratch.path().join("mixed");
    relabel_bundle(&a, &mixed, "reload-mixed");
    std::fs::copy(a.join("items.emb"), mixed.join("items.emb")).unwrap(); // items of bundle A

    let origin = Origin::start(&[
        ("CASCADE_BUNDLE", a.display().to_string()),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
        ("CASCADE_SECRET", SECRET.to_string()),
    ])
    .await
    .unwrap();
    let http = reqwest::Client::new();

    // Load: six callers asking for users' lists until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..6)
        .map(|caller| {
            let (http, stop, url) = (http.clone(), stop.clone(), origin.url.clone());
            tokio::spawn(async move {
                let (mut versions, mut failures, mut served) = (Vec::new(), Vec::new(), 0);
                let mut user = caller;
                while !stop.load(Ordering::Relaxed) {
                    let response =
                        http.get(format!("{url}/v1/users/u{user}/recs?n=5")).bearer_auth(API_KEY).send().await;
                    match response {
                        Ok(r) if r.status() == 200 => {
                            versions.push(r.json::<RecList>().await.unwrap().model_version);
                            served += 1;
                        }
                        Ok(r) => failures.push(r.status().to_string()),
                        Err(e) => failures.push(format!("{e:?}")),
                    }
                    user = (user + 7) % 500;
                }
                (versions, failures, served)
            })
        })
        .collect();

    let load = |path: &Path| {
        let (http, url, body) = (http.clone(), origin.url.clone(), json!({"path": path.display().to_string()}));
        async move {
            let response =
                http.post(format!("{url}/admin/bundle")).bearer_auth(API_KEY).json(&body).send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, body) = load(&b).await;
    assert_eq!(
        (status, body["current"].as_str(), body["previous"].as_str()),
        (200, Some("reload-b"), Some(a_id.as_str()))
    );
    tokio::time::sleep(Duration::from_millis(400)).await;

    let (status, body) = load(&corrupt).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "bundle_rejected");
    assert!(body["error"]["message"].as_str().unwrap().contains("model.pt"), "{body}");
    let (status, body) = load(&mixed).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("items.emb"), "{body}");
    let (status, body) = load(&scratch.path().join("missing")).await;
    assert_eq!(status, 422, "{body}");

    // Still serving B after the refusals; then roll back to A.
    let probe: RecList = http
        .get(format!("{}/v1/users/u1/recs", origin.url))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(probe.model_version, "reload-b");
    let (status, body) = load(&a).await;
    assert_eq!((status, body["current"].as_str()), (200, Some(a_id.as_str())));
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);

    let mut seen = HashSet::new();
    let mut served = 0;
    for caller in callers {
        let (versions, failures, count) = caller.await.unwrap();
        assert!(failures.is_empty(), "requests failed during reloads: {failures:?}\n{}", origin.output());
        served += count;
        seen.extend(versions);
    }
    assert!(served > 50, "load ran: {served} requests");
    assert!(seen.contains("reload-b") && seen.contains(&a_id), "{seen:?}");

    // Admin routes take a bearer key; a valid edge signature is not enough.
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let signed = http
        .post(format!("{}/admin/bundle", origin.url))
        .header(TIMESTAMP_HEADER, ts.to_string())
        .header(SIGNATURE_HEADER, sign(&Keys::derive(SECRET.as_bytes()).edge_requests, "POST", "/admin/bundle", "", ts))
        .json(&json!({"path": b.display().to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 401);
    let bad_body =
        http.post(format!("{}/admin/bundle", origin.url)).bearer_auth(API_KEY).body("{}").send().await.unwrap();
    assert_eq!(bad_body.status(), 400);
}
