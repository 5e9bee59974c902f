//! Shared by the KSR tests: a simulated API server, a KSR task, and the convergence
//! oracle (the store holds exactly the model documents of the API's objects).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use contiv_ksr::{KsrConfig, Metrics};
use contiv_model::{encode, Resource};
use contiv_sim::apiserver::{serve, ApiServer, Kind, Query};
use contiv_store::Store;
use serde_json::{json, Value};

pub async fn start_api() -> (ApiServer, String) {
    let server = ApiServer::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, server.clone()));
    (server, url)
}

pub struct Ksr {
    pub metrics: Arc<Metrics>,
    pub task: tokio::task::JoinHandle<()>,
    pub stop: tokio::sync::watch::Sender<bool>,
}

pub fn spawn_ksr<S: Store + Clone>(url: &str, store: S, identity: &str, ttl: i64) -> Ksr {
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let mut config = KsrConfig::new(identity);
    config.lease_ttl_secs = ttl;
    config.max_backoff = Duration::from_millis(500);
    let metrics = Arc::new(Metrics::default());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let m = metrics.clone();
    let task = tokio::spawn(async move {
        contiv_ksr::run(client, store, config, m, shutdown)
            .await
            .unwrap();
    });
    Ksr {
        metrics,
        task,
        stop,
    }
}

fn docs_of<K, M>(api: &ApiServer, kind: Kind, out: &mut BTreeMap<String, Vec<u8>>)
where
    K: serde::de::DeserializeOwned,
    M: Resource + for<'a> TryFrom<&'a K, Error = contiv_model::ModelError>,
{
    for v in api.list(kind, &Query::default()).unwrap().items {
        let k: K = serde_json::from_value(v).unwrap();
        if let Ok(m) = M::try_from(&k) {
            out.insert(format!("/contiv/{}", m.key()), encode(&m));
        }
    }
}

/// What the store must hold, computed from the API's objects.
pub fn expected(api: &ApiServer) -> BTreeMap<String, Vec<u8>> {
    use k8s_openapi::api::{
        core::v1 as core, discovery::v1 as discovery, networking::v1 as networking,
    };
    let mut out = BTreeMap::new();
    docs_of::<core::Namespace, contiv_model::Namespace>(api, Kind::Namespace, &mut out);
    docs_of::<core::Node, contiv_model::Node>(api, Kind::Node, &mut out);
    docs_of::<core::Pod, contiv_model::Pod>(api, Kind::Pod, &mut out);
    docs_of::<core::Service, contiv_model::Service>(api, Kind::Service, &mut out);
    docs_of::<discovery::EndpointSlice, contiv_model::EndpointSlice>(
        api,
        Kind::EndpointSlice,
        &mut out,
    );
    docs_of::<networking::NetworkPolicy, contiv_model::NetworkPolicy>(
        api,
        Kind::NetworkPolicy,
        &mut out,
    );
    out
}

pub async fn reflected<S: Store>(store: &S) -> BTreeMap<String, Vec<u8>> {
    match store.list("/contiv/k8s/").await {
        Ok((kvs, _)) => kvs.into_iter().map(|kv| (kv.key, kv.value)).collect(),
        Err(_) => BTreeMap::new(),
    }
}

/// Waits until the store equals the API's view, with a bound; says what differs if not.
pub async fn converged<S: Store>(api: &ApiServer, store: &S, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let want = expected(api);
        let have = reflected(store).await;
        if want == have {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let missing: Vec<_> = want
                .keys()
                .filter(|k| have.get(*k) != want.get(*k))
                .take(5)
                .collect();
            let extra: Vec<_> = have
                .keys()
                .filter(|k| !want.contains_key(*k))
                .take(5)
                .collect();
            panic!("store did not converge within {limit:?}: {} wanted, {} held; differing {missing:?}; stale {extra:?}", want.len(), have.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn pod(name: &str, app: &str, node: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"app": app}},
           "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 8080}]}]}})
}

/// A small cluster: a namespace, two nodes, pods with IPs, a service, a policy.
pub fn populate(api: &ApiServer) {
    api.create(
        Kind::Namespace,
        None,
        json!({"metadata": {"name": "shop", "labels": {"team": "a"}}}),
    )
    .unwrap();
    for n in ["node-1", "node-2"] {
        api.create(Kind::Node, None, json!({"metadata": {"name": n}, "spec": {"podCIDR": "10.1.1.0/24"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.16.1"}], "conditions": [{"type": "Ready", "status": "True"}]}})).unwrap();
    }
    for i in 0..4u8 {
        let name = format!("web-{i}");
        api.create(Kind::Pod, Some("shop"), pod(&name, "web", "node-1"))
            .unwrap();
        api.set_pod_status(
            "shop",
            &name,
            Some(Ipv4Addr::new(10, 1, 1, 10 + i)),
            "Running",
        )
        .unwrap();
    }
    api.create(Kind::Service, Some("shop"), json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})).unwrap();
    api.create(Kind::NetworkPolicy, Some("shop"), json!({"metadata": {"name": "deny"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})).unwrap();
}
