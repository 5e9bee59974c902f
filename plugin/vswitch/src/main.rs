//! The contiv-vswitch binary: the node agent and its dataplane.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use contiv_dataplane::{Engine, EngineConfig, TableHandle};
use contiv_hw::BufferPool;
use contiv_store::{EtcdConfig, EtcdStore};
use contiv_vswitch::host::LinuxHost;
use contiv_vswitch::node::run_agent;
use contiv_vswitch::server::{bind_cni_socket, serve_cni, serve_http};
use contiv_vswitch::wiring::NodeApplier;
use contiv_vswitch::worker::DataplaneWorker;
use contiv_vswitch::{AgentConfig, AgentMetrics};

#[derive(Parser)]
#[command(
    name = "contiv-vswitch",
    about = "The contiv node agent: pod wiring over CNI, and the dataplane",
    version
)]
struct Args {
    /// The YAML configuration file.
    #[arg(long, default_value = "/etc/contiv/contiv-vswitch.yaml")]
    config: PathBuf,
}

/// Packet buffers of the node's engine: enough for every port's rings and vectors.
const POOL_BUFFERS: usize = 16 * 1024;
/// 64 KiB buffers for TCP super-frames from the pods' TAPs (4 MiB): they live only from a
/// TAP read to the write that passes them on (or their segmentation), within one poll.
const LARGE_BUFFERS: usize = 64;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let cfg = AgentConfig::load(&args.config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(run(cfg))
}

async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    let mut etcd = EtcdConfig::new(cfg.store.endpoints.clone());
    etcd.request_timeout = Duration::from_millis(cfg.store.timeout_ms);
    let store = EtcdStore::connect(etcd).await.context("etcd")?;

    let tables = TableHandle::new();
    let engine = Engine::new(
        &tables,
        BufferPool::new("vswitch", POOL_BUFFERS).with_large_buffers(LARGE_BUFFERS),
        &EngineConfig::default(),
    )
    .context("dataplane engine")?;
    let applier = NodeApplier::new(Box::new(LinuxHost), DataplaneWorker::start(engine), tables);
    let metrics = Arc::new(AgentMetrics::default());

    let listener = tokio::net::TcpListener::bind(cfg.http_listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.http_listen))?;
    let bound = listener.local_addr().context("http address")?;
    let (requests_tx, requests_rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(serve_http(listener, metrics.clone(), requests_tx.clone()));
    // On stderr as one plain line, so scripts and tests can find the port (with `:0`).
    eprintln!("contiv-vswitch: /healthz /readyz /metrics /dump on http://{bound}");

    let socket = cfg.cni_socket.clone();
    let cni = bind_cni_socket(&socket)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(serve_cni(
        cni,
        requests_tx.clone(),
        wait_stop(stop_rx.clone()),
    ));
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = stop_tx.send(true);
    });
    let name = cfg.node_name.clone();
    run_agent(
        cfg,
        store,
        applier,
        metrics,
        (requests_tx, requests_rx),
        |id| {
            eprintln!(
                "contiv-vswitch: node {name} (ID {id}), CNI on {}",
                socket.display()
            )
        },
        wait_stop(stop_rx),
    )
    .await?;
    let _ = server.await;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

async fn wait_stop(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
