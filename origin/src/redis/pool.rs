//! A small pool of lean connections per shard for the one hot call of the embedding store: `MGET`
//! of embedding values over plain RESP2, each value decoded straight into floats.
//!
//! Why not redis-rs here: `benches/store.rs` measured the redis-rs multiplexed client at 0.40 of
//! `redis-benchmark` on this machine, and our store (which decoded on top of it) at 0.30; pinned to
//! one core, the store ran exactly as fast as bare redis-rs, so the client library was the limit.
//! This path parses the reply in place ([`super::frame`]: no intermediate value tree, no per-value
//! byte vector, no channel hop to a driver task) over a small pool of [`Connection`]s, each owned
//! by one request at a time. Every other command goes through redis-rs ([`super::ShardSet`]).
//!
//! Only plain URLs (`redis://host:port[/db]`, no credentials, TLS or parameters) take this path;
//! the others keep the redis-rs one. A connection is returned to the pool only after a complete
//! reply, so a timeout or error (which drops the future mid-reply) can never leave a half-read
//! reply for the next user.

use std::sync::Mutex;

use cascade_shared::embedding::FormatError;

use super::connection::{Connection, RespError};
use super::url::RedisUrl;

/// Idle connections kept per shard.
const MAX_IDLE: usize = 16;

/// One decoded `MGET` element: `None` for a missing key.
pub type Element = Option<Result<Vec<f32>, FormatError>>;

/// Pooled plain connections to one Redis server.
pub struct MgetPool {
    address: String,
    db: i64,
    idle: Mutex<Vec<Connection>>,
}

impl MgetPool {
    /// A pool for `url`, or `None` when the URL needs what this reader does not do (TLS,
    /// credentials, parameters) or does not parse.
    pub fn for_url(url: &str) -> Option<Self> {
        let url = RedisUrl::parse(url).ok().filter(RedisUrl::is_plain)?;
        Some(MgetPool { address: url.address(), db: url.db, idle: Mutex::new(Vec::new()) })
    }

    /// `MGET keys`, each value decoded as `dim` floats (float32 or float16, by length).
    pub async fn mget(&self, keys: &[String], dim: usize) -> Result<Vec<Element>, RespError> {
        self.mget_prefixed("", keys.iter().map(String::as_str), keys.len(), dim).await
    }

    /// `MGET` of `prefix + id` for each of the `count` ids, written straight into the command
    /// buffer (no key strings are built).
    pub async fn mget_prefixed<'a>(
        &self,
        prefix: &str,
        ids: impl Iterator<Item = &'a str>,
        count: usize,
        dim: usize,
    ) -> Result<Vec<Element>, RespError> {
        use std::io::Write;
        let mut command = Vec::with_capacity(32 + count * (prefix.len() + 24));
        let _ = write!(command, "*{}\r\n$4\r\nMGET\r\n", count + 1);
        let mut written = 0;
        for id in ids {
            let _ = write!(command, "${}\r\n", prefix.len() + id.len());
            command.extend_from_slice(prefix.as_bytes());
            command.extend_from_slice(id.as_bytes());
            command.extend_from_slice(b"\r\n");
            written += 1;
        }
        if written != count {
            return Err(super::frame::FrameError(format!("{written} ids for a count of {count}")).into());
        }
        let pooled = self.idle.lock().map(|mut idle| idle.pop()).unwrap_or(None);
        let mut connection = match pooled {
            Some(connection) => connection,
            None => Connection::open(&self.address, self.db).await?,
        };
        connection.send(&command).await?;
        let elements = connection.read_mget_reply(count, dim).await?;
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(connection);
        }
        Ok(elements)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn urls_that_take_the_lean_path() {
        assert_eq!(
            MgetPool::for_url("redis://127.0.0.1:7000").map(|p| (p.address, p.db)),
            Some(("127.0.0.1:7000".into(), 0))
        );
        assert_eq!(MgetPool::for_url("redis://cache/3").map(|p| (p.address, p.db)), Some(("cache:6379".into(), 3)));
        assert!(MgetPool::for_url("rediss://cache:6380").is_none());
        assert!(MgetPool::for_url("redis://user:pw@cache:6379").is_none());
    }

    /// A fake server on loopback that answers one canned reply per connection.
    async fn serve(reply: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let _ = socket.write_all(reply).await;
            }
        });
        format!("redis://{address}")
    }

    #[tokio::test]
    async fn decodes_values_nils_and_refuses_errors() {
        let value: Vec<u8> = [1.0f32, -2.5].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(value.len(), 8);
        let url = serve(b"*3\r\n$8\r\n\x00\x00\x80\x3f\x00\x00\x20\xc0\r\n$-1\r\n$3\r\nabc\r\n").await;
        let pool = MgetPool::for_url(&url).unwrap_or_else(|| panic!("{url}"));
        let keys = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let got = pool.mget(&keys, 2).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got[0], Some(Ok(vec![1.0, -2.5])));
        assert_eq!(got[1], None);
        assert!(matches!(got[2], Some(Err(FormatError::ValueLength { len: 3, dim: 2 }))));

        let url = serve(b"-ERR wrong kind of value\r\n").await;
        let pool = MgetPool::for_url(&url).unwrap_or_else(|| panic!("{url}"));
        let error = pool.mget(&keys, 2).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("wrong kind"), "{error}");

        let url = serve(b"*2\r\n$8\r\nshort").await;
        let pool = MgetPool::for_url(&url).unwrap_or_else(|| panic!("{url}"));
        assert!(pool.mget(&keys[..2], 2).await.is_err(), "a cut reply is an error, not a value");
    }
}
