//! A small HTTP/1 client (hyper-util's legacy client, plain `http://` only): a member forwarding
//! a jobs API request to a shard's owner, and `cronq jobs`. Every request is bounded by a timeout
//! and every response body by a size.

use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL cannot be used.
    #[error("{url}: {reason}")]
    Url {
        /// As given.
        url: String,
        /// Why.
        reason: String,
    },
    /// No answer (refused, reset, timed out).
    #[error("{method} {url}: {reason}")]
    Request {
        /// The method.
        method: Method,
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// A response: status, headers, whole body.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

/// A pooled client.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    max_body: usize,
}

impl HttpClient {
    /// A client whose requests take at most `timeout` and whose response bodies are at most
    /// `max_body` bytes.
    pub fn new(timeout: Duration, max_body: usize) -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let inner = Client::builder(TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            // Below the --http server's 10 s keep-alive timeout: a pooled connection is dropped
            // here before the other side closes it.
            .pool_idle_timeout(Duration::from_secs(5))
            .build(connector);
        HttpClient {
            inner,
            timeout,
            max_body,
        }
    }

    /// Sends `method url` with `headers` and `body`; any status is a [`Reply`].
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Reply, ClientError> {
        let uri: axum::http::Uri =
            url.parse()
                .map_err(|e: axum::http::uri::InvalidUri| ClientError::Url {
                    url: url.to_string(),
                    reason: e.to_string(),
                })?;
        if uri.scheme_str() != Some("http") {
            return Err(ClientError::Url {
                url: url.to_string(),
                reason: "only http:// URLs are supported (put a TLS proxy in front for https)"
                    .into(),
            });
        }
        let mut request = axum::http::Request::builder()
            .method(method.clone())
            .uri(uri);
        if let Some(h) = request.headers_mut() {
            h.extend(headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| ClientError::Url {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let failed = |reason: String| ClientError::Request {
            method: method.clone(),
            url: url.to_string(),
            reason,
        };
        let exchange = async {
            let response = self.inner.request(request).await.map_err(|e| {
                failed(format!(
                    "{e} ({:?})",
                    std::error::Error::source(&e).map(ToString::to_string)
                ))
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, self.max_body)
                .collect()
                .await
                .map_err(|e| failed(format!("reading the response: {e}")))?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(failed(format!(
                "no answer within {}",
                humantime::format_duration(self.timeout)
            ))),
        }
    }
}
