//! Any [`Store`] served over gRPC ([`serve_store`]), and [`RemoteStore`], the client that
//! is a `Store` again. The simulated cluster runs its store on a host of its own this
//! way, so every component reaches it over the simulated network: partitions, outages and
//! lost connections look to them as a real store's do.
//!
//! Errors cross the wire intact: a `StoreError` travels as a status whose details hold
//! it, and a transport failure becomes `Unavailable` (or `Timeout` when the bounded wait
//! ran out), both transient, so callers retry as they would against etcd.

use std::pin::Pin;
use std::time::Duration;

use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use crate::{
    Compare, EventKind, KeyValue, LeaseId, Revision, Store, StoreError, Txn, TxnOp, TxnResult,
    Watch, WatchEvent,
};

#[allow(clippy::all, clippy::pedantic)]
mod proto {
    tonic::include_proto!("contiv.store.v1");
}

use proto::failure::Kind as FailureKind;
use proto::kv_store_client::KvStoreClient;
use proto::kv_store_server::{KvStore, KvStoreServer};

/// Events a remote watch holds before the reader takes them (the stream then waits).
const REMOTE_WATCH_BUFFER: usize = 1024;

fn to_status(e: StoreError) -> Status {
    let (code, kind, a, b) = match &e {
        StoreError::InvalidKey(_) => (Code::InvalidArgument, FailureKind::InvalidKey, 0, 0),
        StoreError::Compacted {
            requested,
            compacted,
        } => (
            Code::OutOfRange,
            FailureKind::Compacted,
            *requested,
            *compacted,
        ),
        StoreError::FutureRevision { requested, current } => (
            Code::OutOfRange,
            FailureKind::FutureRevision,
            *requested,
            *current,
        ),
        StoreError::LeaseNotFound(id) => (Code::NotFound, FailureKind::LeaseNotFound, *id, 0),
        StoreError::WatchLagged => (Code::ResourceExhausted, FailureKind::WatchLagged, 0, 0),
        StoreError::Unavailable(_) => (Code::Unavailable, FailureKind::Unavailable, 0, 0),
        StoreError::Timeout(ms) => (
            Code::DeadlineExceeded,
            FailureKind::Timeout,
            i64::try_from(*ms).unwrap_or(i64::MAX),
            0,
        ),
        StoreError::Protocol(_) => (Code::Internal, FailureKind::Protocol, 0, 0),
    };
    let text = match &e {
        StoreError::InvalidKey(t) | StoreError::Unavailable(t) | StoreError::Protocol(t) => {
            t.clone()
        }
        _ => String::new(),
    };
    let details = proto::Failure {
        kind: kind as i32,
        text,
        a,
        b,
    }
    .encode_to_vec();
    Status::with_details(code, e.to_string(), details.into())
}

fn from_status(s: &Status) -> StoreError {
    if let Ok(f) = proto::Failure::decode(s.details()) {
        if !s.details().is_empty() {
            return match FailureKind::try_from(f.kind).unwrap_or(FailureKind::Protocol) {
                FailureKind::InvalidKey => StoreError::InvalidKey(f.text),
                FailureKind::Compacted => StoreError::Compacted {
                    requested: f.a,
                    compacted: f.b,
                },
                FailureKind::FutureRevision => StoreError::FutureRevision {
                    requested: f.a,
                    current: f.b,
                },
                FailureKind::LeaseNotFound => StoreError::LeaseNotFound(f.a),
                FailureKind::WatchLagged => StoreError::WatchLagged,
                FailureKind::Unavailable => StoreError::Unavailable(f.text),
                FailureKind::Timeout => StoreError::Timeout(u64::try_from(f.a).unwrap_or(0)),
                FailureKind::Protocol => StoreError::Protocol(f.text),
            };
        }
    }
    // No details: the failure was the transport's, not the store's.
    match s.code() {
        Code::DeadlineExceeded => StoreError::Timeout(0),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Aborted => {
            StoreError::Unavailable(s.message().to_string())
        }
        _ => StoreError::Protocol(format!("{:?}: {}", s.code(), s.message())),
    }
}

fn kv_to_proto(kv: KeyValue) -> proto::KeyValue {
    proto::KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        lease: kv.lease.unwrap_or(0),
    }
}

fn kv_from_proto(kv: proto::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        lease: (kv.lease != 0).then_some(kv.lease),
    }
}

fn lease_to_proto(lease: Option<LeaseId>) -> i64 {
    lease.unwrap_or(0)
}

fn op_to_proto(op: TxnOp) -> proto::TxnOp {
    match op {
        TxnOp::Put { key, value, lease } => proto::TxnOp {
            delete: false,
            key,
            value,
            lease: lease_to_proto(lease),
        },
        TxnOp::Delete { key } => proto::TxnOp {
            delete: true,
            key,
            ..Default::default()
        },
    }
}

fn op_from_proto(op: proto::TxnOp) -> TxnOp {
    if op.delete {
        TxnOp::Delete { key: op.key }
    } else {
        TxnOp::Put {
            key: op.key,
            value: op.value,
            lease: (op.lease != 0).then_some(op.lease),
        }
    }
}

fn compare_to_proto(c: Compare) -> proto::Compare {
    use proto::compare::Kind;
    match c {
        Compare::Absent(key) => proto::Compare {
            kind: Kind::Absent as i32,
            key,
            ..Default::default()
        },
        Compare::ModRevision(key, revision) => proto::Compare {
            kind: Kind::ModRevision as i32,
            key,
            revision,
            ..Default::default()
        },
        Compare::Value(key, value) => proto::Compare {
            kind: Kind::Value as i32,
            key,
            value,
            ..Default::default()
        },
    }
}

fn compare_from_proto(c: proto::Compare) -> Result<Compare, Status> {
    use proto::compare::Kind;
    Ok(match Kind::try_from(c.kind) {
        Ok(Kind::Absent) => Compare::Absent(c.key),
        Ok(Kind::ModRevision) => Compare::ModRevision(c.key, c.revision),
        Ok(Kind::Value) => Compare::Value(c.key, c.value),
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown compare kind {}",
                c.kind
            )))
        }
    })
}

fn event_to_proto(e: WatchEvent) -> proto::Event {
    proto::Event {
        delete: e.kind == EventKind::Delete,
        key: e.key,
        value: e.value,
        mod_revision: e.mod_revision,
    }
}

fn event_from_proto(e: proto::Event) -> WatchEvent {
    WatchEvent {
        kind: if e.delete {
            EventKind::Delete
        } else {
            EventKind::Put
        },
        key: e.key,
        value: e.value,
        mod_revision: e.mod_revision,
    }
}

/// The gRPC service in front of a store.
struct KvStoreService<S> {
    store: S,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<proto::Event, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store + Clone> KvStore for KvStoreService<S> {
    async fn get(
        &self,
        r: Request<proto::KeyRequest>,
    ) -> Result<Response<proto::GetReply>, Status> {
        let kv = self
            .store
            .get(&r.into_inner().key)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::GetReply {
            kv: kv.map(kv_to_proto),
        }))
    }

    async fn list(
        &self,
        r: Request<proto::KeyRequest>,
    ) -> Result<Response<proto::ListReply>, Status> {
        let (kvs, revision) = self
            .store
            .list(&r.into_inner().key)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::ListReply {
            kvs: kvs.into_iter().map(kv_to_proto).collect(),
            revision,
        }))
    }

    async fn put(
        &self,
        r: Request<proto::PutRequest>,
    ) -> Result<Response<proto::RevisionReply>, Status> {
        let r = r.into_inner();
        let revision = self.store.put(&r.key, r.value).await.map_err(to_status)?;
        Ok(Response::new(proto::RevisionReply { revision }))
    }

    async fn delete(
        &self,
        r: Request<proto::KeyRequest>,
    ) -> Result<Response<proto::DeleteReply>, Status> {
        let revision = self
            .store
            .delete(&r.into_inner().key)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::DeleteReply { revision }))
    }

    async fn txn(
        &self,
        r: Request<proto::TxnRequest>,
    ) -> Result<Response<proto::TxnReply>, Status> {
        let r = r.into_inner();
        let txn = Txn {
            compares: r
                .compares
                .into_iter()
                .map(compare_from_proto)
                .collect::<Result<_, _>>()?,
            success: r.success.into_iter().map(op_from_proto).collect(),
            failure: r.failure.into_iter().map(op_from_proto).collect(),
        };
        let done = self.store.txn(txn).await.map_err(to_status)?;
        Ok(Response::new(proto::TxnReply {
            succeeded: done.succeeded,
            revision: done.revision,
        }))
    }

    async fn grant_lease(
        &self,
        r: Request<proto::LeaseGrant>,
    ) -> Result<Response<proto::LeaseReply>, Status> {
        let lease = self
            .store
            .grant_lease(r.into_inner().ttl_secs)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::LeaseReply { lease }))
    }

    async fn keep_alive(
        &self,
        r: Request<proto::LeaseReply>,
    ) -> Result<Response<proto::Empty>, Status> {
        self.store
            .keep_alive(r.into_inner().lease)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::Empty {}))
    }

    async fn revoke_lease(
        &self,
        r: Request<proto::LeaseReply>,
    ) -> Result<Response<proto::Empty>, Status> {
        self.store
            .revoke_lease(r.into_inner().lease)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::Empty {}))
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        r: Request<proto::WatchRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let r = r.into_inner();
        let mut watch = self
            .store
            .watch(&r.prefix, r.from)
            .await
            .map_err(to_status)?;
        let (tx, rx) = mpsc::channel(REMOTE_WATCH_BUFFER);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    biased;
                    // The client went away: drop the store's watch.
                    _ = tx.closed() => return,
                    next = watch.next() => next,
                };
                let item = match next {
                    Some(Ok(e)) => Ok(event_to_proto(e)),
                    Some(Err(e)) => Err(to_status(e)),
                    None => return,
                };
                let end = item.is_err();
                if tx.send(item).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn compact(
        &self,
        r: Request<proto::RevisionReply>,
    ) -> Result<Response<proto::Empty>, Status> {
        self.store
            .compact(r.into_inner().revision)
            .await
            .map_err(to_status)?;
        Ok(Response::new(proto::Empty {}))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("store server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Serves `store` on the connections `incoming` yields until `shutdown` resolves.
pub async fn serve_store<S, IO, E>(
    store: S,
    incoming: impl Stream<Item = Result<IO, E>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RemoteError>
where
    S: Store + Clone,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(2)))
        .http2_keepalive_timeout(Some(Duration::from_secs(2)))
        .add_service(KvStoreServer::new(KvStoreService { store }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// A store reached over gRPC. Every call is bounded by the timeout; the channel connects
/// on first use and again after a failure; HTTP/2 keepalives end a watch whose connection
/// silently died, so its reader re-lists.
#[derive(Clone)]
pub struct RemoteStore {
    client: KvStoreClient<Channel>,
    timeout: Duration,
}

impl RemoteStore {
    /// A client that dials with `dial` whenever it needs a connection.
    pub fn connect_lazy<F, Fut, IO>(timeout: Duration, dial: F) -> RemoteStore
    where
        F: Fn() -> Fut + Send + Clone + 'static,
        Fut: std::future::Future<Output = std::io::Result<IO>> + Send + 'static,
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let channel = Endpoint::from_static("http://contiv-store.invalid")
            .connect_timeout(timeout)
            .http2_keep_alive_interval(Duration::from_secs(2))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true)
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let dial = dial.clone();
                async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(dial().await?)) }
            }));
        RemoteStore {
            client: KvStoreClient::new(channel),
            timeout,
        }
    }

    async fn call<T, F>(&self, f: impl FnOnce(KvStoreClient<Channel>) -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        match tokio::time::timeout(self.timeout, f(self.client.clone())).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(from_status(&s)),
            Err(_) => Err(StoreError::Timeout(
                u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            )),
        }
    }
}

impl Store for RemoteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        let r = self
            .call(|mut c| async move { c.get(proto::KeyRequest { key }).await })
            .await?;
        Ok(r.kv.map(kv_from_proto))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let key = prefix.to_string();
        let r = self
            .call(|mut c| async move { c.list(proto::KeyRequest { key }).await })
            .await?;
        Ok((r.kvs.into_iter().map(kv_from_proto).collect(), r.revision))
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let key = key.to_string();
        let r = self
            .call(|mut c| async move { c.put(proto::PutRequest { key, value }).await })
            .await?;
        Ok(r.revision)
    }

    async fn delete(&self, key: &str) -> Result<Option<Revision>, StoreError> {
        let key = key.to_string();
        let r = self
            .call(|mut c| async move { c.delete(proto::KeyRequest { key }).await })
            .await?;
        Ok(r.revision)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        let req = proto::TxnRequest {
            compares: txn.compares.into_iter().map(compare_to_proto).collect(),
            success: txn.success.into_iter().map(op_to_proto).collect(),
            failure: txn.failure.into_iter().map(op_to_proto).collect(),
        };
        let r = self.call(|mut c| async move { c.txn(req).await }).await?;
        Ok(TxnResult {
            succeeded: r.succeeded,
            revision: r.revision,
        })
    }

    async fn grant_lease(&self, ttl_secs: i64) -> Result<LeaseId, StoreError> {
        let r = self
            .call(|mut c| async move { c.grant_lease(proto::LeaseGrant { ttl_secs }).await })
            .await?;
        Ok(r.lease)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.call(|mut c| async move { c.keep_alive(proto::LeaseReply { lease }).await })
            .await?;
        Ok(())
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.call(|mut c| async move { c.revoke_lease(proto::LeaseReply { lease }).await })
            .await?;
        Ok(())
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError> {
        let req = proto::WatchRequest {
            prefix: prefix.to_string(),
            from,
        };
        let mut stream = self.call(|mut c| async move { c.watch(req).await }).await?;
        let (tx, rx) = mpsc::channel(REMOTE_WATCH_BUFFER);
        let (cancel_tx, mut cancel_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    biased;
                    _ = &mut cancel_rx => return,
                    next = stream.message() => next,
                };
                let item = match next {
                    Ok(Some(e)) => Ok(event_from_proto(e)),
                    Err(s) => Err(from_status(&s)),
                    // The server ended the stream: the reader must list and watch again.
                    Ok(None) => Err(StoreError::Unavailable("the watch stream ended".into())),
                };
                let end = item.is_err();
                if tx.send(item).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Watch::new(rx, Some(cancel_tx)))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.call(|mut c| async move { c.compact(proto::RevisionReply { revision }).await })
            .await?;
        Ok(())
    }
}
