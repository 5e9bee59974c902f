//! The simulated API server as real clients see it: kube-rs (the library contiv-ksr
//! uses) and kubectl.

use std::time::Duration;

use contiv_sim::apiserver::{serve, ApiServer};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, Config};

async fn start() -> (ApiServer, String) {
    let server = ApiServer::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(listener, server.clone()));
    (server, url)
}

fn client(url: &str) -> Client {
    Client::try_from(Config::new(url.parse().unwrap())).unwrap()
}

fn pod(name: &str, app: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_creates_lists_and_gets() {
    let (_server, url) = start().await;
    let c = client(&url);
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    pods.create(&PostParams::default(), &pod("a", "web"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("b", "db"))
        .await
        .unwrap();
    let web = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(web.items.len(), 1);
    assert_eq!(web.items[0].metadata.name.as_deref(), Some("a"));
    let err = pods
        .create(&PostParams::default(), &pod("a", "web"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
    let svc: Service = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}),
    )
    .unwrap();
    let svc = svcs.create(&PostParams::default(), &svc).await.unwrap();
    assert!(svc.spec.unwrap().cluster_ip.unwrap().starts_with("10.96."));
    let nss: Api<Namespace> = Api::all(c);
    assert!(nss.get("default").await.is_ok());
}

/// Collects watcher events until `done` says so, with a bound. Errors are collected
/// apart (kube-rs reports a 410 once, then lists again on the next poll).
async fn until<S>(
    stream: &mut S,
    mut done: impl FnMut(&watcher::Event<Pod>) -> bool,
) -> (Vec<watcher::Event<Pod>>, Vec<watcher::Error>)
where
    S: futures::Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> + Unpin,
{
    let (mut seen, mut errors) = (Vec::new(), Vec::new());
    loop {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("a watch event within 10 s")
            .expect("stream open");
        match item {
            Ok(e) => {
                let stop = done(&e);
                seen.push(e);
                if stop {
                    return (seen, errors);
                }
            }
            Err(e) => errors.push(e),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_watcher_follows_changes_and_relists_after_gone() {
    let (server, url) = start().await;
    let pods: Api<Pod> = Api::namespaced(client(&url), "default");
    pods.create(&PostParams::default(), &pod("a", "web"))
        .await
        .unwrap();
    let mut w = watcher(pods.clone(), watcher::Config::default()).boxed();
    let (init, errors) = until(&mut w, |e| matches!(e, watcher::Event::InitDone)).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert!(init.iter().any(
        |e| matches!(e, watcher::Event::InitApply(p) if p.metadata.name.as_deref() == Some("a"))
    ));
    pods.create(&PostParams::default(), &pod("b", "web"))
        .await
        .unwrap();
    until(
        &mut w,
        |e| matches!(e, watcher::Event::Apply(p) if p.metadata.name.as_deref() == Some("b")),
    )
    .await;
    pods.delete("a", &DeleteParams::default()).await.unwrap();
    until(
        &mut w,
        |e| matches!(e, watcher::Event::Delete(p) if p.metadata.name.as_deref() == Some("a")),
    )
    .await;
    pods.create(&PostParams::default(), &pod("c", "web"))
        .await
        .unwrap();
    until(
        &mut w,
        |e| matches!(e, watcher::Event::Apply(p) if p.metadata.name.as_deref() == Some("c")),
    )
    .await;
    // At once: "b" goes, the server forgets its history and drops its watches. The
    // client's resume gets 410 Gone, and only kube-rs' re-list can show "b" is gone.
    server
        .delete_behind_watches(contiv_sim::apiserver::Kind::Pod, Some("default"), "b")
        .unwrap();
    let (relist, errors) = until(&mut w, |e| matches!(e, watcher::Event::InitDone)).await;
    assert!(
        errors
            .iter()
            .any(|e| e.to_string().contains("410") || format!("{e:?}").contains("code: 410")),
        "the resume was refused with 410 Gone: {errors:?}"
    );
    let names: Vec<_> = relist
        .iter()
        .filter_map(|e| match e {
            watcher::Event::InitApply(p) => p.metadata.name.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["c"], "the relist shows the current state");
}

fn kubectl(url: &str, kubeconfig: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--server")
        .arg(url)
        .args(args)
        .output()
        .expect("kubectl runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_applies_and_deletes() {
    if std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CONTIV_REQUIRE_TOOLS").is_none(),
            "kubectl is required under ci/test.sh"
        );
        eprintln!("skipped: kubectl is not installed");
        return;
    }
    let (_server, url) = start().await;
    let dir = std::env::temp_dir().join(format!("contiv-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("config");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n").unwrap();
    let manifest = dir.join("objs.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
         apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: shop, labels: {app: web}}\n\
         spec: {nodeName: node-1, containers: [{name: web, image: nginx}]}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\n\
         spec: {selector: {app: web}, ports: [{port: 80}]}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: shop}\n\
         spec: {podSelector: {}, policyTypes: [Ingress]}\n",
    )
    .unwrap();
    let run = |args: Vec<String>| {
        let url = url.clone();
        let kubeconfig = kubeconfig.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                kubectl(&url, &kubeconfig, &a)
            })
            .await
            .unwrap()
        }
    };
    let m = manifest.display().to_string();
    let out = run(vec![
        "apply".into(),
        "--validate=false".into(),
        "-f".into(),
        m.clone(),
    ])
    .await;
    assert!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("pod/web-1 created")
            && text.contains("networkpolicy.networking.k8s.io/deny created"),
        "{text}"
    );
    let again = run(vec![
        "apply".into(),
        "--validate=false".into(),
        "-f".into(),
        m,
    ])
    .await;
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("pod/web-1 unchanged"),
        "apply is idempotent"
    );
    let out = run(vec![
        "-n".into(),
        "shop".into(),
        "get".into(),
        "svc".into(),
        "web".into(),
        "-o".into(),
        "json".into(),
    ])
    .await;
    let svc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("kubectl printed JSON");
    assert!(svc["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .starts_with("10.96."));
    let out = run(vec![
        "get".into(),
        "pods".into(),
        "-A".into(),
        "-l".into(),
        "app=web".into(),
        "--field-selector".into(),
        "spec.nodeName=node-1".into(),
        "-o".into(),
        "name".into(),
    ])
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pod/web-1");
    let out = run(vec![
        "-n".into(),
        "shop".into(),
        "delete".into(),
        "pod".into(),
        "web-1".into(),
    ])
    .await;
    assert!(
        out.status.success(),
        "delete: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(vec![
        "-n".into(),
        "shop".into(),
        "get".into(),
        "pod".into(),
        "web-1".into(),
    ])
    .await;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not found"));
    let _ = std::fs::remove_dir_all(&dir);
}
