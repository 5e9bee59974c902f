//! Generates the DPDK bindings from the system's libdpdk headers and compiles the C
//! wrappers for the inline functions the dataplane calls on its hot path.

use std::env;
use std::path::PathBuf;

/// The DPDK releases these bindings were written and tested against. The mbuf layout
/// (headroom, data room) and the ethdev fast-path structures are ABI of a release series,
/// so a release outside this range is refused rather than miscompiled.
const SUPPORTED_MIN: (u32, u32) = (22, 11);
const SUPPORTED_BELOW: (u32, u32) = (23, 0);

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let lib = match pkg_config::Config::new().probe("libdpdk") {
        Ok(lib) => lib,
        Err(e) => panic!(
            "\n\nthe `dpdk` feature needs the system's libdpdk (Debian: apt-get install \
             libdpdk-dev libclang-dev), found through pkg-config:\n{e}\n\n"
        ),
    };
    let version = parse_version(&lib.version).unwrap_or_else(|| {
        panic!(
            "\n\npkg-config reports libdpdk version {:?}, which is not MAJOR.MINOR[.PATCH]\n\n",
            lib.version
        )
    });
    if version < SUPPORTED_MIN || version >= SUPPORTED_BELOW {
        panic!(
            "\n\nlibdpdk {} is outside the supported range: >= {}.{}, < {}.{} \
             (the 22.11 LTS series, as Debian 12 ships it)\n\n",
            lib.version, SUPPORTED_MIN.0, SUPPORTED_MIN.1, SUPPORTED_BELOW.0, SUPPORTED_BELOW.1
        );
    }

    // libdpdk's cflags carry `-include rte_config.h` and `-march=corei7`, which both the
    // header parse and the C compiler need; pkg-config's crate only reports include paths,
    // so the whole set is read again from pkg-config itself.
    let cflags = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let cflags: Vec<String> = cflags.split_whitespace().map(str::to_string).collect();

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let wrappers = out.join("dpdk_static_fns");

    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(&cflags)
        .clang_arg("-I.")
        .allowlist_function("rte_eal_.*")
        .allowlist_function("rte_version")
        .allowlist_function("rte_openlog_stream")
        .allowlist_function("rte_strerror")
        .allowlist_function("rte_socket_id")
        .allowlist_function("rte_lcore_id")
        .allowlist_function("rte_thread_register")
        .allowlist_function("rte_dev_probe")
        .allowlist_function("rte_dev_remove")
        .allowlist_function("rte_vdev_init")
        .allowlist_function("rte_vdev_uninit")
        .allowlist_function("rte_mempool_free")
        .allowlist_function("rte_mempool_avail_count")
        .allowlist_function("rte_mempool_in_use_count")
        .allowlist_function("rte_pktmbuf_pool_create")
        .allowlist_function("rte_pktmbuf_alloc")
        .allowlist_function("rte_pktmbuf_alloc_bulk")
        .allowlist_function("rte_pktmbuf_free")
        .allowlist_function("rte_pktmbuf_free_bulk")
        .allowlist_function("rte_eth_dev_configure")
        .allowlist_function("rte_eth_dev_start")
        .allowlist_function("rte_eth_dev_stop")
        .allowlist_function("rte_eth_dev_close")
        .allowlist_function("rte_eth_dev_info_get")
        .allowlist_function("rte_eth_dev_get_port_by_name")
        .allowlist_function("rte_eth_dev_get_mtu")
        .allowlist_function("rte_eth_dev_set_mtu")
        .allowlist_function("rte_eth_dev_socket_id")
        .allowlist_function("rte_eth_rx_queue_setup")
        .allowlist_function("rte_eth_tx_queue_setup")
        .allowlist_function("rte_eth_rx_burst")
        .allowlist_function("rte_eth_tx_burst")
        .allowlist_function("rte_eth_link_get_nowait")
        .allowlist_function("rte_eth_stats_get")
        .allowlist_function("rte_eth_macaddr_get")
        .allowlist_function("rte_eth_promiscuous_enable")
        .allowlist_function("rte_ring_create")
        .allowlist_function("rte_eth_from_rings")
        .allowlist_function("contiv_.*")
        .allowlist_var("RTE_PKTMBUF_HEADROOM")
        .allowlist_var("RTE_MBUF_DEFAULT_BUF_SIZE")
        .allowlist_var("RTE_MBUF_DEFAULT_DATAROOM")
        .allowlist_var("RTE_MAX_ETHPORTS")
        .allowlist_var("RTE_ETH_LINK_UP")
        .allowlist_var("RTE_ETH_NAME_MAX_LEN")
        .allowlist_var("RTE_VER_.*")
        .allowlist_var("SOCKET_ID_ANY")
        .allowlist_var("RING_F_SP_ENQ")
        .allowlist_var("RING_F_SC_DEQ")
        .wrap_static_fns(true)
        .wrap_static_fns_path(&wrappers)
        // Several DPDK structures are packed and aligned at once; a derived Debug on them
        // does not compile.
        .derive_debug(false)
        .derive_default(true)
        .layout_tests(false)
        .generate()
        .unwrap_or_else(|e| panic!("\n\nbindgen could not parse libdpdk's headers: {e}\n\n"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write the bindings");

    let mut build = cc::Build::new();
    build
        .file("shim.c")
        .file(wrappers.with_extension("c"))
        .include(".");
    for flag in &cflags {
        if let Some(dir) = flag.strip_prefix("-I") {
            build.include(dir);
        } else {
            build.flag(flag);
        }
    }
    // DPDK's headers trip a few of gcc's warnings that are not ours to fix.
    build.warnings(false);
    build.compile("contiv_dpdk_shim");

    // The shim calls into libdpdk, so the DPDK libraries come after it on the link line.
    for lib_name in &lib.libs {
        println!("cargo:rustc-link-lib={lib_name}");
    }
    // The ring PMD's own API (`rte_eth_from_rings`, for port pairs joined by rings) and
    // the vdev bus's (`rte_vdev_init`) are
    // not in libdpdk's link line: drivers are plugins. Linking them is harmless, the EAL's
    // plugin loader finds the same libraries already loaded.
    println!("cargo:rustc-link-lib=rte_net_ring");
    println!("cargo:rustc-link-lib=rte_bus_vdev");
    for path in &lib.link_paths {
        println!("cargo:rustc-link-search=native={}", path.display());
    }
}
