//! What the agent puts on the node, as reconciler items, and the applier that makes it
//! real: TAP interfaces in pods' namespaces, dataplane ports, routes and neighbours, the
//! host interconnect and the uplink.
//!
//! Keys: `pod/<container>/<ifname>/interface` and `.../route` (the route depends on the
//! interface), `node/host-interconnect`, `node/uplink`, `node/snat` (on the uplink),
//! `node/vxlan`, `remote/<id>/tunnel` and `remote/<id>/routes`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use contiv_dataplane::{
    Adjacency, Interface, Ipv4Net, TableChange, TableHandle, Tunnel, VxlanConfig,
};
use contiv_hw::netns::{HostInterconnect, NetnsError, PodInterface};
use contiv_hw::MacAddr;

use crate::host::{HostDevice, NodeHost, UplinkDevice};
use crate::reconciler::{Applier, Item, Key};
use crate::worker::{DataplaneWorker, WorkerError};

#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Tap(#[from] contiv_hw::TapError),
    #[error(transparent)]
    AfPacket(#[from] contiv_hw::AfPacketError),
    #[error(transparent)]
    Worker(#[from] WorkerError),
    #[error("tables: {0}")]
    Tables(#[from] contiv_dataplane::TableError),
    #[error("host: {0}")]
    Host(String),
    #[error("{0} depends on an interface that is not applied")]
    NoInterface(Key),
}

/// A pod's interface: where it lives and how it is addressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodAttachment {
    pub container_id: String,
    pub ifname: String,
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub mtu: u16,
}

/// The dataplane's MAC on the port of the pod with address `ip` (see
/// [`PodAttachment::gateway_mac`]).
pub fn gateway_mac_for(ip: Ipv4Addr) -> MacAddr {
    MacAddr::local(u32::from(ip))
}

impl PodAttachment {
    /// The dataplane's MAC on the pod's port (the pod's gateway MAC), derived from the
    /// pod's IP so that a re-created port keeps the MAC in the pod's neighbour table.
    pub fn gateway_mac(&self) -> MacAddr {
        gateway_mac_for(self.ip)
    }

    /// The dataplane's name for the port.
    pub fn port_name(&self) -> String {
        let short: String = self.container_id.chars().take(8).collect();
        format!("pod-{short}-{}", self.ifname)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeItem {
    /// A TAP named as the runtime asked in the pod's namespace, configured, and its
    /// dataplane port answering as the pod's gateway.
    PodInterface(PodAttachment),
    /// The pod's /32 route and neighbour entry in the dataplane.
    PodRoute { ip: Ipv4Addr, interface: Key },
    /// A TAP from the dataplane into the node's host stack.
    HostInterconnect {
        name: String,
        /// The host stack's namespace (the agent's own in production).
        netns: PathBuf,
        /// The interconnect subnet: the dataplane takes .1, the host .2.
        subnet: Ipv4Net,
        /// Prefixes the host reaches through the dataplane.
        host_routes: Vec<Ipv4Net>,
        mtu: u16,
    },
    /// The node's uplink (AF_PACKET or DPDK), with the node's address on it.
    Uplink {
        device: UplinkDevice,
        /// The namespace the interface is in (the host's).
        netns: PathBuf,
        address: Ipv4Net,
        /// Default route via this gateway on the uplink's subnet.
        gateway: Option<Ipv4Addr>,
        mtu: u16,
    },
    /// Source NAT of inside traffic leaving by the uplink, to the node's address.
    Snat {
        external: Ipv4Addr,
        /// Sources translated: the node's pod and host subnets.
        inside: Vec<Ipv4Net>,
        /// Destinations never translated: the cluster's subnets and every node.
        exempt: Vec<Ipv4Net>,
    },
    /// This node's VXLAN endpoint.
    Vxlan(VxlanConfig),
    /// A tunnel to another node (index: that node's ID).
    Tunnel { index: u16, tunnel: Tunnel },
    /// Routes to what another node holds (its pod and host subnets).
    RemoteRoutes {
        prefixes: Vec<Ipv4Net>,
        via: RemoteVia,
    },
}

/// How another node is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteVia {
    /// Through the VXLAN tunnel with this index.
    Tunnel(u16),
    /// Routed on the uplink to the node's address (`nooverlay`).
    Uplink(Ipv4Addr),
}

impl Item for NodeItem {
    fn dependencies(&self) -> Vec<Key> {
        match self {
            NodeItem::PodRoute { interface, .. } => vec![interface.clone()],
            NodeItem::Tunnel { .. } => vec![VXLAN_KEY.to_string()],
            NodeItem::RemoteRoutes {
                via: RemoteVia::Tunnel(t),
                ..
            } => vec![tunnel_key(*t)],
            NodeItem::RemoteRoutes {
                via: RemoteVia::Uplink(_),
                ..
            }
            | NodeItem::Snat { .. } => vec![UPLINK_KEY.to_string()],
            _ => Vec::new(),
        }
    }
}

pub fn pod_interface_key(container_id: &str, ifname: &str) -> Key {
    format!("pod/{container_id}/{ifname}/interface")
}

pub fn pod_route_key(container_id: &str, ifname: &str) -> Key {
    format!("pod/{container_id}/{ifname}/route")
}

pub const HOST_INTERCONNECT_KEY: &str = "node/host-interconnect";
pub const UPLINK_KEY: &str = "node/uplink";
pub const VXLAN_KEY: &str = "node/vxlan";
pub const SNAT_KEY: &str = "node/snat";

/// The default route, on the uplink when it has a gateway.
const DEFAULT_ROUTE: Ipv4Net = Ipv4Net {
    addr: Ipv4Addr::UNSPECIFIED,
    len: 0,
};

pub fn tunnel_key(index: u16) -> Key {
    format!("remote/{index}/tunnel")
}

pub fn remote_routes_key(index: u16) -> Key {
    format!("remote/{index}/routes")
}

/// What an applied interface item holds in the dataplane.
#[derive(Clone, Copy, Debug)]
pub struct PortInfo {
    pub port: u16,
    /// The MAC of the device on the far side (the pod's own MAC).
    pub peer_mac: MacAddr,
}

pub struct NodeApplier {
    host: Box<dyn NodeHost>,
    worker: DataplaneWorker,
    tables: TableHandle,
    ports: BTreeMap<Key, PortInfo>,
}

impl NodeApplier {
    pub fn new(host: Box<dyn NodeHost>, worker: DataplaneWorker, tables: TableHandle) -> Self {
        NodeApplier {
            host,
            worker,
            tables,
            ports: BTreeMap::new(),
        }
    }

    /// The node's operating system, as the agent sees it.
    pub fn host(&self) -> &dyn NodeHost {
        self.host.as_ref()
    }

    pub fn port(&self, key: &str) -> Option<PortInfo> {
        self.ports.get(key).copied()
    }

    pub fn worker(&self) -> &DataplaneWorker {
        &self.worker
    }

    pub fn tables(&self) -> &TableHandle {
        &self.tables
    }

    fn create_pod_interface(&mut self, key: &str, p: &PodAttachment) -> Result<(), WiringError> {
        let dp_mac = p.gateway_mac();
        let spec = PodInterface {
            name: p.ifname.clone(),
            address: p.ip,
            gateway: p.gateway,
            gateway_mac: Some(dp_mac),
            mtu: p.mtu,
        };
        let device = self.host.create_pod_interface(&p.netns, &spec, dp_mac)?;
        let iface = Interface {
            mtu: p.mtu,
            ..Interface::new(0, &p.port_name(), dp_mac)
        }
        .with_address(Ipv4Net::new(p.gateway, 32));
        if let Err(e) = self.attach(key, device, iface, |_| Vec::new()) {
            let _ = self.host.delete_interface(&p.netns, &p.ifname);
            return Err(e);
        }
        Ok(())
    }

    /// Adds the device's port to the engine and commits its interface (the port index
    /// filled in) with `more` changes that need the index; all or nothing.
    fn attach(
        &mut self,
        key: &str,
        device: HostDevice,
        mut iface: Interface,
        more: impl FnOnce(u16) -> Vec<TableChange>,
    ) -> Result<u16, WiringError> {
        let HostDevice { port, peer_mac } = device;
        let port = self.worker.add_port(port)?;
        iface.port = port;
        let mut changes = vec![TableChange::SetInterface(iface)];
        changes.extend(more(port));
        if let Err(e) = self.tables.commit(&changes) {
            let _ = self.worker.remove_port(port);
            return Err(e.into());
        }
        self.ports
            .insert(key.to_string(), PortInfo { port, peer_mac });
        Ok(port)
    }

    /// Takes the interface's port out of the tables and the engine.
    fn release_port(&mut self, key: &str) -> Result<(), WiringError> {
        if let Some(info) = self.ports.get(key).copied() {
            let has_interface = self.tables.snapshot().interface(info.port).is_some();
            if has_interface {
                self.tables
                    .commit(&[TableChange::RemoveInterface { port: info.port }])?;
            }
            self.worker.remove_port(info.port)?;
            self.ports.remove(key);
        }
        Ok(())
    }

    fn delete_pod_interface(&mut self, key: &str, p: &PodAttachment) -> Result<(), WiringError> {
        self.release_port(key)?;
        // A namespace that is gone took the interface with it.
        self.host.delete_interface(&p.netns, &p.ifname)?;
        Ok(())
    }

    fn create_route(&mut self, ip: Ipv4Addr, interface: &str) -> Result<(), WiringError> {
        let info = self
            .port(interface)
            .ok_or_else(|| WiringError::NoInterface(interface.to_string()))?;
        self.tables.commit(&[
            TableChange::AddRoute {
                vrf: 0,
                prefix: Ipv4Net::new(ip, 32),
                target: Adjacency::Via {
                    port: info.port,
                    next_hop: ip,
                },
            },
            TableChange::SetNeighbour {
                port: info.port,
                ip,
                mac: info.peer_mac,
            },
        ])?;
        Ok(())
    }

    fn delete_route(&mut self, ip: Ipv4Addr, interface: &str) -> Result<(), WiringError> {
        let tables = self.tables.snapshot();
        let mut changes = Vec::new();
        if tables.fib(0).and_then(|f| f.get(ip, 32)).is_some() {
            changes.push(TableChange::DelRoute {
                vrf: 0,
                prefix: Ipv4Net::new(ip, 32),
            });
        }
        if let Some(info) = self.port(interface) {
            if tables.neighbours.contains_key(&(info.port, u32::from(ip))) {
                changes.push(TableChange::DelNeighbour {
                    port: info.port,
                    ip,
                });
            }
        }
        self.tables.commit(&changes)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn create_host_interconnect(
        &mut self,
        key: &str,
        name: &str,
        netns: &Path,
        subnet: Ipv4Net,
        host_routes: &[Ipv4Net],
        mtu: u16,
    ) -> Result<(), WiringError> {
        let base = u32::from(subnet.network());
        let (dp_ip, host_ip) = (Ipv4Addr::from(base | 1), Ipv4Addr::from(base | 2));
        let dp_mac = MacAddr::local(u32::from(dp_ip));
        let spec = HostInterconnect {
            name: name.into(),
            address: host_ip,
            prefix_len: subnet.len,
            dataplane: dp_ip,
            routes: host_routes.iter().map(|n| (n.network(), n.len)).collect(),
            mtu,
        };
        let device = self.host.create_host_interconnect(netns, &spec, dp_mac)?;
        let host_mac = device.peer_mac;
        let iface = Interface {
            mtu,
            ..Interface::new(0, name, dp_mac)
        }
        .with_address(Ipv4Net::new(dp_ip, subnet.len));
        if let Err(e) = self.attach(key, device, iface, |port| {
            vec![TableChange::SetNeighbour {
                port,
                ip: host_ip,
                mac: host_mac,
            }]
        }) {
            let _ = self.host.delete_interface(netns, name);
            return Err(e);
        }
        Ok(())
    }

    fn create_uplink(
        &mut self,
        key: &str,
        device: &UplinkDevice,
        netns: &Path,
        address: Ipv4Net,
        gateway: Option<Ipv4Addr>,
        mtu: u16,
    ) -> Result<(), WiringError> {
        let interface = device.name().to_string();
        let device = self.host.open_uplink(netns, device, mtu)?;
        let iface = Interface {
            mtu,
            ..Interface::new(0, &interface, device.peer_mac)
        }
        .with_address(address);
        self.attach(key, device, iface, |port| {
            gateway
                .map(|gw| TableChange::AddRoute {
                    vrf: 0,
                    prefix: DEFAULT_ROUTE,
                    target: Adjacency::Via { port, next_hop: gw },
                })
                .into_iter()
                .collect()
        })?;
        Ok(())
    }

    fn delete_uplink(&mut self, key: &str) -> Result<(), WiringError> {
        let has_default = self
            .tables
            .snapshot()
            .fib(0)
            .and_then(|f| f.get(DEFAULT_ROUTE.addr, 0))
            .is_some();
        if has_default {
            self.tables.commit(&[TableChange::DelRoute {
                vrf: 0,
                prefix: DEFAULT_ROUTE,
            }])?;
        }
        self.release_port(key)
    }

    fn remote_target(&self, via: &RemoteVia) -> Result<Adjacency, WiringError> {
        Ok(match via {
            RemoteVia::Tunnel(t) => Adjacency::Tunnel { tunnel: *t },
            RemoteVia::Uplink(next_hop) => {
                let info = self
                    .port(UPLINK_KEY)
                    .ok_or_else(|| WiringError::NoInterface(UPLINK_KEY.into()))?;
                Adjacency::Via {
                    port: info.port,
                    next_hop: *next_hop,
                }
            }
        })
    }

    /// Whether an applied item is still there (the periodic resync asks, and forgets
    /// what is gone so the next round re-creates it).
    pub fn still_there(&self, key: &str, item: &NodeItem) -> bool {
        match item {
            NodeItem::PodInterface(p) => {
                self.ports.contains_key(key)
                    && matches!(
                        self.host.inspect_interface(&p.netns, &p.ifname),
                        Ok(Some(_))
                    )
            }
            NodeItem::PodRoute { ip, .. } => self
                .tables
                .snapshot()
                .fib(0)
                .and_then(|f| f.get(*ip, 32))
                .is_some(),
            NodeItem::HostInterconnect { .. } | NodeItem::Uplink { .. } => {
                self.ports.contains_key(key)
            }
            // Table-only items: the tables change only through this applier.
            NodeItem::Vxlan(_)
            | NodeItem::Tunnel { .. }
            | NodeItem::RemoteRoutes { .. }
            | NodeItem::Snat { .. } => true,
        }
    }
}

/// The agent's own namespace, the node's host stack (`/proc/self` names the process's
/// main thread, which never changes namespace).
pub const OWN_NETNS: &str = "/proc/self/ns/net";

impl Applier<NodeItem> for NodeApplier {
    type Error = WiringError;

    fn create(&mut self, key: &str, item: &NodeItem) -> Result<(), WiringError> {
        match item {
            NodeItem::PodInterface(p) => self.create_pod_interface(key, p),
            NodeItem::PodRoute { ip, interface } => self.create_route(*ip, interface),
            NodeItem::HostInterconnect {
                name,
                netns,
                subnet,
                host_routes,
                mtu,
            } => self.create_host_interconnect(key, name, netns, *subnet, host_routes, *mtu),
            NodeItem::Uplink {
                device,
                netns,
                address,
                gateway,
                mtu,
            } => self.create_uplink(key, device, netns, *address, *gateway, *mtu),
            NodeItem::Snat {
                external,
                inside,
                exempt,
            } => {
                let uplink = self
                    .port(UPLINK_KEY)
                    .ok_or_else(|| WiringError::NoInterface(UPLINK_KEY.into()))?;
                self.tables.commit(&[TableChange::SetSnat(Some(
                    contiv_dataplane::SnatConfig {
                        uplink: uplink.port,
                        external: *external,
                        inside: inside.clone(),
                        exempt: exempt.clone(),
                    },
                ))])?;
                Ok(())
            }
            NodeItem::Vxlan(cfg) => {
                self.tables.commit(&[TableChange::SetVxlan(Some(*cfg))])?;
                Ok(())
            }
            NodeItem::Tunnel { index, tunnel } => {
                self.tables.commit(&[TableChange::SetTunnel {
                    index: *index,
                    tunnel: *tunnel,
                }])?;
                Ok(())
            }
            NodeItem::RemoteRoutes { prefixes, via } => {
                let target = self.remote_target(via)?;
                let changes: Vec<TableChange> = prefixes
                    .iter()
                    .map(|p| TableChange::AddRoute {
                        vrf: 0,
                        prefix: *p,
                        target,
                    })
                    .collect();
                self.tables.commit(&changes)?;
                Ok(())
            }
        }
    }

    fn delete(&mut self, key: &str, item: &NodeItem) -> Result<(), WiringError> {
        match item {
            NodeItem::PodInterface(p) => self.delete_pod_interface(key, p),
            NodeItem::PodRoute { ip, interface } => self.delete_route(*ip, interface),
            NodeItem::HostInterconnect { name, netns, .. } => {
                self.release_port(key)?;
                self.host.delete_interface(netns, name)?;
                Ok(())
            }
            NodeItem::Uplink { .. } => self.delete_uplink(key),
            NodeItem::Snat { .. } => {
                self.tables.commit(&[TableChange::SetSnat(None)])?;
                Ok(())
            }
            NodeItem::Vxlan(_) => {
                self.tables.commit(&[TableChange::SetVxlan(None)])?;
                Ok(())
            }
            NodeItem::Tunnel { index, .. } => {
                let exists = self
                    .tables
                    .snapshot()
                    .tunnels
                    .get(usize::from(*index))
                    .is_some_and(Option::is_some);
                if exists {
                    self.tables
                        .commit(&[TableChange::DelTunnel { index: *index }])?;
                }
                Ok(())
            }
            NodeItem::RemoteRoutes { prefixes, .. } => {
                let tables = self.tables.snapshot();
                let changes: Vec<TableChange> = prefixes
                    .iter()
                    .filter(|p| tables.fib(0).and_then(|f| f.get(p.addr, p.len)).is_some())
                    .map(|p| TableChange::DelRoute { vrf: 0, prefix: *p })
                    .collect();
                self.tables.commit(&changes)?;
                Ok(())
            }
        }
    }
}
