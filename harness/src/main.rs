//! `contiv-harness`: runs the project's scenarios and reports on them.
//!
//! `demo` is the README's main job: it needs nothing but Rust.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
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
    /// Two simulated hosts and the dataplane as a router between them: pings, a UDP
    /// stream over a lossy link, expired and unroutable packets, malformed frames. Prints
    /// counters, a packet trace and the checks, and ends with one PASS or FAIL line.
    Demo {
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
}

#[derive(Subcommand)]
enum NetnsCommand {
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

fn netns_pods(count: u8, prefix: &str) -> anyhow::Result<ExitCode> {
    use contiv_harness::lab::{wire_pod, Worker, POD_GATEWAY};
    anyhow::ensure!((1..=200).contains(&count), "--count must be 1 to 200");
    let tables = contiv_dataplane::TableHandle::new();
    let mut engine = contiv_dataplane::Engine::new(
        &tables,
        contiv_hw::BufferPool::new("netns-pods", 4096),
        &Default::default(),
    )?;
    let mut pods = Vec::new();
    for i in 1..=count {
        let ip = std::net::Ipv4Addr::new(10, 1, 1, 1 + i);
        let ns = format!("{prefix}-pod{i}");
        let tap = format!("{}-tap{i}", &prefix[..prefix.len().min(8)]);
        pods.push(
            wire_pod(&mut engine, &tables, &ns, &tap, ip, false)
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
        Command::Demo {
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
                "\ndemo: {verdict} {}/{} checks, seed {seed}, trace {:016x}",
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
