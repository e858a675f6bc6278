//! Which question a DNS name asks: Consul's name forms, parsed into a [`Lookup`].
//!
//! ```text
//! [<tag>.]<service>.service[.<dc>].<domain>      instances of a service
//! _<service>._<tag|tcp|udp>.service[.<dc>].<domain>   the same, RFC 2782 style
//! <node>.node[.<dc>].<domain>                    a node
//! <hex-ip>.addr[.<dc>].<domain>                  an address spelled in hex
//! <domain>                                       the zone apex (SOA, NS)
//! ```
//!
//! Pure: labels in, a `Lookup` out. Labels are compared without ASCII case, as DNS names are.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a name asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The domain itself.
    Apex,
    /// Healthy instances of `service`, with `tag` if one was asked for.
    Service { service: String, tag: Option<String> },
    /// A node by name.
    Node { node: String },
    /// An address spelled in hex (`7f000001.addr.consul`).
    Addr { ip: IpAddr },
    /// Inside one of our domains but no name cairn knows the form of (or another datacenter):
    /// NXDOMAIN.
    Unknown,
}

/// The domains and datacenter names are judged against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// Each domain's labels, lower case, without the root: `consul.` is `["consul"]`.
    domains: Vec<Vec<String>>,
    datacenter: String,
}

/// Which of the zone's domains a name fell in, and what it asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The domain as the answer should spell it (`consul.`), or `None` outside every domain.
    pub domain: Option<String>,
    pub lookup: Lookup,
}

impl Zone {
    /// `domains` in presentation form (`consul.`), as [`crate::config::DnsSettings`] holds them.
    pub fn new<'a>(domains: impl IntoIterator<Item = &'a str>, datacenter: &str) -> Zone {
        let split = |domain: &str| -> Vec<String> {
            domain.trim_end_matches('.').split('.').filter(|l| !l.is_empty()).map(str::to_ascii_lowercase).collect()
        };
        Zone { domains: domains.into_iter().map(split).collect(), datacenter: datacenter.to_ascii_lowercase() }
    }

    pub fn datacenter(&self) -> &str {
        &self.datacenter
    }

    /// Parse a name given as its labels from the left (`web`, `service`, `consul`), raw bytes as
    /// on the wire.
    pub fn parse<'l>(&self, labels: impl IntoIterator<Item = &'l [u8]>) -> Parsed {
        let labels: Vec<Vec<u8>> = labels.into_iter().map(<[u8]>::to_ascii_lowercase).collect();
        // The longest matching domain wins, so `a.consul.` beats `consul.` for `x.a.consul.`.
        let matched = self
            .domains
            .iter()
            .filter(|domain| {
                labels.len() >= domain.len()
                    && labels[labels.len() - domain.len()..].iter().zip(domain.iter()).all(|(l, d)| l == d.as_bytes())
            })
            .max_by_key(|domain| domain.len());
        let Some(domain) = matched else {
            return Parsed { domain: None, lookup: Lookup::Unknown };
        };
        let prefix: Option<Vec<String>> =
            labels[..labels.len() - domain.len()].iter().map(|l| String::from_utf8(l.clone()).ok()).collect();
        // A label that is not UTF-8 cannot name anything in the catalog.
        let lookup = prefix.map_or(Lookup::Unknown, |prefix| self.lookup(&prefix));
        Parsed { domain: Some(format!("{}.", domain.join("."))), lookup }
    }

    /// What the labels before the domain ask for.
    fn lookup(&self, prefix: &[String]) -> Lookup {
        if prefix.is_empty() {
            return Lookup::Apex;
        }
        let is_kind = |label: &str| matches!(label, "service" | "node" | "addr" | "query");
        let n = prefix.len();
        // `<...>.<kind>` or `<...>.<kind>.<dc>`.
        let (kind_at, dc) = if is_kind(&prefix[n - 1]) {
            (n - 1, None)
        } else if n >= 2 && is_kind(&prefix[n - 2]) {
            (n - 2, Some(prefix[n - 1].as_str()))
        } else {
            return Lookup::Unknown;
        };
        if dc.is_some_and(|dc| dc != self.datacenter) {
            // cairn knows only its own datacenter.
            return Lookup::Unknown;
        }
        let before = &prefix[..kind_at];
        match prefix[kind_at].as_str() {
            "service" => service_lookup(before),
            "node" if !before.is_empty() => Lookup::Node { node: before.join(".") },
            "addr" if before.len() == 1 => hex_ip(&before[0]).map_or(Lookup::Unknown, |ip| Lookup::Addr { ip }),
            // Prepared queries are not implemented.
            _ => Lookup::Unknown,
        }
    }
}

fn service_lookup(before: &[String]) -> Lookup {
    let service = |name: &str| Lookup::Service { service: name.to_owned(), tag: None };
    match before {
        [name] if !name.starts_with('_') => service(name),
        // RFC 2782: `_<service>._<proto>`, where the protocol `tcp` or `udp` asks for every
        // instance and anything else is a tag (Consul's reading).
        [name, proto] if name.len() > 1 && proto.len() > 1 && name.starts_with('_') && proto.starts_with('_') => {
            match &proto[1..] {
                "tcp" | "udp" => service(&name[1..]),
                tag => Lookup::Service { service: name[1..].to_owned(), tag: Some(tag.to_owned()) },
            }
        }
        [tag, name] if !name.starts_with('_') => Lookup::Service { service: name.clone(), tag: Some(tag.clone()) },
        _ => Lookup::Unknown,
    }
}

/// `7f000001` is 127.0.0.1; 32 hex digits are an IPv6 address.
fn hex_ip(text: &str) -> Option<IpAddr> {
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match text.len() {
        8 => u32::from_str_radix(text, 16).ok().map(|n| IpAddr::V4(Ipv4Addr::from(n))),
        32 => u128::from_str_radix(text, 16).ok().map(|n| IpAddr::V6(Ipv6Addr::from(n))),
        _ => None,
    }
}

/// The hex spelling of an address, for `<hex>.addr.<dc>.<domain>` SRV targets.
pub fn ip_hex(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{:08x}", u32::from(v4)),
        IpAddr::V6(v6) => format!("{:032x}", u128::from(v6)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> Zone {
        Zone::new(["consul.", "cairn.example."], "dc1")
    }

    fn parse(name: &str) -> Parsed {
        zone().parse(name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()).map(str::as_bytes))
    }

    fn lookup(name: &str) -> Lookup {
        parse(name).lookup
    }

    fn service(name: &str, tag: Option<&str>) -> Lookup {
        Lookup::Service { service: name.into(), tag: tag.map(Into::into) }
    }

    /// Every service form of Consul's, with and without the datacenter, in any case.
    #[test]
    fn service_forms() {
        assert_eq!(lookup("web.service.consul."), service("web", None));
        assert_eq!(lookup("WEB.Service.dc1.CONSUL"), service("web", None));
        assert_eq!(lookup("primary.web.service.consul"), service("web", Some("primary")));
        assert_eq!(lookup("_web._tcp.service.consul"), service("web", None));
        assert_eq!(lookup("_web._udp.service.dc1.consul"), service("web", None));
        assert_eq!(lookup("_web._primary.service.consul"), service("web", Some("primary")));
    }

    /// Node and address forms; the address is read from hex.
    #[test]
    fn node_and_addr_forms() {
        assert_eq!(lookup("n1.node.consul"), Lookup::Node { node: "n1".into() });
        assert_eq!(lookup("n1.node.dc1.consul"), Lookup::Node { node: "n1".into() });
        assert_eq!(lookup("7f000001.addr.consul"), Lookup::Addr { ip: "127.0.0.1".parse().unwrap() });
        let v6 = "20010db8000000000000000000000001";
        assert_eq!(lookup(&format!("{v6}.addr.dc1.consul")), Lookup::Addr { ip: "2001:db8::1".parse().unwrap() });
        assert_eq!(ip_hex("2001:db8::1".parse().unwrap()), v6);
        assert_eq!(ip_hex("10.0.0.1".parse().unwrap()), "0a000001");
    }

    /// The apex, names outside every domain, and in-domain names of no known form.
    #[test]
    fn apex_outside_and_unknown() {
        assert_eq!(parse("consul.").lookup, Lookup::Apex);
        assert_eq!(parse("consul.").domain.as_deref(), Some("consul."));
        assert_eq!(parse("web.service.cairn.example").domain.as_deref(), Some("cairn.example."));
        assert_eq!(parse("example.com.").domain, None);
        assert_eq!(parse("consul.example.com.").domain, None);
        for unknown in [
            "web.consul",
            "a.b.c.service.consul",
            "web.service.dc2.consul",
            "x.node.dc2.consul",
            "node.consul",
            "zz.addr.consul",
            "7f00001.addr.consul",
            "q.query.consul",
            "_web.service.consul",
            "_._tcp.service.consul",
            "web.dc1.consul",
        ] {
            assert_eq!(lookup(unknown), Lookup::Unknown, "{unknown}");
        }
    }

    /// A label that is not UTF-8 names nothing.
    #[test]
    fn non_utf8_labels_name_nothing() {
        let labels: [&[u8]; 3] = [b"\xff\xfe", b"service", b"consul"];
        let parsed = zone().parse(labels);
        assert_eq!((parsed.domain.as_deref(), parsed.lookup), (Some("consul."), Lookup::Unknown));
    }
}
