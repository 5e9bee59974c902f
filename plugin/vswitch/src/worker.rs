//! The dataplane worker of a node: one thread that owns the engine and polls its ports,
//! and the handle through which the agent adds and removes ports while it runs.
//!
//! Port changes are messages to the worker, applied between two polls; the worker checks
//! one atomic flag per poll for them and never takes a lock in the packet path. Table
//! changes do not go through here: they are committed to the shared [`TableHandle`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contiv_dataplane::Engine;
use contiv_hw::{Port, Timestamp};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the dataplane worker has stopped")]
    Stopped,
    #[error("the dataplane worker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("engine: {0}")]
    Engine(String),
}

/// A view of the running engine, for the dump and metrics.
#[derive(Clone, Debug, Default)]
pub struct EngineView {
    pub ports: Vec<PortView>,
    pub interfaces: String,
    pub errors: String,
    /// Source NAT sessions, the first [`MAX_VIEWED_SESSIONS`] in order, and how many
    /// there are in all.
    pub nat_sessions: Vec<String>,
    pub nat_session_count: usize,
    /// Every counter of the graph (drops by reason, and the informational ones), zero
    /// or not, so that a metric series never appears out of nowhere.
    pub counters: Vec<(contiv_dataplane::Counter, u64)>,
}

/// One port of the engine, and the engine's counters of it.
#[derive(Clone, Debug, Default)]
pub struct PortView {
    pub index: u16,
    pub name: String,
    pub counters: contiv_dataplane::InterfaceCounters,
}

/// The dataplane's part of `/metrics`: whether the worker answered, and then per
/// interface, every graph counter by node and reason (drops apart from the
/// informational ones), and the NAT sessions.
pub fn render_dataplane_metrics(view: Option<&EngineView>) -> String {
    use crate::prometheus::{header, sample};
    let mut out = String::new();
    let up = "contiv_vswitch_dataplane_up";
    header(&mut out, up, "gauge", "whether the dataplane answered");
    sample(&mut out, up, &[], u64::from(view.is_some()));
    let Some(view) = view else {
        return out;
    };
    type Field = fn(&contiv_dataplane::InterfaceCounters) -> u64;
    let per_interface: [(&str, &str, Field); 5] = [
        ("rx_packets", "packets received by the dataplane", |c| {
            c.rx_packets
        }),
        ("rx_bytes", "bytes received by the dataplane", |c| {
            c.rx_bytes
        }),
        ("tx_packets", "packets the dataplane transmitted", |c| {
            c.tx_packets
        }),
        ("tx_bytes", "bytes the dataplane transmitted", |c| {
            c.tx_bytes
        }),
        ("tx_dropped", "packets the port refused to transmit", |c| {
            c.tx_dropped
        }),
    ];
    for (name, help, value) in per_interface {
        let name = format!("contiv_vswitch_dataplane_{name}_total");
        header(
            &mut out,
            &name,
            "counter",
            &format!("{help}, per interface"),
        );
        for p in &view.ports {
            sample(
                &mut out,
                &name,
                &[("interface", &p.name)],
                value(&p.counters),
            );
        }
    }
    for (drops, name, help) in [
        (
            true,
            "contiv_vswitch_dataplane_drops_total",
            "packets the dataplane dropped, by node and reason",
        ),
        (
            false,
            "contiv_vswitch_dataplane_events_total",
            "what the dataplane counts besides drops, by node",
        ),
    ] {
        header(&mut out, name, "counter", help);
        for (c, n) in view.counters.iter().filter(|(c, _)| c.is_drop() == drops) {
            sample(
                &mut out,
                name,
                &[("node", c.node()), ("reason", c.text())],
                *n,
            );
        }
    }
    let name = "contiv_vswitch_dataplane_nat_sessions";
    header(&mut out, name, "gauge", "source NAT sessions");
    sample(&mut out, name, &[], view.nat_session_count as u64);
    out
}

/// The most NAT sessions a view lists: a node can hold a hundred thousand, and the dump
/// is for a person to read.
pub const MAX_VIEWED_SESSIONS: usize = 1000;

enum Command {
    AddPort(Box<dyn Port>, mpsc::SyncSender<Result<u16, String>>),
    RemovePort(u16, mpsc::SyncSender<bool>),
    View(mpsc::SyncSender<EngineView>),
}

/// The agent's handle on the engine: a worker thread of its own (production), or an
/// engine its owner polls (the simulation, on simulated time). Dropping the handle stops
/// the thread.
pub struct DataplaneWorker {
    mode: Mode,
}

enum Mode {
    Thread(WorkerThread),
    /// Port changes are applied at once under the lock; the owner takes the same lock
    /// once per poll (never per packet).
    Inline(Arc<Mutex<Engine>>),
}

struct WorkerThread {
    commands: mpsc::Sender<Command>,
    pending: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const ANSWER_WITHIN: Duration = Duration::from_secs(5);

impl DataplaneWorker {
    pub fn start(mut engine: Engine) -> DataplaneWorker {
        let (tx, rx) = mpsc::channel::<Command>();
        let pending = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (pending.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("dataplane".into())
            .spawn(move || {
                let start = Instant::now();
                let mut idle_polls = 0u32;
                while !s.load(Ordering::Relaxed) {
                    // A plain load each poll; the write only when there is work.
                    if p.load(Ordering::Relaxed) && p.swap(false, Ordering::Acquire) {
                        while let Ok(cmd) = rx.try_recv() {
                            apply(&mut engine, cmd);
                        }
                    }
                    if engine.poll(Timestamp(start.elapsed().as_nanos() as u64)) > 0 {
                        idle_polls = 0;
                        continue;
                    }
                    // TAP and AF_PACKET ports are kernel-bound: give the core back when
                    // idle, longer once idle for a while (a DPDK worker would own its
                    // core instead).
                    idle_polls = idle_polls.saturating_add(1);
                    std::thread::sleep(if idle_polls < 200 {
                        Duration::from_micros(50)
                    } else {
                        Duration::from_micros(500)
                    });
                }
            })
            .ok();
        DataplaneWorker {
            mode: Mode::Thread(WorkerThread {
                commands: tx,
                pending,
                stop,
                thread,
            }),
        }
    }

    /// A handle on an engine that its owner polls (see [`Mode::Inline`]).
    pub fn inline(engine: Arc<Mutex<Engine>>) -> DataplaneWorker {
        DataplaneWorker {
            mode: Mode::Inline(engine),
        }
    }

    /// Applies `cmd` and waits for its answer on `rx`.
    fn call<T>(&self, cmd: Command, rx: mpsc::Receiver<T>) -> Result<T, WorkerError> {
        match &self.mode {
            Mode::Thread(t) => {
                t.commands.send(cmd).map_err(|_| WorkerError::Stopped)?;
                t.pending.store(true, Ordering::Release);
                Self::wait(rx)
            }
            Mode::Inline(engine) => {
                // A panic while the lock was held left the engine as it was between
                // two polls: still usable.
                apply(&mut engine.lock().unwrap_or_else(|p| p.into_inner()), cmd);
                rx.try_recv().map_err(|_| WorkerError::Stopped)
            }
        }
    }

    fn wait<T>(rx: mpsc::Receiver<T>) -> Result<T, WorkerError> {
        rx.recv_timeout(ANSWER_WITHIN).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => WorkerError::Timeout(ANSWER_WITHIN),
            mpsc::RecvTimeoutError::Disconnected => WorkerError::Stopped,
        })
    }

    /// Adds a port to the engine; returns its index.
    pub fn add_port(&self, port: Box<dyn Port>) -> Result<u16, WorkerError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.call(Command::AddPort(port, tx), rx)?
            .map_err(WorkerError::Engine)
    }

    /// Removes (and closes) a port; `false` when there was none at that index.
    pub fn remove_port(&self, port: u16) -> Result<bool, WorkerError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.call(Command::RemovePort(port, tx), rx)
    }

    pub fn view(&self) -> Result<EngineView, WorkerError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.call(Command::View(tx), rx)
    }
}

fn apply(engine: &mut Engine, cmd: Command) {
    match cmd {
        Command::AddPort(port, reply) => {
            let _ = reply.send(engine.add_port(port).map_err(|e| e.to_string()));
        }
        Command::RemovePort(port, reply) => {
            let _ = reply.send(engine.remove_port(port).is_some());
        }
        Command::View(reply) => {
            let sessions = engine.nat_sessions();
            let ports = (0..contiv_dataplane::MAX_PORTS)
                .filter_map(|index| {
                    Some(PortView {
                        index,
                        name: engine.port(index)?.name().to_string(),
                        counters: engine.interface_counters(index),
                    })
                })
                .collect();
            let counters = contiv_dataplane::Counter::ALL
                .iter()
                .map(|&c| (c, engine.counter(c)))
                .collect();
            let _ = reply.send(EngineView {
                ports,
                interfaces: engine.show_interfaces(),
                errors: engine.show_errors(),
                nat_sessions: sessions
                    .iter()
                    .take(MAX_VIEWED_SESSIONS)
                    .map(ToString::to_string)
                    .collect(),
                nat_session_count: sessions.len(),
                counters,
            });
        }
    }
}

impl Drop for WorkerThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contiv_dataplane::{Counter, InterfaceCounters};

    #[test]
    fn metrics_escape_labels_and_keep_drops_apart() {
        let view = EngineView {
            ports: vec![PortView {
                index: 3,
                name: "odd\"name\\".into(),
                counters: InterfaceCounters {
                    rx_packets: 7,
                    ..Default::default()
                },
            }],
            counters: vec![(Counter::Ip4BadChecksum, 2), (Counter::Ip4NoRoute, 5)],
            nat_session_count: 4,
            ..Default::default()
        };
        let text = render_dataplane_metrics(Some(&view));
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(lines
            .contains(&r#"contiv_vswitch_dataplane_rx_packets_total{interface="odd\"name\\"} 7"#));
        assert!(lines.contains(
            &r#"contiv_vswitch_dataplane_drops_total{node="ip4-input",reason="bad checksum"} 2"#
        ));
        assert!(lines.contains(
            &r#"contiv_vswitch_dataplane_events_total{node="ip4-lookup",reason="no route (unreachable sent)"} 5"#
        ));
        assert!(lines.contains(&"contiv_vswitch_dataplane_nat_sessions 4"));
        // Each metric's HELP and TYPE come once, before its series.
        assert_eq!(
            text.matches("# TYPE contiv_vswitch_dataplane_drops_total counter")
                .count(),
            1
        );
        assert_eq!(lines.len(), 1 + 5 + 2 + 1, "{text}");
        assert!(lines.contains(&"contiv_vswitch_dataplane_up 1"));
        assert_eq!(
            render_dataplane_metrics(None)
                .lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>(),
            ["contiv_vswitch_dataplane_up 0"]
        );
    }
}
