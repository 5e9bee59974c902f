//! `contiv-harness`: runs the project's scenarios and reports on them.
//!
//! `demo` is the README's main job: it needs nothing but Rust.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use contiv_sim::cluster::scenario::{parse_duration, parse_faults, Scenario};
use contiv_sim::cluster::{ClusterSpec, Transport};
use contiv_sim::router_scenario::RouterScenario;

#[derive(Parser)]
#[command(
    name = "contiv-harness",
    about = "Run and inspect contiv-rs scenarios",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A three-node cluster of the real plugin, simulated in this process: the store,
    /// the API server, contiv-ksr, an agent and dataplane per node, pods on each node
    /// talking across nodes, an agent restart and a lossy link. Prints what happens as it
    /// happens, the connectivity matrix, packets and drops per node and every check, and
    /// ends with one PASS or FAIL line.
    Demo {
        /// Seed of every choice the simulation makes: the same seed gives the same run
        /// and the same trace hash.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// A simulated cluster of any size, with a fault plan: the demo's checks for N nodes
    /// and M pods per node.
    Sim(SimArgs),
    /// Two simulated hosts and the dataplane as a router between them: pings, a UDP
    /// stream over a lossy link, expired and unroutable packets, malformed frames. Prints
    /// counters, a packet trace and the checks, and ends with one PASS or FAIL line.
    Router {
        /// Seed of every random choice (the loss pattern, payloads): the same seed gives
        /// the same run and the same trace hash.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// UDP datagrams in the stream.
        #[arg(long, default_value_t = 10_000)]
        udp: u32,
        /// Loss on the router's link to host b, 0 to 1.
        #[arg(long, default_value_t = 0.005)]
        loss: f64,
        /// Write a capture of that link here (default: a file in the temp directory).
        #[arg(long)]
        pcap: Option<PathBuf>,
        /// Do not write a capture.
        #[arg(long)]
        no_pcap: bool,
    },
    /// Real pods in network namespaces, wired to the engine by TAP ports, for trying by
    /// hand (needs root). Stays up until Ctrl-C, then removes everything it made.
    #[command(subcommand)]
    Netns(NetnsCommand),
    /// The simulated Kubernetes API server as a real HTTP server, for kubectl
    /// (`kubectl --server http://ADDR get pods`) and for contiv-ksr. Runs until Ctrl-C.
    Apiserver {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: std::net::SocketAddr,
    },
    /// A contiv-vswitch agent's desired state against what it has applied, its
    /// dataplane ports, routes and IP allocations.
    Dump {
        /// The agent's HTTP address (its `httpListen`).
        #[arg(long, default_value = "http://127.0.0.1:9999")]
        agent: String,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct SimArgs {
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, default_value_t = 2)]
    pods_per_node: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Faults, comma-separated: node-crash:node1:10s, agent-restart:node2, ksr-restart,
    /// store-outage:5s, partition:HOST:HOST:5s (nodeN, store, api, ksr),
    /// loss:node3:0.2:5s, latency:node2:50ms:5s, corrupt:node1:0.05:5s, random:N.
    #[arg(long, default_value = "")]
    faults: String,
    /// Pods deleted and made again after the faults.
    #[arg(long, default_value_t = 0)]
    churn: usize,
    /// Pod pairs probed per connectivity check.
    #[arg(long, default_value_t = 64)]
    sample: usize,
    /// Simulated time to keep running at the end (like 30s) before the last checks.
    #[arg(long)]
    duration: Option<String>,
    /// Routes between nodes on the underlay instead of VXLAN.
    #[arg(long)]
    nooverlay: bool,
    /// Run the random-fault soak's scenario for this seed (what a failing soak prints).
    #[arg(long, conflicts_with_all = ["nodes", "pods_per_node", "seed", "faults", "churn"])]
    replay: Option<u64>,
    /// Print only the events, not the report's tables.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TransportArg {
    Vxlan,
    Nooverlay,
}

#[derive(Subcommand)]
enum NetnsCommand {
    /// A cluster in network namespaces: N nodes on a bridged underlay, each with its own
    /// contiv-vswitch (AF_PACKET uplink), a real etcd, the simulated API server and
    /// contiv-ksr, pods made through contiv-cni, and an outside host. Stays up until
    /// `netns down`. Needs root, etcd, and the release binaries of contiv-vswitch,
    /// contiv-cni and contiv-ksr next to this one (see --bin-dir).
    Up {
        #[arg(long, default_value = "ctv")]
        name: String,
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        #[arg(long, default_value_t = 2)]
        pods_per_node: u32,
        #[arg(long, value_enum, default_value = "vxlan")]
        transport: TransportArg,
        /// Each node's uplink through DPDK's net_af_packet (contiv-vswitch built with
        /// `--features dpdk`) instead of the agent's own AF_PACKET port.
        #[arg(long)]
        dpdk: bool,
        /// Where contiv-vswitch, contiv-cni and contiv-ksr are (default: this program's
        /// directory).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Print the cluster's state as JSON instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Cross-node pod-to-pod TCP throughput: a 2-node `netns up` cluster over VXLAN
    /// through the engines, against the kernel's own VXLAN (`ip link add ... type
    /// vxlan`) between two namespaces on the same bridge, in one run: iperf3, 3 runs
    /// each, the median, and the ratio. Needs what `netns up` needs, and iperf3.
    BenchCluster {
        /// Seconds per iperf3 run.
        #[arg(long, default_value_t = 3)]
        seconds: u32,
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Removes a cluster made by `netns up`: processes, namespaces, links, state.
    Down {
        #[arg(long, default_value = "ctv")]
        name: String,
    },
    /// TCP throughput between two pods through the engine's TAP ports against the
    /// kernel's own path (two namespaces, veth pairs and a Linux bridge), in one run:
    /// iperf3, 3 runs each, the median. Needs root and iperf3.
    BenchPods {
        /// Seconds per iperf3 run.
        #[arg(long, default_value_t = 3)]
        seconds: u32,
    },
    /// Pods on one engine: 10.1.1.2, 10.1.1.3, ... behind the gateway 10.1.1.1.
    Pods {
        /// How many pods.
        #[arg(long, default_value_t = 2)]
        count: u8,
        /// Prefix of the namespace names (pods are PREFIX-pod1, PREFIX-pod2, ...).
        #[arg(long, default_value = "contiv")]
        prefix: String,
    },
}

/// One iperf3 TCP run from `client` to `server_ip` (whose namespace runs the server);
/// returns Gbit/s.
fn iperf3(
    server: &str,
    client: &str,
    server_ip: std::net::Ipv4Addr,
    seconds: u32,
) -> anyhow::Result<f64> {
    let exec = |ns: &str, args: &[&str]| {
        std::process::Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
    };
    let mut srv = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            server,
            "timeout",
            &(seconds * 3 + 60).to_string(),
            "iperf3",
            "-s",
            "-1",
            "-p",
            "5201",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("iperf3 server (is iperf3 installed?)")?;
    // Start the client only once the server listens (bounded): a client that races the
    // server's start can fail or hang.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let ss = exec(server, &["ss", "-Htln", "sport = :5201"])?;
        if !String::from_utf8_lossy(&ss.stdout).trim().is_empty() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = srv.kill();
            let _ = srv.wait();
            anyhow::bail!("the iperf3 server did not listen within 10 s");
        }
        std::thread::yield_now();
    }
    let limit = (seconds + 20).to_string();
    let out = exec(
        client,
        &[
            "timeout",
            &limit,
            "iperf3",
            "-c",
            &server_ip.to_string(),
            "-p",
            "5201",
            "-t",
            &seconds.to_string(),
            "-J",
            "--connect-timeout",
            "2000",
        ],
    )?;
    if !out.status.success() {
        let _ = srv.kill();
        let _ = srv.wait();
        anyhow::bail!(
            "iperf3 client failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = srv.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    // "sum_received": { ... "bits_per_second": N ... }
    let tail = text.split("\"sum_received\"").nth(1).with_context(|| {
        format!(
            "iperf3 JSON without sum_received: {}",
            text.chars().take(400).collect::<String>()
        )
    })?;
    let bps: f64 = tail
        .split("\"bits_per_second\":")
        .nth(1)
        .and_then(|s| s.split([',', '}']).next())
        .and_then(|s| s.trim().parse().ok())
        .context("iperf3 JSON without bits_per_second")?;
    Ok(bps / 1e9)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn netns_bench_pods(seconds: u32) -> anyhow::Result<ExitCode> {
    use contiv_harness::lab::{wire_pod, Netns, Worker};
    let pid = std::process::id() % 100_000;
    // Through the engine.
    let tables = contiv_dataplane::TableHandle::new();
    let mut engine = contiv_dataplane::Engine::new(
        &tables,
        contiv_hw::BufferPool::new("bench", 8192).with_large_buffers(64),
        &Default::default(),
    )?;
    let a = wire_pod(
        &mut engine,
        &tables,
        &format!("cb-a-{pid}"),
        &format!("cba{pid}"),
        std::net::Ipv4Addr::new(10, 1, 1, 2),
        Default::default(),
    )?;
    let b = wire_pod(
        &mut engine,
        &tables,
        &format!("cb-b-{pid}"),
        &format!("cbb{pid}"),
        std::net::Ipv4Addr::new(10, 1, 1, 3),
        Default::default(),
    )?;
    let worker = Worker::start(engine);
    let engine_runs: Vec<f64> = (0..3)
        .map(|_| iperf3(&b.ns.name, &a.ns.name, b.ip, seconds))
        .collect::<anyhow::Result<_>>()?;
    drop(worker);
    drop((a, b));
    // The kernel's path: the same two namespaces' shape, joined by veths to a bridge.
    let br = Netns::create(&format!("cb-br-{pid}"))?;
    let ka = Netns::create(&format!("cb-ka-{pid}"))?;
    let kb = Netns::create(&format!("cb-kb-{pid}"))?;
    let sh = |args: &[&str]| {
        let ip: Vec<&str> = std::iter::once("ip").chain(args.iter().copied()).collect();
        contiv_harness::cluster::run(&ip).map(drop)
    };
    sh(&["-n", &br.name, "link", "add", "br0", "type", "bridge"])?;
    sh(&["-n", &br.name, "link", "set", "br0", "up"])?;
    for (ns, ip, tag) in [(&ka, "10.9.0.2/24", "a"), (&kb, "10.9.0.3/24", "b")] {
        let (inner, outer) = (format!("k{tag}{pid}i"), format!("k{tag}{pid}o"));
        sh(&[
            "link", "add", "name", &inner, "netns", &ns.name, "type", "veth", "peer", "name",
            &outer, "netns", &br.name,
        ])?;
        sh(&["-n", &br.name, "link", "set", &outer, "master", "br0", "up"])?;
        sh(&["-n", &ns.name, "addr", "add", ip, "dev", &inner])?;
        sh(&["-n", &ns.name, "link", "set", &inner, "up"])?;
        sh(&["-n", &ns.name, "link", "set", "lo", "up"])?;
    }
    let kernel_runs: Vec<f64> = (0..3)
        .map(|_| {
            iperf3(
                &kb.name,
                &ka.name,
                std::net::Ipv4Addr::new(10, 9, 0, 3),
                seconds,
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let (e, k) = (median(engine_runs.clone()), median(kernel_runs.clone()));
    println!("pod-to-pod TCP, iperf3, {seconds} s runs, median of 3");
    println!("  through the engine (TAP ports):     {e:7.2} Gbit/s  runs {engine_runs:.2?}");
    println!("  kernel path (veth + Linux bridge):  {k:7.2} Gbit/s  runs {kernel_runs:.2?}");
    println!("  ratio engine/kernel:                {:7.3}", e / k);
    Ok(ExitCode::SUCCESS)
}

fn netns_bench_cluster(seconds: u32, bin_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    use contiv_harness::cluster::{down, exec_in, up, ClusterSpec, Transport};
    let harness = std::env::current_exe().context("own path")?;
    let bin_dir = match bin_dir {
        Some(d) => d,
        None => harness.parent().context("own directory")?.to_path_buf(),
    };
    let root = std::env::temp_dir().join(format!("contiv-bench-{}", std::process::id()));
    let name = format!("b{}", std::process::id() % 100_000);
    let spec = ClusterSpec {
        name: name.clone(),
        nodes: 2,
        pods_per_node: 1,
        transport: Transport::Vxlan,
        dpdk_uplink: false,
        bin_dir,
        harness,
        state_root: root.clone(),
    };
    let state = up(&spec)?;
    let measure = || -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
        let (a, b) = (&state.pods[0], &state.pods[1]);
        // The first packet towards an unresolved next hop becomes an ARP request.
        let _ = exec_in(&a.netns, &["ping", "-c", "2", "-W", "1", &b.ip.to_string()]);
        let engine: Vec<f64> = (0..3)
            .map(|_| iperf3(&b.netns, &a.netns, b.ip, seconds))
            .collect::<anyhow::Result<_>>()?;
        // The kernel's VXLAN between two namespaces on the same bridge, the same MTU.
        let bridge = state.bridge.clone().context("bridge")?;
        let mut kernel_ns = Vec::new();
        for (i, tag) in [(1, "ka"), (2, "kb")] {
            let ns = format!("{name}-{tag}");
            let veth = format!("{name}-{tag}");
            let sh = |args: &[&str]| contiv_harness::cluster::run(args).map(drop);
            sh(&["ip", "netns", "add", &ns])?;
            kernel_ns.push(ns.clone());
            sh(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            sh(&["ip", "link", "set", &veth, "master", &bridge, "up"])?;
            let under = format!("192.168.17.{i}/24");
            let peer = format!("192.168.17.{}", 3 - i);
            let over = format!("10.200.0.{i}/24");
            for args in [
                vec!["ip", "link", "set", "lo", "up"],
                vec!["ip", "addr", "add", &under, "dev", "eth0"],
                vec!["ip", "link", "set", "eth0", "up"],
                vec![
                    "ip", "link", "add", "vx0", "type", "vxlan", "id", "20", "remote", &peer,
                    "dstport", "4789", "dev", "eth0",
                ],
                vec!["ip", "link", "set", "vx0", "mtu", "1450", "up"],
                vec!["ip", "addr", "add", &over, "dev", "vx0"],
            ] {
                exec_in(&ns, &args)?;
            }
        }
        let kernel = (0..3)
            .map(|_| {
                iperf3(
                    &kernel_ns[1],
                    &kernel_ns[0],
                    std::net::Ipv4Addr::new(10, 200, 0, 2),
                    seconds,
                )
            })
            .collect::<anyhow::Result<Vec<f64>>>();
        for ns in &kernel_ns {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .output();
        }
        Ok((engine, kernel?))
    };
    let result = measure();
    down(&root, &name)?;
    let _ = std::fs::remove_dir_all(&root);
    let (engine_runs, kernel_runs) = result?;
    let (e, k) = (median(engine_runs.clone()), median(kernel_runs.clone()));
    println!("cross-node pod-to-pod TCP over VXLAN, iperf3, {seconds} s runs, median of 3");
    println!("  through the engines (TAP pods, AF_PACKET uplinks): {e:7.2} Gbit/s  runs {engine_runs:.2?}");
    println!("  kernel VXLAN (veth + bridge underlay):             {k:7.2} Gbit/s  runs {kernel_runs:.2?}");
    println!(
        "  ratio engine/kernel:                               {:7.3}",
        e / k
    );
    Ok(ExitCode::SUCCESS)
}

fn netns_pods(count: u8, prefix: &str) -> anyhow::Result<ExitCode> {
    use contiv_harness::lab::{wire_pod, Worker, POD_GATEWAY};
    anyhow::ensure!((1..=200).contains(&count), "--count must be 1 to 200");
    let tables = contiv_dataplane::TableHandle::new();
    let mut engine = contiv_dataplane::Engine::new(
        &tables,
        contiv_hw::BufferPool::new("netns-pods", 4096).with_large_buffers(64),
        &Default::default(),
    )?;
    let mut pods = Vec::new();
    for i in 1..=count {
        let ip = std::net::Ipv4Addr::new(10, 1, 1, 1 + i);
        let ns = format!("{prefix}-pod{i}");
        let tap = format!("{}-tap{i}", &prefix[..prefix.len().min(8)]);
        pods.push(
            wire_pod(&mut engine, &tables, &ns, &tap, ip, Default::default())
                .with_context(|| format!("wiring pod {ns}"))?,
        );
    }
    let worker = Worker::start(engine);
    println!("{count} pods on one engine, gateway {POD_GATEWAY}:");
    for p in &pods {
        println!(
            "  {:<16} {:<12} interface {} (engine port {})",
            p.ns.name, p.ip, p.interface, p.port
        );
    }
    if let [a, b, ..] = pods.as_slice() {
        println!("\ntry:  sudo ip netns exec {} ping {}", a.ns.name, b.ip);
    }
    println!(
        "       sudo ip netns exec {} ping {POD_GATEWAY}\n\nCtrl-C removes the pods.",
        pods[0].ns.name
    );
    let stop = worker.stopper();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async { tokio::signal::ctrl_c().await })
        .context("waiting for Ctrl-C")?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(engine) = worker.stop() {
        print!("\n{}", engine.show_interfaces());
        print!("{}", engine.show_errors());
    }
    drop(pods);
    println!("removed");
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("contiv-harness: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Netns(NetnsCommand::Pods { count, prefix }) => netns_pods(count, &prefix),
        Command::Netns(NetnsCommand::Up {
            name,
            nodes,
            pods_per_node,
            transport,
            dpdk,
            bin_dir,
            json,
        }) => {
            use contiv_harness::cluster::{up, ClusterSpec, Transport, DEFAULT_STATE_ROOT};
            let harness = std::env::current_exe().context("own path")?;
            let bin_dir = match bin_dir {
                Some(d) => d,
                None => harness.parent().context("own directory")?.to_path_buf(),
            };
            let spec = ClusterSpec {
                name,
                nodes,
                pods_per_node,
                transport: match transport {
                    TransportArg::Vxlan => Transport::Vxlan,
                    TransportArg::Nooverlay => Transport::Nooverlay,
                },
                dpdk_uplink: dpdk,
                bin_dir,
                harness,
                state_root: DEFAULT_STATE_ROOT.into(),
            };
            let state = up(&spec)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&state)?);
            } else {
                print!("{}", state.describe());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Netns(NetnsCommand::BenchCluster { seconds, bin_dir }) => {
            netns_bench_cluster(seconds, bin_dir)
        }
        Command::Netns(NetnsCommand::Down { name }) => {
            let state = contiv_harness::cluster::down(
                std::path::Path::new(contiv_harness::cluster::DEFAULT_STATE_ROOT),
                &name,
            )?;
            println!(
                "removed cluster {}: {} processes, {} namespaces",
                state.name,
                state.processes.len(),
                state.namespaces.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Netns(NetnsCommand::BenchPods { seconds }) => netns_bench_pods(seconds),
        Command::Dump { agent, json } => {
            let d = contiv_harness::agent_dump::fetch_dump(&agent)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print!("{}", contiv_harness::agent_dump::render_dump(&d));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Apiserver { listen } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("tokio runtime")?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                let addr = listener.local_addr().context("listening address")?;
                println!("simulated API server on http://{addr}");
                println!("try: kubectl --server http://{addr} get namespaces");
                let server = contiv_sim::apiserver::ApiServer::new();
                tokio::select! {
                    r = contiv_sim::apiserver::serve(listener, server) => r.context("the API server stopped")?,
                    _ = tokio::signal::ctrl_c() => println!("stopped"),
                }
                Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
            })
        }
        Command::Demo { seed } => {
            println!(
                "contiv-harness demo: a simulated 3-node cluster of the real plugin (seed {seed})\n"
            );
            run_cluster(&Scenario::demo(seed), "demo", false)
        }
        Command::Sim(a) => {
            let scenario = match a.replay {
                Some(seed) => Scenario::soak(seed),
                None => Scenario {
                    cluster: ClusterSpec {
                        nodes: a.nodes,
                        pods_per_node: a.pods_per_node,
                        seed: a.seed,
                        transport: if a.nooverlay {
                            Transport::Nooverlay
                        } else {
                            Transport::Vxlan
                        },
                    },
                    faults: parse_faults(&a.faults, a.nodes, a.seed)?,
                    churn: a.churn,
                    sample: a.sample,
                    linger: match &a.duration {
                        Some(d) => parse_duration(d)?,
                        None => std::time::Duration::ZERO,
                    },
                },
            };
            println!(
                "contiv-harness sim: {} nodes, {} pods per node, seed {}\n",
                scenario.cluster.nodes, scenario.cluster.pods_per_node, scenario.cluster.seed
            );
            run_cluster(&scenario, "sim", a.quiet)
        }
        Command::Router {
            seed,
            udp,
            loss,
            pcap,
            no_pcap,
        } => {
            anyhow::ensure!(
                (0.0..=1.0).contains(&loss),
                "--loss must be between 0 and 1, got {loss}"
            );
            let pcap = if no_pcap {
                None
            } else {
                Some(pcap.unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("contiv-demo-{seed}.pcap"))
                }))
            };
            let scenario = RouterScenario {
                seed,
                loss,
                udp_datagrams: udp,
                pcap,
                ..Default::default()
            };
            println!(
                "contiv-harness demo: the dataplane as a router between two simulated hosts\n"
            );
            let report = scenario.run().context("the demo scenario could not run")?;
            print!("{}", report.render());
            let verdict = if report.all_passed() { "PASS" } else { "FAIL" };
            println!(
                "\nrouter: {verdict} {}/{} checks, seed {seed}, trace {:016x}",
                report.passed(),
                report.checks.len(),
                report.trace_hash
            );
            Ok(if report.all_passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// Runs a cluster scenario with a progress display and prints the report.
fn run_cluster(s: &Scenario, what: &str, quiet: bool) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let out = contiv_sim::cluster::scenario::run(s, |e| {
        println!("[{:>8.3}s] {}", e.at.as_secs_f64(), e.what)
    })
    .with_context(|| format!("the simulation stopped; replay: {}", s.replay_command()))?;
    let wall = started.elapsed();
    if !quiet {
        println!(
            "\n== connectivity (UDP, last check) ==\n{}",
            out.matrix_table()
        );
        println!("== dataplanes ==");
        for (name, counts) in &out.nodes {
            match counts {
                Some(c) => {
                    println!(
                        "{name}: {} packets in, {} out, {} dropped",
                        c.received, c.transmitted, c.drops
                    );
                    for line in c.errors.lines().skip(1).filter(|l| !l.trim().is_empty()) {
                        println!("    {}", line.trim());
                    }
                }
                None => println!("{name}: down"),
            }
        }
        println!("\n== checks ==");
        for c in &out.checks {
            println!(
                "{} {}: {}",
                if c.passed { "PASS" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
    }
    println!(
        "\nsimulated {:.1} s in {:.1} s of wall time ({:.1}x)",
        out.simulated.as_secs_f64(),
        wall.as_secs_f64(),
        out.simulated.as_secs_f64() / wall.as_secs_f64().max(1e-9)
    );
    if !out.ok() {
        println!("replay: {}", s.replay_command());
    }
    println!("{}", out.verdict(what));
    Ok(if out.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
