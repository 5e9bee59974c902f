//! The contiv-ksr binary.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use contiv_ksr::{run, serve_health, EndpointsSource, KsrConfig, Metrics};
use contiv_store::{EtcdConfig, EtcdStore};

#[derive(Parser)]
#[command(
    name = "contiv-ksr",
    about = "Reflects the Kubernetes API into the contiv store",
    version
)]
struct Args {
    /// etcd endpoints, comma separated.
    #[arg(long, default_value = "http://127.0.0.1:2379", value_delimiter = ',')]
    etcd: Vec<String>,
    /// The API server (plain HTTP, for the simulated one); default: in-cluster or
    /// kubeconfig, as kubectl finds it.
    #[arg(long)]
    server: Option<String>,
    /// Store prefix.
    #[arg(long, default_value = "/contiv/")]
    prefix: String,
    /// Name in the leader key (default: the host name and process id).
    #[arg(long)]
    identity: Option<String>,
    /// Leader lease TTL in seconds.
    #[arg(long, default_value_t = 5)]
    lease_ttl: i64,
    /// Reflect Endpoints instead of EndpointSlices (clusters older than 1.21).
    #[arg(long)]
    legacy_endpoints: bool,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "127.0.0.1:9191")]
    http: std::net::SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "ksr".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    let client = match &args.server {
        Some(url) => kube::Client::try_from(kube::Config::new(
            url.parse().context("--server is not a URL")?,
        ))?,
        None => kube::Client::try_default()
            .await
            .context("no Kubernetes configuration found (use --server)")?,
    };
    let store = EtcdStore::connect(EtcdConfig::new(args.etcd.clone()))
        .await
        .context("etcd")?;
    let mut config = KsrConfig::new(&identity);
    config.prefix = args.prefix;
    config.lease_ttl_secs = args.lease_ttl;
    if args.legacy_endpoints {
        config.endpoints_source = EndpointsSource::Endpoints;
    }
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("cannot listen on {}", args.http))?;
    let bound = listener.local_addr().context("health address")?;
    // On stderr as one plain line, so scripts and tests can find the port (with `:0`).
    eprintln!("contiv-ksr: /healthz /readyz /metrics on http://{bound}");
    tokio::spawn(serve_health(listener, metrics.clone()));
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    tracing::info!(%identity, etcd = ?args.etcd, "contiv-ksr starting");
    run(client, store, config, metrics, shutdown)
        .await
        .context("ksr")?;
    Ok(())
}
