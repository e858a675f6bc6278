//! Everything that can be wrong with an agent's configuration, each variant saying where.

use std::io;
use std::path::PathBuf;

use super::services::DefinitionProblem;

/// Why a configuration was refused. Nothing has been started when one of these is returned: the
/// caller prints it and exits. Variants carry the flag, file, key or field they are about so tests
/// and callers match on data, never on the message text.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `-h`, `-help` or `--help`: not a failure, but the caller must print the text and stop.
    #[error("{0}")]
    Help(String),

    /// A flag `cairn agent` does not know, spelled with one dash (`-foo`) whatever the user typed.
    #[error("unknown flag {flag} (`cairn agent -h` lists the flags)")]
    UnknownFlag { flag: String },

    /// A word that is not a flag: `cairn agent` takes no positional arguments.
    #[error("unexpected argument {arg:?}: `cairn agent` takes only flags")]
    UnexpectedArgument { arg: String },

    /// A flag that takes a value came last, or was followed by another flag.
    #[error("flag {flag} needs a value ({flag}=VALUE or {flag} VALUE)")]
    MissingFlagValue { flag: String },

    /// A flag's value does not parse as the flag's type.
    #[error("invalid value {value:?} for flag {flag}: expected {expected}")]
    BadFlagValue { flag: String, value: String, expected: String },

    /// A config file or directory could not be read (missing, unreadable, too large).
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A config file named explicitly whose format cairn cannot read (anything but `.json` and
    /// `.hcl`).
    #[error("{}: cairn reads .json and .hcl config files", path.display())]
    UnsupportedFormat { path: PathBuf },

    /// An HCL config file does not parse, or a value has the wrong type. The position is there when
    /// the HCL parser gives one (syntax errors); type errors name the field instead.
    #[error("{}{}: {}{message}", path.display(), position.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default(), located(field_path))]
    Hcl { path: PathBuf, field_path: String, position: Option<(usize, usize)>, message: String },

    /// A service or check definition breaks a rule. `field` is its path in the file, like
    /// `services[1].checks[0].interval`.
    #[error("{}: {field}: {problem}", path.display())]
    Definition { path: PathBuf, field: String, problem: DefinitionProblem },

    /// A config file is not valid JSON, or a value has the wrong type. `field_path` is like
    /// `ports.http` or `retry_join[1]` (`.` for the document itself); line and column are 1-based
    /// (column 0 when the error is at the end of a line, as serde_json reports).
    #[error("{}:{line}:{column}: {}{message}", path.display(), located(field_path))]
    Json { path: PathBuf, field_path: String, line: usize, column: usize, message: String },

    /// A key neither cairn nor Consul knows, or one cairn knows nested under the wrong section.
    /// `key_path` is like `prots` or `ports.htp`.
    #[error("{}: unknown config key {key_path:?}", path.display())]
    UnknownKey { path: PathBuf, key_path: String },

    /// The merged configuration breaks a rule. `field` is the config-file key (`bootstrap_expect`,
    /// `ports.dns`); the flag that sets it is its `-` spelling.
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
}

impl ConfigError {
    /// Shorthand for the validation rules, which all name a field and say what is wrong.
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid { field: field.into(), message: message.into() }
    }
}

/// `field: ` before a JSON error's message, or nothing when the error is about the whole document.
fn located(field_path: &str) -> String {
    match field_path {
        "." => String::new(),
        field => format!("{field}: "),
    }
}
