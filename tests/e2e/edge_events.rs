//! The feedback loop through the edge: a signed-in visitor's click goes to the Worker's
//! `POST /events` (checked, given the token's user, forwarded signed with the body's digest, never
//! cached), the origin records it, and the visitor's next list shows its effect (with the seen-items
//! rule, none of the items just shown). Driven through the API, then on the demo page in headless
//! Chromium, with a screenshot. And the catalogue's reach to the edge: an item hidden at the origin
//! leaves the edge's stored segment list at once (the origin purges the segments that held it).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::HashSet;

use cascade_e2e::{Edge, Origin, TempDir, bundle_dir, free_port, repo_root};
use serde_json::{Value, json};

use crate::edge::chromium;

const SECRET: &str = "edge-events-secret-0123456789";
const API_KEY: &str = "edge-events-internal-key-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitors_click_goes_through_the_edge_and_their_next_list_shows_it() {
    let dir = TempDir::new("cascade-edge-events").unwrap();
    let config = dir.path().join("cascade.toml");
    std::fs::write(&config, "[rules]\nseen_window = 50\n").unwrap();
    let origin = Origin::start(&[
        ("CASCADE_BUNDLE", bundle_dir().unwrap().display().to_string()),
        ("CASCADE_SECRET", SECRET.to_string()),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
        ("CASCADE_CONFIG", config.display().to_string()),
    ])
    .await
    .unwrap();
    let edge = Edge::start(&origin.url, SECRET, &[]).await.unwrap();
    let http = reqwest::Client::new();
    let events = format!("{}/events", edge.url);
    let post = |token: Option<&str>, body: Value| {
        let mut request = http.post(&events).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    // Through the API: a click is accepted (202, never cached); mistakes are refused at the edge.
    let token = origin.visitor_token(API_KEY, "u4").await;
    let list: Value = http
        .get(format!("{}/recs?page=home&device=desktop&n=5", edge.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (rec_id, first) = (list["rec_id"].as_str().unwrap(), list["items"][0]["id"].as_str().unwrap());
    let click = json!({"events": [{"kind": "click", "item_id": first, "rec_id": rec_id, "position": 1}]});
    let accepted = post(Some(&token), click.clone()).await.unwrap();
    assert_eq!(accepted.status(), 202);
    assert_eq!(accepted.headers()["cache-control"], "no-store");
    assert_eq!(accepted.json::<Value>().await.unwrap()["accepted"], 1);
    let status_and_field = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        (status, body["error"]["field"].as_str().map(str::to_string))
    };
    assert_eq!(status_and_field(post(None, click.clone()).await.unwrap()).await, (401, None));
    let forged = cascade_shared::token::issue(b"not-the-secret-0123456789", "u4", u64::MAX / 2);
    assert_eq!(status_and_field(post(Some(&forged), click).await.unwrap()).await.0, 401);
    let purchase = json!({"events": [{"kind": "purchase", "item_id": first}]});
    assert_eq!(
        status_and_field(post(Some(&token), purchase).await.unwrap()).await,
        (400, Some("events[0].kind".into()))
    );
    let someone_else = json!({"kind": "click", "item_id": first, "user_id": "u5"});
    let refused = status_and_field(post(Some(&token), someone_else).await.unwrap()).await;
    assert_eq!(refused, (400, Some("events[0].user_id".into())));
    assert_eq!(http.get(&events).send().await.unwrap().status(), 405);
    let huge = http.post(&events).bearer_auth(&token).body(vec![b' '; 20_000]).send().await.unwrap();
    assert_eq!(status_and_field(huge).await, (400, Some("body".into())), "refused by its Content-Length");

    // On the demo page, in a real browser: the visitor's first item is clicked; the click goes
    // through the edge, and the next list holds none of the items just shown.
    let page = format!("{}/#token={}&click=1", edge.url, origin.visitor_token(API_KEY, "u6").await);
    let dom = chromium(&page, &["--dump-dom"]);
    assert!(dom.contains(r#"data-state="clicked""#), "{dom}");
    let attribute = |text: &str, name: &str| {
        let start = text.find(&format!("{name}=\"")).unwrap_or_else(|| panic!("no {name} in {text}")) + name.len() + 2;
        text[start..].split('"').next().unwrap().to_string()
    };
    let clicked = attribute(&dom, "data-clicked");
    let shown: HashSet<String> = attribute(&dom, "data-list-ids").split(',').map(String::from).collect();
    assert!(shown.contains(&clicked) && shown.len() == 10, "{shown:?}");
    let recs = dom.split(r#"<ol id="recs""#).nth(1).unwrap().split("</ol>").next().unwrap();
    let next: HashSet<String> =
        recs.split("<li data-id=\"").skip(1).map(|li| li.split('"').next().unwrap().into()).collect();
    assert_eq!(next.len(), 10, "{recs}");
    assert!(next.is_disjoint(&shown), "the next list repeats what was just shown: {next:?} / {shown:?}");
    assert_eq!(attribute(recs, "data-source"), "realtime", "{recs}");
    assert_eq!(attribute(recs, "data-rec-id").len(), 26);
    let shots = repo_root().join("target/cascade-test");
    std::fs::create_dir_all(&shots).unwrap();
    let png = shots.join("edge-demo-click.png");
    chromium(&page, &[&format!("--screenshot={}", png.display()), "--window-size=900,900"]);
    assert!(std::fs::metadata(&png).unwrap().len() > 5_000, "screenshot saved at {}", png.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_hidden_at_the_origin_leaves_the_edges_stored_list_at_once() {
    const ADMIN_TOKEN: &str = "edge-events-admin-token-0123456789";
    // The edge first (it needs the origin's address, the origin the edge's).
    let port = free_port().unwrap();
    let edge = Edge::start(&format!("http://127.0.0.1:{port}"), SECRET, &[("ADMIN_TOKEN", ADMIN_TOKEN)]).await.unwrap();
    let dir = TempDir::new("cascade-edge-purge").unwrap();
    let config = dir.path().join("cascade.toml");
    std::fs::write(&config, format!("[edge]\npurge_url = {:?}\n", edge.url)).unwrap();
    let origin = Origin::start_on(
        port,
        &[
            ("CASCADE_BUNDLE", bundle_dir().unwrap().display().to_string()),
            ("CASCADE_SECRET", SECRET.to_string()),
            ("CASCADE_API_KEYS", API_KEY.to_string()),
            ("CASCADE_CONFIG", config.display().to_string()),
            ("CASCADE_EDGE_PURGE_TOKEN", ADMIN_TOKEN.to_string()),
        ],
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let recs = format!("{}/recs?page=browse&device=mobile&n=10", edge.url);
    let get = || {
        let request = http.get(&recs);
        async move {
            let response = request.send().await.unwrap();
            let cache = response.headers()["x-cache"].to_str().unwrap().to_string();
            let body: Value = response.json().await.unwrap();
            let ids: Vec<String> =
                body["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().into()).collect();
            (cache, ids)
        }
    };
    assert_eq!(get().await.0, "MISS");
    let (cache, stored) = get().await;
    assert_eq!(cache, "HIT");
    let hidden = stored[0].clone();
    let patch =
        http.patch(format!("{}/v1/items/{hidden}", origin.url)).bearer_auth(API_KEY).json(&json!({"hidden": true}));
    assert_eq!(patch.send().await.unwrap().status(), 200);
    // The purge runs in the background: the next requests are a MISS, without the item.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (cache, ids) = loop {
        let (cache, ids) = get().await;
        if !ids.contains(&hidden) || std::time::Instant::now() > deadline {
            break (cache, ids);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(!ids.contains(&hidden), "the edge still serves {hidden}: {ids:?}");
    assert_eq!(cache, "MISS", "the stored entry was purged, not waited out");
    let metrics = http.get(format!("{}/metrics", origin.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("cascade_edge_purges_total{outcome=\"purged\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_at_one_edge_reaches_another_through_the_kv_generation() {
    const ADMIN_TOKEN: &str = "edge-kv-admin-token-0123456789";
    let origin = Origin::start(&[
        ("CASCADE_BUNDLE", bundle_dir().unwrap().display().to_string()),
        ("CASCADE_SECRET", SECRET.to_string()),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
    ])
    .await
    .unwrap();
    // Two `wrangler dev` instances sharing one KV namespace (one --persist-to folder), as two data
    // centres share Workers KV; generations read at most 1 s ago.
    let state = TempDir::new("cascade-edge-kv").unwrap();
    let vars = [("ADMIN_TOKEN", ADMIN_TOKEN), ("GENERATION_CACHE_SECS", "1")];
    let one = Edge::start_sharing(state.path(), &origin.url, SECRET, &vars).await.unwrap();
    let two = Edge::start_sharing(state.path(), &origin.url, SECRET, &vars).await.unwrap();
    let http = reqwest::Client::new();
    let cache_state = |edge: &Edge, segment: &str| {
        let request = http.get(format!("{}/recs?page={segment}&device=tablet&n=5", edge.url));
        async move { request.send().await.unwrap().headers()["x-cache"].to_str().unwrap().to_string() }
    };
    let purge = |edge: &Edge, segment: &str| {
        let request = http.post(format!("{}/admin/purge?segment={segment}", edge.url)).bearer_auth(ADMIN_TOKEN);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    // Both edges hold both segments.
    for edge in [&one, &two] {
        for page in ["home", "detail"] {
            if cache_state(edge, page).await != "HIT" {
                assert_eq!(cache_state(edge, page).await, "HIT");
            }
        }
    }
    // A purge of one segment at the first edge (named as the edge names it: the country comes from
    // the runtime): the second misses that segment, not the other.
    let list: Value =
        http.get(format!("{}/recs?page=home&device=tablet&n=5", one.url)).send().await.unwrap().json().await.unwrap();
    let purged = purge(&one, list["segment"].as_str().unwrap()).await;
    assert!(purged["generation"].is_u64(), "{purged}");
    let until_miss = |edge: &Edge, page: &'static str| {
        let edge_url = edge.url.clone();
        let http = http.clone();
        async move {
            let started = std::time::Instant::now();
            loop {
                let response = http.get(format!("{edge_url}/recs?page={page}&device=tablet&n=5")).send().await.unwrap();
                if response.headers()["x-cache"] == "MISS" {
                    return started.elapsed();
                }
                assert!(started.elapsed() < std::time::Duration::from_secs(15), "no MISS at {edge_url} for {page}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(cache_state(&one, "home").await, "MISS", "the edge that took the purge misses at once");
    let reached = until_miss(&two, "home").await;
    println!("a purge at one edge reached another in {reached:?}");
    assert_eq!(cache_state(&two, "detail").await, "HIT", "another segment is untouched");
    // segment=* at the second edge: every segment misses at the first.
    let all = purge(&two, "*").await;
    assert_eq!(all["segment"], "*", "{all}");
    until_miss(&one, "detail").await;
    until_miss(&one, "home").await;
}
