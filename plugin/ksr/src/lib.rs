//! contiv-ksr: the one component that talks to the Kubernetes API. It reflects Pods,
//! Namespaces, Services, EndpointSlices (or Endpoints), NetworkPolicies and Nodes into
//! the store as model documents, under `<prefix>k8s/<kind>/...`.
//!
//! - One kube-rs watcher per kind. Its initial list (and every re-list after a 410 Gone)
//!   ends in a mark-and-sweep: keys the API no longer has are deleted, so the store ends
//!   exactly equal to the API's view. Documents are written only when they changed.
//! - A store error restarts that kind's watcher after a backoff, which re-lists and
//!   sweeps again: a store outage heals by itself, nothing stale or missing remains.
//! - Only the leader writes: it holds `<prefix>ksr/leader` on a store lease, and every
//!   write is a transaction that checks it still does (fencing), so a KSR that lost its
//!   lease cannot overwrite its successor's work.
//! - Objects the model cannot represent are logged with their name, counted, skipped
//!   (and their old key removed); the rest goes on.

mod health;
mod leader;
mod reflector;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use health::serve_health;
pub use leader::Leadership;
pub use reflector::EndpointsSource;

use contiv_store::{Store, StoreError};

/// The kinds KSR reflects, in the order of its metrics.
pub const KINDS: [&str; 6] = [
    "namespace",
    "node",
    "pod",
    "service",
    "endpointslice",
    "networkpolicy",
];

#[derive(Clone, Debug)]
pub struct KsrConfig {
    /// The store prefix, ending with '/'.
    pub prefix: String,
    /// This KSR's name in the leader key.
    pub identity: String,
    /// The leader lease TTL: a dead leader is replaced within about this time.
    pub lease_ttl_secs: i64,
    pub endpoints_source: EndpointsSource,
    /// Bound of the backoff between attempts after store or API errors.
    pub max_backoff: Duration,
}

impl KsrConfig {
    pub fn new(identity: &str) -> Self {
        KsrConfig {
            prefix: "/contiv/".into(),
            identity: identity.into(),
            lease_ttl_secs: 5,
            endpoints_source: EndpointsSource::EndpointSlices,
            max_backoff: Duration::from_secs(2),
        }
    }

    pub fn leader_key(&self) -> String {
        format!("{}ksr/leader", self.prefix)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KsrError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// What `/metrics` reports.
#[derive(Default)]
pub struct Metrics {
    /// Objects currently reflected, per kind (index as in [`KINDS`]).
    pub reflected: [AtomicU64; 6],
    /// Objects skipped because the model cannot represent them, per kind.
    pub invalid: [AtomicU64; 6],
    /// Completed mark-and-sweep resyncs.
    pub resyncs: AtomicU64,
    /// Store calls that failed.
    pub store_errors: AtomicU64,
    /// Documents written and keys deleted.
    pub writes: AtomicU64,
    pub deletes: AtomicU64,
    /// Watch errors reported by the API (including 410 Gone).
    pub watch_errors: AtomicU64,
    pub is_leader: AtomicBool,
    /// Every kind has finished its first sync under the current leadership.
    pub synced: AtomicBool,
}

impl Metrics {
    pub fn kind(kind: &str) -> usize {
        KINDS.iter().position(|k| *k == kind).unwrap_or(0)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut o = String::new();
        o.push_str("# HELP contiv_ksr_objects Objects reflected into the store, by kind.\n# TYPE contiv_ksr_objects gauge\n");
        for (i, k) in KINDS.iter().enumerate() {
            o.push_str(&format!(
                "contiv_ksr_objects{{kind=\"{k}\"}} {}\n",
                self.reflected[i].load(Ordering::Relaxed)
            ));
        }
        o.push_str("# HELP contiv_ksr_invalid_objects_total Objects skipped because the model cannot represent them.\n# TYPE contiv_ksr_invalid_objects_total counter\n");
        for (i, k) in KINDS.iter().enumerate() {
            o.push_str(&format!(
                "contiv_ksr_invalid_objects_total{{kind=\"{k}\"}} {}\n",
                self.invalid[i].load(Ordering::Relaxed)
            ));
        }
        for (name, help, v) in [
            (
                "contiv_ksr_resyncs_total",
                "Completed mark-and-sweep resyncs.",
                &self.resyncs,
            ),
            (
                "contiv_ksr_store_errors_total",
                "Store calls that failed.",
                &self.store_errors,
            ),
            (
                "contiv_ksr_writes_total",
                "Documents written to the store.",
                &self.writes,
            ),
            (
                "contiv_ksr_deletes_total",
                "Keys deleted from the store.",
                &self.deletes,
            ),
            (
                "contiv_ksr_watch_errors_total",
                "Watch errors from the API server.",
                &self.watch_errors,
            ),
        ] {
            o.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                v.load(Ordering::Relaxed)
            ));
        }
        o.push_str(&format!(
            "# HELP contiv_ksr_leader Whether this KSR is the leader.\n# TYPE contiv_ksr_leader gauge\ncontiv_ksr_leader {}\n",
            u8::from(self.is_leader.load(Ordering::Relaxed))
        ));
        o
    }
}

/// Resolves once shutdown is asked for (the guard `wait_for` returns is dropped here, so
/// the caller's future stays `Send`).
async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Runs KSR until `shutdown` fires: campaign for leadership, reflect while leader, go
/// back to campaigning when the lease is lost.
pub async fn run<S: Store + Clone>(
    client: kube::Client,
    store: S,
    config: KsrConfig,
    metrics: Arc<Metrics>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(), KsrError> {
    loop {
        let leadership = tokio::select! {
            l = Leadership::acquire(&store, &config, &metrics) => l,
            _ = stopped(&mut shutdown) => return Ok(()),
        };
        tracing::info!(identity = %config.identity, "leader: reflecting");
        metrics.is_leader.store(true, Ordering::Relaxed);
        let reflecting = reflector::reflect_all(
            client.clone(),
            store.clone(),
            config.clone(),
            metrics.clone(),
            leadership.clone(),
        );
        tokio::select! {
            _ = reflecting => {}
            _ = leadership.lost() => tracing::warn!(identity = %config.identity, "leadership lost: standing by"),
            _ = stopped(&mut shutdown) => {
                leadership.resign(&store).await;
                metrics.is_leader.store(false, Ordering::Relaxed);
                return Ok(());
            }
        }
        metrics.is_leader.store(false, Ordering::Relaxed);
        metrics.synced.store(false, Ordering::Relaxed);
    }
}
