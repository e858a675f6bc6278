//! `/v1/kv/<key>`: Consul's KV endpoints.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use serde::Serialize;

use super::query::{blocking_read, Params, QueryOptions};
use super::{encode, json_body, read_body, read_headers, ApiError};
use crate::server::Server;
use crate::state::{Command, KvCommand, KvEntry, Outcome};

/// Largest value accepted, as Consul's `kv_max_value_size` default.
pub const MAX_VALUE_BYTES: usize = 512 * 1024;
/// Longest key accepted. Consul has no explicit limit; this keeps one request's key from
/// dominating memory and log lines.
pub const MAX_KEY_BYTES: usize = 2048;

pub fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/v1/kv/{*key}", get(get_key).put(put_key).delete(delete_key))
        .route("/v1/kv/", get(get_root).put(put_root).delete(delete_root))
        .route("/v1/kv", get(get_root).put(put_root).delete(delete_root))
}

type Server_ = AxumState<Arc<Server>>;

async fn get_key(server: Server_, Path(key): Path<String>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    read(server.0, key, q).await
}

async fn get_root(server: Server_, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    read(server.0, String::new(), q).await
}

async fn put_key(
    server: Server_,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    write(server.0, key, q, body).await
}

async fn put_root(server: Server_, RawQuery(q): RawQuery, body: Body) -> Result<Response, ApiError> {
    write(server.0, String::new(), q, body).await
}

async fn delete_key(server: Server_, Path(key): Path<String>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    delete(server.0, key, q).await
}

async fn delete_root(server: Server_, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    delete(server.0, String::new(), q).await
}

/// Refuse keys that would be hard to show, log or route: too long, or with control characters.
fn validate_key(key: &str) -> Result<(), ApiError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::bad_request(format!("key is {} bytes; the limit is {MAX_KEY_BYTES}", key.len())));
    }
    if let Some(c) = key.chars().find(|c| c.is_control()) {
        return Err(ApiError::bad_request(format!("invalid key {key:?}: control character {c:?} not allowed")));
    }
    Ok(())
}

fn missing_key() -> ApiError {
    ApiError::bad_request("Missing key name")
}

/// Consul's JSON for one entry (`DirEntry`), fields in Consul's order.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EntryJson<'a> {
    lock_index: u64,
    key: &'a str,
    flags: u64,
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<&'a str>,
    create_index: u64,
    modify_index: u64,
}

impl<'a> From<&'a KvEntry> for EntryJson<'a> {
    fn from(entry: &'a KvEntry) -> Self {
        EntryJson {
            lock_index: entry.lock_index,
            key: &entry.key,
            flags: entry.flags,
            // Consul stores an empty body as a nil value, shown as null.
            value: (!entry.value.is_empty()).then(|| base64::engine::general_purpose::STANDARD.encode(&entry.value)),
            session: entry.session.as_deref(),
            create_index: entry.create_index,
            modify_index: entry.modify_index,
        }
    }
}

/// What a GET on the KV store returns, before it becomes a response.
enum ReadResult {
    Entries(Vec<u8>),
    Raw(Bytes),
    Keys(Vec<u8>),
    NotFound,
}

async fn read(server: Arc<Server>, key: String, query: Option<String>) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref())?;
    let options = QueryOptions::from_params(&params, &server)?;
    validate_key(&key)?;
    let (recurse, keys, raw) = (params.flag("recurse"), params.flag("keys"), params.flag("raw"));
    if key.is_empty() && !recurse && !keys {
        return Err(missing_key());
    }
    let separator = params.text("separator").map(str::to_owned);
    let (index, result, meta) = blocking_read(&server, options, |state| {
        let kv = state.kv();
        if keys {
            let list = kv.keys(&key, separator.as_deref().filter(|s| !s.is_empty()));
            let result = if list.is_empty() { ReadResult::NotFound } else { ReadResult::Keys(encode(&list)) };
            (kv.index_for_prefix(&key), result)
        } else if recurse {
            let entries: Vec<EntryJson> = kv.list(&key).map(EntryJson::from).collect();
            let result = if entries.is_empty() { ReadResult::NotFound } else { ReadResult::Entries(encode(&entries)) };
            (kv.index_for_prefix(&key), result)
        } else {
            let result = match kv.get(&key) {
                None => ReadResult::NotFound,
                Some(entry) if raw => ReadResult::Raw(entry.value.clone()),
                Some(entry) => ReadResult::Entries(encode(&[EntryJson::from(entry)])),
            };
            (kv.index_for_key(&key), result)
        }
    })
    .await?;
    let headers = read_headers(index, meta);
    Ok(match result {
        ReadResult::NotFound => (StatusCode::NOT_FOUND, headers).into_response(),
        ReadResult::Raw(bytes) => (headers, [("content-type", "application/octet-stream")], bytes).into_response(),
        ReadResult::Entries(json) | ReadResult::Keys(json) => {
            (headers, [("content-type", "application/json")], json).into_response()
        }
    })
}

async fn write(server: Arc<Server>, key: String, query: Option<String>, body: Body) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref())?;
    if key.is_empty() {
        return Err(missing_key());
    }
    validate_key(&key)?;
    if params.flag("acquire") || params.flag("release") {
        return Err(ApiError::bad_request(
            "?acquire and ?release need sessions, which this version of cairn does not implement yet",
        ));
    }
    let flags = params.number("flags")?.unwrap_or(0);
    let value = read_body(body, MAX_VALUE_BYTES).await?;
    let command = match params.number("cas")? {
        Some(expected_modify_index) => KvCommand::Cas { key, value, flags, expected_modify_index },
        None => KvCommand::Set { key, value, flags },
    };
    submit(&server, command).await
}

async fn delete(server: Arc<Server>, key: String, query: Option<String>) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref())?;
    validate_key(&key)?;
    let command = if params.flag("recurse") {
        KvCommand::DeleteTree { prefix: key }
    } else if key.is_empty() {
        return Err(missing_key());
    } else if let Some(expected_modify_index) = params.number("cas")? {
        KvCommand::DeleteCas { key, expected_modify_index }
    } else {
        KvCommand::Delete { key }
    };
    submit(&server, command).await
}

/// Apply a KV command and answer `true`/`false` as Consul does.
async fn submit(server: &Server, command: KvCommand) -> Result<Response, ApiError> {
    let reply = server.write(Command::Kv(command)).await?;
    match reply.outcome {
        Outcome::Done => Ok(json_body(&true)),
        Outcome::CasFailed => Ok(json_body(&false)),
        Outcome::Rejected(why) => Err(ApiError::bad_request(why)),
    }
}
