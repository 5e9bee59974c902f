//! `/healthz`, `/readyz` and `/metrics` over HTTP.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::Metrics;

fn respond(metrics: &Metrics, path: &str) -> Response<Full<Bytes>> {
    let (code, body) = match path {
        "/healthz" => (200, "ok\n".to_string()),
        // Ready: a standby, or a leader whose every kind has finished its first sync.
        "/readyz" => {
            let leader = metrics.is_leader.load(Ordering::Relaxed);
            if !leader || metrics.synced.load(Ordering::Relaxed) {
                (
                    200,
                    format!(
                        "ok ({})\n",
                        if leader { "leader, in sync" } else { "standby" }
                    ),
                )
            } else {
                (503, "leader, initial sync in progress\n".to_string())
            }
        }
        "/metrics" => (200, metrics.render()),
        _ => (404, "not found\n".to_string()),
    };
    Response::builder()
        .status(code)
        .header("content-type", "text/plain; version=0.0.4")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Serves the health and metrics endpoints until the listener fails.
pub async fn serve_health(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let r = respond(&metrics, req.uri().path());
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
