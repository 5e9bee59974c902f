//! Source NAT per core: 64-byte UDP packets from pods to the outside, translated to the
//! node address, beside the I/O bound measured in the same run. `established`: 1024
//! flows whose sessions exist; `new_connections`: every packet opens a session (its old
//! one found expired and replaced), 60 000 flows in rotation.
use contiv_benches::{IoForward, SnatForward};
use contiv_dataplane::Counter;
use contiv_hw::VECTOR_SIZE;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn snat(c: &mut Criterion) {
    let mut g = c.benchmark_group("snat");
    g.throughput(Throughput::Elements(VECTOR_SIZE as u64));
    let mut io = IoForward::new();
    g.bench_function("io_bound_64B", |b| {
        b.iter(|| std::hint::black_box(io.round()))
    });
    drop(io);

    let mut rig = SnatForward::snat(1024, None);
    assert_eq!(rig.round(), VECTOR_SIZE, "{}", rig.engine.show_errors());
    g.bench_function("established_64B", |b| {
        b.iter(|| std::hint::black_box(rig.round()))
    });
    assert_eq!(rig.engine.counter(Counter::NatSessionsCreated), 1024);
    assert_eq!(rig.engine.counters().total_drops(), 0);
    drop(rig);

    // 60 000 flows at 256 per round of 1 µs come round every 235 µs; sessions idle for
    // 100 µs are gone by then.
    let mut rig = SnatForward::snat(60_000, Some(100_000));
    assert_eq!(rig.round(), VECTOR_SIZE, "{}", rig.engine.show_errors());
    let before = rig.engine.counter(Counter::NatSessionsCreated);
    g.bench_function("new_connections_64B", |b| {
        b.iter(|| std::hint::black_box(rig.round()))
    });
    let created = rig.engine.counter(Counter::NatSessionsCreated) - before;
    let translated = rig.engine.counter(Counter::NatOutTranslated);
    assert_eq!(
        rig.engine.counters().total_drops(),
        0,
        "{}",
        rig.engine.show_errors()
    );
    // Every packet after the first rotation opened a session.
    assert!(
        created * 10 >= translated * 9,
        "{created} of {translated} were new"
    );
    g.finish();
}

criterion_group!(benches, snat);
criterion_main!(benches);
