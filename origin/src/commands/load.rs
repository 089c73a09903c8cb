//! `cascade load`: bulk-load a bundle's user and item embeddings into the Redis shards.
//!
//! Batches go to every shard at once (one `MSET` per shard per batch). At the end every id is
//! read back and counted: the command reports what Redis holds, not what it sent.

use std::path::Path;
use std::time::{Duration, Instant};

use cascade_shared::embedding::EmbeddingTable;
use cascade_shared::keys::EntityKind;
use indicatif::{ProgressBar, ProgressStyle};

use crate::bundle::{Metadata, read_embeddings};
use crate::store::EmbeddingStore;
use crate::store::redis_shards::RedisShardStore;

/// What a load did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Vectors written.
    pub written: usize,
    /// Vectors found on reading back.
    pub verified: usize,
}

fn progress(total: usize, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    let style = ProgressStyle::with_template("{msg:>6} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(label.to_string());
    bar
}

async fn load_table(
    store: &RedisShardStore,
    kind: EntityKind,
    table: &EmbeddingTable,
    batch: usize,
) -> anyhow::Result<LoadReport> {
    let label = match kind {
        EntityKind::User => "users",
        EntityKind::Item => "items",
    };
    let bar = progress(table.ids.len(), label);
    let mut written = 0;
    for start in (0..table.ids.len()).step_by(batch) {
        let end = (start + batch).min(table.ids.len());
        let entries: Vec<(String, Vec<f32>)> =
            (start..end).map(|row| (table.ids[row].clone(), table.row(row).to_vec())).collect();
        written += store.set_batch(kind, &entries).await?;
        bar.set_position(end as u64);
    }
    bar.finish();
    let mut verified = 0;
    for chunk in table.ids.chunks(batch) {
        for (id, lookup) in chunk.iter().zip(store.get_batch(kind, chunk).await) {
            match lookup {
                Ok(Some(_)) => verified += 1,
                Ok(None) => tracing::error!(%id, "missing after load"),
                Err(error) => anyhow::bail!("verifying {label}: {error}"),
            }
        }
    }
    Ok(LoadReport { written, verified })
}

/// Loads `bundle_dir`'s users (and items, unless `users_only`) into `shards`.
pub async fn run(
    bundle_dir: &Path,
    shards: &[String],
    batch: usize,
    users_only: bool,
) -> anyhow::Result<Vec<(EntityKind, LoadReport)>> {
    anyhow::ensure!(
        !shards.is_empty(),
        "no Redis shards: pass --redis or set {}",
        cascade_shared::config::REDIS_SHARDS
    );
    anyhow::ensure!((1..=100_000).contains(&batch), "--batch must be within 1..=100000");
    let metadata: Metadata = serde_json::from_slice(&std::fs::read(bundle_dir.join("metadata.json"))?)?;
    let store = RedisShardStore::new(shards, &metadata.bundle_id, metadata.dim, Duration::from_secs(5))?;
    let mut kinds = vec![(EntityKind::User, bundle_dir.join("users.emb"))];
    if !users_only {
        kinds.push((EntityKind::Item, bundle_dir.join("items.emb")));
    }
    let mut reports = Vec::new();
    for (kind, path) in kinds {
        let started = Instant::now();
        let table = read_embeddings(&path, &metadata.bundle_id, metadata.dim)?;
        let report = load_table(&store, kind, &table, batch).await?;
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "{}: wrote {} and verified {} of {} vectors over {} shards in {seconds:.1} s ({:.0}/s)",
            path.display(),
            report.written,
            report.verified,
            table.ids.len(),
            shards.len(),
            report.written as f64 / seconds.max(1e-9)
        );
        anyhow::ensure!(
            report.verified == table.ids.len(),
            "only {} of {} vectors are in Redis",
            report.verified,
            table.ids.len()
        );
        reports.push((kind, report));
    }
    Ok(reports)
}
