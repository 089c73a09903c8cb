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
