//! KSR on the in-memory store.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use contiv_sim::apiserver::Kind;
use contiv_store::MemoryStore;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflects_every_kind_and_follows_changes() {
    let (api, url) = start_api().await;
    populate(&api);
    let store = MemoryStore::new();
    let ksr = spawn_ksr(&url, store.clone(), "ksr-a", 3);
    converged(&api, &store, Duration::from_secs(20)).await;
    let have = reflected(&store).await;
    for prefix in [
        "k8s/namespace/",
        "k8s/node/",
        "k8s/pod/",
        "k8s/service/",
        "k8s/endpointslice/",
        "k8s/networkpolicy/",
    ] {
        assert!(
            have.keys().any(|k| k.contains(prefix)),
            "{prefix} reflected"
        );
    }
    eventually("synced", Duration::from_secs(5), || {
        ksr.metrics.synced.load(Ordering::Relaxed)
    })
    .await;
    // Updates, deletes and new objects follow.
    api.patch(
        Kind::Pod,
        Some("shop"),
        "web-1",
        &json!({"metadata": {"labels": {"app": "web", "v": "2"}}}),
    )
    .unwrap();
    api.delete(Kind::Pod, Some("shop"), "web-2").unwrap();
    api.delete(Kind::NetworkPolicy, Some("shop"), "deny")
        .unwrap();
    api.create(Kind::Pod, Some("default"), pod("late", "db", "node-2"))
        .unwrap();
    converged(&api, &store, Duration::from_secs(20)).await;
    let metrics = ksr.metrics.render();
    assert!(
        metrics.contains("contiv_ksr_objects{kind=\"pod\"} 4"),
        "{metrics}"
    );
    assert!(metrics.contains("contiv_ksr_leader 1"));
    let _ = ksr.stop.send(true);
    ksr.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_the_model_cannot_represent_are_skipped_and_counted() {
    let (api, url) = start_api().await;
    // The simulated server stores what it is given, as a buggy or newer server might.
    api.create(
        Kind::Service,
        Some("default"),
        json!({"metadata": {"name": "bad-port"}, "spec": {"ports": [{"port": 70000}]}}),
    )
    .unwrap();
    api.create(Kind::NetworkPolicy, Some("default"), json!({"metadata": {"name": "bad-op"}, "spec": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}})).unwrap();
    api.create(
        Kind::Service,
        Some("default"),
        json!({"metadata": {"name": "good"}, "spec": {"ports": [{"port": 80}]}}),
    )
    .unwrap();
    api.create(
        Kind::NetworkPolicy,
        Some("default"),
        json!({"metadata": {"name": "good"}, "spec": {"podSelector": {}}}),
    )
    .unwrap();
    let store = MemoryStore::new();
    let ksr = spawn_ksr(&url, store.clone(), "ksr-a", 3);
    converged(&api, &store, Duration::from_secs(20)).await;
    let have = reflected(&store).await;
    assert!(have.contains_key("/contiv/k8s/service/default/good"));
    assert!(have.contains_key("/contiv/k8s/networkpolicy/default/good"));
    assert!(
        !have.keys().any(|k| k.contains("bad-")),
        "invalid objects are not in the store"
    );
    let m = ksr.metrics.render();
    assert!(
        m.contains("contiv_ksr_invalid_objects_total{kind=\"service\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("contiv_ksr_invalid_objects_total{kind=\"networkpolicy\"} 1"),
        "{m}"
    );
    // A valid object turning invalid leaves the store.
    api.patch(
        Kind::Service,
        Some("default"),
        "good",
        &json!({"spec": {"ports": [{"port": 0}]}}),
    )
    .unwrap();
    eventually(
        "the now-invalid service leaves the store",
        Duration::from_secs(10),
        || !futures_lite_block(reflected(&store)).contains_key("/contiv/k8s/service/default/good"),
    )
    .await;
    ksr.task.abort();
}

/// Polls a future to completion from a synchronous closure (the store is in memory, so
/// it is ready at once).
fn futures_lite_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_comes_back_gone_is_followed_by_a_sweep() {
    let (api, url) = start_api().await;
    populate(&api);
    let store = MemoryStore::new();
    let ksr = spawn_ksr(&url, store.clone(), "ksr-a", 3);
    converged(&api, &store, Duration::from_secs(20)).await;
    let resyncs = ksr.metrics.resyncs.load(Ordering::Relaxed);
    // The API server drops every watch and its history; a pod goes while KSR is away,
    // so no DELETED event will ever reach it: only a re-list and sweep can notice.
    api.delete_behind_watches(Kind::Pod, Some("shop"), "web-0")
        .unwrap();
    converged(&api, &store, Duration::from_secs(20)).await;
    assert!(
        ksr.metrics.resyncs.load(Ordering::Relaxed) > resyncs,
        "a resync swept the store"
    );
    assert!(
        ksr.metrics.watch_errors.load(Ordering::Relaxed) > 0,
        "the 410 was seen"
    );
    ksr.task.abort();
}
