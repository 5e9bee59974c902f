//! The engine forwarding between DPDK ports joined to the test by ring pairs (`--no-huge`,
//! no devices, no root): every frame's content checked after the graph, ICMP errors sent
//! back, bad frames counted drops. (That mbufs pass in place is checked in hw's tests.)
#![cfg(feature = "dpdk")]

use std::net::Ipv4Addr;

use contiv_dataplane::{
    Adjacency, Counter, Engine, EngineConfig, Interface, Ipv4Net, TableChange, TableHandle,
};
use contiv_hw::dpdk::{ring_pair, DpdkPort, DpdkPortConfig, Eal, EalConfig};
use contiv_hw::{BufferPool, MacAddr, Port, Timestamp};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

const ENGINE_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0xa, 1]);
const ENGINE_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0xb, 1]);
const HOST_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0xa, 2]);
const HOST_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0xb, 2]);
const A_IP: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 2);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 2);

fn udp(seq: u32, ttl: u8, dst: Ipv4Addr) -> Vec<u8> {
    let payload = seq.to_be_bytes().repeat(4);
    let b = PacketBuilder::ethernet2(HOST_A.0, ENGINE_A.0)
        .ipv4(A_IP.octets(), dst.octets(), ttl)
        .udp(4000, 5000);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, &payload).unwrap();
    out
}

/// Polls the engine and reads `port` until `want` frames arrived (bounded by polls).
fn collect(
    engine: &mut Engine,
    port: &mut DpdkPort,
    pool: &mut BufferPool,
    want: usize,
) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = Vec::with_capacity(256);
    for round in 0..10_000u64 {
        engine.poll(Timestamp(round * 1000));
        port.rx_burst(pool, &mut buf, 256, Timestamp::ZERO);
        got.extend(buf.iter().map(|p| p.data().to_vec()));
        pool.free_all(&mut buf);
        if got.len() >= want {
            break;
        }
    }
    got
}

#[test]
fn ring_pairs_forward_through_the_graph() {
    let prefix = format!("contiv-ringfwd-{}", std::process::id());
    let eal = Eal::init(&EalConfig::no_huge(&prefix, 256)).expect("EAL");
    let _cleanup = eal.runtime_dir_guard();
    let cfg = DpdkPortConfig::new("rings");
    let (engine_a, mut host_a) = ring_pair(eal, "rfa", &cfg).unwrap();
    let (engine_b, mut host_b) = ring_pair(eal, "rfb", &cfg).unwrap();
    let mut host_pool = BufferPool::from_mempool(host_a.mempool().clone());
    let engine_pool = BufferPool::from_mempool(engine_a.mempool().clone());

    let tables = TableHandle::new();
    let mut engine = Engine::new(&tables, engine_pool, &EngineConfig::default()).unwrap();
    let pa = engine.add_port(Box::new(engine_a)).unwrap();
    let pb = engine.add_port(Box::new(engine_b)).unwrap();
    tables
        .commit(&[
            TableChange::SetInterface(
                Interface::new(pa, "a", ENGINE_A)
                    .with_address(Ipv4Net::new(Ipv4Addr::new(10, 10, 0, 1), 24)),
            ),
            TableChange::SetInterface(
                Interface::new(pb, "b", ENGINE_B)
                    .with_address(Ipv4Net::new(Ipv4Addr::new(10, 20, 0, 1), 24)),
            ),
            TableChange::AddRoute {
                vrf: 0,
                prefix: Ipv4Net::new(B_IP, 32),
                target: Adjacency::Via {
                    port: pb,
                    next_hop: B_IP,
                },
            },
            TableChange::SetNeighbour {
                port: pb,
                ip: B_IP,
                mac: HOST_B,
            },
            TableChange::SetNeighbour {
                port: pa,
                ip: A_IP,
                mac: HOST_A,
            },
        ])
        .unwrap();

    // 1000 frames, sent in bursts as a NIC would deliver them.
    const N: u32 = 1000;
    let mut out = Vec::with_capacity(256);
    for chunk in (0..N).collect::<Vec<_>>().chunks(200) {
        for &seq in chunk {
            let mut p = host_pool.alloc().expect("mbuf");
            assert!(p.fill(&udp(seq, 64, B_IP)));
            out.push(p);
        }
        assert_eq!(
            host_a.tx_burst(&mut out, &mut host_pool, Timestamp::ZERO),
            chunk.len()
        );
        engine.poll(Timestamp::ZERO);
    }
    let got = collect(&mut engine, &mut host_b, &mut host_pool, N as usize);
    assert_eq!(got.len(), N as usize, "every frame forwarded");
    for (seq, frame) in got.iter().enumerate() {
        let s = SlicedPacket::from_ethernet(frame).expect("a valid frame");
        let eth = s
            .link
            .as_ref()
            .and_then(|l| l.to_header())
            .expect("ethernet");
        let eth = match eth {
            etherparse::LinkHeader::Ethernet2(e) => e,
            other => panic!("{other:?}"),
        };
        assert_eq!(eth.destination, HOST_B.0, "to b's MAC");
        assert_eq!(eth.source, ENGINE_B.0, "from the engine's MAC on b");
        let Some(NetSlice::Ipv4(ip)) = &s.net else {
            panic!("ipv4")
        };
        let h = ip.header().to_header();
        assert_eq!(h.time_to_live, 63, "ttl decremented");
        assert_eq!(
            h.header_checksum,
            h.calc_header_checksum(),
            "checksum still valid"
        );
        let Some(TransportSlice::Udp(u)) = &s.transport else {
            panic!("udp")
        };
        assert_eq!(
            u.payload(),
            &(seq as u32).to_be_bytes().repeat(4)[..],
            "payload intact, in order"
        );
    }

    // TTL 1: a time-exceeded back to a; to an unrouted address: an unreachable back.
    for (seq, (ttl, dst)) in [(1u8, B_IP), (64, Ipv4Addr::new(192, 0, 2, 9))]
        .into_iter()
        .enumerate()
    {
        let mut p = host_pool.alloc().unwrap();
        assert!(p.fill(&udp(seq as u32, ttl, dst)));
        out.push(p);
        host_a.tx_burst(&mut out, &mut host_pool, Timestamp::ZERO);
    }
    let errors = collect(&mut engine, &mut host_a, &mut host_pool, 2);
    let mut icmp_types: Vec<u8> = errors
        .iter()
        .map(|f| {
            let s = SlicedPacket::from_ethernet(f).expect("valid");
            match &s.transport {
                Some(TransportSlice::Icmpv4(i)) => i.type_u8(),
                other => panic!("icmp expected, got {other:?}"),
            }
        })
        .collect();
    icmp_types.sort();
    assert_eq!(
        icmp_types,
        vec![3, 11],
        "an unreachable and a time exceeded"
    );

    // Garbage: counted, never forwarded.
    let mut p = host_pool.alloc().unwrap();
    let mut bad = udp(0, 64, B_IP);
    bad[24] ^= 0xff; // the IPv4 header checksum
    assert!(p.fill(&bad));
    out.push(p);
    host_a.tx_burst(&mut out, &mut host_pool, Timestamp::ZERO);
    for round in 0..100 {
        engine.poll(Timestamp(round));
    }
    assert_eq!(engine.counters().get(Counter::Ip4BadChecksum), 1);
    let ports_b = engine.interface_counters(pb);
    assert_eq!(ports_b.tx_packets, u64::from(N), "nothing else left on b");
    assert_eq!(
        engine.packets_received(),
        engine.packets_transmitted() + engine.counters().total_drops()
    );
}
