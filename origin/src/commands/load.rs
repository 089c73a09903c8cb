//! `cascade load`: bulk-load user and item embeddings into the Redis shards, from a bundle's export
//! files or from the generator (`--generate users=…,items=…,dim=…`).
//!
//! Batches are written to every shard at once (one `MSET` per shard per batch) with several
//! batches in flight. At the end every id is read back and counted: the command reports what Redis
//! holds, not what it sent. `--out DIR` writes generated data as a bundle folder instead of (or as
//! well as) loading it; `--model-from B` completes that folder with B's model so it can be served.
//!
//! On independent shards, each shard is then marked with what it holds of the bundle
//! (`RedisShardStore::mark`): the origin reads the mark to tell a shard that came back empty from
//! new users. `--shard i` loads (and marks) only shard `i` of the `--redis` list: the refill of a
//! shard that restarted empty, while the others keep serving.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cascade_shared::embedding::{EmbeddingTable, ValueEncoding};
use cascade_shared::keys::EntityKind;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};

use crate::bundle::{Metadata, read_embeddings};
use crate::generate::{GenSpec, Generator};
use crate::redis::tls::{RedisTls, TlsFiles};
use crate::store::redis_cluster::RedisClusterStore;
use crate::store::redis_shards::{RedisShardStore, ShardMark};
use crate::store::{EmbeddingRows, EmbeddingStore};

/// Batches in flight at once.
const IN_FLIGHT: usize = 4;

/// What a load did for one kind of entity.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LoadReport {
    /// Vectors written.
    pub written: usize,
    /// Vectors found on reading back.
    pub verified: usize,
    /// Vectors that should be there (all of them, or those of the one shard asked for).
    pub expected: usize,
    /// Seconds spent writing (not verifying).
    pub write_secs: f64,
    /// Vectors found per shard (independent shards only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub per_shard: Vec<u64>,
}

/// Which ids a load writes, and how they are counted per shard.
pub struct ShardFilter<'a> {
    /// The shard of an id.
    pub shard_of: &'a (dyn Fn(&str) -> usize + Sync),
    /// How many shards there are.
    pub shards: usize,
    /// Only this shard's ids (`--shard i`), or all.
    pub only: Option<usize>,
}

impl ShardFilter<'_> {
    fn keeps(&self, id: &str) -> bool {
        self.only.is_none_or(|only| (self.shard_of)(id) == only)
    }
}

/// Where vectors come from.
pub enum Rows<'a> {
    /// An export file, read into memory.
    Table(&'a EmbeddingTable),
    /// The generator, row by row.
    Generated(&'a Generator),
}

impl Rows<'_> {
    fn len(&self, kind: EntityKind) -> u64 {
        match (self, kind) {
            (Rows::Table(table), _) => table.ids.len() as u64,
            (Rows::Generated(g), EntityKind::User) => g.spec().users,
            (Rows::Generated(g), EntityKind::Item) => g.spec().items,
        }
    }

    fn chunk(&self, kind: EntityKind, range: std::ops::Range<u64>) -> Vec<(String, Vec<f32>)> {
        match self {
            Rows::Table(table) => {
                range.map(|row| (table.ids[row as usize].clone(), table.row(row as usize).to_vec())).collect()
            }
            Rows::Generated(generator) => generator.rows(kind, range),
        }
    }

    fn dim(&self) -> usize {
        match self {
            Rows::Table(table) => table.header.dim,
            Rows::Generated(generator) => generator.spec().dim,
        }
    }

    fn ids(&self, kind: EntityKind, range: std::ops::Range<u64>) -> Vec<String> {
        match (self, kind) {
            (Rows::Table(table), _) => table.ids[range.start as usize..range.end as usize].to_vec(),
            (Rows::Generated(_), EntityKind::User) => range.map(|n| format!("u{n}")).collect(),
            (Rows::Generated(_), EntityKind::Item) => range.map(|n| format!("i{n}")).collect(),
        }
    }
}

/// A progress bar with rate and ETA (on stderr; hidden when stderr is not a terminal).
pub fn progress(total: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template("{msg:>6} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(label.to_string());
    bar
}

pub(crate) fn label(kind: EntityKind) -> &'static str {
    match kind {
        EntityKind::User => "users",
        EntityKind::Item => "items",
    }
}

pub(crate) fn chunks(total: u64, batch: usize) -> impl Iterator<Item = std::ops::Range<u64>> {
    (0..total).step_by(batch).map(move |start| start..(start + batch as u64).min(total))
}

/// Writes `rows` of `kind` (those `filter` keeps) and reads every one back.
pub async fn load_rows(
    store: &dyn EmbeddingStore,
    kind: EntityKind,
    rows: &Rows<'_>,
    batch: usize,
    filter: Option<&ShardFilter<'_>>,
) -> anyhow::Result<LoadReport> {
    let total = rows.len(kind);
    let bar = progress(total, label(kind));
    let started = Instant::now();
    let mut writes = futures::stream::iter(chunks(total, batch))
        .map(|range| async move {
            let end = range.end;
            // Rows are made (read or generated) lazily, one chunk per batch in flight.
            let mut entries = rows.chunk(kind, range);
            if let Some(filter) = filter {
                entries.retain(|(id, _)| filter.keeps(id));
            }
            store.set_batch(kind, &entries).await.map(|n| (n, end))
        })
        .buffered(IN_FLIGHT);
    let mut written = 0;
    while let Some(result) = writes.next().await {
        let (n, end) = result?;
        written += n;
        bar.set_position(end);
    }
    bar.finish_and_clear();
    let write_secs = started.elapsed().as_secs_f64();
    let mut verified = 0;
    let mut expected = 0;
    let mut per_shard = vec![0u64; filter.map_or(0, |f| f.shards)];
    let mut reads = futures::stream::iter(chunks(total, batch))
        .map(|range| {
            let mut ids = rows.ids(kind, range);
            if let Some(filter) = filter {
                ids.retain(|id| filter.keeps(id));
            }
            async move {
                let mut found = EmbeddingRows::new(rows.dim());
                store.get_rows(kind, &ids, &mut found).await;
                (ids, found)
            }
        })
        .buffered(IN_FLIGHT);
    while let Some((ids, found)) = reads.next().await {
        expected += ids.len();
        for (index, id) in ids.iter().enumerate() {
            match found.get(index) {
                Ok(Some(_)) => {
                    verified += 1;
                    if let Some(filter) = filter {
                        per_shard[(filter.shard_of)(id)] += 1;
                    }
                }
                Ok(None) => tracing::error!(%id, "missing after load"),
                Err(error) => anyhow::bail!("verifying {}: {error}", label(kind)),
            }
        }
    }
    Ok(LoadReport { written, verified, expected, write_secs, per_shard })
}

/// Bulk-load embeddings (a bundle's, or generated ones) into the Redis shards, then verify them.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Bundle folder (when not generating).
    #[arg(long, env = cascade_shared::config::BUNDLE, default_value = "data/bundle")]
    pub bundle: PathBuf,
    /// Generate clustered data instead: `users=N,items=M,dim=D[,clusters=K][,seed=S]`.
    #[arg(long, value_parser = |s: &str| GenSpec::parse(s))]
    pub generate: Option<GenSpec>,
    /// Comma-separated shard URLs, in shard order (none: don't load, e.g. only `--out`).
    #[arg(long = "redis", env = cascade_shared::config::REDIS_SHARDS, value_delimiter = ',')]
    pub shards: Vec<String>,
    /// Vectors per batch.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Load users only (items are served from the bundle).
    #[arg(long)]
    pub users_only: bool,
    /// Store values as float16 (half the memory; readers accept both).
    #[arg(long)]
    pub f16: bool,
    /// With --generate: also write the data as a bundle folder here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// With --out: copy the model and its reference scores from this bundle (same dim).
    #[arg(long)]
    pub model_from: Option<PathBuf>,
    /// --redis names seed nodes of a Redis Cluster (default: independent shards).
    #[arg(long)]
    pub cluster: bool,
    /// Load only shard `i` (0-based) of the --redis list: refills a shard that came back empty.
    #[arg(long)]
    pub shard: Option<usize>,
    /// TLS files for `rediss://` URLs.
    #[command(flatten)]
    pub tls: TlsFiles,
}

/// What `cascade load` did (printed as JSON with `--json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LoadOutcome {
    /// The bundle id the vectors were written under.
    pub bundle_id: String,
    /// `F32` or `F16`.
    pub encoding: String,
    /// The store written to (empty when only `--out` was asked for).
    pub store: String,
    /// One report per kind loaded.
    pub loaded: Vec<LoadedKind>,
}

/// One kind's part of a load.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LoadedKind {
    /// `users` or `items`.
    pub kind: &'static str,
    /// Vectors in the source.
    pub total: u64,
    /// What was written and read back.
    #[serde(flatten)]
    pub report: LoadReport,
}

/// Runs `cascade load`.
pub async fn run(args: LoadArgs) -> anyhow::Result<LoadOutcome> {
    let encoding = if args.f16 { ValueEncoding::F16 } else { ValueEncoding::F32 };
    anyhow::ensure!((1..=100_000).contains(&args.batch), "--batch must be within 1..=100000");
    let generator = args.generate.map(Generator::new);
    anyhow::ensure!(
        !args.shards.is_empty() || args.out.is_some(),
        "no Redis shards: pass --redis or set {} (or --out with --generate)",
        cascade_shared::config::REDIS_SHARDS
    );
    anyhow::ensure!(args.out.is_none() || generator.is_some(), "--out needs --generate");
    anyhow::ensure!(args.model_from.is_none() || args.out.is_some(), "--model-from needs --out");
    let (bundle_id, dim) = match &generator {
        Some(g) => (g.spec().bundle_id(), g.spec().dim),
        None => {
            let metadata: Metadata = serde_json::from_slice(&std::fs::read(args.bundle.join("metadata.json"))?)?;
            (metadata.bundle_id, metadata.dim)
        }
    };
    if let (Some(generator), Some(out)) = (&generator, &args.out) {
        super::generated::write_bundle(generator, out, args.model_from.as_deref())?;
    }
    let mut outcome = LoadOutcome {
        bundle_id: bundle_id.clone(),
        encoding: format!("{encoding:?}"),
        store: String::new(),
        loaded: Vec::new(),
    };
    if args.shards.is_empty() {
        return Ok(outcome);
    }
    anyhow::ensure!(!(args.cluster && args.shard.is_some()), "--shard is for independent shards, not --cluster");
    if let Some(shard) = args.shard {
        anyhow::ensure!(shard < args.shards.len(), "--shard {shard} is not in 0..{}", args.shards.len());
    }
    let timeout = Duration::from_secs(5);
    let tls = RedisTls::load(&args.tls)?;
    let sharded = if args.cluster {
        None
    } else {
        Some(RedisShardStore::connect(&args.shards, &bundle_id, dim, timeout, &tls)?.with_encoding(encoding))
    };
    let cluster;
    let store: &dyn EmbeddingStore = match &sharded {
        Some(sharded) => sharded,
        None => {
            cluster =
                RedisClusterStore::connect(&args.shards, &bundle_id, dim, timeout, &tls).await?.with_encoding(encoding);
            &cluster
        }
    };
    let shard_of = |id: &str| sharded.as_ref().map_or(0, |s| s.shard_of(id));
    let filter =
        sharded.as_ref().map(|s| ShardFilter { shard_of: &shard_of, shards: s.shard_count(), only: args.shard });
    outcome.store = store.describe();
    let mut kinds = vec![EntityKind::User];
    if !args.users_only {
        kinds.push(EntityKind::Item);
    }
    for kind in kinds {
        let table;
        let rows = match &generator {
            Some(generator) => Rows::Generated(generator),
            None => {
                let file = args.bundle.join(format!("{}.emb", label(kind)));
                table = read_embeddings(&file, &bundle_id, dim)?;
                Rows::Table(&table)
            }
        };
        let total = rows.len(kind);
        let report = load_rows(store, kind, &rows, args.batch, filter.as_ref()).await?;
        eprintln!(
            "{}: wrote {} and verified {} of {total} vectors ({:?}, bundle {bundle_id}) into {} in {:.1} s ({:.0}/s)",
            label(kind),
            report.written,
            report.verified,
            encoding,
            store.describe(),
            report.write_secs,
            report.written as f64 / report.write_secs.max(1e-9)
        );
        anyhow::ensure!(
            report.verified == report.expected,
            "only {} of {} {} are in Redis",
            report.verified,
            report.expected,
            label(kind)
        );
        outcome.loaded.push(LoadedKind { kind: label(kind), total, report });
    }
    if let Some(store) = &sharded {
        mark_shards(store, &outcome.loaded, args.shard).await?;
    }
    Ok(outcome)
}

/// Marks each shard loaded (or only `only`) with what it now holds of the bundle.
async fn mark_shards(store: &RedisShardStore, loaded: &[LoadedKind], only: Option<usize>) -> anyhow::Result<()> {
    let count = |kind: &str, shard: usize| {
        loaded.iter().find(|l| l.kind == kind).and_then(|l| l.report.per_shard.get(shard).copied()).unwrap_or(0)
    };
    let loaded_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    for shard in (0..store.shard_count()).filter(|&s| only.is_none_or(|only| only == s)) {
        let mark = ShardMark { users: count("users", shard), items: count("items", shard), loaded_at };
        store.mark(shard, &mark).await.map_err(|e| anyhow::anyhow!("marking shard {shard}: {e}"))?;
    }
    Ok(())
}
