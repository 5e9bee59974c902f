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
    /// The simulated Kubernetes API server as a real HTTP server, for kubectl
    /// (`kubectl --server http://ADDR get pods`) and for contiv-ksr. Runs until Ctrl-C.
    Apiserver {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: std::net::SocketAddr,
    },
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
