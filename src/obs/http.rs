//! The HTTP server of `--http`: `GET /metrics` (Prometheus text), `GET /healthz`, `GET /readyz`
//! (JSON; 503 when not alive/ready), `GET /` (the status page) and `GET /status.json` (the same
//! data as JSON). [`Server`] owns it while a process runs: started before the service, stopped
//! after it.
//!
//! The pages may listen on every interface (in Kubernetes they do), so a client must not be able
//! to hold the server: axum's router runs on hyper HTTP/1 connections that this module accepts
//! itself, with
//! - a header-read timeout ([`HEADER_READ_TIMEOUT`]): a connection that has not sent a whole
//!   request head within it, counted from its accept or from the end of its last response, is
//!   closed. That is also the keep-alive idle timeout: an idle connection is one waiting for a head;
//! - a connection limit ([`MAX_CONNECTIONS`]): the next connection past it closes the oldest one,
//!   so a probe always gets in and memory stays bounded (each connection buffers at most
//!   [`MAX_BUFFER`] bytes of a request).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
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

/// How long a connection may take to send a whole request head, from its accept or from the end of
/// its last response (so also how long a keep-alive connection may stay idle). Prometheus scrapes
/// and probes send theirs at once; 10 s is generous for a slow link.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections served at once; the next one closes the oldest. Scrapers, probes and a few
/// browsers need a handful; 512 stays well under a default file-descriptor limit of 1024.
pub const MAX_CONNECTIONS: usize = 512;

/// The most bytes a connection buffers (hyper's read buffer: a request head larger than this is
/// refused with 431).
pub const MAX_BUFFER: usize = 32 * 1024;

/// The server's limits: [`HEADER_READ_TIMEOUT`] and [`MAX_CONNECTIONS`], shorter in tests.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read_timeout: Duration,
    max_connections: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// The connections open, oldest first: each one's token closes it.
#[derive(Debug, Default)]
struct Connections {
    open: Mutex<(u64, BTreeMap<u64, CancellationToken>)>,
}

impl Connections {
    /// Registers a new connection; past `max`, closes the oldest. Returns its id and token.
    fn admit(&self, max: usize) -> (u64, CancellationToken) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (next, conns) = &mut *open;
        let id = *next;
        *next += 1;
        let token = CancellationToken::new();
        conns.insert(id, token.clone());
        while conns.len() > max.max(1) {
            if let Some((_, oldest)) = conns.pop_first() {
                oldest.cancel();
            }
        }
        (id, token)
    }

    fn closed(&self, id: u64) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.1.remove(&id);
    }

    fn count(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).1.len()
    }
}

/// The `--http` server while the process runs: its serve task, owned in one [`Tasks`].
pub struct Server {
    tasks: Tasks<Infallible>,
    connections: Arc<Connections>,
    local: Option<SocketAddr>,
}

impl Server {
    /// Binds `listen` (a busy port is an error now) and serves `site`, or nothing for `off`.
    pub async fn start(listen: Listen, site: Site) -> Result<Server, HttpError> {
        Server::start_with(listen, site, None, Limits::default()).await
    }

    /// [`Server::start_with_routes`] where `routes` serve `GET /` themselves (the monitor's page,
    /// which takes query parameters and reads its database): the site's page is left out.
    pub async fn start_with_page(
        listen: Listen,
        site: Site,
        routes: Router,
    ) -> Result<Server, HttpError> {
        Server::start_with(
            listen,
            site,
            Some(Extra::OwnPage(routes)),
            Limits::default(),
        )
        .await
    }

    /// [`Server::start`] with more routes beside the pages (the jobs API).
    pub async fn start_with_routes(
        listen: Listen,
        site: Site,
        routes: Option<Router>,
    ) -> Result<Server, HttpError> {
        Server::start_with(listen, site, routes.map(Extra::Beside), Limits::default()).await
    }

    async fn start_with(
        listen: Listen,
        site: Site,
        routes: Option<Extra>,
        limits: Limits,
    ) -> Result<Server, HttpError> {
        let mut tasks = Tasks::new(&CancellationToken::new());
        let connections = Arc::new(Connections::default());
        let mut local = None;
        if let Listen::At(addr) = listen {
            let listener = bind(addr).await?;
            local = listener.local_addr().ok();
            let open = Arc::clone(&connections);
            tasks.spawn("the HTTP server", move |stop| {
                serve(listener, site, routes, limits, open, stop)
            });
        }
        Ok(Server {
            tasks,
            connections,
            local,
        })
    }

    /// The address served on (port 0 resolved), `None` for `off`.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local
    }

    /// The connections open now (at most [`MAX_CONNECTIONS`]).
    pub fn open_connections(&self) -> usize {
        self.connections.count()
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

/// Routes served beside the site's.
enum Extra {
    /// Beside the site's page.
    Beside(Router),
    /// Including `GET /`, which replaces the site's page.
    OwnPage(Router),
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

/// Serves `site` on `listener` until `shutdown`, each connection within `limits`; logs the
/// address it serves on. At shutdown, idle connections close at once and the others after their
/// request in flight (the owner aborts what is left after its grace).
async fn serve(
    listener: TcpListener,
    site: Site,
    routes: Option<Extra>,
    limits: Limits,
    connections: Arc<Connections>,
    shutdown: CancellationToken,
) -> Result<(), Infallible> {
    let local = listener.local_addr().ok();
    let app = Router::new();
    let app = match routes {
        Some(Extra::OwnPage(_)) => app,
        _ => app.route("/", get(page)),
    };
    let app = app
        .route("/status.json", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(site);
    let app = match routes {
        Some(Extra::Beside(routes) | Extra::OwnPage(routes)) => app.merge(routes),
        None => app,
    };
    if let Some(addr) = local {
        tracing::info!(
            message = "HTTP serving /metrics /healthz /readyz and the status page",
            addr = %addr,
            url = %format!("http://{addr}/"),
            header_read_timeout = %humantime::format_duration(limits.header_read_timeout),
            max_connections = limits.max_connections,
        );
    }
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_BUFFER);
    let mut served = JoinSet::new();
    let mut accept_failing = false;
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = served.join_next() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    accept_failing = false;
                    stream
                }
                Err(e) => {
                    // Out of file descriptors, say: the connections open go on; try again soon.
                    if !accept_failing {
                        tracing::warn!(message = "HTTP cannot accept a connection; retrying", error = %e);
                        accept_failing = true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (id, evicted) = connections.admit(limits.max_connections);
        let (http, app, connections, shutdown) = (
            http.clone(),
            app.clone(),
            Arc::clone(&connections),
            shutdown.clone(),
        );
        served.spawn(async move {
            let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                // Past the limit, the oldest connection makes room: dropped, whatever it does.
                _ = evicted.cancelled() => {}
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = evicted.cancelled() => {}
                    }
                }
            }
            connections.closed(id);
        });
    }
    // Idle connections close at once, the others once their response is out.
    while served.join_next().await.is_some() {}
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// A server on a free port of 127.0.0.1 with `limits`.
    async fn server(limits: Limits) -> (Server, SocketAddr) {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap();
        let server = Server::start_with(Listen::At(addr), Site::blank("test"), None, limits)
            .await
            .unwrap();
        (server, addr)
    }

    /// Whether the server closes `stream` within `within` (reading and dropping what it sends).
    async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 4096];
        tokio::time::timeout(within, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    /// One response on a keep-alive connection: its status line.
    async fn get(stream: &mut TcpStream, path: &str) -> String {
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before a response: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_string)
                    })
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    return head.lines().next().unwrap_or("").to_string();
                }
            }
        }
    }

    fn short() -> Limits {
        Limits {
            header_read_timeout: Duration::from_millis(300),
            max_connections: MAX_CONNECTIONS,
        }
    }

    #[tokio::test]
    async fn a_connection_that_sends_no_whole_head_is_closed_after_the_header_read_timeout() {
        let (server, addr) = server(short()).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: te")
            .await
            .unwrap();
        assert!(
            closed_within(&mut silent, Duration::from_secs(3)).await,
            "silent connection kept"
        );
        assert!(
            closed_within(&mut slow, Duration::from_secs(3)).await,
            "slow head kept"
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_after_the_timeout() {
        let (server, addr) = server(short()).await;
        let mut stream = TcpStream::connect(addr).await.unwrap();
        assert_eq!(get(&mut stream, "/healthz").await, "HTTP/1.1 200 OK");
        // Kept alive for a second request within the timeout...
        assert_eq!(get(&mut stream, "/readyz").await, "HTTP/1.1 200 OK");
        // ...and closed once idle for longer.
        assert!(
            closed_within(&mut stream, Duration::from_secs(3)).await,
            "idle connection kept"
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn past_the_connection_limit_the_oldest_connection_is_closed() {
        let limits = Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: 4,
        };
        let (server, addr) = server(limits).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut others = Vec::new();
        for _ in 0..4 {
            others.push(TcpStream::connect(addr).await.unwrap());
        }
        assert!(
            closed_within(&mut first, Duration::from_secs(3)).await,
            "the oldest is closed"
        );
        let mut newest = others.pop().unwrap();
        assert_eq!(get(&mut newest, "/healthz").await, "HTTP/1.1 200 OK");
        assert!(
            server.open_connections() <= 4,
            "{}",
            server.open_connections()
        );
        server.stop().await;
    }

    fn rss_kib() -> Option<u64> {
        std::fs::read_to_string("/proc/self/status")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches(" kB")
            .parse()
            .ok()
    }

    /// The target, with the limits as shipped: 1 000 idle and 200 slow-header connections
    /// open, `/healthz` answers within 1 s and the server holds at most [`MAX_CONNECTIONS`].
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn healthz_answers_within_a_second_with_1000_idle_and_200_slow_header_connections_open() {
        let (server, addr) = server(Limits::default()).await;
        let before = rss_kib();
        let mut held = Vec::new();
        for _ in 0..1000 {
            held.push(TcpStream::connect(addr).await.unwrap());
        }
        for _ in 0..200 {
            let mut slow = TcpStream::connect(addr).await.unwrap();
            // A head that never ends (evicted connections may already be closed: ignore that).
            let _ = slow
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await;
            held.push(slow);
        }
        let asked = std::time::Instant::now();
        let answered = tokio::time::timeout(Duration::from_secs(1), async {
            let mut probe = TcpStream::connect(addr).await.unwrap();
            get(&mut probe, "/healthz").await
        })
        .await;
        let took = asked.elapsed();
        assert_eq!(answered.as_deref(), Ok("HTTP/1.1 200 OK"), "after {took:?}");
        let open = server.open_connections();
        assert!(open <= MAX_CONNECTIONS, "{open} connections held");
        eprintln!(
            "healthz answered in {took:?} with {} client connections; server holds {open}; RSS {:?} -> {:?} KiB",
            held.len(),
            before,
            rss_kib()
        );
        drop(held);
        server.stop().await;
    }

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
