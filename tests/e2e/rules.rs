//! Business rules on the real origin (`[rules]`): a user's next list leaves out what they were
//! just shown (including when it is an L1 hit), no category fills more than its cap, blocked items
//! never appear, a pinned item takes its place (over the cap: pins win), and each rule is counted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::{HashMap, HashSet};

use cascade_e2e::{Origin, bundle_dir};
use cascade_shared::wire::{RecList, Source};
use serde_json::Value;

const API_KEY: &str = "e2e-internal-key-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seen_items_category_caps_and_blocks_hold_on_every_answer() {
    let bundle = bundle_dir().unwrap();
    let metadata: Value = serde_json::from_slice(&std::fs::read(bundle.join("metadata.json")).unwrap()).unwrap();
    let categories: HashMap<String, Vec<String>> = serde_json::from_value(metadata["categories"].clone()).unwrap();
    assert!(!categories.is_empty(), "the bundle has item categories");
    let http = reqwest::Client::new();
    let recs = |origin: &Origin, user: &str| {
        let (http, url) = (http.clone(), format!("{}/v1/users/{user}/recs?n=10", origin.url));
        async move { http.get(url).bearer_auth(API_KEY).send().await.unwrap().json::<RecList>().await.unwrap() }
    };
    let start = |rules: &str| {
        let (bundle, config) = (bundle.clone(), format!("[serving]\ndeadline_ms = 5000\n[rules]\n{rules}"));
        async move { Origin::with_config(&bundle, API_KEY, &config).await.unwrap() }
    };

    // Without rules, u1's top item and its category's share.
    let plain = start("").await;
    let before = recs(&plain, "u1").await;
    let blocked = before.items[0].id.clone();
    let pinned = before.items[9].id.clone();
    drop(plain);

    let rules = format!(
        "seen_window = 100\nmax_per_category = 2\nblock = [{blocked:?}]\n\
         [[rules.pin]]\nsegment = \"home\"\nitem = {pinned:?}\nposition = 1\n"
    );
    let origin = start(&rules).await;
    let timing = http.get(format!("{}/v1/users/u3/recs?n=10", origin.url)).bearer_auth(API_KEY).send().await.unwrap();
    let timing = timing.headers()["server-timing"].to_str().unwrap().to_string();
    assert!(timing.contains("rules;dur="), "the rules stage is timed: {timing}");
    let first = recs(&origin, "u1").await;
    let second = recs(&origin, "u1").await;
    let third = recs(&origin, "u1").await;
    assert_eq!(first.source, Source::Realtime);
    assert_eq!(second.source, Source::CacheL1, "the rules apply to cached lists on the way out");
    for list in [&first, &second, &third] {
        assert_eq!(list.items.len(), 10, "{list:?}");
        assert!(list.items.iter().all(|i| i.id != blocked), "blocked {blocked} served");
        assert_eq!(list.items[0].id, pinned, "pinned first in every home list");
        let mut per_category: HashMap<&str, usize> = HashMap::new();
        for item in list.items.iter().skip(1) {
            for category in categories.get(&item.id).into_iter().flatten() {
                *per_category.entry(category).or_default() += 1;
            }
        }
        assert!(per_category.values().all(|&n| n <= 2), "{per_category:?}");
    }
    let ids = |list: &RecList| list.items.iter().skip(1).map(|i| i.id.clone()).collect::<HashSet<_>>();
    assert!(ids(&first).is_disjoint(&ids(&second)), "the second list repeats the first");
    assert!(ids(&third).is_disjoint(&ids(&first)) && ids(&third).is_disjoint(&ids(&second)));
    // Another user is not affected by u1's impressions.
    assert!(recs(&origin, "u2").await.items.len() == 10);
    let metrics = http.get(format!("{}/metrics", origin.url)).send().await.unwrap().text().await.unwrap();
    for rule in ["seen", "blocked", "category_cap", "pinned"] {
        let line = format!("cascade_rule_removals_total{{rule=\"{rule}\"}}");
        assert!(metrics.contains(&line), "{rule} not counted: {metrics}");
    }
}

/// Mean pairwise cosine similarity of a list's items (their bundle embeddings).
fn similarity(list: &RecList, items: &cascade_shared::embedding::EmbeddingTable) -> f32 {
    let vectors: Vec<Vec<f32>> = list
        .items
        .iter()
        .map(|item| {
            let row = items.row(items.ids.iter().position(|id| *id == item.id).unwrap());
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter().map(|x| x / norm).collect()
        })
        .collect();
    let mut total = (0.0, 0);
    for (i, a) in vectors.iter().enumerate() {
        for b in &vectors[i + 1..] {
            total = (total.0 + a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>(), total.1 + 1);
        }
    }
    total.0 / total.1 as f32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_reload_from_the_file_and_the_diversity_rerank_spreads_the_list() {
    let bundle = bundle_dir().unwrap();
    let items = cascade_shared::embedding::decode_file(&std::fs::read(bundle.join("items.emb")).unwrap()).unwrap();
    let base = "[serving]\ndeadline_ms = 5000\n";
    let origin = Origin::with_config(&bundle, API_KEY, base).await.unwrap();
    let http = reqwest::Client::new();
    let recs = |user: &str| {
        let (http, url) = (http.clone(), format!("{}/v1/users/{user}/recs?n=10", origin.url));
        async move { http.get(url).bearer_auth(API_KEY).send().await.unwrap().json::<RecList>().await.unwrap() }
    };
    let reload = || http.post(format!("{}/admin/rules", origin.url)).bearer_auth(API_KEY).send();
    let users = ["u1", "u2", "u3", "u4", "u5", "u6"];
    let mut plain = Vec::new();
    for user in users {
        plain.push(recs(user).await);
    }

    std::fs::write(origin.config_file(), format!("{base}[rules]\ndiversity = 0.7\n")).unwrap();
    let reloaded = reload().await.unwrap();
    assert_eq!(reloaded.status(), 200);
    let rules: Value = reloaded.json().await.unwrap();
    assert!((rules["rules"]["diversity"].as_f64().unwrap() - 0.7).abs() < 1e-6, "{rules}");
    let (mut before, mut after) = (0.0, 0.0);
    for (user, plain) in users.iter().zip(&plain) {
        let diverse = recs(user).await;
        assert_eq!(diverse.source, Source::CacheL1, "re-ranked on the way out, no cache flush");
        assert_eq!(diverse.items[0].id, plain.items[0].id, "the best item stays first");
        before += similarity(plain, &items);
        after += similarity(&diverse, &items);
    }
    let (before, after) = (before / users.len() as f32, after / users.len() as f32);
    println!("mean intra-list cosine similarity: {before:.3} ranked, {after:.3} with diversity 0.7");
    assert!(after < before - 0.02, "diversity did not spread the lists: {before} -> {after}");

    // A file that does not validate is refused; the rules in force stay.
    std::fs::write(origin.config_file(), format!("{base}[rules]\ndiversity = 2.0\n")).unwrap();
    let refused = reload().await.unwrap();
    assert_eq!(refused.status(), 422);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "config_rejected");
    assert_ne!(recs("u1").await.items, plain[0].items);
    // SIGHUP re-reads the file too: back to the ranker's order.
    std::fs::write(origin.config_file(), base).unwrap();
    let hangup = std::process::Command::new("kill").args(["-HUP", &origin.pid().to_string()]).status().unwrap();
    assert!(hangup.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while recs("u1").await.items != plain[0].items {
        assert!(std::time::Instant::now() < deadline, "SIGHUP did not reload the rules");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let metrics = http.get(format!("{}/metrics", origin.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("cascade_rule_removals_total{rule=\"diversity\"}"), "{metrics}");
}
