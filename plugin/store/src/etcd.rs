//! The store on a real etcd, through etcd-client.
//!
//! Every request has a bounded timeout and the HTTP/2 connection sends keepalive pings, so
//! a dead or partitioned etcd turns into `Timeout`/`Unavailable` errors instead of a hang.
//! Watches run in a task of their own that reconnects with a fresh client when the stream
//! breaks and resumes from the revision after the last event it delivered, so a consumer
//! sees every change once, in order, across an etcd restart; if that revision has been
//! compacted meanwhile, the watch ends with `Compacted` and the consumer resyncs.

use std::time::Duration;

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions,
    Txn as EtcdTxn, TxnOp as EtcdTxnOp, WatchOptions,
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    check_key, Compare, EventKind, KeyValue, LeaseId, Revision, Store, StoreError, Txn, TxnOp,
    TxnResult, Watch, WatchEvent, WATCH_BUFFER,
};

/// How to reach etcd.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    /// Bound on every request.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// HTTP/2 ping interval; the connection is dropped when a ping goes unanswered for
    /// as long again.
    pub keepalive: Duration,
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            keepalive: Duration::from_secs(2),
        }
    }
}

/// A [`Store`] on etcd. Clones share the connection.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    config: EtcdConfig,
}

fn options(c: &EtcdConfig) -> ConnectOptions {
    ConnectOptions::new()
        .with_timeout(c.request_timeout)
        .with_connect_timeout(c.connect_timeout)
        .with_keep_alive(c.keepalive, c.keepalive)
        .with_keep_alive_while_idle(true)
}

fn map_err(e: etcd_client::Error, timeout: Duration) -> StoreError {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(s) => match s.code() {
            tonic::Code::DeadlineExceeded => StoreError::Timeout(timeout.as_millis() as u64),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
                StoreError::Unavailable(s.message().to_string())
            }
            tonic::Code::NotFound if s.message().contains("lease") => StoreError::LeaseNotFound(0),
            tonic::Code::OutOfRange if s.message().contains("compacted") => StoreError::Compacted {
                requested: 0,
                compacted: 0,
            },
            _ => StoreError::Protocol(format!("{}: {}", s.code(), s.message())),
        },
        E::TransportError(t) => StoreError::Unavailable(t.to_string()),
        E::IoError(io) => StoreError::Unavailable(io.to_string()),
        other => StoreError::Protocol(other.to_string()),
    }
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> Result<Revision, StoreError> {
    h.map(|h| h.revision())
        .ok_or_else(|| StoreError::Protocol("response without a header".into()))
}

fn to_kv(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: kv
            .key_str()
            .map_err(|e| StoreError::Protocol(format!("key is not UTF-8: {e}")))?
            .to_string(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: (kv.lease() != 0).then_some(kv.lease()),
    })
}

impl EtcdStore {
    /// Connects (lazily: the first request reports an unreachable etcd).
    pub async fn connect(config: EtcdConfig) -> Result<Self, StoreError> {
        let client = Client::connect(&config.endpoints, Some(options(&config)))
            .await
            .map_err(|e| map_err(e, config.request_timeout))?;
        Ok(EtcdStore { client, config })
    }

    fn err(&self, e: etcd_client::Error) -> StoreError {
        map_err(e, self.config.request_timeout)
    }

    /// Bounds a request even where the client's own timeout does not apply (connecting).
    async fn bounded<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.config.request_timeout + self.config.connect_timeout, f)
            .await
        {
            Ok(r) => r.map_err(|e| self.err(e)),
            Err(_) => Err(StoreError::Timeout(
                (self.config.request_timeout + self.config.connect_timeout).as_millis() as u64,
            )),
        }
    }
}

fn to_etcd_ops(ops: &[TxnOp]) -> Result<Vec<EtcdTxnOp>, StoreError> {
    ops.iter()
        .map(|op| match op {
            TxnOp::Put { key, value, lease } => {
                check_key(key)?;
                let opts = lease.map(|l| PutOptions::new().with_lease(l));
                Ok(EtcdTxnOp::put(key.as_str(), value.clone(), opts))
            }
            TxnOp::Delete { key } => {
                check_key(key)?;
                Ok(EtcdTxnOp::delete(key.as_str(), None))
            }
        })
        .collect()
}

impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        check_key(key)?;
        let mut c = self.client.clone();
        let r = self.bounded(c.get(key, None)).await?;
        r.kvs().first().map(to_kv).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let mut c = self.client.clone();
        let opts = if prefix.is_empty() {
            GetOptions::new().with_all_keys()
        } else {
            GetOptions::new().with_prefix()
        };
        let r = self
            .bounded(c.get(
                prefix,
                Some(opts.with_sort(etcd_client::SortTarget::Key, etcd_client::SortOrder::Ascend)),
            ))
            .await?;
        let kvs = r.kvs().iter().map(to_kv).collect::<Result<Vec<_>, _>>()?;
        Ok((kvs, header_revision(r.header())?))
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        check_key(key)?;
        let mut c = self.client.clone();
        let r = self.bounded(c.put(key, value, None)).await?;
        header_revision(r.header())
    }

    async fn delete(&self, key: &str) -> Result<Option<Revision>, StoreError> {
        check_key(key)?;
        let mut c = self.client.clone();
        let r = self.bounded(c.delete(key, None)).await?;
        let rev = header_revision(r.header())?;
        Ok((r.deleted() > 0).then_some(rev))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        let compares: Vec<EtcdCompare> = txn
            .compares
            .iter()
            .map(|c| match c {
                Compare::Absent(k) => EtcdCompare::create_revision(k.as_str(), CompareOp::Equal, 0),
                Compare::ModRevision(k, r) => {
                    EtcdCompare::mod_revision(k.as_str(), CompareOp::Equal, *r)
                }
                Compare::Value(k, v) => EtcdCompare::value(k.as_str(), CompareOp::Equal, v.clone()),
            })
            .collect();
        let t = EtcdTxn::new()
            .when(compares)
            .and_then(to_etcd_ops(&txn.success)?)
            .or_else(to_etcd_ops(&txn.failure)?);
        let mut c = self.client.clone();
        let r = self.bounded(c.txn(t)).await?;
        Ok(TxnResult {
            succeeded: r.succeeded(),
            revision: header_revision(r.header())?,
        })
    }

    async fn grant_lease(&self, ttl_secs: i64) -> Result<LeaseId, StoreError> {
        let mut c = self.client.clone();
        let r = self.bounded(c.lease_grant(ttl_secs, None)).await?;
        Ok(r.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut c = self.client.clone();
        let (mut keeper, mut stream) = self.bounded(c.lease_keep_alive(lease)).await?;
        self.bounded(keeper.keep_alive()).await?;
        match self.bounded(stream.message()).await? {
            Some(r) if r.ttl() > 0 => Ok(()),
            _ => Err(StoreError::LeaseNotFound(lease)),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut c = self.client.clone();
        self.bounded(c.lease_revoke(lease))
            .await
            .map(|_| ())
            .map_err(|e| match e {
                StoreError::LeaseNotFound(_) => StoreError::LeaseNotFound(lease),
                other => other,
            })
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError> {
        let from = if from <= 0 {
            // "From now": the revision after the current one, so that a reconnect before
            // any event still knows where to resume.
            let mut c = self.client.clone();
            let r = self
                .bounded(c.get(prefix, Some(GetOptions::new().with_count_only())))
                .await?;
            header_revision(r.header())? + 1
        } else {
            from
        };
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let (cancel_tx, cancel_rx) = oneshot::channel();
        let task = WatchTask {
            config: self.config.clone(),
            prefix: prefix.to_string(),
            next: from,
            tx,
        };
        tokio::spawn(task.run(cancel_rx));
        Ok(Watch::new(rx, Some(cancel_tx)))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut c = self.client.clone();
        self.bounded(c.compact(revision, None))
            .await
            .map(|_| ())
            .map_err(|e| match e {
                StoreError::Compacted { .. } => StoreError::Compacted {
                    requested: revision,
                    compacted: revision,
                },
                other => other,
            })
    }
}

struct WatchTask {
    config: EtcdConfig,
    prefix: String,
    /// The revision of the next event to deliver.
    next: Revision,
    tx: mpsc::Sender<Result<WatchEvent, StoreError>>,
}

enum StreamEnd {
    /// The consumer went away or the watch cannot go on: stop.
    Stop,
    /// The connection broke: reconnect and resume from `next`.
    Reconnect,
}

impl WatchTask {
    async fn run(mut self, mut cancel: oneshot::Receiver<()>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = tokio::select! {
                biased;
                _ = &mut cancel => return,
                end = self.stream_once() => end,
            };
            match attempt {
                StreamEnd::Stop => return,
                StreamEnd::Reconnect => {
                    tracing::debug!(prefix = %self.prefix, next = self.next, ?backoff, "etcd watch reconnecting");
                    tokio::select! {
                        biased;
                        _ = &mut cancel => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
            if self.tx.is_closed() {
                return;
            }
        }
    }

    /// One connection's worth of watching: a fresh client (an HTTP/2 channel that broke
    /// can stay stuck while a new one works), a watch from `next`, events until it ends.
    async fn stream_once(&mut self) -> StreamEnd {
        let Ok(Ok(mut client)) = tokio::time::timeout(
            self.config.connect_timeout,
            Client::connect(&self.config.endpoints, Some(options(&self.config))),
        )
        .await
        else {
            return StreamEnd::Reconnect;
        };
        let opts = WatchOptions::new().with_start_revision(self.next);
        let opts = if self.prefix.is_empty() {
            opts.with_all_keys()
        } else {
            opts.with_prefix()
        };
        let Ok(Ok(mut stream)) = tokio::time::timeout(
            self.config.request_timeout,
            client.watch(self.prefix.as_str(), Some(opts)),
        )
        .await
        else {
            return StreamEnd::Reconnect;
        };
        loop {
            let msg = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) | Err(_) => return StreamEnd::Reconnect,
            };
            if msg.compact_revision() > 0 {
                let _ = self
                    .tx
                    .send(Err(StoreError::Compacted {
                        requested: self.next,
                        compacted: msg.compact_revision(),
                    }))
                    .await;
                return StreamEnd::Stop;
            }
            if msg.canceled() {
                let _ = self
                    .tx
                    .send(Err(StoreError::Protocol(format!(
                        "watch canceled: {}",
                        msg.cancel_reason()
                    ))))
                    .await;
                return StreamEnd::Stop;
            }
            for ev in msg.events() {
                let Some(kv) = ev.kv() else { continue };
                let Ok(key) = kv.key_str() else { continue };
                let event = WatchEvent {
                    kind: match ev.event_type() {
                        EventType::Put => EventKind::Put,
                        EventType::Delete => EventKind::Delete,
                    },
                    key: key.to_string(),
                    value: kv.value().to_vec(),
                    mod_revision: kv.mod_revision(),
                };
                // Events of one revision arrive together; skip any already delivered
                // (etcd may resend the revision a reconnect started from).
                if event.mod_revision < self.next {
                    continue;
                }
                let rev = event.mod_revision;
                match self.tx.try_send(Ok(event)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        let _ = self.tx.send(Err(StoreError::WatchLagged)).await;
                        return StreamEnd::Stop;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return StreamEnd::Stop,
                }
                // A revision can hold several events (a transaction): only step past it
                // once the whole response is delivered.
                self.next = self.next.max(rev);
            }
            if let Some(last) = msg
                .events()
                .last()
                .and_then(|e| e.kv())
                .map(|kv| kv.mod_revision())
            {
                self.next = self.next.max(last + 1);
            }
        }
    }
}
