//! The simulated API server on turmoil's simulated network and clock, as the simulated
//! cluster will run it: the same `serve_connection`, a client on another host, and
//! bookmarks arriving on simulated time.

use std::time::Duration;

use bytes::Bytes;
use contiv_sim::apiserver::{serve_connection, ApiServer, Kind};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

async fn connect(
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, Box<dyn std::error::Error>> {
    let stream = turmoil::net::TcpStream::connect("api:6443").await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

#[test]
fn lists_and_watches_with_bookmarks_on_simulated_time() {
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(60))
        .build();
    sim.host("api", || async {
        let server = ApiServer::new();
        server
            .create(
                Kind::Pod,
                Some("default"),
                json!({"metadata": {"name": "p1"}}),
            )
            .unwrap();
        let listener = turmoil::net::TcpListener::bind("0.0.0.0:6443").await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let server = server.clone();
            tokio::spawn(async move {
                let _ = serve_connection(stream, server).await;
            });
        }
    });
    sim.client("client", async {
        let mut c = connect().await?;
        let resp = c
            .send_request(
                Request::get("/api/v1/namespaces/default/pods")
                    .header("host", "api")
                    .body(Empty::new())?,
            )
            .await?;
        assert_eq!(resp.status(), 200);
        let list: Value = serde_json::from_slice(&resp.into_body().collect().await?.to_bytes())?;
        assert_eq!(list["items"][0]["metadata"]["name"], "p1");
        let rv = list["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string();
        // A watch from that version that asks for bookmarks gets one within the bookmark
        // interval (5 s, simulated).
        let mut w = connect().await?;
        let uri = format!(
            "/api/v1/pods?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=30"
        );
        let resp = w
            .send_request(Request::get(uri).header("host", "api").body(Empty::new())?)
            .await?;
        let mut body = resp.into_body();
        let started = tokio::time::Instant::now();
        let mut buf = Vec::new();
        let bookmark = loop {
            let frame = body.frame().await.expect("the watch stays open")?;
            if let Some(d) = frame.data_ref() {
                buf.extend_from_slice(d);
            }
            if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let ev: Value = serde_json::from_slice(&line)?;
                if ev["type"] == "BOOKMARK" {
                    break ev;
                }
            }
        };
        assert!(bookmark["object"]["metadata"]["resourceVersion"]
            .as_str()
            .is_some());
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(4) && waited <= Duration::from_secs(6),
            "bookmark after {waited:?} of simulated time"
        );
        Ok(())
    });
    sim.run().unwrap();
}
