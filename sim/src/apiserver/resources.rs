//! The kinds the simulated API server serves, and the discovery documents that let
//! kubectl and kube-rs find them.

use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    Service,
    Endpoints,
    Namespace,
    Node,
    EndpointSlice,
    NetworkPolicy,
}

pub struct KindInfo {
    pub kind: Kind,
    pub name: &'static str,
    /// The plural used in URLs.
    pub plural: &'static str,
    pub singular: &'static str,
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
}

pub const KINDS: &[KindInfo] = &[
    KindInfo {
        kind: Kind::Pod,
        name: "Pod",
        plural: "pods",
        singular: "pod",
        group: "",
        version: "v1",
        namespaced: true,
        short_names: &["po"],
    },
    KindInfo {
        kind: Kind::Service,
        name: "Service",
        plural: "services",
        singular: "service",
        group: "",
        version: "v1",
        namespaced: true,
        short_names: &["svc"],
    },
    KindInfo {
        kind: Kind::Endpoints,
        name: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        group: "",
        version: "v1",
        namespaced: true,
        short_names: &["ep"],
    },
    KindInfo {
        kind: Kind::Namespace,
        name: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        group: "",
        version: "v1",
        namespaced: false,
        short_names: &["ns"],
    },
    KindInfo {
        kind: Kind::Node,
        name: "Node",
        plural: "nodes",
        singular: "node",
        group: "",
        version: "v1",
        namespaced: false,
        short_names: &["no"],
    },
    KindInfo {
        kind: Kind::EndpointSlice,
        name: "EndpointSlice",
        plural: "endpointslices",
        singular: "endpointslice",
        group: "discovery.k8s.io",
        version: "v1",
        namespaced: true,
        short_names: &[],
    },
    KindInfo {
        kind: Kind::NetworkPolicy,
        name: "NetworkPolicy",
        plural: "networkpolicies",
        singular: "networkpolicy",
        group: "networking.k8s.io",
        version: "v1",
        namespaced: true,
        short_names: &["netpol"],
    },
];

impl Kind {
    pub fn info(self) -> &'static KindInfo {
        KINDS.iter().find(|k| k.kind == self).unwrap_or(&KINDS[0])
    }

    pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<Kind> {
        KINDS
            .iter()
            .find(|k| k.group == group && k.version == version && k.plural == plural)
            .map(|k| k.kind)
    }

    pub fn api_version(self) -> String {
        let i = self.info();
        if i.group.is_empty() {
            i.version.to_string()
        } else {
            format!("{}/{}", i.group, i.version)
        }
    }
}

pub fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-contiv-sim", "gitCommit": "0000000",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
        "compiler": "gc", "platform": "linux/amd64"
    })
}

pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]})
}

fn groups() -> Vec<&'static str> {
    let mut g: Vec<&str> = KINDS
        .iter()
        .map(|k| k.group)
        .filter(|g| !g.is_empty())
        .collect();
    g.dedup();
    g
}

pub fn api_group_list() -> Value {
    let groups: Vec<Value> = groups()
        .into_iter()
        .map(|g| {
            let gv = format!("{g}/v1");
            json!({"name": g, "versions": [{"groupVersion": gv, "version": "v1"}], "preferredVersion": {"groupVersion": gv, "version": "v1"}})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `None` when the group/version is not served.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .flat_map(|k| {
            let main = json!({
                "name": k.plural, "singularName": k.singular, "namespaced": k.namespaced, "kind": k.name,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"], "shortNames": k.short_names
            });
            let status = json!({"name": format!("{}/status", k.plural), "singularName": "", "namespaced": k.namespaced, "kind": k.name, "verbs": ["get", "patch", "update"]});
            [main, status]
        })
        .collect();
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}
