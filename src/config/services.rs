//! Service and check definitions from config files (`service`, `services`, `check`, `checks`), in
//! Consul's schema: typed here once, so the agent's registration and check runner never parse a
//! string. JSON and HCL files reach this module as the same JSON value (HCL blocks follow the HCL
//! JSON specification: one block is an object, repeated blocks a list), so both formats get the
//! same rules and the same errors.
//!
//! Keys match Consul's loosely, as Consul's decoder does: case does not matter, and the API's
//! spellings without underscores (`ServiceID`, `DeregisterCriticalServiceAfter`, `TLSSkipVerify`,
//! `CheckID`) name the same fields. Anything else is an unknown field, an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{duration, ConfigError, LocalServices};

/// Definitions one agent may hold (services, and checks counting those inside services). Consul
/// has no limit; 10,000 is far beyond any real agent and keeps a runaway generator from making
/// anti-entropy and the check scheduler unbounded.
pub const SERVICES_MAX: usize = 10_000;
pub const CHECKS_MAX: usize = 10_000;
/// IDs, names, tags, addresses, check targets.
pub const NAME_LEN_MAX: usize = 256;
/// URLs, script lines, arguments, notes, header values.
pub const TEXT_LEN_MAX: usize = 4096;
/// An HTTP check's request body.
pub const BODY_LEN_MAX: usize = 64 * 1024;
/// Tags on one service, arguments of one script, headers of one check.
pub const LIST_LEN_MAX: usize = 256;
/// Consul's service metadata limits: 64 pairs, keys up to 128 characters, values up to 512.
pub const META_PAIRS_MAX: usize = 64;
pub const META_KEY_LEN_MAX: usize = 128;
pub const META_VALUE_LEN_MAX: usize = 512;
/// Consul runs interval checks at most once a second; shorter intervals are raised to this,
/// with a warning, as Consul does (`checks.MinInterval`).
pub const CHECK_INTERVAL_MIN: Duration = Duration::from_secs(1);

/// Where a definition came from: the file and its place in it (`services[2]`), for errors and
/// warnings found after files are merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub path: PathBuf,
    pub field: String,
}

/// A service this agent registers (`service { ... }`).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceDefinition {
    /// `id`; defaults to `name`, as in Consul.
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    /// `address`; `None` means the node's address.
    pub address: Option<String>,
    pub port: Option<u16>,
    pub meta: BTreeMap<String, String>,
    pub enable_tag_override: bool,
    pub weights: Weights,
    /// `check` or `checks`, each with `service_id` set to this service.
    pub checks: Vec<CheckDefinition>,
    pub origin: Origin,
}

/// DNS SRV weights by health (Consul's defaults: passing 1, warning 1): the catalog's own type,
/// so a definition registers without conversion.
pub use crate::state::Weights;

/// A health check (`check { ... }`), of a service or of the node.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckDefinition {
    /// `id`; for a service's only check `service:<service id>`, for several `service:<id>:<n>`
    /// (from 1), for a node check its name: Consul's defaults.
    pub id: String,
    pub name: String,
    pub notes: Option<String>,
    /// The service the check belongs to; `None` for a node check.
    pub service_id: Option<String>,
    /// `status`: the status before the first run. Default critical, as Consul.
    pub initial_status: CheckStatus,
    pub kind: CheckKind,
    /// Consecutive results needed before the status changes (Consul's defaults: 0).
    pub success_before_passing: u32,
    pub failures_before_critical: u32,
    /// Deregister the service after its check has been critical this long.
    pub deregister_critical_service_after: Option<Duration>,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckStatus {
    Passing,
    Warning,
    #[default]
    Critical,
}

/// What a check does: exactly one kind per check, each with the settings only it has.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// `args` or `script`; the exit code decides (0 passing, 1 warning, other critical).
    Script { command: ScriptCommand, interval: Duration, timeout: Duration },
    /// `http`: 2xx passing, 429 warning, anything else critical.
    Http {
        url: String,
        method: String,
        header: BTreeMap<String, Vec<String>>,
        body: Option<String>,
        tls_skip_verify: bool,
        follow_redirects: bool,
        interval: Duration,
        timeout: Duration,
    },
    /// `tcp`: passing if a connection opens.
    Tcp { address: String, interval: Duration, timeout: Duration },
    /// `ttl`: critical unless updated through the API within `ttl`.
    Ttl { ttl: Duration },
    /// `alias_service` (and/or `alias_node`): mirrors another service's or node's health.
    Alias { service: Option<String>, node: Option<String> },
}

/// How a script check runs its command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptCommand {
    /// `args`: executed directly, no shell.
    Args(Vec<String>),
    /// `script`: Consul's legacy single string, run through `/bin/sh -c`.
    Shell(String),
}

/// Consul's default timeouts: a script 30 s, a TCP connection 10 s, an HTTP request 10 s or the
/// interval if that is shorter.
pub const SCRIPT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
pub const TCP_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
pub const HTTP_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// Which script checks the agent runs (`enable_script_checks`, `enable_local_script_checks`).
/// Running commands from config is code execution, so it is off unless asked for, as in Consul.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScriptChecks {
    #[default]
    Disabled,
    /// `enable_local_script_checks`: from config files only (not from the HTTP API).
    LocalOnly,
    /// `enable_script_checks`: from config files and the HTTP API.
    All,
}

/// Something accepted but probably not what was meant; the agent logs these at start and
/// `cairn validate` prints them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigWarning {
    #[error(
        "{}: {field}: interval {} is below the 1s minimum; using 1s, as Consul does",
        path.display(),
        duration::format_duration(*interval)
    )]
    IntervalRaised { path: PathBuf, field: String, interval: Duration },
    #[error(
        "{}: {field}: timeout {} is longer than the interval {}: a slow check delays the next run",
        path.display(),
        duration::format_duration(*timeout),
        duration::format_duration(*interval)
    )]
    TimeoutOverInterval { path: PathBuf, field: String, timeout: Duration, interval: Duration },
    #[error("{}: {field}: a Consul setting cairn does not implement yet; ignored", path.display())]
    NotImplemented { path: PathBuf, field: String },
}

/// What is wrong with one field of a service or check definition. The error carrying it names
/// the file and the field path (`services[1].checks[0].interval`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionProblem {
    #[error("unknown field")]
    UnknownField,
    #[error("set twice (as {first:?} and {second:?}, spellings of one field)")]
    DuplicateField { first: String, second: String },
    #[error("expected an object")]
    NotAnObject,
    #[error("expected an object or a list of objects")]
    NotObjectOrList,
    #[error("{message}")]
    BadValue { message: String },
    #[error("required")]
    Missing,
    #[error("a check needs one kind: args (or script), http, tcp, ttl or alias_service")]
    NoKind,
    #[error("a check has one kind, but this one sets both {first} and {second}")]
    TwoKinds { first: &'static str, second: &'static str },
    #[error("{kind} checks need an interval, such as \"10s\" (Consul: interval must be > 0)")]
    MissingInterval { kind: &'static str },
    #[error("applies only to {kind} checks")]
    WrongKind { kind: &'static str },
    #[error("must be longer than zero")]
    Zero,
    #[error("longer than {max} characters")]
    TooLong { max: usize },
    #[error("more than {max} entries")]
    TooMany { max: usize },
    #[error("one of passing, warning or critical (not {value:?})")]
    BadStatus { value: String },
    #[error("meta key {key:?}: letters, digits, '-' and '_' only, not starting with \"consul-\"")]
    BadMetaKey { key: String },
    #[error("ID {id:?} is already used by {first_field} in {}", first_path.display())]
    DuplicateId { id: String, first_path: PathBuf, first_field: String },
    #[error(
        "script checks are disabled on this agent; set enable_local_script_checks (checks from config \
         files) or enable_script_checks to true to run them"
    )]
    ScriptChecksDisabled,
    #[error("no service with ID {id:?} is defined on this agent")]
    UnknownService { id: String },
    #[error("more than {max} {what} on this agent")]
    TooManyOnAgent { what: &'static str, max: usize },
}

/// The definitions of one file, and what its checks warn about.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FileDefinitions {
    pub services: Vec<ServiceDefinition>,
    pub checks: Vec<CheckDefinition>,
    pub warnings: Vec<ConfigWarning>,
}

/// The top-level keys this module reads.
pub(crate) const DEFINITION_KEYS: &[&str] = &["service", "services", "check", "checks"];

/// Reads `service`, `services`, `check` and `checks` from a config document. Each may be an
/// object or a list of objects (HCL's repeated blocks become lists).
pub(crate) fn parse_definitions(path: &Path, document: &Map<String, Value>) -> Result<FileDefinitions, ConfigError> {
    let mut out = FileDefinitions::default();
    let mut parser = Parser { path, warnings: &mut out.warnings };
    for key in ["service", "services"] {
        for (field, object) in objects(path, key, document.get(key))? {
            out.services.push(parser.service(&field, object)?);
        }
    }
    for key in ["check", "checks"] {
        for (field, object) in objects(path, key, document.get(key))? {
            out.checks.push(parser.check(&field, object, None)?);
        }
    }
    Ok(out)
}

/// Where definitions sent to the agent's HTTP API come from, in errors: "request body: service.port: ...".
pub const API_BODY: &str = "request body";

/// A service from the body of `PUT /v1/agent/service/register`, with the rules of a config
/// file's `service` block. Consul's API spells fields `Name`, `ID`, `Check`, ...; keys match
/// case-insensitively and without underscores, so both spellings work. A definition that is not a
/// JSON object is an error naming the body.
pub fn service_from_api(body: &Value) -> Result<(ServiceDefinition, Vec<ConfigWarning>), ConfigError> {
    let path = Path::new(API_BODY);
    let Value::Object(object) = body else { return Err(problem(path, "service", DefinitionProblem::NotAnObject)) };
    let mut warnings = Vec::new();
    let service = Parser { path, warnings: &mut warnings }.service("service", object)?;
    Ok((service, warnings))
}

/// A check from the body of `PUT /v1/agent/check/register` (a node check, or a service's when it
/// names `ServiceID`), with the rules of a config file's `check` block.
pub fn check_from_api(body: &Value) -> Result<(CheckDefinition, Vec<ConfigWarning>), ConfigError> {
    let path = Path::new(API_BODY);
    let Value::Object(object) = body else { return Err(problem(path, "check", DefinitionProblem::NotAnObject)) };
    let mut warnings = Vec::new();
    let check = Parser { path, warnings: &mut warnings }.check("check", object, None)?;
    Ok((check, warnings))
}

fn problem(path: &Path, field: impl Into<String>, problem: DefinitionProblem) -> ConfigError {
    ConfigError::Definition { path: path.to_owned(), field: field.into(), problem }
}

/// An object in a file and its field path there (`services[2]`).
type Placed<'a> = (String, &'a Map<String, Value>);

/// The objects under `key`: one object (field `key`) or a list (fields `key[i]`).
fn objects<'a>(path: &Path, key: &str, value: Option<&'a Value>) -> Result<Vec<Placed<'a>>, ConfigError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(object)) => Ok(vec![(key.to_owned(), object)]),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Object(object) => Ok((format!("{key}[{i}]"), object)),
                _ => Err(problem(path, format!("{key}[{i}]"), DefinitionProblem::NotAnObject)),
            })
            .collect(),
        Some(_) => Err(problem(path, key, DefinitionProblem::NotObjectOrList)),
    }
}

/// Other spellings Consul accepts for a check's fields, beyond case and underscores. Only checks
/// have them: a service's `CheckID` is a mistake, not its `id`.
const CHECK_ALIASES: &[(&str, &str)] = &[("scriptargs", "args"), ("checkid", "id"), ("check_id", "id")];

/// Service keys of Consul's schema that cairn does not implement (Connect, ACL tokens,
/// Enterprise placement, ...): accepted with a warning, so a file written for Consul loads.
const IGNORED_SERVICE_KEYS: &[&str] =
    &["kind", "proxy", "connect", "tagged_addresses", "token", "namespace", "partition", "locality", "socket_path"];
/// Check options of Consul's schema cairn does not implement yet. (The keys of check kinds it
/// does not run, `grpc`, `h2ping`, `udp`, `docker_container_id`, `os_service`, stay errors: a
/// check silently not run would read as passing.)
const IGNORED_CHECK_KEYS: &[&str] = &[
    "grpc_use_tls",
    "h2ping_use_tls",
    "shell",
    "tls_server_name",
    "output_max_size",
    "token",
    "namespace",
    "partition",
];

/// Rewrites an object's keys to the field names of `T`: case-insensitive, underscores optional,
/// plus `aliases`. Keys in `ignored` (Consul's, not implemented) are dropped with a warning;
/// other unknown keys and two spellings of one field are errors.
fn canonical_keys<T: for<'de> Deserialize<'de>>(
    path: &Path,
    field: &str,
    object: &Map<String, Value>,
    aliases: &[(&str, &'static str)],
    ignored: (&[&str], &mut Vec<ConfigWarning>),
) -> Result<Map<String, Value>, ConfigError> {
    let (ignored, warnings) = ignored;
    let fields = super::file::struct_fields::<T>();
    let mut out = Map::new();
    let mut spelled: BTreeMap<&str, &str> = BTreeMap::new();
    for (key, value) in object {
        let lower = key.to_ascii_lowercase();
        let alias = aliases.iter().find(|(from, _)| *from == lower).map(|(_, to)| *to);
        let squashed = |f: &&str| f.replace('_', "") == lower.replace('_', "");
        let Some(name) = fields.iter().copied().find(|f| Some(*f) == alias || squashed(f)) else {
            if ignored.iter().any(squashed) {
                warnings.push(ConfigWarning::NotImplemented { path: path.to_owned(), field: format!("{field}.{key}") });
                continue;
            }
            return Err(problem(path, format!("{field}.{key}"), DefinitionProblem::UnknownField));
        };
        if let Some(first) = spelled.insert(name, key) {
            let duplicate = DefinitionProblem::DuplicateField { first: first.to_owned(), second: key.clone() };
            return Err(problem(path, format!("{field}.{key}"), duplicate));
        }
        out.insert(name.to_owned(), value.clone());
    }
    Ok(out)
}

/// Deserializes a canonical object into `T`, naming the field a type error is in.
fn typed<T: for<'de> Deserialize<'de>>(path: &Path, field: &str, object: Map<String, Value>) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(Value::Object(object)).map_err(|e| {
        let inner = e.path().to_string();
        let at = if inner == "." { field.to_owned() } else { format!("{field}.{inner}") };
        problem(path, at, DefinitionProblem::BadValue { message: e.inner().to_string() })
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    id: Option<String>,
    name: Option<String>,
    tags: Option<Vec<String>>,
    address: Option<String>,
    port: Option<u16>,
    meta: Option<BTreeMap<String, String>>,
    enable_tag_override: Option<bool>,
    weights: Option<Value>,
    check: Option<Value>,
    checks: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeights {
    passing: Option<u32>,
    warning: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCheck {
    id: Option<String>,
    name: Option<String>,
    notes: Option<String>,
    service_id: Option<String>,
    status: Option<String>,
    args: Option<Vec<String>>,
    script: Option<String>,
    http: Option<String>,
    method: Option<String>,
    header: Option<BTreeMap<String, Vec<String>>>,
    body: Option<String>,
    tls_skip_verify: Option<bool>,
    disable_redirects: Option<bool>,
    tcp: Option<String>,
    ttl: Option<String>,
    alias_service: Option<String>,
    alias_node: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    success_before_passing: Option<u32>,
    failures_before_critical: Option<u32>,
    deregister_critical_service_after: Option<String>,
}

struct Parser<'a> {
    path: &'a Path,
    warnings: &'a mut Vec<ConfigWarning>,
}

impl Parser<'_> {
    fn fail(&self, field: impl Into<String>, why: DefinitionProblem) -> ConfigError {
        problem(self.path, field, why)
    }

    fn service(&mut self, field: &str, object: &Map<String, Value>) -> Result<ServiceDefinition, ConfigError> {
        let ignored = (IGNORED_SERVICE_KEYS, &mut *self.warnings);
        let raw: RawService =
            typed(self.path, field, canonical_keys::<RawService>(self.path, field, object, &[], ignored)?)?;
        let name = raw.name.ok_or_else(|| self.fail(format!("{field}.name"), DefinitionProblem::Missing))?;
        self.text(&format!("{field}.name"), &name, NAME_LEN_MAX)?;
        let id = raw.id.unwrap_or_else(|| name.clone());
        self.text(&format!("{field}.id"), &id, NAME_LEN_MAX)?;
        let tags = raw.tags.unwrap_or_default();
        self.list(&format!("{field}.tags"), &tags, NAME_LEN_MAX)?;
        // Consul reads an empty address as none: the node's address.
        let address = raw.address.filter(|a| !a.is_empty());
        if let Some(address) = &address {
            self.text(&format!("{field}.address"), address, NAME_LEN_MAX)?;
        }
        let meta = raw.meta.unwrap_or_default();
        self.meta(&format!("{field}.meta"), &meta)?;
        let weights = self.weights(&format!("{field}.weights"), raw.weights.as_ref())?;
        let checks = self.service_checks(field, &id, &name, raw.check.as_ref(), raw.checks.as_ref())?;
        Ok(ServiceDefinition {
            id,
            name,
            tags,
            address,
            port: raw.port,
            meta,
            enable_tag_override: raw.enable_tag_override.unwrap_or(false),
            weights,
            checks,
            origin: Origin { path: self.path.to_owned(), field: field.to_owned() },
        })
    }

    /// A service's `check` and `checks`, with Consul's default IDs and names.
    fn service_checks(
        &mut self,
        field: &str,
        service_id: &str,
        service_name: &str,
        check: Option<&Value>,
        checks: Option<&Value>,
    ) -> Result<Vec<CheckDefinition>, ConfigError> {
        let mut objects_found = objects(self.path, &format!("{field}.check"), check)?;
        objects_found.extend(objects(self.path, &format!("{field}.checks"), checks)?);
        let several = objects_found.len() > 1;
        let mut out = Vec::new();
        for (n, (check_field, object)) in objects_found.into_iter().enumerate() {
            let default_id =
                if several { format!("service:{service_id}:{}", n + 1) } else { format!("service:{service_id}") };
            let defaults = CheckDefaults {
                id: default_id,
                name: format!("Service '{service_name}' check"),
                service_id: service_id.to_owned(),
            };
            out.push(self.check(&check_field, object, Some(defaults))?);
        }
        Ok(out)
    }

    fn weights(&mut self, field: &str, value: Option<&Value>) -> Result<Weights, ConfigError> {
        let Some(value) = value else { return Ok(Weights::default()) };
        let Value::Object(object) = value else {
            return Err(self.fail(field, DefinitionProblem::NotAnObject));
        };
        let raw: RawWeights = typed(
            self.path,
            field,
            canonical_keys::<RawWeights>(self.path, field, object, &[], (&[], &mut *self.warnings))?,
        )?;
        let base = Weights::default();
        Ok(Weights { passing: raw.passing.unwrap_or(base.passing), warning: raw.warning.unwrap_or(base.warning) })
    }

    /// A check; `service` carries a service's defaults when the check is inside one.
    fn check(
        &mut self,
        field: &str,
        object: &Map<String, Value>,
        service: Option<CheckDefaults>,
    ) -> Result<CheckDefinition, ConfigError> {
        let raw: RawCheck = typed(
            self.path,
            field,
            canonical_keys::<RawCheck>(
                self.path,
                field,
                object,
                CHECK_ALIASES,
                (IGNORED_CHECK_KEYS, &mut *self.warnings),
            )?,
        )?;
        let kind = self.kind(field, &raw)?;
        let (id, name, service_id) = match service {
            Some(defaults) => (
                raw.id.clone().unwrap_or(defaults.id),
                raw.name.clone().unwrap_or(defaults.name),
                Some(defaults.service_id),
            ),
            None => {
                let name =
                    raw.name.clone().ok_or_else(|| self.fail(format!("{field}.name"), DefinitionProblem::Missing))?;
                (raw.id.clone().unwrap_or_else(|| name.clone()), name, raw.service_id.clone())
            }
        };
        self.text(&format!("{field}.id"), &id, NAME_LEN_MAX)?;
        self.text(&format!("{field}.name"), &name, NAME_LEN_MAX)?;
        if let Some(notes) = &raw.notes {
            self.text(&format!("{field}.notes"), notes, TEXT_LEN_MAX)?;
        }
        Ok(CheckDefinition {
            id,
            name,
            notes: raw.notes.clone(),
            service_id,
            initial_status: self.status(field, raw.status.as_deref())?,
            kind,
            success_before_passing: raw.success_before_passing.unwrap_or(0),
            failures_before_critical: raw.failures_before_critical.unwrap_or(0),
            deregister_critical_service_after: self.duration(
                field,
                "deregister_critical_service_after",
                raw.deregister_critical_service_after.as_deref(),
            )?,
            origin: Origin { path: self.path.to_owned(), field: field.to_owned() },
        })
    }

    fn status(&self, field: &str, status: Option<&str>) -> Result<CheckStatus, ConfigError> {
        Ok(match status {
            None => CheckStatus::Critical,
            Some("passing") => CheckStatus::Passing,
            Some("warning") => CheckStatus::Warning,
            Some("critical") => CheckStatus::Critical,
            Some(other) => {
                let why = DefinitionProblem::BadStatus { value: other.to_owned() };
                return Err(self.fail(format!("{field}.status"), why));
            }
        })
    }

    fn duration(&self, field: &str, key: &str, text: Option<&str>) -> Result<Option<Duration>, ConfigError> {
        text.map(|text| {
            duration::parse_duration(text)
                .map_err(|message| self.fail(format!("{field}.{key}"), DefinitionProblem::BadValue { message }))
        })
        .transpose()
    }

    /// The one kind the check sets, with its settings checked.
    fn kind(&mut self, field: &str, raw: &RawCheck) -> Result<CheckKind, ConfigError> {
        let set = kinds_set(raw);
        let kind = match set.as_slice() {
            [] => return Err(self.fail(field, DefinitionProblem::NoKind)),
            [one] => *one,
            [first, second, ..] => {
                return Err(self.fail(field, DefinitionProblem::TwoKinds { first, second }));
            }
        };
        self.fields_of_other_kinds(field, raw, kind)?;
        let timeout = self.duration(field, "timeout", raw.timeout.as_deref())?;
        match kind {
            "ttl" => {
                let ttl = self.duration(field, "ttl", raw.ttl.as_deref())?.unwrap_or_default();
                if ttl.is_zero() {
                    return Err(self.fail(format!("{field}.ttl"), DefinitionProblem::Zero));
                }
                Ok(CheckKind::Ttl { ttl })
            }
            "alias_service" | "alias_node" => {
                for (key, value) in [("alias_service", &raw.alias_service), ("alias_node", &raw.alias_node)] {
                    if let Some(value) = value {
                        self.text(&format!("{field}.{key}"), value, NAME_LEN_MAX)?;
                    }
                }
                Ok(CheckKind::Alias { service: raw.alias_service.clone(), node: raw.alias_node.clone() })
            }
            interval_kind => {
                let interval = self.interval(field, interval_kind, raw.interval.as_deref())?;
                self.interval_kind(field, raw, interval_kind, interval, timeout)
            }
        }
    }

    /// Script, HTTP and TCP checks: their target and timeout.
    fn interval_kind(
        &mut self,
        field: &str,
        raw: &RawCheck,
        kind: &'static str,
        interval: Duration,
        timeout: Option<Duration>,
    ) -> Result<CheckKind, ConfigError> {
        if let Some(timeout) = timeout {
            if timeout.is_zero() {
                return Err(self.fail(format!("{field}.timeout"), DefinitionProblem::Zero));
            }
            if timeout > interval {
                let path = self.path.to_owned();
                self.warnings.push(ConfigWarning::TimeoutOverInterval {
                    path,
                    field: format!("{field}.timeout"),
                    timeout,
                    interval,
                });
            }
        }
        match kind {
            "args" | "script" => {
                let command = match (&raw.args, &raw.script) {
                    (Some(args), _) => {
                        self.list(&format!("{field}.args"), args, TEXT_LEN_MAX)?;
                        if args.is_empty() {
                            return Err(self.fail(format!("{field}.args"), DefinitionProblem::Missing));
                        }
                        ScriptCommand::Args(args.clone())
                    }
                    (None, script) => {
                        let script = script.clone().unwrap_or_default();
                        self.text(&format!("{field}.script"), &script, TEXT_LEN_MAX)?;
                        ScriptCommand::Shell(script)
                    }
                };
                Ok(CheckKind::Script { command, interval, timeout: timeout.unwrap_or(SCRIPT_TIMEOUT_DEFAULT) })
            }
            "tcp" => {
                let address = raw.tcp.clone().unwrap_or_default();
                self.text(&format!("{field}.tcp"), &address, NAME_LEN_MAX)?;
                Ok(CheckKind::Tcp { address, interval, timeout: timeout.unwrap_or(TCP_TIMEOUT_DEFAULT) })
            }
            _ => self.http(field, raw, interval, timeout),
        }
    }

    fn http(
        &self,
        field: &str,
        raw: &RawCheck,
        interval: Duration,
        timeout: Option<Duration>,
    ) -> Result<CheckKind, ConfigError> {
        let url = raw.http.clone().unwrap_or_default();
        self.text(&format!("{field}.http"), &url, TEXT_LEN_MAX)?;
        let method = raw.method.clone().unwrap_or_else(|| "GET".to_owned());
        self.text(&format!("{field}.method"), &method, NAME_LEN_MAX)?;
        let header = raw.header.clone().unwrap_or_default();
        if header.len() > LIST_LEN_MAX {
            return Err(self.fail(format!("{field}.header"), DefinitionProblem::TooMany { max: LIST_LEN_MAX }));
        }
        for (name, values) in &header {
            self.text(&format!("{field}.header"), name, NAME_LEN_MAX)?;
            self.list(&format!("{field}.header.{name}"), values, TEXT_LEN_MAX)?;
        }
        if let Some(body) = &raw.body {
            self.text(&format!("{field}.body"), body, BODY_LEN_MAX)?;
        }
        Ok(CheckKind::Http {
            url,
            method,
            header,
            body: raw.body.clone(),
            tls_skip_verify: raw.tls_skip_verify.unwrap_or(false),
            // Consul follows redirects unless `disable_redirects`; cairn follows them only when
            // `disable_redirects = false` is written out, because following them by default is
            // how CVE-2022-29153 turned HTTP checks into a server-side request forgery.
            follow_redirects: raw.disable_redirects == Some(false),
            interval,
            // Consul: 10 s, or the interval when that is shorter, so a run ends before the next.
            timeout: timeout.unwrap_or(interval.min(HTTP_TIMEOUT_DEFAULT)),
        })
    }

    /// `interval`, required; below Consul's 1 s minimum it is raised, with a warning.
    fn interval(&mut self, field: &str, kind: &'static str, text: Option<&str>) -> Result<Duration, ConfigError> {
        let interval = self.duration(field, "interval", text)?.unwrap_or_default();
        let kind_name = if kind == "args" { "script" } else { kind };
        if interval.is_zero() {
            return Err(self.fail(format!("{field}.interval"), DefinitionProblem::MissingInterval { kind: kind_name }));
        }
        if interval < CHECK_INTERVAL_MIN {
            let path = self.path.to_owned();
            self.warnings.push(ConfigWarning::IntervalRaised { path, field: format!("{field}.interval"), interval });
            return Ok(CHECK_INTERVAL_MIN);
        }
        Ok(interval)
    }

    /// Settings that belong to another kind than the one set are mistakes, not silently dropped.
    fn fields_of_other_kinds(&self, field: &str, raw: &RawCheck, kind: &str) -> Result<(), ConfigError> {
        let http_only = [
            ("method", raw.method.is_some()),
            ("header", raw.header.is_some()),
            ("body", raw.body.is_some()),
            ("tls_skip_verify", raw.tls_skip_verify.is_some()),
            ("disable_redirects", raw.disable_redirects.is_some()),
        ];
        if kind != "http" {
            if let Some((key, _)) = http_only.iter().find(|(_, set)| *set) {
                return Err(self.fail(format!("{field}.{key}"), DefinitionProblem::WrongKind { kind: "http" }));
            }
        }
        let needs_interval = matches!(kind, "args" | "script" | "http" | "tcp");
        for (key, set) in [("interval", raw.interval.is_some()), ("timeout", raw.timeout.is_some())] {
            if set && !needs_interval {
                let why = DefinitionProblem::WrongKind { kind: "script, http and tcp" };
                return Err(self.fail(format!("{field}.{key}"), why));
            }
        }
        Ok(())
    }

    fn text(&self, field: &str, value: &str, max: usize) -> Result<(), ConfigError> {
        if value.is_empty() {
            return Err(self.fail(field, DefinitionProblem::Missing));
        }
        if value.chars().count() > max {
            return Err(self.fail(field, DefinitionProblem::TooLong { max }));
        }
        Ok(())
    }

    fn list(&self, field: &str, values: &[String], max: usize) -> Result<(), ConfigError> {
        if values.len() > LIST_LEN_MAX {
            return Err(self.fail(field, DefinitionProblem::TooMany { max: LIST_LEN_MAX }));
        }
        for (i, value) in values.iter().enumerate() {
            if value.chars().count() > max {
                return Err(self.fail(format!("{field}[{i}]"), DefinitionProblem::TooLong { max }));
            }
        }
        Ok(())
    }

    /// Consul's metadata rules (`structs.ValidateServiceMetadata`).
    fn meta(&self, field: &str, meta: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        if meta.len() > META_PAIRS_MAX {
            return Err(self.fail(field, DefinitionProblem::TooMany { max: META_PAIRS_MAX }));
        }
        for (key, value) in meta {
            let good = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
            if key.is_empty() || !key.chars().all(good) || key.starts_with("consul-") {
                return Err(self.fail(field, DefinitionProblem::BadMetaKey { key: key.clone() }));
            }
            if key.len() > META_KEY_LEN_MAX {
                return Err(self.fail(format!("{field}.{key}"), DefinitionProblem::TooLong { max: META_KEY_LEN_MAX }));
            }
            if value.chars().count() > META_VALUE_LEN_MAX {
                let why = DefinitionProblem::TooLong { max: META_VALUE_LEN_MAX };
                return Err(self.fail(format!("{field}.{key}"), why));
            }
        }
        Ok(())
    }
}

/// What a check inside a service gets unless it sets its own.
struct CheckDefaults {
    id: String,
    name: String,
    service_id: String,
}

/// The kind fields a check sets, in a fixed order so errors are stable.
fn kinds_set(raw: &RawCheck) -> Vec<&'static str> {
    let alias = raw.alias_service.is_some() || raw.alias_node.is_some();
    [
        ("args", raw.args.is_some()),
        ("script", raw.script.is_some()),
        ("http", raw.http.is_some()),
        ("tcp", raw.tcp.is_some()),
        ("ttl", raw.ttl.is_some()),
        (if raw.alias_service.is_some() { "alias_service" } else { "alias_node" }, alias),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect()
}

/// Rules across every file, after merging: limits per agent, unique IDs, script checks allowed,
/// node checks' `service_id` naming a defined service.
pub(crate) fn validate_all(local: &LocalServices) -> Result<(), ConfigError> {
    let (services, checks) = (&local.services, &local.checks);
    let at = |origin: &Origin, why| problem(&origin.path, origin.field.clone(), why);
    if services.len() > SERVICES_MAX {
        let origin = &services[SERVICES_MAX].origin;
        return Err(at(origin, DefinitionProblem::TooManyOnAgent { what: "services", max: SERVICES_MAX }));
    }
    let all_checks: Vec<&CheckDefinition> = local.all_checks().collect();
    if all_checks.len() > CHECKS_MAX {
        let origin = &all_checks[CHECKS_MAX].origin;
        return Err(at(origin, DefinitionProblem::TooManyOnAgent { what: "checks", max: CHECKS_MAX }));
    }
    unique_ids(services.iter().map(|s| (s.id.as_str(), &s.origin)), "id")?;
    unique_ids(all_checks.iter().map(|c| (c.id.as_str(), &c.origin)), "id")?;
    for check in &all_checks {
        if local.script_checks == ScriptChecks::Disabled && matches!(check.kind, CheckKind::Script { .. }) {
            return Err(at(&check.origin, DefinitionProblem::ScriptChecksDisabled));
        }
    }
    for check in checks {
        if let Some(id) = &check.service_id {
            if !services.iter().any(|s| &s.id == id) {
                let why = DefinitionProblem::UnknownService { id: id.clone() };
                return Err(problem(&check.origin.path, format!("{}.service_id", check.origin.field), why));
            }
        }
    }
    Ok(())
}

/// The first ID seen twice, reported at its second place and naming the first.
fn unique_ids<'a>(items: impl Iterator<Item = (&'a str, &'a Origin)>, key: &str) -> Result<(), ConfigError> {
    let mut seen: BTreeMap<&str, &Origin> = BTreeMap::new();
    for (id, origin) in items {
        if let Some(first) = seen.insert(id, origin) {
            let why = DefinitionProblem::DuplicateId {
                id: id.to_owned(),
                first_path: first.path.clone(),
                first_field: first.field.clone(),
            };
            return Err(problem(&origin.path, format!("{}.{key}", origin.field), why));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::file::{parse, parse_hcl};
    use super::super::layer::Layer;
    use super::super::validate::build;
    use super::super::AgentConfig;
    use super::*;

    #[test]
    fn http_checks_follow_redirects_only_when_disable_redirects_is_false() {
        let follows = |extra: &str| {
            let body = format!(r#"{{"Name": "c", "HTTP": "http://127.0.0.1/", "Interval": "10s"{extra}}}"#);
            let (check, _) = check_from_api(&serde_json::from_str(&body).unwrap()).unwrap();
            matches!(check.kind, CheckKind::Http { follow_redirects: true, .. })
        };
        assert!(!follows(""), "not by default (CVE-2022-29153)");
        assert!(!follows(r#", "DisableRedirects": true"#));
        assert!(follows(r#", "DisableRedirects": false"#));
    }

    fn json(text: &str) -> Result<Layer, ConfigError> {
        parse(Path::new("conf.d/web.json"), text.as_bytes())
    }

    fn hcl(text: &str) -> Result<Layer, ConfigError> {
        parse_hcl(Path::new("conf.d/web.hcl"), text.as_bytes())
    }

    /// Builds the agent config from layers as the agent would, with script checks enabled unless
    /// a layer says otherwise.
    fn agent(layers: Vec<Layer>) -> Result<AgentConfig, ConfigError> {
        let mut merged =
            Layer { data_dir: Some("/d".into()), enable_local_script_checks: Some(true), ..Layer::default() };
        for layer in layers {
            merged.merge(layer);
        }
        build(merged, false, "host-1")
    }

    /// Asserts a definition error at `field` with a problem matching `expected`.
    fn assert_problem(
        result: Result<impl std::fmt::Debug, ConfigError>,
        field: &str,
        expected: fn(&DefinitionProblem) -> bool,
    ) {
        match result {
            Err(ConfigError::Definition { field: f, problem, .. }) if f == field && expected(&problem) => {}
            other => panic!("expected a problem at {field}, got {other:?}"),
        }
    }

    /// The seed's file parses as written: a script check through a shell, ID defaults applied.
    #[test]
    fn seed_file_parses() {
        let layer = json(
            r#"{"service": {"name": "elasticsearch", "port": 9200, "check": {"script": "curl -s http://127.0.0.1:9200", "interval": "10s"}}}"#,
        )
        .unwrap();
        let config = agent(vec![layer]).unwrap();
        let service = &config.local.services[0];
        assert_eq!(
            (service.id.as_str(), service.name.as_str(), service.port),
            ("elasticsearch", "elasticsearch", Some(9200))
        );
        let check = &service.checks[0];
        assert_eq!(check.id, "service:elasticsearch");
        assert_eq!(check.name, "Service 'elasticsearch' check");
        assert_eq!(check.service_id.as_deref(), Some("elasticsearch"));
        assert_eq!(check.initial_status, CheckStatus::Critical);
        assert_eq!(
            check.kind,
            CheckKind::Script {
                command: ScriptCommand::Shell("curl -s http://127.0.0.1:9200".into()),
                interval: Duration::from_secs(10),
                timeout: SCRIPT_TIMEOUT_DEFAULT,
            }
        );
        assert!(config.ignored_keys.is_empty());
    }

    /// Every service field and every check kind is read into its typed form.
    #[test]
    fn every_field_and_kind_parses() {
        let layer = json(
            r#"{"services": [{"id": "web-1", "name": "web", "tags": ["v1"], "address": "10.0.0.5", "port": 80,
                "meta": {"version": "1"}, "enable_tag_override": true, "weights": {"passing": 3, "warning": 2},
                "checks": [
                  {"http": "https://localhost/health", "method": "POST", "header": {"X-A": ["1", "2"]}, "body": "{}",
                   "tls_skip_verify": true, "disable_redirects": true, "interval": "5s", "timeout": "2s",
                   "status": "passing", "notes": "n", "success_before_passing": 2, "failures_before_critical": 3,
                   "deregister_critical_service_after": "90m"},
                  {"tcp": "localhost:80", "interval": "10s"},
                  {"args": ["/bin/check", "-q"], "interval": "1m"},
                  {"ttl": "30s"},
                  {"alias_service": "db", "alias_node": "n2"}]}]}"#,
        )
        .unwrap();
        let config = agent(vec![layer]).unwrap();
        let web = &config.local.services[0];
        assert_eq!(web.weights, Weights { passing: 3, warning: 2 });
        assert!(web.enable_tag_override);
        assert_eq!(web.meta["version"], "1");
        let ids: Vec<&str> = web.checks.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            ["service:web-1:1", "service:web-1:2", "service:web-1:3", "service:web-1:4", "service:web-1:5"]
        );
        let CheckKind::Http { method, header, follow_redirects, tls_skip_verify, timeout, .. } = &web.checks[0].kind
        else {
            panic!("{:?}", web.checks[0].kind)
        };
        assert_eq!((method.as_str(), *follow_redirects, *tls_skip_verify), ("POST", false, true));
        assert_eq!(header["X-A"], ["1", "2"]);
        assert_eq!(*timeout, Duration::from_secs(2));
        assert_eq!(web.checks[0].deregister_critical_service_after, Some(Duration::from_secs(5400)));
        assert_eq!(web.checks[0].initial_status, CheckStatus::Passing);
        assert!(matches!(&web.checks[1].kind, CheckKind::Tcp { timeout, .. } if *timeout == TCP_TIMEOUT_DEFAULT));
        assert!(
            matches!(&web.checks[2].kind, CheckKind::Script { command: ScriptCommand::Args(a), .. } if a.len() == 2)
        );
        assert_eq!(web.checks[3].kind, CheckKind::Ttl { ttl: Duration::from_secs(30) });
        assert_eq!(web.checks[4].kind, CheckKind::Alias { service: Some("db".into()), node: Some("n2".into()) });
    }

    /// Consul's API spellings (PascalCase, no underscores) name the same fields.
    #[test]
    fn consul_aliases_are_accepted() {
        let layer = json(
            r#"{"Service": {"Name": "web", "ID": "w", "EnableTagOverride": true, "Check": {"CheckID": "c1",
                "HTTP": "http://x", "Interval": "10s", "TLSSkipVerify": true, "DeregisterCriticalServiceAfter": "1m"}},
                "checks": [{"Name": "disk", "ScriptArgs": ["df"], "Interval": "30s", "ServiceID": "w"}]}"#,
        );
        // Top-level keys stay Consul's config spelling (lower-case); only definitions take aliases.
        assert!(matches!(layer, Err(ConfigError::UnknownKey { ref key_path, .. }) if key_path == "Service"));
        let layer = json(
            r#"{"service": {"Name": "web", "ID": "w", "EnableTagOverride": true, "Check": {"CheckID": "c1",
                "HTTP": "http://x", "Interval": "10s", "TLSSkipVerify": true, "DeregisterCriticalServiceAfter": "1m"}},
                "checks": [{"Name": "disk", "ScriptArgs": ["df"], "Interval": "30s", "ServiceID": "w"}]}"#,
        )
        .unwrap();
        let config = agent(vec![layer]).unwrap();
        assert_eq!(config.local.services[0].id, "w");
        assert!(config.local.services[0].enable_tag_override);
        assert_eq!(config.local.services[0].checks[0].id, "c1");
        assert!(matches!(config.local.services[0].checks[0].kind, CheckKind::Http { tls_skip_verify: true, .. }));
        assert_eq!(config.local.checks[0].id, "disk", "a node check's ID defaults to its name");
        assert_eq!(config.local.checks[0].service_id.as_deref(), Some("w"));
        let err = json(r#"{"service": {"name": "web", "CheckID": "c"}}"#).unwrap_err();
        assert!(matches!(err, ConfigError::Definition { ref field, .. } if field == "service.CheckID"), "{err:?}");
    }

    /// HCL blocks map to the same structure: repeated `service` blocks become a list, and the
    /// whole agent config can be HCL.
    #[test]
    fn hcl_blocks_map_like_json() {
        let layer = hcl(r#"
node_name = "n1"
enable_script_checks = true
ports { http = 8501 }
service {
  name = "web"
  port = 80
  check {
    http     = "http://localhost/health"
    interval = "10s"
    header   = { Accept = ["text/plain"] }
  }
}
service {
  name = "db"
  checks {
    tcp      = "localhost:5432"
    interval = "5s"
  }
  checks { ttl = "1m" }
}
check {
  name = "mem"
  args = ["free"]
  interval = "1m"
}
"#)
        .unwrap();
        assert_eq!(layer.node_name.as_deref(), Some("n1"));
        assert_eq!(layer.ports.http, Some(8501));
        let config = agent(vec![layer]).unwrap();
        assert_eq!(config.local.script_checks, ScriptChecks::All);
        let names: Vec<&str> = config.local.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["web", "db"]);
        assert_eq!(config.local.services[0].checks[0].id, "service:web");
        assert_eq!(config.local.services[1].checks[1].id, "service:db:2");
        assert_eq!(config.local.checks[0].id, "mem");
        assert_eq!(
            config.local.services[0].origin,
            Origin { path: "conf.d/web.hcl".into(), field: "service[0]".into() }
        );
    }

    /// A definition in HCL gets the same errors as in JSON: file and field path.
    #[test]
    fn hcl_definition_errors_name_the_field() {
        let err = hcl("service {\n  name = \"a\"\n  check {\n    tcp = \"x:1\"\n  }\n}").unwrap_err();
        assert!(matches!(&err, ConfigError::Definition { field, .. } if field == "service.check.interval"), "{err:?}");
        let err = hcl("service {\n  name = \"a\"\n  colour = \"b\"\n}").unwrap_err();
        assert!(matches!(&err, ConfigError::Definition { field, .. } if field == "service.colour"), "{err:?}");
    }

    /// Unknown fields in a service, a check or the weights are errors naming their path.
    #[test]
    fn unknown_fields_are_errors() {
        assert_problem(json(r#"{"service":{"name":"a","colour":"b"}}"#), "service.colour", |p| {
            *p == DefinitionProblem::UnknownField
        });
        assert_problem(
            json(r#"{"service":{"name":"a","checks":[{"ttl":"1s","intervall":"2s"}]}}"#),
            "service.checks[0].intervall",
            |p| *p == DefinitionProblem::UnknownField,
        );
        assert_problem(json(r#"{"service":{"name":"a","weights":{"passin":1}}}"#), "service.weights.passin", |p| {
            *p == DefinitionProblem::UnknownField
        });
        assert_problem(json(r#"{"service":{"name":"a","id":"x","ID":"y"}}"#), "service.id", |p| {
            matches!(p, DefinitionProblem::DuplicateField { .. })
        });
    }

    /// A file written for Consul with settings cairn does not implement yet (Connect, tokens, TLS
    /// server names) loads, each such setting named in a warning; a check of a kind cairn cannot
    /// run is still refused.
    #[test]
    fn consul_settings_not_implemented_are_warnings() {
        let text = r#"{"service":{"name":"web","port":80,"token":"t","Connect":{"native":true},
            "check":{"http":"https://127.0.0.1/","interval":"10s","tls_server_name":"web"}}}"#;
        let config = agent(vec![json(text).unwrap()]).expect("loads");
        assert_eq!(config.local.services.len(), 1);
        let fields: Vec<String> = config
            .local
            .warnings
            .iter()
            .filter_map(|w| match w {
                ConfigWarning::NotImplemented { field, .. } => Some(field.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(fields, ["service.Connect", "service.token", "service.check.tls_server_name"]);
        assert_problem(json(r#"{"check":{"name":"g","grpc":"127.0.0.1:9000","interval":"10s"}}"#), "check.grpc", |p| {
            *p == DefinitionProblem::UnknownField
        });
    }

    /// A check needs exactly one kind.
    #[test]
    fn check_kind_rules() {
        assert_problem(json(r#"{"check":{"name":"c","interval":"10s"}}"#), "check", |p| {
            *p == DefinitionProblem::NoKind
        });
        assert_problem(
            json(r#"{"check":{"name":"c","http":"http://x","tcp":"x:1","interval":"10s"}}"#),
            "check",
            |p| *p == DefinitionProblem::TwoKinds { first: "http", second: "tcp" },
        );
        assert_problem(json(r#"{"check":{"name":"c","args":["a"],"script":"a","interval":"10s"}}"#), "check", |p| {
            matches!(p, DefinitionProblem::TwoKinds { .. })
        });
        assert_problem(
            json(r#"{"check":{"name":"c","tcp":"x:1","method":"POST","interval":"10s"}}"#),
            "check.method",
            |p| *p == DefinitionProblem::WrongKind { kind: "http" },
        );
        assert_problem(json(r#"{"check":{"name":"c","ttl":"0s"}}"#), "check.ttl", |p| *p == DefinitionProblem::Zero);
        assert_problem(json(r#"{"check":{"name":"c","ttl":"10s","interval":"1s"}}"#), "check.interval", |p| {
            matches!(p, DefinitionProblem::WrongKind { .. })
        });
    }

    /// Script, HTTP and TCP checks need an interval; a zero one counts as missing.
    #[test]
    fn interval_is_required() {
        for (kind, body) in
            [("script", r#""script":"true""#), ("http", r#""http":"http://x""#), ("tcp", r#""tcp":"x:1""#)]
        {
            let text = format!(r#"{{"check":{{"name":"c",{body}}}}}"#);
            assert_problem(json(&text), "check.interval", |p| matches!(p, DefinitionProblem::MissingInterval { .. }));
            let zero = format!(r#"{{"check":{{"name":"c",{body},"interval":"0s"}}}}"#);
            assert!(json(&zero).is_err(), "{kind}");
        }
    }

    /// An interval under 1 s is raised to 1 s with a warning, and a timeout over the interval is
    /// warned about: Consul accepts both, so cairn does too, but says so.
    #[test]
    fn short_intervals_and_long_timeouts_warn() {
        let layer = json(r#"{"check":{"name":"c","tcp":"x:1","interval":"100ms"}}"#).unwrap();
        let config = agent(vec![layer]).unwrap();
        assert!(
            matches!(config.local.checks[0].kind, CheckKind::Tcp { interval, .. } if interval == CHECK_INTERVAL_MIN)
        );
        assert!(
            matches!(&config.local.warnings[..], [ConfigWarning::IntervalRaised { field, .. }] if field == "check.interval")
        );
        let layer = json(r#"{"check":{"name":"c","http":"http://x","interval":"5s","timeout":"10s"}}"#).unwrap();
        let config = agent(vec![layer]).unwrap();
        assert!(
            matches!(&config.local.warnings[..], [ConfigWarning::TimeoutOverInterval { field, .. }] if field == "check.timeout")
        );
    }

    /// Names are required where Consul requires them; values of the wrong type name their field.
    #[test]
    fn missing_and_bad_values() {
        assert_problem(json(r#"{"service":{"port":80}}"#), "service.name", |p| *p == DefinitionProblem::Missing);
        assert_problem(json(r#"{"check":{"ttl":"1s"}}"#), "check.name", |p| *p == DefinitionProblem::Missing);
        assert_problem(json(r#"{"service":{"name":"a","port":"80"}}"#), "service.port", |p| {
            matches!(p, DefinitionProblem::BadValue { .. })
        });
        assert_problem(json(r#"{"service":{"name":"a","port":70000}}"#), "service.port", |p| {
            matches!(p, DefinitionProblem::BadValue { .. })
        });
        assert_problem(json(r#"{"check":{"name":"c","ttl":"5x"}}"#), "check.ttl", |p| {
            matches!(p, DefinitionProblem::BadValue { .. })
        });
        assert_problem(json(r#"{"check":{"name":"c","ttl":"1s","status":"ok"}}"#), "check.status", |p| {
            matches!(p, DefinitionProblem::BadStatus { .. })
        });
        assert_problem(json(r#"{"services":{"name":"a"},"service":[1]}"#), "service[0]", |p| {
            *p == DefinitionProblem::NotAnObject
        });
        assert_problem(json(r#"{"service":"web"}"#), "service", |p| *p == DefinitionProblem::NotObjectOrList);
    }

    /// Field lengths, list lengths and Consul's metadata rules are enforced.
    #[test]
    fn sizes_are_limited() {
        let long = "a".repeat(NAME_LEN_MAX + 1);
        assert_problem(json(&format!(r#"{{"service":{{"name":"{long}"}}}}"#)), "service.name", |p| {
            matches!(p, DefinitionProblem::TooLong { .. })
        });
        let tags: Vec<String> = (0..=LIST_LEN_MAX).map(|i| format!("\"t{i}\"")).collect();
        let text = format!(r#"{{"service":{{"name":"a","tags":[{}]}}}}"#, tags.join(","));
        assert_problem(json(&text), "service.tags", |p| matches!(p, DefinitionProblem::TooMany { .. }));
        assert_problem(json(r#"{"service":{"name":"a","meta":{"consul-x":"1"}}}"#), "service.meta", |p| {
            matches!(p, DefinitionProblem::BadMetaKey { .. })
        });
        let value = "v".repeat(META_VALUE_LEN_MAX + 1);
        assert_problem(
            json(&format!(r#"{{"service":{{"name":"a","meta":{{"k":"{value}"}}}}}}"#)),
            "service.meta.k",
            |p| matches!(p, DefinitionProblem::TooLong { .. }),
        );
    }

    /// More services than an agent may hold is refused, naming the first one over the limit.
    #[test]
    fn services_per_agent_are_limited() {
        let services: Vec<String> = (0..=SERVICES_MAX).map(|i| format!(r#"{{"name":"s{i}"}}"#)).collect();
        let layer = json(&format!(r#"{{"services":[{}]}}"#, services.join(","))).unwrap();
        assert_problem(agent(vec![layer]), &format!("services[{SERVICES_MAX}]"), |p| {
            matches!(p, DefinitionProblem::TooManyOnAgent { .. })
        });
    }

    /// The same service ID in two files is refused at the second, naming the first.
    #[test]
    fn duplicate_service_ids_across_files() {
        let a = parse(Path::new("a.json"), br#"{"service":{"name":"web"}}"#).unwrap();
        let b = parse(Path::new("b.json"), br#"{"service":{"name":"web","port":81}}"#).unwrap();
        let err = agent(vec![a, b]).unwrap_err();
        let ConfigError::Definition { path, field, problem } = &err else { panic!("{err:?}") };
        assert_eq!((path.as_path(), field.as_str()), (Path::new("b.json"), "service.id"));
        assert!(
            matches!(problem, DefinitionProblem::DuplicateId { first_path, .. } if first_path == Path::new("a.json"))
        );
        assert!(err.to_string().contains("a.json"), "{err}");
        let c = parse(Path::new("c.json"), br#"{"checks":[{"name":"x","ttl":"1s"},{"name":"x","ttl":"2s"}]}"#).unwrap();
        assert_problem(agent(vec![c]), "checks[1].id", |p| matches!(p, DefinitionProblem::DuplicateId { .. }));
    }

    /// Script checks are refused unless a setting enables them, and the error names both settings.
    #[test]
    fn script_checks_need_enabling() {
        let text = r#"{"service":{"name":"a","check":{"args":["true"],"interval":"10s"}}}"#;
        let mut merged = Layer { data_dir: Some("/d".into()), ..Layer::default() };
        merged.merge(json(text).unwrap());
        let err = build(merged.clone(), false, "h").unwrap_err();
        assert!(
            matches!(&err, ConfigError::Definition { problem: DefinitionProblem::ScriptChecksDisabled, field, .. } if field == "service.check")
        );
        let message = err.to_string();
        assert!(
            message.contains("enable_local_script_checks") && message.contains("enable_script_checks"),
            "{message}"
        );
        merged.enable_script_checks = Some(true);
        assert_eq!(build(merged, false, "h").unwrap().local.script_checks, ScriptChecks::All);
    }

    /// A node check naming a service must name one defined on this agent.
    #[test]
    fn check_service_id_must_exist() {
        let layer = json(r#"{"check":{"name":"c","ttl":"1s","service_id":"nope"}}"#).unwrap();
        assert_problem(agent(vec![layer]), "check.service_id", |p| {
            matches!(p, DefinitionProblem::UnknownService { .. })
        });
    }
}
