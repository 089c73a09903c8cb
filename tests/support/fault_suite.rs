//! The fault suite: the real origin on two real Redis shards, each behind a [`FaultProxy`], under
//! an open-loop load; one fault injected for a bounded time; what callers saw before, during and
//! after. `benches/faults.rs` runs every fault at 50% and 150% of the measured capacity and saves
//! the figures; `tests/e2e/faults.rs` runs a short subset and asserts the promises.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cascade_shared::hashing::shard_for;
use cascade_shared::stats::SplitMix64;
use serde_json::{Value, json};

use crate::faults::{
    FaultProxy, ProxyMode, Sample, between, open_loop, open_loop_while, recovery_ms, redis_cmd, redis_connection,
    rss_mib, summarize,
};
use crate::{Origin, RedisServer, TempDir, bundle_dir, relabel_bundle, run_cascade};

/// The internal key the suite calls with.
pub const API_KEY: &str = "fault-suite-key-0123456789";
/// The origin's deadline in the suite (its default).
pub const DEADLINE: Duration = Duration::from_millis(80);
/// Users in the test bundle (`scripts/test.sh` trains 1,000).
const USERS: usize = 1000;
/// The deployment secret of the rig (the Worker signs with a key derived from it).
pub const SECRET: &str = "fault-suite-secret-0123456789";

/// A fault the suite injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Shard 1's server stops, then restarts empty and is refilled with `cascade load --shard 1`.
    ShardKilledRestarted,
    /// Shard 1's network drops everything.
    ShardBlackholed,
    /// Shard 1 answers 50 ms late.
    ShardSlowed,
    /// 10% of shard 1's connections are reset.
    ShardResets,
    /// FAISS and the ranker take 10 times as long.
    SlowSearchAndRanker,
    /// The ranker panics once.
    RankerPanicsOnce,
    /// Three times the admission limit of concurrent requests arrive at once.
    Overload3x,
    /// The bundle is reloaded 10 times.
    Reload10x,
    /// Events are posted (with retries) while shard 1's network drops everything.
    EventsWhileShardDies,
}

impl Fault {
    /// Every fault, in the order the bench runs them.
    pub const ALL: [Fault; 9] = [
        Fault::ShardKilledRestarted,
        Fault::ShardBlackholed,
        Fault::ShardSlowed,
        Fault::ShardResets,
        Fault::SlowSearchAndRanker,
        Fault::RankerPanicsOnce,
        Fault::Overload3x,
        Fault::Reload10x,
        Fault::EventsWhileShardDies,
    ];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Fault::ShardKilledRestarted => "shard_killed_restarted_refilled",
            Fault::ShardBlackholed => "shard_blackholed",
            Fault::ShardSlowed => "shard_slowed_50ms",
            Fault::ShardResets => "shard_resets_10pct",
            Fault::SlowSearchAndRanker => "faiss_and_ranker_10x_slower",
            Fault::RankerPanicsOnce => "ranker_panics_once",
            Fault::Overload3x => "overload_3x_admission_limit",
            Fault::Reload10x => "bundle_reloaded_10x",
            Fault::EventsWhileShardDies => "events_while_shard_dies",
        }
    }
}

/// The origin, its shards and their proxies.
pub struct Rig {
    /// The origin (its shards are the proxies' URLs).
    pub origin: Origin,
    /// How the origin was started (to restart it where it listened).
    origin_env: Vec<(&'static str, String)>,
    /// The real servers.
    pub shards: Vec<RedisServer>,
    /// One proxy per server.
    pub proxies: Vec<FaultProxy>,
    /// Requests admitted at once (`serving.max_in_flight`).
    pub max_in_flight: usize,
    bundles: [PathBuf; 2],
    bundle_id: String,
    direct: String,
    /// Servers started in place of killed ones (stopped with the rig).
    replacements: std::sync::Mutex<Vec<RedisServer>>,
    http: reqwest::Client,
    _dir: TempDir,
}

impl Rig {
    /// Two shards loaded with the test bundle (and a relabelled copy, for reloads), proxies in
    /// front, and the origin with fault injection on.
    pub async fn start(max_in_flight: usize) -> anyhow::Result<Self> {
        let dir = TempDir::new("cascade-faults")?;
        let shards = RedisServer::start_many(2).await?;
        let direct = shards.iter().map(|s| s.url.clone()).collect::<Vec<_>>().join(",");
        let original = bundle_dir()?;
        let copy = dir.path().join("bundle-b");
        relabel_bundle(&original, &copy, "fault-suite-b");
        for bundle in [&original, &copy] {
            run_cascade(&["load", "--bundle", &bundle.display().to_string(), "--redis", &direct, "--users-only"])?;
        }
        let mut proxies = Vec::new();
        for shard in &shards {
            proxies.push(FaultProxy::start(&format!("127.0.0.1:{}", shard.port)).await?);
        }
        let config = dir.path().join("cascade.toml");
        // FAULTS_PACE_AFTER_REFUSALS=4 measures the origin with pacing on (README, "Failure behaviour").
        let pacing = std::env::var("FAULTS_PACE_AFTER_REFUSALS").ok().and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
        std::fs::write(
            &config,
            format!(
                "[serving]\nfault_injection = true\nmax_in_flight = {max_in_flight}\npace_after_refusals = {pacing}\n\
                 [cache]\nl1_ttl_secs = 1\n"
            ),
        )?;
        let origin_env = vec![
            ("CASCADE_CONFIG", config.display().to_string()),
            ("CASCADE_BUNDLE", original.display().to_string()),
            ("CASCADE_REDIS_SHARDS", proxies.iter().map(|p| p.url.clone()).collect::<Vec<_>>().join(",")),
            ("CASCADE_API_KEYS", API_KEY.to_string()),
            ("CASCADE_SECRET", SECRET.to_string()),
            ("CASCADE_LOG", "error".to_string()),
            // As in production: a backtrace symbolized at the first panic maps libtorch's symbols
            // (about 110 MiB resident for good), which the RSS figures would report as a leak.
            ("RUST_BACKTRACE", "0".to_string()),
        ];
        let origin = Origin::start(&origin_env).await?;
        let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
        let metadata: Value = serde_json::from_slice(&std::fs::read(original.join("metadata.json"))?)?;
        let bundle_id = metadata["bundle_id"].as_str().unwrap_or_default().to_string();
        Ok(Rig {
            origin,
            origin_env,
            shards,
            proxies,
            max_in_flight,
            bundles: [original, copy],
            bundle_id,
            direct,
            http,
            replacements: std::sync::Mutex::new(Vec::new()),
            _dir: dir,
        })
    }

    /// A user-list request for request number `i`: a user and a context that miss L1 most times.
    fn recs(&self, i: usize, seed: u64) -> reqwest::RequestBuilder {
        self.http.get(recs_url(&self.origin.url, i, seed)).bearer_auth(API_KEY)
    }

    /// Request `i` of the soak's mix: 70% hits (a few hundred users and contexts, asked again and
    /// again), 25% misses (the fault runs' mix), 5% events (a click or a purchase, with a key).
    pub fn mixed(&self, i: usize, seed: u64) -> reqwest::RequestBuilder {
        let mut rng = SplitMix64::new(seed ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
        match rng.below(100) {
            0..70 => {
                let (user, page) = (rng.below(300), ["home", "browse", "detail"][rng.below(3)]);
                let url = format!("{}/v1/users/u{user}/recs?n=10&page={page}", self.origin.url);
                self.http.get(url).bearer_auth(API_KEY)
            }
            70..95 => self.recs(i, seed),
            _ => {
                let (user, item) = (rng.below(USERS), rng.below(800));
                let kind = if rng.below(5) == 0 { "purchase" } else { "click" };
                let body = json!({"events": [{"user_id": format!("u{user}"), "kind": kind,
                    "item_id": format!("{item}"), "idempotency_key": format!("soak-{seed}-{i}")}]});
                self.http.post(format!("{}/v1/events", self.origin.url)).bearer_auth(API_KEY).json(&body)
            }
        }
    }

    /// The value of the metric line starting `name ` on `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let metrics = self.http.get(format!("{}/metrics", self.origin.url)).send().await?.text().await?;
        let prefix = format!("{name} ");
        Ok(metrics.lines().find_map(|l| l.strip_prefix(&prefix)?.parse().ok()).unwrap_or(0.0))
    }

    /// The origin's gauges that must not grow in a soak: queue depths and requests in flight.
    pub async fn gauges(&self) -> anyhow::Result<Value> {
        let text = self.http.get(format!("{}/metrics", self.origin.url)).send().await?.text().await?;
        // A metric's value summed over its label sets: the last field of each of its lines.
        let gauge = |name: &str| -> f64 {
            text.lines()
                .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let mut clients = 0u64;
        for shard in &self.shards {
            let mut connection = redis_connection(&shard.url).await?;
            let info = redis_cmd(&mut connection, &["INFO", "clients"]).await?;
            clients += info
                .lines()
                .find_map(|l| l.strip_prefix("connected_clients:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
                .saturating_sub(1); // this connection
        }
        Ok(json!({
            "rss_mib": rss_mib(self.origin.pid()),
            "in_flight": gauge("cascade_requests_in_flight"),
            "ranker_queue_depth": gauge("cascade_ranker_queue_depth"),
            "search_queue_depth": gauge("cascade_work_queue_depth"),
            "redis_clients": clients,
        }))
    }

    /// Requests per second the origin answers with 200 on the suite's request mix, closed loop.
    pub async fn capacity(&self, seconds: f64) -> f64 {
        let started = Instant::now();
        let outcomes = closed_loop(self, 16, 7, seconds).await;
        let ok = outcomes.iter().flatten().filter(|(status, _, _)| *status == 200).count();
        ok as f64 / started.elapsed().as_secs_f64()
    }

    async fn set_faults(&self, settings: Value) -> anyhow::Result<()> {
        let url = format!("{}/admin/faults", self.origin.url);
        let response = self.http.post(url).bearer_auth(API_KEY).json(&settings).send().await?;
        anyhow::ensure!(response.status() == 200, "setting faults: {}", response.text().await?);
        Ok(())
    }

    /// Users whose embeddings are missing from the shards (read directly, not through the proxies).
    pub async fn keys_lost(&self) -> anyhow::Result<usize> {
        let mut lost = 0;
        for (index, shard) in self.shards.iter().enumerate() {
            let mut connection = redis_connection(&shard.url).await?;
            for user in (0..USERS).filter(|u| shard_for(&format!("u{u}"), 2) as usize == index) {
                let key = cascade_shared::keys::embedding_key(
                    cascade_shared::keys::EntityKind::User,
                    &self.bundle_id,
                    &format!("u{user}"),
                );
                if redis_cmd(&mut connection, &["EXISTS", &key]).await? != "1" {
                    lost += 1;
                }
            }
        }
        Ok(lost)
    }
}

/// The URL of request number `i` of a load seeded with `seed`.
fn recs_url(base: &str, i: usize, seed: u64) -> String {
    let mut rng = SplitMix64::new(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let user = rng.below(USERS);
    let page = ["home", "browse", "detail", "search", "cart", "checkout"][rng.below(6)];
    let device = ["desktop", "mobile", "tablet"][rng.below(3)];
    let country = format!("{}{}", (b'a' + rng.below(26) as u8) as char, (b'a' + rng.below(26) as u8) as char);
    format!("{base}/v1/users/u{user}/recs?n=10&page={page}&device={device}&country={country}")
}

/// Closed-loop callers for `seconds`, each sending request after request (built as it goes):
/// per request, its status, whether a 503 said `Retry-After`, and its latency in ms.
async fn closed_loop(rig: &Rig, callers: usize, seed: u64, seconds: f64) -> Vec<Vec<(u16, bool, f64)>> {
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..callers)
        .map(|caller| {
            let (http, base) = (rig.http.clone(), rig.origin.url.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let mut i = caller;
                while Instant::now() < until {
                    let sent = Instant::now();
                    let response = http.get(recs_url(&base, i, seed)).bearer_auth(API_KEY).send().await;
                    let ms = sent.elapsed().as_secs_f64() * 1000.0;
                    outcomes.push(match response {
                        Ok(r) => (r.status().as_u16(), r.headers().contains_key("retry-after"), ms),
                        Err(_) => (0, false, ms),
                    });
                    i += callers;
                }
                outcomes
            })
        })
        .collect();
    let mut all = Vec::new();
    for worker in workers {
        all.push(worker.await.unwrap_or_default());
    }
    all
}

/// What one fault run measured.
pub struct FaultRun {
    /// The report (JSON).
    pub report: Value,
    /// All samples (for assertions).
    pub samples: Vec<Sample>,
}

/// The counter of answers served from the fallback chain because the CPU was saturated.
const BROWNOUT_FALLBACKS: &str = "cascade_fallbacks_total{reason=\"brownout\"}";

/// Runs `fault` under an open loop at `rate` requests/s: `before` seconds clean, the fault for
/// `during`, then `after` seconds with the fault cleared.
pub async fn run_fault(rig: &Rig, fault: Fault, rate: f64, phases: [f64; 3]) -> anyhow::Result<FaultRun> {
    let [before, during, after] = phases;
    let total = before + during + after;
    let rss_before = rss_mib(rig.origin.pid());
    let connects_before: u64 = rig.proxies.iter().map(FaultProxy::accepted).sum();
    let brownouts_before = rig.metric(BROWNOUT_FALLBACKS).await?;
    let seed = rand_seed();
    let rig_ref: &Rig = rig;
    // The load runs until `after` seconds past the moment the fault clears (a refill may take
    // longer than `during`), at most a minute past the planned end.
    let cleared = std::sync::Mutex::new(None::<Duration>);
    let keep_going = |due: Duration| {
        let cleared = *cleared.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        cleared.is_none_or(|at| due < at + Duration::from_secs_f64(after))
    };
    let load = open_loop_while(rate, total + 60.0, keep_going, |i| rig_ref.recs(i, seed));
    let run_started = Instant::now();
    let (samples, injected) = tokio::join!(load, async {
        tokio::time::sleep(Duration::from_secs_f64(before + 0.02)).await;
        let injected = inject(rig_ref, fault, Duration::from_secs_f64(during)).await;
        if let Ok((_, cleared_after)) = &injected {
            // When the fault was cleared, from the loop's start.
            let at = Duration::from_secs_f64(before) + *cleared_after;
            *cleared.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(at);
        }
        injected
    });
    let (extra, cleared_after) = injected?;
    let clear_at = Duration::from_secs_f64(before) + cleared_after;
    let clear_at = clear_at.max(Duration::from_secs_f64(before + during));
    let connects_after: u64 = rig.proxies.iter().map(FaultProxy::accepted).sum();
    let rss_after = rss_mib(rig.origin.pid());
    let fault_start = Duration::from_secs_f64(before);
    let pre = between(&samples, Duration::ZERO, fault_start);
    let personal = |s: &[Sample]| {
        let n = s.iter().filter(|s| matches!(s.source.as_deref(), Some("realtime" | "cache_l1" | "cache_l2"))).count();
        n as f64 / s.iter().filter(|s| s.status == 200).count().max(1) as f64
    };
    let baseline = personal(&pre);
    let report = json!({
        "fault": fault.name(),
        "rate": rate,
        "phases_s": phases,
        "clear_at_s": clear_at.as_secs_f64(),
        "before": summarize(&pre, DEADLINE),
        "during": summarize(&between(&samples, fault_start, clear_at), DEADLINE),
        "after": summarize(&between(&samples, clear_at, Duration::MAX), DEADLINE),
        "all": summarize(&samples, DEADLINE),
        "recovery_ms": recovery_ms(&samples, clear_at, baseline),
        "redis_connects_per_s": (connects_after - connects_before) as f64 / run_started.elapsed().as_secs_f64(),
        "rss_mib_before": rss_before,
        "rss_mib_after": rss_after,
        "keys_lost": rig.keys_lost().await?,
        "brownout_fallbacks": rig.metric(BROWNOUT_FALLBACKS).await? - brownouts_before,
        "extra": extra,
    });
    Ok(FaultRun { report, samples })
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
}

/// Injects `fault` for `during`, clears it, and returns fault-specific figures and how long after
/// the injection the fault was cleared.
async fn inject(rig: &Rig, fault: Fault, during: Duration) -> anyhow::Result<(Value, Duration)> {
    let started = Instant::now();
    if fault == Fault::EventsWhileShardDies {
        // Cleared when the network comes back; the posters' retries go on after that.
        return events_while_blackholed(rig, during).await.map(|figures| (figures, during));
    }
    let figures = inject_until_cleared(rig, fault, during).await?;
    Ok((figures, started.elapsed()))
}

async fn inject_until_cleared(rig: &Rig, fault: Fault, during: Duration) -> anyhow::Result<Value> {
    let shard = &rig.proxies[1];
    match fault {
        Fault::ShardKilledRestarted => {
            // Killed: nothing listens behind the proxy (its connects fail), then an empty server
            // on the same port, refilled from the bundle, as an operator (or automation) would.
            let port = rig.shards[1].port;
            let mut connection = redis_connection(&rig.shards[1].url).await?;
            let _ = redis_cmd(&mut connection, &["SHUTDOWN", "NOSAVE"]).await;
            tokio::time::sleep(during).await;
            let restarted = RedisServer::start_on(port).await?;
            let refill_started = Instant::now();
            let bundle = rig.bundles[0].display().to_string();
            let refill = tokio::task::spawn_blocking({
                let direct = rig.direct.clone();
                move || run_cascade(&["load", "--bundle", &bundle, "--redis", &direct, "--users-only", "--shard", "1"])
            })
            .await??;
            let _ = refill;
            if let Ok(mut replacements) = rig.replacements.lock() {
                replacements.push(restarted);
            }
            Ok(json!({"refill_ms": refill_started.elapsed().as_secs_f64() * 1000.0}))
        }
        Fault::ShardBlackholed => timed(shard, ProxyMode::Blackhole, during).await,
        Fault::ShardSlowed => timed(shard, ProxyMode::Delay(Duration::from_millis(50)), during).await,
        Fault::ShardResets => timed(shard, ProxyMode::Reset(0.1), during).await,
        Fault::SlowSearchAndRanker => {
            rig.set_faults(json!({"search_slowdown": 10, "rank_slowdown": 10})).await?;
            tokio::time::sleep(during).await;
            rig.set_faults(json!({})).await?;
            Ok(json!({}))
        }
        Fault::RankerPanicsOnce => {
            rig.set_faults(json!({"rank_panics": 1})).await?;
            tokio::time::sleep(during).await;
            let metrics = rig.http.get(format!("{}/metrics", rig.origin.url)).send().await?.text().await?;
            let panics = metrics.lines().find_map(|l| l.strip_prefix("cascade_ranker_panics_total ")).unwrap_or("?");
            Ok(json!({"panics_caught": panics}))
        }
        Fault::Overload3x => overload(rig, during).await,
        Fault::Reload10x => {
            let mut refused = 0;
            let gap = during / 10;
            for n in 0..10 {
                let path = rig.bundles[(n + 1) % 2].display().to_string();
                let response = rig
                    .http
                    .post(format!("{}/admin/bundle", rig.origin.url))
                    .bearer_auth(API_KEY)
                    .json(&json!({"path": path}))
                    .send()
                    .await?;
                refused += usize::from(response.status() != 200);
                tokio::time::sleep(gap).await;
            }
            Ok(json!({"reloads": 10, "refused": refused}))
        }
        // Handled by `inject` (cleared before its figures are in); here for completeness.
        Fault::EventsWhileShardDies => events_while_blackholed(rig, during).await,
    }
}

async fn timed(proxy: &FaultProxy, mode: ProxyMode, during: Duration) -> anyhow::Result<Value> {
    proxy.set(mode);
    tokio::time::sleep(during).await;
    proxy.set(ProxyMode::Pass);
    Ok(json!({}))
}

/// Three times `max_in_flight` closed-loop callers for `during`, on top of the open loop; the
/// refusals must be immediate 503s with `Retry-After`, and `/readyz` must stay 200.
async fn overload(rig: &Rig, during: Duration) -> anyhow::Result<Value> {
    let callers = 3 * rig.max_in_flight;
    let until = Instant::now() + during;
    let probes = async {
        let mut readyz = Vec::new();
        while Instant::now() < until {
            let probe = rig.http.get(format!("{}/readyz", rig.origin.url)).send().await;
            readyz.push(probe.map_or(0, |r| r.status().as_u16()));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        readyz
    };
    let (outcomes, readyz) = tokio::join!(closed_loop(rig, callers, 99, during.as_secs_f64()), probes);
    let mut refusal_ms = Vec::new();
    let (mut admitted, mut refused, mut refused_with_retry_after, mut other) = (0, 0, 0, 0);
    for worker in outcomes {
        for (status, retry_after, ms) in worker {
            match status {
                200 => admitted += 1,
                503 => {
                    refused += 1;
                    refused_with_retry_after += usize::from(retry_after);
                    refusal_ms.push(ms);
                }
                _ => other += 1,
            }
        }
    }
    let (refusal_p50, refusal_p99) = crate::p50_p99(&mut refusal_ms);
    Ok(json!({
        "callers": callers,
        "admitted": admitted,
        "refused_503": refused,
        "refused_with_retry_after": refused_with_retry_after,
        "other": other,
        "refusal_p50_ms": refusal_p50,
        "refusal_p99_ms": refusal_p99,
        "readyz_probes": readyz.len(),
        "readyz_not_200": readyz.iter().filter(|&&s| s != 200).count(),
    }))
}

/// Purchase events for users on shard 1, posted while its network drops everything, each retried
/// on 503 (after `Retry-After`) until accepted or 10 s pass; then every accepted event is looked
/// up on the shard itself.
async fn events_while_blackholed(rig: &Rig, during: Duration) -> anyhow::Result<Value> {
    let users: Vec<String> = (0..USERS).map(|u| format!("u{u}")).filter(|u| shard_for(u, 2) == 1).take(40).collect();
    let url = format!("{}/v1/events", rig.origin.url);
    let tag = rand_seed();
    let posters: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(n, user)| {
            let (http, url, user) = (rig.http.clone(), url.clone(), user.clone());
            let item = format!("fault-{tag}-{n}");
            // Spread over the fault window, so some are posted before, some during the outage.
            let delay = during.mul_f64(n as f64 / 40.0);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let body = json!({"events": [{"user_id": user, "kind": "purchase", "item_id": item,
                                              "idempotency_key": format!("k-{item}")}]});
                let give_up = Instant::now() + Duration::from_secs(10);
                let mut tries = 0;
                while Instant::now() < give_up {
                    tries += 1;
                    let response = http.post(&url).bearer_auth(API_KEY).json(&body).send().await;
                    match response {
                        Ok(r) if r.status() == 202 => return (user, item, true, tries),
                        Ok(r) if r.status() == 503 => tokio::time::sleep(Duration::from_secs(1)).await,
                        _ => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
                (user, item, false, tries)
            })
        })
        .collect();
    rig.proxies[1].set(ProxyMode::Blackhole);
    tokio::time::sleep(during).await;
    rig.proxies[1].set(ProxyMode::Pass);
    let mut results = Vec::new();
    for poster in posters {
        results.push(poster.await?);
    }
    let mut connection = redis_connection(&rig.shards[1].url).await?;
    let (mut acknowledged, mut lost, mut retries) = (0, 0, 0);
    for (user, item, accepted, tries) in &results {
        retries += tries - 1;
        if *accepted {
            acknowledged += 1;
            let key = cascade_shared::keys::purchases_key(user);
            if redis_cmd(&mut connection, &["SISMEMBER", &key, item]).await? != "1" {
                lost += 1;
            }
        }
    }
    Ok(json!({
        "events": results.len(),
        "acknowledged": acknowledged,
        "never_acknowledged": results.len() - acknowledged,
        "retries": retries,
        "acknowledged_not_applied": lost,
    }))
}

/// The origin killed behind the Worker (`wrangler dev`) for `during`, then started again where it
/// listened, under an open loop of edge requests at `rate`: anonymous visitors (segment lists,
/// which the Worker keeps and serves stale while the origin is gone) and, one request in four, a
/// signed-in visitor (their own list from the origin; their segment's list while it is gone).
pub async fn run_origin_killed_behind_worker(rig: &mut Rig, rate: f64, phases: [f64; 3]) -> anyhow::Result<Value> {
    let [before, during, after] = phases;
    let edge = crate::Edge::start(&rig.origin.url, SECRET, &[("ORIGIN_TIMEOUT_MS", "300")]).await?;
    let keys = cascade_shared::signing::Keys::derive(SECRET.as_bytes());
    let expires = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 3600;
    let token = cascade_shared::token::issue(&keys.visitor_tokens, "u7", expires);
    let (http, base) = (rig.http.clone(), edge.url.clone());
    let request = |i: usize| {
        let (page, device) = (["home", "browse", "detail"][i % 3], ["desktop", "mobile"][i / 3 % 2]);
        let url = format!("{base}/recs?page={page}&device={device}&n=10");
        if i % 4 == 3 { http.get(url).bearer_auth(&token) } else { http.get(url) }
    };
    // Warm the Worker's cache for every segment the load asks for.
    for i in 0..6 {
        let _ = request(i * 4).send().await;
    }
    let port: u16 = rig.origin.url.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let load = open_loop(rate, before + during + after, request);
    let fault = async {
        tokio::time::sleep(Duration::from_secs_f64(before)).await;
        rig.origin.stop();
        tokio::time::sleep(Duration::from_secs_f64(during)).await;
        let restarted = Instant::now();
        let origin = Origin::start_on(port, &rig.origin_env).await;
        (origin, restarted.elapsed())
    };
    let (samples, (origin, restart)) = tokio::join!(load, fault);
    rig.origin = origin?;
    let fault_start = Duration::from_secs_f64(before);
    let clear_at = fault_start + Duration::from_secs_f64(during) + restart;
    // The share of personal answers (the signed-in visitors' own lists) before the fault.
    let clean = between(&samples, Duration::ZERO, fault_start);
    let personal = clean.iter().filter(|s| matches!(s.source.as_deref(), Some("realtime" | "cache_l1" | "cache_l2")));
    let baseline = personal.count() as f64 / clean.iter().filter(|s| s.status == 200).count().max(1) as f64;
    Ok(json!({
        "fault": "origin_killed_behind_worker",
        "rate": rate,
        "phases_s": phases,
        "origin_restart_ms": restart.as_secs_f64() * 1000.0,
        "before": summarize(&between(&samples, Duration::ZERO, fault_start), DEADLINE),
        "during": summarize(&between(&samples, fault_start, clear_at), DEADLINE),
        "after": summarize(&between(&samples, clear_at, Duration::MAX), DEADLINE),
        "all": summarize(&samples, DEADLINE),
        "recovery_ms": recovery_ms(&samples, clear_at, baseline),
    }))
}
