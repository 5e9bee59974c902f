//! A simulated pod: a smoltcp TCP/IP stack on the namespace's end of its interface. It
//! answers ping (smoltcp's own echo replies), echoes UDP on port 7, serves one-line
//! requests over TCP on port 80, and runs the probes the checks send (UDP, ping, TCP).
//!
//! The stack reads its configuration from the namespace as the agent left it (address,
//! gateway, MTU), as a real pod's kernel does. smoltcp learns a neighbour only from an
//! on-link source, where Linux takes the gateway as on-link through the pod's route; so
//! the stack also holds the gateway's /31 (whose other address, the subnet's network
//! address, no pod ever has) to put the gateway on-link.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::path::Path;

use contiv_hw::{BufferPool, PacketVec, Port, Timestamp};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{ChecksumCapabilities, Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, IpEndpoint,
    Ipv4Cidr,
};

use super::hosts::lock;
use super::node_host::{Namespaces, PortSlot};

pub const UDP_ECHO_PORT: u16 = 7;
pub const TCP_SERVICE_PORT: u16 = 80;
/// Datagrams to this port are counted and dropped (RFC 863's discard).
pub const UDP_DISCARD_PORT: u16 = 9;
const PROBE_PORT: u16 = 40_000;
const TCP_CLIENT_PORTS: u16 = 41_000;
/// Frames a pod takes from its wire per poll.
const BURST: usize = 64;
const TCP_SERVERS: usize = 2;

/// Frames between the wire and smoltcp.
struct Frames {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
    mtu: usize,
}

struct FrameRx(Vec<u8>);
struct FrameTx<'a>(&'a mut Vec<Vec<u8>>);

impl RxToken for FrameRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for FrameTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let r = f(&mut frame);
        self.0.push(frame);
        r
    }
}

impl Device for Frames {
    type RxToken<'a> = FrameRx;
    type TxToken<'a> = FrameTx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(FrameRx, FrameTx<'_>)> {
        let frame = self.rx.pop_front()?;
        Some((FrameRx(frame), FrameTx(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<FrameTx<'_>> {
        Some(FrameTx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + 14;
        caps
    }
}

/// What a pod counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub udp_echoed: u64,
    pub udp_discarded: u64,
    pub tcp_served: u64,
}

struct TcpClient {
    handle: SocketHandle,
    token: u64,
    sent: bool,
    reply: Vec<u8>,
}

pub struct SimPod {
    pub name: String,
    pub ip: Ipv4Addr,
    port: PortSlot,
    /// Set when the driver gave the pod work (a probe) since its last poll.
    kicked: bool,
    iface: Interface,
    frames: Frames,
    sockets: SocketSet<'static>,
    udp_echo: SocketHandle,
    discard: SocketHandle,
    tcp_servers: Vec<SocketHandle>,
    probe: SocketHandle,
    icmp: SocketHandle,
    icmp_ident: u16,
    tcp_clients: Vec<TcpClient>,
    next_tcp_port: u16,
    udp_answers: BTreeSet<u64>,
    ping_answers: BTreeSet<(Ipv4Addr, u16)>,
    tcp_answers: BTreeMap<u64, String>,
    pub stats: PodStats,
    rx_buf: PacketVec,
    tx_buf: PacketVec,
}

fn udp_socket(frames: usize) -> udp::Socket<'static> {
    udp::Socket::new(
        udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; frames],
            vec![0; frames * 256],
        ),
        udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; frames],
            vec![0; frames * 256],
        ),
    )
}

fn tcp_socket() -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 4096]),
        tcp::SocketBuffer::new(vec![0; 4096]),
    )
}

fn smol_time(now: Timestamp) -> Instant {
    Instant::from_micros(i64::try_from(now.nanos() / 1000).unwrap_or(i64::MAX))
}

impl SimPod {
    /// The stack of the pod whose interface `ifname` the agent configured in `netns`;
    /// `None` while there is no such interface.
    pub fn attach(
        name: &str,
        namespaces: &Namespaces,
        netns: &Path,
        ifname: &str,
        seed: u64,
        now: Timestamp,
    ) -> Option<SimPod> {
        let all = namespaces.lock();
        let i = all.get(netns)?.interfaces.get(ifname)?;
        let (ip, gw, mac, mtu, port) = (
            i.config.address,
            i.config.gateway,
            i.mac,
            usize::from(i.config.mtu),
            i.port.clone(),
        );
        drop(all);
        let mut frames = Frames {
            rx: VecDeque::new(),
            tx: Vec::new(),
            mtu,
        };
        let mut cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac.0)));
        cfg.random_seed = seed;
        let mut iface = Interface::new(cfg, &mut frames, smol_time(now));
        let gw_net = Ipv4Addr::from(u32::from(gw) & !1);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::Ipv4(Ipv4Cidr::new(ip, 32)));
            let _ = a.push(IpCidr::Ipv4(Ipv4Cidr::new(gw_net, 31)));
        });
        let _ = iface.routes_mut().add_default_ipv4_route(gw);
        let mut sockets = SocketSet::new(Vec::new());
        let mut echo = udp_socket(16);
        let _ = echo.bind(UDP_ECHO_PORT);
        let udp_echo = sockets.add(echo);
        let mut discard = udp_socket(64);
        let _ = discard.bind(UDP_DISCARD_PORT);
        let discard = sockets.add(discard);
        let mut probe = udp_socket(64);
        let _ = probe.bind(PROBE_PORT);
        let probe = sockets.add(probe);
        let tcp_servers = (0..TCP_SERVERS)
            .map(|_| {
                let mut s = tcp_socket();
                let _ = s.listen(TCP_SERVICE_PORT);
                sockets.add(s)
            })
            .collect();
        let icmp_ident = (seed & 0xffff) as u16;
        let mut ping = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 32], vec![0; 32 * 128]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 32], vec![0; 32 * 128]),
        );
        let _ = ping.bind(icmp::Endpoint::Ident(icmp_ident));
        let icmp = sockets.add(ping);
        Some(SimPod {
            name: name.into(),
            ip,
            port,
            kicked: true,
            iface,
            frames,
            sockets,
            udp_echo,
            discard,
            tcp_servers,
            probe,
            icmp,
            icmp_ident,
            tcp_clients: Vec::new(),
            next_tcp_port: TCP_CLIENT_PORTS,
            udp_answers: BTreeSet::new(),
            ping_answers: BTreeSet::new(),
            tcp_answers: BTreeMap::new(),
            stats: PodStats::default(),
            rx_buf: PacketVec::with_capacity(BURST),
            tx_buf: PacketVec::with_capacity(BURST),
        })
    }

    /// Whether the pod has anything to do at `now`: frames waiting on its wire, a timer
    /// of its stack due, or work the driver gave it. Idle pods are not polled.
    pub fn wants_poll(&mut self, now: Timestamp) -> bool {
        let t = smol_time(now);
        self.kicked
            || lock(&self.port).rx_pending() > 0
            || self
                .iface
                .poll_at(t, &self.sockets)
                .is_some_and(|at| at <= t)
    }

    /// Moves frames between the wire and the stack and runs the pod's servers and
    /// clients; returns whether anything happened.
    pub fn poll(&mut self, pool: &mut BufferPool, now: Timestamp) -> bool {
        self.kicked = false;
        let slot = self.port.clone();
        let mut port = lock(&slot);
        port.rx_burst(pool, &mut self.rx_buf, BURST, now);
        let mut busy = !self.rx_buf.is_empty();
        for p in self.rx_buf.drain(..) {
            self.frames.rx.push_back(p.data().to_vec());
            pool.free(p);
            self.stats.rx_frames += 1;
        }
        let t = smol_time(now);
        let mut progressed = self.iface.poll(t, &mut self.frames, &mut self.sockets)
            == smoltcp::iface::PollResult::SocketStateChanged;
        progressed |= self.serve();
        if progressed {
            self.iface.poll(t, &mut self.frames, &mut self.sockets);
        }
        busy |= progressed || !self.frames.tx.is_empty();
        for f in self.frames.tx.drain(..) {
            if let Some(mut b) = pool.alloc() {
                if b.fill(&f) {
                    self.tx_buf.push(b);
                } else {
                    pool.free(b);
                }
            }
        }
        self.stats.tx_frames += self.tx_buf.len() as u64;
        if !self.tx_buf.is_empty() {
            port.tx_burst(&mut self.tx_buf, pool, now);
        }
        busy
    }

    fn serve(&mut self) -> bool {
        let mut did = false;
        let echo = self.sockets.get_mut::<udp::Socket>(self.udp_echo);
        let mut buf = [0u8; 512];
        while let Ok((n, meta)) = echo.recv_slice(&mut buf) {
            if echo.send_slice(&buf[..n], meta.endpoint).is_ok() {
                self.stats.udp_echoed += 1;
            }
            did = true;
        }
        let discard = self.sockets.get_mut::<udp::Socket>(self.discard);
        while discard.recv_slice(&mut buf).is_ok() {
            self.stats.udp_discarded += 1;
            did = true;
        }
        let probe = self.sockets.get_mut::<udp::Socket>(self.probe);
        while let Ok((n, _)) = probe.recv_slice(&mut buf) {
            if n >= 8 {
                let mut t = [0u8; 8];
                t.copy_from_slice(&buf[..8]);
                self.udp_answers.insert(u64::from_le_bytes(t));
            }
            did = true;
        }
        let icmp = self.sockets.get_mut::<icmp::Socket>(self.icmp);
        while let Ok((payload, from)) = icmp.recv() {
            if let (Ok(packet), IpAddress::Ipv4(from)) = (Icmpv4Packet::new_checked(payload), from)
            {
                if let Ok(Icmpv4Repr::EchoReply { ident, seq_no, .. }) =
                    Icmpv4Repr::parse(&packet, &ChecksumCapabilities::default())
                {
                    if ident == self.icmp_ident {
                        self.ping_answers.insert((from, seq_no));
                    }
                }
            }
            did = true;
        }
        for h in self.tcp_servers.clone() {
            did |= self.serve_tcp(h);
        }
        for c in &mut self.tcp_clients {
            let s = self.sockets.get_mut::<tcp::Socket>(c.handle);
            if !c.sent && s.can_send() {
                let _ = s.send_slice(format!("{}\n", c.token).as_bytes());
                c.sent = true;
                did = true;
            }
            while s.can_recv() {
                let _ = s.recv(|d| {
                    c.reply.extend_from_slice(d);
                    (d.len(), ())
                });
                did = true;
            }
            if c.reply.ends_with(b"\n") {
                s.close();
            }
        }
        let sockets = &mut self.sockets;
        let answers = &mut self.tcp_answers;
        self.tcp_clients.retain(|c| {
            let s = sockets.get_mut::<tcp::Socket>(c.handle);
            let done = c.reply.ends_with(b"\n") || !s.is_open();
            if done {
                if c.reply.ends_with(b"\n") {
                    let text = String::from_utf8_lossy(&c.reply).trim_end().to_string();
                    answers.insert(c.token, text);
                }
                s.abort();
                sockets.remove(c.handle);
            }
            !done
        });
        did
    }

    /// One request line in, one answer line out (`<pod> <line>`), then close.
    fn serve_tcp(&mut self, h: SocketHandle) -> bool {
        let name = self.name.clone();
        let s = self.sockets.get_mut::<tcp::Socket>(h);
        let mut did = false;
        if s.can_recv() {
            let mut line = Vec::new();
            let _ = s.recv(|d| {
                line.extend_from_slice(d);
                (d.len(), ())
            });
            if line.ends_with(b"\n") && s.can_send() {
                let req = String::from_utf8_lossy(&line).trim_end().to_string();
                let _ = s.send_slice(format!("{name} {req}\n").as_bytes());
                s.close();
                self.stats.tcp_served += 1;
            }
            did = true;
        }
        if !s.is_open() {
            let _ = s.listen(TCP_SERVICE_PORT);
            did = true;
        }
        did
    }

    /// Sends a UDP datagram carrying `token` to `to`'s echo port.
    pub fn send_udp_probe(&mut self, to: Ipv4Addr, token: u64) {
        self.kicked = true;
        let s = self.sockets.get_mut::<udp::Socket>(self.probe);
        let _ = s.send_slice(
            &token.to_le_bytes(),
            IpEndpoint::new(IpAddress::Ipv4(to), UDP_ECHO_PORT),
        );
    }

    /// Queues up to `n` 64-byte datagrams to `to`'s discard port, as many as the
    /// socket's buffer takes; returns how many.
    pub fn send_udp_stream(&mut self, to: Ipv4Addr, n: usize) -> usize {
        self.kicked = true;
        let s = self.sockets.get_mut::<udp::Socket>(self.probe);
        let remote = IpEndpoint::new(IpAddress::Ipv4(to), UDP_DISCARD_PORT);
        (0..n)
            .take_while(|_| s.send_slice(&[0u8; 64], remote).is_ok())
            .count()
    }

    pub fn udp_answered(&self, token: u64) -> bool {
        self.udp_answers.contains(&token)
    }

    /// Sends an ICMP echo request with sequence number `seq` to `to`.
    pub fn send_ping(&mut self, to: Ipv4Addr, seq: u16) {
        self.kicked = true;
        let repr = Icmpv4Repr::EchoRequest {
            ident: self.icmp_ident,
            seq_no: seq,
            data: b"contiv-sim",
        };
        let s = self.sockets.get_mut::<icmp::Socket>(self.icmp);
        if let Ok(buf) = s.send(repr.buffer_len(), IpAddress::Ipv4(to)) {
            let mut packet = Icmpv4Packet::new_unchecked(buf);
            repr.emit(&mut packet, &ChecksumCapabilities::default());
        }
    }

    pub fn ping_answered(&self, from: Ipv4Addr, seq: u16) -> bool {
        self.ping_answers.contains(&(from, seq))
    }

    /// Opens a TCP connection to `to`:80 and sends `token` as the request line.
    pub fn tcp_request(&mut self, to: Ipv4Addr, token: u64) {
        self.kicked = true;
        let mut s = tcp_socket();
        let port = self.next_tcp_port;
        self.next_tcp_port = if port == u16::MAX {
            TCP_CLIENT_PORTS
        } else {
            port + 1
        };
        let remote = IpEndpoint::new(IpAddress::Ipv4(to), TCP_SERVICE_PORT);
        if s.connect(self.iface.context(), remote, port).is_ok() {
            let handle = self.sockets.add(s);
            self.tcp_clients.push(TcpClient {
                handle,
                token,
                sent: false,
                reply: Vec::new(),
            });
        }
    }

    /// The answer line to the TCP request `token`, once it came.
    pub fn tcp_answer(&self, token: u64) -> Option<&str> {
        self.tcp_answers.get(&token).map(String::as_str)
    }
}
