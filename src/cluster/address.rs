//! `host:port` values of the cluster options (contract §1.1) and how addresses are written.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A peer or advertised address as configured: an IP literal or a DNS name, with a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostPort {
    Ip(SocketAddr),
    Name(String, u16),
}

impl HostPort {
    /// Parses `IPv4:port`, `[IPv6]:port` or `name:port`; the error says why not.
    pub fn parse(text: &str) -> Result<HostPort, &'static str> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (ip, port) = rest
                .split_once("]:")
                .ok_or("an IPv6 address is written [address]:port, e.g. [::1]:6100")?;
            let ip: Ipv6Addr = ip.parse().map_err(|_| "not an IPv6 address in brackets")?;
            (Some(IpAddr::V6(ip)), port)
        } else {
            let (host, port) = text
                .rsplit_once(':')
                .ok_or("a port is required, e.g. 10.0.0.5:6100")?;
            if host.contains(':') {
                return Err("an IPv6 address needs brackets, e.g. [::1]:6100");
            }
            if host.is_empty() {
                return Err("a host is required before the port");
            }
            match host.parse::<Ipv4Addr>() {
                Ok(ip) => (Some(IpAddr::V4(ip)), port),
                Err(_) => {
                    if !valid_name(host) {
                        return Err("not an IPv4 address nor a DNS name");
                    }
                    return Ok(HostPort::Name(host.to_string(), parse_port(port)?));
                }
            }
        };
        let port = parse_port(port)?;
        match host {
            Some(ip) => Ok(HostPort::Ip(SocketAddr::new(ip, port))),
            None => Err("not an address"),
        }
    }

    /// The text form: IPv6 always bracketed.
    pub fn text(&self) -> String {
        match self {
            HostPort::Ip(address) => socket_text(*address),
            HostPort::Name(name, port) => format!("{name}:{port}"),
        }
    }
}

fn parse_port(text: &str) -> Result<u16, &'static str> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || text.len() > 5 {
        return Err("the port must be a number from 1 to 65535");
    }
    match text.parse::<u32>() {
        Ok(port @ 1..=65535) => Ok(port as u16),
        _ => Err("the port must be a number from 1 to 65535"),
    }
}

fn valid_name(name: &str) -> bool {
    let edge = |b: u8| b == b'-' || b == b'.';
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 253
        && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || edge(b))
        && !edge(bytes[0])
        && !edge(bytes[bytes.len() - 1])
}

/// A socket address as every file, line and log writes it: `1.2.3.4:5` or `[::1]:5`.
pub fn socket_text(address: SocketAddr) -> String {
    match address {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// Splits a `--peers` value (each flag value and the env value may hold a comma-separated
/// list), trims entries and drops empty ones.
pub fn split_list(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_parse_and_print_back() {
        for text in [
            "10.0.0.5:6100",
            "[fd00::5]:6100",
            "[::1]:1",
            "localhost:65535",
            "registry-0.registry.default.svc:6100",
        ] {
            assert_eq!(HostPort::parse(text).map(|h| h.text()).as_deref(), Ok(text));
        }
        assert_eq!(
            HostPort::parse(" 10.0.0.5:6100 ")
                .map(|h| h.text())
                .as_deref(),
            Ok("10.0.0.5:6100")
        );
    }

    #[test]
    fn the_contract_examples_of_bad_values_are_refused() {
        for text in [
            "::1:6100",
            "10.0.0.5",
            "10.0.0.5:0",
            "10.0.0.5:70000",
            ":6100",
            "host:port:x",
            "-a:1",
            "a.:1",
            "[::1]6100",
            "[zz]:1",
            "a_b:1",
        ] {
            assert!(HostPort::parse(text).is_err(), "{text:?}");
        }
        assert!(HostPort::parse("::1:6100")
            .unwrap_err()
            .contains("brackets"));
    }

    #[test]
    fn lists_are_split_trimmed_and_empties_dropped() {
        assert_eq!(
            split_list(&["a:1,,b:2,".into(), " c:3 ".into()]),
            vec!["a:1", "b:2", "c:3"]
        );
    }
}
