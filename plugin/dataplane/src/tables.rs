//! The tables the fast path reads, and how the control plane changes them.
//!
//! The control plane sends a batch of [`TableChange`]s to [`TableHandle::commit`]. The
//! batch is applied to a copy of the current [`Tables`] (VRFs that the batch does not touch
//! are shared, not copied), validated as a whole, and published with one atomic pointer
//! swap. Workers pick up the new version at their next vector; they never take a lock,
//! and they never see half a batch. A batch with any invalid change is rejected whole.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use contiv_hw::MacAddr;
use rustc_hash::FxHashMap;

use crate::fib::{mask, Fib, FibError};
use crate::headers::{write_eth_header, ETHERTYPE_IP4, ETH_HDR_LEN};

/// An IPv4 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, len: u8) -> Self {
        Ipv4Net { addr, len }
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & mask(self.len.min(32)))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let m = mask(self.len.min(32));
        u32::from(ip) & m == u32::from(self.addr) & m
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an IPv4 prefix: {0:?} (expected a.b.c.d/len)")]
pub struct ParseNetError(String);

impl FromStr for Ipv4Net {
    type Err = ParseNetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseNetError(s.to_string());
        let (a, l) = s.split_once('/').ok_or_else(err)?;
        let addr = a.parse().map_err(|_| err())?;
        let len: u8 = l.parse().map_err(|_| err())?;
        if len > 32 {
            return Err(err());
        }
        Ok(Ipv4Net { addr, len })
    }
}

// Prefixes are written as `a.b.c.d/len` in configuration files.
impl<'de> serde::Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An interface as the graph sees it. Its index is the engine's port index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub port: u16,
    pub name: String,
    pub mac: MacAddr,
    /// Largest IP packet sent on the interface.
    pub mtu: u16,
    pub vrf: u16,
    pub up: bool,
    /// Our addresses, with their connected subnets (e.g. 10.1.1.1/24).
    pub addresses: Vec<Ipv4Net>,
    /// Prefixes we answer ARP for on this interface (e.g. a pod gateway), besides our own
    /// addresses.
    pub proxy_arp: Vec<Ipv4Net>,
}

impl Interface {
    pub fn new(port: u16, name: &str, mac: MacAddr) -> Self {
        Interface {
            port,
            name: name.to_string(),
            mac,
            mtu: 1500,
            vrf: 0,
            up: true,
            addresses: Vec::new(),
            proxy_arp: Vec::new(),
        }
    }

    pub fn with_address(mut self, net: Ipv4Net) -> Self {
        self.addresses.push(net);
        self
    }

    pub fn with_proxy_arp(mut self, net: Ipv4Net) -> Self {
        self.proxy_arp.push(net);
        self
    }

    pub fn owns(&self, ip: Ipv4Addr) -> bool {
        self.addresses.iter().any(|n| n.addr == ip)
    }

    pub fn on_link(&self, ip: Ipv4Addr) -> bool {
        self.addresses.iter().any(|n| n.contains(ip))
    }

    /// The address to speak from towards `peer`: one on the same subnet, else the first.
    pub fn source_for(&self, peer: Ipv4Addr) -> Option<Ipv4Addr> {
        self.addresses
            .iter()
            .find(|n| n.contains(peer))
            .or(self.addresses.first())
            .map(|n| n.addr)
    }
}

/// Where a route sends packets (VPP's adjacency).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Adjacency {
    /// Null route: drop.
    Drop,
    /// One of our own addresses: deliver to ip4-local.
    Local,
    /// A connected subnet: the next hop is the packet's own destination.
    Connected { port: u16 },
    /// Into a VXLAN tunnel to another node (an index into [`Tables::tunnels`]).
    Tunnel { tunnel: u16 },
    /// Through a gateway on a port.
    Via { port: u16, next_hop: Ipv4Addr },
}

impl fmt::Display for Adjacency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Adjacency::Drop => write!(f, "drop"),
            Adjacency::Local => write!(f, "local"),
            Adjacency::Connected { port } => write!(f, "connected port {port}"),
            Adjacency::Tunnel { tunnel } => write!(f, "vxlan tunnel {tunnel}"),
            Adjacency::Via { port, next_hop } => write!(f, "via {next_hop} port {port}"),
        }
    }
}

/// An adjacency's Ethernet header and output, complete: what ip4-rewrite writes for
/// every packet that takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewrite {
    pub port: u16,
    /// The interface's MTU (largest IP packet).
    pub mtu: u16,
    /// Whether `header` starts with the next hop's MAC (a `Via` to a static neighbour);
    /// otherwise (`Connected`) the next hop is each packet's destination, whose MAC is
    /// found per packet and written over the first six bytes.
    pub next_hop_known: bool,
    /// Next hop's MAC, the interface's MAC, the IPv4 ethertype.
    pub header: [u8; ETH_HDR_LEN],
}

/// The node's VXLAN endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VxlanConfig {
    /// The outer source address: this node's address on the underlay.
    pub local: Ipv4Addr,
    pub vni: u32,
    /// The inner source MAC of what this node encapsulates.
    pub mac: MacAddr,
    /// Largest inner IP packet the overlay carries (the underlay's MTU less 50).
    pub mtu: u16,
}

/// The well-known VXLAN port (RFC 7348).
pub const VXLAN_PORT: u16 = 4789;

/// A VXLAN tunnel to another node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tunnel {
    /// The other node's underlay address (the outer destination).
    pub remote: Ipv4Addr,
    /// The inner destination MAC (the other node's VXLAN MAC).
    pub remote_mac: MacAddr,
}

/// One change to the tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableChange {
    /// Adds or replaces an interface, with a /32 local route for each of its addresses and
    /// a connected route for each subnet (the old ones are removed).
    SetInterface(Interface),
    RemoveInterface {
        port: u16,
    },
    AddRoute {
        vrf: u16,
        prefix: Ipv4Net,
        target: Adjacency,
    },
    DelRoute {
        vrf: u16,
        prefix: Ipv4Net,
    },
    SetNeighbour {
        port: u16,
        ip: Ipv4Addr,
        mac: MacAddr,
    },
    DelNeighbour {
        port: u16,
        ip: Ipv4Addr,
    },
    /// Sets (or with `None` removes) the node's VXLAN endpoint.
    SetVxlan(Option<VxlanConfig>),
    /// Adds or replaces tunnel `index`.
    SetTunnel {
        index: u16,
        tunnel: Tunnel,
    },
    /// Removes tunnel `index`; routes still pointing into it drop their packets.
    DelTunnel {
        index: u16,
    },
    /// Sets (or with `None` removes) source NAT on the uplink.
    SetSnat(Option<crate::nat44::SnatConfig>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("change {index}: port {port} has no interface")]
    UnknownInterface { index: usize, port: u16 },
    #[error("change {index}: vrf {vrf} has no routes")]
    UnknownVrf { index: usize, vrf: u16 },
    #[error("change {index}: no static neighbour {ip} on port {port}")]
    UnknownNeighbour {
        index: usize,
        port: u16,
        ip: Ipv4Addr,
    },
    #[error("change {index}: {source}")]
    Fib { index: usize, source: FibError },
    #[error("change {index}: port {port} is beyond the limit of {limit} ports")]
    PortRange { index: usize, port: u16, limit: u16 },
    #[error("change {index}: interface {port} has mtu {mtu}, at least 68 is needed")]
    Mtu { index: usize, port: u16, mtu: u16 },
    #[error("change {index}: too many distinct adjacencies")]
    TooManyAdjacencies { index: usize },
    #[error("change {index}: no tunnel {tunnel}")]
    UnknownTunnel { index: usize, tunnel: u16 },
    #[error("change {index}: tunnel index {tunnel} is beyond the limit of {limit}")]
    TunnelRange {
        index: usize,
        tunnel: u16,
        limit: u16,
    },
    #[error("change {index}: tunnels {a} and {b} have the same remote {remote}")]
    DuplicateTunnelRemote {
        index: usize,
        a: u16,
        b: u16,
        remote: Ipv4Addr,
    },
}

/// The most ports one engine addresses.
pub const MAX_PORTS: u16 = 4096;

/// The most VXLAN tunnels (one per other node).
pub const MAX_TUNNELS: u16 = 4096;

/// One immutable version of everything the graph reads.
#[derive(Clone, Debug, Default)]
pub struct Tables {
    /// Bumped by every committed batch.
    pub version: u64,
    /// Indexed by port.
    pub interfaces: Vec<Option<Interface>>,
    /// Indexed by VRF id. `Arc` so that a batch copies only the VRFs it changes.
    pub fibs: Vec<Arc<Fib>>,
    /// Indexed by the adjacency index stored in the FIB.
    pub adjacencies: Vec<Adjacency>,
    /// Per adjacency, its whole Ethernet rewrite when it is known at commit time (see
    /// [`Rewrite`]); rebuilt by every commit.
    pub rewrites: Vec<Option<Rewrite>>,
    adjacency_index: FxHashMap<Adjacency, u32>,
    /// Static neighbours from the control plane, by (port, address).
    pub neighbours: FxHashMap<(u16, u32), MacAddr>,
    pub vxlan: Option<VxlanConfig>,
    /// VXLAN tunnels by index.
    pub tunnels: Vec<Option<Tunnel>>,
    /// Tunnel index by remote address: vxlan-decap accepts only known nodes.
    pub tunnel_by_remote: FxHashMap<u32, u16>,
    /// Source NAT of inside traffic leaving by the uplink.
    pub snat: Option<Arc<crate::nat44::SnatConfig>>,
}

impl Tables {
    #[inline]
    pub fn interface(&self, port: u16) -> Option<&Interface> {
        self.interfaces.get(port as usize).and_then(Option::as_ref)
    }

    #[inline]
    pub fn fib(&self, vrf: u16) -> Option<&Fib> {
        self.fibs.get(vrf as usize).map(|f| &**f)
    }

    /// Looks up `dst` in `vrf` and returns the adjacency index and the adjacency.
    #[inline]
    pub fn route(&self, vrf: u16, dst: Ipv4Addr) -> Option<(u32, Adjacency)> {
        let adj = self.fib(vrf)?.lookup(u32::from(dst))?;
        Some((adj, self.adjacencies[adj as usize]))
    }

    /// Static neighbours sorted, for display.
    pub fn static_neighbours(&self) -> BTreeMap<(u16, Ipv4Addr), MacAddr> {
        self.neighbours
            .iter()
            .map(|(&(p, ip), &m)| ((p, Ipv4Addr::from(ip)), m))
            .collect()
    }

    fn adjacency(&mut self, index: usize, a: Adjacency) -> Result<u32, TableError> {
        if let Some(&i) = self.adjacency_index.get(&a) {
            return Ok(i);
        }
        let i = self.adjacencies.len() as u32;
        if i > crate::fib::MAX_ADJACENCY {
            return Err(TableError::TooManyAdjacencies { index });
        }
        self.adjacencies.push(a);
        self.adjacency_index.insert(a, i);
        Ok(i)
    }

    /// The rewrite of a `Via` or `Connected` adjacency on an interface that is up; `None`
    /// otherwise (ip4-rewrite then works it out per packet). A `Via` whose next hop is
    /// not a static neighbour has none either: it is learned by ARP, per worker.
    fn static_rewrite(&self, a: Adjacency) -> Option<Rewrite> {
        let (port, next_hop_mac) = match a {
            Adjacency::Via { port, next_hop } => (
                port,
                Some(*self.neighbours.get(&(port, u32::from(next_hop)))?),
            ),
            Adjacency::Connected { port } => (port, None),
            Adjacency::Drop | Adjacency::Local | Adjacency::Tunnel { .. } => return None,
        };
        let iface = self.interface(port).filter(|i| i.up)?;
        let mut header = [0u8; ETH_HDR_LEN];
        // A connected subnet's next hop is each packet's destination: zeros until then.
        let dst = next_hop_mac.unwrap_or(MacAddr::ZERO);
        write_eth_header(&mut header, dst, iface.mac, ETHERTYPE_IP4);
        Some(Rewrite {
            port,
            mtu: iface.mtu,
            next_hop_known: next_hop_mac.is_some(),
            header,
        })
    }

    /// Interfaces, neighbours and adjacencies may all have changed in a batch: the
    /// rewrites are worked out again from them once, at its end.
    fn refresh_rewrites(&mut self) {
        self.rewrites = self
            .adjacencies
            .iter()
            .map(|&a| self.static_rewrite(a))
            .collect();
    }

    fn fib_mut(&mut self, vrf: u16) -> &mut Fib {
        while self.fibs.len() <= vrf as usize {
            self.fibs.push(Arc::new(Fib::new()));
        }
        Arc::make_mut(&mut self.fibs[vrf as usize])
    }

    fn add_route(
        &mut self,
        index: usize,
        vrf: u16,
        prefix: Ipv4Net,
        target: Adjacency,
    ) -> Result<(), TableError> {
        if let Adjacency::Connected { port } | Adjacency::Via { port, .. } = target {
            if self.interface(port).is_none() {
                return Err(TableError::UnknownInterface { index, port });
            }
        }
        let adj = self.adjacency(index, target)?;
        self.fib_mut(vrf)
            .insert(prefix.addr, prefix.len, adj)
            .map_err(|source| TableError::Fib { index, source })
    }

    fn del_route(&mut self, index: usize, vrf: u16, prefix: Ipv4Net) -> Result<(), TableError> {
        if self.fib(vrf).is_none() {
            return Err(TableError::UnknownVrf { index, vrf });
        }
        self.fib_mut(vrf)
            .remove(prefix.addr, prefix.len)
            .map(|_| ())
            .map_err(|source| TableError::Fib { index, source })
    }

    /// The routes an interface implies: /32 local for each address, connected subnets.
    fn interface_routes(i: &Interface) -> Vec<(Ipv4Net, Adjacency)> {
        let mut v = Vec::new();
        for n in &i.addresses {
            if n.len < 32 {
                v.push((
                    Ipv4Net::new(n.network(), n.len),
                    Adjacency::Connected { port: i.port },
                ));
            }
            v.push((Ipv4Net::new(n.addr, 32), Adjacency::Local));
        }
        v
    }

    fn remove_interface_routes(&mut self, index: usize, old: &Interface) -> Result<(), TableError> {
        for (prefix, target) in Self::interface_routes(old) {
            let vrf = old.vrf;
            // Only remove what still points where the interface put it: a route the
            // control plane replaced since is not ours to remove.
            let current = self
                .fib(vrf)
                .and_then(|f| f.get(prefix.addr, prefix.len))
                .map(|a| self.adjacencies[a as usize]);
            // Pod interfaces all carry the pod gateway's address: its local route stays
            // while any other interface of the VRF still implies it.
            let shared = self.interfaces.iter().flatten().any(|other| {
                other.port != old.port
                    && other.vrf == vrf
                    && Self::interface_routes(other).contains(&(prefix, target))
            });
            if current == Some(target) && !shared {
                self.del_route(index, vrf, prefix)?;
            }
        }
        Ok(())
    }

    fn apply(&mut self, index: usize, change: &TableChange) -> Result<(), TableError> {
        match change {
            TableChange::SetInterface(i) => {
                if i.port >= MAX_PORTS {
                    return Err(TableError::PortRange {
                        index,
                        port: i.port,
                        limit: MAX_PORTS,
                    });
                }
                if i.mtu < 68 {
                    return Err(TableError::Mtu {
                        index,
                        port: i.port,
                        mtu: i.mtu,
                    });
                }
                if let Some(old) = self.interface(i.port).cloned() {
                    self.remove_interface_routes(index, &old)?;
                }
                while self.interfaces.len() <= i.port as usize {
                    self.interfaces.push(None);
                }
                self.interfaces[i.port as usize] = Some(i.clone());
                for (prefix, target) in Self::interface_routes(i) {
                    self.add_route(index, i.vrf, prefix, target)?;
                }
            }
            TableChange::RemoveInterface { port } => {
                let old = self
                    .interface(*port)
                    .cloned()
                    .ok_or(TableError::UnknownInterface { index, port: *port })?;
                self.remove_interface_routes(index, &old)?;
                self.interfaces[*port as usize] = None;
                self.neighbours.retain(|(p, _), _| p != port);
            }
            TableChange::AddRoute {
                vrf,
                prefix,
                target,
            } => {
                self.add_route(index, *vrf, *prefix, *target)?;
            }
            TableChange::DelRoute { vrf, prefix } => self.del_route(index, *vrf, *prefix)?,
            TableChange::SetNeighbour { port, ip, mac } => {
                if self.interface(*port).is_none() {
                    return Err(TableError::UnknownInterface { index, port: *port });
                }
                self.neighbours.insert((*port, u32::from(*ip)), *mac);
            }
            TableChange::DelNeighbour { port, ip } => {
                self.neighbours.remove(&(*port, u32::from(*ip))).ok_or(
                    TableError::UnknownNeighbour {
                        index,
                        port: *port,
                        ip: *ip,
                    },
                )?;
            }
            TableChange::SetVxlan(v) => self.vxlan = *v,
            TableChange::SetSnat(None) => self.snat = None,
            TableChange::SetSnat(Some(cfg)) => {
                if self.interface(cfg.uplink).is_none() {
                    return Err(TableError::UnknownInterface {
                        index,
                        port: cfg.uplink,
                    });
                }
                self.snat = Some(Arc::new(cfg.clone()));
            }
            TableChange::SetTunnel { index: t, tunnel } => {
                if *t >= MAX_TUNNELS {
                    return Err(TableError::TunnelRange {
                        index,
                        tunnel: *t,
                        limit: MAX_TUNNELS,
                    });
                }
                let remote = u32::from(tunnel.remote);
                if let Some(&other) = self.tunnel_by_remote.get(&remote) {
                    if other != *t {
                        return Err(TableError::DuplicateTunnelRemote {
                            index,
                            a: other,
                            b: *t,
                            remote: tunnel.remote,
                        });
                    }
                }
                while self.tunnels.len() <= usize::from(*t) {
                    self.tunnels.push(None);
                }
                if let Some(old) = self.tunnels[usize::from(*t)] {
                    self.tunnel_by_remote.remove(&u32::from(old.remote));
                }
                self.tunnels[usize::from(*t)] = Some(*tunnel);
                self.tunnel_by_remote.insert(remote, *t);
            }
            TableChange::DelTunnel { index: t } => {
                let old = self
                    .tunnels
                    .get_mut(usize::from(*t))
                    .and_then(Option::take)
                    .ok_or(TableError::UnknownTunnel { index, tunnel: *t })?;
                self.tunnel_by_remote.remove(&u32::from(old.remote));
            }
        }
        Ok(())
    }
}

/// Shared access to the published tables: the control plane commits through it, workers
/// read through it. Cloning gives another handle to the same tables.
#[derive(Clone, Default)]
pub struct TableHandle {
    current: Arc<ArcSwap<Tables>>,
    /// Serialises committers (control-plane threads only; workers never touch it).
    commit_lock: Arc<Mutex<()>>,
}

impl TableHandle {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a batch atomically; returns the new version. On error nothing changes.
    pub fn commit(&self, changes: &[TableChange]) -> Result<u64, TableError> {
        let _guard = self
            .commit_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = Tables::clone(&self.current.load());
        for (index, change) in changes.iter().enumerate() {
            next.apply(index, change)?;
        }
        next.refresh_rewrites();
        next.version += 1;
        let version = next.version;
        self.current.store(Arc::new(next));
        Ok(version)
    }

    /// The current version.
    pub fn snapshot(&self) -> Arc<Tables> {
        self.current.load_full()
    }

    pub(crate) fn swap(&self) -> &Arc<ArcSwap<Tables>> {
        &self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn a_bad_batch_changes_nothing() {
        let t = TableHandle::new();
        let eth0 = Interface::new(0, "eth0", MacAddr::local(1)).with_address(net("10.0.0.1/24"));
        t.commit(&[TableChange::SetInterface(eth0)]).unwrap();
        let before = t.snapshot();
        let err = t
            .commit(&[
                TableChange::AddRoute {
                    vrf: 0,
                    prefix: net("10.9.0.0/16"),
                    target: Adjacency::Drop,
                },
                TableChange::AddRoute {
                    vrf: 0,
                    prefix: net("10.8.0.0/16"),
                    target: Adjacency::Connected { port: 7 },
                },
            ])
            .unwrap_err();
        assert_eq!(err, TableError::UnknownInterface { index: 1, port: 7 });
        let after = t.snapshot();
        assert_eq!(after.version, before.version);
        assert!(after.route(0, "10.9.1.1".parse().unwrap()).is_none());
    }

    #[test]
    fn interfaces_bring_local_and_connected_routes() {
        let t = TableHandle::new();
        let eth0 = Interface::new(0, "eth0", MacAddr::local(1)).with_address(net("10.0.0.1/24"));
        t.commit(&[TableChange::SetInterface(eth0.clone())])
            .unwrap();
        let s = t.snapshot();
        assert_eq!(
            s.route(0, "10.0.0.1".parse().unwrap()).map(|r| r.1),
            Some(Adjacency::Local)
        );
        assert_eq!(
            s.route(0, "10.0.0.9".parse().unwrap()).map(|r| r.1),
            Some(Adjacency::Connected { port: 0 })
        );
        let moved = Interface {
            addresses: vec![net("10.5.0.1/16")],
            ..eth0
        };
        t.commit(&[TableChange::SetInterface(moved)]).unwrap();
        let s = t.snapshot();
        assert!(
            s.route(0, "10.0.0.9".parse().unwrap()).is_none(),
            "old subnet gone"
        );
        assert!(s.route(0, "10.5.3.3".parse().unwrap()).is_some());
        t.commit(&[TableChange::RemoveInterface { port: 0 }])
            .unwrap();
        assert!(t.snapshot().fib(0).unwrap().is_empty());
    }

    #[test]
    fn a_shared_gateway_address_outlives_each_interface() {
        let t = TableHandle::new();
        let gw = net("10.1.1.1/32");
        let pod = |port| Interface::new(port, "tap", MacAddr::local(port.into())).with_address(gw);
        t.commit(&[
            TableChange::SetInterface(pod(0)),
            TableChange::SetInterface(pod(1)),
        ])
        .unwrap();
        t.commit(&[TableChange::RemoveInterface { port: 0 }])
            .unwrap();
        assert_eq!(
            t.snapshot().route(0, gw.addr).map(|r| r.1),
            Some(Adjacency::Local),
            "pod 1 still answers on its gateway"
        );
        t.commit(&[TableChange::RemoveInterface { port: 1 }])
            .unwrap();
        assert!(t.snapshot().route(0, gw.addr).is_none());
    }

    #[test]
    fn static_neighbours_resolve_via_adjacencies() {
        let t = TableHandle::new();
        let eth0 = Interface::new(0, "eth0", MacAddr::local(1)).with_address(net("10.0.0.1/24"));
        let gw: Ipv4Addr = "10.0.0.254".parse().unwrap();
        t.commit(&[
            TableChange::SetInterface(eth0),
            TableChange::AddRoute {
                vrf: 0,
                prefix: net("0.0.0.0/0"),
                target: Adjacency::Via {
                    port: 0,
                    next_hop: gw,
                },
            },
        ])
        .unwrap();
        // The rewrite out of eth0 to `next_hop`, or to each packet's own destination.
        let out_of_eth0 = |next_hop: Option<MacAddr>| {
            let mut header = [0u8; 14];
            header[..6].copy_from_slice(&next_hop.unwrap_or(MacAddr::ZERO).0);
            header[6..12].copy_from_slice(&MacAddr::local(1).0);
            header[12..].copy_from_slice(&[0x08, 0x00]);
            Some(Rewrite {
                port: 0,
                mtu: 1500,
                next_hop_known: next_hop.is_some(),
                header,
            })
        };
        let (adj, _) = t.snapshot().route(0, "8.8.8.8".parse().unwrap()).unwrap();
        assert_eq!(t.snapshot().rewrites[adj as usize], None);
        // A connected subnet has its rewrite but for the next hop, each packet's own.
        let (connected, _) = t.snapshot().route(0, "10.0.0.7".parse().unwrap()).unwrap();
        assert_eq!(t.snapshot().rewrites[connected as usize], out_of_eth0(None));
        t.commit(&[TableChange::SetNeighbour {
            port: 0,
            ip: gw,
            mac: MacAddr::local(99),
        }])
        .unwrap();
        assert_eq!(
            t.snapshot().rewrites[adj as usize],
            out_of_eth0(Some(MacAddr::local(99)))
        );
        // An interface taken down takes its rewrites with it.
        let down = Interface {
            up: false,
            ..Interface::new(0, "eth0", MacAddr::local(1)).with_address(net("10.0.0.1/24"))
        };
        t.commit(&[TableChange::SetInterface(down)]).unwrap();
        assert_eq!(t.snapshot().rewrites[adj as usize], None);
    }
}
