//! The DNS interface's settings: `domain`, `alt_domain`, `recursors` and `dns_config { ... }`, in
//! Consul's spelling, read from files and flags ([`DnsLayer`]) and resolved once into
//! [`DnsSettings`].
//!
//! Where cairn's defaults differ from Consul's, on purpose: `max_stale` is 5 s (Consul: 10 years,
//! so a server cut off from its leader answers from a frozen catalog forever), negative answers
//! carry a 5 s SOA minimum (Consul: 0, so every miss comes straight back), and `enable_truncate`
//! is on (Consul: off, so a client never learns its UDP answer was cut short).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::duration;
use super::layer::object_only;
use super::ConfigError;

/// Consul's DNS port for recursors given without one.
const RECURSOR_PORT: u16 = 53;
/// Consul's default domain.
pub const DEFAULT_DNS_DOMAIN: &str = "consul.";
/// Longest domain name in presentation form (RFC 1035: 255 octets on the wire).
const DOMAIN_CHARS_MAX: usize = 253;
/// At most this many recursors; more is a mistake and each costs a timeout when they are down.
pub const RECURSORS_MAX: usize = 16;

/// Keys inside `dns_config` that Consul knows and cairn does not implement.
pub const IGNORED_DNS_CONFIG_KEYS: &[&str] = &[
    "disable_compression",
    "enable_additional_node_meta_txt",
    "recursor_strategy",
    "use_cache",
    "cache_max_age",
    "prefer_namespace",
];

/// Keys inside `dns_config.soa`; all are read.
pub const SOA_KEYS: &[&str] = &["expire", "min_ttl", "refresh", "retry"];

/// A recursor address: `ip` or `ip:port` (port 53 when omitted), `[ipv6]:port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recursor(pub SocketAddr);

impl FromStr for Recursor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Recursor(addr));
        }
        match text.parse::<IpAddr>() {
            Ok(ip) => Ok(Recursor(SocketAddr::new(ip, RECURSOR_PORT))),
            Err(_) => Err(format!("{text:?} is not an IP address or IP:port")),
        }
    }
}

impl<'de> Deserialize<'de> for Recursor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// `dns_config.soa { ... }`, as written (TTL-like values in seconds, as Consul's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct SoaLayer {
    pub expire: Option<u32>,
    pub min_ttl: Option<u32>,
    pub refresh: Option<u32>,
    pub retry: Option<u32>,
}

/// `dns_config { ... }`, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct DnsConfigLayer {
    pub allow_stale: Option<bool>,
    #[serde(deserialize_with = "duration::deserialize_optional")]
    pub max_stale: Option<Duration>,
    #[serde(deserialize_with = "duration::deserialize_optional")]
    pub node_ttl: Option<Duration>,
    #[serde(deserialize_with = "deserialize_ttl_map")]
    pub service_ttl: BTreeMap<String, Duration>,
    pub udp_answer_limit: Option<u32>,
    pub a_record_limit: Option<u32>,
    pub only_passing: Option<bool>,
    pub enable_truncate: Option<bool>,
    #[serde(deserialize_with = "duration::deserialize_optional")]
    pub recursor_timeout: Option<Duration>,
    #[serde(deserialize_with = "object_only")]
    pub soa: SoaLayer,
}

/// The DNS settings of the merged sources: top-level `domain`, `alt_domain`, `recursors` and the
/// `dns_config` block (fields of `Layer`, since each is a top-level key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DnsLayer {
    pub domain: Option<String>,
    pub alt_domain: Option<String>,
    /// Appended across sources, as Consul merges lists.
    pub recursors: Vec<Recursor>,
    pub dns_config: DnsConfigLayer,
}

fn deserialize_ttl_map<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, Duration>, D::Error> {
    let raw = Option::<BTreeMap<String, String>>::deserialize(deserializer)?.unwrap_or_default();
    raw.into_iter()
        .map(|(pattern, text)| {
            let ttl = duration::parse_duration(&text).map_err(serde::de::Error::custom)?;
            Ok((pattern, ttl))
        })
        .collect()
}

fn set<T>(slot: &mut Option<T>, later: Option<T>) {
    if later.is_some() {
        *slot = later;
    }
}

impl DnsConfigLayer {
    /// Applies `later` on top: what it sets wins, TTL patterns are merged.
    pub fn merge(&mut self, later: DnsConfigLayer) {
        let (c, l) = (self, later);
        set(&mut c.allow_stale, l.allow_stale);
        set(&mut c.max_stale, l.max_stale);
        set(&mut c.node_ttl, l.node_ttl);
        c.service_ttl.extend(l.service_ttl);
        set(&mut c.udp_answer_limit, l.udp_answer_limit);
        set(&mut c.a_record_limit, l.a_record_limit);
        set(&mut c.only_passing, l.only_passing);
        set(&mut c.enable_truncate, l.enable_truncate);
        set(&mut c.recursor_timeout, l.recursor_timeout);
        set(&mut c.soa.expire, l.soa.expire);
        set(&mut c.soa.min_ttl, l.soa.min_ttl);
        set(&mut c.soa.refresh, l.soa.refresh);
        set(&mut c.soa.retry, l.soa.retry);
    }
}

/// The SOA record's timers (seconds). `min_ttl` is also the TTL of negative answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoaSettings {
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub min_ttl: u32,
}

/// `service_ttl`: a TTL per service name, exact names first, then the longest `prefix*` pattern
/// that matches, then `*` (Consul's rules).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceTtls {
    exact: BTreeMap<String, Duration>,
    /// (prefix, ttl), longest prefix first.
    prefixes: Vec<(String, Duration)>,
}

impl ServiceTtls {
    pub fn new(patterns: &BTreeMap<String, Duration>) -> Self {
        let mut ttls = ServiceTtls::default();
        for (pattern, ttl) in patterns {
            match pattern.strip_suffix('*') {
                Some(prefix) => ttls.prefixes.push((prefix.to_ascii_lowercase(), *ttl)),
                None => {
                    ttls.exact.insert(pattern.to_ascii_lowercase(), *ttl);
                }
            }
        }
        ttls.prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        ttls
    }

    /// The TTL for `service` (compared without case), or `None` when no pattern matches.
    pub fn ttl_for(&self, service: &str) -> Option<Duration> {
        let service = service.to_ascii_lowercase();
        if let Some(ttl) = self.exact.get(&service) {
            return Some(*ttl);
        }
        self.prefixes.iter().find(|(prefix, _)| service.starts_with(prefix.as_str())).map(|(_, ttl)| *ttl)
    }
}

/// Everything the DNS interface needs to know, checked once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// `domain`, `-domain`: lower case, ends with a dot. Default `consul.`.
    pub domain: String,
    /// `alt_domain`, `-alt-domain`: a second domain answered the same way.
    pub alt_domain: Option<String>,
    /// `recursors`, `-recursor`: where names outside the domains are forwarded. Empty: REFUSED.
    pub recursors: Vec<SocketAddr>,
    /// `dns_config.recursor_timeout`. Default 2 s (Consul's).
    pub recursor_timeout: Duration,
    /// `dns_config.allow_stale`: servers answer from their own state. Default true.
    pub allow_stale: bool,
    /// `dns_config.max_stale`: how long since the leader was last heard a stale answer may be.
    /// Default 5 s.
    pub max_stale: Duration,
    /// `dns_config.node_ttl`. Default 0 (Consul's).
    pub node_ttl: Duration,
    /// `dns_config.service_ttl`. Default: none, so 0 (Consul's).
    pub service_ttl: ServiceTtls,
    /// `dns_config.udp_answer_limit`: answers in a UDP response without EDNS. Default 3.
    pub udp_answer_limit: usize,
    /// `dns_config.a_record_limit`: A/AAAA answers in any response. Default: no limit.
    pub a_record_limit: Option<usize>,
    /// `dns_config.only_passing`: leave out instances with a warning check too. Default false.
    pub only_passing: bool,
    /// `dns_config.enable_truncate`: set TC when UDP answers are cut. Default true.
    pub enable_truncate: bool,
    pub soa: SoaSettings,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            domain: DEFAULT_DNS_DOMAIN.to_owned(),
            alt_domain: None,
            recursors: Vec::new(),
            recursor_timeout: Duration::from_secs(2),
            allow_stale: true,
            max_stale: Duration::from_secs(5),
            node_ttl: Duration::ZERO,
            service_ttl: ServiceTtls::default(),
            udp_answer_limit: 3,
            a_record_limit: None,
            only_passing: false,
            enable_truncate: true,
            soa: SoaSettings { refresh: 3600, retry: 600, expire: 86400, min_ttl: 5 },
        }
    }
}

impl DnsSettings {
    /// Resolves the merged sources: defaults filled in, every rule checked.
    pub(crate) fn from_layer(layer: &DnsLayer) -> Result<Self, ConfigError> {
        let base = DnsSettings::default();
        let c = &layer.dns_config;
        let domain = match &layer.domain {
            Some(text) => normalize_domain("domain", text)?,
            None => base.domain,
        };
        let alt_domain = layer.alt_domain.as_deref().map(|text| normalize_domain("alt_domain", text)).transpose()?;
        if alt_domain.as_deref() == Some(domain.as_str()) {
            return Err(ConfigError::invalid("alt_domain", "must differ from domain"));
        }
        if layer.recursors.len() > RECURSORS_MAX {
            return Err(ConfigError::invalid("recursors", format!("at most {RECURSORS_MAX}")));
        }
        let recursor_timeout = c.recursor_timeout.unwrap_or(base.recursor_timeout);
        if recursor_timeout.is_zero() {
            return Err(ConfigError::invalid("dns_config.recursor_timeout", "must be longer than zero"));
        }
        let udp_answer_limit = c.udp_answer_limit.map_or(base.udp_answer_limit, |n| n as usize);
        if udp_answer_limit == 0 {
            return Err(ConfigError::invalid("dns_config.udp_answer_limit", "must be at least 1"));
        }
        for pattern in c.service_ttl.keys() {
            if pattern.is_empty() || pattern[..pattern.len() - 1].contains('*') {
                let message = format!("{pattern:?}: a service name, or a prefix followed by one `*`");
                return Err(ConfigError::invalid("dns_config.service_ttl", message));
            }
        }
        let soa = SoaSettings {
            refresh: c.soa.refresh.unwrap_or(base.soa.refresh),
            retry: c.soa.retry.unwrap_or(base.soa.retry),
            expire: c.soa.expire.unwrap_or(base.soa.expire),
            min_ttl: c.soa.min_ttl.unwrap_or(base.soa.min_ttl),
        };
        Ok(DnsSettings {
            domain,
            alt_domain,
            recursors: layer.recursors.iter().map(|r| r.0).collect(),
            recursor_timeout,
            allow_stale: c.allow_stale.unwrap_or(base.allow_stale),
            max_stale: c.max_stale.unwrap_or(base.max_stale),
            node_ttl: c.node_ttl.unwrap_or(base.node_ttl),
            service_ttl: ServiceTtls::new(&c.service_ttl),
            udp_answer_limit,
            // 0 means no limit, as in Consul.
            a_record_limit: c.a_record_limit.filter(|n| *n > 0).map(|n| n as usize),
            only_passing: c.only_passing.unwrap_or(base.only_passing),
            enable_truncate: c.enable_truncate.unwrap_or(base.enable_truncate),
            soa,
        })
    }
}

/// A domain as DNS names compare: lower case, with the final dot; labels of letters, digits,
/// `-` and `_`, 1 to 63 characters.
fn normalize_domain(field: &str, text: &str) -> Result<String, ConfigError> {
    let trimmed = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let bad = |why: &str| ConfigError::invalid(field, format!("{text:?}: {why}"));
    if trimmed.is_empty() {
        return Err(bad("must name a domain, such as consul"));
    }
    if trimmed.len() > DOMAIN_CHARS_MAX {
        return Err(bad("longer than 253 characters"));
    }
    for label in trimmed.split('.') {
        let ok_chars = label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if label.is_empty() || label.len() > 63 || !ok_chars {
            return Err(bad("labels are 1 to 63 letters, digits, `-` or `_`"));
        }
    }
    Ok(format!("{trimmed}."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(json: &str) -> DnsConfigLayer {
        serde_json::from_str(json).unwrap()
    }

    /// With nothing set, the defaults are Consul's except where this module says why not.
    #[test]
    fn defaults() {
        let settings = DnsSettings::from_layer(&DnsLayer::default()).unwrap();
        assert_eq!(settings, DnsSettings::default());
        assert_eq!(settings.domain, "consul.");
        assert_eq!(settings.max_stale, Duration::from_secs(5));
        assert!(settings.soa.min_ttl > 0, "negative answers are cached");
    }

    /// Domains are normalised to lower case with the final dot; bad ones are refused by field.
    #[test]
    fn domains_normalise_or_fail_by_field() {
        let dns =
            DnsLayer { domain: Some("Cairn.Example".into()), alt_domain: Some("x.".into()), ..DnsLayer::default() };
        let settings = DnsSettings::from_layer(&dns).unwrap();
        assert_eq!(settings.domain, "cairn.example.");
        assert_eq!(settings.alt_domain.as_deref(), Some("x."));
        for bad in ["", ".", "a..b", "sp ace", &"x".repeat(64)] {
            let dns = DnsLayer { domain: Some(bad.into()), ..DnsLayer::default() };
            let err = DnsSettings::from_layer(&dns).unwrap_err();
            assert!(matches!(&err, ConfigError::Invalid { field, .. } if field == "domain"), "{bad:?}: {err:?}");
        }
        let same = DnsLayer { domain: Some("a".into()), alt_domain: Some("A.".into()), ..DnsLayer::default() };
        assert!(DnsSettings::from_layer(&same).is_err());
    }

    /// Every `dns_config` key is read, in Consul's spelling and units.
    #[test]
    fn reads_every_key() {
        let c = layer(
            r#"{"allow_stale":false,"max_stale":"2s","node_ttl":"10s","service_ttl":{"*":"5s","web":"1s","db*":"3s"},
                "udp_answer_limit":5,"a_record_limit":2,"only_passing":true,"enable_truncate":false,
                "recursor_timeout":"1s","soa":{"min_ttl":30,"refresh":1,"retry":2,"expire":3}}"#,
        );
        let dns = DnsLayer { recursors: vec!["8.8.8.8".parse().unwrap()], dns_config: c, ..DnsLayer::default() };
        let s = DnsSettings::from_layer(&dns).unwrap();
        assert!(!s.allow_stale && s.only_passing && !s.enable_truncate);
        assert_eq!((s.max_stale, s.node_ttl), (Duration::from_secs(2), Duration::from_secs(10)));
        assert_eq!((s.udp_answer_limit, s.a_record_limit), (5, Some(2)));
        assert_eq!(s.soa, SoaSettings { refresh: 1, retry: 2, expire: 3, min_ttl: 30 });
        assert_eq!(s.recursors, vec!["8.8.8.8:53".parse::<SocketAddr>().unwrap()]);
        assert_eq!(s.service_ttl.ttl_for("WEB"), Some(Duration::from_secs(1)));
        assert_eq!(s.service_ttl.ttl_for("dbx"), Some(Duration::from_secs(3)));
        assert_eq!(s.service_ttl.ttl_for("other"), Some(Duration::from_secs(5)));
        assert_eq!(ServiceTtls::default().ttl_for("web"), None);
    }

    /// The longest prefix pattern wins over a shorter one and over `*`.
    #[test]
    fn longest_prefix_wins() {
        let patterns: BTreeMap<String, Duration> =
            [("w*", 1), ("web*", 2), ("*", 3)].map(|(p, s)| (p.to_owned(), Duration::from_secs(s))).into();
        let ttls = ServiceTtls::new(&patterns);
        assert_eq!(ttls.ttl_for("webapp"), Some(Duration::from_secs(2)));
        assert_eq!(ttls.ttl_for("wiki"), Some(Duration::from_secs(1)));
        assert_eq!(ttls.ttl_for("db"), Some(Duration::from_secs(3)));
    }

    /// Recursors take an IP with or without a port; anything else is refused.
    #[test]
    fn recursors_parse() {
        assert_eq!("1.2.3.4".parse::<Recursor>().unwrap().0, "1.2.3.4:53".parse().unwrap());
        assert_eq!("[::1]:5353".parse::<Recursor>().unwrap().0, "[::1]:5353".parse().unwrap());
        assert!("dns.google".parse::<Recursor>().is_err());
    }

    /// In a config file: the keys land in the layer, unknown ones inside `dns_config` and its
    /// `soa` are errors naming the path, Consul's unimplemented ones warnings.
    #[test]
    fn config_file_keys() {
        let parse = |text: &str| super::super::file::parse(std::path::Path::new("d.json"), text.as_bytes());
        let layer = parse(
            r#"{"domain":"cairn","recursors":["1.1.1.1"],"dns_config":{"max_stale":"1s","soa":{"min_ttl":9},
                "use_cache":true}}"#,
        )
        .unwrap();
        assert_eq!(layer.domain.as_deref(), Some("cairn"));
        assert_eq!(layer.dns_config.max_stale, Some(Duration::from_secs(1)));
        assert_eq!(layer.dns_config.soa.min_ttl, Some(9));
        assert_eq!(layer.ignored_keys, ["d.json: dns_config.use_cache"]);
        for (text, path) in [
            (r#"{"dns_config":{"max_stal":"1s"}}"#, "dns_config.max_stal"),
            (r#"{"dns_config":{"soa":{"minttl":1}}}"#, "dns_config.soa.minttl"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(matches!(&err, ConfigError::UnknownKey { key_path, .. } if key_path == path), "{err:?}");
        }
        let err = parse(r#"{"recursors":["dns.google"]}"#).unwrap_err();
        assert!(matches!(&err, ConfigError::Json { field_path, .. } if field_path == "recursors[0]"), "{err:?}");
    }

    /// Limits and patterns that make no sense are refused by field.
    #[test]
    fn bad_values_are_refused() {
        let with = |c: DnsConfigLayer| DnsSettings::from_layer(&DnsLayer { dns_config: c, ..DnsLayer::default() });
        let field_of = |e: ConfigError| match e {
            ConfigError::Invalid { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field_of(with(layer(r#"{"udp_answer_limit":0}"#)).unwrap_err()), "dns_config.udp_answer_limit");
        assert_eq!(field_of(with(layer(r#"{"service_ttl":{"a*b*":"1s"}}"#)).unwrap_err()), "dns_config.service_ttl");
        assert_eq!(field_of(with(layer(r#"{"recursor_timeout":"0s"}"#)).unwrap_err()), "dns_config.recursor_timeout");
        assert_eq!(with(layer(r#"{"a_record_limit":0}"#)).unwrap().a_record_limit, None);
    }
}
