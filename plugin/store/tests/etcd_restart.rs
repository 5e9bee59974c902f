//! etcd killed with SIGKILL and restarted under a live watch: every change is delivered
//! once, in order; requests fail within their bound while etcd is down.
#![cfg(feature = "etcd")]

use std::time::Duration;

use contiv_store::etcd_server::EtcdServer;
use contiv_store::{EtcdStore, EventKind, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_etcd_is_killed_and_restarted() {
    let mut etcd = EtcdServer::start("restart").expect("etcd starts");
    let mut cfg = etcd.config();
    cfg.request_timeout = Duration::from_secs(1);
    cfg.connect_timeout = Duration::from_millis(500);
    let s = EtcdStore::connect(cfg).await.unwrap();
    let mut w = s.watch("/r/", 0).await.unwrap();
    for i in 0..5 {
        s.put(&format!("/r/{i}"), vec![i]).await.unwrap();
    }
    etcd.kill();
    let started = tokio::time::Instant::now();
    let down = s.put("/r/while-down", vec![]).await;
    assert!(
        down.as_ref().is_err_and(|e| e.is_transient()),
        "a clean transient error while down: {down:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "within the request bound, took {:?}",
        started.elapsed()
    );
    etcd.restart().expect("etcd restarts on its data");
    // The client reconnects by itself; retry until it does, with a bound.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut i = 5u8;
    while i < 10 {
        match s.put(&format!("/r/{i}"), vec![i]).await {
            Ok(_) => i += 1,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "store back within 15 s: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let mut seen = Vec::new();
    let mut last_rev = 0;
    while seen.len() < 10 {
        let e = tokio::time::timeout(Duration::from_secs(15), w.next())
            .await
            .expect("events keep coming after the restart")
            .expect("watch open")
            .expect("no error");
        assert_eq!(e.kind, EventKind::Put);
        assert!(e.mod_revision > last_rev, "in order, no repeats");
        last_rev = e.mod_revision;
        seen.push(e.value[0]);
    }
    assert_eq!(
        seen,
        (0..10).collect::<Vec<u8>>(),
        "every change exactly once"
    );
    // And nothing more: no duplicate arrives late.
    let extra = tokio::time::timeout(Duration::from_millis(500), w.next()).await;
    assert!(
        extra.is_err(),
        "no duplicate after the last event: {extra:?}"
    );
}
