//! What the agent needs of the node's operating system, behind one trait: namespaces,
//! the interfaces it makes in them, and the ports the dataplane gets for them.
//!
//! [`LinuxHost`] is production: TAPs created inside pods' namespaces, rtnetlink, an
//! AF_PACKET socket on the uplink. The simulated cluster (`contiv-sim`) has its own, with
//! virtual NICs and simulated namespaces, so that the same agent and applier run there.

use std::path::Path;

use contiv_hw::netns::{
    configure_host_interconnect, configure_pod_interface, delete_interface, in_netns,
    inspect_interface, HostInterconnect, InterfaceState, NetnsError, PodInterface,
};
use contiv_hw::{AfPacketConfig, AfPacketPort, MacAddr, Port, TapPort};

use crate::wiring::WiringError;

/// The NIC the dataplane reaches other nodes by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UplinkDevice {
    /// A kernel interface, by name, taken with an AF_PACKET socket.
    AfPacket(String),
    /// A DPDK device (`net_af_packet0,iface=eth0`, a PCI address) and the EAL's
    /// arguments (none: the defaults for the device); needs the `dpdk` build.
    Dpdk {
        devargs: String,
        eal_args: Option<Vec<String>>,
    },
}

impl UplinkDevice {
    /// The interface name the dataplane gives the port.
    pub fn name(&self) -> &str {
        match self {
            UplinkDevice::AfPacket(name) => name,
            UplinkDevice::Dpdk { devargs, .. } => devargs.split(',').next().unwrap_or(devargs),
        }
    }
}

/// A device the host made for the dataplane: the dataplane's port on it, and the MAC of
/// the far side (the pod's or the host stack's interface).
pub struct HostDevice {
    pub port: Box<dyn Port>,
    pub peer_mac: MacAddr,
}

/// The node's operating system as the agent uses it. Every method may block briefly
/// (netlink round trips); none may wait on the agent's own event loop.
pub trait NodeHost: Send {
    /// Whether the namespace at `netns` exists (a pod's namespace that is gone took its
    /// interfaces with it).
    fn netns_exists(&self, netns: &Path) -> bool;

    /// Creates (or, if one of that name survived an agent restart, takes over) the pod's
    /// interface `pod.name` in `netns`, configured with the pod's address, default route
    /// and the gateway's static neighbour entry `dataplane_mac`.
    fn create_pod_interface(
        &mut self,
        netns: &Path,
        pod: &PodInterface,
        dataplane_mac: MacAddr,
    ) -> Result<HostDevice, WiringError>;

    /// Creates the interface between the dataplane and the host stack in `netns`.
    fn create_host_interconnect(
        &mut self,
        netns: &Path,
        spec: &HostInterconnect,
        dataplane_mac: MacAddr,
    ) -> Result<HostDevice, WiringError>;

    /// Opens the node's uplink `interface` in `netns` for the dataplane.
    fn open_uplink(
        &mut self,
        netns: &Path,
        device: &UplinkDevice,
        mtu: u16,
    ) -> Result<HostDevice, WiringError>;

    /// Removes interface `name` from `netns`; `Ok(false)` when it (or the namespace) was
    /// already gone.
    fn delete_interface(&mut self, netns: &Path, name: &str) -> Result<bool, WiringError>;

    /// The state of interface `name` in `netns`, as CNI CHECK verifies it.
    fn inspect_interface(
        &self,
        netns: &Path,
        name: &str,
    ) -> Result<Option<InterfaceState>, WiringError>;
}

/// The real node: Linux namespaces, TAPs, rtnetlink and AF_PACKET.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinuxHost;

/// A persistent TAP named `name`, created inside `netns` so it is born there with its
/// final name; an existing one of that name (left by an agent that crashed) is attached
/// to instead, addresses and routes intact.
fn persistent_tap(
    netns: &Path,
    name: &str,
    dataplane_mac: MacAddr,
    mtu: u16,
) -> Result<(TapPort, MacAddr), WiringError> {
    let name = name.to_string();
    let made = in_netns(netns, move || {
        let mut tap = TapPort::create(&name, dataplane_mac, mtu)?;
        tap.set_persistent(true)?;
        // Pod TCP then crosses the engine in 64 KiB super-frames (the engine's pool has
        // large buffers for them; see main.rs).
        tap.enable_offloads()?;
        let mac = tap.device_mac()?;
        Ok::<_, contiv_hw::TapError>((tap, mac))
    })??;
    Ok(made)
}

impl NodeHost for LinuxHost {
    fn netns_exists(&self, netns: &Path) -> bool {
        netns.exists()
    }

    fn create_pod_interface(
        &mut self,
        netns: &Path,
        pod: &PodInterface,
        dataplane_mac: MacAddr,
    ) -> Result<HostDevice, WiringError> {
        let (tap, peer_mac) = persistent_tap(netns, &pod.name, dataplane_mac, pod.mtu)?;
        if let Err(e) = configure_pod_interface(netns, pod) {
            drop(tap);
            let _ = delete_interface(netns, &pod.name);
            return Err(e.into());
        }
        Ok(HostDevice {
            port: Box::new(tap),
            peer_mac,
        })
    }

    fn create_host_interconnect(
        &mut self,
        netns: &Path,
        spec: &HostInterconnect,
        dataplane_mac: MacAddr,
    ) -> Result<HostDevice, WiringError> {
        let (tap, peer_mac) = persistent_tap(netns, &spec.name, dataplane_mac, spec.mtu)?;
        configure_host_interconnect(netns, spec)?;
        Ok(HostDevice {
            port: Box::new(tap),
            peer_mac,
        })
    }

    fn open_uplink(
        &mut self,
        netns: &Path,
        device: &UplinkDevice,
        mtu: u16,
    ) -> Result<HostDevice, WiringError> {
        let interface = match device {
            UplinkDevice::AfPacket(interface) => interface.as_str(),
            UplinkDevice::Dpdk { devargs, eal_args } => {
                return open_dpdk_uplink(netns, devargs, eal_args)
            }
        };
        let mac = inspect_interface(netns, interface)?
            .and_then(|st| st.mac)
            .ok_or_else(|| NetnsError::NoSuchInterface(interface.into()))?;
        // The socket is bound in the interface's namespace and stays there.
        let name = interface.to_string();
        let port = in_netns(netns, move || {
            AfPacketPort::open(&name, mac, mtu, AfPacketConfig::default())
        })??;
        Ok(HostDevice {
            port: Box::new(port),
            peer_mac: mac,
        })
    }

    fn delete_interface(&mut self, netns: &Path, name: &str) -> Result<bool, WiringError> {
        if !netns.exists() {
            return Ok(false);
        }
        match delete_interface(netns, name) {
            Ok(deleted) => Ok(deleted),
            // The namespace went away between the two calls.
            Err(NetnsError::Open { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn inspect_interface(
        &self,
        netns: &Path,
        name: &str,
    ) -> Result<Option<InterfaceState>, WiringError> {
        Ok(inspect_interface(netns, name)?)
    }
}

/// A DPDK uplink: the EAL started with `eal_args` (once per process), the device probed
/// with the calling thread in `netns`, where vdevs that use kernel interfaces
/// (net_af_packet) find them. Frames the engine makes in heap buffers are copied into
/// mbufs on the way out (the port counts them).
#[cfg(feature = "dpdk")]
fn open_dpdk_uplink(
    netns: &Path,
    devargs: &str,
    eal_args: &Option<Vec<String>>,
) -> Result<HostDevice, WiringError> {
    use contiv_hw::dpdk::{DpdkPort, DpdkPortConfig, Eal, EalConfig};
    let config = match eal_args {
        Some(args) => EalConfig { args: args.clone() },
        None => EalConfig::for_device(devargs, "contiv-vswitch"),
    };
    let eal = Eal::init(&config).map_err(|e| WiringError::Host(e.to_string()))?;
    let config = DpdkPortConfig::new(devargs);
    let port = in_netns(netns, move || DpdkPort::open(eal, &config))?
        .map_err(|e| WiringError::Host(e.to_string()))?;
    let peer_mac = port.mac();
    Ok(HostDevice {
        port: Box::new(port),
        peer_mac,
    })
}

#[cfg(not(feature = "dpdk"))]
fn open_dpdk_uplink(
    _netns: &Path,
    devargs: &str,
    _eal_args: &Option<Vec<String>>,
) -> Result<HostDevice, WiringError> {
    Err(WiringError::Host(format!(
        "DPDK device {devargs}: this build has no DPDK support (build with --features dpdk)"
    )))
}
