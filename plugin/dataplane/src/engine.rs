//! One worker: the graph, its ports, and the poll loop that drives them.
//!
//! Run-to-completion: a poll receives a vector from each port, runs it through the graph,
//! and transmits what the graph queued. One engine per worker core; in the simulation the
//! simulator calls [`Engine::poll`] itself, on one thread, with simulated time.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::cache::Cache;
use arc_swap::ArcSwap;
use contiv_hw::{BufferPool, PacketVec, Port, PortStats, Timestamp, VECTOR_SIZE};

use crate::counters::{Counter, InterfaceCounters};
use crate::graph::{Graph, GraphError, GraphNode, NodeId, WorkerState};
use crate::nodes::{ip4_graph_nodes, IcmpErrorConfig, ETHERNET_INPUT};
use crate::tables::{TableHandle, Tables, MAX_PORTS};
use crate::trace::TracedPacket;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("graph has no {0} node")]
    MissingNode(&'static str),
    #[error("an engine has at most {0} ports")]
    TooManyPorts(u16),
}

/// How an engine is built.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub icmp_errors: IcmpErrorConfig,
    /// Packets taken from a port per poll, and so the size of the vectors the graph sees
    /// (at most [`VECTOR_SIZE`]).
    pub rx_burst: usize,
    /// Size and timeouts of the source NAT session table.
    pub nat: crate::nat44::NatConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            icmp_errors: IcmpErrorConfig::default(),
            rx_burst: DEFAULT_RX_BURST,
            nat: crate::nat44::NatConfig::default(),
        }
    }
}

/// The rx burst, and so the largest vector a poll feeds the graph. 128 rather than a
/// whole [`VECTOR_SIZE`]: on DPDK (`ci/dpdk-bench.sh`) a burst's mbufs (header and data
/// lines, and the driver's own) must stay in L1 while every node passes over them, and
/// past 128 they no longer do: 1M routes, 1024 flows forwarded at 18.9 Mpps with bursts
/// of 96 or 128, 16.2 with 160 or 192, 17.1 with 256. On virtual wires, where buffers are
/// recycled hot, 256 is 1.7% faster than 128 (the `rx_burst` bench); the real ports win.
pub const DEFAULT_RX_BURST: usize = 128;

/// One worker of the dataplane.
pub struct Engine {
    graph: Graph,
    input_node: NodeId,
    tables: Cache<Arc<ArcSwap<Tables>>, Arc<Tables>>,
    /// Port slots; a removed port leaves `None` until a new port takes its index, so the
    /// indices the tables use for the other ports never move.
    ports: Vec<Option<Box<dyn Port>>>,
    w: WorkerState,
    rx: PacketVec,
    rx_burst: usize,
    packets_out: u64,
}

impl Engine {
    /// An engine with the standard IPv4 graph.
    pub fn new(
        tables: &TableHandle,
        pool: BufferPool,
        config: &EngineConfig,
    ) -> Result<Engine, EngineError> {
        let mut engine = Self::with_nodes(tables, pool, ip4_graph_nodes(config.icmp_errors))?;
        engine.w.nat = crate::nat44::Nat44Sessions::new(config.nat);
        engine.rx_burst = config.rx_burst.clamp(1, VECTOR_SIZE);
        Ok(engine)
    }

    /// An engine with a graph of your own nodes; it must have an `ethernet-input`.
    pub fn with_nodes(
        tables: &TableHandle,
        pool: BufferPool,
        nodes: Vec<Box<dyn GraphNode>>,
    ) -> Result<Engine, EngineError> {
        let graph = Graph::new(nodes)?;
        let input_node = graph
            .node_id(ETHERNET_INPUT)
            .ok_or(EngineError::MissingNode(ETHERNET_INPUT))?;
        Ok(Engine {
            graph,
            input_node,
            tables: Cache::new(Arc::clone(tables.swap())),
            ports: Vec::new(),
            w: WorkerState::new(pool),
            rx: Vec::with_capacity(VECTOR_SIZE),
            rx_burst: DEFAULT_RX_BURST,
            packets_out: 0,
        })
    }

    /// Adds a port; its index is the `port` the tables use for it. The lowest free index
    /// is reused (pods come and go; the tables have room for [`MAX_PORTS`]).
    pub fn add_port(&mut self, port: Box<dyn Port>) -> Result<u16, EngineError> {
        let offloads = port.tx_offloads();
        if let Some(free) = self.ports.iter().position(Option::is_none) {
            self.ports[free] = Some(port);
            self.w.interfaces[free] = InterfaceCounters::default();
            self.w.port_tx_offloads[free] = offloads;
            return Ok(free as u16);
        }
        if self.ports.len() >= usize::from(MAX_PORTS) {
            return Err(EngineError::TooManyPorts(MAX_PORTS));
        }
        self.ports.push(Some(port));
        self.w.tx.push(Vec::with_capacity(VECTOR_SIZE));
        self.w.port_tx_offloads.push(offloads);
        self.w.interfaces.push(InterfaceCounters::default());
        Ok((self.ports.len() - 1) as u16)
    }

    /// Removes a port and returns it; packets still queued for it go back to the pool.
    /// The control plane removes the port's routes and interface from the tables first;
    /// anything the graph still sends to the empty slot is freed at transmit and counted
    /// as the interface's tx drops.
    pub fn remove_port(&mut self, port: u16) -> Option<Box<dyn Port>> {
        let i = usize::from(port);
        let removed = self.ports.get_mut(i)?.take();
        if removed.is_some() {
            self.w.port_tx_offloads[i] = false;
            let mut queued = std::mem::take(&mut self.w.tx[i]);
            self.w.pool.free_all(&mut queued);
            self.w.tx[i] = queued;
        }
        removed
    }

    pub fn port(&self, port: u16) -> Option<&dyn Port> {
        self.ports.get(usize::from(port))?.as_deref()
    }

    pub fn port_mut(&mut self, port: u16) -> Option<&mut (dyn Port + 'static)> {
        self.ports.get_mut(usize::from(port))?.as_deref_mut()
    }

    /// Ports in use.
    pub fn port_count(&self) -> usize {
        self.ports.iter().filter(|p| p.is_some()).count()
    }

    pub fn pool_mut(&mut self) -> &mut BufferPool {
        &mut self.w.pool
    }

    /// One pass over every port: receive a vector, run it through the graph, transmit.
    /// Returns the number of packets received.
    pub fn poll(&mut self, now: Timestamp) -> usize {
        self.w.now = now;
        let mut total = 0;
        for port in 0..self.ports.len() {
            let Some(p) = self.ports[port].as_mut() else {
                continue;
            };
            let n = p.rx_burst(&mut self.w.pool, &mut self.rx, self.rx_burst, now);
            if n == 0 {
                continue;
            }
            total += n;
            let mut rx = std::mem::take(&mut self.rx);
            self.input_vector(port as u16, &mut rx);
            self.rx = rx;
        }
        if total > 0 {
            self.flush_tx(now);
        }
        total
    }

    /// Runs a vector through the graph as if received on `port`, and transmits the result.
    /// `pkts` is left empty. (Benchmarks and tests inject traffic this way.)
    pub fn input(&mut self, port: u16, pkts: &mut PacketVec, now: Timestamp) {
        self.w.now = now;
        self.input_vector(port, pkts);
        self.flush_tx(now);
    }

    fn input_vector(&mut self, port: u16, pkts: &mut PacketVec) {
        let tables = Arc::clone(self.tables.load());
        let counters = &mut self.w.interfaces[usize::from(port)];
        let now = self.w.now;
        let mut bytes = 0u64;
        for pkt in pkts.iter_mut() {
            bytes += pkt.len() as u64;
            pkt.meta = contiv_hw::PacketMeta {
                rx_port: port,
                trace: self.w.trace.admit(port, now),
                ..Default::default()
            };
        }
        counters.rx_packets += pkts.len() as u64;
        counters.rx_bytes += bytes;
        self.graph.enqueue_vector(self.input_node, pkts);
        self.graph.dispatch(&tables, &mut self.w);
    }

    fn flush_tx(&mut self, now: Timestamp) {
        for (port, queue) in self.w.tx.iter_mut().enumerate() {
            if queue.is_empty() {
                continue;
            }
            let n = queue.len() as u64;
            let bytes: u64 = queue.iter().map(|p| p.len() as u64).sum();
            let Some(p) = self.ports[port].as_mut() else {
                // Removed since the graph queued these: nowhere to send them.
                let n = queue.len() as u64;
                self.w.pool.free_all(queue);
                self.w.interfaces[port].tx_dropped += n;
                continue;
            };
            let sent = p.tx_burst(queue, &mut self.w.pool, now) as u64;
            let c = &mut self.w.interfaces[port];
            c.tx_packets += sent;
            c.tx_bytes += if sent == n { bytes } else { 0 };
            c.tx_dropped += n - sent;
            self.packets_out += n;
        }
    }

    /// Polls until `stop` is set; `clock` gives the time for each pass. One call per
    /// worker thread.
    pub fn run(&mut self, stop: &AtomicBool, clock: &mut dyn FnMut() -> Timestamp) {
        while !stop.load(Ordering::Relaxed) {
            if self.poll(clock()) == 0 {
                std::hint::spin_loop();
            }
        }
    }

    // ---- observation ----------------------------------------------------------------

    pub fn counter(&self, c: Counter) -> u64 {
        self.w.counters.get(c)
    }

    pub fn counters(&self) -> &crate::counters::Counters {
        &self.w.counters
    }

    pub fn interface_counters(&self, port: u16) -> InterfaceCounters {
        self.w
            .interfaces
            .get(usize::from(port))
            .copied()
            .unwrap_or_default()
    }

    pub fn port_stats(&self, port: u16) -> Option<PortStats> {
        self.port(port).map(|p| p.stats())
    }

    /// Packets that entered the graph from any port.
    pub fn packets_received(&self) -> u64 {
        self.w.interfaces.iter().map(|c| c.rx_packets).sum()
    }

    /// Packets the graph handed to ports (sent or refused by the port).
    pub fn packets_transmitted(&self) -> u64 {
        self.packets_out
    }

    /// Starts tracing the next `n` packets.
    pub fn trace_add(&mut self, n: usize) {
        self.w.trace.add(n);
    }

    pub fn trace_clear(&mut self) {
        self.w.trace.clear();
    }

    pub fn traced(&self) -> &[TracedPacket] {
        self.w.trace.packets()
    }

    pub fn show_trace(&self) -> String {
        self.w.trace.show()
    }

    /// This worker's source NAT sessions, sorted.
    pub fn nat_sessions(&self) -> Vec<crate::nat44::SessionInfo> {
        self.w.nat.sessions(self.w.now)
    }

    /// The neighbours this worker learned from ARP.
    pub fn learned_neighbours(&self) -> Vec<(u16, std::net::Ipv4Addr, contiv_hw::MacAddr)> {
        self.w.neighbours.entries()
    }

    /// Non-zero counters, like VPP's `show errors`.
    pub fn show_errors(&self) -> String {
        let mut out = format!("{:>12}  {:<18} {}\n", "count", "node", "reason");
        for (c, n) in self.w.counters.nonzero() {
            let kind = if c.is_drop() { "drop" } else { "" };
            let _ = writeln!(out, "{n:>12}  {:<18} {} {}", c.node(), c.text(), kind);
        }
        out
    }

    /// Calls and packets per node, like VPP's `show runtime`.
    pub fn show_runtime(&self) -> String {
        let mut out = format!(
            "{:<18} {:>10} {:>12} {:>14}\n",
            "node", "calls", "packets", "packets/call"
        );
        for (name, r) in self.graph.runtime() {
            let per = if r.calls > 0 {
                r.packets as f64 / r.calls as f64
            } else {
                0.0
            };
            let _ = writeln!(
                out,
                "{name:<18} {:>10} {:>12} {per:>14.1}",
                r.calls, r.packets
            );
        }
        out
    }

    /// Per-interface counters, the engine's and the port's own.
    pub fn show_interfaces(&self) -> String {
        let mut out = format!(
            "{:<4} {:<12} {:>10} {:>12} {:>10} {:>12} {:>9}  port drops\n",
            "idx", "name", "rx pkts", "rx bytes", "tx pkts", "tx bytes", "tx drops"
        );
        for (i, p) in self.ports.iter().enumerate() {
            let Some(p) = p else { continue };
            let c = self.w.interfaces[i];
            let s = p.stats();
            let drops: Vec<String> = s
                .nonzero_drops()
                .map(|(r, n)| format!("{}={n}", r.name()))
                .collect();
            let _ = writeln!(
                out,
                "{i:<4} {:<12} {:>10} {:>12} {:>10} {:>12} {:>9}  {}",
                p.name(),
                c.rx_packets,
                c.rx_bytes,
                c.tx_packets,
                c.tx_bytes,
                c.tx_dropped,
                drops.join(" ")
            );
        }
        out
    }

    pub fn runtime(&self) -> Vec<(&'static str, crate::graph::NodeRuntime)> {
        self.graph.runtime()
    }
}
