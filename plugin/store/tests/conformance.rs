//! One suite, every implementation: the in-memory store always, etcd (a real server
//! started per test) with the `etcd` feature, as `ci/test.sh` runs it.

use std::time::Duration;

use contiv_store::{Compare, EventKind, MemoryStore, Store, StoreError, Txn, TxnOp, WatchEvent};

/// Waits for the next watch event, with a bound.
async fn next_event(w: &mut contiv_store::Watch) -> Result<WatchEvent, StoreError> {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("a watch event within 10 s")
        .expect("the watch is still open")
}

/// Polls `cond` until it holds, with a bound.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn put_get_delete<S: Store>(s: &S, _other: &S) {
    assert_eq!(s.get("/t/a").await.unwrap(), None);
    let r1 = s.put("/t/a", b"1".to_vec()).await.unwrap();
    let r2 = s.put("/t/a", b"2".to_vec()).await.unwrap();
    assert!(r2 > r1, "revisions grow");
    let kv = s.get("/t/a").await.unwrap().expect("present");
    assert_eq!(kv.value, b"2");
    assert_eq!(kv.create_revision, r1);
    assert_eq!(kv.mod_revision, r2);
    let r3 = s.delete("/t/a").await.unwrap().expect("deleted");
    assert!(r3 > r2);
    assert_eq!(
        s.delete("/t/a").await.unwrap(),
        None,
        "deleting a missing key is not an error"
    );
    assert_eq!(s.get("/t/a").await.unwrap(), None);
    assert!(matches!(
        s.put("", b"x".to_vec()).await,
        Err(StoreError::InvalidKey(_))
    ));
}

pub async fn list_by_prefix<S: Store>(s: &S, _other: &S) {
    for k in ["/t/b/2", "/t/b/1", "/t/c/1", "/t/b/3", "/t/bb"] {
        s.put(k, k.as_bytes().to_vec()).await.unwrap();
    }
    let (kvs, rev) = s.list("/t/b/").await.unwrap();
    let keys: Vec<_> = kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/t/b/1", "/t/b/2", "/t/b/3"], "sorted, prefix only");
    assert!(kvs.iter().all(|kv| kv.mod_revision <= rev));
    let (none, _) = s.list("/t/zzz/").await.unwrap();
    assert!(none.is_empty());
}

pub async fn compare_and_swap<S: Store>(s: &S, _other: &S) {
    let r1 = s
        .compare_and_swap("/t/id/1", None, b"node-a".to_vec())
        .await
        .unwrap()
        .expect("created");
    assert_eq!(
        s.compare_and_swap("/t/id/1", None, b"node-b".to_vec())
            .await
            .unwrap(),
        None,
        "taken"
    );
    let r2 = s
        .compare_and_swap("/t/id/1", Some(r1), b"node-a2".to_vec())
        .await
        .unwrap()
        .expect("swapped");
    assert_eq!(
        s.compare_and_swap("/t/id/1", Some(r1), b"stale".to_vec())
            .await
            .unwrap(),
        None,
        "stale revision"
    );
    assert_eq!(s.get("/t/id/1").await.unwrap().unwrap().mod_revision, r2);
    assert_eq!(s.get("/t/id/1").await.unwrap().unwrap().value, b"node-a2");
}

/// Two clients increment one counter with compare-and-swap: no update is lost.
pub async fn compare_and_swap_race<S: Store + Clone>(s: &S, other: &S) {
    s.put("/t/counter", b"0".to_vec()).await.unwrap();
    async fn bump<S: Store>(s: &S, times: usize) -> usize {
        let mut conflicts = 0;
        for _ in 0..times {
            loop {
                let kv = s.get("/t/counter").await.unwrap().unwrap();
                let n: u64 = String::from_utf8(kv.value).unwrap().parse().unwrap();
                let next = (n + 1).to_string().into_bytes();
                if s.compare_and_swap("/t/counter", Some(kv.mod_revision), next)
                    .await
                    .unwrap()
                    .is_some()
                {
                    break;
                }
                conflicts += 1;
            }
        }
        conflicts
    }
    let (a, b) = (s.clone(), other.clone());
    let ta = tokio::spawn(async move { bump(&a, 50).await });
    let tb = tokio::spawn(async move { bump(&b, 50).await });
    let _conflicts = ta.await.unwrap() + tb.await.unwrap();
    let v = s.get("/t/counter").await.unwrap().unwrap().value;
    assert_eq!(v, b"100", "every increment kept");
}

pub async fn transactions<S: Store>(s: &S, _other: &S) {
    s.put("/t/x", b"old".to_vec()).await.unwrap();
    let t = Txn {
        compares: vec![
            Compare::Value("/t/x".into(), b"old".to_vec()),
            Compare::Absent("/t/y".into()),
        ],
        success: vec![
            TxnOp::Put {
                key: "/t/x".into(),
                value: b"new".to_vec(),
                lease: None,
            },
            TxnOp::Put {
                key: "/t/y".into(),
                value: b"made".to_vec(),
                lease: None,
            },
        ],
        failure: vec![TxnOp::Put {
            key: "/t/failed".into(),
            value: b"1".to_vec(),
            lease: None,
        }],
    };
    let r = s.txn(t.clone()).await.unwrap();
    assert!(r.succeeded);
    let x = s.get("/t/x").await.unwrap().unwrap();
    let y = s.get("/t/y").await.unwrap().unwrap();
    assert_eq!(
        x.mod_revision, y.mod_revision,
        "one transaction, one revision"
    );
    assert_eq!(x.mod_revision, r.revision);
    let again = s.txn(t).await.unwrap();
    assert!(!again.succeeded, "the compares no longer hold");
    assert_eq!(
        s.get("/t/failed").await.unwrap().unwrap().value,
        b"1",
        "the failure branch ran"
    );
    assert_eq!(s.get("/t/x").await.unwrap().unwrap().value, b"new");
}

pub async fn leases_expire_and_keep_alive<S: Store>(s: &S, _other: &S) {
    // etcd's minimum TTL here is 2 s (from its election timeout); ask for that.
    let short = s.grant_lease(2).await.unwrap();
    let kept = s.grant_lease(2).await.unwrap();
    let put = |key: &str, lease| Txn {
        compares: vec![],
        success: vec![TxnOp::Put {
            key: key.into(),
            value: b"v".to_vec(),
            lease: Some(lease),
        }],
        failure: vec![],
    };
    s.txn(put("/t/lease/short", short)).await.unwrap();
    s.txn(put("/t/lease/kept", kept)).await.unwrap();
    assert_eq!(
        s.get("/t/lease/short").await.unwrap().unwrap().lease,
        Some(short)
    );
    let start = tokio::time::Instant::now();
    eventually(
        "the short lease's key disappears",
        Duration::from_secs(10),
        || async {
            let _ = s.keep_alive(kept).await;
            s.get("/t/lease/short").await.unwrap().is_none()
        },
    )
    .await;
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "not before its TTL"
    );
    // Keep the other alive past several TTLs.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        s.keep_alive(kept).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(
        s.get("/t/lease/kept").await.unwrap().is_some(),
        "kept alive"
    );
    let mut w = s.watch("/t/lease/", 0).await.unwrap();
    s.revoke_lease(kept).await.unwrap();
    let e = next_event(&mut w).await.unwrap();
    assert_eq!(
        (e.kind, e.key.as_str()),
        (EventKind::Delete, "/t/lease/kept")
    );
    assert!(s.get("/t/lease/kept").await.unwrap().is_none());
    assert!(
        s.keep_alive(kept).await.is_err(),
        "a revoked lease cannot be kept alive"
    );
    let bad = Txn {
        compares: vec![],
        success: vec![TxnOp::Put {
            key: "/t/z".into(),
            value: vec![],
            lease: Some(kept),
        }],
        failure: vec![],
    };
    assert!(s.txn(bad).await.is_err(), "no put with a dead lease");
}

pub async fn watch_from_a_revision<S: Store>(s: &S, _other: &S) {
    let r1 = s.put("/t/w/a", b"1".to_vec()).await.unwrap();
    let r2 = s.put("/t/w/b", b"2".to_vec()).await.unwrap();
    s.put("/t/other", b"x".to_vec()).await.unwrap();
    let r3 = s.delete("/t/w/a").await.unwrap().unwrap();
    let mut w = s.watch("/t/w/", r2).await.unwrap();
    let e = next_event(&mut w).await.unwrap();
    assert_eq!(
        (e.kind, e.key.as_str(), e.value.as_slice(), e.mod_revision),
        (EventKind::Put, "/t/w/b", &b"2"[..], r2)
    );
    let e = next_event(&mut w).await.unwrap();
    assert_eq!(
        (e.kind, e.key.as_str(), e.mod_revision),
        (EventKind::Delete, "/t/w/a", r3)
    );
    let r4 = s.put("/t/w/c", b"3".to_vec()).await.unwrap();
    let e = next_event(&mut w).await.unwrap();
    assert_eq!(
        (e.key.as_str(), e.mod_revision),
        ("/t/w/c", r4),
        "live events follow the replay"
    );
    assert!(r1 < r2);
    // From now: only what comes after.
    let mut now = s.watch("/t/w/", 0).await.unwrap();
    let r5 = s.put("/t/w/d", b"4".to_vec()).await.unwrap();
    let e = next_event(&mut now).await.unwrap();
    assert_eq!((e.key.as_str(), e.mod_revision), ("/t/w/d", r5));
}

pub async fn watch_of_a_compacted_revision_says_so<S: Store>(s: &S, _other: &S) {
    let r1 = s.put("/t/c/a", b"1".to_vec()).await.unwrap();
    s.put("/t/c/a", b"2".to_vec()).await.unwrap();
    let r3 = s.put("/t/c/a", b"3".to_vec()).await.unwrap();
    s.compact(r3).await.unwrap();
    let result = match s.watch("/t/c/", r1).await {
        Err(e) => Err(e),
        Ok(mut w) => next_event(&mut w).await,
    };
    assert!(
        matches!(result, Err(StoreError::Compacted { .. })),
        "got {result:?}"
    );
    let mut ok = s.watch("/t/c/", r3).await.unwrap();
    assert_eq!(
        next_event(&mut ok).await.unwrap().mod_revision,
        r3,
        "from the compaction point on works"
    );
}

macro_rules! conformance {
    ($module:ident, $fixture:expr) => {
        mod $module {
            use super::*;

            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let fixture = $fixture;
                        let (a, b) = fixture.clients().await;
                        super::$name(&a, &b).await;
                    }
                };
            }

            case!(put_get_delete);
            case!(list_by_prefix);
            case!(compare_and_swap);
            case!(compare_and_swap_race);
            case!(transactions);
            case!(leases_expire_and_keep_alive);
            case!(watch_from_a_revision);
            case!(watch_of_a_compacted_revision_says_so);
        }
    };
}

struct Memory;

impl Memory {
    async fn clients(&self) -> (MemoryStore, MemoryStore) {
        let s = MemoryStore::new();
        (s.clone(), s)
    }
}

conformance!(memory, Memory);

/// A memory store served over gRPC on loopback; two clients with their own channels.
struct Remote;

impl Remote {
    async fn clients(&self) -> (contiv_store::RemoteStore, contiv_store::RemoteStore) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(contiv_store::serve_store(
            MemoryStore::new(),
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            std::future::pending(),
        ));
        let client = || {
            contiv_store::RemoteStore::connect_lazy(Duration::from_secs(5), move || {
                tokio::net::TcpStream::connect(addr)
            })
        };
        (client(), client())
    }
}

conformance!(remote, Remote);

#[cfg(feature = "etcd")]
mod etcd_fixture {
    use contiv_store::etcd_server::EtcdServer;
    use contiv_store::EtcdStore;

    /// A real etcd per test; two independent clients of it.
    pub struct Etcd(pub EtcdServer);

    impl Etcd {
        pub fn start() -> Etcd {
            Etcd(EtcdServer::start("conformance").expect("etcd starts"))
        }

        pub async fn clients(&self) -> (EtcdStore, EtcdStore) {
            (
                self.0.connect().await.unwrap(),
                self.0.connect().await.unwrap(),
            )
        }
    }
}

#[cfg(feature = "etcd")]
conformance!(etcd, etcd_fixture::Etcd::start());

/// The store's own errors arrive as the same `StoreError`; a server that is not there
/// is a transient error within the bound, never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_errors_cross_the_wire() {
    let (a, _) = Remote.clients().await;
    a.put("/k", b"1".to_vec()).await.unwrap();
    a.put("/k", b"2".to_vec()).await.unwrap();
    a.compact(3).await.unwrap();
    match a.watch("/k", 1).await {
        Ok(mut w) => match w.next().await {
            Some(Err(e)) => assert!(
                matches!(e, StoreError::Compacted { requested: 1, .. }),
                "{e}"
            ),
            other => panic!("expected Compacted, got {other:?}"),
        },
        Err(e) => assert!(
            matches!(e, StoreError::Compacted { requested: 1, .. }),
            "{e}"
        ),
    }
    assert_eq!(
        a.keep_alive(12345).await.unwrap_err(),
        StoreError::LeaseNotFound(12345)
    );
    assert!(matches!(
        a.get("").await.unwrap_err(),
        StoreError::InvalidKey(_)
    ));

    // A port nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let gone = contiv_store::RemoteStore::connect_lazy(Duration::from_secs(2), move || {
        tokio::net::TcpStream::connect(addr)
    });
    let e = gone.get("/k").await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
}
