//! The item catalogue on the real origin: an item hidden, expired or deleted through
//! `/v1/items/{id}` disappears from the next answer of a cached user list and of the segment list,
//! with no cache flush; unhidden, it is back; a deletion survives a restart (`[catalogue] file`);
//! mistakes get 4xx with a JSON error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use cascade_e2e::{Origin, TempDir, bundle_dir};
use cascade_shared::wire::{ErrorBody, RecList, Source};
use serde_json::{Value, json};

const API_KEY: &str = "e2e-internal-key-0123456789";

async fn start(config: &str) -> Origin {
    Origin::with_config(&bundle_dir().unwrap(), API_KEY, config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_expired_and_deleted_items_leave_every_answer_at_once() {
    let dir = TempDir::new("cascade-catalogue").unwrap();
    let file = dir.path().join("catalogue.json");
    let config = format!("[serving]\ndeadline_ms = 5000\n[catalogue]\nfile = {:?}\n", file.display().to_string());
    let origin = start(&config).await;
    let http = reqwest::Client::new();
    let user = |origin: &Origin| {
        let (http, url) = (http.clone(), format!("{}/v1/users/u1/recs?n=10", origin.url));
        async move { http.get(url).bearer_auth(API_KEY).send().await.unwrap().json::<RecList>().await.unwrap() }
    };
    let segment = |origin: &Origin| {
        let (http, url) = (http.clone(), format!("{}/v1/segments/home.desktop.zz/recs?n=10", origin.url));
        async move { http.get(url).bearer_auth(API_KEY).send().await.unwrap().json::<RecList>().await.unwrap() }
    };
    let item = |method: reqwest::Method, origin: &Origin, id: &str, body: Option<Value>| {
        let mut request = http.request(method, format!("{}/v1/items/{id}", origin.url)).bearer_auth(API_KEY);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    let ids = |list: &RecList| list.items.iter().map(|i| i.id.clone()).collect::<Vec<_>>();

    let first = user(&origin).await;
    assert_eq!(first.source, Source::Realtime);
    let top = first.items[0].id.clone();
    let hidden = item(reqwest::Method::PATCH, &origin, &top, Some(json!({"hidden": true}))).await.unwrap();
    assert_eq!(hidden.status(), 200);
    assert_eq!(hidden.json::<Value>().await.unwrap()["withheld"], "hidden");
    let cached = user(&origin).await;
    assert_eq!(cached.source, Source::CacheL1, "no cache flush");
    assert!(!ids(&cached).contains(&top) && cached.items.len() == 10, "{top} still served: {:?}", ids(&cached));
    item(reqwest::Method::PATCH, &origin, &top, Some(json!({"hidden": false}))).await.unwrap();
    assert_eq!(user(&origin).await.items[0].id, top, "unhidden: back in its place");

    // Expired (an expiry in the past) and deleted items leave the segment list too.
    let listed = segment(&origin).await;
    let (expiring, deleted) = (listed.items[0].id.clone(), listed.items[1].id.clone());
    let past = json!({"expires_at_ms": 1000});
    assert_eq!(item(reqwest::Method::PATCH, &origin, &expiring, Some(past)).await.unwrap().status(), 200);
    assert_eq!(item(reqwest::Method::DELETE, &origin, &deleted, None).await.unwrap().status(), 200);
    let after = ids(&segment(&origin).await);
    assert!(!after.contains(&expiring) && !after.contains(&deleted), "{after:?}");

    // Mistakes: unknown item 404, bad body 400, deleted item 409, no credentials 401.
    let unknown = item(reqwest::Method::PATCH, &origin, "no-such-item", Some(json!({"hidden": true}))).await.unwrap();
    assert_eq!(unknown.status(), 404);
    let bad = item(reqwest::Method::PATCH, &origin, &top, Some(json!({"hiden": true}))).await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<ErrorBody>().await.unwrap().error.field.as_deref(), Some("body"));
    let gone = item(reqwest::Method::PUT, &origin, &deleted, Some(json!({}))).await.unwrap();
    assert_eq!(gone.status(), 409);
    let anonymous = http.delete(format!("{}/v1/items/{top}", origin.url)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    // A restart keeps the state (the file); PUT with no fields clears an expiry.
    drop(origin);
    let restarted = start(&config).await;
    let after = ids(&segment(&restarted).await);
    assert!(!after.contains(&expiring) && !after.contains(&deleted), "after a restart: {after:?}");
    assert_eq!(item(reqwest::Method::PUT, &restarted, &expiring, Some(json!({}))).await.unwrap().status(), 200);
    assert!(ids(&segment(&restarted).await).contains(&expiring));
}
