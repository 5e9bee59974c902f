//! The reflected kinds. Field names follow Kubernetes' where they mean the same.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{LabelSelector, Resource};

pub type Labels = BTreeMap<String, String>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub labels: Labels,
    /// All the pod's addresses (the first is `status.podIP`).
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    #[serde(default)]
    pub host_ip: Option<IpAddr>,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub host_network: bool,
    #[serde(default)]
    pub container_ports: Vec<ContainerPort>,
    pub phase: PodPhase,
    /// A deletion timestamp is set: the pod is terminating.
    #[serde(default)]
    pub deleting: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceType {
    ClusterIP,
    NodePort,
    LoadBalancer,
    ExternalName,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub protocol: Protocol,
    pub port: u16,
    pub target_port: TargetPort,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrafficPolicy {
    Cluster,
    Local,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub service_type: ServiceType,
    /// Empty for a headless service.
    #[serde(default)]
    pub cluster_ips: Vec<IpAddr>,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// `None`: the endpoints are managed by hand (no selector).
    #[serde(default)]
    pub selector: Option<Labels>,
    #[serde(default)]
    pub external_ips: Vec<IpAddr>,
    #[serde(default)]
    pub load_balancer_ips: Vec<IpAddr>,
    /// ClientIP affinity with its timeout in seconds; `None` for no affinity.
    #[serde(default)]
    pub session_affinity_timeout: Option<u32>,
    pub external_traffic_policy: TrafficPolicy,
    pub internal_traffic_policy: TrafficPolicy,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub addresses: Vec<IpAddr>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

/// The endpoints of a service: from an EndpointSlice, or from an Endpoints object of an
/// older cluster (then named after the service, one slice per object).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSlice {
    pub name: String,
    pub namespace: String,
    /// The service it belongs to (`kubernetes.io/service-name`).
    pub service: String,
    pub endpoints: Vec<Endpoint>,
    pub ports: Vec<EndpointPort>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyPortSpec {
    Number(u16),
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPort {
    pub protocol: Protocol,
    /// `None`: every port of the protocol.
    #[serde(default)]
    pub port: Option<PolicyPortSpec>,
    /// With a numbered port: the range `port..=end_port`.
    #[serde(default)]
    pub end_port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpBlock {
    pub cidr: String,
    #[serde(default)]
    pub except: Vec<String>,
}

/// One peer of a rule: pods (by pod and/or namespace selector) or an address block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyPeer {
    Pods {
        /// `None`: all pods (of the selected namespaces).
        pod_selector: Option<LabelSelector>,
        /// `None`: the policy's own namespace.
        namespace_selector: Option<LabelSelector>,
    },
    IpBlock(IpBlock),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRule {
    /// Empty: every port.
    #[serde(default)]
    pub ports: Vec<PolicyPort>,
    /// Empty: every peer.
    #[serde(default)]
    pub peers: Vec<PolicyPeer>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    pub name: String,
    pub namespace: String,
    pub pod_selector: LabelSelector,
    pub policy_types: Vec<PolicyType>,
    #[serde(default)]
    pub ingress: Vec<PolicyRule>,
    #[serde(default)]
    pub egress: Vec<PolicyRule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddress {
    /// InternalIP, ExternalIP, Hostname, ...
    pub kind: String,
    pub address: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    #[serde(default)]
    pub addresses: Vec<NodeAddress>,
    #[serde(default)]
    pub pod_cidrs: Vec<String>,
    pub ready: bool,
}

macro_rules! namespaced {
    ($t:ty, $kind:literal) => {
        impl Resource for $t {
            const KIND: &'static str = $kind;
            fn namespace(&self) -> Option<&str> {
                Some(&self.namespace)
            }
            fn name(&self) -> &str {
                &self.name
            }
        }
    };
}

macro_rules! cluster_scoped {
    ($t:ty, $kind:literal) => {
        impl Resource for $t {
            const KIND: &'static str = $kind;
            fn namespace(&self) -> Option<&str> {
                None
            }
            fn name(&self) -> &str {
                &self.name
            }
        }
    };
}

namespaced!(Pod, "pod");
namespaced!(Service, "service");
namespaced!(EndpointSlice, "endpointslice");
namespaced!(NetworkPolicy, "networkpolicy");
cluster_scoped!(Namespace, "namespace");
cluster_scoped!(Node, "node");
