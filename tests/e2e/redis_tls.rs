//! Redis as production runs it, on every path Cascade has: TLS-only servers that require a client
//! certificate, an ACL user allowed `cascade:*` keys only (the `default` user off), the password in
//! the URL. `cascade load` writes and verifies, `cascade reshard` moves keys from one such server
//! to two, `cascade precompute` writes lists, and `cascade serve` reads embeddings through the lean
//! `MGET` reader, keeps user state and L2 there and reports the shards ready. A wrong password or
//! an untrusted certificate is refused with a message that names no secret.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use cascade_e2e::secure_redis::{PASSWORD, PASSWORD_IN_URL, TestCerts};
use cascade_e2e::{Origin, RedisServer, TempDir, bundle_dir, run_cascade, run_cascade_json, user_recs};
use cascade_shared::wire::Source;
use serde_json::Value;

const API_KEY: &str = "redis-tls-internal-key-0123456789";

fn with_flags<'a>(args: &[&'a str], flags: &'a [String]) -> Vec<&'a str> {
    args.iter().copied().chain(flags.iter().map(String::as_str)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_redis_path_works_over_tls_with_an_acl_user() {
    let certs = TestCerts::create().unwrap();
    let servers = [RedisServer::start_secure(&certs).await.unwrap(), RedisServer::start_secure(&certs).await.unwrap()];
    let bundle = bundle_dir().unwrap();
    let bundle = bundle.to_str().unwrap();
    let (one, both) = (servers[0].url.clone(), format!("{},{}", servers[0].url, servers[1].url));
    let flags = certs.flags();

    // Load onto the first server alone, so that the reshard below has keys to move.
    let loaded =
        run_cascade_json(&with_flags(&["load", "--bundle", bundle, "--redis", &one, "--users-only"], &flags)).unwrap();
    let users = &loaded["loaded"][0];
    let written = users["written"].as_u64().unwrap();
    assert!(written > 100 && users["verified"].as_u64() == Some(written), "{loaded}");

    // One server to two, through the client (no MIGRATE: the servers hold no credentials).
    let resharded = run_cascade_json(&with_flags(&["reshard", "--from", &one, "--to", &both], &flags)).unwrap();
    assert_eq!(resharded["outcome"], "done", "{resharded}");
    let after = &resharded["after"];
    assert_eq!((after["misplaced"].as_u64(), after["duplicates"].as_u64()), (Some(0), Some(0)), "{resharded}");
    let moved = resharded["moved"].as_u64().unwrap();
    assert!(moved > 0 && moved < resharded["keys"].as_u64().unwrap(), "about half moved: {resharded}");

    // Precompute, configured by file: the [redis.tls] section.
    let scratch = TempDir::new("cascade-redis-tls").unwrap();
    let config = scratch.path().join("cascade.toml");
    let file = |name: &str| certs.path(name).display().to_string();
    std::fs::write(
        &config,
        format!(
            "[redis.tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
            file("ca.crt"),
            file("client.crt"),
            file("client.key")
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let precomputed = run_cascade_json(&[
        "precompute",
        "--config",
        config,
        "--bundle",
        bundle,
        "--redis",
        &both,
        "--max-users",
        "50",
    ])
    .unwrap();
    assert_eq!(precomputed["written"].as_u64(), Some(50), "{precomputed}");

    // Serving: every Redis component over TLS as the ACL user.
    let mut env = vec![
        ("CASCADE_BUNDLE", bundle.to_string()),
        ("CASCADE_REDIS_SHARDS", both.clone()),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
    ];
    env.extend(certs.env());
    let origin = Origin::start(&env).await.unwrap();
    let http = reqwest::Client::new();
    let ready: Value = http.get(format!("{}/readyz", origin.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!((ready["ready"].as_bool(), &ready["degraded"]), (Some(true), &serde_json::json!([])), "{ready}");
    for user in ["u1", "u2", "u3", "u4"] {
        let list = user_recs(&origin, API_KEY, user, "n=10").await;
        assert_eq!(list.source, Source::Realtime, "{user}: {}", origin.output());
    }
    // User state is written there too: a purchase leaves the next list.
    let first = user_recs(&origin, API_KEY, "u1", "n=10").await;
    let bought = first.items[0].id.clone();
    let purchase = cascade_client::Event::new("u1", cascade_client::EventKind::Purchase, Some(&bought));
    assert_eq!(origin.client(API_KEY).send_events(vec![purchase]).await.unwrap().accepted, 1);
    let next = user_recs(&origin, API_KEY, "u1", "n=10").await;
    assert!(next.items.iter().all(|item| item.id != bought), "{bought} still served: {next:?}");
    assert!(!origin.output().contains(PASSWORD), "the password reached the origin's log");

    // Refusals: a wrong password, and no client certificate; neither message carries a secret.
    let wrong = servers[0].url.replace(PASSWORD_IN_URL, "wrong-password");
    // (The fixture's error starts with the command line, URL included: only the output counts.)
    let output = |error: anyhow::Error| error.to_string().split_once('\n').map(|(_, out)| out.to_string()).unwrap();
    let refused = output(
        run_cascade(&with_flags(&["load", "--bundle", bundle, "--redis", &wrong, "--users-only"], &flags)).unwrap_err(),
    );
    assert!(refused.contains("authentication failed") && !refused.contains("wrong-password"), "{refused}");
    let ca_only = ["--redis-tls-ca".to_string(), file("ca.crt")];
    let refused = output(
        run_cascade(&with_flags(&["load", "--bundle", bundle, "--redis", &one, "--users-only"], &ca_only)).unwrap_err(),
    );
    assert!(refused.contains("unavailable"), "{refused}");
    assert!(!refused.contains(PASSWORD) && !refused.contains(PASSWORD_IN_URL), "{refused}");
}
