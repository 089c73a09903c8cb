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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_item_is_recommended_to_a_user_near_it_as_soon_as_it_is_put() {
    let bundle = bundle_dir().unwrap();
    let origin = start("[serving]\ndeadline_ms = 5000\n").await;
    let http = reqwest::Client::new();
    let recs = |context: &str| {
        let (http, url) = (http.clone(), format!("{}/v1/users/u5/recs?n=10&{context}", origin.url));
        async move { http.get(url).bearer_auth(API_KEY).send().await.unwrap().json::<RecList>().await.unwrap() }
    };
    let put = |id: &str, body: Value| {
        http.put(format!("{}/v1/items/{id}", origin.url)).bearer_auth(API_KEY).json(&body).send()
    };
    let items = cascade_shared::embedding::decode_file(&std::fs::read(bundle.join("items.emb")).unwrap()).unwrap();
    let before = recs("page=home&device=desktop").await;
    assert_eq!(before.source, Source::Realtime);
    // A new item with the embedding of the user's top item: it is as near to them as that item.
    let top = before.items[0].id.clone();
    let row = items.ids.iter().position(|id| *id == top).unwrap();
    let embedding = items.row(row).to_vec();

    let started = std::time::Instant::now();
    let added =
        put("brand-new-1", json!({"embedding": embedding, "title": "Brand new", "categories": ["new"]})).await.unwrap();
    assert_eq!(added.status(), 200);
    let added: Value = added.json().await.unwrap();
    assert_eq!(
        (added["served"].as_bool(), added["new_in_bundle"].as_str()),
        (Some(true), Some(before.model_version.as_str()))
    );
    // The next real-time list (another context, so not the cached one) ranks it with its twin.
    let after = recs("page=browse&device=mobile").await;
    let elapsed = started.elapsed();
    assert_eq!(after.source, Source::Realtime);
    let at = |id: &str| after.items.iter().position(|i| i.id == id);
    let new_at = at("brand-new-1").unwrap_or_else(|| panic!("the new item is not in {:?}", after.items));
    assert_eq!(after.items[new_at].title.as_deref(), Some("Brand new"));
    if let Some(twin) = at(&top) {
        assert_eq!(after.items[new_at].score, after.items[twin].score, "same features, same score");
        assert_eq!(new_at, twin + 1, "ties: the bundle's item first");
    }
    println!("new item served {elapsed:?} after its PUT, at position {}", new_at + 1);

    // Hidden: gone from the next answer (an L1 hit); unknown fields and wrong shapes are 400.
    let hide =
        http.patch(format!("{}/v1/items/brand-new-1", origin.url)).bearer_auth(API_KEY).json(&json!({"hidden": true}));
    assert_eq!(hide.send().await.unwrap().status(), 200);
    let hidden = recs("page=browse&device=mobile").await;
    assert_eq!(hidden.source, Source::CacheL1);
    assert!(hidden.items.iter().all(|i| i.id != "brand-new-1"));
    let field = |response: reqwest::Response| async move {
        assert_eq!(response.status(), 400);
        response.json::<ErrorBody>().await.unwrap().error.field.unwrap()
    };
    assert_eq!(field(put("brand-new-2", json!({"embedding": [1.0, 2.0]})).await.unwrap()).await, "embedding");
    assert_eq!(field(put(&top, json!({"embedding": embedding})).await.unwrap()).await, "embedding");
    assert_eq!(field(put("brand-new-2", json!({"title": "no embedding"})).await.unwrap()).await, "embedding");
    let unknown = put("brand-new-2", json!({"hidden": false})).await.unwrap();
    assert_eq!(unknown.status(), 404, "an unknown item without an embedding");
    // A batch is applied whole or not at all.
    let batch = |items: Value| {
        http.post(format!("{}/v1/items", origin.url)).bearer_auth(API_KEY).json(&json!({"items": items})).send()
    };
    let bad = batch(
        json!([{"item_id": "brand-new-3", "embedding": embedding}, {"item_id": "brand-new-4", "embedding": [1.0]}]),
    );
    assert_eq!(field(bad.await.unwrap()).await, "items[1].embedding");
    assert_eq!(
        put("brand-new-3", json!({"hidden": true})).await.unwrap().status(),
        404,
        "nothing of the batch applied"
    );
    let good = batch(
        json!([{"item_id": "brand-new-3", "embedding": embedding}, {"item_id": "brand-new-4", "embedding": embedding}]),
    );
    let good: Value = good.await.unwrap().json().await.unwrap();
    assert_eq!(good["applied"], 2, "{good}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascade_items_import_sends_a_file_in_batches_and_names_a_bad_line() {
    let bundle = bundle_dir().unwrap();
    let origin = start("").await;
    let items = cascade_shared::embedding::decode_file(&std::fs::read(bundle.join("items.emb")).unwrap()).unwrap();
    let dir = TempDir::new("cascade-import").unwrap();
    let import = |lines: Vec<Value>, name: &str| {
        let file = dir.path().join(name);
        let text: Vec<String> = lines.iter().map(Value::to_string).collect();
        std::fs::write(&file, text.join("\n") + "\n").unwrap();
        std::process::Command::new(cascade_e2e::cascade_bin().unwrap())
            .args(["--json", "items", "import", &file.display().to_string(), "--origin", &origin.url, "--batch", "2"])
            .env("CASCADE_API_KEY", API_KEY)
            .output()
            .unwrap()
    };
    // Five new items and one state change, in batches of two.
    let mut lines: Vec<Value> =
        (0..5).map(|i| json!({"item_id": format!("imported-{i}"), "embedding": items.row(i), "title": format!("Imported {i}")})).collect();
    lines.push(json!({"item_id": items.ids[0], "hidden": true}));
    let done = import(lines, "good.jsonl");
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let report: Value = serde_json::from_slice(&done.stdout).unwrap();
    assert_eq!((report["applied"].as_u64(), report["batches"].as_u64()), (Some(6), Some(3)), "{report}");
    let http = reqwest::Client::new();
    let state = |id: String| {
        let request = http.patch(format!("{}/v1/items/{id}", origin.url)).bearer_auth(API_KEY).json(&json!({}));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert!(state("imported-4".into()).await["new_in_bundle"].is_string());
    assert_eq!(state(items.ids[0].clone()).await["withheld"], "hidden");

    // Line 3 has a wrong embedding: the first batch is applied, the second refused, the line named.
    let bad = vec![
        json!({"item_id": "later-0", "embedding": items.row(0)}),
        json!({"item_id": "later-1", "embedding": items.row(1)}),
        json!({"item_id": "later-2", "embedding": [1.0]}),
        json!({"item_id": "later-3", "embedding": items.row(3)}),
    ];
    let refused = import(bad, "bad.jsonl");
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("line 3") && message.contains("2 items applied"), "{message}");
    assert!(state("later-1".into()).await["new_in_bundle"].is_string());
    let unknown = http.patch(format!("{}/v1/items/later-3", origin.url)).bearer_auth(API_KEY).json(&json!({}));
    assert_eq!(unknown.send().await.unwrap().status(), 404, "the refused batch is not applied");
}
