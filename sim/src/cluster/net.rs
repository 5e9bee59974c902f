//! The simulated network's sockets, behind one module: turmoil's types appear nowhere
//! else (turmoil 0.8 splits into new crates; only this file will change).
//!
//! - [`listen`]: accepted connections on a port of the current host, as the stream tonic
//!   and hyper servers take;
//! - [`dial`]: a connection to `host:port`;
//! - [`KubeService`]: the Kubernetes API over the simulated network, for kube-rs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::Stream;

/// One connection on the simulated network.
pub struct SimConn(turmoil::net::TcpStream);

impl AsyncRead for SimConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for SimConn {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

/// Connects to `host:port` on the simulated network.
pub async fn dial(host: &str, port: u16) -> std::io::Result<SimConn> {
    turmoil::net::TcpStream::connect((host, port))
        .await
        .map(SimConn)
}

/// Accepted connections on `port` of the current host, until the host stops.
pub async fn listen(
    port: u16,
) -> std::io::Result<impl Stream<Item = std::io::Result<SimConn>> + Send + 'static> {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
    Ok(accepted(listener))
}

fn accepted(
    listener: turmoil::net::TcpListener,
) -> impl Stream<Item = std::io::Result<SimConn>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = listener.accept().await.map(|(s, _)| SimConn(s));
            let failed = accepted.is_err();
            if tx.send(accepted).await.is_err() || failed {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The Kubernetes API at `host:port` for kube-rs: one simulated connection per request
/// (watches are long requests and keep theirs).
#[derive(Clone)]
pub struct KubeService {
    pub host: String,
    pub port: u16,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<hyper::http::Request<kube::client::Body>> for KubeService {
    type Response = hyper::http::Response<hyper::body::Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: hyper::http::Request<kube::client::Body>) -> Self::Future {
        let (host, port) = (self.host.clone(), self.port);
        Box::pin(async move {
            let conn = dial(&host, port).await?;
            let (mut send, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(conn)).await?;
            tokio::spawn(connection);
            if let Ok(h) = hyper::http::HeaderValue::from_str(&host) {
                req.headers_mut().insert(hyper::http::header::HOST, h);
            }
            Ok(send.send_request(req).await?)
        })
    }
}

/// A kube-rs client of the API server at `host:port` on the simulated network.
pub fn kube_client(host: &str, port: u16) -> kube::Client {
    kube::Client::new(
        KubeService {
            host: host.into(),
            port,
        },
        "default",
    )
}
