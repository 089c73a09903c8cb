//! L1-hit benchmark: user lists served from the origin's in-process cache, against a bare axum
//! handler returning the same JSON body (the loopback ceiling) in a process of its own, at
//! concurrency 32, in one run: four rounds alternating which goes first, the median round's ratio.
//!
//!     scripts/bench.sh    (or: cargo bench -p cascade-e2e --bench hit_path)
//!
//! Saves `target/cascade-bench/hit_path.json` with `ratio` (target ≥ 0.8). BENCH_SECS (default 10).

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use cascade_e2e::{Origin, bench_dir, bench_secs, bundle_dir, closed_loop};
use serde_json::json;

const API_KEY: &str = "bench-internal-key-0123456789";
const CONCURRENCY: usize = 32;

/// Rounds of L1 hits and the bare handler, alternating which goes first.
const ROUNDS: usize = 4;
/// Set, this executable is the bare server: it serves the bytes it reads from stdin.
const BARE: &str = "CASCADE_BENCH_BARE";

/// A bare axum handler returning fixed bytes, in a child process (killed on drop).
struct BareServer {
    child: std::process::Child,
    url: String,
}

impl BareServer {
    fn start(body: &[u8]) -> anyhow::Result<Self> {
        use std::io::{BufRead, Write};
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .env(BARE, "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        // The body, then EOF.
        child.stdin.take().ok_or_else(|| anyhow::anyhow!("bare server has no stdin"))?.write_all(body)?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("bare server has no stdout"))?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let address = line.trim().strip_prefix("listening ").ok_or_else(|| anyhow::anyhow!("bare server: {line}"))?;
        Ok(BareServer { url: format!("http://{address}"), child })
    }
}

impl Drop for BareServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The bare server's main: the bytes on stdin, for every user's list.
async fn serve_bare() -> anyhow::Result<()> {
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)?;
    let body = Arc::new(body);
    let bare = Router::new().route(
        "/v1/users/{user}/recs",
        get(move || {
            let body = Arc::clone(&body);
            async move { ([(header::CONTENT_TYPE, "application/json")], body.as_ref().clone()) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("listening {}", listener.local_addr()?);
    axum::serve(listener, bare).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os(BARE).is_some() {
        return serve_bare().await;
    }
    let seconds: u64 = bench_secs(10);
    let bundle = bundle_dir()?;
    let origin = Origin::start(&[
        ("CASCADE_BUNDLE", bundle.display().to_string()),
        ("CASCADE_API_KEYS", API_KEY.to_string()),
        ("CASCADE_LOG", "warn".to_string()),
    ])
    .await?;
    // 32 users, one per worker: after the first request each is an L1 hit.
    let paths: Arc<Vec<String>> = Arc::new((0..CONCURRENCY).map(|u| format!("/v1/users/u{u}/recs?n=20")).collect());
    let client = reqwest::Client::new();
    let mut body = Vec::new();
    for path in paths.iter() {
        body = client.get(format!("{}{path}", origin.url)).bearer_auth(API_KEY).send().await?.bytes().await?.to_vec();
    }
    closed_loop(&origin.url, paths.clone(), API_KEY, CONCURRENCY, 1).await?; // warm-up

    // The ceiling: a bare handler returning the same bytes, in a process of its own as the origin
    // is (this bench executable again, in its bare-server mode).
    let body_len = body.len();
    let bare = BareServer::start(&body)?;

    // Side by side in rounds (origin, bare, bare, origin, ...): this shared machine's speed drifts
    // within a minute, so one long run of each compared two different machines.
    let round_secs = (seconds / 2).max(2);
    let (mut origin_rounds, mut bare_rounds, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 { [true, false] } else { [false, true] };
        let (mut hits, mut ceiling) = (json!(null), json!(null));
        for origin_first in order {
            if origin_first {
                hits = closed_loop(&origin.url, paths.clone(), API_KEY, CONCURRENCY, round_secs).await?;
            } else {
                ceiling = closed_loop(&bare.url, paths.clone(), "", CONCURRENCY, round_secs).await?;
            }
        }
        let ratio =
            hits["requests_per_sec"].as_f64().unwrap_or(0.0) / ceiling["requests_per_sec"].as_f64().unwrap_or(f64::NAN);
        eprintln!(
            "round {round}: L1 hits {:.0} req/s, bare {:.0} req/s: {ratio:.3}",
            hits["requests_per_sec"].as_f64().unwrap_or(0.0),
            ceiling["requests_per_sec"].as_f64().unwrap_or(0.0)
        );
        origin_rounds.push(hits);
        bare_rounds.push(ceiling);
        ratios.push(ratio);
    }
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let ratio = sorted[sorted.len() / 2];
    let mean = |rounds: &[serde_json::Value]| {
        rounds.iter().filter_map(|r| r["requests_per_sec"].as_f64()).sum::<f64>() / rounds.len() as f64
    };
    let (origin_hits, ceiling) = (json!(origin_rounds), json!(bare_rounds));
    let (origin_mean, bare_mean) = (mean(&origin_rounds), mean(&bare_rounds));
    let metrics = client.get(format!("{}/metrics", origin.url)).send().await?.text().await?;
    let hits = metrics
        .lines()
        .find(|l| l.starts_with("cascade_cache_lookups_total{layer=\"l1\",result=\"hit\"}"))
        .unwrap_or("")
        .to_string();
    let report = json!({
        "benchmark": "hit_path",
        "concurrency": CONCURRENCY,
        "seconds_per_mode": seconds,
        "body_bytes": body_len,
        "rounds": ROUNDS,
        "seconds_per_round": round_secs,
        "origin_l1_hits": origin_hits,
        "bare_axum": ceiling,
        "origin_requests_per_sec": origin_mean,
        "bare_requests_per_sec": bare_mean,
        "ratio_each_round": ratios,
        "ratio": ratio,
        "target_ratio": 0.8,
        "l1_hits_metric": hits,
        "note": "ratio: the median round's L1 hits / bare; origin in its own process (release build, with auth, metrics, request ids), the bare handler in another (this executable with CASCADE_BENCH_BARE); one client, same 2 cores",
    });
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(bench_dir()?.join("hit_path.json"), &text)?;
    println!("{text}");
    Ok(())
}
