//! A/B variants on the real origin: users split by a salted hash with the configured weights, the
//! variant and its bundle in every answer and in the feature log, sticky per user, reloadable per
//! variant, and `cascade report` telling the variants' click-through apart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cascade_e2e::{Origin, TempDir, bundle_dir, relabel_bundle, run_cascade_json};
use cascade_shared::wire::RecList;
use serde_json::{Value, json};

const API_KEY: &str = "e2e-internal-key-0123456789";
const USERS: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_variants_split_users_by_weight_and_report_apart() {
    let control = bundle_dir().unwrap();
    let control_id: String = serde_json::from_slice::<Value>(&std::fs::read(control.join("metadata.json")).unwrap())
        .unwrap()["bundle_id"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = TempDir::new("cascade-variants").unwrap();
    let treatment = dir.path().join("treatment");
    relabel_bundle(&control, &treatment, "variant-b");
    let log = dir.path().join("log");
    let config = format!(
        "variant_salt = \"e2e\"\n[serving]\ndeadline_ms = 5000\n[feature_log]\ndir = {:?}\n\
         [[variants]]\nname = \"control\"\nweight = 0.7\n\
         [[variants]]\nname = \"treatment\"\nweight = 0.3\nbundle = {:?}\n",
        log.display().to_string(),
        treatment.display().to_string()
    );
    let origin = Origin::with_config(&control, API_KEY, &config).await.unwrap();
    let http = reqwest::Client::new();
    let client = origin.client(API_KEY);
    let recs = |user: String| {
        let (http, url) = (http.clone(), format!("{}/v1/users/{user}/recs?n=10", origin.url));
        async move { http.get(url).bearer_auth(API_KEY).send().await.unwrap().json::<RecList>().await.unwrap() }
    };

    let mut assigned: HashMap<String, String> = HashMap::new();
    let mut clicks = HashMap::from([("control", 0), ("treatment", 0)]);
    for u in 0..USERS {
        let user = format!("u{u}");
        let list = recs(user.clone()).await;
        let variant = list.variant.clone().expect("every answer names its variant");
        let bundle = if variant == "control" { control_id.as_str() } else { "variant-b" };
        assert_eq!(list.model_version, bundle, "{user} in {variant}");
        // Treatment users click the first item of every list, control users of every other one.
        if variant == "treatment" || u % 2 == 0 {
            let mut click =
                cascade_client::Event::new(&user, cascade_client::EventKind::Click, Some(&list.items[0].id));
            (click.rec_id, click.position) = (Some(list.rec_id.clone()), Some(1));
            assert_eq!(client.send_events(vec![click]).await.unwrap().accepted, 1);
            *clicks.get_mut(variant.as_str()).unwrap() += 1;
        }
        assigned.insert(user, variant);
    }
    let treated = assigned.values().filter(|v| *v == "treatment").count();
    let share = treated as f64 / USERS as f64;
    assert!((share - 0.3).abs() < 0.08, "treatment share {share} (weight 0.3; 10,000 users: the unit test)");
    // Sticky: the same users get the same variants again.
    for u in (0..USERS).step_by(7) {
        let user = format!("u{u}");
        assert_eq!(recs(user.clone()).await.variant.as_ref(), assigned.get(&user));
    }
    let metrics = http.get(format!("{}/metrics", origin.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("cascade_variant_lists_total{variant=\"treatment\"}"), "{metrics}");

    // The report, from the log: each variant's lists and clicks apart.
    let lists = USERS + USERS.div_ceil(7);
    let until = Instant::now() + Duration::from_secs(10);
    let report = loop {
        let report = run_cascade_json(&["report", "--feature-log", log.to_str().unwrap()]).unwrap();
        let counted = |v: &str| report["variants"][v]["lists"].as_u64().unwrap_or(0);
        if counted("control") + counted("treatment") >= lists as u64 || Instant::now() > until {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for variant in ["control", "treatment"] {
        let figures = &report["variants"][variant];
        assert_eq!(figures["clicks"].as_u64(), Some(clicks[variant]), "{report}");
        let users = assigned.values().filter(|v| *v == variant).count();
        assert!(figures["lists"].as_u64().unwrap() >= users as u64, "{report}");
    }
    let ctr = |v: &str| report["variants"][v]["list_ctr"].as_f64().unwrap();
    assert!(ctr("treatment") > ctr("control"), "treatment users clicked every list: {report}");

    // Reload one variant: treatment now serves the control's bundle; an unknown variant is a 404.
    let reload = |body: Value| {
        let url = format!("{}/admin/bundle", origin.url);
        let http = http.clone();
        async move { http.post(url).bearer_auth(API_KEY).json(&body).send().await.unwrap() }
    };
    let swapped = reload(json!({"path": control.display().to_string(), "variant": "treatment"})).await;
    assert_eq!(swapped.status(), 200);
    let treated_user = assigned.iter().find(|(_, v)| *v == "treatment").unwrap().0.clone();
    assert_eq!(recs(treated_user).await.model_version, control_id);
    assert_eq!(reload(json!({"path": control.display().to_string(), "variant": "nope"})).await.status(), 404);
}
