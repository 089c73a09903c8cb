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
//! Run it while writers are paused (or replay their writes after): a key written to its old shard
//! after that shard was scanned stays there. Switch `CASCADE_REDIS_SHARDS` to the new list when it
//! reports success.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use cascade_shared::hashing::{shard_for, stable_hash64};
use cascade_shared::keys::{is_shard_local, is_volatile, shard_id_of};
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};

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

async fn connect(url: &str, tls: &RedisTls) -> anyhow::Result<MultiplexedConnection> {
    let fail = |e: redis::RedisError| anyhow::anyhow!("{}: {e}", redact(url));
    let client = tls.client(url).map_err(fail)?;
    // A copy of a full batch, or a SCAN on a loaded shard of a slow machine, can take longer
    // than the client's default 500 ms response timeout.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
    client.get_multiplexed_async_connection_with_config(&config).await.map_err(fail)
}

/// Attempts at moving one batch whose keys keep changing under it, before giving up.
const MOVE_ATTEMPTS: usize = 20;

/// Moves `keys` from `source` to `target` (see the module's step 2); returns how many existed.
async fn move_batch(
    source: &mut MultiplexedConnection,
    target: &mut MultiplexedConnection,
    keys: &[String],
) -> anyhow::Result<u64> {
    // Keys restored by an earlier attempt: if one has since been deleted at the source, its stale
    // copy must not stay on the target.
    let mut restored: HashSet<&str> = HashSet::new();
    for _ in 0..MOVE_ATTEMPTS {
        redis::cmd("WATCH").arg(keys).query_async::<()>(source).await?;
        let mut read = redis::pipe();
        for key in keys {
            read.cmd("DUMP").arg(key).cmd("PTTL").arg(key);
        }
        let values: Vec<(Option<Vec<u8>>, i64)> = read.query_async(source).await?;
        let mut write = redis::pipe();
        let mut present = Vec::new();
        for (key, (dump, pttl)) in keys.iter().zip(values) {
            match dump {
                Some(dump) => {
                    // PTTL -1: no expiry (RESTORE's 0); -2: gone since DUMP (skipped next time).
                    write.cmd("RESTORE").arg(key).arg(pttl.max(0)).arg(dump).arg("REPLACE").ignore();
                    present.push(key.as_str());
                }
                None if restored.contains(key.as_str()) => {
                    write.cmd("DEL").arg(key).ignore();
                }
                None => {}
            }
        }
        write.query_async::<()>(target).await?;
        restored.extend(present.iter().copied());
        if present.is_empty() {
            redis::cmd("UNWATCH").query_async::<()>(source).await?;
            return Ok(0);
        }
        // Aborted (nil) when a watched key changed since WATCH: copy the batch again.
        let deleted: Option<(u64,)> = redis::pipe().atomic().del(&present).query_async(source).await?;
        if deleted.is_some() {
            return Ok(present.len() as u64);
        }
    }
    anyhow::bail!(
        "{} keys changed during {MOVE_ATTEMPTS} attempts to move them; pause writers and run again",
        keys.len()
    )
}

/// Longest wait for one reply during a reshard.
const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

async fn scan(connection: &mut MultiplexedConnection, cursor: u64, batch: usize) -> anyhow::Result<(u64, Vec<String>)> {
    Ok(redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg("cascade:*")
        .arg("COUNT")
        .arg(batch)
        .query_async(connection)
        .await?)
}

/// Counts and checksums the keys on the servers `urls`, and checks each is, once, on the server
/// its id maps to in `placement`.
pub async fn census(urls: &[String], placement: &[String], batch: usize, tls: &RedisTls) -> anyhow::Result<Census> {
    let mut result = Census::default();
    let mut seen: HashSet<u64> = HashSet::new();
    for url in urls {
        let mut connection = connect(url, tls).await?;
        let mut cursor = 0;
        loop {
            let (next, keys) = scan(&mut connection, cursor, batch).await?;
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("DUMP").arg(key);
            }
            let dumps: Vec<Option<Vec<u8>>> =
                if keys.is_empty() { Vec::new() } else { pipe.query_async(&mut connection).await? };
            for (key, dump) in keys.iter().zip(dumps) {
                if is_shard_local(key) {
                    continue;
                }
                let Some(id) = shard_id_of(key) else {
                    result.foreign += 1;
                    result.foreign_example.get_or_insert_with(|| key.clone());
                    continue;
                };
                if is_volatile(key) {
                    result.volatile += 1;
                    continue;
                }
                // Gone between SCAN and DUMP: it was never there as far as the census goes.
                let Some(dump) = dump else { continue };
                let mut bytes = key.as_bytes().to_vec();
                bytes.push(0);
                bytes.extend_from_slice(&dump);
                result.keys += 1;
                result.checksum = result.checksum.wrapping_add(stable_hash64(&bytes));
                if placement[shard_for(id, placement.len() as u32) as usize] != *url {
                    result.misplaced += 1;
                }
                if !seen.insert(stable_hash64(key.as_bytes())) {
                    result.duplicates += 1;
                }
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    Ok(result)
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
                let moved = move_batch(&mut connection, &mut targets[target], &keys).await.map_err(|e| {
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
        after.keys == before.keys && after.checksum == before.checksum,
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
    eprintln!(
        "verified: {} keys, each on its shard exactly once, checksum {:016x} unchanged",
        after.keys, after.checksum
    );
    Ok(Outcome::Done { resumed, moved: checkpoint.moved, keys: before.keys, after })
}
