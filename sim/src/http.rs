//! A minimal HTTP/1.1 client for workload clients inside the simulator (hyper over the simulated
//! TCP). One connection per request keeps failures independent.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub body: Bytes,
}

/// How a request failed. Only `Connect` means it certainly never reached the server.
#[derive(Debug)]
pub enum HttpError {
    Connect(std::io::Error),
    Timeout,
    Protocol(String),
}

pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Bytes,
    limit: Duration,
) -> Result<HttpResponse, HttpError> {
    let stream = match cairn::io::timeout(limit, TcpStream::connect(addr)).await {
        Err(_) => return Err(HttpError::Timeout),
        Ok(Err(e)) => return Err(HttpError::Connect(e)),
        Ok(Ok(stream)) => stream,
    };
    let exchange = async {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| HttpError::Protocol(e.to_string()))?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string())
            .body(Full::new(body))
            .map_err(|e| HttpError::Protocol(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| HttpError::Protocol(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| HttpError::Protocol(e.to_string()))?.to_bytes();
        driver.abort();
        Ok(HttpResponse { status, body })
    };
    cairn::io::timeout(limit, exchange).await.map_err(|_| HttpError::Timeout)?
}
