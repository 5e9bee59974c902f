//! Node IDs: the first free ID from 1, taken with compare-and-swap under
//! `<prefix>node-id/<id>`, the same for a node across restarts, freed when the node
//! leaves the cluster.

use std::collections::BTreeSet;

use contiv_store::{Compare, EventKind, Store, StoreError, Txn, TxnOp};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum NodeIdError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("all {0} node IDs are taken")]
    Exhausted(u32),
    #[error("node ID key {key} holds something unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("gave up after {0} lost races for a node ID")]
    Contended(u32),
}

#[derive(Serialize, Deserialize)]
struct Owner {
    v: u32,
    node: String,
}

/// Allocates node IDs in the store.
pub struct NodeIdAllocator<S> {
    store: S,
    prefix: String,
    /// Where KSR reflects Node objects (`<prefix>k8s/node/`).
    nodes_prefix: String,
    /// Where agents publish their node records (`<prefix>node-info/`).
    info_prefix: String,
    /// Where each node's pod addresses are (`<prefix>ipam/`).
    ipam_prefix: String,
    max_id: u32,
}

impl<S: Store> NodeIdAllocator<S> {
    /// `prefix` is the store prefix (`/contiv/`); IDs go from 1 to `max_id` (255 with the
    /// default 10.1.0.0/16 pod subnet cut in /24s).
    pub fn new(store: S, prefix: &str, max_id: u32) -> Self {
        NodeIdAllocator {
            store,
            prefix: format!("{prefix}node-id/"),
            nodes_prefix: format!("{prefix}k8s/node/"),
            info_prefix: format!("{prefix}node-info/"),
            ipam_prefix: format!("{prefix}ipam/"),
            max_id,
        }
    }

    fn key(&self, id: u32) -> String {
        format!("{}{id}", self.prefix)
    }

    /// Every allocated ID with its node, sorted by ID.
    pub async fn list(&self) -> Result<Vec<(u32, String, i64)>, NodeIdError> {
        let (kvs, _) = self.store.list(&self.prefix).await?;
        let mut out = Vec::new();
        for kv in kvs {
            let id: u32 =
                kv.key[self.prefix.len()..]
                    .parse()
                    .map_err(|_| NodeIdError::Corrupt {
                        key: kv.key.clone(),
                        reason: "not a number".into(),
                    })?;
            let owner: Owner =
                serde_json::from_slice(&kv.value).map_err(|e| NodeIdError::Corrupt {
                    key: kv.key.clone(),
                    reason: e.to_string(),
                })?;
            out.push((id, owner.node, kv.mod_revision));
        }
        out.sort();
        Ok(out)
    }

    /// The node's ID: the one it already has, or the lowest free one.
    pub async fn allocate(&self, node: &str) -> Result<u32, NodeIdError> {
        // Every lost race means another node took an ID: at most `max_id` losses.
        let attempts = self.max_id + 1;
        for _ in 0..attempts {
            let taken = self.list().await?;
            if let Some(&(id, _, _)) = taken.iter().find(|(_, n, _)| n == node) {
                return Ok(id);
            }
            let used: BTreeSet<u32> = taken.iter().map(|(id, _, _)| *id).collect();
            let id = (1..=self.max_id)
                .find(|i| !used.contains(i))
                .ok_or(NodeIdError::Exhausted(self.max_id))?;
            let value = serde_json::to_vec(&Owner {
                v: 1,
                node: node.into(),
            })
            .unwrap_or_default();
            if self
                .store
                .compare_and_swap(&self.key(id), None, value)
                .await?
                .is_some()
            {
                // Two agents of one node racing (a restart overlapping its predecessor)
                // could both have taken an ID: keep the lowest, free the rest.
                let mine: Vec<(u32, i64)> = self
                    .list()
                    .await?
                    .into_iter()
                    .filter(|(_, n, _)| n == node)
                    .map(|(i, _, r)| (i, r))
                    .collect();
                for &(extra, rev) in mine.iter().skip(1) {
                    self.free(extra, rev).await?;
                }
                return Ok(mine.first().map(|(i, _)| *i).unwrap_or(id));
            }
            // Lost the race for this ID: look again.
        }
        Err(NodeIdError::Contended(attempts))
    }

    async fn free(&self, id: u32, rev: i64) -> Result<(), NodeIdError> {
        self.store
            .txn(Txn {
                compares: vec![Compare::ModRevision(self.key(id), rev)],
                success: vec![TxnOp::Delete { key: self.key(id) }],
                failure: vec![],
            })
            .await?;
        Ok(())
    }

    /// Frees the ID of `node`, if it has one.
    pub async fn release(&self, node: &str) -> Result<Option<u32>, NodeIdError> {
        for (id, n, rev) in self.list().await? {
            if n == node {
                self.free(id, rev).await?;
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Frees the IDs of nodes that are no longer in the cluster (KSR's view); returns
    /// the freed IDs.
    pub async fn release_departed(
        &self,
        present: &BTreeSet<String>,
    ) -> Result<Vec<u32>, NodeIdError> {
        let mut freed = Vec::new();
        for (id, n, rev) in self.list().await? {
            if !present.contains(&n) {
                self.free(id, rev).await?;
                freed.push(id);
            }
        }
        Ok(freed)
    }

    /// Follows KSR's Node objects and, for every node whose object is deleted, removes
    /// its record and its pods' address allocations and frees its ID, until the store
    /// fails; returns the error (the caller retries).
    ///
    /// Only deletions are acted on, never absence: a node that has just joined may not be
    /// reflected yet, and freeing its ID would hand it to another node.
    ///
    /// Deletions after revision `after` are followed (`None`: after the current one).
    pub async fn follow_departures(&self, own: &str, after: Option<i64>) -> StoreError {
        let revision = match after {
            Some(r) => r,
            None => match self.store.list(&self.nodes_prefix).await {
                Ok((_, r)) => r,
                Err(e) => return e,
            },
        };
        let mut watch = match self.store.watch(&self.nodes_prefix, revision + 1).await {
            Ok(w) => w,
            Err(e) => return e,
        };
        loop {
            let event = match watch.next().await {
                Some(Ok(ev)) => ev,
                Some(Err(e)) => return e,
                None => return StoreError::Unavailable("the node watch ended".into()),
            };
            if event.kind != EventKind::Delete {
                continue;
            }
            let name = &event.key[self.nodes_prefix.len()..];
            if name == own {
                continue;
            }
            // Its record goes first, so no agent keeps a tunnel to a freed ID.
            if let Err(e) = self
                .store
                .delete(&format!("{}{name}", self.info_prefix))
                .await
            {
                return e;
            }
            // A node that left took its pods with it: their addresses are free.
            let allocations = format!("{}{name}/", self.ipam_prefix);
            let held = match self.store.list(&allocations).await {
                Ok((kvs, _)) => kvs,
                Err(e) => return e,
            };
            for kv in held {
                if let Err(e) = self.store.delete(&kv.key).await {
                    return e;
                }
            }
            match self.release(name).await {
                Ok(Some(id)) => tracing::info!(node = name, id, "node left the cluster: ID freed"),
                Ok(None) => {}
                Err(NodeIdError::Store(e)) => return e,
                Err(e) => tracing::warn!(node = name, error = %e, "cannot free the node's ID"),
            }
        }
    }
}
