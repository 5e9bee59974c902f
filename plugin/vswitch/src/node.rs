//! One node's agent from start to stop, as the binary and the simulated cluster both run
//! it: take the node's ID (retrying while the store is not there yet), rebuild and
//! converge, follow the node directory and node departures, serve the event loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use contiv_store::Store;
use tokio::sync::mpsc;

use crate::agent::{Agent, AgentError, AgentMetrics, Request};
use crate::config::AgentConfig;
use crate::nodeid::NodeIdAllocator;
use crate::nodes::NodeDirectory;
use crate::wiring::NodeApplier;

/// The longest wait between attempts to reach the store at start.
const MAX_START_BACKOFF: Duration = Duration::from_secs(5);
/// Wait before following the directory or departures again after the store failed.
const FOLLOW_AGAIN_AFTER: Duration = Duration::from_secs(2);

/// Runs the agent until `shutdown` resolves or `requests` closes. `ready` is called once
/// the agent has converged on what the store holds, with its node ID. Errors only when
/// the configuration cannot work (a missing DPDK build); a store that is down is waited
/// for.
pub async fn run_agent<S: Store + Clone>(
    cfg: AgentConfig,
    store: S,
    applier: NodeApplier,
    metrics: Arc<AgentMetrics>,
    requests: (mpsc::Sender<Request>, mpsc::Receiver<Request>),
    ready: impl FnOnce(u32),
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let (requests_tx, requests_rx) = requests;
    let mut wait = Duration::from_millis(200);
    let setup = loop {
        match Agent::prepare(cfg.clone(), store.clone()).await {
            Ok(s) => break s,
            Err(e @ AgentError::Uplink(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?wait, "cannot start the agent yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_START_BACKOFF);
            }
        }
    };
    let agent = Agent::start(setup, applier, metrics).await;
    ready(agent.node_id());
    // Frees the IDs of nodes whose Node object KSR removes from the store.
    let (ids_store, prefix, me) = (
        store.clone(),
        cfg.store.prefix.clone(),
        cfg.node_name.clone(),
    );
    let departures = tokio::spawn(async move {
        let ids = NodeIdAllocator::new(ids_store, &prefix, u32::MAX);
        loop {
            let e = ids.follow_departures(&me, None).await;
            tracing::warn!(error = %e, "following node departures failed; again in 2 s");
            tokio::time::sleep(FOLLOW_AGAIN_AFTER).await;
        }
    });
    // Every other node's record, for tunnels and routes.
    let (dir_store, dir_prefix, dir_tx) = (store, cfg.store.prefix.clone(), requests_tx);
    let directory = tokio::spawn(async move {
        let dir = NodeDirectory::new(dir_store, &dir_prefix);
        loop {
            let e = dir.follow(dir_tx.clone()).await;
            tracing::warn!(error = %e, "following the node directory failed; again in 2 s");
            tokio::time::sleep(FOLLOW_AGAIN_AFTER).await;
        }
    });
    agent.run(requests_rx, shutdown).await;
    departures.abort();
    directory.abort();
    Ok(())
}
