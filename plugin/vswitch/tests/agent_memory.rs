//! The agent's event loop on the in-memory store, without root: no pod is wired, but
//! every path that decides before touching the node is exercised (STATUS against a store
//! outage, ADD refused for a missing namespace or a store outage, GC, the dump).

use std::sync::Arc;

use contiv_cni::proto::{CniReply, CniRequest, GcRequest};
use contiv_dataplane::{Engine, EngineConfig, TableHandle};
use contiv_hw::BufferPool;
use contiv_store::{MemoryStore, Store};
use contiv_vswitch::host::LinuxHost;
use contiv_vswitch::wiring::NodeApplier;
use contiv_vswitch::worker::DataplaneWorker;
use contiv_vswitch::{Agent, AgentConfig, AgentMetrics, Request};
use tokio::sync::{mpsc, oneshot};

mod wait;

async fn ask(
    tx: &mpsc::Sender<Request>,
    make: impl FnOnce(oneshot::Sender<CniReply>) -> Request,
) -> CniReply {
    let (rtx, rrx) = oneshot::channel();
    tx.send(make(rtx)).await.expect("the agent runs");
    rrx.await.expect("an answer")
}

#[tokio::test]
async fn decisions_without_a_node_to_wire() {
    let store = MemoryStore::new();
    let cfg = AgentConfig::from_yaml(
        "test",
        "nodeName: n1\nstore:\n  endpoints: [\"memory\"]\nhostInterconnect: false\n",
    )
    .unwrap();
    let setup = Agent::prepare(cfg, store.clone()).await.expect("node ID");
    let tables = TableHandle::new();
    let engine = Engine::new(&tables, BufferPool::new("t", 512), &EngineConfig::default()).unwrap();
    let applier = NodeApplier::new(Box::new(LinuxHost), DataplaneWorker::start(engine), tables);
    let metrics = Arc::new(AgentMetrics::default());
    let agent = Agent::start(setup, applier, metrics.clone()).await;
    assert_eq!(agent.node_id(), 1);
    let (tx, rx) = mpsc::channel(8);
    let run = tokio::spawn(agent.run(rx, std::future::pending()));

    assert_eq!(ask(&tx, Request::Status).await.error_code, 0);
    let add = |ns: &str| CniRequest {
        container_id: "c1".into(),
        netns: ns.into(),
        ifname: "eth0".into(),
        ..Default::default()
    };
    let r = ask(&tx, |t| Request::Add(add("/nonexistent/netns"), t)).await;
    assert_eq!(r.error_code, 4, "{}", r.error_msg);
    assert!(store.list("/contiv/ipam/").await.unwrap().0.is_empty());

    store.set_available(false);
    assert_eq!(ask(&tx, Request::Status).await.error_code, 50);
    // /proc/self/ns/net exists: the ADD gets as far as the store, which is down.
    let r = ask(&tx, |t| Request::Add(add("/proc/self/ns/net"), t)).await;
    assert_eq!(r.error_code, 11, "{}", r.error_msg);
    let r = ask(&tx, |t| Request::Del(add(""), t)).await;
    assert_eq!(
        r.error_code, 11,
        "DEL must be retried when the store is down"
    );
    store.set_available(true);
    let r = ask(&tx, |t| Request::Del(add(""), t)).await;
    assert_eq!(r.error_code, 0);
    let r = ask(&tx, |t| Request::Gc(GcRequest { valid: vec![] }, t)).await;
    assert_eq!(r.error_code, 0);

    let (dtx, drx) = oneshot::channel();
    tx.send(Request::Dump(dtx)).await.unwrap();
    let dump = drx.await.unwrap();
    assert!(dump.converged);
    assert_eq!(dump.pod_subnet, "10.1.1.0/24");
    assert!(
        metrics
            .render()
            .contains("contiv_vswitch_cni_errors_total 4"),
        "{}",
        metrics.render()
    );
    drop(tx);
    run.await.unwrap();
}

async fn start_agent(
    store: &MemoryStore,
    name: &str,
    transport: &str,
) -> (mpsc::Sender<Request>, tokio::task::JoinHandle<()>) {
    let cfg = AgentConfig::from_yaml(
        "test",
        &format!(
            "nodeName: {name}\nstore:\n  endpoints: [\"memory\"]\nhostInterconnect: false\nnodeToNodeTransport: {transport}\n"
        ),
    )
    .unwrap();
    let setup = Agent::prepare(cfg, store.clone()).await.expect("node ID");
    let tables = TableHandle::new();
    let engine = Engine::new(&tables, BufferPool::new("t", 512), &EngineConfig::default()).unwrap();
    let applier = NodeApplier::new(Box::new(LinuxHost), DataplaneWorker::start(engine), tables);
    let agent = Agent::start(setup, applier, Arc::new(AgentMetrics::default())).await;
    let (tx, rx) = mpsc::channel(8);
    let run = tokio::spawn(agent.run(rx, std::future::pending()));
    let dir = contiv_vswitch::nodes::NodeDirectory::new(store.clone(), "/contiv/");
    let follow_tx = tx.clone();
    tokio::spawn(async move { dir.follow(follow_tx).await });
    (tx, run)
}

async fn dump(tx: &mpsc::Sender<Request>) -> contiv_vswitch::AgentDump {
    let (dtx, drx) = oneshot::channel();
    tx.send(Request::Dump(dtx)).await.unwrap();
    drx.await.unwrap()
}

/// Polls the agent's dump until `ok` holds (bounded).
async fn dump_until(
    tx: &mpsc::Sender<Request>,
    what: &str,
    ok: impl Fn(&contiv_vswitch::AgentDump) -> bool,
) -> contiv_vswitch::AgentDump {
    wait::eventually(std::time::Duration::from_secs(5), what, || async {
        let d = dump(tx).await;
        ok(&d).then_some(d)
    })
    .await
}

#[tokio::test]
async fn nodes_find_each_other_and_forget_who_leaves() {
    let store = MemoryStore::new();
    let (a, _ra) = start_agent(&store, "node-a", "vxlan").await;
    let (b, _rb) = start_agent(&store, "node-b", "vxlan").await;
    // A routes B's pod and host subnets into the tunnel to B (ID 2, 192.168.16.2).
    let d = dump_until(&a, "A has routes to B", |d| {
        d.routes
            .iter()
            .any(|r| r == "10.1.2.0/24 -> vxlan tunnel 2")
    })
    .await;
    assert!(
        d.routes
            .iter()
            .any(|r| r == "172.30.2.0/24 -> vxlan tunnel 2"),
        "{:?}",
        d.routes
    );
    assert!(d.converged, "{:#?}", d.items);
    let tunnel = d
        .items
        .iter()
        .find(|i| i.key == "remote/2/tunnel")
        .expect("tunnel item");
    assert!(
        tunnel.desired.as_deref().unwrap().contains("192.168.16.2"),
        "{tunnel:?}"
    );
    dump_until(&b, "B has routes to A", |d| {
        d.routes
            .iter()
            .any(|r| r == "10.1.1.0/24 -> vxlan tunnel 1")
    })
    .await;
    // B's Node object goes (as KSR would delete it): its record and ID go, and A forgets it.
    store
        .put("/contiv/k8s/node/node-b", b"{}".to_vec())
        .await
        .unwrap();
    let rev = store.list("/contiv/k8s/node/").await.unwrap().1;
    let ids = contiv_vswitch::NodeIdAllocator::new(store.clone(), "/contiv/", 255);
    tokio::spawn(async move { ids.follow_departures("node-a", Some(rev)).await });
    store.delete("/contiv/k8s/node/node-b").await.unwrap();
    let d = dump_until(&a, "A forgot B", |d| {
        !d.routes.iter().any(|r| r.contains("tunnel 2"))
            && d.items.iter().all(|i| !i.key.starts_with("remote/"))
    })
    .await;
    assert!(d.converged);
}

#[tokio::test]
async fn nooverlay_routes_wait_for_the_uplink() {
    let store = MemoryStore::new();
    let (a, _ra) = start_agent(&store, "node-a", "nooverlay").await;
    let (_b, _rb) = start_agent(&store, "node-b", "nooverlay").await;
    let d = dump_until(&a, "A desires routes to B", |d| {
        d.items.iter().any(|i| i.key == "remote/2/routes")
    })
    .await;
    let routes = d.items.iter().find(|i| i.key == "remote/2/routes").unwrap();
    // No uplink configured: the routes wait for it rather than failing.
    assert!(
        matches!(&routes.state, contiv_vswitch::reconciler::ItemState::Pending { missing } if missing == &["node/uplink".to_string()]),
        "{routes:?}"
    );
    assert!(
        d.items.iter().all(|i| !i.key.ends_with("/tunnel")),
        "no tunnels without the overlay"
    );
}
