//! Fuzzes the IPv4 graph from ethernet-input to ip4-rewrite and interface-output.
//!
//! The first byte picks the input port and whether neighbours are static; the rest is
//! split into frames at 0xff bytes so one input can make a vector of several.
//! Checked on every input: no panic, and every packet accounted for.
#![no_main]

use std::sync::Mutex;

use contiv_dataplane::{Engine, EngineConfig, Interface, TableChange, TableHandle};
use contiv_hw::{virtual_wire, BufferPool, MacAddr, Port, Timestamp, VirtualPort, WireConfig};
use libfuzzer_sys::fuzz_target;

struct World {
    engine: Engine,
    pool: BufferPool,
    far: [VirtualPort; 2],
    now: u64,
}

fn world() -> World {
    let pool = BufferPool::new("fuzz", 1024);
    let tables = TableHandle::new();
    let mut engine = Engine::new(&tables, pool.handle(), &EngineConfig::default()).unwrap();
    let cfg = WireConfig { capacity: 512, mtu: 1500 };
    let (r0, a, _) = virtual_wire(("r0", MacAddr::local(0x10)), ("a", MacAddr::local(0xa)), &cfg);
    let (r1, b, _) = virtual_wire(("r1", MacAddr::local(0x11)), ("b", MacAddr::local(0xb)), &cfg);
    engine.add_port(Box::new(r0)).unwrap();
    engine.add_port(Box::new(r1)).unwrap();
    tables
        .commit(&[
            TableChange::SetInterface(
                Interface::new(0, "r0", MacAddr::local(0x10))
                    .with_address("10.0.1.1/24".parse().unwrap())
                    .with_proxy_arp("10.0.3.0/24".parse().unwrap()),
            ),
            TableChange::SetInterface(Interface::new(1, "r1", MacAddr::local(0x11)).with_address("10.0.2.1/24".parse().unwrap())),
            TableChange::SetNeighbour { port: 1, ip: "10.0.2.2".parse().unwrap(), mac: MacAddr::local(0xb) },
            // Port 1 as the uplink, so nat44-out and nat44-in see fuzzed packets too.
            TableChange::SetSnat(Some(contiv_dataplane::SnatConfig {
                uplink: 1,
                external: "10.0.2.1".parse().unwrap(),
                inside: vec!["10.0.1.0/24".parse().unwrap()],
                exempt: vec!["10.0.5.0/24".parse().unwrap()],
            })),
        ])
        .unwrap();
    World { engine, pool, far: [a, b], now: 0 }
}

static WORLD: Mutex<Option<World>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let mut guard = WORLD.lock().unwrap_or_else(|p| p.into_inner());
    let w = guard.get_or_insert_with(world);
    let before_in = w.engine.packets_received();
    let before_out = w.engine.packets_transmitted();
    let before_drops = w.engine.counters().total_drops();
    let mut v = Vec::new();
    for frame in rest.split(|&b| b == 0xff).take(256) {
        let Some(mut p) = w.pool.alloc() else { break };
        if !p.fill(&frame[..frame.len().min(2048)]) {
            w.pool.free(p);
            continue;
        }
        v.push(p);
    }
    let n = v.len() as u64;
    w.now += 1_000_000;
    w.engine.input(u16::from(first & 1), &mut v, Timestamp(w.now));
    assert_eq!(w.engine.packets_received() - before_in, n);
    assert_eq!(
        w.engine.packets_transmitted() - before_out + w.engine.counters().total_drops() - before_drops,
        n
    );
    let mut out = Vec::new();
    for far in &mut w.far {
        while far.rx_burst(&mut w.pool, &mut out, 256, Timestamp(w.now)) > 0 {}
        w.pool.free_all(&mut out);
    }
});
