//! The graph of nodes and the dispatcher that moves vectors through it.
//!
//! A node gets a whole vector of packets and hands each one on to one of its next nodes
//! (by edge index) or drops it with a named reason. The dispatcher runs every node that
//! has packets waiting, in registration order, until no frame holds packets; nodes that
//! loop back (icmp-error feeds ip4-lookup) are served on the next pass. New features
//! (vxlan, nat, acl) are new [`GraphNode`]s with their edges: nothing else changes.

use std::collections::BTreeMap;

use contiv_hw::{BufferPool, PacketBuf, PacketVec, Timestamp, VECTOR_SIZE};
use rustc_hash::FxHashMap;

use crate::counters::{Counter, Counters, InterfaceCounters};
use crate::tables::Tables;
use crate::trace::TraceBuffer;

pub type NodeId = usize;

/// The most times the dispatcher sweeps the graph for one input vector: more means a
/// node loop that would not end, and what is left is dropped and counted.
const MAX_SWEEPS: usize = 8;

/// Neighbours learned from ARP by this worker, and when each unresolved next hop was last
/// asked for. Bounded: when full, nothing new is learned (and that is counted).
#[derive(Debug, Default)]
pub struct NeighbourCache {
    learned: FxHashMap<(u16, u32), contiv_hw::MacAddr>,
    asked: FxHashMap<(u16, u32), Timestamp>,
    limit: usize,
}

impl NeighbourCache {
    pub fn new(limit: usize) -> Self {
        NeighbourCache {
            learned: FxHashMap::default(),
            asked: FxHashMap::default(),
            limit,
        }
    }

    #[inline]
    pub fn get(&self, port: u16, ip: u32) -> Option<contiv_hw::MacAddr> {
        self.learned.get(&(port, ip)).copied()
    }

    /// `false` when the table is full and the entry is new.
    pub fn learn(&mut self, port: u16, ip: u32, mac: contiv_hw::MacAddr) -> bool {
        if self.learned.len() >= self.limit && !self.learned.contains_key(&(port, ip)) {
            return false;
        }
        self.learned.insert((port, ip), mac);
        self.asked.remove(&(port, ip));
        true
    }

    /// Whether an ARP request for `ip` may go out now (at most one per `interval_ns`).
    pub fn may_ask(&mut self, port: u16, ip: u32, now: Timestamp, interval_ns: u64) -> bool {
        match self.asked.get(&(port, ip)) {
            Some(&t) if now.saturating_sub(t) < interval_ns => false,
            _ => {
                if self.asked.len() >= self.limit {
                    self.asked.clear();
                }
                self.asked.insert((port, ip), now);
                true
            }
        }
    }

    pub fn forget_port(&mut self, port: u16) {
        self.learned.retain(|(p, _), _| *p != port);
        self.asked.retain(|(p, _), _| *p != port);
    }

    /// Every learned entry, sorted.
    pub fn entries(&self) -> Vec<(u16, std::net::Ipv4Addr, contiv_hw::MacAddr)> {
        let mut v: Vec<_> = self
            .learned
            .iter()
            .map(|(&(p, ip), &m)| (p, std::net::Ipv4Addr::from(ip), m))
            .collect();
        v.sort_unstable();
        v
    }
}

/// The state of one worker that nodes read and write besides their own.
pub struct WorkerState {
    pub pool: BufferPool,
    pub neighbours: NeighbourCache,
    /// Packets waiting to be transmitted, per port.
    pub tx: Vec<PacketVec>,
    /// Per port: whether frames with offloaded work may leave by it as they are
    /// ([`contiv_hw::Port::tx_offloads`]).
    pub port_tx_offloads: Vec<bool>,
    pub counters: Counters,
    pub interfaces: Vec<InterfaceCounters>,
    pub trace: TraceBuffer,
    pub now: Timestamp,
    /// Source NAT sessions (see [`crate::nat44`]).
    pub nat: crate::nat44::Nat44Sessions,
}

impl WorkerState {
    pub fn new(pool: BufferPool) -> Self {
        WorkerState {
            pool,
            neighbours: NeighbourCache::new(65_536),
            tx: Vec::new(),
            port_tx_offloads: Vec::new(),
            counters: Counters::default(),
            interfaces: Vec::new(),
            trace: TraceBuffer::default(),
            now: Timestamp::ZERO,
            nat: crate::nat44::Nat44Sessions::new(crate::nat44::NatConfig::default()),
        }
    }
}

/// What a node works with: the tables of this vector and the worker's state.
pub struct NodeCx<'a> {
    pub tables: &'a Tables,
    pub w: &'a mut WorkerState,
}

impl NodeCx<'_> {
    /// Ends a packet: counts the reason, records it in the trace, frees the buffer.
    #[inline]
    pub fn drop_packet(&mut self, pkt: PacketBuf, reason: Counter) {
        debug_assert!(reason.is_drop(), "{reason:?} is not a drop counter");
        self.w.counters.add(reason, 1);
        if pkt.meta.trace != 0 {
            self.w.trace.record(
                pkt.meta.trace,
                reason.node(),
                format!("drop: {}", reason.text()),
            );
        }
        self.w.pool.free(pkt);
    }

    #[inline]
    pub fn count(&mut self, c: Counter) {
        self.w.counters.add(c, 1);
    }

    /// Adds a trace line for a traced packet; `note` is only evaluated when traced.
    #[inline]
    pub fn trace(&mut self, pkt: &PacketBuf, node: &'static str, note: impl FnOnce() -> String) {
        if pkt.meta.trace != 0 {
            self.w.trace.record(pkt.meta.trace, node, note());
        }
    }
}

/// A node's decision for one packet, written by the node into [`Next::verdicts`]: the
/// index of a next edge, or [`drop_verdict`] of a counter.
pub type Verdict = u16;

const DROP_BIT: Verdict = 0x8000;

/// The verdict that drops a packet and counts `reason`.
#[inline]
pub fn drop_verdict(reason: Counter) -> Verdict {
    DROP_BIT | reason as Verdict
}

/// Where a node sends packets: its edges, resolved to the frames of the next nodes.
pub struct Next<'a> {
    frames: &'a mut [PacketVec],
    edges: &'a [NodeId],
    verdicts: &'a mut Vec<Verdict>,
}

impl Next<'_> {
    /// Sends one packet on edge `edge` (for nodes that handle packets one by one).
    #[inline]
    pub fn enqueue(&mut self, edge: usize, pkt: PacketBuf) {
        self.frames[self.edges[edge]].push(pkt);
    }

    /// Scratch for one verdict per packet of a vector of `n`.
    #[inline]
    pub fn verdicts(&mut self, n: usize) -> &mut [Verdict] {
        if self.verdicts.len() < n {
            self.verdicts.resize(n, 0);
        }
        &mut self.verdicts[..n]
    }

    /// Moves every packet of `input` where its verdict says. When the whole vector goes
    /// to one next node (the common case) it moves as one block, or is simply swapped in
    /// when that node's frame is empty, instead of packet by packet.
    #[inline]
    pub fn dispatch(&mut self, cx: &mut NodeCx<'_>, input: &mut PacketVec) {
        let n = input.len();
        if n == 0 {
            return;
        }
        let verdicts = &self.verdicts[..n];
        let first = verdicts[0];
        // Or-ing the differences has no early exit, so it runs 16 verdicts per
        // instruction; `all` would compare them one at a time.
        let same = verdicts.iter().fold(0, |acc, &v| acc | (v ^ first)) == 0;
        if first & DROP_BIT == 0 && same {
            let target = &mut self.frames[self.edges[usize::from(first)]];
            if target.is_empty() {
                std::mem::swap(target, input);
            } else {
                target.append(input);
            }
            return;
        }
        for (pkt, &v) in input.drain(..).zip(verdicts) {
            if v & DROP_BIT == 0 {
                self.frames[self.edges[usize::from(v)]].push(pkt);
            } else {
                let reason = Counter::ALL
                    .get(usize::from(v & !DROP_BIT))
                    .copied()
                    .unwrap_or(Counter::GraphLoopLimit);
                cx.drop_packet(pkt, reason);
            }
        }
    }
}

/// One graph node.
pub trait GraphNode: Send {
    fn name(&self) -> &'static str;
    /// The names of the nodes this one feeds; `Next::enqueue` takes an index into this.
    fn next_nodes(&self) -> &'static [&'static str];
    /// Handles every packet of `input`, which must be empty on return.
    fn process(&mut self, cx: &mut NodeCx<'_>, input: &mut PacketVec, next: &mut Next<'_>);
}

/// Per-node dispatch statistics (VPP's `show runtime`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeRuntime {
    pub calls: u64,
    pub packets: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    #[error("node {node} names next node {next}, which is not in the graph")]
    UnknownNext {
        node: &'static str,
        next: &'static str,
    },
    #[error("node {0} is in the graph twice")]
    Duplicate(&'static str),
    #[error("node {0} names itself as a next node")]
    SelfLoop(&'static str),
}

/// The graph: nodes, their resolved edges, and one input frame per node.
pub struct Graph {
    nodes: Vec<Box<dyn GraphNode>>,
    edges: Vec<Vec<NodeId>>,
    frames: Vec<PacketVec>,
    spare: PacketVec,
    verdicts: Vec<Verdict>,
    runtime: Vec<NodeRuntime>,
    by_name: BTreeMap<&'static str, NodeId>,
}

impl Graph {
    /// Builds the graph from its nodes; every edge must name a node in the list.
    pub fn new(nodes: Vec<Box<dyn GraphNode>>) -> Result<Graph, GraphError> {
        let mut by_name = BTreeMap::new();
        for (i, n) in nodes.iter().enumerate() {
            if by_name.insert(n.name(), i).is_some() {
                return Err(GraphError::Duplicate(n.name()));
            }
        }
        let mut edges = Vec::with_capacity(nodes.len());
        for n in &nodes {
            let mut e = Vec::new();
            for &next in n.next_nodes() {
                if next == n.name() {
                    return Err(GraphError::SelfLoop(next));
                }
                let id = *by_name.get(next).ok_or(GraphError::UnknownNext {
                    node: n.name(),
                    next,
                })?;
                e.push(id);
            }
            edges.push(e);
        }
        let count = nodes.len();
        Ok(Graph {
            nodes,
            edges,
            frames: (0..count)
                .map(|_| Vec::with_capacity(2 * VECTOR_SIZE))
                .collect(),
            spare: Vec::with_capacity(2 * VECTOR_SIZE),
            verdicts: vec![0; 2 * VECTOR_SIZE],
            runtime: vec![NodeRuntime::default(); count],
            by_name,
        })
    }

    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.by_name.get(name).copied()
    }

    /// Node names in dispatch order with their statistics.
    pub fn runtime(&self) -> Vec<(&'static str, NodeRuntime)> {
        self.nodes
            .iter()
            .zip(&self.runtime)
            .map(|(n, r)| (n.name(), *r))
            .collect()
    }

    /// Puts a packet in a node's input frame.
    #[inline]
    pub fn enqueue(&mut self, node: NodeId, pkt: PacketBuf) {
        self.frames[node].push(pkt);
    }

    /// Puts a whole vector in a node's input frame (swapped in when the frame is empty),
    /// leaving `pkts` empty.
    #[inline]
    pub fn enqueue_vector(&mut self, node: NodeId, pkts: &mut PacketVec) {
        let frame = &mut self.frames[node];
        if frame.is_empty() {
            std::mem::swap(frame, pkts);
        } else {
            frame.append(pkts);
        }
    }

    /// Runs nodes until every frame is empty.
    pub fn dispatch(&mut self, tables: &Tables, w: &mut WorkerState) {
        for _ in 0..MAX_SWEEPS {
            let mut ran = false;
            for i in 0..self.nodes.len() {
                if self.frames[i].is_empty() {
                    continue;
                }
                ran = true;
                // The input frame is swapped out for an empty spare (both keep their
                // capacity), so the node can write to every other frame meanwhile.
                std::mem::swap(&mut self.frames[i], &mut self.spare);
                let n = self.spare.len() as u64;
                self.runtime[i].calls += 1;
                self.runtime[i].packets += n;
                let mut cx = NodeCx { tables, w };
                let mut next = Next {
                    frames: &mut self.frames,
                    edges: &self.edges[i],
                    verdicts: &mut self.verdicts,
                };
                self.nodes[i].process(&mut cx, &mut self.spare, &mut next);
                debug_assert!(
                    self.spare.is_empty(),
                    "{} left packets",
                    self.nodes[i].name()
                );
                w.pool.free_all(&mut self.spare);
            }
            if !ran {
                return;
            }
        }
        for f in &mut self.frames {
            let n = f.len() as u64;
            if n > 0 {
                w.counters.add(Counter::GraphLoopLimit, n);
                w.pool.free_all(f);
            }
        }
    }
}
