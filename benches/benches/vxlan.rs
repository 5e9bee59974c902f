//! The VXLAN overlay per core: 64-byte inner packets encapsulated into a tunnel (and
//! routed on the underlay), and decapsulated (and routed to their pod), beside the I/O
//! bound measured in the same run.
use contiv_benches::{IoForward, VxlanForward};
use contiv_hw::VECTOR_SIZE;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn vxlan(c: &mut Criterion) {
    let mut g = c.benchmark_group("vxlan");
    g.throughput(Throughput::Elements(VECTOR_SIZE as u64));
    let mut io = IoForward::new();
    g.bench_function("io_bound_64B", |b| {
        b.iter(|| std::hint::black_box(io.round()))
    });
    drop(io);
    for (name, mut rig) in [
        ("encap_64B", VxlanForward::encap(256)),
        ("decap_64B", VxlanForward::decap()),
    ] {
        assert_eq!(
            rig.round(),
            VECTOR_SIZE,
            "{name}: every packet gets through\n{}",
            rig.engine.show_errors()
        );
        g.bench_function(name, |b| b.iter(|| std::hint::black_box(rig.round())));
        assert_eq!(rig.engine.counters().total_drops(), 0, "{name}: no drops");
    }
    g.finish();
}

criterion_group!(benches, vxlan);
criterion_main!(benches);
