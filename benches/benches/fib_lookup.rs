//! Longest-prefix match cost at 1k, 100k and 1M prefixes: 1024 random addresses per
//! iteration (criterion's element rate is lookups per second).
use contiv_benches::random_prefixes;
use contiv_dataplane::Fib;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn fib_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("fib_lookup");
    const PROBES: usize = 1024;
    g.throughput(Throughput::Elements(PROBES as u64));
    for n in [1_000usize, 100_000, 1_000_000] {
        let mut fib = Fib::new();
        let prefixes = random_prefixes(n, 1);
        for (i, p) in prefixes.iter().enumerate() {
            fib.insert(p.addr, p.len, (i % 1000) as u32)
                .expect("valid prefix");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        // Half the probes inside known prefixes, half anywhere.
        let probes: Vec<u32> = (0..PROBES)
            .map(|i| {
                if i % 2 == 0 {
                    let p = prefixes[rng.random_range(0..prefixes.len())];
                    u32::from(p.addr) | (rng.random::<u32>() & !contiv_dataplane::fib::mask(p.len))
                } else {
                    rng.random()
                }
            })
            .collect();
        g.bench_with_input(BenchmarkId::from_parameter(n), &probes, |b, probes| {
            b.iter(|| {
                let mut hits = 0u32;
                for &a in probes {
                    hits += u32::from(fib.lookup(std::hint::black_box(a)).is_some());
                }
                hits
            })
        });
    }
    g.finish();
}

criterion_group!(benches, fib_lookup);
criterion_main!(benches);
