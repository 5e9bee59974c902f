//! The agent's configuration file (YAML), with Contiv's defaults for everything in
//! DESIGN.md section 7. Unknown keys are refused, so a misspelt setting is an error at
//! startup rather than a default silently taken.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use contiv_dataplane::Ipv4Net;
use serde::Deserialize;

use crate::host::UplinkDevice;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("{path}: {field}: {reason}")]
    Invalid {
        path: String,
        field: &'static str,
        reason: String,
    },
}

fn default_prefix() -> String {
    "/contiv/".into()
}
fn default_store_timeout_ms() -> u64 {
    5_000
}
fn default_socket() -> PathBuf {
    PathBuf::from(contiv_cni::spec::DEFAULT_SOCKET)
}
fn default_http() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9999))
}
fn default_mtu() -> u16 {
    1450
}
fn default_vni() -> u32 {
    10
}
fn default_true() -> bool {
    true
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StoreConfig {
    /// etcd endpoints (`http://host:port`).
    pub endpoints: Vec<String>,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Bound on one store request.
    #[serde(default = "default_store_timeout_ms")]
    pub timeout_ms: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IpamSettings {
    #[serde(rename = "podSubnetCIDR")]
    pub pod_subnet_cidr: Ipv4Net,
    pub pod_subnet_one_node_prefix_len: u8,
    #[serde(rename = "vppHostSubnetCIDR")]
    pub vpp_host_subnet_cidr: Ipv4Net,
    pub vpp_host_subnet_one_node_prefix_len: u8,
    #[serde(rename = "nodeInterconnectCIDR")]
    pub node_interconnect_cidr: Ipv4Net,
    #[serde(rename = "vxlanCIDR")]
    pub vxlan_cidr: Ipv4Net,
    #[serde(rename = "serviceCIDR")]
    pub service_cidr: Ipv4Net,
}

impl Default for IpamSettings {
    fn default() -> Self {
        let net = |a: [u8; 4], len| Ipv4Net::new(Ipv4Addr::from(a), len);
        IpamSettings {
            pod_subnet_cidr: net([10, 1, 0, 0], 16),
            pod_subnet_one_node_prefix_len: 24,
            vpp_host_subnet_cidr: net([172, 30, 0, 0], 16),
            vpp_host_subnet_one_node_prefix_len: 24,
            node_interconnect_cidr: net([192, 168, 16, 0], 24),
            vxlan_cidr: net([192, 168, 30, 0], 24),
            service_cidr: net([10, 96, 0, 0], 12),
        }
    }
}

impl IpamSettings {
    /// The highest node ID the pod subnet has room for.
    pub fn max_node_id(&self) -> u32 {
        let bits = self
            .pod_subnet_one_node_prefix_len
            .saturating_sub(self.pod_subnet_cidr.len);
        ((1u64 << bits.min(31)) - 1) as u32
    }

    /// The `id`-th block of `one_node_len` inside `cidr`.
    fn nth(cidr: Ipv4Net, one_node_len: u8, id: u32) -> Ipv4Net {
        let base = u32::from(cidr.network());
        let shift = 32 - u32::from(one_node_len);
        Ipv4Net::new(Ipv4Addr::from(base | (id << shift.min(31))), one_node_len)
    }

    /// The pod subnet of node `id` (10.1.N.0/24 by default).
    pub fn node_pod_subnet(&self, id: u32) -> Ipv4Net {
        Self::nth(
            self.pod_subnet_cidr,
            self.pod_subnet_one_node_prefix_len,
            id,
        )
    }

    /// The host interconnect subnet of node `id` (172.30.N.0/24 by default).
    pub fn node_host_subnet(&self, id: u32) -> Ipv4Net {
        Self::nth(
            self.vpp_host_subnet_cidr,
            self.vpp_host_subnet_one_node_prefix_len,
            id,
        )
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NodeToNodeTransport {
    #[default]
    Vxlan,
    Nooverlay,
}

/// The node's link to the other nodes.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UplinkConfig {
    /// An interface taken with AF_PACKET.
    pub af_packet: Option<String>,
    /// A DPDK device (PCI address or vdev string, e.g. `net_af_packet0,iface=eth0`);
    /// needs the `dpdk` build.
    pub dpdk: Option<String>,
    /// EAL arguments for the DPDK uplink. Default (`hw::dpdk::EalConfig::for_device`):
    /// hugepages, one lcore, the device allowed when it is a PCI address.
    #[serde(default)]
    pub dpdk_eal: Option<Vec<String>>,
    /// The default gateway on the uplink's subnet, for traffic to outside the cluster
    /// (none: only the uplink's own subnet is reached).
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
}

impl UplinkConfig {
    /// The uplink device, if any (validation refuses both kinds at once).
    pub fn device(&self) -> Option<UplinkDevice> {
        if let Some(interface) = &self.af_packet {
            return Some(UplinkDevice::AfPacket(interface.clone()));
        }
        let devargs = self.dpdk.clone()?;
        let eal_args = self.dpdk_eal.clone();
        Some(UplinkDevice::Dpdk { devargs, eal_args })
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentConfig {
    /// This node's name, as Kubernetes knows it.
    pub node_name: String,
    pub store: StoreConfig,
    #[serde(default)]
    pub ipam: IpamSettings,
    #[serde(default)]
    pub node_to_node_transport: NodeToNodeTransport,
    #[serde(default = "default_vni", rename = "vxlanVNI")]
    pub vxlan_vni: u32,
    #[serde(default = "default_mtu", rename = "podMTU")]
    pub pod_mtu: u16,
    #[serde(default)]
    pub uplink: UplinkConfig,
    /// Source-NAT pods' traffic to the outside to the node address (Contiv's
    /// `natExternalTraffic`); traffic within the cluster is never translated.
    #[serde(default = "default_true")]
    pub nat_external_traffic: bool,
    /// Wire the dataplane to the host stack (Contiv's `vpp1` TAP).
    #[serde(default = "default_true")]
    pub host_interconnect: bool,
    /// The host stack's network namespace, for the interconnect and where the uplink
    /// interface is found; the agent's own when absent (production: the agent runs in
    /// the host's namespace).
    #[serde(default)]
    pub host_netns: Option<PathBuf>,
    /// Where the CNI gRPC socket is served.
    #[serde(default = "default_socket")]
    pub cni_socket: PathBuf,
    /// Health, metrics and the state dump.
    #[serde(default = "default_http")]
    pub http_listen: SocketAddr,
}

impl AgentConfig {
    pub fn from_yaml(path: &str, text: &str) -> Result<AgentConfig, ConfigError> {
        let c: AgentConfig = serde_norway::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            reason: e.to_string(),
        })?;
        c.validate(path)?;
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Self::from_yaml(&p, &text)
    }

    fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let bad = |field, reason: String| ConfigError::Invalid {
            path: path.into(),
            field,
            reason,
        };
        if self.node_name.is_empty() {
            return Err(bad("nodeName", "must not be empty".into()));
        }
        if self.store.endpoints.is_empty() {
            return Err(bad("store.endpoints", "needs at least one endpoint".into()));
        }
        let i = &self.ipam;
        if i.pod_subnet_one_node_prefix_len <= i.pod_subnet_cidr.len
            || i.pod_subnet_one_node_prefix_len > 30
        {
            return Err(bad(
                "ipam.podSubnetOneNodePrefixLen",
                format!(
                    "must be longer than the pod subnet's /{} and at most /30",
                    i.pod_subnet_cidr.len
                ),
            ));
        }
        if i.vpp_host_subnet_one_node_prefix_len <= i.vpp_host_subnet_cidr.len
            || i.vpp_host_subnet_one_node_prefix_len > 30
        {
            return Err(bad(
                "ipam.vppHostSubnetOneNodePrefixLen",
                format!(
                    "must be longer than the host subnet's /{} and at most /30",
                    i.vpp_host_subnet_cidr.len
                ),
            ));
        }
        if !(576..=9000).contains(&self.pod_mtu) {
            return Err(bad(
                "podMTU",
                format!("{} is not in 576..9000", self.pod_mtu),
            ));
        }
        if self.vxlan_vni == 0 || self.vxlan_vni >= 1 << 24 {
            return Err(bad(
                "vxlanVNI",
                format!("{} is not in 1..2^24", self.vxlan_vni),
            ));
        }
        if self.uplink.af_packet.is_some() && self.uplink.dpdk.is_some() {
            return Err(bad("uplink", "give afPacket or dpdk, not both".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_contivs() {
        let c = AgentConfig::from_yaml(
            "t",
            "nodeName: n1\nstore:\n  endpoints: [\"http://127.0.0.1:2379\"]\n",
        )
        .unwrap();
        assert_eq!(c.pod_mtu, 1450);
        assert_eq!(c.vxlan_vni, 10);
        assert_eq!(c.store.prefix, "/contiv/");
        assert_eq!(c.ipam.node_pod_subnet(3).to_string(), "10.1.3.0/24");
        assert_eq!(c.ipam.node_host_subnet(3).to_string(), "172.30.3.0/24");
        assert_eq!(c.ipam.max_node_id(), 255);
        assert_eq!(c.node_to_node_transport, NodeToNodeTransport::Vxlan);
        assert!(c.nat_external_traffic);
        assert_eq!(c.uplink.gateway, None);
    }

    #[test]
    fn mistakes_are_named() {
        let base = "nodeName: n1\nstore:\n  endpoints: [\"x\"]\n";
        let e = AgentConfig::from_yaml("t", &format!("{base}podMtu: 1400\n")).unwrap_err();
        assert!(e.to_string().contains("podMtu"), "{e}");
        let e = AgentConfig::from_yaml("t", &format!("{base}podMTU: 100\n")).unwrap_err();
        assert!(e.to_string().contains("podMTU"), "{e}");
        let e = AgentConfig::from_yaml(
            "t",
            &format!("{base}ipam:\n  podSubnetCIDR: 10.1.0.0/16\n  podSubnetOneNodePrefixLen: 8\n  vppHostSubnetCIDR: 172.30.0.0/16\n  vppHostSubnetOneNodePrefixLen: 24\n  nodeInterconnectCIDR: 192.168.16.0/24\n  vxlanCIDR: 192.168.30.0/24\n  serviceCIDR: 10.96.0.0/12\n"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("podSubnetOneNodePrefixLen"), "{e}");
        let e = AgentConfig::from_yaml("t", "nodeName: [").unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }));
        let e =
            AgentConfig::from_yaml("t", &format!("{base}nodeToNodeTransport: carrier-pigeon\n"))
                .unwrap_err();
        assert!(e.to_string().contains("carrier-pigeon"), "{e}");
    }
}
