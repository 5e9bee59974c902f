//! The capture a PcapPort writes is read by tcpdump, a parser we did not write.

use std::process::Command;

use contiv_sim::router_scenario::RouterScenario;

#[test]
fn tcpdump_reads_the_capture_of_the_routers_link() {
    if Command::new("tcpdump").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CONTIV_REQUIRE_TOOLS").is_none(),
            "tcpdump is required (ci/test.sh installs it)"
        );
        eprintln!("skipped: tcpdump is not installed (ci/test.sh installs it)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("contiv-pcap-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("r1.pcap");
    let report = RouterScenario {
        seed: 5,
        udp_datagrams: 50,
        loss: 0.0,
        pcap: Some(path.clone()),
        ..Default::default()
    }
    .run()
    .expect("scenario runs");
    let out = Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(&path)
        .output()
        .expect("tcpdump runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "tcpdump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let udp = text
        .lines()
        .filter(|l| l.contains("10.0.1.2.40000 > 10.0.2.2.5000: UDP"))
        .count();
    assert_eq!(
        udp as u64, report.b.udp_received,
        "every delivered datagram is in the capture:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("ARP, Request who-has 10.0.2.2 tell 10.0.2.1")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.contains("ICMP echo reply")),
        "{text}"
    );
}
