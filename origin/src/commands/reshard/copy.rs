//! The I/O of `cascade reshard`: connections, the census of a server list, and the move of one
//! batch of keys from one server to another (step 1 and 2 of the parent module's description).

use std::collections::HashSet;

use cascade_shared::hashing::{shard_for, stable_hash64};
use cascade_shared::keys::{MARKERS_KEY, is_shard_local, is_volatile, shard_id_of};
use redis::aio::MultiplexedConnection;

use super::Census;
use crate::redis::moving::{dump_pipeline, restore_pipeline, restored_or_there};
use crate::redis::tls::RedisTls;
use crate::redis::url::redact;

pub(super) async fn connect(url: &str, tls: &RedisTls) -> anyhow::Result<MultiplexedConnection> {
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
pub(super) async fn move_batch(
    source: &mut MultiplexedConnection,
    target: &mut MultiplexedConnection,
    keys: &[String],
    online: bool,
) -> anyhow::Result<u64> {
    // Offline, the source is the truth: a copy restored by an earlier attempt is replaced, or
    // deleted if the source key has since gone. Online, writers write the target, so a copy
    // there is newer and wins (`redis::moving`).
    let mut restored: HashSet<&str> = HashSet::new();
    for _ in 0..MOVE_ATTEMPTS {
        redis::cmd("WATCH").arg(keys).query_async::<()>(source).await?;
        let values: Vec<(Option<Vec<u8>>, i64)> = dump_pipeline(keys).query_async(source).await?;
        let present: Vec<(&str, &[u8], i64)> = keys
            .iter()
            .zip(&values)
            .filter_map(|(key, (dump, pttl))| dump.as_deref().map(|dump| (key.as_str(), dump, *pttl)))
            .collect();
        let names: Vec<&str> = present.iter().map(|(key, _, _)| *key).collect();
        if online {
            let replies: Vec<redis::RedisResult<()>> = restore_pipeline(present).query_async(target).await?;
            restored_or_there(replies)?;
        } else {
            let mut write = redis::pipe();
            for (key, dump, pttl) in present {
                // PTTL -1: no expiry (RESTORE's 0); -2: gone since DUMP (skipped next time).
                write.cmd("RESTORE").arg(key).arg(pttl.max(0)).arg(dump).arg("REPLACE").ignore();
            }
            for gone in keys.iter().filter(|k| restored.contains(k.as_str()) && !names.contains(&k.as_str())) {
                write.cmd("DEL").arg(gone).ignore();
            }
            write.query_async::<()>(target).await?;
            restored.extend(names.iter().copied());
        }
        if names.is_empty() {
            redis::cmd("UNWATCH").query_async::<()>(source).await?;
            return Ok(0);
        }
        // Aborted (nil) when a watched key changed since WATCH (offline: written; online: moved
        // by an origin): copy the batch again.
        let deleted: Option<(u64,)> = redis::pipe().atomic().del(&names).query_async(source).await?;
        if deleted.is_some() {
            return Ok(names.len() as u64);
        }
    }
    anyhow::bail!(
        "{} keys changed during {MOVE_ATTEMPTS} attempts to move them; pause writers (or use --online with origins in moving mode) and run again",
        keys.len()
    )
}

/// Gives each server of `to` that is not in `from` the shard marks (`cascade:markers`: which
/// bundles were loaded) the old servers hold, so that the origin's health check does not take it
/// for a shard that lost its data. Returns how many marks were written.
pub(super) async fn copy_marks(from: &[String], to: &[String], tls: &RedisTls) -> anyhow::Result<usize> {
    let mut marks: std::collections::BTreeMap<String, String> = Default::default();
    for url in from {
        let held: std::collections::HashMap<String, String> =
            redis::cmd("HGETALL").arg(MARKERS_KEY).query_async(&mut connect(url, tls).await?).await?;
        for (bundle, mark) in held {
            marks.entry(bundle).or_insert(mark);
        }
    }
    let mut written = 0;
    for url in to.iter().filter(|url| !from.contains(url)) {
        let mut connection = connect(url, tls).await?;
        for (bundle, mark) in &marks {
            let added: i64 =
                redis::cmd("HSETNX").arg(MARKERS_KEY).arg(bundle).arg(mark).query_async(&mut connection).await?;
            written += added as usize;
        }
    }
    Ok(written)
}

/// Longest wait for one reply during a reshard.
const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub(super) async fn scan(
    connection: &mut MultiplexedConnection,
    cursor: u64,
    batch: usize,
) -> anyhow::Result<(u64, Vec<String>)> {
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
