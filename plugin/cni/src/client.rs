//! A gRPC channel to the agent over its unix socket, with bounded connect and request
//! times and HTTP/2 keepalives (a channel that silently stopped answering must fail, not
//! hang: the runtime is waiting).

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use crate::proto::remote_cni_client::RemoteCniClient;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the agent at {socket}: {reason}")]
    Connect { socket: String, reason: String },
}

/// Connects to the agent's socket; every call on the client is bounded by `timeout`.
pub async fn connect(
    socket: &str,
    timeout: Duration,
) -> Result<RemoteCniClient<Channel>, ClientError> {
    let path = PathBuf::from(socket);
    connect_with(socket, timeout, move || {
        let path = path.clone();
        async move { tokio::net::UnixStream::connect(path).await }
    })
    .await
}

/// Connects to the agent at `target` through `dial` (a unix socket in production, the
/// simulated network in the simulation), with the same bounds and keepalives.
pub async fn connect_with<F, Fut, IO>(
    target: &str,
    timeout: Duration,
    dial: F,
) -> Result<RemoteCniClient<Channel>, ClientError>
where
    F: Fn() -> Fut + Send + Clone + 'static,
    Fut: std::future::Future<Output = std::io::Result<IO>> + Send + 'static,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let err = |reason: String| ClientError::Connect {
        socket: target.to_string(),
        reason,
    };
    // The URI is required by the API but unused: the connector below dials.
    let endpoint = Endpoint::from_static("http://contiv-vswitch.invalid")
        .connect_timeout(timeout)
        .timeout(timeout)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    let channel = tokio::time::timeout(
        timeout,
        endpoint.connect_with_connector(tower::service_fn(move |_| {
            let dial = dial.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(dial().await?)) }
        })),
    )
    .await
    .map_err(|_| err(format!("no connection within {timeout:?}")))?
    .map_err(|e| {
        // tonic wraps the io::Error; show the innermost cause (ENOENT, ECONNREFUSED).
        let mut cause: &dyn std::error::Error = &e;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        err(cause.to_string())
    })?;
    Ok(RemoteCniClient::new(channel))
}
