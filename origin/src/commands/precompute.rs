//! `cascade precompute`: every user's top list, ranked offline and written to Redis with a TTL,
//! so the request path has a list to re-rank (or serve) for each user.
//!
//! Users are those of the bundle's `users.emb`, split between workers with `--part i/N` (user
//! index modulo N). Lists are ranked in the default context (`home.desktop`); the request path
//! re-ranks them in the request's context. Progress is checkpointed after every chunk to
//! `--checkpoint` (the next user index), so an interrupted run resumes where it stopped.
//!
//! At batch speed: each chunk of `--batch-users` users is one FAISS call for all their queries,
//! then their rows in model calls of 4096 rows ([`crate::recommend::Recommender::rank_users`]),
//! while the previous chunk's lists are written to Redis (one pipeline per shard).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cascade_shared::segment::SegmentKey;
use cascade_shared::wire::RecItem;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::app::App;
use crate::bundle::read_embeddings;
use crate::config::Config;

/// Users' lists, by user id.
type Lists = Vec<(String, Vec<RecItem>)>;

/// Longest one chunk may take to rank.
const CHUNK_DEADLINE: Duration = Duration::from_secs(300);

/// Rank every user's top list offline and write it to the Redis shards (resumable).
#[derive(Debug, Clone, clap::Args)]
pub struct PrecomputeArgs {
    /// TOML config file (also $CASCADE_CONFIG): ranker, retrieval and Redis settings, as `serve`
    /// reads them. Environment variables override it; the flags below override both.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Bundle folder.
    #[arg(long, env = cascade_shared::config::BUNDLE, default_value = "data/bundle")]
    pub bundle: PathBuf,
    /// Comma-separated shard URLs, in shard order (default: the config's `redis.shards`).
    #[arg(long = "redis", value_delimiter = ',')]
    pub shards: Vec<String>,
    /// This worker's part of the users, `i/N` (also `--shard i/N`).
    #[arg(long, alias = "shard", default_value = "0/1", value_parser = parse_part)]
    pub part: (usize, usize),
    /// Items per list.
    #[arg(long, default_value_t = 50)]
    pub top: usize,
    /// List time to live, seconds.
    #[arg(long, default_value_t = 86_400)]
    pub ttl_secs: u64,
    /// Checkpoint file: resume from it, and update it after every chunk.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Stop after this many users in this run.
    #[arg(long)]
    pub max_users: Option<usize>,
    /// Users ranked together: one FAISS call and a few large model calls per chunk.
    #[arg(long, default_value_t = 512)]
    pub batch_users: usize,
    /// Copies of the model scoring at once, each on its own thread (default: one per core; an
    /// offline job has the machine to itself).
    #[arg(long)]
    pub model_threads: Option<usize>,
    /// libtorch threads inside each copy's model call (default 1: on this machine's 2 cores two
    /// copies of one thread each scored 1.55-1.83M rows/s where one copy of two threads scored
    /// 0.85-1.12M; see benches/ranker.rs).
    #[arg(long, default_value_t = 1)]
    pub intra_op_threads: usize,
}

/// What a run did (printed as JSON with `--json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PrecomputeReport {
    /// The bundle whose lists were written.
    pub bundle_id: String,
    /// User index the run started from (0, or the checkpoint).
    pub resumed_at: usize,
    /// Lists written in this run.
    pub written: usize,
    /// Users of this part left for a later run.
    pub remaining: usize,
    /// Lists per second.
    pub users_per_sec: f64,
}

/// Parses `i/N`.
pub fn parse_part(value: &str) -> Result<(usize, usize), String> {
    let (i, n) = value.split_once('/').ok_or("expected i/N, e.g. 0/4")?;
    let (i, n): (usize, usize) =
        (i.parse().map_err(|_| "i is not a number")?, n.parse().map_err(|_| "N is not a number")?);
    if n == 0 || i >= n {
        return Err(format!("need 0 <= i < N, got {i}/{n}"));
    }
    Ok((i, n))
}

fn read_checkpoint(path: &Path) -> anyhow::Result<usize> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().with_context(|| format!("{} does not hold a user index", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The configuration precompute ranks with: `serve`'s (file < environment), with `--bundle` and
/// `--redis` on top.
fn config(args: &PrecomputeArgs) -> anyhow::Result<Config> {
    let mut config = Config::load(args.config.as_deref(), &|name| std::env::var(name).ok())?;
    config.bundle = args.bundle.clone();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    config.ranker.threads = args.model_threads.unwrap_or(cores);
    config.ranker.intra_op_threads = args.intra_op_threads;
    anyhow::ensure!((1..=256).contains(&config.ranker.threads), "--model-threads must be within 1..=256");
    anyhow::ensure!((1..=256).contains(&config.ranker.intra_op_threads), "--intra-op-threads must be within 1..=256");
    if !args.shards.is_empty() {
        config.redis.shards = args.shards.clone();
    }
    config.validate()?;
    anyhow::ensure!(
        !config.redis.shards.is_empty() || !config.redis.cluster.is_empty(),
        "no Redis shards: pass --redis, set {} or {}, or redis.shards or redis.cluster in --config",
        cascade_shared::config::REDIS_SHARDS,
        cascade_shared::config::REDIS_CLUSTER
    );
    Ok(config)
}

/// Runs the job.
pub async fn run(args: PrecomputeArgs) -> anyhow::Result<PrecomputeReport> {
    anyhow::ensure!((1..=cascade_shared::validate::MAX_N).contains(&args.top), "--top must be within 1..=100");
    anyhow::ensure!(args.ttl_secs > 0, "--ttl-secs must be positive");
    anyhow::ensure!((1..=100_000).contains(&args.batch_users), "--batch-users must be within 1..=100000");
    let ttl = Duration::from_secs(args.ttl_secs);
    let app = App::new(config(&args)?)?;
    let recommender = app.recommender().await?;
    let bundle = recommender.bundle();
    let users = read_embeddings(&bundle.users_path(), bundle.id(), bundle.metadata.dim)?;
    let sink = recommender.precomputed();

    let (part, parts) = args.part;
    let mine: Vec<usize> = (0..users.ids.len()).filter(|u| u % parts == part).collect();
    let resumed_at = match &args.checkpoint {
        Some(path) => read_checkpoint(path)?,
        None => 0,
    };
    let todo: Vec<usize> =
        mine.iter().copied().filter(|&u| u >= resumed_at).take(args.max_users.unwrap_or(usize::MAX)).collect();
    let remaining = mine.iter().filter(|&&u| u >= resumed_at).count() - todo.len();
    let bar = ProgressBar::new(todo.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("precompute [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let context = SegmentKey::from_parts(None, None, None);
    let started = Instant::now();
    let mut written = 0;
    // Two chunks in flight: while one is scored on the ranker's thread, the next is searched on
    // FAISS's and its rows built here. Each chunk's lists are written by a task of their own while
    // later chunks are ranked; writes (and the checkpoint after each) stay in order.
    let (users, recommender) = (&users, &recommender);
    let mut ranked = futures::stream::iter(todo.chunks(args.batch_users))
        .map(|chunk| async move {
            // Each user's query from their history (no session offline), and what not to show them.
            let bundle = recommender.bundle();
            let queries: Vec<(Vec<f32>, &[u32])> =
                chunk.iter().map(|&u| bundle.query(users.row(u), &users.ids[u], &[])).collect();
            (chunk, recommender.rank_users(&queries, context, Instant::now() + CHUNK_DEADLINE).await)
        })
        .buffered(2);
    let mut writing: Option<tokio::task::JoinHandle<anyhow::Result<usize>>> = None;
    while let Some((chunk, lists)) = ranked.next().await {
        let lists: Lists = chunk
            .iter()
            .zip(lists.context("ranking failed")?)
            .map(|(&u, mut items)| {
                items.truncate(args.top);
                (users.ids[u].clone(), items)
            })
            .collect();
        if let Some(previous) = writing.take() {
            written += previous.await.context("a write task failed")??;
        }
        let next = chunk.last().map_or(0, |&u| u + 1);
        let (sink, checkpoint, progress) = (Arc::clone(sink), args.checkpoint.clone(), bar.clone());
        writing = Some(tokio::spawn(async move {
            let count = sink.put_many(&lists, ttl).await?;
            if let Some(path) = checkpoint {
                std::fs::write(&path, format!("{next}\n")).with_context(|| format!("writing {}", path.display()))?;
            }
            progress.inc(lists.len() as u64);
            anyhow::Ok(count)
        }));
    }
    if let Some(last) = writing {
        written += last.await.context("a write task failed")??;
    }
    bar.finish();
    let users_per_sec = written as f64 / started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "precompute: wrote {written} lists of {} items (part {part}/{parts}, resumed at user {resumed_at}, {remaining} left) at {users_per_sec:.0} users/s",
        args.top
    );
    Ok(PrecomputeReport { bundle_id: bundle.id().to_string(), resumed_at, written, remaining, users_per_sec })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts() {
        assert_eq!(parse_part("0/4"), Ok((0, 4)));
        assert_eq!(parse_part("3/4"), Ok((3, 4)));
        assert!(parse_part("4/4").is_err());
        assert!(parse_part("1/0").is_err());
        assert!(parse_part("x").is_err());
    }
}
