//! `contiv-harness dump`: fetches a contiv-vswitch agent's `/dump` and shows desired
//! against applied state as a table a person can read; and the small HTTP/1.0 client
//! the harness uses for the agents, contiv-ksr and the API server.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("{0:?} is not http://host:port")]
    Url(String),
    #[error("cannot reach the agent at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("the agent answered {status}: {body}")]
    Status { status: String, body: String },
    #[error("the dump is not JSON: {0}")]
    Json(String),
}

/// One HTTP/1.0 request to `hostport` (`127.0.0.1:9999`), with a JSON body when given;
/// returns the status code and the body. Bounded: 3 s to connect, 10 s to answer.
pub fn http_request(
    hostport: &str,
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> Result<(u16, String), DumpError> {
    let connect_err = |reason: String| DumpError::Connect {
        addr: hostport.into(),
        reason,
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| connect_err(e.to_string()))?
        .next()
        .ok_or_else(|| connect_err("no address".into()))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| connect_err(e.to_string()))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let request = match json_body {
        Some(b) => format!(
            "{method} {path} HTTP/1.0\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ),
        None => format!("{method} {path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n"),
    };
    s.write_all(request.as_bytes())
        .map_err(|e| connect_err(e.to_string()))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| connect_err(e.to_string()))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| DumpError::Status {
            status: status_line.into(),
            body: body.trim().into(),
        })?;
    Ok((status, body.to_string()))
}

/// GETs `/dump` from the agent at `url` (`http://127.0.0.1:9999`).
pub fn fetch_dump(url: &str) -> Result<Value, DumpError> {
    let hostport = url
        .strip_prefix("http://")
        .map(|r| r.trim_end_matches('/'))
        .filter(|r| !r.is_empty() && !r.contains('/'))
        .ok_or_else(|| DumpError::Url(url.into()))?;
    let (status, body) = http_request(hostport, "GET", "/dump", None)?;
    if status != 200 {
        return Err(DumpError::Status {
            status: status.to_string(),
            body: body.trim().into(),
        });
    }
    serde_json::from_str(&body).map_err(|e| DumpError::Json(e.to_string()))
}

/// The dump as text: the node, each item's state, ports, routes and allocations.
pub fn render_dump(d: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    let _ = writeln!(
        out,
        "node {} (ID {}), pod subnet {}, {}",
        s(&d["node"]),
        d["node_id"],
        s(&d["pod_subnet"]),
        if d["converged"] == true {
            "converged: applied = desired"
        } else {
            "NOT converged"
        }
    );
    let _ = writeln!(out, "\n{:<48} {:<10} details", "item", "state");
    for i in d["items"].as_array().into_iter().flatten() {
        let state = s(&i["state"]);
        let details = match state.as_str() {
            "pending" => format!("waiting for {}", i["missing"]),
            "failed" => format!(
                "{} (attempt {}, retry in {} ms)",
                s(&i["error"]),
                i["attempts"],
                i["retry_in_ms"]
            ),
            _ => i["desired"]
                .as_str()
                .or(i["applied"].as_str())
                .unwrap_or_default()
                .chars()
                .take(90)
                .collect(),
        };
        let _ = writeln!(out, "{:<48} {:<10} {details}", s(&i["key"]), state);
    }
    let _ = writeln!(out, "\nports:");
    for p in d["ports"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  {:>4}  {}", p[0], s(&p[1]));
    }
    let _ = writeln!(out, "routes (vrf 0):");
    for r in d["routes"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  {}", s(r));
    }
    let _ = writeln!(out, "allocations:");
    for a in d["allocations"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  {:<15} {} {}", s(&a[0]), s(&a[1]), s(&a[2]));
    }
    let sessions = d["nat_sessions"].as_array().map_or(&[][..], Vec::as_slice);
    let count = d["nat_session_count"]
        .as_u64()
        .unwrap_or(sessions.len() as u64);
    let _ = writeln!(out, "source NAT sessions: {count}");
    for n in sessions {
        let _ = writeln!(out, "  {}", s(n));
    }
    if count > sessions.len() as u64 {
        let _ = writeln!(out, "  ... and {} more", count - sessions.len() as u64);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_each_state() {
        let d: Value = serde_json::from_str(
            r#"{"node":"n1","node_id":1,"pod_subnet":"10.1.1.0/24","converged":false,
            "items":[{"key":"pod/c1/eth0/interface","state":"applied","desired":"PodInterface(..)","applied":"PodInterface(..)"},
                     {"key":"pod/c1/eth0/route","state":"pending","missing":["pod/c1/eth0/interface"],"desired":"x","applied":null},
                     {"key":"node/uplink","state":"failed","error":"no such interface","attempts":3,"retry_in_ms":800,"desired":"x","applied":null}],
            "ports":[[0,"contiv-host"]],"routes":["10.1.1.2/32 -> via 10.1.1.2 port 1"],
            "allocations":[["10.1.1.2","c1","eth0"]],"static_neighbours":1,
            "nat_sessions":["udp 10.1.1.2:4000 -> 192.0.2.1:53 as 192.168.16.1:1024, idle 0.5 s"],
            "nat_session_count":3}"#,
        )
        .unwrap();
        let t = render_dump(&d);
        assert!(t.contains("NOT converged"));
        assert!(t.contains("waiting for [\"pod/c1/eth0/interface\"]"));
        assert!(t.contains("no such interface (attempt 3, retry in 800 ms)"));
        assert!(t.contains("10.1.1.2        c1 eth0"));
        assert!(t.contains("source NAT sessions: 3\n  udp 10.1.1.2:4000 -> 192.0.2.1:53"));
        assert!(t.contains("... and 2 more"));
        assert!(fetch_dump("localhost:1").is_err());
    }
}
