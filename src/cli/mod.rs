//! The `cairn` command line, except `cairn agent` (which runs in `main.rs`): commands that talk to
//! a running agent over its HTTP API, as Consul's CLI does, and `cairn validate`, which only reads
//! config files. `-http-addr` (or `CAIRN_HTTP_ADDR`,
//! `CONSUL_HTTP_ADDR`) names the agent; 127.0.0.1:8500 by default.

mod args;
mod commands;
pub mod http;

pub use args::{table, Args, Kind};

/// The commands this module runs, with a line of help each.
pub const COMMANDS: &[(&str, &str)] = &[
    ("members", "Lists the members of the LAN gossip pool"),
    ("join", "Tells the local agent to join the pool through other agents"),
    ("leave", "Makes the local agent leave the pool gracefully and stop"),
    ("reload", "Makes the local agent re-read its config files (services and checks)"),
    ("force-leave", "Marks a failed member as left"),
    ("operator", "Raft operations: raft list-peers, raft remove-peer"),
    ("keygen", "Generates a new gossip encryption key"),
    ("keyring", "Lists, installs, uses or removes gossip encryption keys cluster-wide"),
    ("validate", "Checks config files or directories as the agent would load them"),
];

/// Run `command` with `args`; `None` if this module does not know the command. On success the
/// output to print, on failure the message for standard error.
pub fn run(command: &str, args: &[String]) -> Option<Result<String, String>> {
    let outcome = match command {
        "members" => commands::members(args),
        "join" => commands::join(args),
        "leave" => commands::leave(args),
        "reload" => commands::reload(args),
        "force-leave" => commands::force_leave(args),
        "operator" => commands::operator(args),
        "keygen" => commands::keygen(args),
        "keyring" => commands::keyring(args),
        "validate" => commands::validate(args),
        _ => return None,
    };
    Some(outcome)
}
