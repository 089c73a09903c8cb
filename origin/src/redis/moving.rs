//! Resharding while writers write: the origin's half of an online `cascade reshard`.
//!
//! While `[redis] previous_shards` names the placement being left (the `--from` list of a
//! running `cascade reshard --online`) and `shards` the new one, every process writes to the new
//! placement only, and a key is **moved on first access**: before a process reads or writes an
//! id's keys ([`super::ShardSet::ensure_moved`]), it copies them from the id's old shard to its
//! new one (`DUMP`, then `RESTORE` without `REPLACE`) and deletes the old copies. The reshard
//! command moves the rest the same way. Because nobody writes the old placement any more, and a
//! copy already at the new place is never overwritten ("the new place wins": it was moved, or
//! written after a move, by someone else), a key has one current value at all times and no
//! acknowledged write is lost, whichever of the command or a process moves it first. Embeddings
//! (written only by `cascade load`) are read with a fallback instead: an id missing at its new
//! shard is looked up at its old one.
//!
//! The procedure: roll out `previous_shards = <old list>` with `shards = <new list>` to every
//! origin, run `cascade reshard --from <old> --to <new> --online`, then roll out the
//! configuration without `previous_shards`. Each process remembers the key groups it has moved
//! (a bounded cache), so a user costs one extra round trip per process for the whole move.

/// The `RESTORE` of each present key, without `REPLACE`, with its remaining TTL (`PTTL` -1:
/// none, RESTORE's 0). Replies must be read with [`restored_or_there`].
pub fn restore_pipeline<'a>(entries: impl IntoIterator<Item = (&'a str, &'a [u8], i64)>) -> redis::Pipeline {
    let mut pipeline = redis::pipe();
    pipeline.ignore_errors();
    for (key, dump, pttl) in entries {
        pipeline.cmd("RESTORE").arg(key).arg(pttl.max(0)).arg(dump);
    }
    pipeline
}

/// Checks the replies of a [`restore_pipeline`]: each key was restored, or a copy was already at
/// the target (`BUSYKEY`: moved or written there first, and that copy wins). Any other error is
/// returned.
pub fn restored_or_there(replies: Vec<redis::RedisResult<()>>) -> Result<(), redis::RedisError> {
    for reply in replies {
        match reply {
            Ok(()) => {}
            Err(error) if error.code() == Some("BUSYKEY") => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// The `DUMP` and `PTTL` of each key, in order.
pub fn dump_pipeline(keys: &[String]) -> redis::Pipeline {
    let mut pipeline = redis::pipe();
    for key in keys {
        pipeline.cmd("DUMP").arg(key).cmd("PTTL").arg(key);
    }
    pipeline
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restores_keep_ttls_and_never_replace() {
        let pipeline = restore_pipeline([("k1", b"d1".as_slice(), 5000), ("k2", b"d2".as_slice(), -1)]);
        let packed = String::from_utf8_lossy(&pipeline.get_packed_pipeline()).to_string();
        assert!(packed.contains("RESTORE\r\n$2\r\nk1\r\n$4\r\n5000\r\n"), "{packed}");
        assert!(packed.contains("RESTORE\r\n$2\r\nk2\r\n$1\r\n0\r\n"), "{packed}");
        assert!(!packed.contains("REPLACE"), "{packed}");
    }
}
