//! Runs the IPv4 rig for a fixed number of rounds, for profilers that count instructions
//! (`valgrind --tool=callgrind`) and for quick experiments on the FIB's size and the
//! number of flows: `profile_ip4 [rounds] [routes] [flows]` (default 10000 rounds of the
//! 1-route rig). Prints the wall-clock time per packet, which under valgrind means
//! nothing.
use contiv_benches::Ip4Forward;

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let (rounds, routes, flows) = (arg(1, 10_000), arg(2, 0), arg(3, 1));
    let mut rig = Ip4Forward::new(routes, flows);
    // Warm-up: caches, and the FIB's pages.
    for _ in 0..rounds.min(1000) {
        rig.round();
    }
    let start = std::time::Instant::now();
    let mut total = 0;
    for _ in 0..rounds {
        total += rig.round();
    }
    let elapsed = start.elapsed();
    println!(
        "{total} packets forwarded in {rounds} rounds ({routes} routes, {flows} flows): {:.1} ns per packet",
        elapsed.as_nanos() as f64 / total.max(1) as f64
    );
}
