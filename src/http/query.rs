//! Query-string parameters shared by read endpoints, parsed once into types.

use std::collections::BTreeMap;
use std::time::Duration;

use super::ApiError;
use crate::server::{Consistency, ReadMeta, Server};
use crate::state::{Node, ServiceInstance, State};

/// Default and longest wait of a blocking query (Consul's).
const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);
const MAX_WAIT: Duration = Duration::from_secs(10 * 60);

/// Raw parameters, each name with its values in the order given (`?tag=a&tag=b`); `?recurse`
/// (no value) has the one value `""`.
#[derive(Debug, Default)]
pub struct Params(BTreeMap<String, Vec<String>>);

impl Params {
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
        let mut params = BTreeMap::<String, Vec<String>>::new();
        for (name, value) in pairs {
            params.entry(name).or_default().push(value);
        }
        Ok(Params(params))
    }

    /// A Consul flag parameter: present means true, whatever its value.
    pub fn flag(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// A flag that may carry a Go boolean (`?passing=false`), as Consul's `getBoolQueryParam`:
    /// absent is false, present without a value is true.
    pub fn bool_flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.text(name) {
            None => Ok(false),
            Some("" | "1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
            Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
            Some(_) => Err(ApiError::bad_request(format!("Invalid value for ?{name}"))),
        }
    }

    /// The first value of `name`, as Go's `url.Values.Get`.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|values| values.first()).map(String::as_str)
    }

    /// Every value of a repeatable parameter, in the order given.
    pub fn all(&self, name: &str) -> &[String] {
        self.0.get(name).map_or(&[], Vec::as_slice)
    }

    pub fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.text(name) {
            None => Ok(None),
            Some(value) => value.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!("invalid ?{name}={value:?}: expected a non-negative integer"))
            }),
        }
    }
}

/// Options every read endpoint takes: consistency, blocking, datacenter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryOptions {
    pub consistency: Consistency,
    /// `?index=`: block until the result's index differs from this.
    pub min_index: Option<u64>,
    pub wait: Duration,
}

impl QueryOptions {
    pub fn from_params(params: &Params, server: &Server) -> Result<Self, ApiError> {
        let consistency = match (params.flag("consistent"), params.flag("stale")) {
            (true, true) => {
                return Err(ApiError::bad_request("Cannot specify ?stale with ?consistent, conflicting semantics."))
            }
            (true, false) => Consistency::Consistent,
            (false, true) => Consistency::Stale,
            (false, false) => Consistency::Default,
        };
        check_datacenter(params.text("dc").unwrap_or(""), server)?;
        let wait = match params.text("wait") {
            None => DEFAULT_WAIT,
            Some(text) => crate::config::parse_duration(text)
                .map_err(|e| ApiError::bad_request(format!("invalid ?wait={text:?}: {e}")))?
                .min(MAX_WAIT),
        };
        Ok(QueryOptions { consistency, min_index: params.number("index")?, wait })
    }
}

/// Parse a read's query string into its parameters and the options every read takes.
pub fn read_request(query: Option<&str>, server: &Server) -> Result<(Params, QueryOptions), ApiError> {
    let params = Params::parse(query)?;
    let options = QueryOptions::from_params(&params, server)?;
    Ok((params, options))
}

/// A request for another datacenter (`?dc=`, or a body's `Datacenter`) fails as Consul's does
/// when it has no route there: cairn knows only its own.
pub fn check_datacenter(dc: &str, server: &Server) -> Result<(), ApiError> {
    if dc.is_empty() || dc == server.datacenter() {
        return Ok(());
    }
    Err(ApiError {
        status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("No path to datacenter {dc:?}"),
    })
}

/// `?node-meta=key:value`, repeatable: only nodes whose metadata has every pair. A pair without
/// `:` asks for an empty value (Consul's `ParseMetaPair`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NodeMetaFilter(BTreeMap<String, String>);

impl NodeMetaFilter {
    pub fn from_params(params: &Params) -> Self {
        let pair = |text: &String| match text.split_once(':') {
            Some((key, value)) => (key.to_owned(), value.to_owned()),
            None => (text.clone(), String::new()),
        };
        NodeMetaFilter(params.all("node-meta").iter().map(pair).collect())
    }

    pub fn matches(&self, node: &Node) -> bool {
        self.0.iter().all(|(key, value)| node.meta.get(key) == Some(value))
    }
}

/// `?tag=`, repeatable: only instances carrying every tag, compared without regard to case
/// (Consul's `serviceTagFilter`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TagFilter(Vec<String>);

impl TagFilter {
    pub fn from_params(params: &Params) -> Self {
        TagFilter(params.all("tag").to_vec())
    }

    pub fn matches(&self, instance: &ServiceInstance) -> bool {
        self.0.iter().all(|wanted| {
            let wanted = wanted.to_lowercase();
            instance.tags.iter().any(|tag| tag.to_lowercase() == wanted)
        })
    }
}

/// The filters of a read of one service's instances (`/v1/catalog/service/<name>`,
/// `/v1/health/service/<name>`): `?node-meta=` on the node and `?tag=` on the instance.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct InstanceFilter {
    node_meta: NodeMetaFilter,
    tags: TagFilter,
}

impl InstanceFilter {
    pub fn from_params(params: &Params) -> Self {
        InstanceFilter { node_meta: NodeMetaFilter::from_params(params), tags: TagFilter::from_params(params) }
    }

    pub fn matches(&self, node: &Node, instance: &ServiceInstance) -> bool {
        self.node_meta.matches(node) && self.tags.matches(instance)
    }
}

/// Run `read` over the state after the read barrier; with `?index`, block until the index it
/// reports differs from the one given or the wait runs out. `read` returns (index, result).
pub async fn blocking_read<T>(
    server: &Server,
    options: QueryOptions,
    read: impl Fn(&State) -> (u64, T),
) -> Result<(u64, T, ReadMeta), ApiError> {
    let deadline = tokio::time::Instant::now() + options.wait;
    let mut applied = server.state().subscribe();
    loop {
        // Mark what is applied now as seen before reading, so an entry applied after the read
        // wakes the wait below instead of being missed.
        applied.borrow_and_update();
        let meta = server.read_barrier(options.consistency).await?;
        let (index, result) = read(&server.state().read());
        let unchanged = options.min_index == Some(index);
        if !unchanged || tokio::time::Instant::now() >= deadline {
            return Ok((index, result, meta));
        }
        // Wake on the next applied entry (or when the wait runs out) and look again.
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        if crate::io::timeout(remaining, applied.changed()).await.is_err() {
            let meta = server.read_barrier(options.consistency).await?;
            let (index, result) = read(&server.state().read());
            return Ok((index, result, meta));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Repeated parameters keep every value in order; `text` is the first, as Go's `Get`.
    #[test]
    fn repeated_parameters_keep_all_values() {
        let params = Params::parse(Some("tag=a&tag=b&recurse")).unwrap();
        assert_eq!(params.all("tag"), ["a", "b"]);
        assert_eq!(params.text("tag"), Some("a"));
        assert!(params.all("missing").is_empty());
        assert!(params.flag("recurse"));
    }

    /// Node metadata and tag filters need every pair or tag; tags compare without case.
    #[test]
    fn filters_need_every_pair_and_tag() {
        let params = Params::parse(Some("node-meta=rack:r1&node-meta=ssd&tag=Primary&tag=v2")).unwrap();
        let meta = NodeMetaFilter::from_params(&params);
        let mut node = Node::default();
        node.meta.insert("rack".into(), "r1".into());
        assert!(!meta.matches(&node), "ssd is missing");
        node.meta.insert("ssd".into(), String::new());
        assert!(meta.matches(&node));
        let tags = TagFilter::from_params(&params);
        let mut instance = ServiceInstance { tags: vec!["primary".into()], ..ServiceInstance::default() };
        assert!(!tags.matches(&instance), "v2 is missing");
        instance.tags.push("V2".into());
        assert!(tags.matches(&instance));
        assert!(TagFilter::default().matches(&ServiceInstance::default()));
    }

    /// `?passing`, `?passing=true` and `?passing=1` all mean true; a non-boolean is refused.
    #[test]
    fn boolean_flags_follow_go_parse_bool() {
        let value = |query: &str| Params::parse(Some(query)).unwrap().bool_flag("passing");
        assert_eq!(value(""), Ok(false));
        assert_eq!(value("passing"), Ok(true));
        assert_eq!(value("passing=true"), Ok(true));
        assert_eq!(value("passing=0"), Ok(false));
        assert_eq!(value("passing=yes").unwrap_err().status, axum::http::StatusCode::BAD_REQUEST);
    }
}
