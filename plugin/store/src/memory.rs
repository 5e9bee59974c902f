//! The in-memory store: etcd's model (one revision counter, key history for watches,
//! compaction, leases) in a map, for the simulation and for tests.
//!
//! Time is tokio's: under the simulation (turmoil) or a paused test clock, leases expire
//! in simulated time, deterministically.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{
    check_key, Compare, EventKind, KeyValue, LeaseId, Revision, Store, StoreError, Txn, TxnOp,
    TxnResult, Watch, WatchEvent, WATCH_BUFFER,
};

/// How much history is kept for watches before the oldest is compacted automatically.
const HISTORY_LIMIT: usize = 100_000;

struct Lease {
    ttl: Duration,
    expires_at: Instant,
    keys: BTreeSet<String>,
}

struct Watcher {
    prefix: String,
    tx: mpsc::Sender<Result<WatchEvent, StoreError>>,
}

#[derive(Default)]
struct State {
    revision: Revision,
    /// History before this revision is gone.
    compacted: Revision,
    keys: BTreeMap<String, KeyValue>,
    history: VecDeque<WatchEvent>,
    watchers: Vec<Watcher>,
    leases: BTreeMap<LeaseId, Lease>,
    next_lease: LeaseId,
    /// Set while the store plays an outage (see [`MemoryStore::set_available`]).
    unavailable: bool,
}

/// An in-memory [`Store`]. Clones share the same data.
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A new, empty store at revision 1 (as a fresh etcd is). Inside a tokio runtime it
    /// also starts a task that expires leases on time; outside one, leases expire when the
    /// store is next used.
    pub fn new() -> Self {
        let store = MemoryStore {
            state: Arc::new(Mutex::new(State {
                revision: 1,
                compacted: 1,
                next_lease: 1,
                ..Default::default()
            })),
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(expire_leases(Arc::downgrade(&store.state)));
        }
        store
    }

    /// Fault injection: while unavailable, every call fails with `Unavailable` and every
    /// watch is ended with that error (as an etcd outage looks to a client).
    pub fn set_available(&self, available: bool) {
        let mut s = self.lock();
        s.unavailable = !available;
        if !available {
            for w in s.watchers.drain(..) {
                let _ = w.tx.try_send(Err(StoreError::Unavailable(
                    "store outage (injected)".into(),
                )));
            }
        }
    }

    /// Keys under `prefix` as the store holds them, read from outside any client: for a
    /// simulation's invariant checks, which must not depend on a runtime's clock or on
    /// the store being available (leases are not expired by this read).
    pub fn peek(&self, prefix: &str) -> Vec<String> {
        self.lock()
            .keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The current revision.
    pub fn revision(&self) -> Revision {
        self.lock().revision
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-changed (every change
        // is applied after its checks), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut s = self.lock();
        if s.unavailable {
            return Err(StoreError::Unavailable("store outage (injected)".into()));
        }
        s.expire(Instant::now());
        f(&mut s)
    }
}

async fn expire_leases(state: Weak<Mutex<State>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expire(Instant::now());
    }
}

impl State {
    fn expire(&mut self, now: Instant) {
        let expired: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.end_lease(id);
        }
    }

    fn end_lease(&mut self, id: LeaseId) {
        if let Some(lease) = self.leases.remove(&id) {
            if lease.keys.is_empty() {
                return;
            }
            self.revision += 1;
            for key in lease.keys {
                self.remove_key(&key);
            }
        }
    }

    fn record(&mut self, event: WatchEvent) {
        self.watchers.retain(|w| {
            if !event.key.starts_with(&w.prefix) {
                return !w.tx.is_closed();
            }
            // The consumer is too far behind: end its watch with a clear reason rather
            // than grow without bound. The last free slot is kept for that reason.
            if w.tx.capacity() <= 1 {
                let _ = w.tx.try_send(Err(StoreError::WatchLagged));
                return false;
            }
            w.tx.try_send(Ok(event.clone())).is_ok()
        });
        self.history.push_back(event);
        if self.history.len() > HISTORY_LIMIT {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.mod_revision + 1;
            }
        }
    }

    /// Writes at the current revision (the caller has bumped it).
    fn put_key(&mut self, key: &str, value: Vec<u8>, lease: Option<LeaseId>) {
        let rev = self.revision;
        let create = self.keys.get(key).map_or(rev, |kv| kv.create_revision);
        if let Some(old) = self.keys.get(key).and_then(|kv| kv.lease) {
            if Some(old) != lease {
                if let Some(l) = self.leases.get_mut(&old) {
                    l.keys.remove(key);
                }
            }
        }
        if let Some(l) = lease.and_then(|id| self.leases.get_mut(&id)) {
            l.keys.insert(key.to_string());
        }
        self.keys.insert(
            key.to_string(),
            KeyValue {
                key: key.to_string(),
                value: value.clone(),
                create_revision: create,
                mod_revision: rev,
                lease,
            },
        );
        self.record(WatchEvent {
            kind: EventKind::Put,
            key: key.to_string(),
            value,
            mod_revision: rev,
        });
    }

    /// Deletes at the current revision (the caller has bumped it). `false` if absent.
    fn remove_key(&mut self, key: &str) -> bool {
        let Some(old) = self.keys.remove(key) else {
            return false;
        };
        if let Some(l) = old.lease.and_then(|id| self.leases.get_mut(&id)) {
            l.keys.remove(key);
        }
        let rev = self.revision;
        self.record(WatchEvent {
            kind: EventKind::Delete,
            key: key.to_string(),
            value: Vec::new(),
            mod_revision: rev,
        });
        true
    }

    fn holds(&self, c: &Compare) -> bool {
        match c {
            Compare::Absent(k) => !self.keys.contains_key(k),
            Compare::ModRevision(k, r) => self.keys.get(k).is_some_and(|kv| kv.mod_revision == *r),
            Compare::Value(k, v) => self.keys.get(k).is_some_and(|kv| kv.value == *v),
        }
    }

    fn validate(&self, ops: &[TxnOp]) -> Result<(), StoreError> {
        for op in ops {
            match op {
                TxnOp::Put { key, lease, .. } => {
                    check_key(key)?;
                    if let Some(id) = lease {
                        if !self.leases.contains_key(id) {
                            return Err(StoreError::LeaseNotFound(*id));
                        }
                    }
                }
                TxnOp::Delete { key } => check_key(key)?,
            }
        }
        Ok(())
    }
}

impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        check_key(key)?;
        self.with(|s| Ok(s.keys.get(key).cloned()))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        self.with(|s| {
            let kvs = s
                .keys
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(_, kv)| kv.clone())
                .collect();
            Ok((kvs, s.revision))
        })
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        check_key(key)?;
        self.with(|s| {
            s.revision += 1;
            s.put_key(key, value, None);
            Ok(s.revision)
        })
    }

    async fn delete(&self, key: &str) -> Result<Option<Revision>, StoreError> {
        check_key(key)?;
        self.with(|s| {
            if !s.keys.contains_key(key) {
                return Ok(None);
            }
            s.revision += 1;
            s.remove_key(key);
            Ok(Some(s.revision))
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        self.with(|s| {
            s.validate(&txn.success)?;
            s.validate(&txn.failure)?;
            let succeeded = txn.compares.iter().all(|c| s.holds(c));
            let ops = if succeeded {
                &txn.success
            } else {
                &txn.failure
            };
            // Like etcd: a transaction that writes anything takes one new revision, even
            // a delete of a key that turns out absent; one that writes nothing takes none.
            if !ops.is_empty() {
                s.revision += 1;
                for op in ops {
                    match op {
                        TxnOp::Put { key, value, lease } => s.put_key(key, value.clone(), *lease),
                        TxnOp::Delete { key } => {
                            s.remove_key(key);
                        }
                    }
                }
            }
            Ok(TxnResult {
                succeeded,
                revision: s.revision,
            })
        })
    }

    async fn grant_lease(&self, ttl_secs: i64) -> Result<LeaseId, StoreError> {
        self.with(|s| {
            let ttl = Duration::from_secs(ttl_secs.max(1) as u64);
            let id = s.next_lease;
            s.next_lease += 1;
            s.leases.insert(
                id,
                Lease {
                    ttl,
                    expires_at: Instant::now() + ttl,
                    keys: BTreeSet::new(),
                },
            );
            Ok(id)
        })
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.with(|s| {
            let l = s
                .leases
                .get_mut(&lease)
                .ok_or(StoreError::LeaseNotFound(lease))?;
            l.expires_at = Instant::now() + l.ttl;
            Ok(())
        })
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.with(|s| {
            if !s.leases.contains_key(&lease) {
                return Err(StoreError::LeaseNotFound(lease));
            }
            s.end_lease(lease);
            Ok(())
        })
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<Watch, StoreError> {
        self.with(|s| {
            let from = if from <= 0 { s.revision + 1 } else { from };
            if from < s.compacted {
                return Err(StoreError::Compacted {
                    requested: from,
                    compacted: s.compacted,
                });
            }
            let (tx, rx) = mpsc::channel(WATCH_BUFFER);
            let backlog: Vec<WatchEvent> = s
                .history
                .iter()
                .filter(|e| e.mod_revision >= from && e.key.starts_with(prefix))
                .cloned()
                .collect();
            if backlog.len() >= WATCH_BUFFER {
                return Err(StoreError::WatchLagged);
            }
            for e in backlog {
                // Cannot fail: the channel is new and larger than the backlog.
                let _ = tx.try_send(Ok(e));
            }
            s.watchers.push(Watcher {
                prefix: prefix.to_string(),
                tx,
            });
            Ok(Watch::new(rx, None))
        })
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.with(|s| {
            if revision > s.revision {
                return Err(StoreError::FutureRevision {
                    requested: revision,
                    current: s.revision,
                });
            }
            if revision <= s.compacted {
                return Err(StoreError::Compacted {
                    requested: revision,
                    compacted: s.compacted,
                });
            }
            while s.history.front().is_some_and(|e| e.mod_revision < revision) {
                s.history.pop_front();
            }
            s.compacted = revision;
            Ok(())
        })
    }
}
