//! Fixtures of the fault suite: a TCP proxy that breaks a Redis shard's network on command, an
//! open-loop load that records every request, and the summary each fault run reports.
//!
//! [`FaultProxy`] sits between the origin and one real `redis-server` on loopback. Its modes:
//! pass, blackhole (nothing forwarded either way; connections stay open, as when packets are
//! dropped, and resume when the mode is lifted), delay (each chunk towards Redis waits), and reset
//! (a fraction of connections, new and existing, closed with a TCP reset).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cascade_shared::stats::SplitMix64;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProxyMode {
    /// Forward everything.
    Pass,
    /// Forward nothing; hold the connections.
    Blackhole,
    /// Hold each chunk towards Redis this long first.
    Delay(Duration),
    /// Reset this fraction of connections (each decides once per switch to this mode).
    Reset(f64),
}

/// A TCP proxy in front of one Redis server.
pub struct FaultProxy {
    /// `redis://127.0.0.1:port` of the proxy.
    pub url: String,
    mode: watch::Sender<(ProxyMode, u64)>,
    accepted: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FaultProxy {
    /// A proxy on a free loopback port forwarding to `upstream` (`host:port`).
    ///
    /// It runs on its own thread and runtime: on the test's runtime, a load generator that keeps
    /// that runtime busy (the overload fault's hundreds of callers) delayed every Redis round trip
    /// by the generator's queue, and the origin looked slow for the rig's own reasons.
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let upstream: SocketAddr = upstream.parse()?;
        let (mode, modes) = watch::channel((ProxyMode::Pass, 0u64));
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&accepted);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new().name(format!("fault-proxy-{}", address.port())).spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = TcpListener::from_std(listener) else { return };
                let accept = async {
                    let mut seed = 1u64;
                    while let Ok((client, _)) = listener.accept().await {
                        counter.fetch_add(1, Ordering::Relaxed);
                        seed += 1;
                        tokio::spawn(serve(client, upstream, modes.clone(), seed));
                    }
                };
                tokio::select! {
                    () = accept => {}
                    _ = stopped => {}
                }
            });
            // The runtime drops here, with every connection's task.
        })?;
        Ok(FaultProxy { url: format!("redis://{address}"), mode, accepted, stop: Some(stop) })
    }

    /// Switches the mode (every connection sees it at its next chunk).
    pub fn set(&self, mode: ProxyMode) {
        self.mode.send_modify(|(current, generation)| {
            *current = mode;
            *generation += 1;
        });
    }

    /// Connections accepted so far (the origin's connects to this shard).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Whether this connection dies under `mode` (decided once per mode switch).
fn doomed(mode: ProxyMode, rng: &mut SplitMix64) -> bool {
    matches!(mode, ProxyMode::Reset(fraction) if (rng.next_u64() % 10_000) as f64 / 10_000.0 < fraction)
}

async fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn serve(client: TcpStream, upstream: SocketAddr, mut modes: watch::Receiver<(ProxyMode, u64)>, seed: u64) {
    let mut rng = SplitMix64::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let (mode, mut generation) = *modes.borrow_and_update();
    if doomed(mode, &mut rng) {
        return reset(client).await;
    }
    // Blackholed: the connect itself goes nowhere until the mode is lifted.
    while modes.borrow().0 == ProxyMode::Blackhole {
        if modes.changed().await.is_err() {
            return;
        }
    }
    let Ok(server) = TcpStream::connect(upstream).await else { return reset(client).await };
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut client_buf = vec![0u8; 64 * 1024];
    let mut server_buf = vec![0u8; 64 * 1024];
    loop {
        // Read from whichever side has data, then apply the mode to that chunk.
        let (from_client, n) = tokio::select! {
            read = client_read.read(&mut client_buf) => (true, read.unwrap_or(0)),
            read = server_read.read(&mut server_buf) => (false, read.unwrap_or(0)),
        };
        if n == 0 {
            return;
        }
        loop {
            let (mode, now) = *modes.borrow_and_update();
            if now != generation {
                generation = now;
                if doomed(mode, &mut rng) {
                    let client = client_read.reunite(client_write).ok();
                    if let Some(client) = client {
                        reset(client).await;
                    }
                    return;
                }
            }
            match mode {
                ProxyMode::Blackhole => {
                    if modes.changed().await.is_err() {
                        return;
                    }
                }
                ProxyMode::Delay(delay) if from_client => {
                    tokio::time::sleep(delay).await;
                    break;
                }
                _ => break,
            }
        }
        let written = if from_client {
            server_write.write_all(&client_buf[..n]).await
        } else {
            client_write.write_all(&server_buf[..n]).await
        };
        if written.is_err() {
            return;
        }
    }
}

/// One request of an open loop.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was due, from the loop's start.
    pub due: Duration,
    /// From due to answered (so queueing in the client counts: no coordinated omission).
    pub latency: Duration,
    /// HTTP status (0: no answer).
    pub status: u16,
    /// The list's `source`, for 200s.
    pub source: Option<String>,
    /// Whether a 503 said `Retry-After`.
    pub retry_after: bool,
    /// The origin's own time for it (`total` in `Server-Timing`), milliseconds, when it said.
    pub server_ms: Option<f64>,
}

/// `total;dur=12.34` in a `Server-Timing` value, milliseconds.
pub fn server_total_ms(server_timing: &str) -> Option<f64> {
    server_timing.split(',').find_map(|part| part.trim().strip_prefix("total;dur=")?.parse().ok())
}

/// Sends requests at `rate` per second for `seconds`, request `i` built by `request(i)`, each on
/// its own task; returns every sample, in order. Bounded by count and by the client's timeout.
pub async fn open_loop<F>(rate: f64, seconds: f64, request: F) -> Vec<Sample>
where
    F: Fn(usize) -> reqwest::RequestBuilder,
{
    open_loop_while(rate, seconds, |_| true, request).await
}

/// [`open_loop`] that also stops at the first request due when `keep_going(due)` is false (`due`
/// from the loop's start); at most `seconds` in any case.
pub async fn open_loop_while<F, K>(rate: f64, seconds: f64, keep_going: K, request: F) -> Vec<Sample>
where
    F: Fn(usize) -> reqwest::RequestBuilder,
    K: Fn(Duration) -> bool,
{
    let count = (rate * seconds).round() as usize;
    let start = Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let due_at = start + Duration::from_secs_f64(i as f64 / rate);
        if !keep_going(due_at - start) {
            break;
        }
        tokio::time::sleep_until(due_at.into()).await;
        let builder = request(i).timeout(Duration::from_secs(10));
        tasks.push(tokio::spawn(async move {
            let (status, source, retry_after, server_ms) = match builder.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response.headers().contains_key("retry-after");
                    let server_ms =
                        response.headers().get("server-timing").and_then(|v| v.to_str().ok()).and_then(server_total_ms);
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    (status, body["source"].as_str().map(str::to_string), retry_after, server_ms)
                }
                Err(_) => (0, None, false, None),
            };
            Sample { due: due_at - start, latency: due_at.elapsed(), status, source, retry_after, server_ms }
        }));
    }
    let mut samples = Vec::with_capacity(count);
    for task in tasks {
        if let Ok(sample) = task.await {
            samples.push(sample);
        }
    }
    samples
}

/// Whether a sample is load shed: a 503 that says when to retry (admission control refusing at
/// once), as opposed to a server error.
pub fn is_shed(sample: &Sample) -> bool {
    sample.status == 503 && sample.retry_after
}

/// Samples due within `[from, to)`.
pub fn between(samples: &[Sample], from: Duration, to: Duration) -> Vec<Sample> {
    samples.iter().filter(|s| s.due >= from && s.due < to).cloned().collect()
}

/// Figures of a set of samples: statuses, sources, latency of the 200s, answers past `deadline`.
pub fn summarize(samples: &[Sample], deadline: Duration) -> Value {
    let mut statuses = std::collections::BTreeMap::<String, u64>::new();
    let mut sources = std::collections::BTreeMap::<String, u64>::new();
    let mut admitted = Vec::new();
    let mut admitted_server = Vec::new();
    let (mut shed, mut server_errors) = (0u64, 0u64);
    let mut shed_ms = Vec::new();
    for sample in samples {
        *statuses.entry(sample.status.to_string()).or_default() += 1;
        if let Some(source) = &sample.source {
            *sources.entry(source.clone()).or_default() += 1;
        }
        let ms = sample.latency.as_secs_f64() * 1000.0;
        match sample.status {
            200 => {
                admitted.push(ms);
                admitted_server.extend(sample.server_ms);
            }
            _ if is_shed(sample) => {
                shed += 1;
                shed_ms.push(ms);
            }
            500.. => server_errors += 1,
            _ => {}
        }
    }
    let (p50, p99) = crate::p50_p99(&mut admitted);
    let (_, shed_p99) = crate::p50_p99(&mut shed_ms);
    let (_, server_p99) = crate::p50_p99(&mut admitted_server);
    let past = admitted.iter().filter(|&&ms| ms > deadline.as_secs_f64() * 1000.0).count();
    json!({
        "requests": samples.len(),
        "statuses": statuses,
        "shed_503": shed,
        "shed_p99_ms": shed_p99,
        "server_errors": server_errors,
        "no_answer": statuses.get("0").copied().unwrap_or(0),
        "sources": sources,
        "admitted_p50_ms": p50,
        "admitted_p99_ms": p99,
        // The origin's own share (handler start to answer): the rest of `admitted_p99_ms` is the
        // network, the kernel's queues and the load generator, which shares these cores.
        "admitted_server_p99_ms": server_p99,
        "past_deadline": past,
    })
}

/// Milliseconds from `clear` until real time is back: the start of the first 250 ms window after
/// `clear` whose real-time (or cached) share of admitted answers is at least 80% of
/// `baseline_share` and that has no server error (load shed with `Retry-After` is not one: at
/// 150% load it goes on after any fault). `None` if it never came back within the samples.
pub fn recovery_ms(samples: &[Sample], clear: Duration, baseline_share: f64) -> Option<f64> {
    let window = Duration::from_millis(250);
    let last = samples.iter().map(|s| s.due).max()?;
    let mut from = clear;
    while from < last {
        let inside = between(samples, from, from + window);
        let admitted = inside.iter().filter(|s| s.status == 200).count();
        if admitted > 0 {
            let personal = inside
                .iter()
                .filter(|s| matches!(s.source.as_deref(), Some("realtime" | "cache_l1" | "cache_l2")))
                .count();
            let errors = inside.iter().filter(|s| (s.status >= 500 && !is_shed(s)) || s.status == 0).count();
            if errors == 0 && personal as f64 / admitted as f64 >= 0.8 * baseline_share {
                return Some((from - clear).as_secs_f64() * 1000.0);
            }
        }
        from += window;
    }
    None
}

/// The resident memory of process `pid`, MiB (0 if unreadable).
pub fn rss_mib(pid: u32) -> f64 {
    proc_status_bytes(pid, "VmRSS") / (1024.0 * 1024.0)
}

/// A memory field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`: the peak), bytes (0 if unreadable).
pub fn proc_status_bytes(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib * 1024.0)
}

/// CPU time (user + system) process `pid` has used so far, seconds (0 if unreadable; Linux's
/// 100 ticks a second).
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces, so split after its closing paren):
    // state is the 3rd field of the line, utime the 14th, stime the 15th.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// `used_memory` summed over the Redis servers at `urls`, bytes.
pub async fn redis_used_memory(urls: &[String]) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for url in urls {
        let mut connection = redis_connection(url).await?;
        let info = redis_cmd(&mut connection, &["INFO", "memory"]).await?;
        total += info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .ok_or_else(|| anyhow::anyhow!("{url}: INFO memory has no used_memory"))?;
    }
    Ok(total)
}

/// `total_connections_received` of the Redis server at `url`.
pub async fn redis_connections_received(url: &str) -> anyhow::Result<u64> {
    let mut connection = redis_connection(url).await?;
    let info: String = redis_cmd(&mut connection, &["INFO", "stats"]).await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// A one-off plain connection to the Redis server at `url` (`redis://host:port`).
pub async fn redis_connection(url: &str) -> anyhow::Result<TcpStream> {
    let address = url.trim_start_matches("redis://");
    Ok(TcpStream::connect(address).await?)
}

/// Sends one command and reads one reply (simple string, integer or bulk string), as text.
pub async fn redis_cmd(connection: &mut TcpStream, args: &[&str]) -> anyhow::Result<String> {
    let mut command = format!("*{}\r\n", args.len());
    for arg in args {
        command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    connection.write_all(command.as_bytes()).await?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = connection.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "redis closed the connection");
        reply.extend_from_slice(&buf[..n]);
        if let Some(text) = parse_reply(&reply) {
            return text;
        }
    }
}

/// A complete reply in `bytes`, if there is one yet.
fn parse_reply(bytes: &[u8]) -> Option<anyhow::Result<String>> {
    let end = bytes.windows(2).position(|w| w == b"\r\n")?;
    let line = String::from_utf8_lossy(&bytes[1..end]).into_owned();
    match bytes.first()? {
        b'+' | b':' => Some(Ok(line)),
        b'-' => Some(Err(anyhow::anyhow!("redis: {line}"))),
        b'$' => {
            let len: i64 = line.parse().ok()?;
            if len < 0 {
                return Some(Ok(String::new()));
            }
            let body = bytes.get(end + 2..end + 2 + len as usize)?;
            Some(Ok(String::from_utf8_lossy(body).into_owned()))
        }
        _ => Some(Err(anyhow::anyhow!("unexpected reply {line:?}"))),
    }
}
