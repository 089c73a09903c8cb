//! `cascade precompute`: every user's top list, ranked offline and written to Redis with a TTL,
//! so the request path has a list to re-rank (or serve) for each user.
//!
//! Users are those of the bundle's `users.emb`, split between workers with `--part i/N` (user
//! index modulo N). Lists are ranked in the default context (`home.desktop`); the request path
//! re-ranks them in the request's context. Progress is checkpointed after every chunk to
//! `--checkpoint` (the next user index), so an interrupted run resumes where it stopped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cascade_shared::segment::SegmentKey;
use futures::future::join_all;
use indicatif::{ProgressBar, ProgressStyle};

use crate::bundle::{Bundle, read_embeddings};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::ranker::{TorchRanker, pick_device};
use crate::recommend::{Components, Recommender};
use crate::retrieval::{FaissRetriever, build_index};
use crate::store::memory::MemoryStore;
use crate::store::precomputed::{NoPrecomputed, PrecomputedLists, RedisPrecomputed};
use crate::store::shards::ShardSet;

/// What to precompute.
#[derive(Debug, Clone)]
pub struct PrecomputeArgs {
    /// Bundle folder.
    pub bundle: PathBuf,
    /// Redis shard URLs.
    pub shards: Vec<String>,
    /// This worker's part, `(i, n)`: users with index % n == i.
    pub part: (usize, usize),
    /// Items per list.
    pub top: usize,
    /// List TTL.
    pub ttl: Duration,
    /// Checkpoint file (resume from it when present).
    pub checkpoint: Option<PathBuf>,
    /// Stop after this many users in this run (for staged runs).
    pub max_users: Option<usize>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct PrecomputeReport {
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

/// Runs the job.
pub async fn run(args: PrecomputeArgs) -> anyhow::Result<PrecomputeReport> {
    anyhow::ensure!(
        !args.shards.is_empty(),
        "no Redis shards: pass --redis or set {}",
        cascade_shared::config::REDIS_SHARDS
    );
    anyhow::ensure!((1..=cascade_shared::validate::MAX_N).contains(&args.top), "--top must be within 1..=100");
    let dir = args.bundle.clone();
    let bundle = Arc::new(tokio::task::spawn_blocking(move || Bundle::load(&dir)).await??);
    let users = read_embeddings(&bundle.users_path(), bundle.id(), bundle.metadata.dim)?;
    let index = match bundle.index_path() {
        path if path.exists() => FaissRetriever::read(&path)?,
        _ => build_index("auto", bundle.metadata.dim, &bundle.items.values)?,
    };
    let config = Config::default();
    let metrics = Arc::new(Metrics::new());
    let ranker =
        TorchRanker::start(&bundle, pick_device(config.ranker.device)?, &config.ranker, metrics.batcher.clone())?;
    let components = Components {
        store: Arc::new(MemoryStore::new()),
        retriever: Arc::new(FaissRetriever::new(
            index,
            config.retrieval.parallelism,
            config.retrieval.nprobe,
            "precompute",
        )?),
        ranker: Arc::new(ranker),
        precomputed: Arc::new(NoPrecomputed),
    };
    let recommender = Recommender::new(
        Arc::clone(&bundle),
        components,
        metrics,
        config.retrieval.candidates,
        Duration::from_secs(30),
    )
    .await;
    let sink = RedisPrecomputed::new(ShardSet::new(&args.shards, Duration::from_secs(5))?, bundle.id());

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
    for chunk in todo.chunks(256) {
        let ranked = join_all(chunk.iter().map(|&u| {
            let recommender = &recommender;
            let user = users.row(u);
            async move {
                recommender
                    .rank_user(user, context, Instant::now() + Duration::from_secs(30))
                    .await
                    .map(|items| (u, items))
            }
        }))
        .await;
        let mut lists = Vec::with_capacity(chunk.len());
        for result in ranked {
            let (u, mut items) = result.map_err(|e| anyhow::anyhow!("ranking failed: {e}"))?;
            items.truncate(args.top);
            lists.push((users.ids[u].clone(), items));
        }
        written += sink.put_many(&lists, args.ttl).await?;
        if let (Some(path), Some(&last)) = (&args.checkpoint, chunk.last()) {
            std::fs::write(path, format!("{}\n", last + 1)).with_context(|| format!("writing {}", path.display()))?;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    let users_per_sec = written as f64 / started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "precompute: wrote {written} lists of {} items (part {part}/{parts}, resumed at user {resumed_at}, {remaining} left) at {users_per_sec:.0} users/s",
        args.top
    );
    Ok(PrecomputeReport { resumed_at, written, remaining, users_per_sec })
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
