//! A simulated node's operating system for the production agent: namespaces are
//! entries in a table, a pod's interface is one end of a virtual wire (the other end is
//! the dataplane's port), the uplink is the node's port on the simulated fabric.
//!
//! Interfaces outlive the agent, as a persistent TAP does: an agent that restarts and
//! creates a pod's interface again takes the existing one over (a fresh wire, the same
//! name, MAC and addresses), and the pod's stack moves to the new wire.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use contiv_hw::netns::{HostInterconnect, InterfaceState, PodInterface};
use contiv_hw::{virtual_wire, MacAddr, Port, VirtualPort, WireConfig};
use contiv_vswitch::host::{HostDevice, NodeHost, UplinkDevice};
use contiv_vswitch::wiring::WiringError;

/// Frames each direction of a pod's wire holds.
const POD_WIRE_FRAMES: usize = 256;

/// The namespace's end of an interface's wire, shared with the pod's stack so that it
/// reaches its port without a lookup; replaced in place when an agent takes the
/// interface over.
pub type PortSlot = Arc<Mutex<VirtualPort>>;

/// An interface the agent made in a simulated namespace.
pub struct SimInterface {
    pub config: PodInterface,
    pub mac: MacAddr,
    pub port: PortSlot,
}

/// A simulated network namespace.
#[derive(Default)]
pub struct SimNetns {
    pub interfaces: BTreeMap<String, SimInterface>,
}

/// Every simulated namespace of the cluster, by path (`/sim/<node>/<pod>`).
#[derive(Clone, Default)]
pub struct Namespaces(Arc<Mutex<BTreeMap<PathBuf, SimNetns>>>);

impl Namespaces {
    pub fn lock(&self) -> MutexGuard<'_, BTreeMap<PathBuf, SimNetns>> {
        // Simulation state changes only in whole steps: a panic mid-change aborts the run.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes an empty namespace (as the runtime does before CNI ADD); `false` if it
    /// existed.
    pub fn create(&self, path: &Path) -> bool {
        let mut all = self.lock();
        if all.contains_key(path) {
            return false;
        }
        all.insert(path.to_path_buf(), SimNetns::default());
        true
    }

    /// Removes a namespace with its interfaces (the pod's sandbox is gone).
    pub fn remove(&self, path: &Path) -> bool {
        self.lock().remove(path).is_some()
    }

    pub fn exists(&self, path: &Path) -> bool {
        self.lock().contains_key(path)
    }

    /// Interfaces left in namespaces under `prefix` (a node's), as `netns/ifname`.
    pub fn interfaces_under(&self, prefix: &Path) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(p, _)| p.starts_with(prefix))
            .flat_map(|(p, ns)| {
                ns.interfaces
                    .keys()
                    .map(move |i| format!("{}/{i}", p.display()))
            })
            .collect()
    }
}

/// The MAC of a pod's interface: Kubernetes' convention of 0a:58 and the address.
pub fn pod_mac(ip: Ipv4Addr) -> MacAddr {
    let o = ip.octets();
    MacAddr([0x0a, 0x58, o[0], o[1], o[2], o[3]])
}

/// The node's uplink as the fabric hands it over at each boot.
pub type UplinkSlot = Arc<Mutex<Option<Box<dyn Port>>>>;

/// One simulated node's operating system, for the agent's applier.
pub struct SimNodeHost {
    namespaces: Namespaces,
    uplink: UplinkSlot,
}

impl SimNodeHost {
    pub fn new(namespaces: Namespaces, uplink: UplinkSlot) -> Self {
        SimNodeHost { namespaces, uplink }
    }
}

fn no_namespace(netns: &Path) -> WiringError {
    WiringError::Host(format!("no namespace {}", netns.display()))
}

impl NodeHost for SimNodeHost {
    fn netns_exists(&self, netns: &Path) -> bool {
        self.namespaces.exists(netns)
    }

    fn create_pod_interface(
        &mut self,
        netns: &Path,
        pod: &PodInterface,
        dataplane_mac: MacAddr,
    ) -> Result<HostDevice, WiringError> {
        let mut all = self.namespaces.lock();
        let ns = all.get_mut(netns).ok_or_else(|| no_namespace(netns))?;
        let mac = ns
            .interfaces
            .get(&pod.name)
            .map_or_else(|| pod_mac(pod.address), |i| i.mac);
        let (dataplane_end, pod_end, _link) = virtual_wire(
            (&format!("dp-{}", pod.name), dataplane_mac),
            (&pod.name, mac),
            &WireConfig {
                capacity: POD_WIRE_FRAMES,
                mtu: pod.mtu,
            },
        );
        match ns.interfaces.get(&pod.name) {
            // Taken over: the pod's stack keeps its slot and finds the new wire in it.
            Some(old) => *old.port.lock().unwrap_or_else(|p| p.into_inner()) = pod_end,
            None => {
                ns.interfaces.insert(
                    pod.name.clone(),
                    SimInterface {
                        config: pod.clone(),
                        mac,
                        port: Arc::new(Mutex::new(pod_end)),
                    },
                );
            }
        }
        Ok(HostDevice {
            port: Box::new(dataplane_end),
            peer_mac: mac,
        })
    }

    fn create_host_interconnect(
        &mut self,
        _netns: &Path,
        spec: &HostInterconnect,
        _dataplane_mac: MacAddr,
    ) -> Result<HostDevice, WiringError> {
        Err(WiringError::Host(format!(
            "{}: a simulated node has no host stack (set hostInterconnect: false)",
            spec.name
        )))
    }

    fn open_uplink(
        &mut self,
        _netns: &Path,
        device: &UplinkDevice,
        _mtu: u16,
    ) -> Result<HostDevice, WiringError> {
        let interface = device.name();
        let port = self
            .uplink
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| {
                WiringError::Host(format!("{interface}: the uplink is already taken"))
            })?;
        let peer_mac = port.mac();
        Ok(HostDevice { port, peer_mac })
    }

    fn delete_interface(&mut self, netns: &Path, name: &str) -> Result<bool, WiringError> {
        Ok(self
            .namespaces
            .lock()
            .get_mut(netns)
            .is_some_and(|ns| ns.interfaces.remove(name).is_some()))
    }

    fn inspect_interface(
        &self,
        netns: &Path,
        name: &str,
    ) -> Result<Option<InterfaceState>, WiringError> {
        let all = self.namespaces.lock();
        let ns = all.get(netns).ok_or_else(|| no_namespace(netns))?;
        Ok(ns.interfaces.get(name).map(|i| InterfaceState {
            index: 2,
            mac: Some(i.mac),
            mtu: u32::from(i.config.mtu),
            up: true,
            addresses: vec![(i.config.address, 32)],
            routes: vec![(Ipv4Addr::UNSPECIFIED, 0, Some(i.config.gateway))],
            permanent_neighbours: i
                .config
                .gateway_mac
                .map(|m| vec![(i.config.gateway, m)])
                .unwrap_or_default(),
        }))
    }
}
