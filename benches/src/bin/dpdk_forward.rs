//! The engine's full IPv4 forwarding between two DPDK vdevs, for comparison with
//! `dpdk-testpmd --forward-mode=io` and Open vSwitch on the same vdevs (ci/bench.sh):
//! frames come from a `net_pcap` vdev replaying a capture of valid IPv4/UDP packets
//! forever, go through ethernet-input, ip4-input, ip4-lookup (over `--routes` random
//! routes), ip4-rewrite, and out of a `net_null` vdev.
//!
//!   dpdk-forward [--seconds 5] [--routes 1000000] [--flows 1024] [--hugepages]
//!   dpdk-forward --write-pcap FILE [--routes N] [--flows N]
//!
//! Prints one line: `dpdk-forward: <Mpps> Mpps ...`. With `--write-pcap` it only writes
//! the capture it would replay (the same for the same arguments), for testpmd and Open
//! vSwitch to replay in the same comparison.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use contiv_benches::{frame64, random_prefixes, IN_MAC, OUT_MAC, SINK_IP, SINK_MAC};
use contiv_dataplane::{Adjacency, Engine, EngineConfig, Interface, TableChange, TableHandle};
use contiv_hw::dpdk::{DpdkPort, DpdkPortConfig, Eal, EalConfig};
use contiv_hw::{BufferPool, Timestamp};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Args {
    seconds: f64,
    routes: usize,
    flows: usize,
    hugepages: bool,
    write_pcap: Option<std::path::PathBuf>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        seconds: 5.0,
        routes: 1_000_000,
        flows: 1024,
        hugepages: false,
        write_pcap: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => a.seconds = value()?.parse()?,
            "--routes" => a.routes = value()?.parse()?,
            "--flows" => a.flows = value()?.parse()?,
            "--hugepages" => a.hugepages = true,
            "--write-pcap" => a.write_pcap = Some(value()?.into()),
            other => bail!("unknown argument {other:?} (see the source's header)"),
        }
    }
    Ok(a)
}

/// A pcap of `flows` 60-byte IPv4/UDP frames to addresses inside the routes.
fn write_pcap(
    path: &std::path::Path,
    flows: usize,
    routes: &[contiv_dataplane::Ipv4Net],
) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut w = pcap_file::pcap::PcapWriter::new(file)?;
    for i in 0..flows {
        let dst = if routes.is_empty() {
            SINK_IP
        } else {
            let p = routes[rng.random_range(0..routes.len())];
            let host = rng.random::<u32>() & !contiv_dataplane::fib::mask(p.len);
            Ipv4Addr::from((u32::from(p.addr) & contiv_dataplane::fib::mask(p.len)) | host)
        };
        let f = frame64(dst);
        w.write_packet(&pcap_file::pcap::PcapPacket::new(
            Duration::from_micros(i as u64),
            f.len() as u32,
            &f,
        ))?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let a = args()?;
    if let Some(path) = &a.write_pcap {
        return write_pcap(path, a.flows, &random_prefixes(a.routes, 42));
    }
    let prefix = format!("contiv-dpdkfwd-{}", std::process::id());
    let eal_config = if a.hugepages {
        EalConfig::hugepages(&prefix, 1024)
    } else {
        EalConfig::no_huge(&prefix, 1024)
    };
    let eal = Eal::init(&eal_config)?;
    let _cleanup = eal.runtime_dir_guard();
    run(eal, &a)
}

fn run(eal: &'static Eal, a: &Args) -> Result<()> {
    let routes = random_prefixes(a.routes, 42);
    let pcap = std::env::temp_dir().join(format!("contiv-dpdkfwd-{}.pcap", std::process::id()));
    write_pcap(&pcap, a.flows, &routes)?;
    let rx = DpdkPort::open(
        eal,
        &DpdkPortConfig::new(&format!(
            "net_pcap_fwd0,rx_pcap={},infinite_rx=1",
            pcap.display()
        )),
    );
    let _ = std::fs::remove_file(&pcap);
    let rx = rx?;
    let tx = DpdkPort::open(eal, &DpdkPortConfig::new("net_null_fwd1,no-rx=1"))?;
    let pool = BufferPool::from_mempool(rx.mempool().clone());

    let tables = TableHandle::new();
    let mut engine = Engine::new(&tables, pool, &EngineConfig::default())?;
    engine.add_port(Box::new(rx))?;
    engine.add_port(Box::new(tx))?;
    let mut changes = vec![
        TableChange::SetInterface(
            Interface::new(0, "pcap", IN_MAC).with_address("10.0.1.1/24".parse()?),
        ),
        TableChange::SetInterface(
            Interface::new(1, "null", OUT_MAC).with_address("10.0.2.1/24".parse()?),
        ),
        TableChange::SetNeighbour {
            port: 1,
            ip: SINK_IP,
            mac: SINK_MAC,
        },
    ];
    let via = Adjacency::Via {
        port: 1,
        next_hop: SINK_IP,
    };
    changes.extend(routes.iter().map(|&prefix| TableChange::AddRoute {
        vrf: 0,
        prefix,
        target: via,
    }));
    tables.commit(&changes)?;

    let start = Instant::now();
    let poll_for = |engine: &mut Engine, d: Duration| {
        let until = Instant::now() + d;
        while Instant::now() < until {
            for _ in 0..64 {
                engine.poll(Timestamp(start.elapsed().as_nanos() as u64));
            }
        }
    };
    // Warm up: caches, the FIB's pages, the mempool's lcore cache.
    poll_for(&mut engine, Duration::from_millis(500));
    let (rx0, tx0, drops0) = (
        engine.packets_received(),
        engine.packets_transmitted(),
        engine.counters().total_drops(),
    );
    let t0 = Instant::now();
    poll_for(&mut engine, Duration::from_secs_f64(a.seconds));
    let elapsed = t0.elapsed().as_secs_f64();
    let forwarded = engine.packets_transmitted() - tx0;
    let received = engine.packets_received() - rx0;
    let drops = engine.counters().total_drops() - drops0;
    if forwarded == 0 {
        bail!("nothing was forwarded: {}", engine.show_errors());
    }
    println!(
        "dpdk-forward: {:.2} Mpps forwarded ({} received, {} dropped in the graph; {} routes, {} flows, {}, {:.1} s)",
        forwarded as f64 / elapsed / 1e6,
        received,
        drops,
        a.routes,
        a.flows,
        if a.hugepages { "hugepages" } else { "--no-huge" },
        elapsed
    );
    let null = engine.port_stats(1);
    if let Some(s) = null {
        let port_drops = s.total_drops();
        if port_drops > 0 {
            println!("  the null port dropped {port_drops}");
        }
    }
    Ok(())
}
