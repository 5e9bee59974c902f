//! The agent's two servers: CNI over gRPC on a unix socket (mode 0700: only root may
//! wire pods), and HTTP for health, Prometheus metrics and the state dump.

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use contiv_cni::proto::remote_cni_server::{RemoteCni, RemoteCniServer};
use contiv_cni::proto::{CniReply, CniRequest, GcRequest, StatusRequest};
use http_body_util::Full;
use hyper::{Request as HttpRequest, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response as GrpcResponse, Status};

use crate::agent::{AgentMetrics, Request as AgentRequest};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("CNI socket {path}: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// The gRPC service: every call becomes a request to the event loop.
pub struct CniService {
    requests: mpsc::Sender<AgentRequest>,
}

impl CniService {
    pub fn new(requests: mpsc::Sender<AgentRequest>) -> Self {
        CniService { requests }
    }

    async fn ask(
        &self,
        make: impl FnOnce(oneshot::Sender<CniReply>) -> AgentRequest,
    ) -> Result<GrpcResponse<CniReply>, Status> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(make(tx))
            .await
            .map_err(|_| Status::unavailable("the agent is shutting down"))?;
        rx.await
            .map(GrpcResponse::new)
            .map_err(|_| Status::unavailable("the agent dropped the request"))
    }
}

#[tonic::async_trait]
impl RemoteCni for CniService {
    async fn add(&self, r: Request<CniRequest>) -> Result<GrpcResponse<CniReply>, Status> {
        self.ask(|tx| AgentRequest::Add(r.into_inner(), tx)).await
    }
    async fn del(&self, r: Request<CniRequest>) -> Result<GrpcResponse<CniReply>, Status> {
        self.ask(|tx| AgentRequest::Del(r.into_inner(), tx)).await
    }
    async fn check(&self, r: Request<CniRequest>) -> Result<GrpcResponse<CniReply>, Status> {
        self.ask(|tx| AgentRequest::Check(r.into_inner(), tx)).await
    }
    async fn status(&self, _: Request<StatusRequest>) -> Result<GrpcResponse<CniReply>, Status> {
        self.ask(AgentRequest::Status).await
    }
    async fn gc(&self, r: Request<GcRequest>) -> Result<GrpcResponse<CniReply>, Status> {
        self.ask(|tx| AgentRequest::Gc(r.into_inner(), tx)).await
    }
}

/// Binds the CNI socket (replacing a stale one left by a crash), mode 0700.
pub fn bind_cni_socket(path: &Path) -> Result<tokio::net::UnixListener, ServerError> {
    let err = |source| ServerError::Socket {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    Ok(listener)
}

/// Serves CNI on `listener` until `shutdown` resolves.
pub async fn serve_cni(
    listener: tokio::net::UnixListener,
    requests: mpsc::Sender<AgentRequest>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    serve_cni_incoming(
        tokio_stream::wrappers::UnixListenerStream::new(listener),
        requests,
        shutdown,
    )
    .await
}

/// Serves CNI on the connections `incoming` yields (the simulation's are on its
/// simulated network) until `shutdown` resolves.
pub async fn serve_cni_incoming<IO, E>(
    incoming: impl tokio_stream::Stream<Item = Result<IO, E>>,
    requests: mpsc::Sender<AgentRequest>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError>
where
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(RemoteCniServer::new(CniService::new(requests)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

async fn respond(
    path: &str,
    metrics: &AgentMetrics,
    requests: &mpsc::Sender<AgentRequest>,
) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; version=0.0.4";
    match path {
        "/healthz" => (200, TEXT, "ok\n".into()),
        "/readyz" if metrics.ready.load(Ordering::Relaxed) => (200, TEXT, "ok\n".into()),
        "/readyz" => (503, TEXT, "starting\n".into()),
        "/metrics" => {
            // The agent's own counters always; the dataplane's when its worker answers,
            // and whether it did.
            let mut text = metrics.render();
            let (tx, rx) = oneshot::channel();
            let view = match requests.send(AgentRequest::Dataplane(tx)).await {
                Ok(()) => rx.await.ok().and_then(Result::ok),
                Err(_) => None,
            };
            text.push_str(&crate::worker::render_dataplane_metrics(view.as_ref()));
            (200, TEXT, text)
        }
        "/dump" => {
            let (tx, rx) = oneshot::channel();
            if requests.send(AgentRequest::Dump(tx)).await.is_err() {
                return (503, TEXT, "the agent is shutting down\n".into());
            }
            match rx.await {
                Ok(d) => (
                    200,
                    "application/json",
                    serde_json::to_string_pretty(&d).unwrap_or_default(),
                ),
                Err(_) => (503, TEXT, "no answer\n".into()),
            }
        }
        _ => (
            404,
            TEXT,
            "not found (try /healthz, /readyz, /metrics, /dump)\n".into(),
        ),
    }
}

/// Serves `/healthz`, `/readyz`, `/metrics` and `/dump` until the listener fails.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    metrics: Arc<AgentMetrics>,
    requests: mpsc::Sender<AgentRequest>,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let (metrics, requests) = (metrics.clone(), requests.clone());
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: HttpRequest<hyper::body::Incoming>| {
                    let (metrics, requests) = (metrics.clone(), requests.clone());
                    async move {
                        let (code, kind, body) =
                            respond(req.uri().path(), &metrics, &requests).await;
                        let r = Response::builder()
                            .status(code)
                            .header("content-type", kind)
                            .body(Full::new(Bytes::from(body)))
                            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
                        Ok::<_, Infallible>(r)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
