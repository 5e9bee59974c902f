//! Two simulated hosts and the engine as a router between them:
//!
//! ```text
//!  host a 10.0.1.2 ---- r0 10.0.1.1 [engine] r1 10.0.2.1 ~~~~ host b 10.0.2.2
//!                                              (seeded loss, pcap capture)
//! ```
//!
//! A pings B, streams UDP to B over a lossy link, sends packets that expire, packets to a
//! network nobody routes, and malformed frames; every outcome is checked against the
//! engine's counters and what the hosts saw.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use contiv_dataplane::{
    Counter, Engine, EngineConfig, EngineError, Interface, TableChange, TableError, TableHandle,
};
use contiv_hw::{
    virtual_wire, BufferPool, ImpairedPort, Impairments, MacAddr, PcapError, PcapPort, Port,
    PortDropReason, Timestamp, WireConfig,
};

use crate::host::{HostStats, SimHost};
use crate::TraceHasher;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Tables(#[from] TableError),
    #[error(transparent)]
    Pcap(#[from] PcapError),
    #[error("the simulation did not go quiet within {0} steps")]
    NoQuiescence(u64),
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RouterScenario {
    pub seed: u64,
    /// Loss on the router's link to B (0..1).
    pub loss: f64,
    pub udp_datagrams: u32,
    pub pings: u16,
    /// Where to write a capture of the router's link to B.
    pub pcap: Option<PathBuf>,
}

impl Default for RouterScenario {
    fn default() -> Self {
        RouterScenario {
            seed: 1,
            loss: 0.005,
            udp_datagrams: 10_000,
            pings: 5,
            pcap: None,
        }
    }
}

/// One check of the scenario.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// Everything the scenario observed.
#[derive(Clone, Debug)]
pub struct ScenarioReport {
    pub seed: u64,
    pub a: HostStats,
    pub b: HostStats,
    pub injected_loss: u64,
    pub show_errors: String,
    pub show_runtime: String,
    pub show_interfaces: String,
    pub trace: String,
    pub checks: Vec<Check>,
    pub trace_hash: u64,
    pub simulated_ns: u64,
    pub pcap: Option<PathBuf>,
}

impl ScenarioReport {
    pub fn passed(&self) -> usize {
        self.checks.iter().filter(|c| c.passed).count()
    }

    pub fn all_passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

const R0_MAC: MacAddr = MacAddr([2, 0xc0, 0, 0, 0, 0x10]);
const R1_MAC: MacAddr = MacAddr([2, 0xc0, 0, 0, 0, 0x11]);
const A_MAC: MacAddr = MacAddr([2, 0xc0, 0, 0, 0, 0x0a]);
const B_MAC: MacAddr = MacAddr([2, 0xc0, 0, 0, 0, 0x0b]);
const A_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const R0_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
const R1_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 1);
/// One simulation step.
const STEP_NS: u64 = 10_000;
const MAX_STEPS: u64 = 1_000_000;

struct World {
    engine: Engine,
    a: SimHost,
    b: SimHost,
    now: Timestamp,
    trace: TraceHasher,
    steps: u64,
}

impl World {
    fn step(&mut self) -> usize {
        self.now = self.now.saturating_add_nanos(STEP_NS);
        self.steps += 1;
        let mut moved = self.a.poll(self.now, &mut self.trace);
        moved += self.engine.poll(self.now);
        moved += self.b.poll(self.now, &mut self.trace);
        moved
    }

    /// Lets `ns` of simulated time pass in one jump (timers such as ARP retry see it),
    /// then settles.
    fn advance(&mut self, ns: u64) -> Result<(), ScenarioError> {
        self.now = self.now.saturating_add_nanos(ns);
        self.settle()
    }

    /// Steps until nothing moves for a while (delayed frames and ARP retries included).
    fn settle(&mut self) -> Result<(), ScenarioError> {
        let mut quiet = 0;
        let start = self.steps;
        while quiet < 20 {
            if self.steps - start > MAX_STEPS {
                return Err(ScenarioError::NoQuiescence(MAX_STEPS));
            }
            if self.step() == 0 {
                quiet += 1;
            } else {
                quiet = 0;
            }
        }
        Ok(())
    }
}

impl RouterScenario {
    pub fn run(&self) -> Result<ScenarioReport, ScenarioError> {
        let pool = BufferPool::new("router-scenario", 8192);
        let tables = TableHandle::new();
        let mut engine = Engine::new(&tables, pool.handle(), &EngineConfig::default())?;
        let cfg = WireConfig {
            capacity: 1024,
            mtu: 1500,
        };
        let (r0, a_end, _) = virtual_wire(("r0", R0_MAC), ("a", A_MAC), &cfg);
        let (r1, b_end, _) = virtual_wire(("r1", R1_MAC), ("b", B_MAC), &cfg);
        let r1: Box<dyn Port> = match &self.pcap {
            Some(path) => Box::new(PcapPort::create(r1, path)?),
            None => Box::new(r1),
        };
        let lossy = ImpairedPort::new(
            r1,
            Impairments {
                loss: self.loss,
                ..Default::default()
            },
            self.seed,
        );
        engine.add_port(Box::new(r0))?;
        engine.add_port(Box::new(lossy))?;
        tables.commit(&[
            TableChange::SetInterface(
                Interface::new(0, "r0", R0_MAC)
                    .with_address("10.0.1.1/24".parse().unwrap_or_else(|_| unreachable!())),
            ),
            TableChange::SetInterface(
                Interface::new(1, "r1", R1_MAC)
                    .with_address("10.0.2.1/24".parse().unwrap_or_else(|_| unreachable!())),
            ),
        ])?;
        let a = SimHost::new("a", A_IP, 24, R0_IP, Box::new(a_end), pool.handle());
        let b = SimHost::new("b", B_IP, 24, R1_IP, Box::new(b_end), pool.handle());
        let mut w = World {
            engine,
            a,
            b,
            now: Timestamp::ZERO,
            trace: TraceHasher::default(),
            steps: 0,
        };

        // 1. Pings, 50 ms apart: ARP on both sides first (and ARP retries, if the link
        // loses a request, every 100 ms).
        for seq in 0..self.pings {
            w.a.ping(B_IP, seq);
            w.advance(50_000_000)?;
        }
        // 2. A UDP stream over the lossy link; the first datagram traced.
        w.engine.trace_add(1);
        let mut sent = 0u32;
        while sent < self.udp_datagrams {
            for _ in 0..64.min(self.udp_datagrams - sent) {
                let payload = (u64::from(sent) ^ self.seed).to_be_bytes();
                w.a.send_udp(B_IP, 5000, &payload, 64);
                sent += 1;
            }
            w.step();
        }
        w.settle()?;
        // 3. Packets that expire at the router.
        for _ in 0..3 {
            w.a.send_udp(B_IP, 5000, b"ttl 1", 1);
        }
        // 4. Packets to a network nobody routes.
        let nowhere = Ipv4Addr::new(192, 0, 2, 1);
        for _ in 0..3 {
            w.a.send_udp(nowhere, 5000, b"nowhere", 64);
        }
        w.settle()?;
        // 5. Malformed frames: a bad IP checksum, twice, and a runt.
        let mut bad = udp_frame(A_MAC, R0_MAC, A_IP, B_IP);
        bad[14 + 10] ^= 0x5a;
        w.a.send_raw(&bad);
        w.a.send_raw(&bad);
        w.a.send_raw(&[0x02, 0xc0]);
        w.settle()?;

        let e = &w.engine;
        let r1_if = e.interface_counters(1);
        let r1_port = e.port_stats(1).unwrap_or_default();
        let injected_loss = r1_port.drops(PortDropReason::InjectedLoss);
        let mut checks = Vec::new();
        let mut check = |name: &'static str, passed: bool, detail: String| {
            checks.push(Check {
                name,
                passed,
                detail,
            })
        };
        check(
            "hosts resolved the router by ARP",
            w.a.resolved(R0_IP) == Some(R0_MAC) && w.b.resolved(R1_IP) == Some(R1_MAC),
            format!("a: {:?}, b: {:?}", w.a.resolved(R0_IP), w.b.resolved(R1_IP)),
        );
        check(
            "every ping that reached b was answered back to a",
            w.b.stats.echo_requests_answered > 0
                && w.a.stats.echo_replies_received == w.b.stats.echo_requests_answered,
            format!(
                "{} sent, {} answered by b, {} replies at a",
                w.a.stats.echo_requests_sent,
                w.b.stats.echo_requests_answered,
                w.a.stats.echo_replies_received
            ),
        );
        check(
            "every frame to b was delivered or lost by the injected loss",
            w.b.stats.frames_received == r1_if.tx_packets && r1_if.tx_dropped == injected_loss,
            format!(
                "{} transmitted on r1, {} received by b, {} lost on purpose",
                r1_if.tx_packets, w.b.stats.frames_received, injected_loss
            ),
        );
        let udp_to_b = u64::from(self.udp_datagrams);
        check(
            "the UDP stream arrived except what the link lost",
            w.b.stats.udp_received <= udp_to_b
                && udp_to_b - w.b.stats.udp_received <= injected_loss,
            format!("{udp_to_b} sent, {} received", w.b.stats.udp_received),
        );
        check(
            "ttl 1 answered with time exceeded",
            w.a.stats.time_exceeded_received == 3 && e.counter(Counter::IcmpTimeExceededSent) == 3,
            format!("{} received", w.a.stats.time_exceeded_received),
        );
        check(
            "unknown network answered with unreachable",
            w.a.stats.unreachable_received == 3 && e.counter(Counter::Ip4NoRoute) == 3,
            format!(
                "{} received, {} no-route",
                w.a.stats.unreachable_received,
                e.counter(Counter::Ip4NoRoute)
            ),
        );
        check(
            "malformed frames dropped with their reason",
            e.counter(Counter::Ip4BadChecksum) == 2 && e.counter(Counter::EthTooShort) == 1,
            format!(
                "bad checksum {}, too short {}",
                e.counter(Counter::Ip4BadChecksum),
                e.counter(Counter::EthTooShort)
            ),
        );
        check(
            "every packet accounted for: in = out + drops",
            e.packets_received() == e.packets_transmitted() + e.counters().total_drops(),
            format!(
                "in {}, out {}, drops {}",
                e.packets_received(),
                e.packets_transmitted(),
                e.counters().total_drops()
            ),
        );
        let traced_nodes: Vec<&str> = e
            .traced()
            .first()
            .map(|p| p.records.iter().map(|r| r.node).collect())
            .unwrap_or_default();
        check(
            "the traced packet went ethernet-input .. interface-output",
            traced_nodes
                == [
                    "ethernet-input",
                    "ip4-input",
                    "ip4-lookup",
                    "ip4-rewrite",
                    "interface-output",
                ],
            traced_nodes.join(" > "),
        );
        for c in e.counters().nonzero() {
            w.trace.value(c.0 as u64);
            w.trace.value(c.1);
        }
        let report = ScenarioReport {
            seed: self.seed,
            a: w.a.stats,
            b: w.b.stats,
            injected_loss,
            show_errors: e.show_errors(),
            show_runtime: e.show_runtime(),
            show_interfaces: e.show_interfaces(),
            trace: e.show_trace(),
            checks: Vec::new(),
            trace_hash: w.trace.hash(),
            simulated_ns: w.now.nanos(),
            pcap: self.pcap.clone(),
        };
        // Every buffer must be back in the pool once every holder is gone (the pcap file
        // is flushed as the engine drops too).
        drop(w);
        let leaked = pool.capacity() - pool.available();
        check(
            "no packet buffer leaked",
            leaked == 0,
            format!("{leaked} buffers missing"),
        );
        Ok(ScenarioReport { checks, ..report })
    }
}

/// A plain UDP frame, for the malformed cases.
fn udp_frame(src_mac: MacAddr, dst_mac: MacAddr, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(1, 2);
    let mut v = Vec::with_capacity(b.size(4));
    let _ = b.write(&mut v, b"data");
    v
}

impl ScenarioReport {
    /// The report as a person reads it.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "topology: host a {A_IP} -- r0 {R0_IP} [engine] r1 {R1_IP} ~~ host b {B_IP}  (loss on r1, seed {})", self.seed);
        let _ = writeln!(
            o,
            "simulated time: {:.3} ms\n",
            self.simulated_ns as f64 / 1e6
        );
        let _ = writeln!(o, "traffic");
        let _ = writeln!(
            o,
            "  a -> b  pings {:>6}  replies {:>6}",
            self.a.echo_requests_sent, self.a.echo_replies_received
        );
        let _ = writeln!(
            o,
            "  a -> b  udp   {:>6}  delivered {:>6}  frames lost on the link {:>4}",
            self.a.udp_sent, self.b.udp_received, self.injected_loss
        );
        let _ = writeln!(
            o,
            "  a got time exceeded {}, unreachable {}\n",
            self.a.time_exceeded_received, self.a.unreachable_received
        );
        let _ = writeln!(o, "show errors\n{}", indent(&self.show_errors));
        let _ = writeln!(o, "show runtime\n{}", indent(&self.show_runtime));
        let _ = writeln!(o, "show interfaces\n{}", indent(&self.show_interfaces));
        let _ = writeln!(
            o,
            "show trace (first UDP datagram)\n{}",
            indent(&self.trace)
        );
        if let Some(p) = &self.pcap {
            let _ = writeln!(
                o,
                "capture of r1: {} (tcpdump -nr {})\n",
                p.display(),
                p.display()
            );
        }
        let _ = writeln!(o, "checks");
        for c in &self.checks {
            let _ = writeln!(
                o,
                "  [{}] {} ({})",
                if c.passed { " ok " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        o
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_passes_and_is_deterministic() {
        let run = |seed| {
            RouterScenario {
                seed,
                udp_datagrams: 2_000,
                ..Default::default()
            }
            .run()
            .expect("runs")
        };
        let r1 = run(3);
        assert!(r1.all_passed(), "{}", r1.render());
        let r2 = run(3);
        assert_eq!(r1.trace_hash, r2.trace_hash, "same seed, same trace");
        let r3 = run(4);
        assert_ne!(r1.trace_hash, r3.trace_hash, "another seed, another trace");
    }

    #[test]
    fn heavy_loss_is_still_accounted_exactly() {
        let r = RouterScenario {
            seed: 9,
            loss: 0.3,
            udp_datagrams: 1_000,
            ..Default::default()
        }
        .run()
        .expect("runs");
        assert!(r.injected_loss > 100, "{}", r.render());
        let delivery = r
            .checks
            .iter()
            .find(|c| c.name.starts_with("every frame to b"))
            .expect("check present");
        assert!(delivery.passed, "{}", r.render());
    }
}
