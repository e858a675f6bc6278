//! Config files on a real filesystem: merge order, list appending, and errors that name the file.

use std::io::ErrorKind;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cairn::config::{load_agent_config, validate_paths, AgentConfig, ConfigError, JoinAddress};

/// A directory under the system temp dir, unique to this process and call, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let unique = format!("cairn-config-{}-{label}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// Writes `contents` to `name` (parent directories created) and returns its path.
    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Result<AgentConfig, ConfigError> {
    let args: Vec<String> = args.iter().map(|a| a.as_ref().to_str().unwrap().to_owned()).collect();
    load_agent_config(&args, "host-1")
}

fn flag(name: &str, path: &Path) -> String {
    format!("-{name}={}", path.display())
}

fn join(host: &str, port: u16) -> JoinAddress {
    JoinAddress { host: host.to_owned(), port }
}

/// A typical Consul server config file works unchanged; the keys cairn lacks are reported.
#[test]
fn consul_style_file_works_unchanged() {
    let dir = TempDir::new("consul");
    let file = dir.write(
        "server.json",
        r#"{"datacenter":"dc1","data_dir":"/opt/consul","server":true,"bootstrap_expect":3,
            "retry_join":["10.0.0.2","10.0.0.3:8301"],"ports":{"http":8500},"ui_config":{"enabled":true}}"#,
    );
    let config = load(&[&flag("config-file", &file)]).unwrap();
    assert_eq!(config.datacenter, "dc1");
    assert_eq!(config.data_dir, Some(PathBuf::from("/opt/consul")));
    assert!(config.server);
    assert_eq!(config.bootstrap_expect, Some(3));
    assert_eq!(config.retry_join, [join("10.0.0.2", 8301), join("10.0.0.3", 8301)]);
    assert_eq!(config.ports.http, 8500);
    assert_eq!(config.ignored_keys, [format!("{}: ui_config", file.display())]);
}

/// A fuller Consul client config, with services, checks, TLS and telemetry, also loads.
#[test]
fn consul_client_file_with_unimplemented_sections_loads() {
    let dir = TempDir::new("client");
    let file = dir.write(
        "client.json",
        r#"{
  "node_name": "web-1",
  "datacenter": "dc1",
  "data_dir": "/opt/consul",
  "log_level": "INFO",
  "client_addr": "0.0.0.0",
  "retry_join": ["consul-1.internal", "[fd00::2]:8301"],
  "retry_interval": "15s",
  "encrypt": "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=",
  "acl": {"enabled": true, "default_policy": "deny", "tokens": {"agent": "x"}},
  "tls": {"defaults": {"verify_incoming": false}},
  "telemetry": {"prometheus_retention_time": "30s"},
  "leave_on_terminate": true,
  "enable_local_script_checks": true,
  "ports": {"grpc": 8502, "https": -1},
  "performance": {"raft_multiplier": 1},
  "services": [{"name": "web", "port": 80, "check": {"http": "http://localhost/health", "interval": "10s"}}]
}"#,
    );
    let config = load(&[&flag("config-file", &file)]).unwrap();
    assert_eq!(config.node_name, "web-1");
    assert_eq!(config.client_addr, "0.0.0.0".parse::<IpAddr>().unwrap());
    assert_eq!(config.retry_join, [join("consul-1.internal", 8301), join("fd00::2", 8301)]);
    assert_eq!(config.retry_interval, Duration::from_secs(15));
    assert_eq!(config.gossip.encrypt_key.as_ref().map(|k| k.as_bytes().len()), Some(32));
    assert!(config.gossip.leave_on_terminate);
    let ignored: Vec<&str> = config.ignored_keys.iter().map(|k| k.rsplit(": ").next().unwrap()).collect();
    assert_eq!(ignored, ["acl", "telemetry", "tls", "ports.grpc", "ports.https"]);
    assert_eq!(config.local.services[0].name, "web");
    assert_eq!(config.local.services[0].checks[0].id, "service:web");
    assert_eq!(config.local.script_checks, cairn::config::ScriptChecks::LocalOnly);
}

/// Later `-config-file`s override earlier ones key by key.
#[test]
fn later_files_override_earlier_ones() {
    let dir = TempDir::new("override");
    let a = dir.write("a.json", r#"{"node_name":"a","datacenter":"east","data_dir":"/a"}"#);
    let b = dir.write("b.json", r#"{"node_name":"b","ports":{"dns":8601}}"#);
    let config = load(&[&flag("config-file", &a), &flag("config-file", &b)]).unwrap();
    assert_eq!(config.node_name, "b");
    assert_eq!(config.datacenter, "east");
    assert_eq!(config.data_dir, Some(PathBuf::from("/a")));
    assert_eq!(config.ports.dns, 8601);
}

/// A directory's `*.json` and `*.hcl` files load in one lexical order; other files and
/// subdirectories are skipped.
#[test]
fn config_dir_loads_json_and_hcl_files_in_lexical_order() {
    let dir = TempDir::new("lexical");
    dir.write("conf.d/20-last.json", r#"{"node_name":"twenty"}"#);
    dir.write("conf.d/10-middle.json", r#"{"node_name":"ten","datacenter":"ten"}"#);
    dir.write("conf.d/02-first.json", r#"{"node_name":"two","datacenter":"two","data_dir":"/d"}"#);
    dir.write("conf.d/99-notes.txt", "not json at all");
    dir.write("conf.d/15-between.hcl", "datacenter = \"fifteen\"");
    dir.write("conf.d/99-sub/zz.json", r#"{"node_name":"nested"}"#);
    let config = load(&[&flag("config-dir", &dir.path("conf.d"))]).unwrap();
    assert_eq!(config.node_name, "twenty");
    assert_eq!(config.datacenter, "fifteen");
}

/// Every `-config-file` applies before any `-config-dir`, whatever order the flags come in.
#[test]
fn config_files_apply_before_config_dirs() {
    let dir = TempDir::new("files-then-dirs");
    dir.write("conf.d/a.json", r#"{"node_name":"from-dir"}"#);
    let file = dir.write("file.json", r#"{"node_name":"from-file","data_dir":"/d"}"#);
    let config = load(&[&flag("config-dir", &dir.path("conf.d")), &flag("config-file", &file)]).unwrap();
    assert_eq!(config.node_name, "from-dir");
}

/// Flags override every file, including a `false` over a file's `true`.
#[test]
fn flags_override_files() {
    let dir = TempDir::new("flags");
    let file = dir.write("a.json", r#"{"node_name":"file","server":true,"data_dir":"/d","log_level":"debug"}"#);
    let config =
        load(&[&"-node=flag", &flag("config-file", &file), &"-server=false", &"-log-level", &"error"]).unwrap();
    assert_eq!(config.node_name, "flag");
    assert!(!config.server);
    assert_eq!(config.log_level, cairn::config::LogLevel::Error);
}

/// `retry_join` and `start_join` append across files and flags instead of replacing.
#[test]
fn join_lists_append_across_sources() {
    let dir = TempDir::new("append");
    dir.write("conf.d/1.json", r#"{"retry_join":["10.0.0.1"],"data_dir":"/d"}"#);
    dir.write("conf.d/2.json", r#"{"retry_join":["10.0.0.2"],"start_join":["10.0.0.5"]}"#);
    let config = load(&[&flag("config-dir", &dir.path("conf.d")), &"-retry-join=10.0.0.3:9301"]).unwrap();
    let joined: Vec<String> = config.retry_join.iter().map(ToString::to_string).collect();
    assert_eq!(joined, ["10.0.0.1:8301", "10.0.0.2:8301", "10.0.0.3:9301", "10.0.0.5:8301"]);
}

/// An unknown key is an error naming the file it is in and the key.
#[test]
fn unknown_key_names_file_and_key() {
    let dir = TempDir::new("unknown");
    dir.write("conf.d/1.json", r#"{"data_dir":"/d"}"#);
    let bad = dir.write("conf.d/2.json", r#"{"datacenter":"dc1","bootstrap_expected":3}"#);
    let err = load(&[&flag("config-dir", &dir.path("conf.d"))]).unwrap_err();
    match err {
        ConfigError::UnknownKey { path, key_path } => {
            assert_eq!(path, bad);
            assert_eq!(key_path, "bootstrap_expected");
        }
        other => panic!("expected UnknownKey, got {other:?}"),
    }
}

/// An unknown key inside `ports` is named by its full path.
#[test]
fn unknown_nested_key_names_its_path() {
    let dir = TempDir::new("nested");
    let file = dir.write("a.json", r#"{"ports":{"http":8500,"serf":8301}}"#);
    let err = load(&[&flag("config-file", &file)]).unwrap_err();
    assert!(
        matches!(&err, ConfigError::UnknownKey { path, key_path } if *path == file && key_path == "ports.serf"),
        "{err:?}"
    );
}

/// A value of the wrong type is an error naming the file, the field and its line.
#[test]
fn type_error_names_file_field_and_line() {
    let dir = TempDir::new("types");
    let file = dir.write("a.json", "{\n  \"data_dir\": \"/d\",\n  \"server\": \"yes\"\n}\n");
    let err = load(&[&flag("config-file", &file)]).unwrap_err();
    match err {
        ConfigError::Json { path, field_path, line, column, .. } => {
            assert_eq!(path, file);
            assert_eq!(field_path, "server");
            assert_eq!(line, 3);
            assert!(column > 0);
        }
        other => panic!("expected Json, got {other:?}"),
    }
}

/// Broken JSON is an error with the file and position.
#[test]
fn syntax_error_names_file_and_line() {
    let dir = TempDir::new("syntax");
    let file = dir.write("a.json", "{\n  \"data_dir\": \"/d\"\n  \"server\": true\n}\n");
    let err = load(&[&flag("config-file", &file)]).unwrap_err();
    assert!(matches!(&err, ConfigError::Json { path, line: 3, .. } if *path == file), "{err:?}");
}

/// A missing `-config-dir` is an error naming the directory.
#[test]
fn missing_config_dir_is_named() {
    let dir = TempDir::new("missing-dir");
    let missing = dir.path("nope.d");
    let err = load(&[&"-dev", &flag("config-dir", &missing)]).unwrap_err();
    assert!(
        matches!(&err, ConfigError::File { path, source } if *path == missing && source.kind() == ErrorKind::NotFound),
        "{err:?}"
    );
}

/// `-config-dir` must name a directory; a file there is an error naming it.
#[test]
fn config_dir_that_is_a_file_is_named() {
    let dir = TempDir::new("dir-is-file");
    let file = dir.write("a.json", "{}");
    let err = load(&[&"-dev", &flag("config-dir", &file)]).unwrap_err();
    let ConfigError::File { path, source } = &err else { panic!("expected File, got {err:?}") };
    assert_eq!((path, source.kind()), (&file, ErrorKind::NotADirectory));
}

/// `-config-file` given a directory loads its `*.json` files, as Consul does.
#[test]
fn config_file_that_is_a_directory_loads_it() {
    let dir = TempDir::new("file-is-dir");
    dir.write("conf.d/a.json", r#"{"node_name":"from-dir"}"#);
    let config = load(&[&"-dev", &flag("config-file", &dir.path("conf.d"))]).unwrap();
    assert_eq!(config.node_name, "from-dir");
}

/// A missing `-config-file` is an error naming the file.
#[test]
fn missing_config_file_is_named() {
    let dir = TempDir::new("missing-file");
    let missing = dir.path("nope.json");
    let err = load(&[&"-dev", &flag("config-file", &missing)]).unwrap_err();
    assert!(matches!(&err, ConfigError::File { path, .. } if *path == missing), "{err:?}");
}

/// An HCL file is a whole agent config, as in Consul; a format cairn cannot read is refused.
#[test]
fn explicit_hcl_file_loads_and_yaml_is_unsupported() {
    let dir = TempDir::new("hcl");
    let file =
        dir.write("server.hcl", "server = true\nretry_join = [\"10.0.0.2\"]\nautopilot {\n  min_quorum = 3\n}\n");
    let config = load(&[&"-dev", &flag("config-file", &file)]).unwrap();
    assert!(config.server);
    assert_eq!(config.retry_join, [join("10.0.0.2", 8301)]);
    assert_eq!(config.autopilot.min_quorum, 3);
    let yaml = dir.write("server.yaml", "server: true\n");
    let err = load(&[&"-dev", &flag("config-file", &yaml)]).unwrap_err();
    assert!(matches!(&err, ConfigError::UnsupportedFormat { path } if *path == yaml), "{err:?}");
}

/// A file over the size limit is refused before it is parsed.
#[test]
fn oversized_file_is_refused() {
    let dir = TempDir::new("large");
    let padding = " ".repeat(cairn::config::CONFIG_FILE_BYTES_MAX as usize);
    let file = dir.write("big.json", &format!("{{}}{padding}"));
    let err = load(&[&"-dev", &flag("config-file", &file)]).unwrap_err();
    assert!(
        matches!(&err, ConfigError::File { path, source } if *path == file && source.kind() == ErrorKind::FileTooLarge),
        "{err:?}"
    );
}

/// Rules apply to the merged result: settings from two files can conflict.
#[test]
fn validation_sees_the_merged_result() {
    let dir = TempDir::new("merged-rules");
    dir.write("conf.d/1.json", r#"{"server":true,"bootstrap":true,"data_dir":"/d"}"#);
    dir.write("conf.d/2.json", r#"{"bootstrap_expect":3}"#);
    let err = load(&[&flag("config-dir", &dir.path("conf.d"))]).unwrap_err();
    assert!(matches!(&err, ConfigError::Invalid { field, .. } if field == "bootstrap_expect"), "{err:?}");
}

/// `-dev` defaults sit below files: a file's `bind_addr` wins over dev's 127.0.0.1.
#[test]
fn files_override_dev_defaults() {
    let dir = TempDir::new("dev");
    let file = dir.write("a.json", r#"{"bind_addr":"10.1.2.3"}"#);
    let config = load(&[&"-dev", &flag("config-file", &file)]).unwrap();
    assert_eq!(config.bind_addr, "10.1.2.3".parse::<IpAddr>().unwrap());
    assert_eq!(config.client_addr, "127.0.0.1".parse::<IpAddr>().unwrap());
}

/// `validate_paths` accepts files and directories and reports the same errors as the agent.
#[test]
fn validate_paths_checks_files_and_dirs() {
    let dir = TempDir::new("validate");
    let base = dir.write("base.json", r#"{"data_dir":"/d","server":true}"#);
    dir.write("conf.d/a.json", r#"{"node_name":"v1","ui_config":{"enabled":true}}"#);
    let config = validate_paths(&[base, dir.path("conf.d")], "host-1").unwrap();
    assert_eq!(config.node_name, "v1");
    assert!(config.server);
    assert_eq!(config.ignored_keys.len(), 1);

    let err = validate_paths(&[dir.path("conf.d")], "host-1").unwrap_err();
    assert!(matches!(&err, ConfigError::Invalid { field, .. } if field == "data_dir"), "{err:?}");

    let bad = dir.write("bad.json", r#"{"data_dir":"/d","colour":"blue"}"#);
    let err = validate_paths(std::slice::from_ref(&bad), "host-1").unwrap_err();
    assert!(matches!(&err, ConfigError::UnknownKey { path, key_path } if *path == bad && key_path == "colour"));
}

/// The gossip key is checked when the config loads: a key of the wrong size names its length.
#[test]
fn gossip_key_of_the_wrong_length_is_refused() {
    let dir = TempDir::new("badkey");
    // base64 of 10 bytes.
    let file = dir.write("k.json", r#"{"data_dir":"/d","encrypt":"AAAAAAAAAAAAAA=="}"#);
    let err = load(&[&flag("config-file", &file)]).unwrap_err().to_string();
    assert!(err.contains("encrypt") && err.contains("10 bytes"), "{err}");
    let err = load(&[&"-data-dir=/d", &"-encrypt=not base64!"]).unwrap_err().to_string();
    assert!(err.contains("encrypt") && err.contains("base64"), "{err}");
    let ok = load(&[&"-data-dir=/d", &"-encrypt=pUqJrVyVRj5jsiYEkM/tFQ=="]).unwrap();
    assert_eq!(ok.gossip.encrypt_key.map(|k| k.as_bytes().len()), Some(16));
}

/// Leaving on signals defaults by role, as Consul: servers stay in Raft when stopped, clients leave.
#[test]
fn leave_defaults_follow_the_role() {
    let server = load(&[&"-data-dir=/d", &"-server"]).unwrap();
    assert!(!server.gossip.leave_on_terminate && server.gossip.skip_leave_on_interrupt);
    let client = load(&[&"-data-dir=/d"]).unwrap();
    assert!(client.gossip.leave_on_terminate && !client.gossip.skip_leave_on_interrupt);
    assert_eq!(client.gossip.reconnect_timeout, Duration::from_secs(72 * 3600));
}

/// `autopilot` and `reconnect_timeout` load from files, with Consul's lower bound on the latter.
#[test]
fn autopilot_and_reconnect_timeout_load_from_files() {
    let dir = TempDir::new("autopilot");
    let file = dir.write(
        "a.json",
        r#"{"data_dir":"/d","reconnect_timeout":"8h","autopilot":{"cleanup_dead_servers":false,
            "server_stabilization_time":"3s","dead_server_cleanup_after":"1m","redundancy_zone_tag":"az"}}"#,
    );
    let config = load(&[&flag("config-file", &file)]).unwrap();
    assert!(!config.autopilot.cleanup_dead_servers);
    assert_eq!(config.autopilot.server_stabilization_time, Duration::from_secs(3));
    assert_eq!(config.autopilot.dead_server_cleanup_after, Duration::from_secs(60));
    assert_eq!(config.gossip.reconnect_timeout, Duration::from_secs(8 * 3600));
    assert!(config.ignored_keys.iter().any(|k| k.ends_with("autopilot.redundancy_zone_tag")));

    let short = dir.write("b.json", r#"{"data_dir":"/d","reconnect_timeout":"1h"}"#);
    let err = load(&[&flag("config-file", &short)]).unwrap_err().to_string();
    assert!(err.contains("reconnect_timeout") && err.contains("8h"), "{err}");
    let typo = dir.write("c.json", r#"{"data_dir":"/d","autopilot":{"cleanup_dead_server":true}}"#);
    let err = load(&[&flag("config-file", &typo)]).unwrap_err().to_string();
    assert!(err.contains("autopilot.cleanup_dead_server"), "{err}");
}

/// Service files across a directory load in order; a bad one stops the load, naming the file.
#[test]
fn service_files_load_and_bad_ones_are_named() {
    let dir = TempDir::new("services");
    dir.write("conf.d/00-agent.hcl", "data_dir = \"/d\"\nenable_local_script_checks = true\n");
    dir.write(
        "conf.d/elasticsearch.json",
        r#"{"service": {"name": "elasticsearch", "port": 9200, "check": {"script": "curl -s http://127.0.0.1:9200", "interval": "10s"}}}"#,
    );
    dir.write("conf.d/web.hcl", "service {\n  name = \"web\"\n}\nservice {\n  name = \"web-admin\"\n}\n");
    let config = load(&[&flag("config-dir", &dir.path("conf.d"))]).unwrap();
    let names: Vec<&str> = config.local.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["elasticsearch", "web", "web-admin"]);

    let bad = dir.write("conf.d/zz-dup.json", r#"{"service": {"name": "web"}}"#);
    let err = load(&[&flag("config-dir", &dir.path("conf.d"))]).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Definition { path, field, .. } if *path == bad && field == "service.id"),
        "{err:?}"
    );
}

/// Runs the `cairn` binary and returns its exit code, standard output and standard error.
fn cairn(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (Option<i32>, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cairn")).args(args).output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (output.status.code(), text(output.stdout), text(output.stderr))
}

/// `cairn validate` on a good directory of JSON and HCL service files says so and exits 0.
#[test]
fn validate_command_accepts_a_good_dir() {
    let dir = TempDir::new("validate-good");
    dir.write("conf.d/00-agent.json", r#"{"data_dir":"/d","enable_local_script_checks":true}"#);
    dir.write(
        "conf.d/elasticsearch.json",
        r#"{"service": {"name": "elasticsearch", "port": 9200, "check": {"script": "curl -s http://127.0.0.1:9200", "interval": "10s"}}}"#,
    );
    dir.write(
        "conf.d/web.hcl",
        "service {\n  name = \"web\"\n  check {\n    http = \"http://localhost\"\n    interval = \"5s\"\n  }\n}\n",
    );
    let (code, stdout, stderr) = cairn(&[&"validate", &dir.path("conf.d")]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(stdout, "Configuration is valid!\n");
}

/// `cairn validate` on a bad service file names the file and the field, and exits 1.
#[test]
fn validate_command_names_file_and_field() {
    let dir = TempDir::new("validate-bad");
    let base = dir.write("base.json", r#"{"data_dir":"/d"}"#);
    let bad = dir.write("web.json", r#"{"service":{"name":"web","check":{"http":"http://localhost"}}}"#);
    let (code, stdout, stderr) = cairn(&[&"validate", &base, &bad]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains(&bad.display().to_string()), "{stderr}");
    assert!(stderr.contains("service.check.interval"), "{stderr}");
}

/// An agent with a bad service file refuses to start and names the file, before binding anything.
#[test]
fn agent_refuses_a_bad_service_file() {
    let dir = TempDir::new("agent-bad");
    let bad =
        dir.write("conf.d/db.json", r#"{"service":{"name":"db","check":{"args":["pg_isready"],"interval":"10s"}}}"#);
    let (code, _, stderr) = cairn(&[&"agent", &"-dev", &flag("config-dir", &dir.path("conf.d"))]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&bad.display().to_string()) && stderr.contains("enable_local_script_checks"), "{stderr}");
}

/// Warnings (here an interval under Consul's 1 s minimum) are printed, and the config is still
/// valid; with no path `cairn validate` says what it needs and exits 1.
#[test]
fn validate_command_prints_warnings() {
    let dir = TempDir::new("validate-warn");
    let file = dir.write(
        "fast.hcl",
        "data_dir = \"/d\"\ncheck {\n  name = \"fast\"\n  tcp = \"localhost:1\"\n  interval = \"100ms\"\n}\n",
    );
    let (code, stdout, stderr) = cairn(&[&"validate", &file]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("check.interval") && stdout.ends_with("Configuration is valid!\n"), "{stdout}");
    let (code, _, stderr) = cairn(&[&"validate"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("config file or directory"), "{stderr}");
}
