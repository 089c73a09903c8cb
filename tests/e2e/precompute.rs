//! `cascade precompute` against real Redis shards: staged and resumed from a checkpoint, then used
//! by the origin as real-time candidates and, when the ranker cannot finish, as the answer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::HashSet;

use cascade_e2e::{Origin, RedisServer, TempDir, bundle_dir, run_cascade, run_cascade_json, user_recs};
use cascade_shared::wire::{RecList, Source};

const API_KEY: &str = "precompute-internal-key-0123456789";

async fn recs(origin: &Origin, user: &str, query: &str) -> RecList {
    user_recs(origin, API_KEY, user, query).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precomputed_lists_are_resumable_and_serve_as_candidates_and_fallback() {
    let bundle = bundle_dir().unwrap();
    let users = serde_json::from_slice::<serde_json::Value>(&std::fs::read(bundle.join("metadata.json")).unwrap())
        .unwrap()["users"]
        .as_u64()
        .unwrap();
    let shards = [RedisServer::start().await.unwrap(), RedisServer::start().await.unwrap()];
    let shard_list = format!("{},{}", shards[0].url, shards[1].url);
    run_cascade(&["load", "--bundle", bundle.to_str().unwrap(), "--redis", &shard_list, "--users-only"]).unwrap();

    // Staged: 300 users, then the rest from the checkpoint.
    let scratch = TempDir::new("cascade-precompute").unwrap();
    let checkpoint = scratch.path().join("checkpoint");
    let args = |extra: &[&str]| {
        let mut args = vec!["precompute", "--bundle", bundle.to_str().unwrap(), "--redis", &shard_list, "--checkpoint"];
        args.push(checkpoint.to_str().unwrap());
        args.extend_from_slice(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let report = |extra: &[&str]| {
        let args = args(extra);
        run_cascade_json(&args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap()
    };
    let first = report(&["--max-users", "300"]);
    assert_eq!((first["written"].as_u64(), first["resumed_at"].as_u64()), (Some(300), Some(0)), "{first}");
    assert_eq!(first["remaining"].as_u64(), Some(users - 300), "{first}");
    let second = report(&[]);
    assert_eq!((second["written"].as_u64(), second["resumed_at"].as_u64()), (Some(users - 300), Some(300)), "{second}");
    assert_eq!(second["remaining"].as_u64(), Some(0), "{second}");

    let env = [
        ("CASCADE_BUNDLE", bundle.display().to_string()),
        ("CASCADE_REDIS_SHARDS", shard_list.clone()),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
    ];

    // A ranker that cannot finish within the deadline: the precomputed list is the answer.
    let slow_config = scratch.path().join("slow.toml");
    std::fs::write(
        &slow_config,
        "[serving]\ndeadline_ms = 20\n[ranker]\nbatch_policy = \"fixed\"\nmax_wait_ms = 200\nmax_batch_rows = 100000\n",
    )
    .unwrap();
    let mut slow_env = env.to_vec();
    slow_env.push(("CASCADE_CONFIG", slow_config.display().to_string()));
    let slow = Origin::start(&slow_env).await.unwrap();
    let precomputed = recs(&slow, "u3", "n=50").await;
    assert_eq!(precomputed.source, Source::Precomputed);
    assert_eq!(precomputed.items.len(), 50);
    assert_eq!(recs(&slow, "u3", "n=50").await.source, Source::Precomputed, "fallbacks are not cached");

    // A healthy origin re-ranks the precomputed candidates in the request's context.
    let origin = Origin::start(&env).await.unwrap();
    let same_context = recs(&origin, "u3", "n=10").await;
    assert_eq!(same_context.source, Source::Realtime);
    let ids = |list: &RecList| list.items.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&same_context), ids(&precomputed)[..10], "same context, same model: same order");
    let candidates: HashSet<String> = ids(&precomputed).into_iter().collect();
    let other_context = recs(&origin, "u3", "n=20&page=search&device=tablet").await;
    assert_eq!(other_context.source, Source::Realtime);
    assert!(ids(&other_context).iter().all(|id| candidates.contains(id)), "re-ranked from the precomputed candidates");
}
