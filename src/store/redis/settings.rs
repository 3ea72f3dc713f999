//! The Redis store's options (spec §1): the address forms, credentials, database and mode, parsed
//! without touching the network. Host names are resolved when a connection is made.

use std::fmt;

/// How the addresses are read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One Redis server.
    Standalone,
    /// The addresses are Sentinels watching the master of this name.
    Sentinel(String),
    /// The addresses are seed nodes of a Redis Cluster.
    Cluster,
}

impl Mode {
    /// The name `/uptime` shows.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Standalone => "standalone",
            Mode::Sentinel(_) => "sentinel",
            Mode::Cluster => "cluster",
        }
    }
}

/// One entry of `--store_address`.
#[derive(Clone, PartialEq, Eq)]
pub struct Address {
    /// A name, an IPv4 literal or an IPv6 literal without its brackets.
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: i64,
}

impl Address {
    /// `host:port`, IPv6 in brackets, without credentials: what logs and `/uptime` may show.
    pub fn shown(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Passwords are never printed.
impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} db {}", self.shown(), self.db)
    }
}

/// The validated options of the Redis store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisSettings {
    pub mode: Mode,
    pub addresses: Vec<Address>,
    /// `--store_password`: for every address whose URL carries no password.
    pub password: Option<String>,
}

impl RedisSettings {
    /// The configured addresses with passwords removed, comma-separated.
    pub fn shown(&self) -> String {
        let shown: Vec<String> = self
            .addresses
            .iter()
            .map(|a| {
                let mut text = a.shown();
                if a.db != 0 {
                    text.push_str(&format!("/{}", a.db));
                }
                text
            })
            .collect();
        shown.join(",")
    }

    /// The password to authenticate to `address` with: its own, else `--store_password`.
    pub fn password_for(&self, address: &Address) -> Option<String> {
        address.password.clone().or_else(|| self.password.clone())
    }
}

/// Which option a configuration error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Culprit {
    Address,
    Sentinel,
}

/// Reads the options; the error names the option at fault and why.
pub fn parse(
    addresses: &str,
    password: &str,
    sentinel: &str,
    cluster: bool,
) -> Result<RedisSettings, (Culprit, String)> {
    if !sentinel.is_empty() && cluster {
        return Err((
            Culprit::Sentinel,
            "cannot be combined with --store_cluster".into(),
        ));
    }
    if addresses.trim().is_empty() {
        return Err((Culprit::Address, "is required with --store redis".into()));
    }
    let mut parsed = Vec::new();
    for entry in addresses.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err((Culprit::Address, "has an empty entry".into()));
        }
        parsed.push(parse_address(entry).map_err(|why| (Culprit::Address, why))?);
    }
    let mode = if cluster {
        Mode::Cluster
    } else if !sentinel.is_empty() {
        Mode::Sentinel(sentinel.to_string())
    } else {
        Mode::Standalone
    };
    if mode == Mode::Standalone && parsed.len() > 1 {
        return Err((
            Culprit::Address,
            "lists several addresses; that needs --store_sentinel or --store_cluster".into(),
        ));
    }
    if mode != Mode::Standalone && parsed.iter().any(|a| a.db != 0) {
        return Err((
            Culprit::Address,
            "selects a database other than 0, which Sentinel and Cluster modes do not allow".into(),
        ));
    }
    Ok(RedisSettings {
        mode,
        addresses: parsed,
        password: (!password.is_empty()).then(|| password.to_string()),
    })
}

/// The address list as given, with the password of every URL entry removed (`redis://u:pw@h`
/// shows as `redis://u@h`): what the startup summary and error lines may show.
pub fn without_passwords(list: &str) -> String {
    list.split(',')
        .map(|entry| {
            let Some(rest) = entry.trim_start().strip_prefix("redis://") else {
                return entry.to_string();
            };
            let end = rest.find('/').unwrap_or(rest.len());
            match rest[..end].rfind('@') {
                Some(at) => {
                    let user = rest[..at].split(':').next().unwrap_or_default();
                    let at_sign = if user.is_empty() { "" } else { "@" };
                    format!("redis://{user}{at_sign}{}", &rest[at + 1..])
                }
                None => entry.trim_start().to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// One entry: `host:port` or `redis://[user[:password]@]host[:port][/db]`.
pub fn parse_address(entry: &str) -> Result<Address, String> {
    let quoted = || format!("{:?}", without_passwords(entry));
    if let Some(rest) = entry.strip_prefix("redis://") {
        if rest.contains(['?', '#']) {
            return Err(format!("{}: a query or fragment is not allowed", quoted()));
        }
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        };
        let (credentials, host_port) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let (user, password) = match credentials {
            None => (None, None),
            Some(text) => {
                let (user, password) = match text.find(':') {
                    Some(at) => (&text[..at], Some(&text[at + 1..])),
                    None => (text, None),
                };
                let user = percent_decode(user).ok_or_else(|| bad_escape(entry))?;
                let password = match password {
                    Some(p) => Some(percent_decode(p).ok_or_else(|| bad_escape(entry))?),
                    None => None,
                };
                ((!user.is_empty()).then_some(user), password)
            }
        };
        let (host, port) =
            split_host_port(host_port, true).map_err(|why| format!("{}: {why}", quoted()))?;
        let db = match path {
            None | Some("") => 0,
            Some(db) if !db.is_empty() && db.bytes().all(|b| b.is_ascii_digit()) => db
                .parse::<i64>()
                .map_err(|_| format!("{}: the database number is too large", quoted()))?,
            Some(_) => {
                return Err(format!(
                    "{}: the database must be a non-negative integer",
                    quoted()
                ))
            }
        };
        return Ok(Address {
            host,
            port,
            user,
            password,
            db,
        });
    }
    if let Some(at) = entry.find("://") {
        return Err(format!(
            "{}: the scheme {:?} is not supported (use host:port or redis://)",
            quoted(),
            &entry[..at]
        ));
    }
    let (host, port) =
        split_host_port(entry, false).map_err(|why| format!("{}: {why}", quoted()))?;
    Ok(Address {
        host,
        port,
        user: None,
        password: None,
        db: 0,
    })
}

fn bad_escape(entry: &str) -> String {
    format!(
        "{:?}: a credential has an invalid percent escape",
        without_passwords(entry)
    )
}

/// `host:port`, `[v6]:port`; without the port (only when `port_optional`) 6379.
fn split_host_port(text: &str, port_optional: bool) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let end = rest.find(']').ok_or("an IPv6 literal lacks its ']'")?;
        let host = &rest[..end];
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("not an IPv6 literal in brackets".into());
        }
        let after = &rest[end + 1..];
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err("unexpected text after the IPv6 literal".into()),
        }
    } else {
        match text.rfind(':') {
            Some(at) => (&text[..at], Some(&text[at + 1..])),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    if !text.starts_with('[') && host.contains([':', '/', '@', ' ', '[', ']']) {
        return Err("not a host name or IP address".into());
    }
    let port = match port {
        None if port_optional => 6379,
        None => return Err("the port is missing (host:port)".into()),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n >= 1 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err("the port must be a number within 1..65535".into()),
        },
    };
    Ok((host.to_string(), port))
}

/// `%XX` escapes decoded; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_forms() {
        let a = parse_address("10.0.0.9:6379").unwrap();
        assert_eq!((a.host.as_str(), a.port, a.db), ("10.0.0.9", 6379, 0));
        let a = parse_address("[::1]:7000").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", 7000));
        assert_eq!(a.shown(), "[::1]:7000");
        let a = parse_address("redis://alice:p%40ss%3Aw%2F@redis.local/3").unwrap();
        assert_eq!(a.user.as_deref(), Some("alice"));
        assert_eq!(a.password.as_deref(), Some("p@ss:w/"));
        assert_eq!((a.host.as_str(), a.port, a.db), ("redis.local", 6379, 3));
        let a = parse_address("redis://:pw@h:1").unwrap();
        assert_eq!((a.user, a.password.as_deref()), (None, Some("pw")));
        for bad in [
            "h",
            "h:0",
            "h:65536",
            "h:x",
            ":1",
            "rediss://h:1",
            "http://h:1",
            "redis://",
            "redis://h:1/x",
            "redis://h:1/-1",
            "redis://h:1?db=1",
            "redis://h:1#f",
            "redis://h:port",
            "redis://u:%zz@h",
            "[::1:1",
        ] {
            assert!(parse_address(bad).is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn lists_and_modes() {
        assert!(
            parse("a:1,b:2", "", "", false).is_err(),
            "several need a mode"
        );
        assert!(parse("a:1,", "", "m", false).is_err(), "empty entry");
        assert!(parse(",a:1", "", "m", false).is_err(), "empty entry");
        assert!(parse("a:1", "", "m", true).is_err(), "both modes");
        assert!(
            parse("redis://a:1/2", "", "m", false).is_err(),
            "db in sentinel mode"
        );
        assert!(
            parse("redis://a:1/2", "", "", true).is_err(),
            "db in cluster mode"
        );
        let s = parse(" a:1 , redis://:pw@b:2 ", "other", "m", false).unwrap();
        assert_eq!(s.mode, Mode::Sentinel("m".into()));
        assert_eq!(s.shown(), "a:1,b:2");
        assert_eq!(s.password_for(&s.addresses[0]).as_deref(), Some("other"));
        assert_eq!(s.password_for(&s.addresses[1]).as_deref(), Some("pw"));
        assert!(
            !format!("{s:?}").contains("pw"),
            "passwords are not printed"
        );
        assert_eq!(
            without_passwords("h:1, redis://u:pw@h/1,redis://:pw@h:2"),
            "h:1,redis://u@h/1,redis://h:2"
        );
        let err = parse("redis://u:secret@h:1/x", "", "", false).unwrap_err();
        assert!(!err.1.contains("secret"), "{}", err.1);
    }
}
