//! HTTP requests carried over the server RPC port: client agents hold no state, so they forward
//! API requests to a server, which runs them through the same router as its own.

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::ApiError;
use crate::rpc::message::ForwardedHttp;

/// Largest request body a client agent forwards (the KV limit, 512 KiB, is enforced by the server
/// with its own message; this only bounds what a client buffers).
pub const MAX_FORWARDED_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Largest response a server returns over RPC; above it the client gets a 500 saying so.
pub const MAX_FORWARDED_RESPONSE_BYTES: usize = 48 * 1024 * 1024;

/// Headers that describe the connection, not the message: never forwarded.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "transfer-encoding" | "te" | "trailer" | "upgrade" | "content-length" | "host"
    )
}

/// Turn a request received by a client agent into one a server can run.
pub async fn capture(request: Request<Body>) -> Result<ForwardedHttp, ApiError> {
    let (parts, body) = request.into_parts();
    let body = http_body_util::Limited::new(body, MAX_FORWARDED_BODY_BYTES).collect().await.map_err(|e| {
        if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
            ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!("Request body too large: the limit is {MAX_FORWARDED_BODY_BYTES} bytes"),
            }
        } else {
            ApiError::bad_request(format!("could not read request body: {e}"))
        }
    })?;
    Ok(ForwardedHttp {
        head: parts.method.to_string(),
        path: parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into()),
        headers: headers_of(&parts.headers),
        body: body.to_bytes().to_vec(),
    })
}

fn headers_of(headers: &axum::http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| !hop_by_hop(name.as_str()))
        .filter_map(|(name, value)| Some((name.as_str().to_string(), value.to_str().ok()?.to_string())))
        .collect()
}

/// Run a forwarded request through `api` (on a server) and capture the response.
pub async fn serve(api: &Router, forwarded: ForwardedHttp) -> ForwardedHttp {
    let response = match rebuild_request(forwarded) {
        Ok(request) => match api.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        Err(e) => e.into_response(),
    };
    let (parts, body) = response.into_parts();
    let body = match http_body_util::Limited::new(body, MAX_FORWARDED_RESPONSE_BYTES).collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(_) => {
            return ForwardedHttp {
                head: "500".into(),
                path: String::new(),
                headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
                body: format!("response too large to forward to a client agent (over {MAX_FORWARDED_RESPONSE_BYTES} bytes); query a server directly\n").into_bytes(),
            }
        }
    };
    ForwardedHttp {
        head: parts.status.as_u16().to_string(),
        path: String::new(),
        headers: headers_of(&parts.headers),
        body,
    }
}

fn rebuild_request(forwarded: ForwardedHttp) -> Result<Request<Body>, ApiError> {
    let method = Method::from_bytes(forwarded.head.as_bytes())
        .map_err(|_| ApiError::bad_request(format!("forwarded request with invalid method {:?}", forwarded.head)))?;
    let mut request = Request::builder().method(method).uri(forwarded.path.as_str());
    for (name, value) in &forwarded.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            request = request.header(name, value);
        }
    }
    request
        .body(Body::from(Bytes::from(forwarded.body)))
        .map_err(|e| ApiError::bad_request(format!("forwarded request is malformed: {e}")))
}

/// Turn a server's forwarded response back into a response for the client agent's caller.
pub fn restore(forwarded: ForwardedHttp) -> Response {
    let status = forwarded.head.parse().ok().and_then(|code| StatusCode::from_u16(code).ok());
    let Some(status) = status else {
        return ApiError {
            status: StatusCode::BAD_GATEWAY,
            message: format!("server sent an invalid status {:?}", forwarded.head),
        }
        .into_response();
    };
    let mut response = (status, Body::from(forwarded.body)).into_response();
    for (name, value) in forwarded.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::routing::put;

    use super::*;

    /// A request captured on one side, served by a router on the other and restored, arrives
    /// with its method, path, query, headers and body, and its answer comes back with status,
    /// headers and body.
    #[tokio::test]
    async fn a_forwarded_round_trip_keeps_method_path_headers_and_body() {
        let api = Router::new().route(
            "/v1/kv/{*key}",
            put(|request: Request<Body>| async move {
                let (parts, body) = request.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                let echo = format!(
                    "{} {} {} {}",
                    parts.method,
                    parts.uri,
                    parts.headers.get("x-consul-token").and_then(|v| v.to_str().ok()).unwrap_or("-"),
                    String::from_utf8_lossy(&body)
                );
                (StatusCode::CREATED, [("x-consul-index", "42")], echo)
            }),
        );
        let request = Request::builder()
            .method("PUT")
            .uri("/v1/kv/a/b?cas=3")
            .header("x-consul-token", "secret")
            .header("connection", "keep-alive")
            .body(Body::from("value"))
            .unwrap();
        let captured = capture(request).await.unwrap();
        assert!(captured.headers.iter().all(|(name, _)| name != "connection"), "hop-by-hop headers stay behind");
        let answered = serve(&api, captured).await;
        let response = restore(answered);
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers().get("x-consul-index").unwrap(), "42");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"PUT /v1/kv/a/b?cas=3 secret value");
    }

    /// A body over the forwarding limit is refused by the client agent with a 413.
    #[tokio::test]
    async fn oversized_bodies_are_refused_before_forwarding() {
        let request = Request::builder()
            .method("PUT")
            .uri("/v1/kv/big")
            .body(Body::from(vec![0u8; MAX_FORWARDED_BODY_BYTES + 1]))
            .unwrap();
        let err = capture(request).await.unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
