//! `cascade reshard` on real Redis servers: four shards to five, interrupted and resumed, nothing
//! lost, only the keys whose shard changed moved, TTLs kept.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use cascade_origin::redis::tls::RedisTls;
use std::time::Duration;

use cascade_e2e::{RedisServer, TempDir, run_cascade, run_cascade_json};
use cascade_origin::generate::{GenSpec, Generator};
use cascade_origin::store::EmbeddingStore;
use cascade_origin::store::redis_shards::RedisShardStore;
use cascade_shared::hashing::shard_for;
use cascade_shared::keys::{EntityKind, generation_key, l2_key, recent_key};

async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_shards_to_five_interrupted_resumed_and_verified() {
    let servers = RedisServer::start_many(5).await.unwrap();
    let all: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let (four, five) = (all[..4].join(","), all.join(","));
    let spec_text = "users=20000,items=2000,dim=8,clusters=10";
    run_cascade(&["load", "--generate", spec_text, "--redis", &four]).unwrap();
    // User state beside the embeddings, with a TTL that must survive the move.
    for n in 0..200 {
        let id = format!("u{n}");
        let mut c = connection(&all[shard_for(&id, 4) as usize]).await;
        let () =
            redis::cmd("SET").arg(generation_key(&id)).arg(n).arg("EX").arg(3600).query_async(&mut c).await.unwrap();
    }
    let total_keys = 20_000 + 2_000 + 200;
    // Caches and sessions that expire mid-reshard, as on any live system: moved while there, never
    // counted (a count that includes them fails verification).
    for n in 0..100 {
        let id = format!("u{n}");
        let mut c = connection(&all[shard_for(&id, 4) as usize]).await;
        let l2 = l2_key("b1", &id, "home.desktop.us", 0);
        let () = redis::cmd("SET").arg(&l2).arg("[]").arg("PX").arg(1500).query_async(&mut c).await.unwrap();
        let () = redis::cmd("SET").arg(recent_key(&id)).arg("x").arg("PX").arg(1500).query_async(&mut c).await.unwrap();
    }

    let dir = TempDir::new("cascade-reshard").unwrap();
    let checkpoint = dir.path().join("reshard.json");
    let checkpoint = checkpoint.to_str().unwrap();
    let common = ["reshard", "--from", &four, "--to", &five, "--checkpoint", checkpoint, "--batch", "500"];
    let first = run_cascade_json(&[&common[..], &["--max-moves", "1000"]].concat()).unwrap();
    assert_eq!(first["outcome"], "interrupted", "{first}");
    assert_eq!(first["keys"].as_u64(), Some(total_keys), "census counted every key: {first}");
    let moved_first: u64 =
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(checkpoint).unwrap()).unwrap()["moved"]
            .as_u64()
            .unwrap();
    assert!((1000..total_keys).contains(&moved_first), "{moved_first}");
    tokio::time::sleep(Duration::from_millis(1600)).await; // the volatile keys expire

    let second = run_cascade_json(&common).unwrap();
    assert_eq!((second["outcome"].as_str(), second["resumed"].as_bool()), (Some("done"), Some(true)), "{second}");
    assert_eq!(second["keys"].as_u64(), Some(total_keys), "{second}");
    let after = &second["after"];
    assert_eq!(
        (after["keys"].as_u64(), after["misplaced"].as_u64(), after["duplicates"].as_u64()),
        (Some(total_keys), Some(0), Some(0))
    );
    // Only keys whose shard changed moved: about a fifth, within 1.1x of ideal.
    let ratio = second["moved"].as_f64().unwrap() / total_keys as f64 / 0.2;
    assert!((0.9..=1.1).contains(&ratio), "moved {ratio}x the ideal fraction: {second}");

    // Every vector reads back bit-exact through five shards; the moved TTLs survived.
    let spec = GenSpec::parse(spec_text).unwrap();
    let generator = Generator::new(spec);
    let store =
        RedisShardStore::connect(&all, &spec.bundle_id(), 8, Duration::from_secs(2), &RedisTls::default()).unwrap();
    let rows = generator.rows(EntityKind::User, 0..20_000);
    let ids: Vec<String> = rows.iter().map(|(id, _)| id.clone()).collect();
    for ((id, want), got) in rows.iter().zip(store.get_batch(EntityKind::User, &ids).await) {
        assert_eq!(got.unwrap().as_ref(), Some(want), "{id}");
    }
    let mut moved_ttls = 0;
    for n in 0..200 {
        let id = format!("u{n}");
        let (old, new) = (shard_for(&id, 4), shard_for(&id, 5));
        let mut c = connection(&all[new as usize]).await;
        let ttl: i64 = redis::cmd("TTL").arg(generation_key(&id)).query_async(&mut c).await.unwrap();
        assert!(ttl > 3000, "{id}: ttl {ttl}");
        moved_ttls += usize::from(old != new);
    }
    assert!(moved_ttls > 10, "some user state moved: {moved_ttls}");

    // A second run over a finished reshard moves nothing and still verifies.
    std::fs::remove_file(checkpoint).unwrap();
    let again = run_cascade_json(&common).unwrap();
    assert_eq!((again["outcome"].as_str(), again["moved"].as_u64()), (Some("done"), Some(0)), "{again}");

    // A key no shard id can be read from (here an id with ':', which Cascade never writes) stops
    // the run before anything moves, naming the key, instead of being left behind on success.
    let mut c = connection(&all[0]).await;
    let () = redis::cmd("SET").arg("cascade:emb:u:b1:a:b").arg("x").query_async(&mut c).await.unwrap();
    let four_again = all[..4].join(",");
    let refused = run_cascade(&["reshard", "--from", &five, "--to", &four_again]).unwrap_err().to_string();
    assert!(refused.contains("outside the key schema") && refused.contains("cascade:emb:u:b1:a:b"), "{refused}");
}

/// Four shards to five while an origin keeps taking purchases and serving lists: the origin runs
/// with `previous_shards` (the four) and `shards` (the five), moving each user's keys on first
/// access and reading embeddings not moved yet at their old shard; `cascade reshard --online`
/// moves the rest. Every acknowledged purchase is afterwards on its user's new shard, every list
/// during the move was ranked in real time (no user looked unknown), and the reshard's own
/// verification finds every key on its shard exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_shards_to_five_online_while_events_flow() {
    use cascade_e2e::{Origin, bundle_dir, user_recs};
    use cascade_shared::keys::purchases_key;
    use cascade_shared::wire::Source;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    const KEY: &str = "online-reshard-key-0123456789";

    let servers = RedisServer::start_many(5).await.unwrap();
    let all: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    let (four, five) = (all[..4].join(","), all.join(","));
    let bundle = bundle_dir().unwrap();
    run_cascade(&["load", "--bundle", bundle.to_str().unwrap(), "--redis", &four, "--users-only"]).unwrap();
    // Another bundle's keys beside it, so that the move lasts long enough to overlap the traffic.
    run_cascade(&["load", "--generate", "users=30000,items=10,dim=8", "--redis", &four, "--users-only"]).unwrap();
    let env = |extra: Vec<(&'static str, String)>| {
        let mut env = vec![("CASCADE_BUNDLE", bundle.display().to_string()), ("CASCADE_API_KEYS", KEY.to_string())];
        env.extend(extra);
        env
    };
    let users: Vec<String> = (1..=120).map(|n| format!("u{n}")).collect();
    let mut acked: Vec<(String, String)> = Vec::new();
    // State written before the move, on the old placement.
    let old = Origin::start(&env(vec![("CASCADE_REDIS_SHARDS", four.clone())])).await.unwrap();
    let items: Vec<String> = user_recs(&old, KEY, "u1", "n=30").await.items.into_iter().map(|i| i.id).collect();
    let before: Vec<cascade_client::Event> = users[..60]
        .iter()
        .enumerate()
        .map(|(n, user)| cascade_client::Event::new(user, cascade_client::EventKind::Purchase, Some(&items[n % 30])))
        .collect();
    assert_eq!(old.client(KEY).send_events(before.clone()).await.unwrap().accepted, 60);
    acked.extend(before.iter().map(|e| (e.user_id.clone(), e.item_id.clone().unwrap())));
    drop(old);

    // Every origin in moving mode, then the reshard while events and list requests flow.
    let origin = Arc::new(
        Origin::start(&env(vec![
            ("CASCADE_REDIS_SHARDS", five.clone()),
            ("CASCADE_REDIS_PREVIOUS_SHARDS", four.clone()),
        ]))
        .await
        .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (origin, stop, users, items) = (Arc::clone(&origin), Arc::clone(&stop), users.clone(), items.clone());
        tokio::spawn(async move {
            let (client, mut acked, mut sources) = (origin.client(KEY), Vec::new(), Vec::new());
            let started = std::time::Instant::now();
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let mut n = 0usize;
            // Bounded: until told to stop, at most 60 s and 5,000 rounds.
            while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline && n < 5_000 {
                let (user, item) = (&users[(n * 7) % users.len()], &items[(n * 11) % items.len()]);
                let event = cascade_client::Event::new(user, cascade_client::EventKind::Purchase, Some(item));
                if matches!(client.send_events(vec![event]).await.map(|a| a.accepted), Ok(1)) {
                    acked.push((user.clone(), item.clone(), started.elapsed()));
                }
                let reader = &users[(n * 13 + 5) % users.len()];
                sources.push(user_recs(&origin, KEY, reader, "n=10").await.source);
                n += 1;
            }
            (acked, sources)
        })
    };
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await; // events flowing before the move starts
    let reshard = tokio::task::spawn_blocking(move || {
        run_cascade_json(&["reshard", "--from", &four, "--to", &five, "--online", "--batch", "100"])
    });
    let move_began = started.elapsed();
    let outcome = reshard.await.unwrap().unwrap();
    let move_ended = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await; // and after it
    stop.store(true, Ordering::Relaxed);
    let (during, sources) = traffic.await.unwrap();
    assert_eq!(outcome["outcome"], "done", "{outcome}");
    let after = &outcome["after"];
    assert_eq!((after["misplaced"].as_u64(), after["duplicates"].as_u64()), (Some(0), Some(0)), "{outcome}");
    assert!(outcome["moved"].as_u64().unwrap() > 0, "{outcome}");
    let in_move = during.iter().filter(|(_, _, at)| (move_began..move_ended).contains(at)).count();
    assert!(in_move >= 10, "{in_move} events acknowledged while the reshard ran ({move_began:?}..{move_ended:?})");
    // Ranked for the user (in real time, or that list again from L1/L2): no user looked unknown.
    let ranked = [Source::Realtime, Source::CacheL1, Source::CacheL2];
    let fallbacks = sources.iter().filter(|s| !ranked.contains(s)).count();
    assert_eq!(fallbacks, 0, "lists during the move: {sources:?}");

    // No acknowledged purchase lost: each is in its user's set on the user's new shard.
    acked.extend(during.into_iter().map(|(user, item, _)| (user, item)));
    for (user, item) in &acked {
        let mut c = connection(&all[shard_for(user, 5) as usize]).await;
        let there: bool = redis::cmd("SISMEMBER").arg(purchases_key(user)).arg(item).query_async(&mut c).await.unwrap();
        assert!(there, "{user} bought {item}: acknowledged, then lost");
    }
    println!(
        "online reshard: {} moves in {:?}; {} purchases acknowledged ({in_move} while it ran), {} lists, all kept",
        outcome["moved"],
        move_ended - move_began,
        acked.len(),
        sources.len()
    );
}
