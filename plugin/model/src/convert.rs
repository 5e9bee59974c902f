//! From the API's objects (k8s-openapi types) to the model, refusing what the network
//! could not act on correctly.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::networking::v1 as networking;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::selector::{LabelSelector, Requirement, SelectorOp};
use crate::types::*;
use crate::ModelError;

/// Names an object in errors: `namespace/name` or `name`.
struct Ctx {
    kind: &'static str,
    object: String,
}

impl Ctx {
    fn new(
        kind: &'static str,
        m: &meta::ObjectMeta,
    ) -> Result<(Ctx, String, Option<String>), ModelError> {
        let name = m.name.clone().filter(|n| !n.is_empty());
        let ns = m.namespace.clone();
        let object = match (&ns, &name) {
            (Some(ns), Some(n)) => format!("{ns}/{n}"),
            (None, Some(n)) => n.clone(),
            (_, None) => "<unnamed>".to_string(),
        };
        let ctx = Ctx { kind, object };
        let name = name.ok_or_else(|| ctx.missing("metadata.name"))?;
        Ok((ctx, name, ns))
    }

    fn missing(&self, field: &'static str) -> ModelError {
        ModelError::Missing {
            kind: self.kind,
            object: self.object.clone(),
            field,
        }
    }

    fn invalid(&self, field: impl Into<String>, reason: impl Into<String>) -> ModelError {
        ModelError::Invalid {
            kind: self.kind,
            object: self.object.clone(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn namespace(&self, ns: Option<String>) -> Result<String, ModelError> {
        ns.filter(|n| !n.is_empty())
            .ok_or_else(|| self.missing("metadata.namespace"))
    }

    fn port(&self, field: &str, p: i32) -> Result<u16, ModelError> {
        u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| self.invalid(field, format!("port {p} is not in 1..65535")))
    }

    fn protocol(&self, field: &str, p: Option<&str>) -> Result<Protocol, ModelError> {
        match p.unwrap_or("TCP") {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            other => Err(self.invalid(field, format!("unknown protocol {other:?}"))),
        }
    }

    fn ip(&self, field: &str, s: &str) -> Result<IpAddr, ModelError> {
        s.parse()
            .map_err(|_| self.invalid(field, format!("{s:?} is not an IP address")))
    }

    fn ips<'a>(
        &self,
        field: &str,
        v: impl IntoIterator<Item = &'a String>,
    ) -> Result<Vec<IpAddr>, ModelError> {
        v.into_iter()
            .filter(|s| !s.is_empty() && s.as_str() != "None")
            .map(|s| self.ip(field, s))
            .collect()
    }

    fn cidr(&self, field: &str, s: &str) -> Result<String, ModelError> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| self.invalid(field, format!("{s:?} is not a CIDR")))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| self.invalid(field, format!("{s:?} is not a CIDR")))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        match len.parse::<u8>() {
            Ok(l) if l <= max => Ok(s.to_string()),
            _ => Err(self.invalid(field, format!("{s:?} has a bad prefix length"))),
        }
    }

    fn selector(&self, field: &str, s: &meta::LabelSelector) -> Result<LabelSelector, ModelError> {
        let match_expressions = s
            .match_expressions
            .iter()
            .flatten()
            .map(|r| {
                let op = match r.operator.as_str() {
                    "In" => SelectorOp::In,
                    "NotIn" => SelectorOp::NotIn,
                    "Exists" => SelectorOp::Exists,
                    "DoesNotExist" => SelectorOp::DoesNotExist,
                    other => {
                        return Err(
                            self.invalid(field, format!("unknown selector operator {other:?}"))
                        )
                    }
                };
                let values = r.values.clone().unwrap_or_default();
                let needs_values = matches!(op, SelectorOp::In | SelectorOp::NotIn);
                if needs_values == values.is_empty() {
                    return Err(self.invalid(
                        field,
                        format!("operator {:?} with {} values", r.operator, values.len()),
                    ));
                }
                Ok(Requirement {
                    key: r.key.clone(),
                    op,
                    values,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LabelSelector {
            match_labels: s.match_labels.clone().unwrap_or_default(),
            match_expressions,
        })
    }
}

fn labels(m: &meta::ObjectMeta) -> BTreeMap<String, String> {
    m.labels.clone().unwrap_or_default()
}

impl TryFrom<&core::Pod> for Pod {
    type Error = ModelError;
    fn try_from(p: &core::Pod) -> Result<Self, ModelError> {
        let (ctx, name, ns) = Ctx::new("Pod", &p.metadata)?;
        let namespace = ctx.namespace(ns)?;
        let spec = p.spec.as_ref();
        let status = p.status.as_ref();
        let mut ips: Vec<IpAddr> = Vec::new();
        if let Some(ip) = status.and_then(|s| s.pod_ip.as_deref()) {
            ips.push(ctx.ip("status.podIP", ip)?);
        }
        for extra in status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
        {
            let ip = ctx.ip("status.podIPs", &extra.ip)?;
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        let host_ip = status
            .and_then(|s| s.host_ip.as_deref())
            .map(|s| ctx.ip("status.hostIP", s))
            .transpose()?;
        let mut container_ports = Vec::new();
        for (ci, c) in spec
            .map(|s| s.containers.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            for (pi, cp) in c.ports.iter().flatten().enumerate() {
                let field = format!("spec.containers[{ci}].ports[{pi}]");
                container_ports.push(ContainerPort {
                    name: cp.name.clone(),
                    port: ctx.port(&field, cp.container_port)?,
                    protocol: ctx.protocol(&field, cp.protocol.as_deref())?,
                });
            }
        }
        let phase = match status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending") {
            "Pending" => PodPhase::Pending,
            "Running" => PodPhase::Running,
            "Succeeded" => PodPhase::Succeeded,
            "Failed" => PodPhase::Failed,
            _ => PodPhase::Unknown,
        };
        Ok(Pod {
            name,
            namespace,
            labels: labels(&p.metadata),
            ips,
            host_ip,
            node: spec.and_then(|s| s.node_name.clone()),
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            container_ports,
            phase,
            deleting: p.metadata.deletion_timestamp.is_some(),
        })
    }
}

impl TryFrom<&core::Namespace> for Namespace {
    type Error = ModelError;
    fn try_from(n: &core::Namespace) -> Result<Self, ModelError> {
        let (_, name, _) = Ctx::new("Namespace", &n.metadata)?;
        Ok(Namespace {
            name,
            labels: labels(&n.metadata),
        })
    }
}

impl TryFrom<&core::Service> for Service {
    type Error = ModelError;
    fn try_from(s: &core::Service) -> Result<Self, ModelError> {
        let (ctx, name, ns) = Ctx::new("Service", &s.metadata)?;
        let namespace = ctx.namespace(ns)?;
        let spec = s.spec.as_ref().ok_or_else(|| ctx.missing("spec"))?;
        let service_type = match spec.type_.as_deref().unwrap_or("ClusterIP") {
            "ClusterIP" => ServiceType::ClusterIP,
            "NodePort" => ServiceType::NodePort,
            "LoadBalancer" => ServiceType::LoadBalancer,
            "ExternalName" => ServiceType::ExternalName,
            other => {
                return Err(ctx.invalid("spec.type", format!("unknown service type {other:?}")))
            }
        };
        let mut cluster_ips = ctx.ips("spec.clusterIPs", spec.cluster_ips.iter().flatten())?;
        if let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|s| !s.is_empty() && *s != "None")
        {
            let ip = ctx.ip("spec.clusterIP", ip)?;
            if !cluster_ips.contains(&ip) {
                cluster_ips.insert(0, ip);
            }
        }
        let ports = spec
            .ports
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, p)| {
                let field = format!("spec.ports[{i}]");
                let port = ctx.port(&field, p.port)?;
                let target_port = match &p.target_port {
                    None => TargetPort::Number(port),
                    Some(IntOrString::Int(n)) => {
                        TargetPort::Number(ctx.port(&format!("{field}.targetPort"), *n)?)
                    }
                    Some(IntOrString::String(s)) => match s.parse::<i32>() {
                        Ok(n) => TargetPort::Number(ctx.port(&format!("{field}.targetPort"), n)?),
                        Err(_) => TargetPort::Name(s.clone()),
                    },
                };
                Ok(ServicePort {
                    name: p.name.clone(),
                    protocol: ctx.protocol(&field, p.protocol.as_deref())?,
                    port,
                    target_port,
                    node_port: p
                        .node_port
                        .map(|n| ctx.port(&format!("{field}.nodePort"), n))
                        .transpose()?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let lb = s
            .status
            .as_ref()
            .and_then(|st| st.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        let load_balancer_ips = ctx.ips(
            "status.loadBalancer.ingress",
            lb.into_iter().flatten().filter_map(|i| i.ip.as_ref()),
        )?;
        let affinity = match spec.session_affinity.as_deref().unwrap_or("None") {
            "ClientIP" => Some(
                spec.session_affinity_config
                    .as_ref()
                    .and_then(|c| c.client_ip.as_ref())
                    .and_then(|c| c.timeout_seconds)
                    .map(|t| {
                        u32::try_from(t).map_err(|_| {
                            ctx.invalid("spec.sessionAffinityConfig", "negative timeout")
                        })
                    })
                    .transpose()?
                    .unwrap_or(10_800),
            ),
            "None" => None,
            other => {
                return Err(ctx.invalid(
                    "spec.sessionAffinity",
                    format!("unknown affinity {other:?}"),
                ))
            }
        };
        let policy = |field: &str, v: Option<&str>| match v.unwrap_or("Cluster") {
            "Cluster" => Ok(TrafficPolicy::Cluster),
            "Local" => Ok(TrafficPolicy::Local),
            other => Err(ctx.invalid(field, format!("unknown traffic policy {other:?}"))),
        };
        Ok(Service {
            name,
            namespace,
            service_type,
            cluster_ips,
            ports,
            selector: spec.selector.clone().filter(|s| !s.is_empty()),
            external_ips: ctx.ips("spec.externalIPs", spec.external_ips.iter().flatten())?,
            load_balancer_ips,
            session_affinity_timeout: affinity,
            external_traffic_policy: policy(
                "spec.externalTrafficPolicy",
                spec.external_traffic_policy.as_deref(),
            )?,
            internal_traffic_policy: policy(
                "spec.internalTrafficPolicy",
                spec.internal_traffic_policy.as_deref(),
            )?,
        })
    }
}

impl TryFrom<&discovery::EndpointSlice> for EndpointSlice {
    type Error = ModelError;
    fn try_from(e: &discovery::EndpointSlice) -> Result<Self, ModelError> {
        let (ctx, name, ns) = Ctx::new("EndpointSlice", &e.metadata)?;
        let namespace = ctx.namespace(ns)?;
        let service = e
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .cloned()
            .ok_or_else(|| ctx.missing("metadata.labels[kubernetes.io/service-name]"))?;
        if e.address_type == "FQDN" {
            return Err(ctx.invalid("addressType", "FQDN endpoints are not routed"));
        }
        let endpoints = e
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, ep)| {
                let c = ep.conditions.as_ref();
                let ready = c.and_then(|c| c.ready).unwrap_or(true);
                Ok(Endpoint {
                    addresses: ctx
                        .ips(&format!("endpoints[{i}].addresses"), ep.addresses.iter())?,
                    ready,
                    serving: c.and_then(|c| c.serving).unwrap_or(ready),
                    terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                    node: ep.node_name.clone(),
                    zone: ep.zone.clone(),
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let ports = e
            .ports
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, p)| {
                let field = format!("ports[{i}]");
                // A port without a number means "all ports" and carries nothing to route.
                let port = p.port?;
                Some((|| {
                    Ok(EndpointPort {
                        name: p.name.clone().filter(|n| !n.is_empty()),
                        port: ctx.port(&field, port)?,
                        protocol: ctx.protocol(&field, p.protocol.as_deref())?,
                    })
                })())
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(EndpointSlice {
            name,
            namespace,
            service,
            endpoints,
            ports,
        })
    }
}

/// Endpoints of an older cluster: one slice named after the service.
impl TryFrom<&core::Endpoints> for EndpointSlice {
    type Error = ModelError;
    fn try_from(e: &core::Endpoints) -> Result<Self, ModelError> {
        let (ctx, name, ns) = Ctx::new("Endpoints", &e.metadata)?;
        let namespace = ctx.namespace(ns)?;
        let mut endpoints = Vec::new();
        let mut ports: Vec<EndpointPort> = Vec::new();
        for (si, subset) in e.subsets.iter().flatten().enumerate() {
            for (ready, list) in [
                (true, &subset.addresses),
                (false, &subset.not_ready_addresses),
            ] {
                for (ai, a) in list.iter().flatten().enumerate() {
                    endpoints.push(Endpoint {
                        addresses: vec![ctx.ip(&format!("subsets[{si}].addresses[{ai}]"), &a.ip)?],
                        ready,
                        serving: ready,
                        terminating: false,
                        node: a.node_name.clone(),
                        zone: None,
                    });
                }
            }
            for (pi, p) in subset.ports.iter().flatten().enumerate() {
                let field = format!("subsets[{si}].ports[{pi}]");
                let port = EndpointPort {
                    name: p.name.clone().filter(|n| !n.is_empty()),
                    port: ctx.port(&field, p.port)?,
                    protocol: ctx.protocol(&field, p.protocol.as_deref())?,
                };
                if !ports.contains(&port) {
                    ports.push(port);
                }
            }
        }
        Ok(EndpointSlice {
            service: name.clone(),
            name,
            namespace,
            endpoints,
            ports,
        })
    }
}

impl TryFrom<&networking::NetworkPolicy> for NetworkPolicy {
    type Error = ModelError;
    fn try_from(n: &networking::NetworkPolicy) -> Result<Self, ModelError> {
        let (ctx, name, ns) = Ctx::new("NetworkPolicy", &n.metadata)?;
        let namespace = ctx.namespace(ns)?;
        let spec = n.spec.as_ref().ok_or_else(|| ctx.missing("spec"))?;
        let pod_selector = ctx.selector(
            "spec.podSelector",
            &spec.pod_selector.clone().unwrap_or_default(),
        )?;
        let ports = |field: &str, ports: Option<&Vec<networking::NetworkPolicyPort>>| {
            ports
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, p)| {
                    let field = format!("{field}.ports[{i}]");
                    let port = match &p.port {
                        None => None,
                        Some(IntOrString::Int(n)) => {
                            Some(PolicyPortSpec::Number(ctx.port(&field, *n)?))
                        }
                        Some(IntOrString::String(s)) => Some(PolicyPortSpec::Name(s.clone())),
                    };
                    let end_port = p
                        .end_port
                        .map(|e| ctx.port(&format!("{field}.endPort"), e))
                        .transpose()?;
                    match (&port, end_port) {
                        (Some(PolicyPortSpec::Number(start)), Some(end)) if end < *start => {
                            return Err(
                                ctx.invalid(&field, format!("endPort {end} is below port {start}"))
                            );
                        }
                        (Some(PolicyPortSpec::Name(_)) | None, Some(_)) => {
                            return Err(ctx.invalid(&field, "endPort needs a numbered port"));
                        }
                        _ => {}
                    }
                    Ok(PolicyPort {
                        protocol: ctx.protocol(&field, p.protocol.as_deref())?,
                        port,
                        end_port,
                    })
                })
                .collect::<Result<Vec<_>, ModelError>>()
        };
        let peers = |field: &str, peers: Option<&Vec<networking::NetworkPolicyPeer>>| {
            peers
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, p)| {
                    let field = format!("{field}[{i}]");
                    match (&p.ip_block, &p.pod_selector, &p.namespace_selector) {
                        (Some(b), None, None) => Ok(PolicyPeer::IpBlock(IpBlock {
                            cidr: ctx.cidr(&format!("{field}.ipBlock.cidr"), &b.cidr)?,
                            except: b
                                .except
                                .iter()
                                .flatten()
                                .map(|e| ctx.cidr(&format!("{field}.ipBlock.except"), e))
                                .collect::<Result<_, _>>()?,
                        })),
                        (Some(_), _, _) => {
                            Err(ctx.invalid(&field, "ipBlock cannot be combined with selectors"))
                        }
                        (None, None, None) => {
                            Err(ctx.invalid(&field, "a peer needs a selector or an ipBlock"))
                        }
                        (None, pods, namespaces) => Ok(PolicyPeer::Pods {
                            pod_selector: pods
                                .as_ref()
                                .map(|s| ctx.selector(&format!("{field}.podSelector"), s))
                                .transpose()?,
                            namespace_selector: namespaces
                                .as_ref()
                                .map(|s| ctx.selector(&format!("{field}.namespaceSelector"), s))
                                .transpose()?,
                        }),
                    }
                })
                .collect::<Result<Vec<_>, ModelError>>()
        };
        let ingress = spec
            .ingress
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| {
                let f = format!("spec.ingress[{i}]");
                Ok(PolicyRule {
                    ports: ports(&f, r.ports.as_ref())?,
                    peers: peers(&format!("{f}.from"), r.from.as_ref())?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let egress = spec
            .egress
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, r)| {
                let f = format!("spec.egress[{i}]");
                Ok(PolicyRule {
                    ports: ports(&f, r.ports.as_ref())?,
                    peers: peers(&format!("{f}.to"), r.to.as_ref())?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        // As the API server defaults it: Ingress always, Egress when egress rules exist.
        let policy_types =
            match &spec.policy_types {
                Some(types) => types
                    .iter()
                    .map(|t| match t.as_str() {
                        "Ingress" => Ok(PolicyType::Ingress),
                        "Egress" => Ok(PolicyType::Egress),
                        other => Err(ctx
                            .invalid("spec.policyTypes", format!("unknown policy type {other:?}"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                None if egress.is_empty() => vec![PolicyType::Ingress],
                None => vec![PolicyType::Ingress, PolicyType::Egress],
            };
        Ok(NetworkPolicy {
            name,
            namespace,
            pod_selector,
            policy_types,
            ingress,
            egress,
        })
    }
}

impl TryFrom<&core::Node> for Node {
    type Error = ModelError;
    fn try_from(n: &core::Node) -> Result<Self, ModelError> {
        let (ctx, name, _) = Ctx::new("Node", &n.metadata)?;
        let status = n.status.as_ref();
        let addresses = status
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .map(|a| NodeAddress {
                kind: a.type_.clone(),
                address: a.address.clone(),
            })
            .collect();
        let spec = n.spec.as_ref();
        let mut pod_cidrs: Vec<String> = spec
            .and_then(|s| s.pod_cidrs.as_ref())
            .into_iter()
            .flatten()
            .map(|c| ctx.cidr("spec.podCIDRs", c))
            .collect::<Result<_, _>>()?;
        if let Some(c) = spec.and_then(|s| s.pod_cidr.as_deref()) {
            let c = ctx.cidr("spec.podCIDR", c)?;
            if !pod_cidrs.contains(&c) {
                pod_cidrs.insert(0, c);
            }
        }
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        Ok(Node {
            name,
            addresses,
            pod_cidrs,
            ready,
        })
    }
}
