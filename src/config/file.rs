//! Config files: finding them, reading them (bounded), parsing JSON or HCL into a [`Layer`] with
//! errors that name the file, field, line and column, and sorting their keys into known,
//! known-but-ignored and unknown.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::dns::{DnsConfigLayer, IGNORED_DNS_CONFIG_KEYS, SOA_KEYS};
use super::layer::{object_only, AutopilotLayer, Layer, PerformanceLayer, PortsLayer};
use super::services::{parse_definitions, DEFINITION_KEYS};
use super::ConfigError;

/// Config files are a few kilobytes; a bigger one is a mistake (a log or a binary named `.json`).
pub const CONFIG_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// Top-level Consul keys that cairn accepts but does not implement yet. A file using them works
/// unchanged, and the agent warns about each one at start (see `AgentConfig::ignored_keys`). When
/// cairn implements a key, remove it from this list and add it as a field of `Layer` (in `layer.rs`).
pub const IGNORED_TOP_LEVEL_KEYS: &[&str] = &[
    // Check runner settings: the checks themselves are read (`services.rs`), not run yet.
    "check_output_max_size",
    "check_update_interval",
    "discard_check_output",
    "enable_agent_tls_for_checks",
    "watches",
    // ACLs and encryption.
    "acl",
    "acl_agent_master_token",
    "acl_agent_token",
    "acl_datacenter",
    "acl_default_policy",
    "acl_down_policy",
    "acl_enable_key_list_policy",
    "acl_master_token",
    "acl_replication_token",
    "acl_token",
    "acl_ttl",
    "enable_acl_replication",
    // TLS, in the `tls` stanza and in its deprecated top-level spellings.
    "tls",
    "auto_encrypt",
    "auto_config",
    "ca_file",
    "ca_path",
    "cert_file",
    "key_file",
    "tls_cipher_suites",
    "tls_min_version",
    "tls_prefer_server_cipher_suites",
    "verify_incoming",
    "verify_incoming_https",
    "verify_incoming_rpc",
    "verify_outgoing",
    "verify_server_hostname",
    "server_name",
    // HTTP interface tuning and listener addresses.
    "addresses",
    "http_config",
    "limits",
    "cache",
    "default_query_time",
    "max_query_time",
    "discovery_max_stale",
    "disable_http_unprintable_char_filter",
    "disable_remote_exec",
    "unix_sockets",
    "use_streaming_backend",
    "rpc",
    "xds",
    // UI.
    "ui",
    "ui_config",
    "ui_dir",
    "ui_content_path",
    // Cluster topology, addresses and gossip tuning cairn does not have yet.
    "primary_datacenter",
    "primary_gateways",
    "primary_gateways_interval",
    "advertise_addr_ipv4",
    "advertise_addr_ipv6",
    "advertise_addr_wan",
    "advertise_addr_wan_ipv4",
    "advertise_addr_wan_ipv6",
    "advertise_reconnect_timeout",
    "serf_lan",
    "serf_wan",
    "serf_lan_allowed_cidrs",
    "serf_wan_allowed_cidrs",
    "retry_join_wan",
    "retry_interval_wan",
    "retry_max_wan",
    "start_join_wan",
    "translate_wan_addrs",
    "tagged_addresses",
    "node_meta",
    "gossip_lan",
    "gossip_wan",
    "reconnect_timeout_wan",
    "disable_coordinates",
    "disable_host_node_id",
    "segment",
    "segments",
    "partition",
    "read_replica",
    "non_voting_server",
    "locality",
    "peering",
    "connect",
    "config_entries",
    "protocol",
    "raft_protocol",
    "raft_snapshot_interval",
    "raft_logstore",
    "raft_boltdb",
    "session_ttl_min",
    "enable_central_service_config",
    // Agent lifecycle and housekeeping.
    "rejoin_after_leave",
    "auto_reload_config",
    "disable_update_check",
    "disable_anonymous_signature",
    "enable_debug",
    "pid_file",
    // Logging and telemetry beyond `log_level`.
    "log_json",
    "log_file",
    "log_rotate_bytes",
    "log_rotate_duration",
    "log_rotate_max_files",
    "log_sublevels",
    "enable_syslog",
    "syslog_facility",
    "telemetry",
    "audit",
    // Enterprise and HCP.
    "license_path",
    "reporting",
    "cloud",
    "snapshot_agent",
];

/// Keys inside `ports` that Consul knows and cairn does not listen on yet.
pub const IGNORED_PORTS_KEYS: &[&str] = &[
    "https",
    "grpc",
    "grpc_tls",
    "proxy_min_port",
    "proxy_max_port",
    "sidecar_min_port",
    "sidecar_max_port",
    "expose_min_port",
    "expose_max_port",
];

/// Keys inside `autopilot` that Consul knows and cairn does not implement (Enterprise features).
pub const IGNORED_AUTOPILOT_KEYS: &[&str] =
    &["redundancy_zone_tag", "disable_upgrade_migration", "upgrade_version_tag"];

/// Keys inside `performance` that Consul knows and cairn does not implement yet.
pub const IGNORED_PERFORMANCE_KEYS: &[&str] = &["leave_drain_time", "rpc_hold_timeout"];

/// The files `path` stands for: itself if it is a file, else [`config_files_in`] it. `cairn
/// validate` and `-config-file` take either, as Consul's do.
pub fn expand(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let metadata = std::fs::metadata(path).map_err(|source| ConfigError::File { path: path.to_owned(), source })?;
    if metadata.is_dir() {
        config_files_in(path)
    } else {
        Ok(vec![path.to_owned()])
    }
}

/// The formats cairn reads, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Hcl,
}

fn format_of(path: &Path) -> Option<Format> {
    match path.extension()?.to_str()? {
        "json" => Some(Format::Json),
        "hcl" => Some(Format::Hcl),
        _ => None,
    }
}

/// A directory's `*.json` and `*.hcl` files in lexical order, both formats interleaved (Consul's
/// order, so numbered files like `00-base.json` apply first). Subdirectories and other extensions
/// are skipped, as Consul skips them. A path that is missing or not a directory is an error
/// naming it.
pub fn config_files_in(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let dir_error = |source| ConfigError::File { path: dir.to_owned(), source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(dir_error)? {
        let entry_path = entry.map_err(dir_error)?.path();
        // `metadata` follows symlinks, so a linked config file counts, as in Consul.
        if format_of(&entry_path).is_some() && std::fs::metadata(&entry_path).is_ok_and(|m| m.is_file()) {
            files.push(entry_path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads and parses one config file, JSON or HCL by its extension.
pub fn load(path: &Path) -> Result<Layer, ConfigError> {
    let Some(format) = format_of(path) else {
        return Err(ConfigError::UnsupportedFormat { path: path.to_owned() });
    };
    let file_error = |source| ConfigError::File { path: path.to_owned(), source };
    let mut bytes = Vec::new();
    let file = std::fs::File::open(path).map_err(file_error)?;
    file.take(CONFIG_FILE_BYTES_MAX + 1).read_to_end(&mut bytes).map_err(file_error)?;
    if bytes.len() as u64 > CONFIG_FILE_BYTES_MAX {
        let message = format!("larger than the {CONFIG_FILE_BYTES_MAX}-byte limit for config files");
        return Err(file_error(std::io::Error::new(std::io::ErrorKind::FileTooLarge, message)));
    }
    match format {
        Format::Json => parse(path, &bytes),
        Format::Hcl => parse_hcl(path, &bytes),
    }
}

/// Parses a JSON config file's bytes. `path` only names the file in errors and ignored keys.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Layer, ConfigError> {
    // Consul skips empty files rather than failing on them.
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Layer::default());
    }
    let layer = parse_typed(path, bytes)?;
    // The typed parse succeeded, so the bytes are a JSON object and this parse cannot fail.
    let document: Map<String, Value> = serde_json::from_slice(bytes).map_err(|e| json_error(path, ".", &e))?;
    finish(path, layer, &document)
}

/// Parses an HCL config file's bytes. HCL becomes the JSON value the HCL JSON specification gives
/// (a block is an object, repeated blocks a list), so the rest is the JSON path: same keys, same
/// rules. Type errors name the field; hcl-rs gives a line and column only for syntax errors.
pub fn parse_hcl(path: &Path, bytes: &[u8]) -> Result<Layer, ConfigError> {
    let hcl_error = |field_path: &str, position, message: String| ConfigError::Hcl {
        path: path.to_owned(),
        field_path: field_path.to_owned(),
        position,
        message,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| hcl_error(".", None, format!("not UTF-8: {e}")))?;
    if text.trim().is_empty() {
        return Ok(Layer::default());
    }
    let document: Value = hcl::from_str(text).map_err(|e| match &e {
        hcl::Error::Parse(parse) => {
            let at = parse.location();
            hcl_error(".", Some((at.line(), at.column())), parse.message().to_owned())
        }
        other => hcl_error(".", None, other.to_string()),
    })?;
    let Value::Object(document) = document else {
        return Err(hcl_error(".", None, "expected a body of attributes and blocks".to_owned()));
    };
    let layer = layer_from_value(&document).map_err(|(field, message)| hcl_error(&field, None, message))?;
    finish(path, layer, &document)
}

/// A whole file's settings: an object only (see [`object_only`]).
struct FileLayer(Layer);

impl<'de> Deserialize<'de> for FileLayer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        object_only(deserializer).map(FileLayer)
    }
}

/// The typed settings of an already-parsed document, or the field and message of a type error.
fn layer_from_value(document: &Map<String, Value>) -> Result<Layer, (String, String)> {
    let value = Value::Object(document.clone());
    serde_path_to_error::deserialize(value)
        .map(|FileLayer(layer)| layer)
        .map_err(|e| (e.path().to_string(), e.inner().to_string()))
}

/// What both formats do after the typed parse: sort the keys, read the service and check
/// definitions.
fn finish(path: &Path, mut layer: Layer, document: &Map<String, Value>) -> Result<Layer, ConfigError> {
    layer.ignored_keys = check_keys(path, document)?;
    layer.definitions = parse_definitions(path, document)?;
    Ok(layer)
}

/// The file's known keys, with type errors located by field path, line and column. Unknown keys
/// are skipped here and judged by [`check_keys`].
fn parse_typed(path: &Path, bytes: &[u8]) -> Result<Layer, ConfigError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let FileLayer(layer) = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| json_error(path, &e.path().to_string(), e.inner()))?;
    deserializer.end().map_err(|e| json_error(path, ".", &e))?;
    Ok(layer)
}

fn json_error(path: &Path, field_path: &str, error: &serde_json::Error) -> ConfigError {
    let (line, column) = (error.line(), error.column());
    let text = error.to_string();
    // serde_json appends the position to its message; the variant carries it as numbers instead.
    let message = text.strip_suffix(&format!(" at line {line} column {column}")).unwrap_or(&text).to_owned();
    ConfigError::Json { path: path.to_owned(), field_path: field_path.to_owned(), line, column, message }
}

/// A table of keys: the ones cairn reads and the ones it knowingly ignores.
struct Section<'a> {
    known: &'a [&'static str],
    ignored: &'static [&'static str],
}

/// Sorts the document's keys. Returns the known-but-ignored ones as `"<file>: <key path>"`, or the
/// first unknown one as an error. Keys inside ignored sections (`ui_config.*`) are not checked.
fn check_keys(path: &Path, document: &Map<String, Value>) -> Result<Vec<String>, ConfigError> {
    let known: Vec<&'static str> = struct_fields::<Layer>().iter().chain(DEFINITION_KEYS).copied().collect();
    let top = Section { known: &known, ignored: IGNORED_TOP_LEVEL_KEYS };
    let nested = [
        ("ports", Section { known: struct_fields::<PortsLayer>(), ignored: IGNORED_PORTS_KEYS }),
        ("performance", Section { known: struct_fields::<PerformanceLayer>(), ignored: IGNORED_PERFORMANCE_KEYS }),
        ("autopilot", Section { known: struct_fields::<AutopilotLayer>(), ignored: IGNORED_AUTOPILOT_KEYS }),
        ("dns_config", Section { known: struct_fields::<DnsConfigLayer>(), ignored: IGNORED_DNS_CONFIG_KEYS }),
    ];
    let mut ignored = Vec::new();
    check_section(path, "", document, &top, &mut ignored)?;
    for (name, section) in &nested {
        if let Some(Value::Object(object)) = document.get(*name) {
            check_section(path, &format!("{name}."), object, section, &mut ignored)?;
        }
    }
    if let Some(Value::Object(soa)) = document.get("dns_config").and_then(|c| c.get("soa")) {
        let section = Section { known: SOA_KEYS, ignored: &[] };
        check_section(path, "dns_config.soa.", soa, &section, &mut ignored)?;
    }
    Ok(ignored)
}

fn check_section(
    path: &Path,
    prefix: &str,
    object: &Map<String, Value>,
    section: &Section<'_>,
    ignored: &mut Vec<String>,
) -> Result<(), ConfigError> {
    for key in object.keys() {
        if section.known.contains(&key.as_str()) {
            continue;
        }
        let key_path = format!("{prefix}{key}");
        if !section.ignored.contains(&key.as_str()) {
            return Err(ConfigError::UnknownKey { path: path.to_owned(), key_path });
        }
        ignored.push(format!("{}: {key_path}", path.display()));
    }
    Ok(())
}

/// The field names serde's derive gives a struct, which are exactly the keys it reads. Asking the
/// struct keeps the list of known keys from drifting away from the fields: derived `Deserialize`
/// hands its field list to `deserialize_struct`, and this deserializer only records it.
pub(crate) fn struct_fields<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{Error, Visitor};
    use serde::forward_to_deserialize_any;

    struct FieldRecorder<'a>(&'a mut &'static [&'static str]);

    impl<'de> serde::Deserializer<'de> for FieldRecorder<'_> {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Error::custom("fields recorded"))
        }

        forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
            unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    // The error is the point: the recorder stops the derive right after it names its fields.
    let _ = T::deserialize(FieldRecorder(&mut fields));
    assert!(!fields.is_empty(), "struct_fields used on a type whose Deserialize is not a derived struct");
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Layer, ConfigError> {
        parse(Path::new("conf.d/a.json"), text.as_bytes())
    }

    /// The known-key lists come from the structs and include every implemented key.
    #[test]
    fn known_keys_come_from_the_structs() {
        let top = struct_fields::<Layer>();
        for key in ["node_name", "retry_join", "start_join", "ports", "performance", "raft_trailing_logs"] {
            assert!(top.contains(&key), "{key} missing from {top:?}");
        }
        assert!(!top.contains(&"ignored_keys"), "a skipped field is not a key");
        assert_eq!(struct_fields::<PortsLayer>(), ["http", "dns", "server", "serf_lan", "serf_wan"]);
        assert_eq!(struct_fields::<PerformanceLayer>(), ["raft_multiplier"]);
    }

    /// No key is both implemented and ignored, and no ignored key is listed twice.
    #[test]
    fn ignored_lists_are_disjoint_from_known_keys() {
        let lists = [
            (struct_fields::<Layer>(), IGNORED_TOP_LEVEL_KEYS),
            (struct_fields::<PortsLayer>(), IGNORED_PORTS_KEYS),
            (struct_fields::<PerformanceLayer>(), IGNORED_PERFORMANCE_KEYS),
        ];
        for (known, ignored) in lists {
            for (i, key) in ignored.iter().enumerate() {
                assert!(!known.contains(key), "{key} is both known and ignored");
                assert!(!ignored[..i].contains(key), "{key} is listed twice");
            }
        }
    }

    /// Every implemented key is read into its field.
    #[test]
    fn parses_every_known_key() {
        let layer = parse_str(
            r#"{"node_name":"n1","node_id":"ADB5FE3E-8A36-4F4E-8E4E-0B5C1A2B3C4D","datacenter":"east",
                "server":true,"bootstrap":false,"bootstrap_expect":3,"data_dir":"/d","bind_addr":"10.0.0.1",
                "advertise_addr":"10.0.0.9","client_addr":"0.0.0.0","retry_join":["a"],"start_join":["b:1"],
                "retry_interval":"1m30s","retry_max":5,"log_level":"DEBUG",
                "ports":{"http":1,"dns":2,"server":3,"serf_lan":4,"serf_wan":5},
                "raft_snapshot_threshold":100,"raft_trailing_logs":200,"performance":{"raft_multiplier":2}}"#,
        )
        .unwrap();
        assert_eq!(layer.node_name.as_deref(), Some("n1"));
        assert_eq!(layer.bootstrap_expect, Some(3));
        assert_eq!(layer.bind_addr, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(layer.start_join, vec!["b:1".parse().unwrap()]);
        assert_eq!(layer.retry_interval, Some(std::time::Duration::from_secs(90)));
        assert_eq!(layer.log_level, Some(super::super::LogLevel::Debug));
        assert_eq!(layer.ports.serf_wan, Some(5));
        assert_eq!(layer.raft_trailing_logs, Some(200));
        assert_eq!(layer.performance.raft_multiplier, Some(2));
        assert!(layer.ignored_keys.is_empty());
    }

    /// Known-but-unimplemented Consul keys are accepted and reported with the file they came from.
    #[test]
    fn ignored_keys_are_reported_with_their_file() {
        let layer = parse_str(r#"{"ui_config":{"enabled":true},"ports":{"grpc":8502},"acl":{}}"#).unwrap();
        assert_eq!(layer.ignored_keys, ["conf.d/a.json: acl", "conf.d/a.json: ui_config", "conf.d/a.json: ports.grpc"]);
    }

    /// An unknown top-level key is an error naming the file and the key.
    #[test]
    fn unknown_top_level_key_is_an_error() {
        let err = parse_str(r#"{"datacenter":"dc1","prots":{"http":1}}"#).unwrap_err();
        assert!(
            matches!(&err, ConfigError::UnknownKey { path, key_path }
                if path == Path::new("conf.d/a.json") && key_path == "prots"),
            "{err:?}"
        );
    }

    /// An unknown key nested in a section cairn reads is an error naming its full path.
    #[test]
    fn unknown_nested_key_is_an_error() {
        let err = parse_str(r#"{"ports":{"htp":1}}"#).unwrap_err();
        assert!(matches!(&err, ConfigError::UnknownKey { key_path, .. } if key_path == "ports.htp"), "{err:?}");
        let err = parse_str(r#"{"performance":{"raft_multipler":1}}"#).unwrap_err();
        assert!(
            matches!(&err, ConfigError::UnknownKey { key_path, .. } if key_path == "performance.raft_multipler"),
            "{err:?}"
        );
    }

    /// A key cairn reads at one level is not silently accepted at another.
    #[test]
    fn known_key_at_the_wrong_level_is_unknown() {
        let err = parse_str(r#"{"http":8500}"#).unwrap_err();
        assert!(matches!(&err, ConfigError::UnknownKey { key_path, .. } if key_path == "http"), "{err:?}");
    }

    /// A value of the wrong type is an error with the field path, line and column.
    #[test]
    fn type_error_names_field_line_and_column() {
        let err = parse_str("{\n  \"ports\": {\n    \"http\": \"8500\"\n  }\n}").unwrap_err();
        let ConfigError::Json { path, field_path, line, column, message } = &err else { panic!("{err:?}") };
        assert_eq!(path, Path::new("conf.d/a.json"));
        assert_eq!(field_path, "ports.http");
        assert_eq!((*line, *column), (3, 18));
        assert!(!message.contains("line 3"), "position is in the fields, not repeated: {message}");
    }

    /// Values that parse with cairn's own parsers (durations, join addresses, levels) report their
    /// field path too.
    #[test]
    fn value_parse_errors_name_the_field() {
        let cases = [
            (r#"{"retry_interval":"5x"}"#, "retry_interval"),
            (r#"{"retry_join":["10.0.0.1","a:b:c"]}"#, "retry_join[1]"),
            (r#"{"log_level":"loud"}"#, "log_level"),
            (r#"{"bind_addr":"not-an-ip"}"#, "bind_addr"),
            (r#"{"bootstrap_expect":-1}"#, "bootstrap_expect"),
            (r#"{"ports":{"dns":70000}}"#, "ports.dns"),
        ];
        for (text, expected) in cases {
            let err = parse_str(text).unwrap_err();
            assert!(matches!(&err, ConfigError::Json { field_path, .. } if field_path == expected), "{text}: {err:?}");
        }
    }

    /// Syntax errors, a non-object document and a sequence where a section belongs are JSON
    /// errors with a position.
    #[test]
    fn malformed_documents_are_json_errors() {
        for text in ["{", "{\"server\": tru}", "[]", "{\"ports\": [8500]}", "{} {}", "\"dc1\""] {
            let err = parse_str(text).unwrap_err();
            assert!(matches!(&err, ConfigError::Json { line: 1, .. }), "{text}: {err:?}");
        }
    }

    /// Duplicate keys are refused rather than resolved silently.
    #[test]
    fn duplicate_keys_are_refused() {
        let err = parse_str(r#"{"server":true,"server":false}"#).unwrap_err();
        assert!(matches!(err, ConfigError::Json { .. }), "{err:?}");
    }

    /// An empty file is an empty source, as in Consul.
    #[test]
    fn empty_file_is_empty_layer() {
        assert_eq!(parse_str(" \n").unwrap(), Layer::default());
        assert_eq!(parse_str("{}").unwrap(), Layer::default());
    }

    /// JSON null leaves a setting unset.
    #[test]
    fn null_is_unset() {
        assert_eq!(parse_str(r#"{"node_name":null,"retry_interval":null}"#).unwrap(), Layer::default());
    }

    /// An HCL file sets the same keys as JSON; blocks are sections, unknown keys are errors.
    #[test]
    fn hcl_sets_the_same_keys() {
        let hcl = |text: &str| parse_hcl(Path::new("conf.d/a.hcl"), text.as_bytes());
        let layer = hcl("node_name = \"n1\"\nretry_join = [\"10.0.0.1\"]\nports {\n  http = 8501\n}\n").unwrap();
        assert_eq!(layer.node_name.as_deref(), Some("n1"));
        assert_eq!(layer.retry_join, vec!["10.0.0.1".parse().unwrap()]);
        assert_eq!(layer.ports.http, Some(8501));
        let layer = hcl("ui_config {\n  enabled = true\n}\n").unwrap();
        assert_eq!(layer.ignored_keys, ["conf.d/a.hcl: ui_config"]);
        let err = hcl("ports {\n  htp = 1\n}\n").unwrap_err();
        assert!(matches!(&err, ConfigError::UnknownKey { key_path, .. } if key_path == "ports.htp"), "{err:?}");
        assert_eq!(hcl("\n").unwrap(), Layer::default());
    }

    /// HCL syntax errors carry the file and position; type errors name the field.
    #[test]
    fn hcl_errors_name_position_or_field() {
        let hcl = |text: &str| parse_hcl(Path::new("conf.d/a.hcl"), text.as_bytes());
        let err = hcl("node_name = \"a\"\nports {\n  http = \n}\n").unwrap_err();
        assert!(matches!(&err, ConfigError::Hcl { position: Some((3, _)), .. }), "{err:?}");
        assert!(err.to_string().starts_with("conf.d/a.hcl:3:"), "{err}");
        let err = hcl("ports {\n  http = \"x\"\n}\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::Hcl { field_path, position: None, .. } if field_path == "ports.http"),
            "{err:?}"
        );
    }
}
