//! Pod IP allocation on a node: addresses from the node's pod subnet, each persisted
//! under `<prefix>ipam/<node>/<ip>` with its owner *before* it is handed out, so an
//! agent that crashes between allocating and replying finds the allocation again (the
//! repeated ADD gets the same address) and two live pods never share one.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use contiv_store::{Compare, Store, StoreError, Txn, TxnOp};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("the pod subnet {subnet}/{len} of node {node} has no free address")]
    Exhausted {
        node: String,
        subnet: Ipv4Addr,
        len: u8,
    },
    #[error("pod subnet /{0} is too small (at most /30)")]
    SubnetTooSmall(u8),
    #[error("allocation key {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("gave up after {0} lost races for an address")]
    Contended(u32),
}

/// Who holds an address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub container_id: String,
    pub ifname: String,
    /// `namespace/name` of the pod, for people reading the store.
    #[serde(default)]
    pub pod: String,
    /// The pod's network namespace: an agent restarting re-adopts the pod's interface
    /// there, and releases the address when the namespace is gone.
    #[serde(default)]
    pub netns: String,
}

#[derive(Serialize, Deserialize)]
struct Doc {
    v: u32,
    #[serde(flatten)]
    owner: Allocation,
}

/// The node's pod subnet.
#[derive(Clone, Debug)]
pub struct IpamConfig {
    pub node: String,
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
}

impl IpamConfig {
    /// Contiv's default: node ID N gets 10.1.N.0/24 (`pod_subnet` is the /16).
    pub fn for_node_id(node: &str, pod_subnet: Ipv4Addr, node_id: u8) -> IpamConfig {
        let base = u32::from(pod_subnet) & 0xffff_0000;
        IpamConfig {
            node: node.into(),
            subnet: Ipv4Addr::from(base | (u32::from(node_id) << 8)),
            prefix_len: 24,
        }
    }

    /// The gateway: the subnet's first address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) + 1)
    }
}

pub struct Ipam<S> {
    store: S,
    prefix: String,
    cfg: IpamConfig,
}

impl<S: Store> Ipam<S> {
    pub fn new(store: S, prefix: &str, cfg: IpamConfig) -> Result<Self, IpamError> {
        if cfg.prefix_len > 30 {
            return Err(IpamError::SubnetTooSmall(cfg.prefix_len));
        }
        Ok(Ipam {
            store,
            prefix: format!("{prefix}ipam/{}/", cfg.node),
            cfg,
        })
    }

    pub fn config(&self) -> &IpamConfig {
        &self.cfg
    }

    fn key(&self, ip: Ipv4Addr) -> String {
        format!("{}{ip}", self.prefix)
    }

    /// Every allocation of this node, sorted by address, with its store revision.
    pub async fn allocations(&self) -> Result<Vec<(Ipv4Addr, Allocation, i64)>, IpamError> {
        let (kvs, _) = self.store.list(&self.prefix).await?;
        let mut out = Vec::new();
        for kv in kvs {
            let ip: Ipv4Addr =
                kv.key[self.prefix.len()..]
                    .parse()
                    .map_err(|_| IpamError::Corrupt {
                        key: kv.key.clone(),
                        reason: "not an IPv4 address".into(),
                    })?;
            let doc: Doc = serde_json::from_slice(&kv.value).map_err(|e| IpamError::Corrupt {
                key: kv.key.clone(),
                reason: e.to_string(),
            })?;
            out.push((ip, doc.owner, kv.mod_revision));
        }
        out.sort_by_key(|(ip, _, _)| *ip);
        Ok(out)
    }

    /// The address of `container_id`/`ifname`: the one it already holds (a repeated ADD),
    /// or the lowest free one, persisted before it is returned.
    pub async fn allocate(
        &self,
        container_id: &str,
        ifname: &str,
        pod: &str,
    ) -> Result<Ipv4Addr, IpamError> {
        self.allocate_for(&Allocation {
            container_id: container_id.into(),
            ifname: ifname.into(),
            pod: pod.into(),
            netns: String::new(),
        })
        .await
    }

    /// As [`Ipam::allocate`], with the whole owner record to persist.
    pub async fn allocate_for(&self, owner: &Allocation) -> Result<Ipv4Addr, IpamError> {
        let (container_id, ifname) = (owner.container_id.as_str(), owner.ifname.as_str());
        let first = u32::from(self.cfg.subnet) + 2; // .0 network, .1 gateway
        let last = u32::from(self.cfg.subnet) + (1u32 << (32 - self.cfg.prefix_len)) - 2; // before broadcast
                                                                                          // Every lost race means someone else took an address, so there can be at most as
                                                                                          // many losses as addresses.
        let attempts = last.saturating_sub(first) + 2;
        for _ in 0..attempts {
            let held = self.allocations().await?;
            if let Some((ip, _, _)) = held
                .iter()
                .find(|(_, a, _)| a.container_id == container_id && a.ifname == ifname)
            {
                return Ok(*ip);
            }
            let used: BTreeSet<u32> = held.iter().map(|(ip, _, _)| u32::from(*ip)).collect();
            let Some(ip) = (first..=last)
                .find(|i| !used.contains(i))
                .map(Ipv4Addr::from)
            else {
                return Err(IpamError::Exhausted {
                    node: self.cfg.node.clone(),
                    subnet: self.cfg.subnet,
                    len: self.cfg.prefix_len,
                });
            };
            let doc = Doc {
                v: 1,
                owner: owner.clone(),
            };
            let value = serde_json::to_vec(&doc).unwrap_or_default();
            if self
                .store
                .compare_and_swap(&self.key(ip), None, value)
                .await?
                .is_some()
            {
                return Ok(ip);
            }
        }
        Err(IpamError::Contended(attempts))
    }

    /// Releases what `container_id`/`ifname` holds; `None` when it held nothing (DEL of
    /// an unknown container succeeds).
    pub async fn release(
        &self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<Ipv4Addr>, IpamError> {
        for (ip, a, rev) in self.allocations().await? {
            if a.container_id == container_id && a.ifname == ifname {
                self.store
                    .txn(Txn {
                        compares: vec![Compare::ModRevision(self.key(ip), rev)],
                        success: vec![TxnOp::Delete { key: self.key(ip) }],
                        failure: vec![],
                    })
                    .await?;
                return Ok(Some(ip));
            }
        }
        Ok(None)
    }

    /// Releases every allocation whose (container, interface) is not in `valid` (CNI GC,
    /// and the agent's startup resync); returns what was released.
    pub async fn release_all_except(
        &self,
        valid: &BTreeSet<(String, String)>,
    ) -> Result<Vec<Ipv4Addr>, IpamError> {
        let mut freed = Vec::new();
        for (ip, a, rev) in self.allocations().await? {
            if !valid.contains(&(a.container_id.clone(), a.ifname.clone())) {
                self.store
                    .txn(Txn {
                        compares: vec![Compare::ModRevision(self.key(ip), rev)],
                        success: vec![TxnOp::Delete { key: self.key(ip) }],
                        failure: vec![],
                    })
                    .await?;
                freed.push(ip);
            }
        }
        Ok(freed)
    }
}
