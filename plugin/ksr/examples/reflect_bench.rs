//! How fast KSR reflects: 10,000 pods and 1,000 services into a real etcd from a cold
//! start, then the rate of pod updates it keeps up with. Run by `ci/bench.sh`:
//!   cargo run --release -p contiv-ksr --features etcd --example reflect_bench
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use contiv_ksr::{KsrConfig, Metrics};
use contiv_sim::apiserver::{serve, ApiServer, Kind};
use contiv_store::etcd_server::EtcdServer;
use contiv_store::Store;
use serde_json::json;

const PODS: u32 = 10_000;
const SERVICES: u32 = 1_000;
const UPDATES: u32 = 5_000;

async fn count<S: Store>(store: &S, prefix: &str) -> usize {
    store
        .list(prefix)
        .await
        .map(|(kvs, _)| kvs.len())
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let etcd = EtcdServer::start("bench").expect("etcd starts (install etcd-server)");
    let store = etcd.connect().await.expect("etcd");
    let api = ApiServer::new();
    // The bench measures KSR, not the simulated controllers.
    api.set_endpoint_controller(false);
    for i in 0..PODS {
        let name = format!("p{i:05}");
        api.create(Kind::Pod, Some("default"), json!({"metadata": {"name": name, "labels": {"app": format!("a{}", i % SERVICES)}},
            "spec": {"nodeName": format!("node-{}", i % 50), "containers": [{"name": "c", "image": "i"}]}})).unwrap();
        api.set_pod_status(
            "default",
            &name,
            Some(Ipv4Addr::from(0x0a01_0000 + i)),
            "Running",
        )
        .unwrap();
    }
    for i in 0..SERVICES {
        api.create(Kind::Service, Some("default"), json!({"metadata": {"name": format!("s{i:04}")},
            "spec": {"selector": {"app": format!("a{i}")}, "ports": [{"port": 80, "targetPort": 8080}]}})).unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, api.clone()));
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let metrics = Arc::new(Metrics::default());
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    tokio::spawn(contiv_ksr::run(
        client,
        store.clone(),
        KsrConfig::new("bench"),
        metrics.clone(),
        shutdown,
    ));
    let want = (PODS + SERVICES) as usize;
    let limit = Instant::now() + Duration::from_secs(600);
    loop {
        assert!(
            Instant::now() < limit,
            "the cold start did not finish within 10 minutes"
        );
        let have =
            count(&store, "/contiv/k8s/pod/").await + count(&store, "/contiv/k8s/service/").await;
        if have >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cold = started.elapsed();
    println!("cold start: {PODS} pods + {SERVICES} services reflected into etcd in {:.2} s ({:.0} objects/s)", cold.as_secs_f64(), want as f64 / cold.as_secs_f64());
    // Sustained: change a label on UPDATES pods as fast as the API takes them; measure
    // until the store holds the last one.
    let started = Instant::now();
    for i in 0..UPDATES {
        api.patch(
            Kind::Pod,
            Some("default"),
            &format!("p{:05}", i % PODS),
            &json!({"metadata": {"labels": {"gen": i.to_string()}}}),
        )
        .unwrap();
    }
    let last = format!("/contiv/k8s/pod/default/p{:05}", (UPDATES - 1) % PODS);
    let marker = format!("\"gen\":\"{}\"", UPDATES - 1);
    let limit = Instant::now() + Duration::from_secs(600);
    loop {
        assert!(
            Instant::now() < limit,
            "the updates were not reflected within 10 minutes"
        );
        if let Ok(Some(kv)) = store.get(&last).await {
            if String::from_utf8_lossy(&kv.value).contains(&marker) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let t = started.elapsed();
    println!(
        "sustained: {UPDATES} pod updates reflected in {:.2} s ({:.0} updates/s)",
        t.as_secs_f64(),
        UPDATES as f64 / t.as_secs_f64()
    );
    println!(
        "{}",
        metrics
            .render()
            .lines()
            .filter(
                |l| l.starts_with("contiv_ksr_writes") || l.starts_with("contiv_ksr_store_errors")
            )
            .collect::<Vec<_>>()
            .join("\n")
    );
}
