//! The contiv-ksr binary: started as a DaemonSet would, against the simulated API server
//! and a real etcd, judged by its /readyz and /metrics.
#![cfg(feature = "etcd")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use contiv_store::etcd_server::EtcdServer;
use contiv_store::Store;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nhost: x\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    let code = r.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, r.split("\r\n\r\n").nth(1).unwrap_or("").to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reflects_and_reports_ready() {
    let (api, url) = start_api().await;
    populate(&api);
    let etcd = EtcdServer::start("ksr-bin").expect("etcd starts");
    let mut child = Command::new(env!("CARGO_BIN_EXE_contiv-ksr"))
        .args([
            "--server",
            &url,
            "--etcd",
            &etcd.endpoint(),
            "--http",
            "127.0.0.1:0",
            "--identity",
            "bin-test",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("contiv-ksr starts");
    let stderr = child.stderr.take().unwrap();
    let _guard = Killed(child);
    let addr = tokio::task::spawn_blocking(move || {
        for line in BufReader::new(stderr).lines() {
            let line = line.ok()?;
            if let Some(rest) = line.split("on http://").nth(1) {
                return Some(rest.trim().to_string());
            }
        }
        None
    })
    .await
    .unwrap()
    .expect("contiv-ksr says where it serves");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = addr.clone();
        let ready = tokio::task::spawn_blocking(move || http_get(&a, "/readyz"))
            .await
            .unwrap();
        if matches!(ready, Some((200, ref b)) if b.contains("leader")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ready as leader within 20 s: {ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = addr.clone();
    let (code, metrics) = tokio::task::spawn_blocking(move || http_get(&a, "/metrics"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("contiv_ksr_leader 1")
            && metrics.contains("contiv_ksr_objects{kind=\"pod\"} 4"),
        "{metrics}"
    );
    let store = etcd.connect().await.unwrap();
    converged(&api, &store, Duration::from_secs(10)).await;
    assert_eq!(
        store
            .get("/contiv/ksr/leader")
            .await
            .unwrap()
            .unwrap()
            .value,
        b"bin-test"
    );
}
