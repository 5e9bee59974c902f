//! Node IDs and pod IPs in the store, on the in-memory store and on a real etcd.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use contiv_store::Store;
use contiv_vswitch::{Ipam, IpamConfig, IpamError, NodeIdAllocator, NodeIdError};
use wait::eventually;

mod wait;

pub async fn node_ids_are_lowest_free_and_stable<S: Store + Clone>(s: &S, _other: &S) {
    let ids = NodeIdAllocator::new(s.clone(), "/contiv/", 255);
    assert_eq!(ids.allocate("a").await.unwrap(), 1);
    assert_eq!(ids.allocate("b").await.unwrap(), 2);
    assert_eq!(ids.allocate("c").await.unwrap(), 3);
    assert_eq!(
        ids.allocate("a").await.unwrap(),
        1,
        "stable across restarts"
    );
    assert_eq!(ids.release("b").await.unwrap(), Some(2));
    assert_eq!(ids.allocate("c").await.unwrap(), 3, "others keep theirs");
    assert_eq!(ids.allocate("d").await.unwrap(), 2, "the lowest free ID");
    let present: BTreeSet<String> = ["a", "d"].into_iter().map(String::from).collect();
    assert_eq!(
        ids.release_departed(&present).await.unwrap(),
        vec![3],
        "c left the cluster"
    );
    let small = NodeIdAllocator::new(s.clone(), "/other/", 2);
    small.allocate("x").await.unwrap();
    small.allocate("y").await.unwrap();
    assert!(matches!(
        small.allocate("z").await,
        Err(NodeIdError::Exhausted(2))
    ));
}

pub async fn nodes_racing_get_unique_ids<S: Store + Clone>(s: &S, other: &S) {
    let mut tasks = Vec::new();
    for i in 0..12 {
        let store = if i % 2 == 0 { s.clone() } else { other.clone() };
        tasks.push(tokio::spawn(async move {
            NodeIdAllocator::new(store, "/contiv/", 255)
                .allocate(&format!("node-{i}"))
                .await
                .unwrap()
        }));
    }
    let mut got: Vec<u32> = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap());
    }
    got.sort();
    assert_eq!(
        got,
        (1..=12).collect::<Vec<u32>>(),
        "twelve nodes, twelve distinct IDs from 1"
    );
}

fn cfg() -> IpamConfig {
    IpamConfig::for_node_id("node-1", Ipv4Addr::new(10, 1, 0, 0), 1)
}

pub async fn pod_ips_are_persisted_and_reused<S: Store + Clone>(s: &S, _other: &S) {
    let c = cfg();
    assert_eq!(c.subnet, Ipv4Addr::new(10, 1, 1, 0));
    assert_eq!(c.gateway(), Ipv4Addr::new(10, 1, 1, 1));
    let ipam = Ipam::new(s.clone(), "/contiv/", c.clone()).unwrap();
    let a = ipam.allocate("c1", "eth0", "ns/a").await.unwrap();
    let b = ipam.allocate("c2", "eth0", "ns/b").await.unwrap();
    assert_eq!(
        (a, b),
        (Ipv4Addr::new(10, 1, 1, 2), Ipv4Addr::new(10, 1, 1, 3))
    );
    // The agent crashes after persisting c3's address but before replying; the runtime
    // repeats the ADD to a new agent, which finds the same address.
    let lost_reply = ipam.allocate("c3", "eth0", "ns/c").await.unwrap();
    drop(ipam);
    let restarted = Ipam::new(s.clone(), "/contiv/", c).unwrap();
    assert_eq!(
        restarted.allocate("c3", "eth0", "ns/c").await.unwrap(),
        lost_reply
    );
    assert_eq!(
        restarted.allocate("c3", "net1", "ns/c").await.unwrap(),
        Ipv4Addr::new(10, 1, 1, 5),
        "another interface, another address"
    );
    assert_eq!(restarted.release("c1", "eth0").await.unwrap(), Some(a));
    assert_eq!(
        restarted.release("c1", "eth0").await.unwrap(),
        None,
        "DEL again succeeds"
    );
    assert_eq!(
        restarted.release("never", "eth0").await.unwrap(),
        None,
        "DEL of a container never seen succeeds"
    );
    assert_eq!(
        restarted.allocate("c4", "eth0", "ns/d").await.unwrap(),
        a,
        "the freed address is reused"
    );
    let stored = s
        .get("/contiv/ipam/node-1/10.1.1.3")
        .await
        .unwrap()
        .expect("persisted");
    assert!(String::from_utf8_lossy(&stored.value).contains("\"container_id\":\"c2\""));
    let valid: BTreeSet<(String, String)> = [("c2", "eth0"), ("c4", "eth0")]
        .into_iter()
        .map(|(a, b)| (a.into(), b.into()))
        .collect();
    let freed = restarted.release_all_except(&valid).await.unwrap();
    assert_eq!(
        freed,
        vec![Ipv4Addr::new(10, 1, 1, 4), Ipv4Addr::new(10, 1, 1, 5)],
        "GC frees what the runtime no longer has"
    );
}

pub async fn concurrent_adds_never_share_an_address<S: Store + Clone>(s: &S, other: &S) {
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = if i % 2 == 0 { s.clone() } else { other.clone() };
        tasks.push(tokio::spawn(async move {
            Ipam::new(store, "/contiv/", cfg())
                .unwrap()
                .allocate(&format!("c{i}"), "eth0", "ns/p")
                .await
                .unwrap()
        }));
    }
    let mut ips = BTreeSet::new();
    for t in tasks {
        assert!(ips.insert(t.await.unwrap()), "an address handed out twice");
    }
    assert_eq!(ips.len(), 40);
}

pub async fn a_full_subnet_is_a_clear_error<S: Store + Clone>(s: &S, _other: &S) {
    let c = IpamConfig {
        node: "tiny".into(),
        subnet: Ipv4Addr::new(10, 1, 9, 0),
        prefix_len: 29,
    };
    let ipam = Ipam::new(s.clone(), "/contiv/", c).unwrap();
    for i in 0..5 {
        ipam.allocate(&format!("c{i}"), "eth0", "ns/p")
            .await
            .unwrap();
    }
    let e = ipam.allocate("c5", "eth0", "ns/p").await.unwrap_err();
    assert!(matches!(e, IpamError::Exhausted { .. }));
    assert_eq!(
        e.to_string(),
        "the pod subnet 10.1.9.0/29 of node tiny has no free address"
    );
    assert_eq!(
        ipam.allocations().await.unwrap().len(),
        5,
        "nothing half-made"
    );
    assert!(matches!(
        Ipam::new(
            s.clone(),
            "/contiv/",
            IpamConfig {
                node: "x".into(),
                subnet: Ipv4Addr::new(10, 1, 9, 0),
                prefix_len: 31
            }
        ),
        Err(IpamError::SubnetTooSmall(31))
    ));
}

macro_rules! suite {
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

            case!(node_ids_are_lowest_free_and_stable);
            case!(nodes_racing_get_unique_ids);
            case!(pod_ips_are_persisted_and_reused);
            case!(concurrent_adds_never_share_an_address);
            case!(a_full_subnet_is_a_clear_error);
        }
    };
}

struct Memory;

impl Memory {
    async fn clients(&self) -> (contiv_store::MemoryStore, contiv_store::MemoryStore) {
        let s = contiv_store::MemoryStore::new();
        (s.clone(), s)
    }
}

suite!(memory, Memory);

#[cfg(feature = "etcd")]
mod etcd_fixture {
    use contiv_store::etcd_server::EtcdServer;
    use contiv_store::EtcdStore;

    pub struct Etcd(pub EtcdServer);

    impl Etcd {
        pub fn start() -> Etcd {
            Etcd(EtcdServer::start("vswitch").expect("etcd starts"))
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
suite!(etcd, etcd_fixture::Etcd::start());

#[tokio::test]
async fn a_node_object_deleted_frees_its_id() {
    let store = contiv_store::MemoryStore::new();
    let ids = NodeIdAllocator::new(store.clone(), "/contiv/", 255);
    assert_eq!(ids.allocate("me").await.unwrap(), 1);
    assert_eq!(ids.allocate("b").await.unwrap(), 2);
    assert_eq!(ids.allocate("c").await.unwrap(), 3);
    let mut after = 0;
    for n in ["me", "b", "c"] {
        after = store
            .put(&format!("/contiv/k8s/node/{n}"), b"{}".to_vec())
            .await
            .unwrap();
    }
    let follower = NodeIdAllocator::new(store.clone(), "/contiv/", 255);
    // From the revision of the last put: the deletions below are seen however late the
    // follower's watch starts.
    let task = tokio::spawn(async move { follower.follow_departures("me", Some(after)).await });
    store.delete("/contiv/k8s/node/b").await.unwrap();
    let list = || async {
        ids.list()
            .await
            .unwrap()
            .into_iter()
            .map(|(i, n, _)| (i, n))
            .collect::<Vec<_>>()
    };
    let left = eventually(Duration::from_secs(5), "b's ID freed", || async {
        let l = list().await;
        (l.len() == 2).then_some(l)
    })
    .await;
    assert_eq!(left, [(1, "me".to_string()), (3, "c".to_string())]);
    // Its own object going away never frees its own ID (a re-registering node).
    store.delete("/contiv/k8s/node/me").await.unwrap();
    store.delete("/contiv/k8s/node/c").await.unwrap();
    let left = eventually(Duration::from_secs(5), "c's ID freed", || async {
        let l = list().await;
        (l.len() == 1).then_some(l)
    })
    .await;
    assert_eq!(left, [(1, "me".to_string())]);
    task.abort();
}
