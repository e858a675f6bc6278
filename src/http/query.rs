//! Query-string parameters shared by read endpoints, parsed once into types.

use std::collections::BTreeMap;
use std::time::Duration;

use super::ApiError;
use crate::server::{Consistency, ReadMeta, Server};
use crate::state::State;

/// Default and longest wait of a blocking query (Consul's).
const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);
const MAX_WAIT: Duration = Duration::from_secs(10 * 60);

/// Raw parameters: `?recurse` (no value) maps to `""`.
#[derive(Debug, Default)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
        Ok(Params(pairs.into_iter().collect()))
    }

    /// A Consul flag parameter: present means true, whatever its value.
    pub fn flag(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.0.get(name) {
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
        if let Some(dc) = params.text("dc") {
            if !dc.is_empty() && dc != server.datacenter() {
                return Err(ApiError {
                    status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    message: format!("No path to datacenter {dc:?}"),
                });
            }
        }
        let wait = match params.text("wait") {
            None => DEFAULT_WAIT,
            Some(text) => crate::config::parse_duration(text)
                .map_err(|e| ApiError::bad_request(format!("invalid ?wait={text:?}: {e}")))?
                .min(MAX_WAIT),
        };
        Ok(QueryOptions { consistency, min_index: params.number("index")?, wait })
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
