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
//! `redis://` and `rediss://` URLs with or without credentials take this path (TLS and `AUTH` at
//! connect, [`super::tls`]); URLs with `?` parameters keep the redis-rs one. A connection is returned to the pool only after a complete
//! reply, so a timeout or error (which drops the future mid-reply) can never leave a half-read
//! reply for the next user.
//!
//! A shard that is slow or down must not get a reconnect storm: at most [`MAX_OPEN`] connections
//! are open per shard (a request beyond waits for one, within its caller's timeout), connects run
//! one at a time, and after a failed connect no new one is tried for [`CONNECT_BACKOFF`] (requests meanwhile fail at once,
//! and the store answers "unavailable" as it would after the timeout, only sooner).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cascade_shared::embedding::FormatError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::connection::{Connection, RespError};
use super::frame::FrameError;
use super::tls::RedisTls;
use super::url::RedisUrl;

/// Idle connections kept per shard.
const MAX_IDLE: usize = 16;
/// Connections open per shard at once, idle or in use.
pub const MAX_OPEN: usize = 64;
/// After a failed connect, how long requests fail at once instead of connecting again.
pub const CONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// A connection and its slot among the [`MAX_OPEN`]. Dropped before a complete reply (the
/// caller's timeout fired mid-request), it counts as a failure: the shard is slow, and opening a
/// fresh connection for every timed-out request is exactly the storm to avoid.
struct Pooled {
    connection: Connection,
    _slot: OwnedSemaphorePermit,
    failed_at: Arc<Mutex<Option<Instant>>>,
    complete: bool,
    /// Taken from the idle list (it may have been closed by a server that restarted since).
    reused: bool,
}

impl Pooled {
    /// One command and its `MGET` reply, decoded into `rows`.
    async fn exchange(&mut self, command: &[u8], count: usize, rows: &mut MgetRows) -> Result<(), RespError> {
        self.connection.send(command).await?;
        self.connection.read_mget_into(count, rows).await?;
        self.complete = true;
        Ok(())
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if !self.complete {
            *self.failed_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
        }
    }
}

/// What an `MGET` found for one key.
#[derive(Debug, Clone, PartialEq)]
pub enum Fill {
    /// A value, decoded into the key's row.
    Value,
    /// No such key.
    Nil,
    /// A value that is not `dim` floats (the row is left as it was).
    Bad(FormatError),
}

/// An `MGET` reply decoded into one buffer the caller keeps between calls: row `i` (`dim` floats)
/// is key `i`'s value when its fill is [`Fill::Value`]. Decoding a batch allocates nothing once
/// the buffer has grown to the batch's size (the store bench measured a vector per value, and its
/// free, as the largest client-side cost).
#[derive(Debug, Default)]
pub struct MgetRows {
    dim: usize,
    values: Vec<f32>,
    fills: Vec<Fill>,
}

impl MgetRows {
    /// An empty buffer for rows of `dim` floats.
    pub fn new(dim: usize) -> Self {
        MgetRows { dim, values: Vec::new(), fills: Vec::new() }
    }

    /// Floats per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Rows of the last reply.
    pub fn len(&self) -> usize {
        self.fills.len()
    }

    /// Whether the last reply had no rows.
    pub fn is_empty(&self) -> bool {
        self.fills.is_empty()
    }

    /// Makes room for `count` rows, all [`Fill::Nil`], keeping the allocation.
    pub fn reset(&mut self, count: usize) {
        self.fills.clear();
        self.fills.resize(count, Fill::Nil);
        self.values.resize(count * self.dim, 0.0);
    }

    /// Row `index`'s floats (meaningful when its fill is [`Fill::Value`]).
    pub fn row(&self, index: usize) -> &[f32] {
        &self.values[index * self.dim..(index + 1) * self.dim]
    }

    /// Row `index`'s floats, to decode into.
    pub fn row_mut(&mut self, index: usize) -> &mut [f32] {
        &mut self.values[index * self.dim..(index + 1) * self.dim]
    }

    /// What key `index` held.
    pub fn fill_of(&self, index: usize) -> &Fill {
        &self.fills[index]
    }

    /// Records what key `index` held: nothing, or the outcome of decoding its value.
    pub fn fill(&mut self, index: usize, decoded: Option<Result<(), FormatError>>) {
        self.fills[index] = match decoded {
            None => Fill::Nil,
            Some(Ok(())) => Fill::Value,
            Some(Err(error)) => Fill::Bad(error),
        };
    }
}

/// Pooled plain connections to one Redis server.
pub struct MgetPool {
    url: RedisUrl,
    tls: RedisTls,
    idle: Mutex<Vec<Pooled>>,
    slots: Arc<Semaphore>,
    /// When the last connect failed, or a request was abandoned mid-reply.
    failed_at: Arc<Mutex<Option<Instant>>>,
    /// Held while connecting: one connect at a time per shard.
    connecting: tokio::sync::Mutex<()>,
    /// Connects tried (for tests and the fault suite's figures).
    connects: AtomicU64,
}

impl MgetPool {
    /// A pool for `url` (TLS with `tls`), or `None` when the URL has parameters this reader does
    /// not interpret, or does not parse.
    pub fn for_url(url: &str, tls: &RedisTls) -> Option<Self> {
        let url = RedisUrl::parse(url).ok().filter(|url| !url.has_params)?;
        Some(MgetPool {
            url,
            tls: tls.clone(),
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(MAX_OPEN)),
            failed_at: Arc::new(Mutex::new(None)),
            connecting: tokio::sync::Mutex::new(()),
            connects: AtomicU64::new(0),
        })
    }

    /// Connects tried so far.
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// An idle connection, or a new one within the cap and outside the backoff.
    async fn checkout(&self) -> Result<Pooled, RespError> {
        if let Some(mut pooled) = self.idle.lock().map(|mut idle| idle.pop()).unwrap_or(None) {
            (pooled.complete, pooled.reused) = (false, true);
            return Ok(pooled);
        }
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| RespError::Protocol(FrameError("pool closed".into())))?;
        // One connect at a time: a shard that refuses sees one attempt per backoff, not one per
        // waiting request.
        let _connecting = self.connecting.lock().await;
        // Another request may have returned a connection while this one waited.
        if let Some(mut pooled) = self.idle.lock().map(|mut idle| idle.pop()).unwrap_or(None) {
            (pooled.complete, pooled.reused) = (false, true);
            return Ok(pooled);
        }
        {
            let failed_at = self.failed_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(at) = *failed_at
                && at.elapsed() < CONNECT_BACKOFF
            {
                return Err(RespError::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "the last connect failed moments ago; backing off",
                )));
            }
        }
        self.connects.fetch_add(1, Ordering::Relaxed);
        match Connection::open(&self.url, &self.tls).await {
            Ok(connection) => {
                let failed_at = Arc::clone(&self.failed_at);
                Ok(Pooled { connection, _slot: slot, failed_at, complete: false, reused: false })
            }
            Err(error) => {
                *self.failed_at.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
                Err(error)
            }
        }
    }

    /// `MGET keys`, each value decoded as `dim` floats (float32 or float16, by length).
    pub async fn mget(&self, keys: &[String], dim: usize) -> Result<MgetRows, RespError> {
        let mut rows = MgetRows::new(dim);
        self.mget_prefixed_into("", keys.iter().map(String::as_str), keys.len(), &mut rows).await?;
        Ok(rows)
    }

    /// `MGET` of `prefix + id` for each of the `count` ids, written straight into the command
    /// buffer (no key strings are built), the values decoded into `rows`.
    pub async fn mget_prefixed_into<'a>(
        &self,
        prefix: &str,
        ids: impl Iterator<Item = &'a str>,
        count: usize,
        rows: &mut MgetRows,
    ) -> Result<(), RespError> {
        let command = mget_command(prefix, ids, count)?;
        let mut pooled = self.checkout().await?;
        match pooled.exchange(&command, count, rows).await {
            Ok(()) => {}
            Err(RespError::Io(error)) if pooled.reused => {
                // A kept connection the server closed (it restarted, or dropped idle clients):
                // the others kept with it are as stale. Forget them all and try once on a fresh
                // connection; that the server is really down shows there.
                tracing::debug!(%error, address = %self.url.address(), "stale pooled connection; reconnecting");
                pooled.complete = true; // not a slow shard: no backoff
                drop(pooled);
                if let Ok(mut idle) = self.idle.lock() {
                    idle.clear();
                }
                pooled = self.checkout().await?;
                pooled.exchange(&command, count, rows).await?;
            }
            Err(error) => return Err(error),
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(pooled);
        }
        Ok(())
    }
}

/// The RESP encoding of `MGET prefix+id …` for `count` ids (lengths written with `itoa`, not
/// `fmt`: it showed in the store bench's profile).
fn mget_command<'a>(prefix: &str, ids: impl Iterator<Item = &'a str>, count: usize) -> Result<Vec<u8>, RespError> {
    let mut digits = itoa::Buffer::new();
    let mut command = Vec::with_capacity(32 + count * (prefix.len() + 24));
    command.push(b'*');
    command.extend_from_slice(digits.format(count + 1).as_bytes());
    command.extend_from_slice(b"\r\n$4\r\nMGET\r\n");
    let mut written = 0;
    for id in ids {
        command.push(b'$');
        command.extend_from_slice(digits.format(prefix.len() + id.len()).as_bytes());
        command.extend_from_slice(b"\r\n");
        command.extend_from_slice(prefix.as_bytes());
        command.extend_from_slice(id.as_bytes());
        command.extend_from_slice(b"\r\n");
        written += 1;
    }
    if written != count {
        return Err(FrameError(format!("{written} ids for a count of {count}")).into());
    }
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn urls_that_take_the_lean_path() {
        let lean = |url: &str| MgetPool::for_url(url, &RedisTls::default()).map(|p| (p.url.address(), p.url.db));
        assert_eq!(lean("redis://127.0.0.1:7000"), Some(("127.0.0.1:7000".into(), 0)));
        assert_eq!(lean("redis://cache/3"), Some(("cache:6379".into(), 3)));
        assert_eq!(lean("rediss://cache:6380"), Some(("cache:6380".into(), 0)));
        assert_eq!(lean("redis://user:pw@cache:6379"), Some(("cache:6379".into(), 0)));
        assert_eq!(lean("redis://cache:6379?protocol=resp3"), None);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_or_stalled_shard_gets_no_connection_storm() {
        // Down: nothing listens. 200 concurrent lookups try one connect, not 200.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = closed.local_addr().map(|a| a.port()).unwrap_or_default();
        drop(closed);
        let pool = Arc::new(
            MgetPool::for_url(&format!("redis://127.0.0.1:{port}"), &RedisTls::default()).unwrap_or_else(|| panic!()),
        );
        let keys = Arc::new(vec!["a".to_string()]);
        let lookups: Vec<_> = (0..200)
            .map(|_| {
                let (pool, keys) = (Arc::clone(&pool), Arc::clone(&keys));
                tokio::spawn(async move { pool.mget(&keys, 2).await.is_err() })
            })
            .collect();
        for lookup in lookups {
            assert!(lookup.await.unwrap_or(false), "a lookup on a dead shard fails");
        }
        assert!(pool.connects() <= 5, "{} connects for 200 lookups", pool.connects());

        // Stalled: accepts and never answers. 200 lookups that give up after 100 ms open at most
        // MAX_OPEN connections.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        });
        let pool = Arc::new(
            MgetPool::for_url(&format!("redis://{address}"), &RedisTls::default()).unwrap_or_else(|| panic!()),
        );
        let lookups: Vec<_> = (0..200)
            .map(|_| {
                let (pool, keys) = (Arc::clone(&pool), Arc::clone(&keys));
                tokio::spawn(async move {
                    let answer = tokio::time::timeout(Duration::from_millis(100), pool.mget(&keys, 2)).await;
                    !matches!(answer, Ok(Ok(_)))
                })
            })
            .collect();
        for lookup in lookups {
            assert!(lookup.await.unwrap_or(false), "a lookup on a stalled shard times out or backs off");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let opened = accepted.load(Ordering::SeqCst);
        // At most MAX_OPEN at once; and once requests start timing out, no fresh connection per
        // timed-out request (an abandoned request backs the pool off like a failed connect).
        assert!(opened as usize <= MAX_OPEN + 8, "{opened} connections to a stalled shard");
    }

    #[tokio::test]
    async fn decodes_values_nils_and_refuses_errors() {
        let value: Vec<u8> = [1.0f32, -2.5].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(value.len(), 8);
        let url = serve(b"*3\r\n$8\r\n\x00\x00\x80\x3f\x00\x00\x20\xc0\r\n$-1\r\n$3\r\nabc\r\n").await;
        let pool = MgetPool::for_url(&url, &RedisTls::default()).unwrap_or_else(|| panic!("{url}"));
        let keys = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let got = pool.mget(&keys, 2).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((got.len(), got.fill_of(0), got.row(0)), (3, &Fill::Value, &[1.0, -2.5][..]));
        assert_eq!(got.fill_of(1), &Fill::Nil);
        assert_eq!(got.fill_of(2), &Fill::Bad(FormatError::ValueLength { len: 3, dim: 2 }));

        let url = serve(b"-ERR wrong kind of value\r\n").await;
        let pool = MgetPool::for_url(&url, &RedisTls::default()).unwrap_or_else(|| panic!("{url}"));
        let error = pool.mget(&keys, 2).await.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("wrong kind"), "{error}");

        let url = serve(b"*2\r\n$8\r\nshort").await;
        let pool = MgetPool::for_url(&url, &RedisTls::default()).unwrap_or_else(|| panic!("{url}"));
        assert!(pool.mget(&keys[..2], 2).await.is_err(), "a cut reply is an error, not a value");
    }
}
