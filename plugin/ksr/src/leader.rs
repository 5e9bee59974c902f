//! Leader election in the store: the leader key on a lease, kept alive, and a fence that
//! every write checks.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use contiv_store::{Compare, LeaseId, Store, Txn, TxnOp};
use tokio::sync::watch;

use crate::{KsrConfig, Metrics};

/// This KSR's leadership: the lease that holds the leader key. Cloning shares it.
#[derive(Clone)]
pub struct Leadership {
    pub lease: LeaseId,
    key: String,
    identity: Vec<u8>,
    lost: watch::Receiver<bool>,
}

impl Leadership {
    /// Campaigns until this KSR holds the leader key; then keeps its lease alive in the
    /// background until the lease cannot be renewed.
    pub async fn acquire<S: Store + Clone>(
        store: &S,
        config: &KsrConfig,
        metrics: &Arc<Metrics>,
    ) -> Leadership {
        let key = config.leader_key();
        let identity = config.identity.clone().into_bytes();
        let ttl = config.lease_ttl_secs.max(2);
        let mut backoff = Duration::from_millis(100);
        loop {
            match Self::try_once(store, &key, &identity, ttl).await {
                Ok(Some(lease)) => {
                    let (tx, lost) = watch::channel(false);
                    tokio::spawn(keep_alive(store.clone(), lease, ttl, tx));
                    return Leadership {
                        lease,
                        key,
                        identity,
                        lost,
                    };
                }
                Ok(None) => backoff = Duration::from_millis(100),
                Err(e) => {
                    metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "campaign: store error");
                    backoff = (backoff * 2).min(config.max_backoff);
                }
            }
            // Someone else leads (or the store is down): try again within a fraction of
            // the TTL, so a dead leader is replaced soon after its lease expires.
            let wait = backoff.min(Duration::from_millis((ttl as u64 * 1000) / 4));
            tokio::time::sleep(wait).await;
        }
    }

    async fn try_once<S: Store>(
        store: &S,
        key: &str,
        identity: &[u8],
        ttl: i64,
    ) -> Result<Option<LeaseId>, contiv_store::StoreError> {
        if store.get(key).await?.is_some() {
            return Ok(None);
        }
        let lease = store.grant_lease(ttl).await?;
        let r = store
            .txn(Txn {
                compares: vec![Compare::Absent(key.to_string())],
                success: vec![TxnOp::Put {
                    key: key.to_string(),
                    value: identity.to_vec(),
                    lease: Some(lease),
                }],
                failure: vec![],
            })
            .await?;
        if r.succeeded {
            Ok(Some(lease))
        } else {
            let _ = store.revoke_lease(lease).await;
            Ok(None)
        }
    }

    /// The condition every write of the leader carries.
    pub fn fence(&self) -> Compare {
        Compare::Value(self.key.clone(), self.identity.clone())
    }

    /// Resolves when the lease could not be renewed in time.
    pub async fn lost(&self) {
        let mut l = self.lost.clone();
        let _ = l.wait_for(|lost| *lost).await;
    }

    /// Steps down at once (on shutdown), so a standby takes over without waiting.
    pub async fn resign<S: Store>(&self, store: &S) {
        let _ = store.revoke_lease(self.lease).await;
    }
}

async fn keep_alive<S: Store>(store: S, lease: LeaseId, ttl: i64, lost: watch::Sender<bool>) {
    let every = Duration::from_millis((ttl as u64 * 1000) / 3);
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        if lost.is_closed() {
            return;
        }
        match store.keep_alive(lease).await {
            Ok(()) => last_ok = tokio::time::Instant::now(),
            Err(contiv_store::StoreError::LeaseNotFound(_)) => break,
            Err(e) => {
                tracing::warn!(error = %e, "leader lease keepalive failed");
                // Past the TTL the lease is gone in the store too: give up leading.
                if last_ok.elapsed() >= Duration::from_secs(ttl as u64) {
                    break;
                }
            }
        }
    }
    let _ = lost.send(true);
}
