//! A real etcd server for tests and the network-namespace cluster: Debian's `etcd` binary on free loopback ports with a
//! private data directory, killed and removed when dropped (also when a test fails).
//! Tests that need it call [`EtcdServer::start`]; it can be killed and restarted on the
//! same ports and data to test reconnection.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum EtcdServerError {
    #[error(
        "the etcd binary could not be run ({0}); install Debian's etcd-server (ci/test.sh does)"
    )]
    Spawn(std::io::Error),
    #[error("cannot prepare {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("no free loopback port: {0}")]
    Port(std::io::Error),
    #[error("etcd did not become healthy within {0:?}; its log: {1}")]
    NotHealthy(Duration, String),
}

/// A running (or stopped) etcd owned by a test.
pub struct EtcdServer {
    name: String,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    /// Detached: neither killed nor removed when dropped.
    detached: bool,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);
const HEALTHY_WITHIN: Duration = Duration::from_secs(20);

fn free_port() -> Result<u16, EtcdServerError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(EtcdServerError::Port)?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(EtcdServerError::Port)
}

impl EtcdServer {
    /// Starts an etcd whose name, data directory and ports are unique to this process
    /// and call, and waits until it answers `/health`.
    pub fn start(tag: &str) -> Result<EtcdServer, EtcdServerError> {
        let mut last = None;
        // Another process may take a port between our probe and etcd's bind: try again.
        for _ in 0..3 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("contiv-{tag}-{}-{n}", std::process::id());
            let dir = std::env::temp_dir().join(&name);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|source| EtcdServerError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
            let mut s = EtcdServer {
                name,
                dir,
                client_port: free_port()?,
                peer_port: free_port()?,
                child: None,
                detached: false,
            };
            match s.restart() {
                Ok(()) => return Ok(s),
                Err(e @ EtcdServerError::NotHealthy(..)) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(EtcdServerError::NotHealthy(HEALTHY_WITHIN, String::new())))
    }

    /// The client URL, for `EtcdConfig`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// A client configuration for this server (defaults otherwise).
    #[cfg(feature = "etcd")]
    pub fn config(&self) -> crate::EtcdConfig {
        crate::EtcdConfig::new(vec![self.endpoint()])
    }

    /// A new client of this server.
    #[cfg(feature = "etcd")]
    pub async fn connect(&self) -> Result<crate::EtcdStore, crate::StoreError> {
        crate::EtcdStore::connect(self.config()).await
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// The server's process ID while it runs (to kill it from where only a shared
    /// reference reaches).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `kill -9`: the server stops at once, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again (after [`kill`](Self::kill)) on the same ports and data.
    pub fn restart(&mut self) -> Result<(), EtcdServerError> {
        self.kill();
        let log_path = self.dir.join("etcd.log");
        let log = std::fs::File::create(&log_path).map_err(|source| EtcdServerError::Dir {
            path: log_path.display().to_string(),
            source,
        })?;
        let log_err = log.try_clone().map_err(|source| EtcdServerError::Dir {
            path: log_path.display().to_string(),
            source,
        })?;
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("{}={peer}", self.name))
            .arg("--initial-cluster-state")
            .arg("new")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(EtcdServerError::Spawn)?;
        self.child = Some(child);
        let deadline = Instant::now() + HEALTHY_WITHIN;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    break; // exited: probably a port clash
                }
            }
            if self.healthy() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(10)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        Err(EtcdServerError::NotHealthy(HEALTHY_WITHIN, tail))
    }

    /// Whether `/health` answers true.
    pub fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.client_port).into(),
            Duration::from_millis(200),
        ) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_err() {
            return false;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains("\"health\":\"true\"")
    }
}

impl EtcdServer {
    /// Leaves the server running after this handle is gone (for a cluster that outlives
    /// the command that started it); returns its process ID and data directory, which
    /// whoever stops it removes.
    pub fn detach(mut self) -> (Option<u32>, PathBuf) {
        self.detached = true;
        (self.child.as_ref().map(Child::id), self.dir.clone())
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
