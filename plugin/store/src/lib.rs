//! Cluster state: what `contiv-ksr` reflects from Kubernetes, node IDs, IP allocations.
//!
//! One [`Store`] trait, two implementations that pass one conformance suite
//! (`tests/conformance.rs`):
//! - [`MemoryStore`]: in memory, with etcd's semantics (revisions, compaction, leases,
//!   watch from a revision), for the simulation and unit tests;
//! - `EtcdStore` (feature `etcd`): a real etcd through etcd-client, with bounded request
//!   timeouts, HTTP/2 keepalives, and watches that reconnect and resume from the last
//!   revision seen, so no event is lost or repeated across an etcd restart;
//! - [`RemoteStore`]: any store served over gRPC by [`serve_store`] (the simulated
//!   cluster's store host), reached over any byte stream.

#[cfg(feature = "etcd")]
mod etcd;
pub mod etcd_server;
mod memory;
pub mod remote;

use std::future::Future;

#[cfg(feature = "etcd")]
pub use etcd::{EtcdConfig, EtcdStore};
pub use memory::MemoryStore;
pub use remote::{serve_store, RemoteStore};

/// A store revision: every change to the store gets the next one.
pub type Revision = i64;
/// A lease: keys attached to it are deleted when it expires or is revoked.
pub type LeaseId = i64;

/// One key with its value and versions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision that created the key (since it last did not exist).
    pub create_revision: Revision,
    /// The revision of the last change to the key.
    pub mod_revision: Revision,
    pub lease: Option<LeaseId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub key: String,
    /// The new value (empty for a delete).
    pub value: Vec<u8>,
    /// The revision of the change: a watch restarted from `mod_revision + 1` continues
    /// exactly after this event.
    pub mod_revision: Revision,
}

/// A condition of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// The key does not exist.
    Absent(String),
    /// The key exists and was last changed at this revision.
    ModRevision(String, Revision),
    /// The key exists and holds this value.
    Value(String, Vec<u8>),
}

/// A write inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    Put {
        key: String,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
    },
}

/// If every compare holds, apply `success`, else `failure`; all at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<TxnOp>,
    pub failure: Vec<TxnOp>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnResult {
    pub succeeded: bool,
    /// The store's revision after the transaction.
    pub revision: Revision,
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("invalid key {0:?}: keys are non-empty")]
    InvalidKey(String),
    #[error("revision {requested} was compacted (the store keeps history from {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("revision {requested} is in the future (the store is at {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("lease {0} does not exist or has expired")]
    LeaseNotFound(LeaseId),
    #[error("the watch fell too far behind and was cancelled; list and watch again")]
    WatchLagged,
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("the store timed out after {0} ms")]
    Timeout(u64),
    #[error("the store answered something unexpected: {0}")]
    Protocol(String),
}

impl StoreError {
    /// Whether trying again later may succeed (as opposed to a request that is wrong).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Timeout(_))
    }
}

/// A stream of changes under a prefix, in revision order.
pub struct Watch {
    rx: tokio::sync::mpsc::Receiver<Result<WatchEvent, StoreError>>,
    // Dropping the watch stops whatever feeds it.
    _cancel: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Watch {
    pub(crate) fn new(
        rx: tokio::sync::mpsc::Receiver<Result<WatchEvent, StoreError>>,
        cancel: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Self {
        Watch {
            rx,
            _cancel: cancel,
        }
    }

    /// The next change; `None` when the watch has ended. After an error the watch ends.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        self.rx.recv().await
    }
}

/// Events a watch buffers before it is cancelled as lagging.
pub const WATCH_BUFFER: usize = 16_384;

/// The store as the rest of the plugin uses it. Keys are strings (`/contiv/...`), values
/// bytes (versioned serde documents, encoded by the caller).
pub trait Store: Send + Sync + 'static {
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<KeyValue>, StoreError>> + Send;

    /// Every key under `prefix`, sorted, and the revision the listing was taken at (watch
    /// from `revision + 1` to follow it without a gap).
    fn list(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<(Vec<KeyValue>, Revision), StoreError>> + Send;

    /// Sets a key; returns the revision of the change.
    fn put(
        &self,
        key: &str,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<Revision, StoreError>> + Send;

    /// Deletes a key; returns the revision of the change, or `None` if it did not exist.
    fn delete(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Revision>, StoreError>> + Send;

    fn txn(&self, txn: Txn) -> impl Future<Output = Result<TxnResult, StoreError>> + Send;

    /// A lease that expires `ttl_secs` after it was granted or last kept alive.
    fn grant_lease(
        &self,
        ttl_secs: i64,
    ) -> impl Future<Output = Result<LeaseId, StoreError>> + Send;

    /// Renews a lease once.
    fn keep_alive(&self, lease: LeaseId) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Ends a lease now, deleting its keys.
    fn revoke_lease(&self, lease: LeaseId) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Changes under `prefix` from revision `from` on (0: from now).
    fn watch(
        &self,
        prefix: &str,
        from: Revision,
    ) -> impl Future<Output = Result<Watch, StoreError>> + Send;

    /// Drops history before `revision`: watches from older revisions get `Compacted`.
    fn compact(&self, revision: Revision) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Sets `key` to `value` only if its last change was at `expected` (`None`: only if
    /// it does not exist). Returns the new revision, or `None` if the condition failed.
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Revision>,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<Option<Revision>, StoreError>> + Send {
        let compare = match expected {
            None => Compare::Absent(key.to_string()),
            Some(r) => Compare::ModRevision(key.to_string(), r),
        };
        let txn = Txn {
            compares: vec![compare],
            success: vec![TxnOp::Put {
                key: key.to_string(),
                value,
                lease: None,
            }],
            failure: vec![],
        };
        async move {
            let r = self.txn(txn).await?;
            Ok(r.succeeded.then_some(r.revision))
        }
    }
}

pub(crate) fn check_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey(key.to_string()));
    }
    Ok(())
}
