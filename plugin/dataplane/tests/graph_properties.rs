//! Properties of the whole graph over arbitrary input: it never panics, and every packet
//! that enters leaves exactly once, transmitted or dropped with a reason.

mod common;

use common::*;
use contiv_hw::{PacketBuf, Timestamp};
use proptest::prelude::*;

/// Frames that are mostly valid with a few bytes changed or cut, so the fuzzing reaches
/// the deeper nodes rather than stopping at ethernet-input.
fn mutated_frame() -> impl Strategy<Value = Vec<u8>> {
    let bases = prop_oneof![
        Just(udp(A_MAC, R0_MAC, A_IP, B_IP, 64, b"payload")),
        Just(udp(A_MAC, R0_MAC, A_IP, B_IP, 1, b"payload")),
        Just(udp(A_MAC, R0_MAC, A_IP, R0_IP, 64, b"to us")),
        Just(udp(B_MAC, R1_MAC, B_IP, R1_IP, 64, b"reply to a session")),
        Just(echo_request(B_MAC, R1_MAC, B_IP, R1_IP, 64, 1)),
        Just(echo_request(A_MAC, R0_MAC, A_IP, R0_IP, 64, 1)),
        Just(echo_request(
            A_MAC,
            R0_MAC,
            A_IP,
            "192.0.2.1".parse().unwrap(),
            64,
            1
        )),
        Just(arp(
            etherparse::ArpOperation::REQUEST,
            A_MAC,
            contiv_hw::MacAddr::BROADCAST,
            (A_MAC, A_IP),
            (contiv_hw::MacAddr::ZERO, R0_IP)
        )),
    ];
    (
        bases,
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(mut f, edits, cut, do_cut)| {
            for (i, b) in edits {
                let at = i.index(f.len());
                f[at] = b;
            }
            if do_cut {
                f.truncate(cut.index(f.len() + 1));
            }
            f
        })
}

fn any_frame() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..200), mutated_frame()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_packet_is_forwarded_or_dropped_with_a_reason(
        vectors in prop::collection::vec((any::<bool>(), prop::collection::vec(any_frame(), 1..40)), 1..6),
        learn in any::<bool>(),
        snat in any::<bool>(),
    ) {
        let mut r = Router::new(learn);
        if snat {
            // Port 1 as the uplink: A's traffic to B is translated, B's to R1 looked up.
            r.tables.commit(&[contiv_dataplane::TableChange::SetSnat(Some(
                contiv_dataplane::SnatConfig {
                    uplink: 1,
                    external: R1_IP,
                    inside: vec![net("10.0.1.0/24")],
                    exempt: vec![net("10.0.5.0/24")],
                },
            ))]).unwrap();
        }
        r.engine.trace_add(8);
        let mut sent = 0u64;
        for (i, (on_b, frames)) in vectors.iter().enumerate() {
            let mut v: Vec<PacketBuf> = frames.iter().map(|f| {
                let mut p = r.pool.alloc().unwrap();
                assert!(p.fill(f));
                p
            }).collect();
            sent += v.len() as u64;
            r.engine.input(u16::from(*on_b), &mut v, Timestamp::from_millis(i as u64));
            prop_assert!(v.is_empty());
        }
        let e = &r.engine;
        prop_assert_eq!(e.packets_received(), sent);
        prop_assert_eq!(e.packets_received(), e.packets_transmitted() + e.counters().total_drops(),
            "in = out + drops\n{}", e.show_errors());
        // Nothing leaked: what the wires hold plus the pool is every buffer.
        let in_flight = (r.a.rx_pending() + r.b.rx_pending()) as u64;
        prop_assert!(in_flight <= e.packets_transmitted());
        r.drain_a();
        r.drain_b();
        drop(r.engine);
        prop_assert_eq!(r.pool.available(), r.pool.capacity());
    }
}
