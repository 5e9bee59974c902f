//! The agent's event loop on the in-memory store, without root: no pod is wired, but
//! every path that decides before touching the node is exercised (STATUS against a store
//! outage, ADD refused for a missing namespace or a store outage, GC, the dump).

use std::sync::Arc;

use contiv_cni::proto::{CniReply, CniRequest, GcRequest};
use contiv_dataplane::{Engine, EngineConfig, TableHandle};
use contiv_hw::BufferPool;
use contiv_store::{MemoryStore, Store};
use contiv_vswitch::wiring::NodeApplier;
use contiv_vswitch::worker::DataplaneWorker;
use contiv_vswitch::{Agent, AgentConfig, AgentMetrics, Request};
use tokio::sync::{mpsc, oneshot};

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
    let applier = NodeApplier::new(DataplaneWorker::start(engine), tables);
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
