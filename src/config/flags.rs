//! `cairn agent` flags, in Consul's spellings. One table drives parsing and the usage text, so a
//! flag cannot be documented without working or work without being documented.
//!
//! A small parser rather than clap: Consul's flags are Go-style (`-flag`, `--flag`, `-flag=value`,
//! `-flag value`, booleans only as `-flag` or `-flag=bool`), and every error must name the flag as a
//! typed [`ConfigError`] rather than a formatted clap message.

use std::path::PathBuf;
use std::str::FromStr;

use super::duration::parse_duration;
use super::layer::Layer;
use super::values::parse_bool;
use super::{ConfigError, JoinAddress, LogLevel};

/// What the command line asked for: its settings, which override every file, and the things only
/// flags can say.
#[derive(Debug, Default)]
pub(crate) struct Invocation {
    pub layer: Layer,
    pub dev: bool,
    pub config_files: Vec<PathBuf>,
    pub config_dirs: Vec<PathBuf>,
}

#[derive(Clone, Copy)]
enum Arg {
    /// `-flag` means true; a value only as `-flag=false`, as Go's boolean flags.
    Switch,
    /// Takes a value, `-flag=value` or `-flag value`; the text names it in the usage.
    Value(&'static str),
}

/// Applies a flag's raw value; `flag` is its canonical spelling for errors.
type Setter = fn(&mut Invocation, &str, &str) -> Result<(), ConfigError>;

struct Flag {
    name: &'static str,
    arg: Arg,
    help: &'static str,
    set: Setter,
}

/// Every flag, alphabetical as in Consul's usage text.
const FLAGS: &[Flag] = &[
    Flag {
        name: "advertise",
        arg: Arg::Value("ADDR"),
        help: "Address other agents use to reach this one. Default: the bind address, or this host's first \
               private IPv4 address when binding to 0.0.0.0.",
        set: |inv, flag, raw| {
            inv.layer.advertise_addr = Some(typed(flag, raw, "an IP address")?);
            Ok(())
        },
    },
    Flag {
        name: "alt-domain",
        arg: Arg::Value("DOMAIN"),
        help: "A second DNS domain answered like -domain.",
        set: |inv, _, raw| {
            inv.layer.alt_domain = Some(raw.into());
            Ok(())
        },
    },
    Flag {
        name: "bind",
        arg: Arg::Value("ADDR"),
        help: "Address cluster traffic (server RPC, LAN gossip) binds. Default 0.0.0.0; 127.0.0.1 with -dev.",
        set: |inv, flag, raw| {
            inv.layer.bind_addr = Some(typed(flag, raw, "an IP address")?);
            Ok(())
        },
    },
    Flag {
        name: "bootstrap",
        arg: Arg::Switch,
        help: "Bootstrap the cluster alone (same as -bootstrap-expect=1). Servers only.",
        set: |inv, flag, raw| {
            inv.layer.bootstrap = Some(boolean(flag, raw)?);
            Ok(())
        },
    },
    Flag {
        name: "bootstrap-expect",
        arg: Arg::Value("N"),
        help: "Bootstrap the cluster once N servers know each other. Servers only.",
        set: |inv, flag, raw| {
            inv.layer.bootstrap_expect = Some(typed(flag, raw, "a whole number")?);
            Ok(())
        },
    },
    Flag {
        name: "client",
        arg: Arg::Value("ADDR"),
        help: "Address the HTTP and DNS interfaces bind. Default 127.0.0.1.",
        set: |inv, flag, raw| {
            inv.layer.client_addr = Some(typed(flag, raw, "an IP address")?);
            Ok(())
        },
    },
    Flag {
        name: "config-dir",
        arg: Arg::Value("PATH"),
        help: "Directory whose *.json files are loaded in lexical order, after every -config-file. Repeatable.",
        set: |inv, _, raw| {
            inv.config_dirs.push(raw.into());
            Ok(())
        },
    },
    Flag {
        name: "config-file",
        arg: Arg::Value("PATH"),
        help: "JSON config file to load. Repeatable; later files override earlier ones, and flags override files.",
        set: |inv, _, raw| {
            inv.config_files.push(raw.into());
            Ok(())
        },
    },
    Flag {
        name: "data-dir",
        arg: Arg::Value("PATH"),
        help: "Directory for persistent state. Required unless -dev.",
        set: |inv, _, raw| {
            inv.layer.data_dir = Some(raw.into());
            Ok(())
        },
    },
    Flag {
        name: "datacenter",
        arg: Arg::Value("DC"),
        help: "Datacenter this agent belongs to. Default dc1.",
        set: |inv, _, raw| {
            inv.layer.datacenter = Some(raw.into());
            Ok(())
        },
    },
    Flag {
        name: "dev",
        arg: Arg::Switch,
        help: "Development mode: one in-memory node, server and client, bound to 127.0.0.1. Never for production.",
        set: |inv, flag, raw| {
            inv.dev = boolean(flag, raw)?;
            Ok(())
        },
    },
    Flag {
        name: "dns-port",
        arg: Arg::Value("PORT"),
        help: "DNS interface port. Default 8600.",
        set: |inv, flag, raw| {
            inv.layer.ports.dns = Some(port(flag, raw)?);
            Ok(())
        },
    },
    Flag {
        name: "domain",
        arg: Arg::Value("DOMAIN"),
        help: "DNS domain the agent answers for. Default consul.",
        set: |inv, _, raw| {
            inv.layer.domain = Some(raw.into());
            Ok(())
        },
    },
    Flag {
        name: "encrypt",
        arg: Arg::Value("KEY"),
        help: "Gossip encryption key: base64 of 16, 24 or 32 bytes (`cairn keygen` makes one). Seeds the keyring \
               on first start.",
        set: |inv, _, raw| {
            inv.layer.encrypt = Some(raw.to_owned());
            Ok(())
        },
    },
    Flag {
        name: "http-port",
        arg: Arg::Value("PORT"),
        help: "HTTP API port. Default 8500.",
        set: |inv, flag, raw| {
            inv.layer.ports.http = Some(port(flag, raw)?);
            Ok(())
        },
    },
    Flag {
        name: "join",
        arg: Arg::Value("ADDR"),
        help: "Agent to join at start; retried like -retry-join. Repeatable.",
        set: |inv, flag, raw| {
            inv.layer.start_join.push(typed(flag, raw, "")?);
            Ok(())
        },
    },
    Flag {
        name: "log-level",
        arg: Arg::Value("LEVEL"),
        help: "trace, debug, info, warn or error. Default info.",
        set: |inv, flag, raw| {
            inv.layer.log_level = Some(typed::<LogLevel>(flag, raw, "")?);
            Ok(())
        },
    },
    Flag {
        name: "node",
        arg: Arg::Value("NAME"),
        help: "Node name, unique in the cluster. Default: the host name.",
        set: |inv, _, raw| {
            inv.layer.node_name = Some(raw.into());
            Ok(())
        },
    },
    Flag {
        name: "node-id",
        arg: Arg::Value("UUID"),
        help: "Node ID. Default: generated once and kept in the data directory.",
        set: |inv, _, raw| {
            inv.layer.node_id = Some(raw.into());
            Ok(())
        },
    },
    Flag {
        name: "recursor",
        arg: Arg::Value("ADDR"),
        help: "Upstream DNS server for names outside the domain: IP or IP:port (port 53). Repeatable.",
        set: |inv, flag, raw| {
            inv.layer.recursors.push(typed(flag, raw, "")?);
            Ok(())
        },
    },
    Flag {
        name: "retry-interval",
        arg: Arg::Value("DURATION"),
        help: "Time between join attempts, such as 30s or 1m30s. Default 30s; 1s with -dev.",
        set: |inv, flag, raw| {
            inv.layer.retry_interval = Some(duration(flag, raw)?);
            Ok(())
        },
    },
    Flag {
        name: "retry-join",
        arg: Arg::Value("ADDR"),
        help: "Agent to join, retried until it answers: host, host:port, [ipv6]:port or ipv6 (port 8301 if \
               none). Repeatable.",
        set: |inv, flag, raw| {
            inv.layer.retry_join.push(typed::<JoinAddress>(flag, raw, "")?);
            Ok(())
        },
    },
    Flag {
        name: "retry-max",
        arg: Arg::Value("N"),
        help: "Join attempts before giving up; 0 (the default) retries forever.",
        set: |inv, flag, raw| {
            inv.layer.retry_max = Some(typed(flag, raw, "a whole number")?);
            Ok(())
        },
    },
    Flag {
        name: "serf-lan-port",
        arg: Arg::Value("PORT"),
        help: "LAN gossip port. Default 8301.",
        set: |inv, flag, raw| {
            inv.layer.ports.serf_lan = Some(port(flag, raw)?);
            Ok(())
        },
    },
    Flag {
        name: "serf-wan-port",
        arg: Arg::Value("PORT"),
        help: "WAN gossip port. Default 8302.",
        set: |inv, flag, raw| {
            inv.layer.ports.serf_wan = Some(port(flag, raw)?);
            Ok(())
        },
    },
    Flag {
        name: "server",
        arg: Arg::Switch,
        help: "Run as a server: take part in Raft and hold the catalog.",
        set: |inv, flag, raw| {
            inv.layer.server = Some(boolean(flag, raw)?);
            Ok(())
        },
    },
    Flag {
        name: "server-port",
        arg: Arg::Value("PORT"),
        help: "Server RPC port. Default 8300.",
        set: |inv, flag, raw| {
            inv.layer.ports.server = Some(port(flag, raw)?);
            Ok(())
        },
    },
];

/// Parses the arguments after `cairn agent`.
pub(crate) fn parse_args(args: &[String]) -> Result<Invocation, ConfigError> {
    let mut invocation = Invocation::default();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let (name, inline_value) = split_flag(arg)?;
        if matches!(name, "h" | "help") {
            return Err(ConfigError::Help(usage()));
        }
        let Some(spec) = FLAGS.iter().find(|f| f.name == name) else {
            return Err(ConfigError::UnknownFlag { flag: format!("-{name}") });
        };
        let flag = format!("-{name}");
        let value = match (spec.arg, inline_value) {
            (_, Some(value)) => value,
            (Arg::Switch, None) => "true",
            (Arg::Value(_), None) => match rest.next() {
                // A following flag means the value was forgotten; taking `-server` as a data
                // directory, as Go's flag package would, hides the mistake.
                Some(next) if !next.starts_with('-') || next == "-" => next.as_str(),
                _ => return Err(ConfigError::MissingFlagValue { flag }),
            },
        };
        (spec.set)(&mut invocation, &flag, value)?;
    }
    Ok(invocation)
}

/// `-name`, `--name`, `-name=value` or `--name=value` → (`name`, value).
fn split_flag(arg: &str) -> Result<(&str, Option<&str>), ConfigError> {
    let body = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'));
    let Some(body) = body.filter(|b| !b.is_empty()) else {
        return Err(ConfigError::UnexpectedArgument { arg: arg.to_owned() });
    };
    Ok(match body.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (body, None),
    })
}

/// A value of any type with a `FromStr`; `expected` describes it, or is empty when the parse
/// error already says what was expected.
fn typed<T: FromStr<Err: ToString>>(flag: &str, raw: &str, expected: &str) -> Result<T, ConfigError> {
    raw.parse::<T>()
        .map_err(|e| bad_value(flag, raw, if expected.is_empty() { e.to_string() } else { expected.into() }))
}

fn boolean(flag: &str, raw: &str) -> Result<bool, ConfigError> {
    parse_bool(raw).map_err(|expected| bad_value(flag, raw, expected))
}

fn port(flag: &str, raw: &str) -> Result<u16, ConfigError> {
    typed(flag, raw, "a port number from 1 to 65535")
}

fn duration(flag: &str, raw: &str) -> Result<std::time::Duration, ConfigError> {
    parse_duration(raw).map_err(|why| bad_value(flag, raw, format!("a duration such as 30s or 1m30s ({why})")))
}

fn bad_value(flag: &str, raw: &str, expected: String) -> ConfigError {
    ConfigError::BadFlagValue { flag: flag.to_owned(), value: raw.to_owned(), expected }
}

/// The text `cairn agent -h` prints.
pub(crate) fn usage() -> String {
    let mut text = String::from(
        "Usage: cairn agent [options]\n\n\
         \x20 Starts the cairn agent and runs until it is interrupted. Flags take one\n\
         \x20 dash or two, and values after '=' or as the next argument (-node=web-1,\n\
         \x20 -node web-1).\n\n\
         Options:\n",
    );
    for flag in FLAGS {
        let spelling = match flag.arg {
            Arg::Switch => format!("-{}", flag.name),
            Arg::Value(hint) => format!("-{}={hint}", flag.name),
        };
        text.push_str(&format!("\n  {spelling}\n"));
        for line in wrap(flag.help, USAGE_HELP_WIDTH) {
            text.push_str(&format!("      {line}\n"));
        }
    }
    text
}

/// Help lines fit an 80-column terminal after their six-space indent.
const USAGE_HELP_WIDTH: usize = 72;

/// Splits `text` at spaces into lines of at most `width` characters (a longer word gets its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.len() + 1 + word.len() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(args: &[&str]) -> Result<Invocation, ConfigError> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        parse_args(&args)
    }

    /// One dash or two, and `=value` or a separate value, all mean the same.
    #[test]
    fn spellings_are_equivalent() {
        for args in [&["-node", "web-1"][..], &["-node=web-1"], &["--node", "web-1"], &["--node=web-1"]] {
            assert_eq!(parse(args).unwrap().layer.node_name.as_deref(), Some("web-1"), "{args:?}");
        }
    }

    /// Every flag in the table sets what it says.
    #[test]
    fn every_flag_sets_its_setting() {
        let inv = parse(&[
            "-server",
            "-bootstrap-expect",
            "3",
            "-bootstrap=false",
            "-dev=false",
            "-node",
            "n1",
            "-node-id",
            "adb5fe3e-8a36-4f4e-8e4e-0b5c1a2b3c4d",
            "-datacenter",
            "east",
            "-data-dir",
            "/d",
            "-bind",
            "10.0.0.1",
            "-advertise",
            "10.0.0.2",
            "-client",
            "0.0.0.0",
            "-retry-join",
            "a",
            "-join",
            "b",
            "-retry-interval",
            "1m30s",
            "-retry-max",
            "4",
            "-http-port",
            "1",
            "-dns-port",
            "2",
            "-server-port",
            "3",
            "-serf-lan-port",
            "4",
            "-serf-wan-port",
            "5",
            "-config-file",
            "f.json",
            "-config-dir",
            "conf.d",
            "-log-level",
            "warn",
        ])
        .unwrap();
        let layer = &inv.layer;
        assert_eq!((layer.server, layer.bootstrap, layer.bootstrap_expect), (Some(true), Some(false), Some(3)));
        assert!(!inv.dev);
        assert_eq!(layer.node_name.as_deref(), Some("n1"));
        assert_eq!(layer.node_id.as_deref(), Some("adb5fe3e-8a36-4f4e-8e4e-0b5c1a2b3c4d"));
        assert_eq!(layer.datacenter.as_deref(), Some("east"));
        assert_eq!(layer.data_dir, Some(PathBuf::from("/d")));
        assert_eq!(layer.bind_addr, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(layer.advertise_addr, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(layer.client_addr, Some("0.0.0.0".parse().unwrap()));
        assert_eq!(layer.retry_join, vec!["a".parse().unwrap()]);
        assert_eq!(layer.start_join, vec!["b".parse().unwrap()]);
        assert_eq!(layer.retry_interval, Some(Duration::from_secs(90)));
        assert_eq!(layer.retry_max, Some(4));
        let ports = layer.ports;
        assert_eq!([ports.http, ports.dns, ports.server, ports.serf_lan, ports.serf_wan], [1, 2, 3, 4, 5].map(Some));
        assert_eq!(inv.config_files, [PathBuf::from("f.json")]);
        assert_eq!(inv.config_dirs, [PathBuf::from("conf.d")]);
        assert_eq!(layer.log_level, Some(LogLevel::Warn));
    }

    /// Repeatable flags collect every occurrence in order; others keep the last.
    #[test]
    fn repeated_flags() {
        let inv = parse(&["-retry-join=a", "-retry-join=b:1", "-node=x", "-node=y", "-config-dir=1", "-config-dir=2"])
            .unwrap();
        assert_eq!(inv.layer.retry_join, vec!["a".parse().unwrap(), "b:1".parse().unwrap()]);
        assert_eq!(inv.layer.node_name.as_deref(), Some("y"));
        assert_eq!(inv.config_dirs, [PathBuf::from("1"), PathBuf::from("2")]);
    }

    /// Boolean flags take `=true`/`=false` (Go's spellings) but never a separate value.
    #[test]
    fn boolean_flags() {
        assert_eq!(parse(&["-server"]).unwrap().layer.server, Some(true));
        assert_eq!(parse(&["-server=false"]).unwrap().layer.server, Some(false));
        assert_eq!(parse(&["--server=1"]).unwrap().layer.server, Some(true));
        assert!(parse(&["-dev"]).unwrap().dev);
        let err = parse(&["-server=maybe"]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::BadFlagValue { flag, value, .. } if flag == "-server" && value == "maybe"),
            "{err:?}"
        );
        let err = parse(&["-server", "true"]).unwrap_err();
        assert!(matches!(&err, ConfigError::UnexpectedArgument { arg } if arg == "true"), "{err:?}");
    }

    /// An unknown flag is named with one dash, however it was typed.
    #[test]
    fn unknown_flag() {
        for spelling in ["-bogus", "--bogus", "-bogus=1"] {
            let err = parse(&["-dev", spelling]).unwrap_err();
            assert!(matches!(&err, ConfigError::UnknownFlag { flag } if flag == "-bogus"), "{err:?}");
        }
    }

    /// A value flag at the end, or followed by another flag, is missing its value.
    #[test]
    fn missing_value() {
        let err = parse(&["-data-dir"]).unwrap_err();
        assert!(matches!(&err, ConfigError::MissingFlagValue { flag } if flag == "-data-dir"), "{err:?}");
        let err = parse(&["--data-dir", "-server"]).unwrap_err();
        assert!(matches!(&err, ConfigError::MissingFlagValue { flag } if flag == "-data-dir"), "{err:?}");
    }

    /// Values that do not parse name the flag and the value.
    #[test]
    fn bad_values() {
        let cases = [
            (&["-http-port", "http"][..], "-http-port"),
            (&["-http-port=70000"], "-http-port"),
            (&["-bootstrap-expect=-1"], "-bootstrap-expect"),
            (&["-retry-max=lots"], "-retry-max"),
            (&["-bind=localhost"], "-bind"),
            (&["-advertise=10.0.0"], "-advertise"),
            (&["-client=::1::"], "-client"),
            (&["-retry-join=a:b:c"], "-retry-join"),
            (&["-join=host:0"], "-join"),
            (&["-retry-interval=5x"], "-retry-interval"),
            (&["-retry-interval=-1s"], "-retry-interval"),
            (&["-log-level=loud"], "-log-level"),
        ];
        for (args, expected_flag) in cases {
            let err = parse(args).unwrap_err();
            assert!(
                matches!(&err, ConfigError::BadFlagValue { flag, value, .. }
                    if flag == expected_flag && args.last().unwrap().ends_with(value.as_str())),
                "{args:?}: {err:?}"
            );
        }
    }

    /// Words that are not flags are refused.
    #[test]
    fn positional_arguments_are_refused() {
        for arg in ["agent", "-", "--"] {
            let err = parse(&[arg]).unwrap_err();
            assert!(matches!(&err, ConfigError::UnexpectedArgument { arg: a } if a == arg), "{err:?}");
        }
    }

    /// `-h`, `-help` and `--help` return the usage text, even after other flags.
    #[test]
    fn help() {
        for args in [&["-h"][..], &["--help"], &["-help"], &["-dev", "-h"]] {
            let err = parse(args).unwrap_err();
            assert!(matches!(&err, ConfigError::Help(text) if *text == usage()), "{args:?}: {err:?}");
        }
    }

    /// The usage text lists every flag with its value hint.
    #[test]
    fn usage_lists_every_flag() {
        let text = usage();
        for flag in FLAGS {
            assert!(text.contains(&format!("\n  -{}", flag.name)), "-{} missing from usage", flag.name);
        }
        assert!(text.contains("-bootstrap-expect=N\n"));
        assert!(text.contains("-server\n"));
    }

    /// Help text wraps at spaces and keeps every word.
    #[test]
    fn wrap_keeps_words_within_width() {
        let lines = wrap("one two three four five six seven", 9);
        assert_eq!(lines, ["one two", "three", "four five", "six seven"]);
        assert_eq!(wrap("unbreakable-word", 4), ["unbreakable-word"]);
        assert!(usage().lines().all(|line| line.chars().count() <= 80), "{}", usage());
    }

    /// Flag names are unique and sorted, so lookup finds the only one and the usage reads well.
    #[test]
    fn flag_table_is_sorted_and_unique() {
        for pair in FLAGS.windows(2) {
            assert!(pair[0].name < pair[1].name, "{} before {}", pair[0].name, pair[1].name);
        }
    }
}
