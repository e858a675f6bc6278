//! Parsers for the values that flags and config files share: join addresses, log levels and
//! booleans. Each error string says what was expected and, where it helps, why the input is not it.

use std::net::Ipv6Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use super::{JoinAddress, LogLevel};

/// The LAN gossip port another agent listens on when a join address names none (Consul's).
pub const DEFAULT_JOIN_PORT: u16 = 8301;

/// A DNS name is at most 253 characters; longer hosts are typos or garbage.
const HOST_LEN_MAX: usize = 253;

const JOIN_FORMS: &str = "host, host:port, [ipv6]:port or an IPv6 address";

impl FromStr for JoinAddress {
    type Err = String;

    /// Accepts `host`, `host:port`, `[ipv6]:port`, `[ipv6]` and a bare IPv6 address; the port
    /// defaults to 8301. Host names are kept as written: they are resolved when joining, not here.
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, port) = split_host_port(s)?;
        check_host(host, s)?;
        Ok(JoinAddress { host: host.to_owned(), port })
    }
}

fn split_host_port(s: &str) -> Result<(&str, u16), String> {
    if let Some(bracketed) = s.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err(format!("{JOIN_FORMS}: {s:?} has '[' without ']'"));
        };
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{JOIN_FORMS}: {host:?} in brackets is not an IPv6 address"));
        }
        return match after {
            "" => Ok((host, DEFAULT_JOIN_PORT)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, parse_port(port, s)?)),
                None => Err(format!("{JOIN_FORMS}: unexpected {after:?} after ']' in {s:?}")),
            },
        };
    }
    // Two or more colons can only be an IPv6 address, which needs brackets to carry a port.
    if s.parse::<Ipv6Addr>().is_ok() {
        return Ok((s, DEFAULT_JOIN_PORT));
    }
    match s.split_once(':') {
        None => Ok((s, DEFAULT_JOIN_PORT)),
        Some((host, port)) if !port.contains(':') => Ok((host, parse_port(port, s)?)),
        Some(_) => Err(format!("{JOIN_FORMS}: {s:?} is not an IPv6 address; with a port, write [ipv6]:port")),
    }
}

fn parse_port(port: &str, whole: &str) -> Result<u16, String> {
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(format!("{JOIN_FORMS}: port {port:?} in {whole:?} is not a number from 1 to 65535")),
    }
}

fn check_host(host: &str, whole: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err(format!("{JOIN_FORMS}: {whole:?} has no host"));
    }
    if host.contains(':') {
        return Ok(()); // an IPv6 address, already parsed
    }
    if host.contains('=') {
        // Consul's cloud auto-join (`provider=aws tag_key=...`) asks a cloud API for addresses.
        return Err(format!("{JOIN_FORMS}: cloud auto-join ({whole:?}) is not supported by cairn"));
    }
    if host.len() > HOST_LEN_MAX || !host.chars().all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)) {
        return Err(format!("{JOIN_FORMS}: {host:?} is not a host name or IP address"));
    }
    Ok(())
}

impl<'de> Deserialize<'de> for JoinAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for LogLevel {
    type Err = String;

    /// Case-insensitive, as Consul's `hclog.LevelFromString` (`INFO`, `info` and `Info` all work).
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            _ => return Err(format!("one of trace, debug, info, warn, error (not {s:?})")),
        })
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A boolean flag's value, with the spellings Go's `strconv.ParseBool` accepts, since Consul's
/// flags go through it (`-server=1`, `-server=F`).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err("true or false".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(host: &str, port: u16) -> JoinAddress {
        JoinAddress { host: host.to_owned(), port }
    }

    /// Every accepted join-address form parses, with 8301 when no port is given.
    #[test]
    fn join_address_forms() {
        assert_eq!("10.0.0.2".parse(), Ok(join("10.0.0.2", 8301)));
        assert_eq!("10.0.0.3:8400".parse(), Ok(join("10.0.0.3", 8400)));
        assert_eq!("consul-1.example.com".parse(), Ok(join("consul-1.example.com", 8301)));
        assert_eq!("consul-1:9000".parse(), Ok(join("consul-1", 9000)));
        assert_eq!("[::1]:8302".parse(), Ok(join("::1", 8302)));
        assert_eq!("[fe80::1]".parse(), Ok(join("fe80::1", 8301)));
        assert_eq!("2001:db8::7".parse(), Ok(join("2001:db8::7", 8301)));
    }

    /// Malformed join addresses are refused rather than passed on to fail at join time.
    #[test]
    fn join_address_rejects() {
        for bad in [
            "",
            ":8301",
            "host:",
            "host:0",
            "host:65536",
            "host:http",
            "[::1",
            "[not-v6]:8301",
            "[::1]8301",
            "a:b:c",
            "two words",
            "provider=aws tag_key=consul",
            "host/path",
        ] {
            assert!(bad.parse::<JoinAddress>().is_err(), "{bad:?} should be refused");
        }
    }

    /// Display puts brackets back around IPv6 hosts, so the text parses to the same address.
    #[test]
    fn join_address_display_round_trips() {
        for text in ["10.0.0.2:8301", "[::1]:8302", "consul-1:9000"] {
            let address: JoinAddress = text.parse().unwrap();
            assert_eq!(address.to_string(), text);
            assert_eq!(address.to_string().parse(), Ok(address));
        }
    }

    /// Log levels are case-insensitive; unknown ones are refused.
    #[test]
    fn log_levels() {
        assert_eq!("TRACE".parse(), Ok(LogLevel::Trace));
        assert_eq!("debug".parse(), Ok(LogLevel::Debug));
        assert_eq!("Info".parse(), Ok(LogLevel::Info));
        assert_eq!("warn".parse(), Ok(LogLevel::Warn));
        assert_eq!("ERROR".parse(), Ok(LogLevel::Error));
        assert!("verbose".parse::<LogLevel>().is_err());
    }

    /// Boolean values follow Go's `strconv.ParseBool`.
    #[test]
    fn booleans() {
        for yes in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_bool(yes), Ok(true));
        }
        for no in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_bool(no), Ok(false));
        }
        assert!(parse_bool("yes").is_err());
        assert!(parse_bool("").is_err());
    }
}
