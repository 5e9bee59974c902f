//! KSR against the simulated API server and a real etcd.
#![cfg(feature = "etcd")]

mod common;

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use contiv_sim::apiserver::Kind;
use contiv_store::etcd_server::EtcdServer;
use contiv_store::{EtcdStore, Store};
use serde_json::json;

async fn etcd(tag: &str) -> (EtcdServer, EtcdStore) {
    let server = EtcdServer::start(tag).expect("etcd starts");
    let mut cfg = server.config();
    cfg.request_timeout = Duration::from_secs(2);
    cfg.connect_timeout = Duration::from_millis(500);
    let store = EtcdStore::connect(cfg).await.unwrap();
    (server, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_pods_are_reflected() {
    let (api, url) = start_api().await;
    let (_etcd, store) = etcd("ksr-1000").await;
    api.set_endpoint_controller(false);
    for i in 0..1000u32 {
        let name = format!("p{i:04}");
        api.create(
            Kind::Pod,
            Some("default"),
            pod(&name, "load", &format!("node-{}", i % 10)),
        )
        .unwrap();
        api.set_pod_status(
            "default",
            &name,
            Some(Ipv4Addr::from(0x0a01_0000 + i)),
            "Running",
        )
        .unwrap();
    }
    let ksr = spawn_ksr(&url, store.clone(), "ksr-a", 3);
    converged(&api, &store, Duration::from_secs(60)).await;
    assert_eq!(store.list("/contiv/k8s/pod/").await.unwrap().0.len(), 1000);
    ksr.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_against_a_stale_store_converges() {
    let (api, url) = start_api().await;
    let (_etcd, store) = etcd("ksr-stale").await;
    populate(&api);
    // What an earlier KSR left: a pod that has since gone, a wrong value, and nothing
    // for objects created since.
    store
        .put(
            "/contiv/k8s/pod/shop/ghost",
            b"{\"v\":1,\"obj\":{}}".to_vec(),
        )
        .await
        .unwrap();
    store
        .put(
            "/contiv/k8s/pod/shop/web-0",
            b"{\"v\":1,\"obj\":{\"stale\":true}}".to_vec(),
        )
        .await
        .unwrap();
    store
        .put("/contiv/k8s/service/gone/svc", b"{}".to_vec())
        .await
        .unwrap();
    let ksr = spawn_ksr(&url, store.clone(), "ksr-b", 3);
    converged(&api, &store, Duration::from_secs(30)).await;
    assert!(store
        .get("/contiv/k8s/pod/shop/ghost")
        .await
        .unwrap()
        .is_none());
    assert!(ksr.metrics.deletes.load(Ordering::Relaxed) >= 2);
    ksr.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_mid_stream_and_restarted_converges() {
    let (api, url) = start_api().await;
    let (mut etcd, store) = etcd("ksr-kill").await;
    populate(&api);
    let ksr = spawn_ksr(&url, store.clone(), "ksr-c", 4);
    converged(&api, &store, Duration::from_secs(30)).await;
    etcd.kill();
    // The cluster changes while the store is down.
    api.delete(Kind::Pod, Some("shop"), "web-3").unwrap();
    api.create(Kind::Pod, Some("shop"), pod("while-down", "web", "node-2"))
        .unwrap();
    api.set_pod_status(
        "shop",
        "while-down",
        Some(Ipv4Addr::new(10, 1, 1, 99)),
        "Running",
    )
    .unwrap();
    api.patch(
        Kind::Namespace,
        None,
        "shop",
        &json!({"metadata": {"labels": {"team": "b"}}}),
    )
    .unwrap();
    // KSR tries to write those changes and must meet the outage before etcd returns.
    let metrics = ksr.metrics.clone();
    eventually(
        "KSR meets the store outage",
        Duration::from_secs(20),
        || metrics.store_errors.load(Ordering::Relaxed) > 0,
    )
    .await;
    etcd.restart().expect("etcd restarts");
    converged(&api, &store, Duration::from_secs(45)).await;
    assert!(
        ksr.metrics.store_errors.load(Ordering::Relaxed) > 0,
        "the outage was seen"
    );
    ksr.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_writes_and_the_standby_takes_over() {
    let (api, url) = start_api().await;
    let (_etcd, store) = etcd("ksr-ha").await;
    populate(&api);
    let ttl = 3;
    let a = spawn_ksr(&url, store.clone(), "ksr-a", ttl);
    let b = spawn_ksr(&url, store.clone(), "ksr-b", ttl);
    converged(&api, &store, Duration::from_secs(30)).await;
    let leaders = |x: &Ksr| x.metrics.is_leader.load(Ordering::Relaxed);
    eventually("one leader", Duration::from_secs(10), || {
        leaders(&a) ^ leaders(&b)
    })
    .await;
    let (leader, standby) = if leaders(&a) { (a, b) } else { (b, a) };
    assert_eq!(
        standby.metrics.writes.load(Ordering::Relaxed),
        0,
        "the standby never wrote"
    );
    let holder = store.get("/contiv/ksr/leader").await.unwrap().unwrap();
    // Kill the leader without a goodbye: its lease must run out.
    leader.task.abort();
    let killed = tokio::time::Instant::now();
    eventually(
        "the standby leads",
        Duration::from_secs(ttl as u64 + 5),
        || leaders(&standby),
    )
    .await;
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(ttl as u64 + 3),
        "took over within the lease time: {took:?}"
    );
    let now = store.get("/contiv/ksr/leader").await.unwrap().unwrap();
    assert_ne!(now.value, holder.value, "the leader key changed hands");
    api.create(
        Kind::Pod,
        Some("shop"),
        pod("after-failover", "web", "node-1"),
    )
    .unwrap();
    converged(&api, &store, Duration::from_secs(20)).await;
    assert!(standby.metrics.writes.load(Ordering::Relaxed) > 0);
    standby.task.abort();
}
