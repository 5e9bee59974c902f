//! The I/O upper bound on virtual ports: rx -> tx with no processing.
use contiv_benches::IoForward;
use contiv_hw::VECTOR_SIZE;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn io_forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("io_forward");
    g.throughput(Throughput::Elements(VECTOR_SIZE as u64));
    let mut rig = IoForward::new();
    assert_eq!(rig.round(), VECTOR_SIZE, "every packet reaches the sink");
    g.bench_function("64B", |b| b.iter(|| std::hint::black_box(rig.round())));
    g.finish();
}

criterion_group!(benches, io_forward);
criterion_main!(benches);
