//! Fixtures for Cascade's end-to-end tests and benchmarks: real processes on loopback ports.
//!
//! Every fixture owns its process (in its own process group) and stops it in `Drop`, so a failing
//! test still leaves nothing running. Ports are picked free by binding port 0 first.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};

pub mod fault_suite;
pub mod faults;
pub mod secure_redis;

/// Copies bundle `source` to `dest` as bundle `id`: same model and vectors, every part relabelled
/// (a stand-in for "the next model", for reload and freshness tests).
pub fn relabel_bundle(source: &Path, dest: &Path, id: &str) {
    std::fs::create_dir_all(dest).expect("create bundle folder");
    std::fs::copy(source.join("model.pt"), dest.join("model.pt")).expect("copy model");
    for file in ["users.emb", "items.emb", "context.emb"] {
        if !source.join(file).exists() {
            continue; // context.emb: only bundles with a sequence model
        }
        let bytes = std::fs::read(source.join(file)).expect("read embeddings");
        let table = cascade_shared::embedding::decode_file(&bytes).expect("decode embeddings");
        let ids: Vec<&str> = table.ids.iter().map(String::as_str).collect();
        let encoded = cascade_shared::embedding::encode_file(id, table.header.dim, &ids, &table.values);
        std::fs::write(dest.join(file), encoded).expect("write embeddings");
    }
    for file in ["metadata.json", "reference.json", "history.json"] {
        if !source.join(file).exists() {
            continue;
        }
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(source.join(file)).expect("read")).expect("json");
        json["bundle_id"] = serde_json::json!(id);
        std::fs::write(dest.join(file), serde_json::to_vec(&json).expect("json")).expect("write");
    }
}

/// The repository root.
///
/// Read at run time first (cargo sets `CARGO_MANIFEST_DIR` for the tests and benches it runs):
/// the compile-time value can name another checkout, because cargo shares build artifacts
/// between checkouts that use one target folder (its hashes use paths relative to the workspace),
/// so a test binary built for a clone under `/check` would otherwise run that clone's scripts.
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Where benchmarks save their JSON: `$CASCADE_BENCH_DIR`, or `target/cascade-bench/` at the
/// repository root (wherever the cargo target folder is).
pub fn bench_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("CASCADE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/cascade-bench"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// `BENCH_SECS` from the environment, or `default`: how long each benchmark phase runs.
pub fn bench_secs<T: std::str::FromStr>(default: T) -> T {
    std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// The Small tier's bundle folder and generator spec, which `scripts/bench.sh` prepares and
/// exports as `CASCADE_SMALL_BUNDLE` and `CASCADE_SMALL_SPEC`.
pub fn small_tier() -> anyhow::Result<(PathBuf, String)> {
    let bundle = std::env::var_os("CASCADE_SMALL_BUNDLE").map(PathBuf::from).ok_or_else(|| {
        anyhow::anyhow!("CASCADE_SMALL_BUNDLE is not set: run this benchmark through scripts/bench.sh")
    })?;
    let spec = std::env::var("CASCADE_SMALL_SPEC").unwrap_or_else(|_| "users=1000000,items=100000,dim=128".into());
    Ok((bundle, spec))
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The `cascade` binary: `$CASCADE_BIN`, or next to this test's own executable's folder
/// (`target/<profile>/cascade`). `scripts/test.sh` builds it first.
pub fn cascade_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("CASCADE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let candidate = exe.parent().and_then(Path::parent).map(|dir| dir.join("cascade")).context("no parent folder")?;
    if candidate.exists() {
        Ok(candidate)
    } else {
        bail!("{} not found: build it with `cargo build -p cascade-origin` (scripts/test.sh does)", candidate.display())
    }
}

/// The model bundle tests use: `$CASCADE_TEST_BUNDLE` or `data/bundle` (made by scripts/test.sh).
pub fn bundle_dir() -> anyhow::Result<PathBuf> {
    let dir =
        std::env::var_os("CASCADE_TEST_BUNDLE").map(PathBuf::from).unwrap_or_else(|| repo_root().join("data/bundle"));
    if dir.join("metadata.json").exists() {
        Ok(dir)
    } else {
        bail!(
            "no bundle at {}: run `python scripts/train.py --out {}` (scripts/test.sh does)",
            dir.display(),
            dir.display()
        )
    }
}

/// A child process in its own process group, killed with its group on drop.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `command` with stdout and stderr to `log`.
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> anyhow::Result<Self> {
        let file = std::fs::File::create(&log)?;
        command.stdout(file.try_clone()?).stderr(file).stdin(Stdio::null()).process_group(0);
        let child = command.spawn().with_context(|| format!("starting {name}"))?;
        Ok(Process { name: name.to_string(), child, log })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's output so far (for failure messages).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited with {status}:\n{}", self.name, tail(&self.output(), 4000));
        }
        Ok(())
    }

    /// Stops the whole process group (SIGTERM, then SIGKILL after 5 s).
    pub fn stop(&mut self) {
        let pid = self.child.id() as i32;
        signal_group("TERM", pid);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        signal_group("KILL", pid);
        // The direct child, in case it left its group; then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `signal` to the process group `pgid` (`kill -s SIG -- -PGID`: without `--`, `-PGID` reads
/// as an option).
fn signal_group(signal: &str, pgid: i32) {
    let _ = Command::new("kill").args(["-s", signal, "--", &format!("-{pgid}")]).stderr(Stdio::null()).status();
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tail(text: &str, max: usize) -> &str {
    let start = text.len().saturating_sub(max);
    let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
    &text[start..]
}

/// Waits until `check` succeeds, failing with the process's output after `timeout`.
pub async fn wait_until<F, Fut>(process: &mut Process, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        process.check_running()?;
        if check().await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} not ready after {timeout:?}:\n{}", process.name, tail(&process.output(), 4000));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `GET url` answers 2xx (or `process` exits, or `timeout` passes).
pub async fn wait_for_http(process: &mut Process, url: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    wait_until(process, timeout, || {
        let (client, url) = (client.clone(), url.to_string());
        async move { client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await
}

/// A scratch folder removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty folder under the system temp dir.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// A real `redis-server` on a loopback port, with no persistence.
pub struct RedisServer {
    /// `redis://127.0.0.1:port`.
    pub url: String,
    /// The port.
    pub port: u16,
    process: Process,
    _dir: TempDir,
}

impl RedisServer {
    /// Starts one and waits until it answers PING.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// Starts `count` independent servers (shards), one after another.
    pub async fn start_many(count: usize) -> anyhow::Result<Vec<Self>> {
        let mut servers = Vec::with_capacity(count);
        for _ in 0..count {
            servers.push(Self::start().await?);
        }
        Ok(servers)
    }

    /// Starts one with extra `redis-server` arguments.
    pub async fn start_with(extra: &[&str]) -> anyhow::Result<Self> {
        let dir = TempDir::new("cascade-redis")?;
        let port = free_port()?;
        let process = Self::spawn(port, &dir, extra).await?;
        Ok(RedisServer { url: format!("redis://127.0.0.1:{port}"), port, process, _dir: dir })
    }

    /// Starts one on `port` (a replacement for a server that was killed there).
    pub async fn start_on(port: u16) -> anyhow::Result<Self> {
        Self::start_on_with(port, &[]).await
    }

    /// Starts one on `port` with extra `redis-server` arguments (later ones override earlier).
    pub async fn start_on_with(port: u16, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = TempDir::new("cascade-redis")?;
        let process = Self::spawn(port, &dir, extra).await?;
        Ok(RedisServer { url: format!("redis://127.0.0.1:{port}"), port, process, _dir: dir })
    }

    /// Stops it and starts a new, empty one on the same port: a cache node that restarted.
    pub async fn restart_empty(&mut self) -> anyhow::Result<()> {
        self.process.stop();
        self.process = Self::spawn(self.port, &self._dir, &[]).await?;
        Ok(())
    }

    async fn spawn(port: u16, dir: &TempDir, extra: &[&str]) -> anyhow::Result<Process> {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .args(extra);
        let mut process = Process::spawn("redis-server", command, dir.path().join("redis.log"))?;
        wait_until(&mut process, Duration::from_secs(10), || async move {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        })
        .await?;
        Ok(process)
    }

    /// Stops it (a shard going down).
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

/// A Redis Cluster of `masters` masters (no replicas), created with `redis-cli --cluster create`,
/// with `cluster-require-full-coverage no` so the other masters keep answering when one stops.
pub struct RedisCluster {
    /// The masters, in creation order.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the masters, creates the cluster, and waits until every node reports `cluster_state:ok`.
    pub async fn start(masters: usize) -> anyhow::Result<Self> {
        let args =
            ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000", "--cluster-require-full-coverage", "no"];
        let mut nodes = Vec::new();
        for _ in 0..masters {
            nodes.push(RedisServer::start_with(&args).await?);
        }
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()?;
        anyhow::ensure!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &nodes {
            loop {
                let info =
                    Command::new("redis-cli").args(["-p", &node.port.to_string(), "cluster", "info"]).output()?;
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "cluster on {addresses:?} never became ok");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(RedisCluster { nodes })
    }

    /// Seed URLs of every master.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }
}

/// The origin (`cascade serve`) on a free port.
pub struct Origin {
    /// `http://127.0.0.1:port`.
    pub url: String,
    process: Process,
    _dir: TempDir,
}

impl Origin {
    /// Starts `cascade serve` with `env` (CASCADE_* variables) and waits for `/healthz`.
    pub async fn start(env: &[(&str, String)]) -> anyhow::Result<Self> {
        Self::start_on(free_port()?, env).await
    }

    /// [`Origin::start`] on `port` (a restart where the last one listened).
    pub async fn start_on(port: u16, env: &[(&str, String)]) -> anyhow::Result<Self> {
        Self::launch(TempDir::new("cascade-origin")?, port, env).await
    }

    /// `cascade serve` on `bundle`, accepting the bearer key `api_key`, configured by the TOML
    /// text `config` (written into the origin's own folder).
    pub async fn with_config(bundle: &Path, api_key: &str, config: &str) -> anyhow::Result<Self> {
        let dir = TempDir::new("cascade-origin")?;
        let file = dir.path().join("cascade.toml");
        std::fs::write(&file, config)?;
        let env = [
            ("CASCADE_BUNDLE", bundle.display().to_string()),
            ("CASCADE_API_KEYS", api_key.to_string()),
            ("CASCADE_CONFIG", file.display().to_string()),
        ];
        Self::launch(dir, free_port()?, &env).await
    }

    async fn launch(dir: TempDir, port: u16, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let mut command = Command::new(cascade_bin()?);
        command.arg("serve").env("CASCADE_LISTEN", format!("127.0.0.1:{port}")).env("OPENBLAS_NUM_THREADS", "1");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut process = Process::spawn("cascade serve", command, dir.path().join("origin.log"))?;
        let url = format!("http://127.0.0.1:{port}");
        wait_for_http(&mut process, &format!("{url}/healthz"), Duration::from_secs(60)).await?;
        Ok(Origin { url, process, _dir: dir })
    }

    /// A typed client of this origin with the bearer key `api_key` (no retries: a test sees the
    /// first answer).
    pub fn client(&self, api_key: &str) -> cascade_client::Client {
        cascade_client::Client::builder(&self.url)
            .api_key(api_key)
            .retries(0)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|e| panic!("{}: {e}", self.url))
    }

    /// A signed-in visitor token for `user` (10 minutes), from `POST /admin/tokens` with the bearer
    /// key `api_key`; panics unless one is issued.
    pub async fn visitor_token(&self, api_key: &str, user: &str) -> String {
        let url = format!("{}/admin/tokens", self.url);
        let body = serde_json::json!({"user_id": user, "ttl_secs": 600});
        let response = reqwest::Client::new().post(&url).bearer_auth(api_key).json(&body).send().await;
        let issued: serde_json::Value = match response {
            Ok(response) => response.json().await.unwrap_or_else(|e| panic!("{url}: {e}")),
            Err(e) => panic!("{url}: {e}"),
        };
        issued["token"].as_str().unwrap_or_else(|| panic!("{url}: no token in {issued}")).to_string()
    }

    /// The configuration file [`Origin::with_config`] wrote (rewrite it, then reload).
    pub fn config_file(&self) -> PathBuf {
        self._dir.path().join("cascade.toml")
    }

    /// The origin's log so far.
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// The origin's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Stops it.
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

/// A bundle's ranking model served by KServe's model server over the Open Inference Protocol
/// (`scripts/oip_server.py`), on a free port.
pub struct OipServer {
    /// `http://127.0.0.1:port`.
    pub url: String,
    process: Process,
    _dir: TempDir,
}

impl OipServer {
    /// Starts the server for `bundle` and waits until `/v2/health/ready` answers 200.
    pub async fn start(bundle: &Path) -> anyhow::Result<Self> {
        let dir = TempDir::new("cascade-oip")?;
        let port = free_port()?;
        let python = std::env::var_os("VIRTUAL_ENV")
            .map(|venv| PathBuf::from(venv).join("bin/python"))
            .unwrap_or_else(|| PathBuf::from("python3"));
        let mut command = Command::new(python);
        command
            .arg(repo_root().join("scripts/oip_server.py"))
            .arg("--bundle")
            .arg(bundle)
            .arg("--port")
            .arg(port.to_string());
        let mut process = Process::spawn("oip server", command, dir.path().join("oip.log"))?;
        let url = format!("http://127.0.0.1:{port}");
        wait_for_http(&mut process, &format!("{url}/v2/health/ready"), Duration::from_secs(120)).await?;
        Ok(OipServer { url, process, _dir: dir })
    }

    /// The server's log so far.
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// Stops it.
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

/// An OpenTelemetry collector stand-in written for the tests: an OTLP/HTTP JSON receiver on
/// loopback (`POST /v1/traces`) that keeps every span it is sent, with its service's name (or,
/// for benchmarks, only counts the exports' bytes).
pub struct OtlpCollector {
    /// `http://127.0.0.1:port`, the OTLP endpoint to configure.
    pub url: String,
    spans: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpCollector {
    /// Starts the receiver.
    pub async fn start() -> anyhow::Result<Self> {
        Self::launch(true).await
    }

    /// Starts a receiver that answers every export and keeps nothing but its byte count (a
    /// benchmark's stand-in for a collector on another machine).
    pub async fn start_discarding() -> anyhow::Result<Self> {
        Self::launch(false).await
    }

    /// Bytes of export bodies received so far.
    pub fn bytes_received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn launch(keep: bool) -> anyhow::Result<Self> {
        let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (kept, counted) = (std::sync::Arc::clone(&spans), std::sync::Arc::clone(&received));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (kept, counted) = (std::sync::Arc::clone(&kept), std::sync::Arc::clone(&counted));
                tokio::spawn(async move {
                    let _ = receive(stream, keep.then_some(&*kept), &counted).await;
                });
            }
        });
        Ok(OtlpCollector { url, spans, received, task })
    }

    /// Every span received so far, each with `service` added (its resource's `service.name`).
    pub fn spans(&self) -> Vec<serde_json::Value> {
        self.spans.lock().map(|spans| spans.clone()).unwrap_or_default()
    }
}

impl Drop for OtlpCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one HTTP/1.1 request (a JSON body with Content-Length) and answers 200; counts its bytes
/// and keeps its spans in `kept`, when given.
async fn receive(
    mut stream: tokio::net::TcpStream,
    kept: Option<&std::sync::Mutex<Vec<serde_json::Value>>>,
    counted: &std::sync::atomic::AtomicU64,
) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head_end, length) = loop {
        let read = stream.read(&mut chunk).await?;
        anyhow::ensure!(read > 0, "closed before a request");
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, length);
        }
    };
    while buffer.len() < head_end + length {
        let read = stream.read(&mut chunk).await?;
        anyhow::ensure!(read > 0, "closed inside the body");
        buffer.extend_from_slice(&chunk[..read]);
    }
    counted.fetch_add(length as u64, std::sync::atomic::Ordering::Relaxed);
    let body: serde_json::Value = match kept {
        Some(_) => serde_json::from_slice(&buffer[head_end..head_end + length])?,
        None => serde_json::Value::Null,
    };
    for resource in body["resourceSpans"].as_array().into_iter().flatten() {
        let service = resource["resource"]["attributes"][0]["value"]["stringValue"].clone();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let mut span = span.clone();
                span["service"] = service.clone();
                if let Some(kept) = kept {
                    kept.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.push(span);
                }
            }
        }
    }
    stream
        .write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        )
        .await?;
    Ok(())
}

/// The edge Worker under `wrangler dev`, with a fresh cache folder.
pub struct Edge {
    /// `http://127.0.0.1:port`.
    pub url: String,
    process: Process,
    _dir: TempDir,
}

impl Edge {
    /// Starts `wrangler dev` against `origin_url` with the signing `secret`; waits for `/healthz`
    /// (the first start builds the Worker: about a minute cold).
    pub async fn start(origin_url: &str, secret: &str, extra_vars: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_env(None, origin_url, secret, extra_vars).await
    }

    /// [`Edge::start`] in a wrangler.toml environment (`--env staging`: its bindings, such as the
    /// rate limiters, with `ORIGIN_URL` and the secret still overridden).
    pub async fn start_env(
        environment: Option<&str>,
        origin_url: &str,
        secret: &str,
        extra_vars: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::launch(environment, origin_url, secret, extra_vars, None).await
    }

    /// [`Edge::start`] keeping its local state (KV, Cache API) in `state`: two instances given one
    /// folder share their KV namespace, as two data centres share Workers KV.
    pub async fn start_sharing(
        state: &Path,
        origin_url: &str,
        secret: &str,
        extra_vars: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        Self::launch(None, origin_url, secret, extra_vars, Some(state)).await
    }

    async fn launch(
        environment: Option<&str>,
        origin_url: &str,
        secret: &str,
        extra_vars: &[(&str, &str)],
        state: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let dir = TempDir::new("cascade-edge")?;
        let port = free_port()?;
        let mut command = Command::new("wrangler");
        command
            .current_dir(repo_root())
            .args(["dev", "--port", &port.to_string(), "--ip", "127.0.0.1", "--persist-to"])
            .arg(state.map_or_else(|| dir.path().join("state"), Path::to_path_buf))
            .args(["--var", &format!("ORIGIN_URL:{origin_url}"), "--var", &format!("ORIGIN_SECRET:{secret}")])
            .args(["--log-level", "warn", "--show-interactive-dev-session=false"])
            .env("CI", "true");
        if let Some(environment) = environment {
            command.args(["--env", environment]);
        }
        for (name, value) in extra_vars {
            command.args(["--var", &format!("{name}:{value}")]);
        }
        let mut process = Process::spawn("wrangler dev", command, dir.path().join("wrangler.log"))?;
        let url = format!("http://127.0.0.1:{port}");
        wait_for_http(&mut process, &format!("{url}/healthz"), Duration::from_secs(240)).await?;
        Ok(Edge { url, process, _dir: dir })
    }

    /// wrangler's output so far.
    pub fn output(&self) -> String {
        self.process.output()
    }
}

/// A user's list through the typed client (`cascade-client`), the context given as a query string
/// (`n=10&page=search`); panics unless it is a list.
pub async fn user_recs(origin: &Origin, api_key: &str, user: &str, query: &str) -> cascade_shared::wire::RecList {
    let mut context = cascade_client::ListContext::default();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "n" => context.n = Some(value.parse().unwrap_or_else(|e| panic!("n={value}: {e}"))),
            "page" => context.page = Some(value.into_owned()),
            "device" => context.device = Some(value.into_owned()),
            "country" => context.country = Some(value.into_owned()),
            other => panic!("{other} is not a list parameter"),
        }
    }
    origin.client(api_key).user_recs(user, &context).await.unwrap_or_else(|e| panic!("{user} {query}: {e}"))
}

/// Runs `cascade` with `args` to completion; fails with its output if it fails.
pub fn run_cascade(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(cascade_bin()?).args(args).env("OPENBLAS_NUM_THREADS", "1").output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if !output.status.success() {
        bail!("cascade {} failed ({}):\n{text}", args.join(" "), output.status);
    }
    Ok(text)
}

/// Runs `cascade <args> --json` and parses the report it prints on stdout (its human summary,
/// on stderr, is ignored).
pub fn run_cascade_json(args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let output = Command::new(cascade_bin()?).args(args).arg("--json").env("OPENBLAS_NUM_THREADS", "1").output()?;
    if !output.status.success() {
        bail!("cascade {} failed ({}):\n{}", args.join(" "), output.status, String::from_utf8_lossy(&output.stderr));
    }
    serde_json::from_slice(&output.stdout)
        .with_context(|| format!("cascade {} --json printed no report: {:?}", args.join(" "), output.stdout))
}

/// Percentiles by the one formula (nearest rank) that `cascade index eval` uses too.
pub use cascade_shared::stats::{p50_p99, percentile};

/// The requests/s of a [`closed_loop`] result (0 when absent).
pub fn requests_per_sec(result: &serde_json::Value) -> f64 {
    result["requests_per_sec"].as_f64().unwrap_or(0.0)
}

/// Drives `base` closed-loop: `concurrency` workers, each sending GETs for `paths` (round robin,
/// with `bearer` when not empty) one after another for `seconds`. Returns requests, errors,
/// requests/s, p50 and p99 in milliseconds.
pub async fn closed_loop(
    base: &str,
    paths: Arc<Vec<String>>,
    bearer: &str,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<serde_json::Value> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (client, stop, paths, base, bearer) =
                (client.clone(), stop.clone(), paths.clone(), base.to_string(), bearer.to_string());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let mut i = worker;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let mut request = client.get(format!("{base}{}", paths[i % paths.len()]));
                    if !bearer.is_empty() {
                        request = request.bearer_auth(&bearer);
                    }
                    let response = request.send().await;
                    match response {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                        _ => errors += 1,
                    }
                    i += concurrency;
                }
                (latencies, errors)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (latencies, e) = worker.await?;
        all.extend(latencies);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (p50_ms, p99_ms) = p50_p99(&mut all);
    Ok(serde_json::json!({
        "requests": all.len(),
        "errors": errors,
        "requests_per_sec": all.len() as f64 / elapsed,
        "p50_ms": p50_ms,
        "p99_ms": p99_ms,
    }))
}

/// Whether an answer came from the fallback chain (not real time, not a cache).
pub fn is_fallback(source: cascade_shared::wire::Source) -> bool {
    !matches!(
        source,
        cascade_shared::wire::Source::Realtime
            | cascade_shared::wire::Source::CacheL1
            | cascade_shared::wire::Source::CacheL2
    )
}

/// Requests at a fixed `rate` for `seconds`; latency counts from each request's scheduled time, so
/// a slow server cannot hide queueing by slowing the client (no coordinated omission).
pub async fn open_loop(
    http: &reqwest::Client,
    base: &str,
    paths: &[String],
    bearer: &str,
    rate: f64,
    seconds: f64,
) -> serde_json::Value {
    let count = (rate * seconds) as usize;
    let start = Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let (http, url, bearer) = (http.clone(), format!("{base}{}", paths[i % paths.len()]), bearer.to_string());
        tasks.push(tokio::spawn(async move {
            let response = http.get(&url).bearer_auth(bearer).send().await;
            let source = match response {
                Ok(r) if r.status() == 200 => r.json::<cascade_shared::wire::RecList>().await.ok().map(|l| l.source),
                _ => None,
            };
            (due.elapsed().as_secs_f64() * 1000.0, source)
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    let (mut errors, mut fallbacks) = (0u64, 0u64);
    for task in tasks {
        if let Ok((ms, source)) = task.await {
            latencies.push(ms);
            match source {
                None => errors += 1,
                Some(s) if is_fallback(s) => fallbacks += 1,
                Some(_) => {}
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (p50_ms, p99_ms) = p50_p99(&mut latencies);
    serde_json::json!({
        "rate": rate,
        "achieved_rate": latencies.len() as f64 / elapsed,
        "requests": latencies.len(),
        "errors": errors,
        "fallbacks": fallbacks,
        "p50_ms": p50_ms,
        "p99_ms": p99_ms,
    })
}
