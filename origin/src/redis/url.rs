//! The one parser of `redis://` and `rediss://` URLs: every component that needs a host, a port or a
//! database number from a shard URL asks here (the lean MGET pool, `cascade reshard`, config
//! validation), so they cannot disagree about what a URL means.

/// A parsed Redis URL: `redis[s]://[user[:password]@]host[:port][/db][?params]`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (6379 when absent).
    pub port: u16,
    /// Database number (0 when absent).
    pub db: i64,
    /// Whether the URL carries a user or password.
    pub has_credentials: bool,
    /// The ACL user (percent-decoded; `None`: the `default` user).
    pub username: Option<String>,
    /// The password (percent-decoded); never printed (`Debug` hides it).
    pub password: Option<String>,
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
        let (credentials, host_port) = match authority.rsplit_once('@') {
            Some((credentials, host_port)) => (Some(credentials), host_port),
            None => (None, authority),
        };
        let (username, password) = match credentials.map(|c| c.split_once(':').unwrap_or((c, ""))) {
            None => (None, None),
            Some((user, password)) => {
                let decode = |part: &str| percent_decode(part).ok_or_else(|| fail("bad %-escape in the credentials"));
                let user = Some(decode(user)?).filter(|u| !u.is_empty());
                (user, Some(decode(password)?).filter(|p| !p.is_empty()))
            }
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
        let has_credentials = credentials.is_some();
        Ok(RedisUrl { host: host.to_string(), port, db, has_credentials, username, password, tls, has_params })
    }

    /// `host:port`, as `TcpStream::connect` takes it (IPv6 in brackets).
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The `AUTH` command this URL asks for, RESP-encoded (`AUTH password` or `AUTH user
    /// password`), as redis-rs sends it: none without a password.
    pub fn auth_command(&self) -> Option<Vec<u8>> {
        let password = self.password.as_deref()?;
        let mut parts = vec!["AUTH"];
        parts.extend(self.username.as_deref());
        parts.push(password);
        let mut command = format!("*{}\r\n", parts.len()).into_bytes();
        for part in parts {
            command.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
            command.extend_from_slice(part.as_bytes());
            command.extend_from_slice(b"\r\n");
        }
        Some(command)
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("has_params", &self.has_params)
            .finish()
    }
}

/// `%XX` escapes decoded (as redis-rs decodes a URL's user and password); `None` for a bad escape
/// or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
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
        assert_eq!((url.address(), url.db, url.tls, url.has_credentials), ("127.0.0.1:7001".into(), 0, false, false));
        let url = RedisUrl::parse("redis://cache-3:6380/2").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.db), ("cache-3", 6380, 2));
        assert_eq!(RedisUrl::parse("redis://cache/3").unwrap().address(), "cache:6379");
        assert_eq!(RedisUrl::parse("redis://[::1]:7000").unwrap().address(), "[::1]:7000");
    }

    #[test]
    fn what_needs_more_than_a_plain_connection() {
        assert!(RedisUrl::parse("rediss://cache:6380").unwrap().tls);
        assert!(RedisUrl::parse("redis://user:pw@cache:6379").unwrap().has_credentials);
        assert!(RedisUrl::parse("redis://cache:6379?protocol=resp3").unwrap().has_params);
    }

    #[test]
    fn credentials_are_decoded_and_never_printed() {
        let url = RedisUrl::parse("rediss://cascade:p%40ss%3Aword@cache:6380/1").unwrap();
        assert_eq!((url.username.as_deref(), url.password.as_deref()), (Some("cascade"), Some("p@ss:word")));
        assert!(url.tls && url.has_credentials);
        assert!(!format!("{url:?}").contains("p@ss"), "{url:?}");
        let auth = String::from_utf8(url.auth_command().unwrap()).unwrap();
        assert_eq!(auth, "*3\r\n$4\r\nAUTH\r\n$7\r\ncascade\r\n$9\r\np@ss:word\r\n");
        let default_user = RedisUrl::parse("redis://:secret@cache").unwrap();
        assert_eq!(default_user.username, None);
        assert_eq!(
            String::from_utf8(default_user.auth_command().unwrap()).unwrap(),
            "*2\r\n$4\r\nAUTH\r\n$6\r\nsecret\r\n"
        );
        assert_eq!(RedisUrl::parse("redis://cache").unwrap().auth_command(), None);
        assert!(RedisUrl::parse("redis://u:%zz@cache").is_err());
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
