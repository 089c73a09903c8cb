//! A lean reader for the one hot call of the embedding store: `MGET` of embedding values over
//! plain RESP2, with each bulk string decoded straight into floats.
//!
//! Why not redis-rs here: `benches/store.rs` measured the redis-rs multiplexed client at 0.40 of
//! `redis-benchmark` on this machine, and our store (which decoded on top of it) at 0.30; pinned to
//! one core, the store ran exactly as fast as bare redis-rs, so the client library was the limit.
//! This path parses the reply in place (no intermediate value tree, no per-value byte vector, no
//! channel hop to a driver task) over a small pool of connections, each owned by one request at a
//! time. Every other command still goes through redis-rs ([`super::shards::ShardSet`]).
//!
//! Only `redis://host:port[/db]` URLs without credentials or TLS take this path; the others keep
//! the redis-rs one. A connection is returned to the pool only after a complete reply, so a timeout
//! or error (which drops the future mid-reply) can never leave a half-read reply for the next user.

use std::sync::Mutex;

use cascade_shared::embedding::{FormatError, decode_value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Idle connections kept per shard.
const MAX_IDLE: usize = 16;

/// One decoded `MGET` element: `None` for a missing key.
pub type Element = Option<Result<Vec<f32>, FormatError>>;

/// A failure of the connection or the server (the shard counts as unavailable).
#[derive(Debug, thiserror::Error)]
pub enum RespError {
    /// Connect, read or write failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server answered an error, or something that is not an MGET reply.
    #[error("{0}")]
    Protocol(String),
}

struct Connection {
    stream: TcpStream,
    /// Read buffer: `buf[start..end]` holds bytes received and not yet parsed.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Connection {
    /// Reads more bytes from the socket, making room first.
    async fn fill(&mut self) -> Result<(), RespError> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.start > 0 && self.buf.len() - self.end < 16 * 1024 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.buf.len() {
            // One element larger than the buffer.
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let read = self.stream.read(&mut self.buf[self.end..]).await?;
        if read == 0 {
            return Err(RespError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        self.end += read;
        Ok(())
    }
}

/// Pooled plain connections to one Redis server.
pub struct MgetPool {
    address: String,
    db: i64,
    idle: Mutex<Vec<Connection>>,
}

impl MgetPool {
    /// A pool for `url`, or `None` when the URL needs what this reader does not do (TLS,
    /// credentials, a socket path).
    pub fn for_url(url: &str) -> Option<Self> {
        let rest = url.strip_prefix("redis://")?;
        if rest.contains('@') || rest.contains('?') {
            return None;
        }
        let (address, db) = rest.split_once('/').unwrap_or((rest, ""));
        let db = if db.is_empty() { 0 } else { db.parse().ok()? };
        let address = if address.contains(':') { address.to_string() } else { format!("{address}:6379") };
        Some(MgetPool { address, db, idle: Mutex::new(Vec::new()) })
    }

    async fn connect(&self) -> Result<Connection, RespError> {
        let stream = TcpStream::connect(&self.address).await?;
        stream.set_nodelay(true)?;
        let mut connection = Connection { stream, buf: vec![0; 64 * 1024], start: 0, end: 0 };
        if self.db != 0 {
            let db = self.db.to_string();
            let command = format!("*2\r\n$6\r\nSELECT\r\n${}\r\n{db}\r\n", db.len());
            connection.stream.write_all(command.as_bytes()).await?;
            loop {
                if let Some((line, used)) = line(&connection.buf[connection.start..connection.end])? {
                    if line.first() != Some(&b'+') {
                        return Err(RespError::Protocol(format!("SELECT {db}: {}", String::from_utf8_lossy(line))));
                    }
                    connection.start += used;
                    break;
                }
                connection.fill().await?;
            }
        }
        Ok(connection)
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
            return Err(RespError::Protocol(format!("{written} ids for a count of {count}")));
        }
        let pooled = self.idle.lock().map(|mut idle| idle.pop()).unwrap_or(None);
        let mut connection = match pooled {
            Some(connection) => connection,
            None => self.connect().await?,
        };
        connection.stream.write_all(&command).await?;
        let elements = read_mget_reply(&mut connection, count, dim).await?;
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(connection);
        }
        Ok(elements)
    }
}

/// The first CRLF-terminated line of `data` (without the CRLF) and the bytes it took, or `None`
/// when `data` holds no complete line yet.
fn line(data: &[u8]) -> Result<Option<(&[u8], usize)>, RespError> {
    let Some(newline) = data.iter().position(|&b| b == b'\n') else { return Ok(None) };
    if newline == 0 || data[newline - 1] != b'\r' {
        return Err(RespError::Protocol("reply line without CRLF".into()));
    }
    Ok(Some((&data[..newline - 1], newline + 1)))
}

fn number(line: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(line.get(1..).unwrap_or_default())
        .ok()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| RespError::Protocol(format!("bad length in {:?}", String::from_utf8_lossy(line))))
}

/// Parses as many complete bulk strings from `data` as it holds (at most `*remaining`), decoding
/// each into `out`; returns the bytes used. Everything is parsed from the buffer in one pass, with
/// no await per element.
fn elements(data: &[u8], remaining: &mut usize, dim: usize, out: &mut Vec<Element>) -> Result<usize, RespError> {
    let mut used = 0;
    while *remaining > 0 {
        let Some((header, header_len)) = line(&data[used..])? else { break };
        if header.first() != Some(&b'$') {
            return Err(RespError::Protocol(format!(
                "expected a bulk string, got {:?}",
                String::from_utf8_lossy(header)
            )));
        }
        let len = number(header)?;
        if len < 0 {
            out.push(None);
        } else {
            let len = len as usize;
            let body = used + header_len;
            if data.len() < body + len + 2 {
                break; // the value has not fully arrived
            }
            if &data[body + len..body + len + 2] != b"\r\n" {
                return Err(RespError::Protocol("bulk string without CRLF".into()));
            }
            out.push(Some(decode_value(&data[body..body + len], dim)));
            used += len + 2;
        }
        used += header_len;
        *remaining -= 1;
    }
    Ok(used)
}

async fn read_mget_reply(connection: &mut Connection, expected: usize, dim: usize) -> Result<Vec<Element>, RespError> {
    loop {
        if let Some((header, used)) = line(&connection.buf[connection.start..connection.end])? {
            match header.first() {
                Some(b'*') if number(header)? == expected as i64 => {}
                Some(b'-') => return Err(RespError::Protocol(String::from_utf8_lossy(&header[1..]).into_owned())),
                _ => {
                    return Err(RespError::Protocol(format!(
                        "expected an array of {expected}, got {:?}",
                        String::from_utf8_lossy(header)
                    )));
                }
            }
            connection.start += used;
            break;
        }
        connection.fill().await?;
    }
    let mut out = Vec::with_capacity(expected);
    let mut remaining = expected;
    loop {
        let used = elements(&connection.buf[connection.start..connection.end], &mut remaining, dim, &mut out)?;
        connection.start += used;
        if remaining == 0 {
            break;
        }
        connection.fill().await?;
    }
    if connection.start != connection.end {
        return Err(RespError::Protocol("bytes after the MGET reply".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn elements_parse_only_what_has_fully_arrived() {
        let full = b"$8\r\n\x00\x00\x80\x3f\x00\x00\x20\xc0\r\n$-1\r\n";
        for cut in 0..full.len() {
            let (mut remaining, mut out) = (2, Vec::new());
            let used = elements(&full[..cut], &mut remaining, 2, &mut out).unwrap_or_else(|e| panic!("{e}"));
            let (mut rest_remaining, mut rest) = (remaining, Vec::new());
            let more = elements(&full[used..], &mut rest_remaining, 2, &mut rest).unwrap_or_else(|e| panic!("{e}"));
            out.extend(rest);
            assert_eq!((used + more, rest_remaining), (full.len(), 0), "cut at {cut}");
            assert_eq!(out, vec![Some(Ok(vec![1.0, -2.5])), None], "cut at {cut}");
        }
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
