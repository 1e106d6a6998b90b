//! The HTTP server of `--http`: `GET /metrics` (Prometheus text), `GET /healthz`, `GET /readyz`
//! (JSON; 503 when not alive/ready), `GET /` (the status page) and `GET /status.json` (the same
//! data as JSON). [`Server`] owns it while a process runs: started before the service, stopped
//! after it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::health::Health;
use super::Listen;
use crate::lifecycle::{Exit, Tasks};

/// What a process serves.
#[derive(Clone)]
pub struct Site {
    /// Its metrics.
    pub metrics: Arc<Registry>,
    /// Its probes.
    pub health: Arc<Health>,
    /// Renders `GET /`.
    pub page: Arc<dyn Fn() -> String + Send + Sync>,
    /// Renders `GET /status.json`.
    pub status: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
}

impl Site {
    /// A site with no metrics and a page with only its title: what a process serves before (or
    /// without) an observer of its own.
    pub fn blank(title: &'static str) -> Site {
        Site {
            metrics: Arc::new(Registry::default()),
            health: Health::new(&[]),
            page: Arc::new(move || super::page::document(title, 10, &format!("<h1>{title}</h1>"))),
            status: Arc::new(|| serde_json::json!({})),
        }
    }
}

/// How long a stopping server may take to finish the requests in flight before it is aborted.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The `--http` server while the process runs: its serve task, owned in one [`Tasks`].
pub struct Server {
    tasks: Tasks<Infallible>,
}

impl Server {
    /// Binds `listen` (a busy port is an error now) and serves `site`, or nothing for `off`.
    pub async fn start(listen: Listen, site: Site) -> Result<Server, HttpError> {
        let mut tasks = Tasks::new(&CancellationToken::new());
        if let Listen::At(addr) = listen {
            let listener = bind(addr).await?;
            tasks.spawn("the HTTP server", |stop| serve(listener, site, stop));
        }
        Ok(Server { tasks })
    }

    /// Stops serving once the process's work is done, and joins the server task: it finishes the
    /// requests in flight within a grace of 5 s, then is aborted.
    pub async fn stop(self) {
        for ended in self.tasks.shutdown(STOP_GRACE).await {
            if !matches!(ended.exit, Exit::Done) {
                tracing::error!(message = "HTTP server task failed", error = %ended.reason());
            }
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound.
    #[error("cannot listen on {addr} (--http): {source}; pick another address or `--http off`")]
    Bind {
        /// The address of `--http`.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Binds `addr` now, so a busy port is an error at start, not later.
async fn bind(addr: SocketAddr) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError::Bind { addr, source })
}

/// Serves `site` on `listener` until `shutdown`; logs the address it serves on.
async fn serve(
    listener: TcpListener,
    site: Site,
    shutdown: CancellationToken,
) -> Result<(), Infallible> {
    let local = listener.local_addr().ok();
    let app = Router::new()
        .route("/", get(page))
        .route("/status.json", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(site);
    if let Some(addr) = local {
        tracing::info!(
            message = "HTTP serving /metrics /healthz /readyz and the status page",
            addr = %addr,
            url = %format!("http://{addr}/")
        );
    }
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::error!(message = "HTTP server stopped", error = %e);
    }
    Ok(())
}

async fn page(State(site): State<Site>) -> Response {
    let body = (site.page)();
    ([(header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

async fn status(State(site): State<Site>) -> Response {
    Json((site.status)()).into_response()
}

async fn metrics(State(site): State<Site>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &site.metrics) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
        )
            .into_response(),
    }
}

async fn healthz(State(site): State<Site>) -> Response {
    let live = site.health.liveness();
    let code = if live.alive {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(live)).into_response()
}

async fn readyz(State(site): State<Site>) -> Response {
    let ready = site.health.readiness();
    let code = if ready.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(ready)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_joins_the_server_so_its_port_is_free_again() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let server = Server::start(Listen::At(addr), Site::blank("test"))
            .await
            .unwrap();
        assert!(matches!(bind(addr).await, Err(HttpError::Bind { .. })));
        tokio::time::timeout(STOP_GRACE, server.stop())
            .await
            .expect("an idle server stops at once");
        bind(addr).await.expect("the port is free after stop");
    }
}
