//! The feedback loop: the origin logs what it served and the events that followed; a bundle trained
//! on that log (`scripts/train.py --feature-log`) ranks the items people clicked higher, for the
//! people who did not click them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::process::Command;
use std::time::{Duration, Instant};

use cascade_e2e::{Origin, TempDir, repo_root};
use cascade_shared::wire::RecList;
use serde_json::Value;

const API_KEY: &str = "e2e-internal-key-0123456789";
const USERS: usize = 300;
const CLICKERS: usize = 150;

fn train(out: &std::path::Path, log: Option<&std::path::Path>) {
    let python = std::env::var("CASCADE_PYTHON").unwrap_or_else(|_| "python".into());
    let mut command = Command::new(&python);
    command.arg(repo_root().join("scripts/train.py")).arg("--out").arg(out);
    command.args(["--users", &USERS.to_string(), "--items", "200", "--epochs", "5", "--seed", "11"]);
    if let Some(log) = log {
        command.arg("--feature-log").arg(log);
    }
    let status = command.status().unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    assert!(status.success(), "train.py failed");
}

async fn origin(bundle: &std::path::Path, log: Option<&std::path::Path>) -> Origin {
    let mut config = "[serving]\ndeadline_ms = 5000\n".to_string();
    if let Some(log) = log {
        config.push_str(&format!("[feature_log]\ndir = {:?}\nquery_sample = 1.0\n", log.display().to_string()));
    }
    Origin::with_config(bundle, API_KEY, &config).await.unwrap()
}

async fn list(http: &reqwest::Client, origin: &Origin, user: &str, n: usize) -> RecList {
    let url = format!("{}/v1/users/{user}/recs?n={n}&page=home&device=desktop", origin.url);
    let response = http.get(url).bearer_auth(API_KEY).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Every entry of the log folder.
fn entries(log: &std::path::Path) -> Vec<Value> {
    let Ok(files) = std::fs::read_dir(log) else { return vec![] };
    files
        .flat_map(|f| {
            std::fs::read_to_string(f.unwrap().path()).unwrap().lines().map(str::to_string).collect::<Vec<_>>()
        })
        .map(|line| serde_json::from_str(&line).unwrap())
        .collect()
}

/// `item`'s position in each user's top 100 (101 when absent), for the users who did not click.
async fn positions(http: &reqwest::Client, origin: &Origin, item: &str) -> Vec<usize> {
    let mut found = Vec::new();
    for u in CLICKERS..USERS {
        let list = list(http, origin, &format!("u{u}"), 100).await;
        found.push(list.items.iter().position(|i| i.id == item).map_or(101, |p| p + 1));
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_logged_by_the_origin_raise_the_clicked_item_in_the_next_bundle() {
    let dir = TempDir::new("cascade-feature-log").unwrap();
    let (before, after, log) = (dir.path().join("before"), dir.path().join("after"), dir.path().join("log"));
    train(&before, None);
    let http = reqwest::Client::new();

    // Serve and log: half the users are shown a list and click one item none of them was shown.
    let serving = origin(&before, Some(&log)).await;
    let target = list(&http, &serving, "u0", 100).await.items.last().unwrap().id.clone();
    for u in 0..CLICKERS {
        let user = format!("u{u}");
        let shown = list(&http, &serving, &user, 10).await;
        let mut click = cascade_client::Event::new(&user, cascade_client::EventKind::Click, Some(&target));
        (click.rec_id, click.idempotency_key) = (Some(shown.rec_id), Some(format!("click-{u}")));
        assert_eq!(serving.client(API_KEY).send_events(vec![click]).await.unwrap().accepted, 1);
    }
    // One list per user above, and u0's first: the log has every list and every click.
    let until = Instant::now() + Duration::from_secs(10);
    let mut logged = entries(&log);
    while logged.iter().filter(|e| e["type"] == "event").count() < CLICKERS && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
        logged = entries(&log);
    }
    let served: Vec<&Value> = logged.iter().filter(|e| e["type"] == "served").collect();
    let events: Vec<&Value> = logged.iter().filter(|e| e["type"] == "event").collect();
    assert_eq!((served.len(), events.len()), (CLICKERS + 1, CLICKERS), "{}", serving.output());
    let first = served.iter().find(|e| e["user_id"] == "u1").unwrap();
    assert_eq!(first["source"], "realtime");
    assert_eq!(first["items"].as_array().unwrap().len(), 10);
    assert_eq!(first["items"][0]["position"], 1);
    assert_eq!(first["query"].as_array().map(Vec::len), Some(64), "query_sample = 1: every real-time list");
    assert!(events.iter().all(|e| served.iter().any(|s| s["rec_id"] == e["event"]["rec_id"])));
    let metrics = http.get(format!("{}/metrics", serving.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("cascade_feature_log_entries_total{outcome=\"written\"}"), "{metrics}");
    drop(serving);

    // Train on the dataset plus the log; compare the clicked item's place for the other users.
    train(&after, Some(&log));
    let metadata: Value = serde_json::from_slice(&std::fs::read(after.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(metadata["feature_log"]["interactions"], CLICKERS, "{}", metadata["feature_log"]);
    assert_eq!(metadata["feature_log"]["events_citing_a_served_list"], CLICKERS);
    let old = origin(&before, None).await;
    let new = origin(&after, None).await;
    let (was, now) = (positions(&http, &old, &target).await, positions(&http, &new, &target).await);
    let mean = |p: &[usize]| p.iter().sum::<usize>() as f64 / p.len() as f64;
    let top10 = |p: &[usize]| p.iter().filter(|&&p| p <= 10).count();
    eprintln!(
        "clicked item {target}: mean position {:.1} -> {:.1}, in the top 10 of {} -> {} of {} users",
        mean(&was),
        mean(&now),
        top10(&was),
        top10(&now),
        was.len()
    );
    assert!(mean(&now) < mean(&was) / 2.0, "{was:?} -> {now:?}");
    assert!(top10(&now) > top10(&was), "{was:?} -> {now:?}");
}
