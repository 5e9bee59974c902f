//! DPDK ports under `--no-huge`, on vdevs: mbufs in place, errors that name their cause.
//! Runs with the `dpdk` feature (ci/test.sh builds with all features).
#![cfg(feature = "dpdk")]

use contiv_hw::dpdk::{ring_pair, DpdkError, DpdkPort, DpdkPortConfig, Eal, EalConfig, Mempool};
use contiv_hw::{BufferPool, Port, Timestamp};

/// The EAL of this test process, with a file prefix no other process uses, and its
/// runtime directory removed when the process's tests are done with it.
fn eal() -> &'static Eal {
    let prefix = format!("contiv-hwtest-{}", std::process::id());
    Eal::init(&EalConfig::no_huge(&prefix, 256)).expect("EAL under --no-huge")
}

fn frame(n: u8) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xbb]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xaa]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = n.wrapping_add(i as u8);
    }
    f
}

#[test]
fn ring_pair_carries_mbufs_in_place() {
    let eal = eal();
    let _cleanup = eal.runtime_dir_guard();
    let (mut a, mut b) = ring_pair(eal, "hwt_rp", &DpdkPortConfig::new("unused")).unwrap();
    // The engine's pool over a's own mempool: every buffer is an mbuf.
    let mut pool = BufferPool::from_mempool(a.mempool().clone());
    let mut out = Vec::with_capacity(256);
    for n in 0..100u8 {
        let mut p = pool.alloc().expect("mbuf");
        assert!(p.fill(&frame(n)));
        out.push(p);
    }
    let addrs: Vec<usize> = out.iter().map(|p| p.data().as_ptr() as usize).collect();
    assert_eq!(a.tx_burst(&mut out, &mut pool, Timestamp::ZERO), 100);
    assert!(out.is_empty());
    let mut got = Vec::with_capacity(256);
    assert_eq!(b.rx_burst(&mut pool, &mut got, 256, Timestamp::ZERO), 100);
    for (n, p) in got.iter().enumerate() {
        assert_eq!(p.data(), &frame(n as u8)[..], "frame {n} by content");
        assert_eq!(
            p.data().as_ptr() as usize,
            addrs[n],
            "the same mbuf, not a copy"
        );
    }
    assert_eq!(a.tx_copies(), 0);
    // And back, after the engine moved the frame's start (as a decap would).
    for p in got.iter_mut() {
        assert!(p.advance(14));
    }
    assert_eq!(b.tx_burst(&mut got, &mut pool, Timestamp::ZERO), 100);
    let mut back = Vec::with_capacity(256);
    assert_eq!(a.rx_burst(&mut pool, &mut back, 256, Timestamp::ZERO), 100);
    assert_eq!(back[7].data(), &frame(7)[14..]);
    pool.free_all(&mut back);
    assert_eq!(a.stats().tx_packets, 100);
    assert_eq!(b.stats().rx_packets, 100);
}

#[test]
fn heap_buffers_are_copied_out_and_counted() {
    let eal = eal();
    let _cleanup = eal.runtime_dir_guard();
    let (mut a, mut b) = ring_pair(eal, "hwt_heap", &DpdkPortConfig::new("unused")).unwrap();
    let mut heap = BufferPool::new("heap", 64);
    let mut out = Vec::with_capacity(8);
    for n in 0..8u8 {
        let mut p = heap.alloc().unwrap();
        assert!(p.fill(&frame(n)));
        out.push(p);
    }
    assert_eq!(a.tx_burst(&mut out, &mut heap, Timestamp::ZERO), 8);
    assert_eq!(a.tx_copies(), 8);
    assert_eq!(
        heap.available(),
        64,
        "the heap buffers went back to their pool"
    );
    let mut got = Vec::with_capacity(8);
    assert_eq!(b.rx_burst(&mut heap, &mut got, 8, Timestamp::ZERO), 8);
    assert_eq!(got[3].data(), &frame(3)[..]);
    // An mbuf freed into a heap pool goes back to its mempool, not into the heap ring.
    let before = b.mempool().available() + a.mempool().available();
    heap.free_all(&mut got);
    assert_eq!(heap.available(), 64);
    assert_eq!(
        b.mempool().available() + a.mempool().available(),
        before + 8
    );
}

#[test]
fn mempool_exhaustion_is_no_panic() {
    let eal = eal();
    let _cleanup = eal.runtime_dir_guard();
    let mp = Mempool::create(eal, "hwt_small", 64).unwrap();
    let mut pool = BufferPool::from_mempool(mp);
    let mut held = Vec::with_capacity(128);
    while let Some(p) = pool.alloc() {
        held.push(p);
        assert!(held.len() <= 64, "never more than the pool holds");
    }
    assert!(
        held.len() >= 48,
        "most of the pool is usable: {}",
        held.len()
    );
    pool.free_all(&mut held);
    assert!(pool.alloc().is_some());
}

#[test]
fn device_that_cannot_be_probed_is_a_clear_error() {
    let eal = eal();
    let _cleanup = eal.runtime_dir_guard();
    let err = DpdkPort::open(eal, &DpdkPortConfig::new("net_nosuchdriver0"))
        .err()
        .expect("no such driver");
    assert!(matches!(err, DpdkError::Probe { .. }), "{err}");
    assert!(err.to_string().contains("net_nosuchdriver0"), "{err}");
    // A real driver with an argument it rejects: refused, and nothing left behind (the
    // same name then probes fine).
    let err = DpdkPort::open(eal, &DpdkPortConfig::new("net_null7,size=notanumber"))
        .err()
        .expect("bad vdev argument");
    assert!(err.to_string().contains("net_null7"), "{err}");
    let port = DpdkPort::open(eal, &DpdkPortConfig::new("net_null7")).expect("clean retry");
    assert!(port.link_up());
}

#[test]
fn a_second_eal_with_other_arguments_is_refused() {
    let eal = eal();
    let _cleanup = eal.runtime_dir_guard();
    let other = EalConfig::no_huge("contiv-hwtest-other", 128);
    let err = Eal::init(&other).expect_err("EAL twice");
    assert!(
        matches!(err, DpdkError::EalAlreadyInitialised { .. }),
        "{err}"
    );
}
