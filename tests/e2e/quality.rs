//! Online/offline agreement: for held-out users, the origin's top 10 is the top 10 that
//! `scripts/train.py`'s `Served` (the scorer `scripts/quality.py` reports Cascade's quality with)
//! computed from the same bundle, stored in `reference.json` under `served`. The same query (user
//! vector plus weighted recent items), the same exclusions (the user's history), the same candidates
//! (the exact top inner products), the same ranker: no drift between what is measured and what is
//! served.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use cascade_e2e::{Origin, bundle_dir};
use cascade_shared::wire::{RecList, Source};
use serde_json::Value;

const API_KEY: &str = "e2e-internal-key-0123456789";
/// A debug build under a loaded test run: a deadline that real time always meets, so every answer
/// compared is the real-time list, not a fallback.
const PATIENT: &str = "[serving]\ndeadline_ms = 5000\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origins_top_ten_for_held_out_users_is_the_harnesss() {
    let bundle = bundle_dir().unwrap();
    let reference: Value = serde_json::from_slice(&std::fs::read(bundle.join("reference.json")).unwrap()).unwrap();
    let served = &reference["served"];
    let lists = served["lists"].as_object().expect("reference.json has the served lists (scripts/train.py)");
    assert!(lists.len() >= 20, "only {} users to compare", lists.len());
    let origin = Origin::with_config(&bundle, API_KEY, PATIENT).await.unwrap();
    let http = reqwest::Client::new();
    let (page, device) = (served["page"].as_str().unwrap(), served["device"].as_str().unwrap());
    let mut identical = 0;
    for (user, expected) in lists {
        let expected: Vec<(String, f64)> = expected
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| (pair[0].as_str().unwrap().to_string(), pair[1].as_f64().unwrap()))
            .collect();
        let url = format!("{}/v1/users/{user}/recs?n=10&page={page}&device={device}", origin.url);
        let response = http.get(url).bearer_auth(API_KEY).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let list: RecList = response.json().await.unwrap();
        assert_eq!(list.source, Source::Realtime, "{user}: {}", origin.output());
        let got: Vec<&str> = list.items.iter().map(|i| i.id.as_str()).collect();
        let want: Vec<&str> = expected.iter().map(|(id, _)| id.as_str()).collect();
        if got == want {
            identical += 1;
        }
        // Where the order differs, only items whose scores tie (within float32 noise) may swap:
        // each position's score is the harness's score at that position.
        assert_eq!(got.len(), want.len(), "{user}: {got:?} vs {want:?}");
        for (position, (item, (_, score))) in list.items.iter().zip(&expected).enumerate() {
            assert!(
                (f64::from(item.score) - score).abs() < 1e-5,
                "{user} position {}: origin {} ({}) vs harness {want:?} ({score})",
                position + 1,
                item.id,
                item.score
            );
        }
    }
    eprintln!("agreement: {identical}/{} users' top 10 identical, the rest differ only by tied scores", lists.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_the_bundle_does_not_know_gets_real_time_lists_from_their_session() {
    let origin = Origin::with_config(&bundle_dir().unwrap(), API_KEY, PATIENT).await.unwrap();
    let http = reqwest::Client::new();
    let recs = |url: String| {
        let http = http.clone();
        async move { http.get(url).bearer_auth(API_KEY).send().await.unwrap().json::<RecList>().await.unwrap() }
    };
    let url = format!("{}/v1/users/new-visitor/recs?n=10", origin.url);
    let cold = recs(url.clone()).await;
    assert_eq!(cold.source, Source::Segment, "no embedding and no session: cold start");

    // Two views: the query is made of those items alone.
    let seen: Vec<String> = cold.items.iter().take(2).map(|i| i.id.clone()).collect();
    let views =
        seen.iter().map(|item| cascade_client::Event::new("new-visitor", cascade_client::EventKind::View, Some(item)));
    assert_eq!(origin.client(API_KEY).send_events(views.collect()).await.unwrap().accepted, 2);
    let warm = recs(url).await;
    assert_eq!(warm.source, Source::Realtime, "{}", origin.output());
    assert_eq!(warm.items.len(), 10);
    let ids = |list: &RecList| list.items.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
    assert_ne!(ids(&warm), ids(&cold), "the session, not the segment, made this list");
}
