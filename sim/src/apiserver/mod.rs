//! A simulated Kubernetes API server: in memory, over HTTP, enough of the real API for
//! kube-rs and kubectl.
//!
//! What it does: discovery (`/api`, `/apis`, `/version`); for Pods, Services, Endpoints,
//! Namespaces, Nodes, EndpointSlices and NetworkPolicies: get, list (label selectors,
//! field selectors, limit/continue), create, update (with resourceVersion conflicts),
//! merge patch, delete, and watch from a resourceVersion with bookmarks and `410 Gone`
//! for a compacted one. It assigns clusterIPs to Services and plays two controllers: it
//! fills a Pod's IP and phase when told ([`ApiServer::set_pod_status`]), and keeps one
//! EndpointSlice per selecting Service in step with its ready Pods.
//!
//! What it does not: authentication, admission, schema validation (it stores what it is
//! given, which lets tests feed KSR objects a real server would refuse), graceful
//! deletion, server-side apply. Strategic merge patches are applied as JSON merge
//! patches (lists are replaced, not merged by key).
//!
//! Time comes from tokio (simulated under turmoil); timestamps are that time after a
//! fixed epoch, so runs are deterministic.

mod http;
pub mod resources;
pub mod selectors;

use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

pub use http::{serve, serve_connection};
pub use resources::Kind;
use selectors::{FieldQuery, LabelQuery};

/// Watch events kept for clients that resume from an older resourceVersion.
const DEFAULT_HISTORY: usize = 10_000;

/// Errors as the API reports them (they become `Status` objects).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("too old resource version: {requested} ({oldest})")]
    Gone { requested: u64, oldest: u64 },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl ApiError {
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict(_) => 409,
            ApiError::Gone { .. } => 410,
            ApiError::BadRequest(_) => 400,
            ApiError::MethodNotAllowed => 405,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict(_) => "Conflict",
            ApiError::Gone { .. } => "Expired",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
        }
    }

    /// The `Status` object the API returns for this error.
    pub fn status(&self) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": self.to_string(), "reason": self.reason(), "code": self.code()})
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    kind: Kind,
    namespace: String,
    kind_type: EventType,
    object: Value,
}

struct Watcher {
    kind: Kind,
    namespace: Option<String>,
    labels: LabelQuery,
    fields: FieldQuery,
    tx: mpsc::Sender<Value>,
}

type ObjectKey = (Kind, String, String);

struct State {
    rv: u64,
    /// Events before this resourceVersion are gone.
    oldest: u64,
    history_limit: usize,
    objects: BTreeMap<ObjectKey, Value>,
    history: VecDeque<Event>,
    watchers: Vec<Watcher>,
    next_uid: u64,
    service_ips: Ipv4Addr,
    next_service_ip: u32,
    endpoint_controller: bool,
}

/// A simulated API server. Clones share the same state.
#[derive(Clone)]
pub struct ApiServer {
    state: Arc<Mutex<State>>,
    started: tokio::time::Instant,
}

/// A page of a list.
pub struct ListResult {
    pub items: Vec<Value>,
    pub resource_version: u64,
    /// Set when there are more items: pass it back as `continue`.
    pub continue_token: Option<String>,
}

/// What a list or watch asks for.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub namespace: Option<String>,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

fn meta(obj: &Value, field: &str) -> String {
    obj["metadata"][field]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl Default for ApiServer {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiServer {
    /// An empty server with the `default` namespace, Services from 10.96.0.0/12 and the
    /// EndpointSlice controller on.
    pub fn new() -> Self {
        let server = ApiServer {
            state: Arc::new(Mutex::new(State {
                rv: 1,
                oldest: 1,
                history_limit: DEFAULT_HISTORY,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                watchers: Vec::new(),
                next_uid: 1,
                service_ips: Ipv4Addr::new(10, 96, 0, 0),
                next_service_ip: 10,
                endpoint_controller: true,
            })),
            started: tokio::time::Instant::now(),
        };
        let _ = server.create(
            Kind::Namespace,
            None,
            json!({"metadata": {"name": "default"}}),
        );
        server
    }

    /// Keeps only the last `n` events for watches (older resourceVersions get 410).
    pub fn set_history_limit(&self, n: usize) {
        let mut s = self.lock();
        s.history_limit = n.max(1);
        s.trim_history();
    }

    /// Forgets every event so far: any watch from an older resourceVersion gets 410.
    pub fn compact(&self) {
        let mut s = self.lock();
        s.history.clear();
        s.oldest = s.rv + 1;
    }

    /// Fault injection, all at once: deletes an object, forgets every event (so its
    /// DELETED event reaches no one) and drops every watch. Clients that resume get 410
    /// Gone; only a re-list can tell them the object is gone.
    pub fn delete_behind_watches(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<(), ApiError> {
        let mut s = self.lock();
        let key = Self::key(kind, namespace, name);
        s.objects.remove(&key).ok_or(ApiError::NotFound {
            kind: Self::kind_name(kind),
            name: name.into(),
        })?;
        s.rv += 1;
        s.history.clear();
        s.oldest = s.rv + 1;
        s.watchers.clear();
        Ok(())
    }

    pub fn set_endpoint_controller(&self, on: bool) {
        self.lock().endpoint_controller = on;
    }

    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> String {
        // A fixed epoch plus tokio's time since start: deterministic under simulation.
        let secs = self.started.elapsed().as_secs();
        let (d, rem) = (secs / 86_400, secs % 86_400);
        let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
        // 2026-01-01 plus whole days, capped at the month's end for simplicity.
        format!("2026-01-{:02}T{h:02}:{m:02}:{s:02}Z", (1 + d).min(31))
    }

    fn kind_name(kind: Kind) -> &'static str {
        kind.info().name
    }

    fn key(kind: Kind, namespace: Option<&str>, name: &str) -> ObjectKey {
        let ns = if kind.info().namespaced {
            namespace.unwrap_or("default")
        } else {
            ""
        };
        (kind, ns.to_string(), name.to_string())
    }

    pub fn get(&self, kind: Kind, namespace: Option<&str>, name: &str) -> Result<Value, ApiError> {
        self.lock()
            .objects
            .get(&Self::key(kind, namespace, name))
            .cloned()
            .ok_or(ApiError::NotFound {
                kind: Self::kind_name(kind),
                name: name.to_string(),
            })
    }

    pub fn list(&self, kind: Kind, q: &Query) -> Result<ListResult, ApiError> {
        let labels = LabelQuery::parse(q.label_selector.as_deref().unwrap_or(""))
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let fields = FieldQuery::parse(q.field_selector.as_deref().unwrap_or(""))
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let s = self.lock();
        // The continue token is the last key of the previous page: `namespace/name`.
        let after = q.continue_token.as_deref().unwrap_or("");
        let mut items = Vec::new();
        let mut continue_token = None;
        for ((k, ns, name), obj) in s.objects.iter() {
            if *k != kind {
                continue;
            }
            if let Some(want) = &q.namespace {
                if kind.info().namespaced && ns != want {
                    continue;
                }
            }
            let pos = format!("{ns}/{name}");
            if !after.is_empty() && pos.as_str() <= after {
                continue;
            }
            if !labels.matches(&labels_of(obj)) || !fields.matches(obj) {
                continue;
            }
            if q.limit.is_some_and(|l| l > 0 && items.len() == l) {
                continue_token = items
                    .last()
                    .map(|o: &Value| format!("{}/{}", meta(o, "namespace"), meta(o, "name")));
                break;
            }
            items.push(obj.clone());
        }
        Ok(ListResult {
            items,
            resource_version: s.rv,
            continue_token,
        })
    }

    pub fn create(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::BadRequest("the body is not an object".into()));
        }
        let info = kind.info();
        let mut name = meta(&obj, "name");
        let now = self.now();
        let mut s = self.lock();
        if name.is_empty() {
            let prefix = meta(&obj, "generateName");
            if prefix.is_empty() {
                return Err(ApiError::BadRequest(
                    "metadata.name or metadata.generateName is required".into(),
                ));
            }
            name = format!("{prefix}{:05x}", s.next_uid);
        }
        let ns = if info.namespaced {
            let from_obj = meta(&obj, "namespace");
            match namespace {
                Some(n) if !from_obj.is_empty() && from_obj != n => {
                    return Err(ApiError::BadRequest(format!(
                        "namespace {from_obj:?} in the body does not match {n:?}"
                    )))
                }
                Some(n) => n.to_string(),
                None if !from_obj.is_empty() => from_obj,
                None => "default".to_string(),
            }
        } else {
            String::new()
        };
        let key = (kind, ns.clone(), name.clone());
        if s.objects.contains_key(&key) {
            return Err(ApiError::AlreadyExists {
                kind: info.name,
                name,
            });
        }
        let uid = s.next_uid;
        s.next_uid += 1;
        let m = &mut obj["metadata"];
        m["name"] = json!(name);
        if info.namespaced {
            m["namespace"] = json!(ns);
        }
        m["uid"] = json!(format!("00000000-0000-4000-8000-{uid:012x}"));
        m["creationTimestamp"] = json!(now);
        obj["kind"] = json!(info.name);
        obj["apiVersion"] = json!(kind.api_version());
        if kind == Kind::Service {
            s.assign_cluster_ip(&mut obj)?;
        }
        if kind == Kind::Pod && obj["status"]["phase"].is_null() {
            obj["status"]["phase"] = json!("Pending");
        }
        let obj = s.write(kind, key, obj, EventType::Added);
        s.run_controllers(kind, &ns, &now);
        Ok(obj)
    }

    /// Replaces an object; a resourceVersion in the body must match the stored one.
    pub fn update(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        let now = self.now();
        let mut s = self.lock();
        let key = Self::key(kind, namespace, name);
        let old = s.objects.get(&key).ok_or(ApiError::NotFound {
            kind: Self::kind_name(kind),
            name: name.into(),
        })?;
        let given = meta(&obj, "resourceVersion");
        if !given.is_empty() && given != meta(old, "resourceVersion") {
            return Err(ApiError::Conflict(format!(
                "the object has been modified (resourceVersion {given}, now {})",
                meta(old, "resourceVersion")
            )));
        }
        // Identity fields come from the stored object.
        for f in ["uid", "creationTimestamp", "name", "namespace"] {
            if !old["metadata"][f].is_null() {
                obj["metadata"][f] = old["metadata"][f].clone();
            }
        }
        obj["kind"] = old["kind"].clone();
        obj["apiVersion"] = old["apiVersion"].clone();
        if kind == Kind::Service && obj["spec"]["clusterIP"].is_null() {
            obj["spec"]["clusterIP"] = old["spec"]["clusterIP"].clone();
            obj["spec"]["clusterIPs"] = old["spec"]["clusterIPs"].clone();
        }
        let ns = key.1.clone();
        let obj = s.write(kind, key, obj, EventType::Modified);
        s.run_controllers(kind, &ns, &now);
        Ok(obj)
    }

    pub fn patch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        patch: &Value,
    ) -> Result<Value, ApiError> {
        let mut obj = self.get(kind, namespace, name)?;
        merge_patch(&mut obj, patch);
        // A patch does not carry a precondition unless it says so.
        if patch["metadata"]["resourceVersion"].is_null() {
            obj["metadata"]
                .as_object_mut()
                .map(|m| m.remove("resourceVersion"));
        }
        self.update(kind, namespace, name, obj)
    }

    pub fn delete(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let now = self.now();
        let mut s = self.lock();
        let key = Self::key(kind, namespace, name);
        let mut obj = s.objects.remove(&key).ok_or(ApiError::NotFound {
            kind: Self::kind_name(kind),
            name: name.into(),
        })?;
        s.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        let rv = s.rv;
        s.record(Event {
            rv,
            kind,
            namespace: key.1.clone(),
            kind_type: EventType::Deleted,
            object: obj.clone(),
        });
        s.run_controllers(kind, &key.1, &now);
        Ok(obj)
    }

    /// As the kubelet and the network plugin would: a pod gets its IP and phase (and is
    /// marked Ready when Running).
    pub fn set_pod_status(
        &self,
        namespace: &str,
        name: &str,
        ip: Option<Ipv4Addr>,
        phase: &str,
    ) -> Result<Value, ApiError> {
        let ready = if phase == "Running" { "True" } else { "False" };
        let mut status =
            json!({"phase": phase, "conditions": [{"type": "Ready", "status": ready}]});
        if let Some(ip) = ip {
            status["podIP"] = json!(ip.to_string());
            status["podIPs"] = json!([{"ip": ip.to_string()}]);
        }
        self.patch(Kind::Pod, Some(namespace), name, &json!({"status": status}))
    }

    /// Starts a watch from `from` (0: from now). Events come as the API sends them:
    /// `{"type": "ADDED", "object": {...}}`.
    pub fn watch(
        &self,
        kind: Kind,
        q: &Query,
        from: u64,
    ) -> Result<mpsc::Receiver<Value>, ApiError> {
        let labels = LabelQuery::parse(q.label_selector.as_deref().unwrap_or(""))
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let fields = FieldQuery::parse(q.field_selector.as_deref().unwrap_or(""))
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let mut s = self.lock();
        if from > 0 && from + 1 < s.oldest {
            return Err(ApiError::Gone {
                requested: from,
                oldest: s.oldest,
            });
        }
        let w = Watcher {
            kind,
            namespace: q.namespace.clone(),
            labels,
            fields,
            tx: mpsc::channel(1).0,
        };
        let backlog: Vec<Value> = if from == 0 {
            Vec::new()
        } else {
            s.history
                .iter()
                .filter(|e| e.rv > from && w.wants(e))
                .map(Event::json)
                .collect()
        };
        let (tx, rx) = mpsc::channel(backlog.len() + 4096);
        for e in backlog {
            let _ = tx.try_send(e);
        }
        s.watchers.push(Watcher { tx, ..w });
        Ok(rx)
    }
}

impl Watcher {
    fn wants(&self, e: &Event) -> bool {
        e.kind == self.kind
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| !self.kind.info().namespaced || *ns == e.namespace)
            && self.labels.matches(&labels_of(&e.object))
            && self.fields.matches(&e.object)
    }
}

impl Event {
    fn json(&self) -> Value {
        json!({"type": self.kind_type.as_str(), "object": self.object})
    }
}

impl State {
    fn write(&mut self, kind: Kind, key: ObjectKey, mut obj: Value, kind_type: EventType) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(key.clone(), obj.clone());
        let rv = self.rv;
        self.record(Event {
            rv,
            kind,
            namespace: key.1,
            kind_type,
            object: obj.clone(),
        });
        obj
    }

    fn record(&mut self, e: Event) {
        self.watchers.retain(|w| {
            if !w.wants(&e) {
                return !w.tx.is_closed();
            }
            // A watcher that cannot keep up is closed; its client re-lists, as with a
            // real server.
            w.tx.try_send(e.json()).is_ok()
        });
        self.history.push_back(e);
        self.trim_history();
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(e) = self.history.pop_front() {
                self.oldest = e.rv + 1;
            }
        }
    }

    fn assign_cluster_ip(&mut self, obj: &mut Value) -> Result<(), ApiError> {
        let spec = &mut obj["spec"];
        if spec["type"].as_str() == Some("ExternalName") {
            return Ok(());
        }
        match spec["clusterIP"].as_str() {
            Some("None") => return Ok(()),
            Some(ip) if !ip.is_empty() => {
                spec["clusterIPs"] = json!([ip]);
                return Ok(());
            }
            _ => {}
        }
        // 10.96.0.0/12: 2^20 addresses; .1 is the kubernetes service by convention.
        if self.next_service_ip >= 1 << 20 {
            return Err(ApiError::Conflict(
                "the service IP range is exhausted".into(),
            ));
        }
        let ip = Ipv4Addr::from(u32::from(self.service_ips) + self.next_service_ip);
        self.next_service_ip += 1;
        spec["clusterIP"] = json!(ip.to_string());
        spec["clusterIPs"] = json!([ip.to_string()]);
        Ok(())
    }

    /// The EndpointSlice controller: one slice `<service>-sim` per selecting Service,
    /// holding the Pods that match with an IP, ready when Running and Ready.
    fn run_controllers(&mut self, changed: Kind, namespace: &str, now: &str) {
        if !self.endpoint_controller || !matches!(changed, Kind::Pod | Kind::Service) {
            return;
        }
        let services: Vec<Value> = self
            .objects
            .range((Kind::Service, namespace.to_string(), String::new())..)
            .take_while(|((k, ns, _), _)| *k == Kind::Service && ns == namespace)
            .map(|(_, v)| v.clone())
            .collect();
        let pods: Vec<Value> = self
            .objects
            .range((Kind::Pod, namespace.to_string(), String::new())..)
            .take_while(|((k, ns, _), _)| *k == Kind::Pod && ns == namespace)
            .map(|(_, v)| v.clone())
            .collect();
        let mut wanted: BTreeMap<String, Value> = BTreeMap::new();
        for svc in &services {
            let Some(selector) = svc["spec"]["selector"]
                .as_object()
                .filter(|s| !s.is_empty())
            else {
                continue;
            };
            let name = meta(svc, "name");
            let matching: Vec<&Value> = pods
                .iter()
                .filter(|p| {
                    let l = labels_of(p);
                    selector
                        .iter()
                        .all(|(k, v)| l.get(k).map(String::as_str) == v.as_str())
                })
                .filter(|p| {
                    p["status"]["podIP"]
                        .as_str()
                        .is_some_and(|ip| !ip.is_empty())
                })
                .collect();
            let endpoints: Vec<Value> = matching
                .iter()
                .map(|p| {
                    let ready = p["status"]["phase"] == "Running"
                        && p["status"]["conditions"].as_array().is_some_and(|c| {
                            c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")
                        });
                    let mut e = json!({"addresses": [p["status"]["podIP"]], "conditions": {"ready": ready, "serving": ready, "terminating": false},
                                       "targetRef": {"kind": "Pod", "name": meta(p, "name"), "namespace": namespace}});
                    if let Some(n) = p["spec"]["nodeName"].as_str() {
                        e["nodeName"] = json!(n);
                    }
                    e
                })
                .collect();
            let ports: Vec<Value> = svc["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|sp| {
                    let port = match &sp["targetPort"] {
                        Value::Number(n) => n.as_u64(),
                        Value::String(named) => matching.iter().find_map(|p| {
                            p["spec"]["containers"].as_array()?.iter().find_map(|c| {
                                c["ports"].as_array()?.iter().find(|cp| cp["name"] == json!(named))?["containerPort"].as_u64()
                            })
                        }),
                        _ => sp["port"].as_u64(),
                    }?;
                    Some(json!({"name": sp["name"].as_str().unwrap_or(""), "port": port, "protocol": sp["protocol"].as_str().unwrap_or("TCP")}))
                })
                .collect();
            let slice_name = format!("{name}-sim");
            wanted.insert(
                slice_name.clone(),
                json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                       "metadata": {"name": slice_name, "namespace": namespace,
                                    "labels": {"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": "contiv-sim"}},
                       "addressType": "IPv4", "endpoints": endpoints, "ports": ports}),
            );
        }
        // Apply the difference: only real changes make events.
        let existing: Vec<(ObjectKey, Value)> = self
            .objects
            .range((Kind::EndpointSlice, namespace.to_string(), String::new())..)
            .take_while(|((k, ns, _), _)| *k == Kind::EndpointSlice && ns == namespace)
            .filter(|(_, v)| {
                v["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == "contiv-sim"
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, old) in &existing {
            match wanted.remove(&key.2) {
                None => {
                    self.objects.remove(key);
                    self.rv += 1;
                    let mut obj = old.clone();
                    obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                    let rv = self.rv;
                    self.record(Event {
                        rv,
                        kind: Kind::EndpointSlice,
                        namespace: namespace.into(),
                        kind_type: EventType::Deleted,
                        object: obj,
                    });
                }
                Some(mut new) => {
                    if new["endpoints"] != old["endpoints"] || new["ports"] != old["ports"] {
                        for f in ["uid", "creationTimestamp"] {
                            new["metadata"][f] = old["metadata"][f].clone();
                        }
                        self.write(Kind::EndpointSlice, key.clone(), new, EventType::Modified);
                    }
                }
            }
        }
        for (name, mut new) in wanted {
            let uid = self.next_uid;
            self.next_uid += 1;
            new["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{uid:012x}"));
            new["metadata"]["creationTimestamp"] = json!(now);
            self.write(
                Kind::EndpointSlice,
                (Kind::EndpointSlice, namespace.to_string(), name),
                new,
                EventType::Added,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, app: &str, node: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"app": app}},
               "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]}})
    }

    #[tokio::test]
    async fn create_get_update_conflict_delete() {
        let s = ApiServer::new();
        let p = s
            .create(Kind::Pod, Some("default"), pod("a", "web", "n1"))
            .unwrap();
        assert_eq!(p["metadata"]["namespace"], "default");
        assert_eq!(p["status"]["phase"], "Pending");
        assert!(matches!(
            s.create(Kind::Pod, Some("default"), pod("a", "web", "n1")),
            Err(ApiError::AlreadyExists { .. })
        ));
        let mut stale = p.clone();
        s.patch(
            Kind::Pod,
            Some("default"),
            "a",
            &json!({"metadata": {"labels": {"x": "1"}}}),
        )
        .unwrap();
        stale["metadata"]["labels"]["y"] = json!("2");
        assert!(
            matches!(
                s.update(Kind::Pod, Some("default"), "a", stale),
                Err(ApiError::Conflict(_))
            ),
            "a stale write is refused"
        );
        assert_eq!(
            s.get(Kind::Pod, Some("default"), "a").unwrap()["metadata"]["labels"]["x"],
            "1"
        );
        s.delete(Kind::Pod, Some("default"), "a").unwrap();
        assert!(matches!(
            s.get(Kind::Pod, Some("default"), "a"),
            Err(ApiError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn services_get_cluster_ips() {
        let s = ApiServer::new();
        let a = s
            .create(
                Kind::Service,
                None,
                json!({"metadata": {"name": "a"}, "spec": {"ports": [{"port": 80}]}}),
            )
            .unwrap();
        let b = s
            .create(
                Kind::Service,
                None,
                json!({"metadata": {"name": "b"}, "spec": {"ports": [{"port": 80}]}}),
            )
            .unwrap();
        let h = s
            .create(
                Kind::Service,
                None,
                json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}}),
            )
            .unwrap();
        assert_eq!(a["spec"]["clusterIP"], "10.96.0.10");
        assert_eq!(b["spec"]["clusterIP"], "10.96.0.11");
        assert_eq!(h["spec"]["clusterIP"], "None");
    }

    #[tokio::test]
    async fn lists_page_with_continue_and_filter_by_selectors() {
        let s = ApiServer::new();
        for i in 0..5 {
            s.create(
                Kind::Pod,
                Some("default"),
                pod(
                    &format!("p{i}"),
                    if i % 2 == 0 { "web" } else { "db" },
                    &format!("n{}", i % 2),
                ),
            )
            .unwrap();
        }
        let mut names = Vec::new();
        let mut q = Query {
            limit: Some(2),
            ..Default::default()
        };
        loop {
            let page = s.list(Kind::Pod, &q).unwrap();
            names.extend(page.items.iter().map(|p| meta(p, "name")));
            match page.continue_token {
                Some(c) => q.continue_token = Some(c),
                None => break,
            }
        }
        assert_eq!(names, ["p0", "p1", "p2", "p3", "p4"]);
        let q = Query {
            label_selector: Some("app=web".into()),
            field_selector: Some("spec.nodeName=n0".into()),
            ..Default::default()
        };
        let names: Vec<_> = s
            .list(Kind::Pod, &q)
            .unwrap()
            .items
            .iter()
            .map(|p| meta(p, "name"))
            .collect();
        assert_eq!(names, ["p0", "p2", "p4"]);
    }

    #[tokio::test]
    async fn watch_replays_from_a_version_and_says_gone_when_compacted() {
        let s = ApiServer::new();
        let rv0 = s.resource_version();
        s.create(Kind::Pod, Some("default"), pod("a", "web", "n1"))
            .unwrap();
        s.patch(
            Kind::Pod,
            Some("default"),
            "a",
            &json!({"metadata": {"labels": {"v": "2"}}}),
        )
        .unwrap();
        let mut w = s.watch(Kind::Pod, &Query::default(), rv0).unwrap();
        assert_eq!(w.recv().await.unwrap()["type"], "ADDED");
        assert_eq!(w.recv().await.unwrap()["type"], "MODIFIED");
        s.delete(Kind::Pod, Some("default"), "a").unwrap();
        assert_eq!(w.recv().await.unwrap()["type"], "DELETED");
        s.compact();
        assert!(matches!(
            s.watch(Kind::Pod, &Query::default(), rv0),
            Err(ApiError::Gone { .. })
        ));
        assert!(
            s.watch(Kind::Pod, &Query::default(), s.resource_version())
                .is_ok(),
            "the current version is fine"
        );
    }

    #[tokio::test]
    async fn endpoint_slices_follow_services_and_ready_pods() {
        let s = ApiServer::new();
        s.create(Kind::Service, Some("default"), json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})).unwrap();
        s.create(Kind::Pod, Some("default"), pod("a", "web", "n1"))
            .unwrap();
        s.create(Kind::Pod, Some("default"), pod("b", "db", "n1"))
            .unwrap();
        let slice = || s.get(Kind::EndpointSlice, Some("default"), "web-sim");
        assert_eq!(
            slice().unwrap()["endpoints"],
            json!([]),
            "no pod has an IP yet"
        );
        s.set_pod_status("default", "a", Some(Ipv4Addr::new(10, 1, 1, 2)), "Running")
            .unwrap();
        s.set_pod_status("default", "b", Some(Ipv4Addr::new(10, 1, 1, 3)), "Running")
            .unwrap();
        let sl = slice().unwrap();
        assert_eq!(
            sl["endpoints"].as_array().unwrap().len(),
            1,
            "only the selected pod"
        );
        assert_eq!(sl["endpoints"][0]["addresses"][0], "10.1.1.2");
        assert_eq!(sl["endpoints"][0]["conditions"]["ready"], true);
        assert_eq!(sl["ports"][0]["port"], 8080, "named target port resolved");
        assert_eq!(
            sl["metadata"]["labels"]["kubernetes.io/service-name"],
            "web"
        );
        let rv = s.resource_version();
        s.patch(
            Kind::Pod,
            Some("default"),
            "b",
            &json!({"metadata": {"labels": {"x": "y"}}}),
        )
        .unwrap();
        assert_eq!(
            s.resource_version(),
            rv + 1,
            "an unrelated change rewrites no slice"
        );
        s.delete(Kind::Service, Some("default"), "web").unwrap();
        assert!(slice().is_err(), "the slice leaves with its service");
    }
}
