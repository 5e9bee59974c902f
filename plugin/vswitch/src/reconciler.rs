//! The reconciler: desired state as keyed items with dependencies, brought about by an
//! [`Applier`] (in the spirit of Ligato's KVScheduler, which Contiv's agent used).
//!
//! - An item whose dependencies are not all applied waits as *pending* and is created as
//!   soon as they are.
//! - Removing an item (or losing one of its dependencies) first removes its dependents.
//! - Every round is planned, then executed; a failed operation is retried with
//!   exponential backoff, and its dependents wait.
//! - [`Reconciler::resync`] replaces what we believe is applied with what the system
//!   really has, and the next round heals the difference.
//!
//! Sans-IO and deterministic: time comes in as an argument, maps are ordered.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use serde::Serialize;

pub type Key = String;

/// One piece of desired state.
pub trait Item: Clone + PartialEq + fmt::Debug {
    /// The keys that must be applied before this item can be.
    fn dependencies(&self) -> Vec<Key>;
}

/// Makes items real.
pub trait Applier<I: Item> {
    type Error: fmt::Display;
    fn create(&mut self, key: &str, item: &I) -> Result<(), Self::Error>;
    fn delete(&mut self, key: &str, item: &I) -> Result<(), Self::Error>;
    /// Changes an applied item; by default deletes the old and creates the new.
    fn update(&mut self, key: &str, old: &I, new: &I) -> Result<(), Self::Error> {
        self.delete(key, old)?;
        self.create(key, new)
    }
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Op {
    Create(Key),
    Update(Key),
    Delete(Key),
}

/// How retries back off.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug)]
struct Failure {
    error: String,
    attempts: u32,
    retry_at: Duration,
}

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub executed: Vec<Op>,
    /// Operations that failed, with their errors.
    pub failed: Vec<(Op, String)>,
}

/// The state of one key, for the dump.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ItemState {
    Applied,
    /// Desired, waiting for these dependencies.
    Pending {
        missing: Vec<Key>,
    },
    /// Desired, not applied: the last attempt failed.
    Failed {
        error: String,
        attempts: u32,
        retry_in_ms: u64,
    },
    /// Applied, but differs from what is desired (an update is due or failing).
    Outdated,
    /// Applied, no longer desired (a delete is due or failing).
    Obsolete,
}

#[derive(Clone, Debug, Serialize)]
pub struct DumpEntry {
    pub key: Key,
    pub desired: Option<String>,
    pub applied: Option<String>,
    #[serde(flatten)]
    pub state: ItemState,
}

pub struct Reconciler<I: Item> {
    desired: BTreeMap<Key, I>,
    applied: BTreeMap<Key, I>,
    failures: BTreeMap<Key, Failure>,
    backoff: Backoff,
}

impl<I: Item> Default for Reconciler<I> {
    fn default() -> Self {
        Self::new(Backoff::default())
    }
}

impl<I: Item> Reconciler<I> {
    pub fn new(backoff: Backoff) -> Self {
        Reconciler {
            desired: BTreeMap::new(),
            applied: BTreeMap::new(),
            failures: BTreeMap::new(),
            backoff,
        }
    }

    /// Desires `item` under `key`.
    pub fn set(&mut self, key: impl Into<Key>, item: I) {
        let key = key.into();
        if self.desired.get(&key) != Some(&item) {
            self.failures.remove(&key);
        }
        self.desired.insert(key, item);
    }

    /// No longer desires `key`.
    pub fn unset(&mut self, key: &str) {
        self.desired.remove(key);
        self.failures.remove(key);
    }

    pub fn desired(&self) -> &BTreeMap<Key, I> {
        &self.desired
    }

    pub fn applied(&self) -> &BTreeMap<Key, I> {
        &self.applied
    }

    pub fn is_applied(&self, key: &str) -> bool {
        self.applied.contains_key(key) && self.applied.get(key) == self.desired.get(key)
    }

    /// The last error of `key`, if its last attempt failed.
    pub fn error(&self, key: &str) -> Option<&str> {
        self.failures.get(key).map(|f| f.error.as_str())
    }

    /// Desired equals applied.
    pub fn converged(&self) -> bool {
        self.desired == self.applied
    }

    /// When the earliest retry is due.
    pub fn next_retry(&self) -> Option<Duration> {
        self.failures.values().map(|f| f.retry_at).min()
    }

    /// Replaces what is believed applied with what the system reports (startup, or a
    /// periodic resync); the next [`Reconciler::run`] heals the difference.
    pub fn resync(&mut self, actual: BTreeMap<Key, I>) {
        self.applied = actual;
        self.failures.clear();
    }

    /// Desired keys whose dependencies are all desired and (recursively) satisfiable.
    fn satisfiable(&self) -> BTreeSet<Key> {
        let mut ok = BTreeSet::new();
        // Fixed point: each pass admits the items whose dependencies were admitted before;
        // cycles never get in.
        loop {
            let before = ok.len();
            for (k, item) in &self.desired {
                if !ok.contains(k) && item.dependencies().iter().all(|d| ok.contains(d)) {
                    ok.insert(k.clone());
                }
            }
            if ok.len() == before {
                return ok;
            }
        }
    }

    /// Dependency depth of each applied or desired key (0: no dependencies), used to
    /// order creates (shallow first) and deletes (deep first).
    fn depths(&self) -> BTreeMap<Key, usize> {
        let mut depth: BTreeMap<Key, usize> = BTreeMap::new();
        let items: Vec<(&Key, &I)> = self.desired.iter().chain(self.applied.iter()).collect();
        for _ in 0..=items.len() {
            let mut changed = false;
            for (k, item) in &items {
                let d = item
                    .dependencies()
                    .iter()
                    .map(|dep| depth.get(dep).map_or(1, |d| d + 1))
                    .max()
                    .unwrap_or(0);
                if depth.get(*k).is_none_or(|old| *old < d) {
                    depth.insert((*k).clone(), d.min(items.len()));
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        depth
    }

    /// What a round would do at `now`: deletes of what is no longer desired or lost a
    /// dependency (dependents first), then updates and creates (dependencies first).
    /// Operations in backoff are left out.
    pub fn plan(&self, now: Duration) -> Vec<Op> {
        let ok = self.satisfiable();
        let depth = self.depths();
        let waiting = |k: &Key| self.failures.get(k).is_some_and(|f| f.retry_at > now);
        let mut deletes: Vec<&Key> = self
            .applied
            .keys()
            .filter(|k| !ok.contains(*k) && !waiting(k))
            .collect();
        deletes.sort_by_key(|k| std::cmp::Reverse(depth.get(*k).copied().unwrap_or(0)));
        let mut ups: Vec<(&Key, Op)> = ok
            .iter()
            .filter(|k| !waiting(k))
            .filter_map(|k| match (self.applied.get(k), self.desired.get(k)) {
                (None, Some(_)) => Some((k, Op::Create(k.clone()))),
                (Some(a), Some(d)) if a != d => Some((k, Op::Update(k.clone()))),
                _ => None,
            })
            .collect();
        ups.sort_by_key(|(k, _)| depth.get(*k).copied().unwrap_or(0));
        // Only what can run: every dependency applied and staying, or created earlier in
        // this plan (a dependency in backoff keeps its dependents out).
        let mut present: BTreeSet<&Key> = self
            .applied
            .keys()
            .filter(|k| !deletes.contains(k))
            .collect();
        let mut plan: Vec<Op> = deletes.iter().map(|k| Op::Delete((*k).clone())).collect();
        for (k, op) in ups {
            let deps = self.desired[k].dependencies();
            if deps.iter().all(|d| present.contains(d)) {
                present.insert(k);
                plan.push(op);
            }
        }
        plan
    }

    /// Plans and executes one round.
    pub fn run<A: Applier<I>>(&mut self, applier: &mut A, now: Duration) -> Round {
        let mut round = Round::default();
        for op in self.plan(now) {
            let result = match &op {
                Op::Delete(k) => {
                    // A dependent that failed to go away keeps this one in place too.
                    let blocked = self
                        .applied
                        .iter()
                        .any(|(other, item)| other != k && item.dependencies().contains(k));
                    let Some(item) = self.applied.get(k).cloned() else {
                        continue;
                    };
                    if blocked {
                        continue;
                    }
                    applier.delete(k, &item).map(|()| {
                        self.applied.remove(k);
                    })
                }
                Op::Create(k) | Op::Update(k) => {
                    let Some(item) = self.desired.get(k).cloned() else {
                        continue;
                    };
                    // An earlier failure this round may have left a dependency out.
                    if !item
                        .dependencies()
                        .iter()
                        .all(|d| self.applied.contains_key(d))
                    {
                        continue;
                    }
                    let r = match self.applied.get(k).cloned() {
                        Some(old) => applier.update(k, &old, &item),
                        None => applier.create(k, &item),
                    };
                    r.map(|()| {
                        self.applied.insert(k.clone(), item);
                    })
                }
            };
            let key = match &op {
                Op::Create(k) | Op::Update(k) | Op::Delete(k) => k.clone(),
            };
            match result {
                Ok(()) => {
                    self.failures.remove(&key);
                    round.executed.push(op);
                }
                Err(e) => {
                    let attempts = self.failures.get(&key).map_or(1, |f| f.attempts + 1);
                    let wait = self
                        .backoff
                        .initial
                        .saturating_mul(1u32 << (attempts - 1).min(16))
                        .min(self.backoff.max);
                    self.failures.insert(
                        key,
                        Failure {
                            error: e.to_string(),
                            attempts,
                            retry_at: now + wait,
                        },
                    );
                    round.failed.push((op, e.to_string()));
                }
            }
        }
        round
    }

    /// Desired against applied, key by key.
    pub fn dump(&self, now: Duration) -> Vec<DumpEntry> {
        let keys: BTreeSet<&Key> = self.desired.keys().chain(self.applied.keys()).collect();
        keys.into_iter()
            .map(|k| {
                let d = self.desired.get(k);
                let a = self.applied.get(k);
                let state = match (d, a) {
                    (Some(d), Some(a)) if d == a => ItemState::Applied,
                    (Some(_), Some(_)) => ItemState::Outdated,
                    (None, _) => ItemState::Obsolete,
                    (Some(d), None) => match self.failures.get(k) {
                        Some(f) => ItemState::Failed {
                            error: f.error.clone(),
                            attempts: f.attempts,
                            retry_in_ms: f.retry_at.saturating_sub(now).as_millis() as u64,
                        },
                        None => ItemState::Pending {
                            missing: d
                                .dependencies()
                                .into_iter()
                                .filter(|dep| !self.applied.contains_key(dep))
                                .collect(),
                        },
                    },
                };
                DumpEntry {
                    key: k.clone(),
                    desired: d.map(|i| format!("{i:?}")),
                    applied: a.map(|i| format!("{i:?}")),
                    state,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct T {
        deps: Vec<Key>,
        value: u32,
    }

    fn t(value: u32, deps: &[&str]) -> T {
        T {
            deps: deps.iter().map(|d| d.to_string()).collect(),
            value,
        }
    }

    impl Item for T {
        fn dependencies(&self) -> Vec<Key> {
            self.deps.clone()
        }
    }

    /// Records operations; fails the keys in `failing`.
    #[derive(Default)]
    struct Log {
        ops: Vec<String>,
        failing: BTreeSet<String>,
    }

    impl Applier<T> for Log {
        type Error = String;
        fn create(&mut self, key: &str, _: &T) -> Result<(), String> {
            if self.failing.contains(key) {
                return Err(format!("{key} refused"));
            }
            self.ops.push(format!("+{key}"));
            Ok(())
        }
        fn delete(&mut self, key: &str, _: &T) -> Result<(), String> {
            self.ops.push(format!("-{key}"));
            Ok(())
        }
    }

    const T0: Duration = Duration::ZERO;

    #[test]
    fn an_item_waits_for_its_dependency_and_follows_it_out() {
        let mut r = Reconciler::default();
        let mut log = Log::default();
        r.set("route", t(1, &["iface"]));
        assert!(r.run(&mut log, T0).executed.is_empty());
        assert_eq!(
            r.dump(T0)[0].state,
            ItemState::Pending {
                missing: vec!["iface".into()]
            }
        );
        r.set("iface", t(1, &[]));
        r.run(&mut log, T0);
        assert_eq!(log.ops, ["+iface", "+route"]);
        assert!(r.converged());
        // Removing the dependency removes the dependent first.
        r.unset("iface");
        r.run(&mut log, T0);
        assert_eq!(log.ops[2..], ["-route", "-iface"]);
        // The route is still desired and pending again.
        assert!(matches!(r.dump(T0)[0].state, ItemState::Pending { .. }));
    }

    #[test]
    fn failures_back_off_and_block_dependents() {
        let mut r = Reconciler::new(Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(250),
        });
        let mut log = Log::default();
        log.failing.insert("iface".into());
        r.set("iface", t(1, &[]));
        r.set("route", t(1, &["iface"]));
        let round = r.run(&mut log, T0);
        assert_eq!(round.failed.len(), 1);
        assert!(log.ops.is_empty());
        // In backoff: nothing to do before 100 ms.
        assert!(r.plan(Duration::from_millis(99)).is_empty());
        assert_eq!(r.next_retry(), Some(Duration::from_millis(100)));
        r.run(&mut log, Duration::from_millis(100));
        // Second failure: 200 ms later; third: capped at 250.
        assert_eq!(r.next_retry(), Some(Duration::from_millis(300)));
        r.run(&mut log, Duration::from_millis(300));
        assert_eq!(r.next_retry(), Some(Duration::from_millis(550)));
        match &r.dump(T0)[0].state {
            ItemState::Failed {
                attempts, error, ..
            } => {
                assert_eq!(*attempts, 3);
                assert!(error.contains("refused"));
            }
            s => panic!("{s:?}"),
        }
        log.failing.clear();
        r.run(&mut log, Duration::from_millis(550));
        assert_eq!(log.ops, ["+iface", "+route"]);
        assert!(r.converged());
    }

    #[test]
    fn resync_heals_drift() {
        let mut r = Reconciler::default();
        let mut log = Log::default();
        r.set("a", t(1, &[]));
        r.set("b", t(1, &["a"]));
        r.run(&mut log, T0);
        // The system lost `b`, has a stray `c` and a changed `a`.
        r.resync(BTreeMap::from([
            ("a".to_string(), t(2, &[])),
            ("c".to_string(), t(1, &[])),
        ]));
        assert_eq!(
            r.plan(T0),
            [
                Op::Delete("c".into()),
                Op::Update("a".into()),
                Op::Create("b".into())
            ]
        );
        r.run(&mut log, T0);
        assert!(r.converged());
    }

    #[test]
    fn cycles_never_apply() {
        let mut r = Reconciler::default();
        let mut log = Log::default();
        r.set("x", t(1, &["y"]));
        r.set("y", t(1, &["x"]));
        r.run(&mut log, T0);
        assert!(log.ops.is_empty());
    }
}
