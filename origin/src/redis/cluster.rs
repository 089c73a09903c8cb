//! Redis Cluster plumbing shared by the embedding store (`store::redis_cluster`) and the
//! [`super::ShardSet`] that keeps user state, L2, precomputed lists and the catalogue in a cluster:
//! the client (bounded timeouts, no silent retries, TLS) and the key → slot function.
//!
//! Cascade's keys of one user share the hash tag `{user_id}` (`cascade_shared::keys`), so every
//! transaction Cascade sends touches one slot. A plain pipeline that spans users (precompute's
//! writes) is split here by slot, since the cluster client sends a pipeline to one node only.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::cluster::ClusterClient;

use super::tls::RedisTls;

/// A cluster client through the seed `nodes`: each call bounded by `timeout`, no retries (the
/// caller's fallback is the retry), `rediss://` seeds with `tls`.
pub fn client(nodes: &[String], timeout: Duration, tls: &RedisTls) -> redis::RedisResult<ClusterClient> {
    let mut builder = ClusterClient::builder(nodes.to_vec());
    if let Some(certificates) = tls.certificates() {
        builder = builder.certs(certificates);
    }
    builder
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .overall_response_timeout(Some(timeout))
        .retries(0)
        .max_connection_attempts(std::num::NonZeroUsize::MIN)
        .build()
}

/// The cluster hash slot of `key`: CRC16 (XMODEM) of the key, or of its `{hash tag}`, mod 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter().position(|&b| b == b'}').filter(|&close| close > 0).map(|close| &rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &byte in tagged {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16_384
}

/// The slot of a command's first key (its first argument after the name), if it has one.
fn command_slot(command: &redis::Cmd) -> Option<u16> {
    match command.args_iter().nth(1)? {
        redis::Arg::Simple(key) => Some(key_slot(key)),
        _ => None,
    }
}

/// `pipeline` as one pipeline per slot its commands touch (each command's replies ignored), in
/// the original order within a slot; `None` when it touches at most one slot (send it whole).
pub fn split_by_slot(pipeline: &redis::Pipeline) -> Option<Vec<redis::Pipeline>> {
    let mut by_slot: BTreeMap<Option<u16>, redis::Pipeline> = BTreeMap::new();
    for command in pipeline.cmd_iter() {
        by_slot.entry(command_slot(command)).or_default().add_command(command.clone()).ignore();
    }
    (by_slot.len() > 1).then(|| by_slot.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // CRC16/XMODEM("123456789") = 0x31C3; Redis's own examples for the rest.
        assert_eq!(key_slot(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12_182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"{user1000}.followers"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"), "an empty tag hashes the whole key");
    }

    #[test]
    fn pipelines_split_by_slot_and_keep_each_slots_order() {
        let mut one_user = redis::pipe();
        one_user.cmd("SADD").arg("cascade:bought:{u1}").arg("i1").cmd("INCR").arg("cascade:gen:{u1}");
        assert!(split_by_slot(&one_user).is_none(), "one user's keys share a slot");
        let mut many = redis::pipe();
        for user in ["u1", "u2", "u1", "u3"] {
            many.cmd("SET").arg(format!("cascade:recs:b:{{{user}}}")).arg(user);
        }
        let parts = split_by_slot(&many).unwrap();
        assert_eq!(parts.len(), 3);
        let commands: usize = parts.iter().map(redis::Pipeline::len).sum();
        assert_eq!(commands, 4);
        let u1 = parts.iter().find(|p| p.len() == 2).unwrap();
        for command in u1.cmd_iter() {
            let key = command.args_iter().nth(1);
            assert!(matches!(key, Some(redis::Arg::Simple(k)) if k == b"cascade:recs:b:{u1}"));
        }
    }
}
