//! How the vector size (the engine's rx burst) changes the rate through the full IPv4
//! graph with 1M routes: the data behind `DEFAULT_RX_BURST`.
use contiv_benches::Ip4Forward;
use contiv_hw::VECTOR_SIZE;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn rx_burst(c: &mut Criterion) {
    let mut g = c.benchmark_group("rx_burst");
    g.throughput(Throughput::Elements(VECTOR_SIZE as u64));
    for burst in [32usize, 64, 128, 256] {
        let mut rig = Ip4Forward::with_burst(1_000_000, 4096, burst);
        assert_eq!(rig.round(), VECTOR_SIZE);
        g.bench_with_input(BenchmarkId::from_parameter(burst), &burst, |b, _| {
            b.iter(|| std::hint::black_box(rig.round()))
        });
    }
    g.finish();
}

criterion_group!(benches, rx_burst);
criterion_main!(benches);
