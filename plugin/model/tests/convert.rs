//! Conversions from the JSON a real API server returns (parsed by k8s-openapi) to the
//! model, and the refusals of what the network cannot act on.

use std::collections::BTreeMap;
use std::net::IpAddr;

use contiv_model::*;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::networking::v1 as networking;

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn pod() {
    let p = Pod::try_from(&fixture::<core::Pod>("pod.json")).unwrap();
    assert_eq!(p.name, "web-7d4b9c8f6-x2k4p");
    assert_eq!(p.namespace, "shop");
    assert_eq!(p.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(p.ips, vec![ip("10.1.2.5")]);
    assert_eq!(p.host_ip, Some(ip("192.168.16.2")));
    assert_eq!(p.node.as_deref(), Some("node-2"));
    assert_eq!(p.phase, PodPhase::Running);
    assert!(!p.deleting);
    assert_eq!(
        p.container_ports,
        vec![
            ContainerPort {
                name: Some("http".into()),
                port: 8080,
                protocol: Protocol::Tcp
            },
            ContainerPort {
                name: None,
                port: 9090,
                protocol: Protocol::Tcp
            },
            ContainerPort {
                name: Some("dns".into()),
                port: 53,
                protocol: Protocol::Udp
            },
        ]
    );
    assert_eq!(p.key(), "k8s/pod/shop/web-7d4b9c8f6-x2k4p");
}

#[test]
fn service() {
    let s = Service::try_from(&fixture::<core::Service>("service.json")).unwrap();
    assert_eq!(s.service_type, ServiceType::LoadBalancer);
    assert_eq!(s.cluster_ips, vec![ip("10.96.0.20")]);
    assert_eq!(s.selector, Some(labels(&[("app", "web")])));
    assert_eq!(s.ports[0].target_port, TargetPort::Name("http".into()));
    assert_eq!(s.ports[0].node_port, Some(30080));
    assert_eq!(s.ports[1].target_port, TargetPort::Number(9090));
    assert_eq!(
        s.ports[1].protocol,
        Protocol::Tcp,
        "protocol defaults to TCP"
    );
    assert_eq!(s.external_ips, vec![ip("192.0.2.10")]);
    assert_eq!(s.load_balancer_ips, vec![ip("203.0.113.7")]);
    assert_eq!(s.session_affinity_timeout, Some(600));
    assert_eq!(s.external_traffic_policy, TrafficPolicy::Local);
    assert_eq!(s.internal_traffic_policy, TrafficPolicy::Cluster);
}

#[test]
fn endpoint_slice_and_old_endpoints_agree() {
    let s = EndpointSlice::try_from(&fixture::<discovery::EndpointSlice>("endpointslice.json"))
        .unwrap();
    assert_eq!(s.service, "web");
    assert_eq!(s.endpoints.len(), 2);
    assert_eq!(s.endpoints[0].addresses, vec![ip("10.1.2.5")]);
    assert!(s.endpoints[0].ready);
    assert_eq!(s.endpoints[0].zone.as_deref(), Some("zone-a"));
    assert!(!s.endpoints[1].ready && s.endpoints[1].serving && s.endpoints[1].terminating);
    assert_eq!(
        s.ports,
        vec![EndpointPort {
            name: Some("http".into()),
            port: 8080,
            protocol: Protocol::Tcp
        }]
    );
    let old = EndpointSlice::try_from(&fixture::<core::Endpoints>("endpoints.json")).unwrap();
    assert_eq!(old.service, "web");
    assert_eq!(old.ports, s.ports);
    let addrs = |e: &EndpointSlice| {
        e.endpoints
            .iter()
            .map(|e| (e.addresses.clone(), e.ready, e.node.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(addrs(&old), addrs(&s), "the same endpoints either way");
}

#[test]
fn network_policy_full_spec() {
    let n = NetworkPolicy::try_from(&fixture::<networking::NetworkPolicy>("networkpolicy.json"))
        .unwrap();
    assert_eq!(
        n.policy_types,
        vec![PolicyType::Ingress, PolicyType::Egress]
    );
    assert!(n.pod_selector.matches(&labels(&[("app", "web")])));
    assert!(!n
        .pod_selector
        .matches(&labels(&[("app", "web"), ("tier", "canary")])));
    let rule = &n.ingress[0];
    assert_eq!(
        rule.peers[0],
        PolicyPeer::IpBlock(IpBlock {
            cidr: "172.17.0.0/16".into(),
            except: vec!["172.17.1.0/24".into()]
        })
    );
    let PolicyPeer::Pods {
        pod_selector: Some(pods),
        namespace_selector: Some(nss),
    } = &rule.peers[1]
    else {
        panic!("pods in namespaces: {:?}", rule.peers[1]);
    };
    assert!(pods.matches(&labels(&[("role", "db")])));
    assert!(!pods.matches(&labels(&[])));
    assert!(nss.matches(&labels(&[("team", "frontend")])));
    assert_eq!(
        rule.peers[2],
        PolicyPeer::Pods {
            pod_selector: Some(LabelSelector::default()),
            namespace_selector: None
        }
    );
    assert_eq!(
        rule.ports[0],
        PolicyPort {
            protocol: Protocol::Tcp,
            port: Some(PolicyPortSpec::Name("http".into())),
            end_port: None
        }
    );
    assert_eq!(
        rule.ports[1],
        PolicyPort {
            protocol: Protocol::Tcp,
            port: Some(PolicyPortSpec::Number(32000)),
            end_port: Some(32768)
        }
    );
    assert_eq!(n.egress[0].ports[0].protocol, Protocol::Udp);
}

#[test]
fn node_and_namespace() {
    let n = Node::try_from(&fixture::<core::Node>("node.json")).unwrap();
    assert!(n.ready);
    assert_eq!(n.pod_cidrs, vec!["10.1.2.0/24".to_string()]);
    assert_eq!(
        n.addresses[0],
        NodeAddress {
            kind: "InternalIP".into(),
            address: "192.168.16.2".into()
        }
    );
    assert_eq!(n.key(), "k8s/node/node-2");
    let ns = Namespace::try_from(&fixture::<core::Namespace>("namespace.json")).unwrap();
    assert_eq!(ns.labels.get("team").map(String::as_str), Some("frontend"));
    assert_eq!(ns.key(), "k8s/namespace/shop");
}

#[test]
fn what_the_network_cannot_use_is_refused_with_the_object_named() {
    let mut s: core::Service = fixture("service.json");
    s.spec.as_mut().unwrap().ports.as_mut().unwrap()[1].port = 70000;
    let e = Service::try_from(&s).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Service shop/web: spec.ports[1]: port 70000 is not in 1..65535"
    );

    let mut n: networking::NetworkPolicy = fixture("networkpolicy.json");
    n.spec
        .as_mut()
        .unwrap()
        .pod_selector
        .as_mut()
        .unwrap()
        .match_expressions
        .as_mut()
        .unwrap()[0]
        .operator = "Near".into();
    let e = NetworkPolicy::try_from(&n).unwrap_err();
    assert!(
        e.to_string().contains("shop/web-allow") && e.to_string().contains("Near"),
        "{e}"
    );

    let mut n: networking::NetworkPolicy = fixture("networkpolicy.json");
    n.spec.as_mut().unwrap().ingress.as_mut().unwrap()[0]
        .ports
        .as_mut()
        .unwrap()[1]
        .end_port = Some(100);
    assert!(NetworkPolicy::try_from(&n)
        .unwrap_err()
        .to_string()
        .contains("endPort 100 is below port 32000"));

    let mut n: networking::NetworkPolicy = fixture("networkpolicy.json");
    n.spec.as_mut().unwrap().egress.as_mut().unwrap()[0]
        .to
        .as_mut()
        .unwrap()[0]
        .ip_block
        .as_mut()
        .unwrap()
        .cidr = "10.0.0.0/33".into();
    assert!(NetworkPolicy::try_from(&n)
        .unwrap_err()
        .to_string()
        .contains("bad prefix length"));

    let mut p: core::Pod = fixture("pod.json");
    p.metadata.name = None;
    assert!(matches!(
        Pod::try_from(&p),
        Err(ModelError::Missing {
            field: "metadata.name",
            ..
        })
    ));
    let mut p: core::Pod = fixture("pod.json");
    p.status.as_mut().unwrap().pod_ip = Some("10.1.2.500".into());
    assert!(Pod::try_from(&p)
        .unwrap_err()
        .to_string()
        .contains("status.podIP"));
}

#[test]
fn documents_are_versioned() {
    let p = Pod::try_from(&fixture::<core::Pod>("pod.json")).unwrap();
    let doc = encode(&p);
    assert!(std::str::from_utf8(&doc).unwrap().starts_with("{\"v\":1,"));
    assert_eq!(decode::<Pod>(&doc).unwrap(), p);
    let future = String::from_utf8(doc)
        .unwrap()
        .replacen("{\"v\":1,", "{\"v\":9,", 1);
    assert!(matches!(
        decode::<Pod>(future.as_bytes()),
        Err(ModelError::Version { found: 9, .. })
    ));
    assert!(matches!(
        decode::<Pod>(b"not json"),
        Err(ModelError::Decode { .. })
    ));
    assert!(
        matches!(
            decode::<Service>(&encode(&p)),
            Err(ModelError::Decode { .. })
        ),
        "a pod is no service"
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decoding_anything_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<Pod>(&bytes);
            let _ = decode::<NetworkPolicy>(&bytes);
        }

        #[test]
        fn match_labels_is_a_subset_test(
            selector in prop::collection::btree_map("[a-c]", "[x-z]", 0..3),
            labels in prop::collection::btree_map("[a-d]", "[x-z]", 0..4),
        ) {
            let s = LabelSelector { match_labels: selector.clone(), match_expressions: vec![] };
            let subset = selector.iter().all(|(k, v)| labels.get(k) == Some(v));
            prop_assert_eq!(s.matches(&labels), subset);
        }
    }
}
