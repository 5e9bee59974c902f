//! Network namespaces: running code inside one, and configuring a pod's interface there
//! with rtnetlink.
//!
//! A namespace is a property of a thread, so work inside one runs on a thread of its own
//! that enters the namespace and ends with the work. The caller's threads never change
//! namespace.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use rtnetlink::{new_connection, Handle, LinkUnspec, RouteMessageBuilder};

use crate::MacAddr;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot enter network namespace {path}: {source}")]
    Enter {
        path: String,
        source: std::io::Error,
    },
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("no interface {0:?} in the namespace")]
    NoSuchInterface(String),
    #[error("the namespace worker thread failed: {0}")]
    Thread(String),
    #[error("{0}")]
    Command(String),
}

/// Runs `f` on a new thread inside the network namespace at `path` (e.g.
/// `/var/run/netns/pod1` or `/proc/<pid>/ns/net`) and returns its result.
/// Whether this process runs as root (namespaces, TAP devices and AF_PACKET need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn in_netns<T, F>(path: &Path, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns = File::open(path).map_err(|source| NetnsError::Open {
        path: path.display().to_string(),
        source,
    })?;
    let p: PathBuf = path.to_path_buf();
    std::thread::spawn(move || {
        // SAFETY: `setns` only changes the network namespace of the calling thread, which
        // is this thread, created for this purpose and ended with `f`; `ns` is an open
        // namespace file descriptor that stays alive for the call.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(NetnsError::Enter {
                path: p.display().to_string(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(f())
    })
    .join()
    .map_err(|_| NetnsError::Thread("panicked".into()))?
}

/// Runs rtnetlink work with a connection made in the current thread's namespace.
fn with_netlink<T>(
    work: impl AsyncFnOnce(Handle) -> Result<T, NetnsError>,
) -> Result<T, NetnsError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| NetnsError::Thread(e.to_string()))?;
    rt.block_on(async move {
        let (conn, handle, _) = new_connection().map_err(|e| NetnsError::Netlink(e.to_string()))?;
        let task = tokio::spawn(conn);
        let r = work(handle).await;
        task.abort();
        r
    })
}

fn nl(e: rtnetlink::Error) -> NetnsError {
    NetnsError::Netlink(e.to_string())
}

/// Adding what is already there succeeds: configuring an interface twice (an agent
/// re-adopting a pod's interface after a restart) leaves it as configured once.
fn exists_ok(r: Result<(), rtnetlink::Error>) -> Result<(), NetnsError> {
    match r {
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
        other => other.map_err(nl),
    }
}

async fn index_of(handle: &Handle, name: &str) -> Result<u32, NetnsError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(l)) => Ok(l.header.index),
        Ok(None) => Err(NetnsError::NoSuchInterface(name.into())),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
            Err(NetnsError::NoSuchInterface(name.into()))
        }
        Err(e) => Err(nl(e)),
    }
}

/// Sets the interface's MTU, brings it up and gives it an address; returns its index.
async fn bring_up(
    h: &Handle,
    name: &str,
    mtu: u16,
    address: Ipv4Addr,
    prefix_len: u8,
) -> Result<u32, NetnsError> {
    let idx = index_of(h, name).await?;
    h.link()
        .set(
            LinkUnspec::new_with_index(idx)
                .mtu(u32::from(mtu))
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(nl)?;
    exists_ok(
        h.address()
            .add(idx, address.into(), prefix_len)
            .execute()
            .await,
    )?;
    Ok(idx)
}

/// Moves the interface `name` from the current thread's namespace into the one at
/// `target` (file descriptors opened on it, like a TAP's, keep working).
pub fn move_to_netns(name: &str, target: &Path) -> Result<(), NetnsError> {
    let ns = File::open(target).map_err(|source| NetnsError::Open {
        path: target.display().to_string(),
        source,
    })?;
    let name = name.to_string();
    with_netlink(async move |h: Handle| {
        index_of(&h, &name).await?;
        h.link()
            .set(
                LinkUnspec::new_with_name(&name)
                    .setns_by_fd(ns.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .map_err(nl)
    })
}

/// How a pod's interface is set up inside its namespace (Contiv's way: a /32 address, a
/// route to the gateway on the link, a default route via it, and a permanent neighbour
/// entry for the gateway so the pod never has to ask).
#[derive(Clone, Debug)]
pub struct PodInterface {
    pub name: String,
    pub address: Ipv4Addr,
    pub gateway: Ipv4Addr,
    /// The dataplane's MAC on the pod's port; `None` leaves the gateway to ARP.
    pub gateway_mac: Option<MacAddr>,
    pub mtu: u16,
}

/// Configures `cfg` in the namespace at `ns` and brings the interface and loopback up.
pub fn configure_pod_interface(ns: &Path, cfg: &PodInterface) -> Result<(), NetnsError> {
    let cfg = cfg.clone();
    in_netns(ns, move || {
        with_netlink(async move |h: Handle| {
            let idx = bring_up(&h, &cfg.name, cfg.mtu, cfg.address, 32).await?;
            if let Ok(lo) = index_of(&h, "lo").await {
                h.link()
                    .set(LinkUnspec::new_with_index(lo).up().build())
                    .execute()
                    .await
                    .map_err(nl)?;
            }
            let to_gateway = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(cfg.gateway, 32)
                .output_interface(idx)
                .scope(rtnetlink::packet_route::route::RouteScope::Link)
                .build();
            exists_ok(h.route().add(to_gateway).execute().await)?;
            let default = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(cfg.gateway)
                .output_interface(idx)
                .build();
            exists_ok(h.route().add(default).execute().await)?;
            if let Some(mac) = cfg.gateway_mac {
                h.neighbours()
                    .add(idx, cfg.gateway.into())
                    .link_layer_address(&mac.0)
                    .state(rtnetlink::packet_route::neighbour::NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
                    .map_err(nl)?;
            }
            Ok(())
        })
    })?
}

/// The host side of the host interconnect (Contiv's `vpp1`): an address on the
/// interconnect subnet and routes to what lies behind the dataplane (pod subnets).
#[derive(Clone, Debug)]
pub struct HostInterconnect {
    pub name: String,
    /// The host's address on the interconnect (172.30.N.2 by default).
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// The dataplane's address on the interconnect (172.30.N.1).
    pub dataplane: Ipv4Addr,
    /// Prefixes the host reaches through the dataplane (e.g. 10.1.0.0/16).
    pub routes: Vec<(Ipv4Addr, u8)>,
    pub mtu: u16,
}

/// Configures the host side of the interconnect in the namespace at `ns` (the node's
/// host namespace in production).
pub fn configure_host_interconnect(ns: &Path, cfg: &HostInterconnect) -> Result<(), NetnsError> {
    let cfg = cfg.clone();
    in_netns(ns, move || {
        with_netlink(async move |h: Handle| {
            let idx = bring_up(&h, &cfg.name, cfg.mtu, cfg.address, cfg.prefix_len).await?;
            for (dst, len) in &cfg.routes {
                let r = RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(*dst, *len)
                    .gateway(cfg.dataplane)
                    .output_interface(idx)
                    .build();
                exists_ok(h.route().add(r).execute().await)?;
            }
            Ok(())
        })
    })?
}

/// What an interface in a namespace has, as the kernel reports it (CNI CHECK compares
/// this with what ADD configured).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceState {
    pub index: u32,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    pub up: bool,
    /// IPv4 addresses with their prefix lengths.
    pub addresses: Vec<(Ipv4Addr, u8)>,
    /// IPv4 routes of the main table out of this interface: destination, length, gateway.
    pub routes: Vec<(Ipv4Addr, u8, Option<Ipv4Addr>)>,
    /// Permanent IPv4 neighbour entries on this interface.
    pub permanent_neighbours: Vec<(Ipv4Addr, MacAddr)>,
}

/// The state of interface `name` in the namespace at `ns`; `None` when there is no such
/// interface.
pub fn inspect_interface(ns: &Path, name: &str) -> Result<Option<InterfaceState>, NetnsError> {
    use rtnetlink::packet_route::address::AddressAttribute;
    use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};
    use rtnetlink::packet_route::neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourState,
    };
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};

    let name = name.to_string();
    in_netns(ns, move || {
        with_netlink(async move |h: Handle| {
            let mut links = h.link().get().match_name(name.clone()).execute();
            let link = match links.try_next().await {
                Ok(Some(l)) => l,
                Ok(None) => return Ok(None),
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                    return Ok(None)
                }
                Err(e) => return Err(nl(e)),
            };
            let mut st = InterfaceState {
                index: link.header.index,
                up: link.header.flags.contains(LinkFlags::Up),
                ..Default::default()
            };
            for a in &link.attributes {
                match a {
                    LinkAttribute::Address(m) if m.len() == 6 => {
                        st.mac = Some(MacAddr([m[0], m[1], m[2], m[3], m[4], m[5]]))
                    }
                    LinkAttribute::Mtu(m) => st.mtu = *m,
                    _ => {}
                }
            }
            let mut addrs = h.address().get().set_link_index_filter(st.index).execute();
            while let Some(a) = addrs.try_next().await.map_err(nl)? {
                for attr in &a.attributes {
                    if let AddressAttribute::Address(std::net::IpAddr::V4(ip)) = attr {
                        st.addresses.push((*ip, a.header.prefix_len));
                    }
                }
            }
            let mut routes = h
                .route()
                .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
                .execute();
            while let Some(r) = routes.try_next().await.map_err(nl)? {
                if r.header.table != rtnetlink::packet_route::route::RouteHeader::RT_TABLE_MAIN {
                    continue;
                }
                let (mut dst, mut gw, mut oif) = (Ipv4Addr::UNSPECIFIED, None, None);
                for attr in &r.attributes {
                    match attr {
                        RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => gw = Some(*g),
                        RouteAttribute::Oif(i) => oif = Some(*i),
                        _ => {}
                    }
                }
                if oif == Some(st.index) {
                    st.routes
                        .push((dst, r.header.destination_prefix_length, gw));
                }
            }
            let mut neigh = h.neighbours().get().execute();
            while let Some(n) = neigh.try_next().await.map_err(nl)? {
                if n.header.ifindex != st.index || n.header.state != NeighbourState::Permanent {
                    continue;
                }
                let (mut ip, mut mac) = (None, None);
                for attr in &n.attributes {
                    match attr {
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => ip = Some(*d),
                        NeighbourAttribute::LinkLayerAddress(m) if m.len() == 6 => {
                            mac = Some(MacAddr([m[0], m[1], m[2], m[3], m[4], m[5]]))
                        }
                        _ => {}
                    }
                }
                if let (Some(ip), Some(mac)) = (ip, mac) {
                    st.permanent_neighbours.push((ip, mac));
                }
            }
            Ok(Some(st))
        })
    })?
}

/// Deletes interface `name` in the namespace at `ns`; `false` when it was not there.
pub fn delete_interface(ns: &Path, name: &str) -> Result<bool, NetnsError> {
    let name = name.to_string();
    in_netns(ns, move || {
        with_netlink(async move |h: Handle| {
            let idx = match index_of(&h, &name).await {
                Ok(i) => i,
                Err(NetnsError::NoSuchInterface(_)) => return Ok(false),
                Err(e) => return Err(e),
            };
            match h.link().del(idx).execute().await {
                Ok(()) => Ok(true),
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
                    Ok(false)
                }
                Err(e) => Err(nl(e)),
            }
        })
    })?
}

/// A named network namespace made with iproute2 (`ip netns add`), deleted when dropped.
pub struct NamedNetns {
    pub name: String,
}

impl NamedNetns {
    pub fn create(name: &str) -> Result<NamedNetns, NetnsError> {
        let out = std::process::Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .map_err(|e| NetnsError::Command(format!("ip netns add {name}: {e}")))?;
        if !out.status.success() {
            return Err(NetnsError::Command(format!(
                "ip netns add {name}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(NamedNetns { name: name.into() })
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        std::process::Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}
