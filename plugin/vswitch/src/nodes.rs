//! Node discovery: each agent publishes what the others need to reach it (its ID and
//! underlay address) under `<prefix>node-info/<name>`, and follows everyone else's.

use std::net::Ipv4Addr;

use contiv_hw::MacAddr;
use contiv_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::agent::Request;

#[derive(Debug, thiserror::Error)]
pub enum NodeDirectoryError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// What another node needs to know of this one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub id: u32,
    /// The node's address on the underlay (the outer address of its VXLAN, the next hop
    /// in `nooverlay` mode).
    pub address: Ipv4Addr,
}

#[derive(Serialize, Deserialize)]
struct Doc {
    v: u32,
    #[serde(flatten)]
    info: NodeInfo,
}

/// The inner MAC a node's VXLAN endpoint uses, derived from its ID so that no node has
/// to publish it.
pub fn vxlan_mac(id: u32) -> MacAddr {
    MacAddr([0x02, 0xfe, 0, (id >> 16) as u8, (id >> 8) as u8, id as u8])
}

pub struct NodeDirectory<S> {
    store: S,
    prefix: String,
}

impl<S: Store> NodeDirectory<S> {
    pub fn new(store: S, prefix: &str) -> Self {
        NodeDirectory {
            store,
            prefix: format!("{prefix}node-info/"),
        }
    }

    pub async fn publish(&self, info: &NodeInfo) -> Result<(), NodeDirectoryError> {
        let doc = Doc {
            v: 1,
            info: info.clone(),
        };
        let value = serde_json::to_vec(&doc).unwrap_or_default();
        self.store
            .put(&format!("{}{}", self.prefix, info.name), value)
            .await?;
        Ok(())
    }

    /// The record of `name`, if it has a readable one.
    pub async fn get(&self, name: &str) -> Result<Option<NodeInfo>, NodeDirectoryError> {
        let kv = self.store.get(&format!("{}{name}", self.prefix)).await?;
        Ok(kv
            .and_then(|kv| serde_json::from_slice::<Doc>(&kv.value).ok())
            .filter(|d| d.v == 1)
            .map(|d| d.info))
    }

    pub async fn remove(&self, name: &str) -> Result<(), NodeDirectoryError> {
        self.store.delete(&format!("{}{name}", self.prefix)).await?;
        Ok(())
    }

    /// Every readable node record, by name, and the store revision; unreadable ones are
    /// logged and skipped (a newer agent's format must not stop an older one).
    pub async fn list(&self) -> Result<(Vec<NodeInfo>, i64), NodeDirectoryError> {
        let (kvs, rev) = self.store.list(&self.prefix).await?;
        let mut out = Vec::new();
        for kv in kvs {
            match serde_json::from_slice::<Doc>(&kv.value) {
                Ok(d) if d.v == 1 => out.push(d.info),
                Ok(d) => {
                    tracing::warn!(key = %kv.key, v = d.v, "node record of an unknown version")
                }
                Err(e) => tracing::warn!(key = %kv.key, error = %e, "unreadable node record"),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((out, rev))
    }

    /// Sends the whole directory to the agent now and after every change, until the
    /// store fails or the agent stops; returns why it stopped.
    pub async fn follow(&self, agent: mpsc::Sender<Request>) -> NodeDirectoryError {
        loop {
            let (nodes, rev) = match self.list().await {
                Ok(r) => r,
                Err(e) => return e,
            };
            if agent.send(Request::Nodes(nodes)).await.is_err() {
                return NodeDirectoryError::Store(StoreError::Unavailable(
                    "the agent stopped".into(),
                ));
            }
            let mut watch = match self.store.watch(&self.prefix, rev + 1).await {
                Ok(w) => w,
                Err(e) => return e.into(),
            };
            // Any change: list again (the directory is small, and a list is never
            // out of order the way a sequence of events replayed by hand can be).
            match watch.next().await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return e.into(),
                None => return StoreError::Unavailable("the node watch ended".into()).into(),
            }
        }
    }
}
