//! An EAL argument DPDK rejects is a clear error naming the cause. A file of its own, so
//! that the EAL of this process is not yet initialised under any test runner.
#![cfg(feature = "dpdk")]

use contiv_hw::dpdk::{DpdkError, Eal, EalConfig};

#[test]
fn rejected_eal_arguments_name_the_cause_and_leave_nothing() {
    let prefix = format!("contiv-ealargs-{}", std::process::id());
    let mut config = EalConfig::no_huge(&prefix, 64);
    // DPDK refuses --in-memory together with --no-huge.
    config.args.push("--in-memory".into());
    let err = Eal::init(&config).expect_err("rejected arguments");
    let text = err.to_string();
    eprintln!("{text}");
    assert!(matches!(err, DpdkError::EalInit { .. }), "{text}");
    assert!(text.contains("--in-memory"), "names the arguments: {text}");
    assert!(text.contains("DPDK said"), "carries DPDK's reason: {text}");
    assert!(
        !std::path::Path::new(&format!("/var/run/dpdk/{prefix}")).exists(),
        "no runtime directory left behind"
    );
}
