//! A connection to one Redis server (plain TCP or TLS, authenticated when the URL says so) that
//! owns its read buffer: the I/O half of the lean `MGET` reader (the parsing half is
//! [`super::frame`]).

use cascade_shared::embedding::decode_value_into;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frame::{self, FrameError};
use super::pool::MgetRows;
use super::tls::RedisTls;
use super::url::RedisUrl;

/// A byte stream to a server: TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// A connection failure or a reply that is not the one expected (the shard counts as unavailable).
#[derive(Debug, thiserror::Error)]
pub enum RespError {
    /// Connect, read or write failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server answered an error, or something that is not the expected reply.
    #[error("{0}")]
    Protocol(#[from] FrameError),
}

/// A connection and its read buffer: `buf[start..end]` holds bytes received and not yet parsed.
pub struct Connection {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Connection {
    /// Connects to the server of `url`: TLS for `rediss://`, then `AUTH` when the URL carries a
    /// password, then `SELECT` when its database is not 0.
    pub async fn open(url: &RedisUrl, tls: &RedisTls) -> Result<Self, RespError> {
        let tcp = TcpStream::connect(url.address()).await?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = if url.tls { Box::new(tls.wrap(&url.host, tcp).await?) } else { Box::new(tcp) };
        let mut connection = Connection { stream, buf: vec![0; 64 * 1024], start: 0, end: 0 };
        if let Some(auth) = url.auth_command() {
            // The reply names no secret: "-WRONGPASS invalid username-password pair…".
            connection.simple_command(&auth, "AUTH").await?;
        }
        if url.db != 0 {
            let db = url.db.to_string();
            let command = format!("*2\r\n$6\r\nSELECT\r\n${}\r\n{db}\r\n", db.len());
            connection.simple_command(command.as_bytes(), &format!("SELECT {db}")).await?;
        }
        Ok(connection)
    }

    /// Sends `command` and reads its one-line `+OK`-style reply; anything else is an error that
    /// starts with `what`.
    async fn simple_command(&mut self, command: &[u8], what: &str) -> Result<(), RespError> {
        self.stream.write_all(command).await?;
        loop {
            if let Some((line, used)) = frame::line(self.unparsed())? {
                if line.first() != Some(&b'+') {
                    let reply = String::from_utf8_lossy(line);
                    return Err(FrameError(format!("{what}: {reply}")).into());
                }
                self.start += used;
                return Ok(());
            }
            self.fill().await?;
        }
    }

    fn unparsed(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

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

    /// Sends a complete, already encoded command.
    pub async fn send(&mut self, command: &[u8]) -> Result<(), RespError> {
        Ok(self.stream.write_all(command).await?)
    }

    /// Reads an `MGET` reply of `expected` values into `rows` (reset to `expected` rows), each
    /// decoded as `rows.dim()` floats (float32 or float16, by length) straight from the read
    /// buffer as soon as its bytes are in it: no value is copied or allocated on its own.
    pub async fn read_mget_into(&mut self, expected: usize, rows: &mut MgetRows) -> Result<(), RespError> {
        loop {
            if let Some(used) = frame::array_header(self.unparsed(), expected)? {
                self.start += used;
                break;
            }
            self.fill().await?;
        }
        rows.reset(expected);
        let mut remaining = expected;
        let mut next = 0;
        loop {
            let used = frame::bulks(&self.buf[self.start..self.end], &mut remaining, |value| {
                let decoded = value.map(|bytes| decode_value_into(bytes, rows.row_mut(next)));
                rows.fill(next, decoded);
                next += 1;
            })?;
            self.start += used;
            if remaining == 0 {
                break;
            }
            self.fill().await?;
        }
        if self.start != self.end {
            return Err(FrameError("bytes after the MGET reply".into()).into());
        }
        Ok(())
    }
}
