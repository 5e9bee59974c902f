//! 64-byte packets through the full IPv4 graph: 1 route, and 1M random routes with the
//! traffic spread over 4096 destinations among them.
use contiv_benches::{IoForward, Ip4Forward};
use contiv_hw::VECTOR_SIZE;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn ip4_forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("ip4_forward");
    g.throughput(Throughput::Elements(VECTOR_SIZE as u64));
    // The I/O bound again, in the same run, so the ratio is measured side by side.
    let mut io = IoForward::new();
    g.bench_function("io_bound_64B", |b| {
        b.iter(|| std::hint::black_box(io.round()))
    });
    drop(io);
    for (name, routes, flows) in [("1_route", 0usize, 1usize), ("1M_routes", 1_000_000, 4096)] {
        let mut rig = Ip4Forward::new(routes, flows);
        assert_eq!(
            rig.round(),
            VECTOR_SIZE,
            "{name}: every packet is forwarded\n{}",
            rig.engine.show_errors()
        );
        g.bench_function(name, |b| b.iter(|| std::hint::black_box(rig.round())));
        assert_eq!(
            rig.engine.counters().total_drops(),
            0,
            "{name}: no drops\n{}",
            rig.engine.show_errors()
        );
    }
    g.finish();
}

criterion_group!(benches, ip4_forward);
criterion_main!(benches);
