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
    pub ports: Vec<(u16, String)>,
    pub interfaces: String,
    pub errors: String,
    pub packets_received: u64,
    pub packets_transmitted: u64,
    pub drops: u64,
    /// Source NAT sessions, the first [`MAX_VIEWED_SESSIONS`] in order, and how many
    /// there are in all.
    pub nat_sessions: Vec<String>,
    pub nat_session_count: usize,
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
                .filter_map(|i| engine.port(i).map(|p| (i, p.name().to_string())))
                .collect();
            let _ = reply.send(EngineView {
                ports,
                interfaces: engine.show_interfaces(),
                errors: engine.show_errors(),
                packets_received: engine.packets_received(),
                packets_transmitted: engine.packets_transmitted(),
                drops: engine.counters().total_drops(),
                nat_sessions: sessions
                    .iter()
                    .take(MAX_VIEWED_SESSIONS)
                    .map(ToString::to_string)
                    .collect(),
                nat_session_count: sessions.len(),
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
