//! The one parser of `redis://` and `rediss://` URLs: every component that needs a host, a port or a
//! database number from a shard URL asks here (the lean MGET pool, `cascade reshard`, config
//! validation), so they cannot disagree about what a URL means.

/// A parsed Redis URL: `redis[s]://[user[:password]@]host[:port][/db][?params]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (6379 when absent).
    pub port: u16,
    /// Database number (0 when absent).
    pub db: i64,
    /// Whether the URL carries a user or password.
    pub has_credentials: bool,
    /// `rediss://` (TLS).
    pub tls: bool,
    /// Whether the URL has `?` parameters.
    pub has_params: bool,
}

/// A URL that is not a Redis URL; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url:?} is not a redis:// URL: {reason}")]
pub struct UrlError {
    /// The URL, with any password replaced by `***`.
    pub url: String,
    /// What is wrong.
    pub reason: String,
}

impl RedisUrl {
    /// Parses `url`.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let fail = |reason: &str| UrlError { url: redact(url), reason: reason.to_string() };
        let (tls, rest) = match (url.strip_prefix("redis://"), url.strip_prefix("rediss://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err(fail("must start with redis:// or rediss://")),
        };
        let (rest, has_params) = match rest.split_once('?') {
            Some((rest, _params)) => (rest, true),
            None => (rest, false),
        };
        let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
        let (has_credentials, host_port) = match authority.rsplit_once('@') {
            Some((_credentials, host_port)) => (true, host_port),
            None => (false, authority),
        };
        let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(|| fail("unclosed [ in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match host_port.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (host_port, None),
            }
        };
        if host.is_empty() {
            return Err(fail("no host"));
        }
        let port = match port {
            None => 6379,
            Some(port) => {
                port.parse().ok().filter(|&p| p > 0).ok_or_else(|| fail("port is not a number in 1..=65535"))?
            }
        };
        let db = match db {
            "" => 0,
            db => db.parse().ok().filter(|&d| d >= 0).ok_or_else(|| fail("database is not a non-negative number"))?,
        };
        Ok(RedisUrl { host: host.to_string(), port, db, has_credentials, tls, has_params })
    }

    /// `host:port`, as `TcpStream::connect` takes it (IPv6 in brackets).
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Whether a plain TCP connection with no handshake can serve this URL: no TLS, no
    /// credentials, no parameters.
    pub fn is_plain(&self) -> bool {
        !self.tls && !self.has_credentials && !self.has_params
    }
}

/// `url` with the password (everything between `://` and `@`) replaced by `***`, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => format!("{}***{}", &url[..scheme_end + 3], &url[at..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_ports_and_databases() {
        let url = RedisUrl::parse("redis://127.0.0.1:7001").unwrap();
        assert_eq!((url.address(), url.db, url.is_plain()), ("127.0.0.1:7001".into(), 0, true));
        let url = RedisUrl::parse("redis://cache-3:6380/2").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.db), ("cache-3", 6380, 2));
        assert_eq!(RedisUrl::parse("redis://cache/3").unwrap().address(), "cache:6379");
        assert_eq!(RedisUrl::parse("redis://[::1]:7000").unwrap().address(), "[::1]:7000");
    }

    #[test]
    fn what_needs_more_than_a_plain_connection() {
        assert!(!RedisUrl::parse("rediss://cache:6380").unwrap().is_plain());
        assert!(!RedisUrl::parse("redis://user:pw@cache:6379").unwrap().is_plain());
        assert!(!RedisUrl::parse("redis://cache:6379?protocol=resp3").unwrap().is_plain());
    }

    #[test]
    fn refusals_name_the_problem_and_hide_passwords() {
        assert!(RedisUrl::parse("localhost:6379").unwrap_err().reason.contains("redis://"));
        assert!(RedisUrl::parse("redis://:6379").is_err());
        assert!(RedisUrl::parse("redis://host:0").is_err());
        assert!(RedisUrl::parse("redis://host:port").is_err());
        assert!(RedisUrl::parse("redis://host/x").is_err());
        let error = RedisUrl::parse("redis://user:hunter2@host:x").unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert_eq!(redact("redis://u:secret@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }
}
