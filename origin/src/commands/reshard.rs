//! `cascade reshard --from A,B,C,D --to A,B,C,D,E`: moves the keys whose shard changed, and only
//! those, then proves nothing was lost.
//!
//! 1. **Census** of every server in either list (once; kept in the checkpoint): how many
//!    `cascade:*` keys there are and an order-independent checksum (wrapping sum of `stable_hash64(key, DUMP(key))`).
//! 2. **Move**: each old server is walked with `SCAN`; a key whose id (`keys::shard_id_of`) now
//!    belongs to another server is moved there with `MIGRATE … REPLACE KEYS …` (server to server,
//!    TTL kept, the source copy deleted only once the target has it). After every batch the SCAN
//!    cursor goes to the checkpoint, so an interrupted run resumes where it stopped; and since a
//!    moved key no longer sits on its old server, re-running from scratch is also safe.
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
use crate::redis::url::RedisUrl;

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

/// `(host, port, db)` of a shard URL, as `MIGRATE` needs them.
fn host_port_db(url: &str) -> anyhow::Result<(String, u16, i64)> {
    let parsed = RedisUrl::parse(url)?;
    anyhow::ensure!(
        parsed.is_plain(),
        "{url}: reshard takes plain redis://host:port[/db] URLs (no TLS or credentials yet)"
    );
    Ok((parsed.host, parsed.port, parsed.db))
}

async fn connect(url: &str) -> anyhow::Result<MultiplexedConnection> {
    let client = redis::Client::open(url).map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
    // A MIGRATE of a full batch, or a SCAN on a loaded shard of a slow machine, can take longer
    // than the client's default 500 ms response timeout; MIGRATE carries its own timeout.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
    client.get_multiplexed_async_connection_with_config(&config).await.map_err(|e| anyhow::anyhow!("{url}: {e}"))
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
pub async fn census(urls: &[String], placement: &[String], batch: usize) -> anyhow::Result<Census> {
    let mut result = Census::default();
    let mut seen: HashSet<u64> = HashSet::new();
    for url in urls {
        let mut connection = connect(url).await?;
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
    let targets: Vec<(String, u16, i64)> = args.to.iter().map(|u| host_port_db(u)).collect::<Result<_, _>>()?;
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
            let before = census(&servers, &args.from, args.batch).await?;
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
        let mut connection = connect(url).await?;
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
                let (host, port, db) = &targets[target];
                let moved = keys.len() as u64;
                let reply: String = redis::cmd("MIGRATE")
                    .arg(host)
                    .arg(*port)
                    .arg("")
                    .arg(*db)
                    .arg(60_000)
                    .arg("REPLACE")
                    .arg("KEYS")
                    .arg(&keys)
                    .query_async(&mut connection)
                    .await
                    .map_err(|e| anyhow::anyhow!("MIGRATE {url} → {}: {e}", args.to[target]))?;
                // NOKEY: every key vanished in between (moved by an earlier, interrupted run).
                anyhow::ensure!(reply == "OK" || reply == "NOKEY", "MIGRATE {url} → {}: {reply}", args.to[target]);
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
    let after = census(&servers, &args.to, args.batch).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_urls() {
        assert_eq!(host_port_db("redis://127.0.0.1:7001").unwrap(), ("127.0.0.1".into(), 7001, 0));
        assert_eq!(host_port_db("redis://cache-3:6380/2").unwrap(), ("cache-3".into(), 6380, 2));
        assert!(host_port_db("rediss://x:1").is_err());
        assert!(host_port_db("redis://user:pw@x:1").is_err());
    }
}
