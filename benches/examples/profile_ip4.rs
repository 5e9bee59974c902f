//! Runs the 1-route IPv4 rig for a fixed number of rounds, for profilers that count
//! instructions (`valgrind --tool=callgrind`): no criterion, no big-table setup.
use contiv_benches::Ip4Forward;

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let mut rig = Ip4Forward::new(0, 1);
    let mut total = 0;
    for _ in 0..rounds {
        total += rig.round();
    }
    println!("{total} packets forwarded in {rounds} rounds");
}
