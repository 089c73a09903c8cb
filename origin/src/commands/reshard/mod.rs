//! `cascade reshard --from A,B,C,D --to A,B,C,D,E`: moves the keys whose shard changed, and only
//! those, then proves nothing was lost.
//!
//! 1. **Census** of every server in either list (once; kept in the checkpoint): how many
//!    `cascade:*` keys there are and an order-independent checksum (wrapping sum of `stable_hash64(key, DUMP(key))`).
//! 2. **Move**: each old server is walked with `SCAN`; the keys of a batch whose id
//!    (`keys::shard_id_of`) now belongs to another server are moved there through this client:
//!    `WATCH` them, `DUMP` + `PTTL`, `RESTORE … REPLACE` on the target (TTL kept), then delete
//!    them from the source in a `MULTI`/`EXEC` that aborts if any changed since the `WATCH` (the
//!    batch is then copied again). Through the client rather than `MIGRATE`, because a server
//!    cannot open a `rediss://` connection or present ACL credentials on its own (`MIGRATE`
//!    needs `tls-cluster`, and managed Redis services disable it), and a write racing the move
//!    is never lost. After every batch the SCAN cursor goes to the checkpoint, so an interrupted
//!    run resumes where it stopped; and since a moved key no longer sits on its old server,
//!    re-running from scratch is also safe.
//! 3. **Verify**: a second census must find the same count and checksum, every key on the new
//!    shard its id maps to (a server dropped from the list must be empty), and no key on two
//!    servers.
//!
//! The census counts durable keys only: L2 lists and sessions are moved when still there but not
//! counted (they expire by themselves, so on a live system they would fail any before/after
//! count), and shard markers stay on their shard. A `cascade:*` key from which no shard id can be
//! read (outside the schema) stops the run before anything moves, naming one: it could never be
//! moved, and a success report would be a lie. Ids are validated where they enter (HTTP, bundle
//! files, `load`), so such a key comes only from outside Cascade.
//!
//! Two ways to run it:
//! - **Writers paused** (the default): a key written to its old shard after that shard was
//!   scanned would stay there. Switch `CASCADE_REDIS_SHARDS` to the new list when it reports
//!   success.
//! - **`--online`, writers writing**: first give every origin `previous_shards = <--from>` and
//!   `shards = <--to>` (`redis::moving`: they write the new placement only and move a user's keys
//!   on first access); a copy already at the target then wins over the one being moved, and the
//!   verification checks placement (every key on its shard exactly once) and that no key was
//!   lost (at least as many keys after as before), since live writers change the checksum. Then
//!   drop `previous_shards`.
//!
//! After verification each new server gets the bundles' shard marks (`cascade:markers`) from the
//! old ones, so the health check does not take a freshly filled shard for one that lost its data.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use cascade_shared::hashing::shard_for;
use cascade_shared::keys::{is_shard_local, shard_id_of};
use serde::{Deserialize, Serialize};

mod copy;

pub use copy::census;
use copy::{connect, copy_marks, move_batch, scan};

use crate::commands::load::progress;
use crate::redis::tls::{RedisTls, TlsFiles};
use crate::redis::url::redact;

/// Move keys from one shard list to another (only those whose shard changed), resumably, then
/// verify every key is on its shard exactly once with an unchanged checksum.
#[derive(Debug, Clone, clap::Args)]
pub struct ReshardArgs {
    /// The shard list the keys are on now (comma-separated, in order).
    #[arg(long, value_delimiter = ',', required = true)]
    pub from: Vec<String>,
    /// The new shard list.
    #[arg(long, value_delimiter = ',', required = true)]
    pub to: Vec<String>,
    /// Checkpoint file: resume from it, and update it after every batch.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Keys per SCAN/MIGRATE batch.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Stop (resumably) after moving this many keys in this run.
    #[arg(long)]
    pub max_moves: Option<u64>,
    /// Writers keep writing: every origin runs with `previous_shards` = --from and `shards` =
    /// --to (see the module's description).
    #[arg(long)]
    pub online: bool,
    /// TLS files for `rediss://` URLs (credentials go in the URLs).
    #[command(flatten)]
    pub tls: TlsFiles,
}

/// Count and checksum of a shard list's keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Census {
    /// `cascade:*` keys with a shard id.
    pub keys: u64,
    /// Wrapping sum of `stable_hash64(key ‖ 0 ‖ DUMP(key))`.
    pub checksum: u64,
    /// Keys on a shard other than the one their id maps to.
    pub misplaced: u64,
    /// Keys found on more than one shard.
    pub duplicates: u64,
    /// `cascade:*` keys outside the schema (a reshard refuses to start while there are any).
    pub foreign: u64,
    /// One of them, to name in the refusal.
    #[serde(default)]
    pub foreign_example: Option<String>,
    /// Caches and sessions seen (moved, not counted: they expire by themselves).
    #[serde(default)]
    pub volatile: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    from: Vec<String>,
    to: Vec<String>,
    before: Option<Census>,
    /// Per old shard: the SCAN cursor to continue from, `None` when that shard is done.
    cursors: Vec<Option<u64>>,
    scanned: u64,
    moved: u64,
}

/// How a run ended (printed as JSON with `--json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Every shard walked and verified.
    Done {
        /// Whether this run continued from a checkpoint.
        resumed: bool,
        /// Keys moved over all runs.
        moved: u64,
        /// Keys counted before.
        keys: u64,
        /// The census of the new shards.
        after: Census,
    },
    /// Stopped at `--max-moves`; the checkpoint holds the place.
    Interrupted {
        /// Keys moved so far over all runs.
        moved: u64,
        /// Keys counted before the first run.
        keys: u64,
    },
}

fn save(path: &Option<PathBuf>, checkpoint: &Checkpoint) -> anyhow::Result<()> {
    if let Some(path) = path {
        let partial = path.with_extension("partial");
        std::fs::write(&partial, serde_json::to_vec_pretty(checkpoint)?)?;
        std::fs::rename(&partial, path)?;
    }
    Ok(())
}

/// Runs `cascade reshard`.
pub async fn run(args: ReshardArgs) -> anyhow::Result<Outcome> {
    anyhow::ensure!(!args.from.is_empty() && !args.to.is_empty(), "--from and --to need at least one shard each");
    anyhow::ensure!((1..=100_000).contains(&args.batch), "--batch must be within 1..=100000");
    for list in [&args.from, &args.to] {
        let unique: HashSet<&String> = list.iter().collect();
        anyhow::ensure!(unique.len() == list.len(), "a shard list names the same server twice: {list:?}");
    }
    let tls = RedisTls::load(&args.tls)?;
    let mut targets = Vec::with_capacity(args.to.len());
    for url in &args.to {
        targets.push(connect(url, &tls).await?);
    }
    // Every server involved: a key counts wherever it is, so a re-run after a finished (or
    // half-finished, checkpoint lost) reshard still accounts for every key.
    let mut servers = args.from.clone();
    servers.extend(args.to.iter().filter(|u| !args.from.contains(u)).cloned());
    let resumed = args.checkpoint.as_ref().is_some_and(|path| path.exists());
    let mut checkpoint = match &args.checkpoint {
        Some(path) if path.exists() => {
            let saved: Checkpoint = serde_json::from_slice(&std::fs::read(path)?)?;
            anyhow::ensure!(
                saved.from == args.from && saved.to == args.to,
                "{} is a checkpoint of another reshard ({:?} → {:?})",
                path.display(),
                saved.from,
                saved.to
            );
            eprintln!("resuming from {}: {} keys moved so far", path.display(), saved.moved);
            saved
        }
        _ => Checkpoint {
            from: args.from.clone(),
            to: args.to.clone(),
            cursors: vec![Some(0); args.from.len()],
            ..Checkpoint::default()
        },
    };
    let before = match checkpoint.before.clone() {
        Some(before) => before,
        None => {
            let started = Instant::now();
            let before = census(&servers, &args.from, args.batch, &tls).await?;
            eprintln!(
                "census of {} servers: {} keys, checksum {:016x} ({:.1} s)",
                servers.len(),
                before.keys,
                before.checksum,
                started.elapsed().as_secs_f64()
            );
            if let Some(example) = &before.foreign_example {
                anyhow::bail!(
                    "{} cascade:* keys are outside the key schema (e.g. {example:?}): no shard id can be read \
                     from them, so they cannot be moved; delete or rename them, then run again",
                    before.foreign
                );
            }
            checkpoint.before = Some(before.clone());
            save(&args.checkpoint, &checkpoint)?;
            before
        }
    };

    let bar = progress(before.keys, "moved");
    bar.set_position(checkpoint.moved);
    let mut moved_this_run = 0u64;
    let started = Instant::now();
    for (index, url) in args.from.iter().enumerate() {
        let Some(mut cursor) = checkpoint.cursors[index] else { continue };
        let mut connection = connect(url, &tls).await?;
        loop {
            let (next, keys) = scan(&mut connection, cursor, args.batch).await?;
            let mut by_target: HashMap<usize, Vec<String>> = HashMap::new();
            for key in keys {
                if is_shard_local(&key) {
                    continue;
                }
                let Some(id) = shard_id_of(&key) else { continue };
                let target = shard_for(id, args.to.len() as u32) as usize;
                if args.to[target] != *url {
                    by_target.entry(target).or_default().push(key);
                }
            }
            checkpoint.scanned += 1;
            for (target, keys) in by_target {
                // Keys gone in between (moved by an earlier, interrupted run) are not counted.
                let moved =
                    move_batch(&mut connection, &mut targets[target], &keys, args.online).await.map_err(|e| {
                        // A pipeline's error lists every command's: the first says it.
                        let text: String = e.to_string().chars().take(300).collect();
                        anyhow::anyhow!("moving keys {} → {}: {text}", redact(url), redact(&args.to[target]))
                    })?;
                checkpoint.moved += moved;
                moved_this_run += moved;
                bar.inc(moved);
            }
            cursor = next;
            checkpoint.cursors[index] = (cursor != 0).then_some(cursor);
            save(&args.checkpoint, &checkpoint)?;
            if cursor == 0 {
                break;
            }
            if args.max_moves.is_some_and(|max| moved_this_run >= max) {
                bar.finish_and_clear();
                eprintln!(
                    "interrupted after {moved_this_run} moves this run ({} in all); run again with the same --checkpoint to resume",
                    checkpoint.moved
                );
                return Ok(Outcome::Interrupted { moved: checkpoint.moved, keys: before.keys });
            }
        }
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let (old, new) = (args.from.len() as f64, args.to.len() as f64);
    let ideal = (new - old).abs() / new.max(old);
    let fraction = checkpoint.moved as f64 / (before.keys as f64).max(1.0);
    eprintln!(
        "moved {} of {} keys ({:.2}%; ideal for {} → {} shards {:.2}%, {:.3}x) in {seconds:.1} s this run",
        checkpoint.moved,
        before.keys,
        fraction * 100.0,
        args.from.len(),
        args.to.len(),
        ideal * 100.0,
        if ideal > 0.0 { fraction / ideal } else { f64::NAN }
    );
    let after = census(&servers, &args.to, args.batch, &tls).await?;
    anyhow::ensure!(
        (args.online && after.keys >= before.keys) || (after.keys == before.keys && after.checksum == before.checksum),
        "verification failed: {} keys with checksum {:016x} before, {} with {:016x} after",
        before.keys,
        before.checksum,
        after.keys,
        after.checksum
    );
    anyhow::ensure!(
        after.misplaced == 0 && after.duplicates == 0,
        "verification failed: {} keys on the wrong shard, {} on two shards",
        after.misplaced,
        after.duplicates
    );
    if args.online {
        eprintln!(
            "verified: {} keys ({} before; writers added the rest), each on its shard exactly once",
            after.keys, before.keys
        );
    } else {
        eprintln!(
            "verified: {} keys, each on its shard exactly once, checksum {:016x} unchanged",
            after.keys, after.checksum
        );
    }
    let marks = copy_marks(&args.from, &args.to, &tls).await?;
    if marks > 0 {
        eprintln!("{marks} shard marks copied to the new servers");
    }
    Ok(Outcome::Done { resumed, moved: checkpoint.moved, keys: before.keys, after })
}
