//! The CNI path end to end, black-box: contiv-cni executed as a runtime executes it,
//! talking to a contiv-vswitch process over its socket, a real etcd, a real namespace
//! per pod. Needs root (CI runs as root).

mod common;
mod wait;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use wait::wait_for;

#[test]
fn every_command_answers_as_the_spec_says() {
    if !can_run() {
        return;
    }
    let node = Node::start("cmd");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&node.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "only root may wire pods");
    assert_eq!(node.http_get("/healthz"), "ok\n");
    assert_eq!(node.http_get("/readyz"), "ok\n");
    let p1 = node.pod_netns(1);
    let add = node.add("c1", &p1);
    let r = add.ok().json();
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["interfaces"][0]["name"], "eth0");
    assert_eq!(
        r["interfaces"][0]["sandbox"],
        p1.path().display().to_string()
    );
    assert_eq!(r["ips"][0]["address"], "10.1.1.2/32");
    assert_eq!(r["ips"][0]["gateway"], "10.1.1.1");
    assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
    // The MAC in the result is the pod's.
    let link = p1.exec(&["ip", "-o", "link", "show", "eth0"]).unwrap();
    let link = String::from_utf8_lossy(&link.stdout).to_string();
    assert!(
        link.contains(r["interfaces"][0]["mac"].as_str().unwrap()),
        "{link}"
    );
    // A repeated ADD (a runtime retrying) gets the same address.
    assert_eq!(result_ip(&node.add("c1", &p1).ok().json()), "10.1.1.2");

    // CHECK, with the prevResult a runtime passes.
    let mut conf: Value = serde_json::from_str(&node.conf("1.0.0")).unwrap();
    conf["prevResult"] = r.clone();
    node.cni("CHECK", "c1", Some(&p1.path()), &conf.to_string())
        .ok();
    // A CHECK that finds something missing says what.
    p1.exec(&["ip", "route", "del", "default"]).unwrap();
    let broken = node.check("c1", &p1);
    assert_eq!(broken.error_code(), 102);
    assert!(
        broken.json()["details"]
            .as_str()
            .unwrap()
            .contains("no default route"),
        "{}",
        broken.stdout
    );
    // A prevResult with another address is not ours.
    conf["prevResult"]["ips"][0]["address"] = json!("10.1.1.77/32");
    let wrong = node.cni("CHECK", "c1", Some(&p1.path()), &conf.to_string());
    assert_eq!(wrong.error_code(), 102);

    node.del("c1", &p1).ok();
    assert!(!has_link(&p1, "eth0"), "DEL removes the pod's interface");
    node.del("c1", &p1).ok(); // again: succeeds
    node.del("never-added", &p1).ok();
    node.cni("DEL", "gone", None, &node.conf("1.0.0")).ok(); // no netns on DEL
    assert_eq!(node.check("c1", &p1).error_code(), 3, "unknown container");

    let v = node.cni("VERSION", "", None, &node.conf("1.0.0"));
    let v = v.ok().json();
    assert_eq!(v["cniVersion"], "1.0.0");
    let supported: Vec<&str> = v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x.as_str())
        .collect();
    assert_eq!(supported, ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);

    assert_eq!(node.cni("STATUS", "", None, &node.conf("1.1.0")).code, 0);

    // GC: three pods, one still valid; the others go, interfaces and addresses.
    let pods: Vec<_> = (2..5).map(|i| node.pod_netns(i)).collect();
    for (i, p) in pods.iter().enumerate() {
        node.add(&format!("g{i}"), p).ok();
    }
    let mut gc: Value = serde_json::from_str(&node.conf("1.1.0")).unwrap();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "g0", "ifname": "eth0"}]);
    node.cni("GC", "", None, &gc.to_string()).ok();
    assert!(has_link(&pods[0], "eth0"));
    assert!(!has_link(&pods[1], "eth0") && !has_link(&pods[2], "eth0"));
    assert_eq!(node.store_keys("ipam/").len(), 1);
    node.del("g0", &pods[0]).ok();
    node.assert_no_pod_state();
}

#[test]
fn an_agent_that_is_down_is_reported_within_a_bound() {
    if !can_run() {
        return;
    }
    let mut node = Node::start("down");
    let p = node.pod_netns(1);
    node.kill_agent();
    let status = node.cni("STATUS", "", None, &node.conf("1.1.0"));
    assert_eq!(status.error_code(), 50, "STATUS: plugin not available");
    let add = node.add("c1", &p);
    assert_eq!(add.error_code(), 11, "ADD: try again later");
    assert!(
        add.took < Duration::from_secs(15),
        "bounded by timeoutMs: {:?}",
        add.took
    );
    assert!(!has_link(&p, "eth0"));
    assert_eq!(node.del("c1", &p).error_code(), 11);
    // The agent back: the same calls succeed.
    node.start_agent();
    node.add("c1", &p).ok();
    node.del("c1", &p).ok();
    node.assert_no_pod_state();
}

#[test]
fn results_take_the_format_of_the_configured_version() {
    if !can_run() {
        return;
    }
    let node = Node::start("ver");
    let p = node.pod_netns(1);
    for version in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let r = node
            .cni("ADD", "c1", Some(&p.path()), &node.conf(version))
            .ok()
            .json();
        assert_eq!(r["cniVersion"], version);
        let has_version = r["ips"][0].get("version").is_some();
        assert_eq!(has_version, version < "1.0.0", "{version}: {r}");
        assert_eq!(
            r["interfaces"][0].get("mtu").is_some(),
            version == "1.1.0",
            "{r}"
        );
        node.cni("DEL", "c1", Some(&p.path()), &node.conf(version))
            .ok();
    }
    // CHECK came with 0.4.0, STATUS and GC with 1.1.0.
    let old_check = node.cni("CHECK", "c1", Some(&p.path()), &node.conf("0.3.1"));
    assert_eq!(old_check.error_code(), 1);
    assert_eq!(old_check.json()["cniVersion"], "0.3.1");
    assert_eq!(
        node.cni("STATUS", "", None, &node.conf("1.0.0"))
            .error_code(),
        1
    );
    node.assert_no_pod_state();
}

#[test]
fn two_pods_reach_each_other_and_the_host_and_leave_nothing() {
    if !can_run() {
        return;
    }
    let node = Node::start("ping");
    let (p1, p2) = (node.pod_netns(1), node.pod_netns(2));
    let ip1 = result_ip(&node.add("c1", &p1).ok().json());
    let ip2 = result_ip(&node.add("c2", &p2).ok().json());
    assert_ne!(ip1, ip2);
    assert!(ping(&p1, &ip2), "pod to pod");
    assert!(ping(&p2, &ip1), "pod to pod, the other way");
    assert!(ping(&p1, "172.30.1.2"), "pod to its host");
    assert!(ping(&node.host, &ip2), "host to pod");
    assert!(ping(&p1, "10.1.1.1"), "pod to its gateway");
    let d = node.dump();
    assert_eq!(d["converged"], true);
    assert_eq!(d["ports"].as_array().unwrap().len(), 3);
    let metrics = node.http_get("/metrics");
    assert!(metrics.contains("contiv_vswitch_pods 2"), "{metrics}");
    // The dataplane's counters: a series per port, with the pings above in them, and
    // every drop reason, zero or not.
    assert!(
        metrics.contains("contiv_vswitch_dataplane_up 1"),
        "{metrics}"
    );
    let series = |prefix: &str| -> Vec<(String, u64)> {
        metrics
            .lines()
            .filter_map(|l| {
                let (labels, v) = l.strip_prefix(prefix)?.rsplit_once(' ')?;
                Some((labels.to_string(), v.parse().ok()?))
            })
            .collect()
    };
    let rx = series("contiv_vswitch_dataplane_rx_packets_total{interface=");
    assert_eq!(rx.len(), 3, "one series per port: {metrics}");
    assert!(
        rx.iter().map(|(_, n)| n).sum::<u64>() >= 10,
        "five pings of two requests each went through: {metrics}"
    );
    assert_eq!(
        series("contiv_vswitch_dataplane_drops_total{node=\"ip4-input\",reason=\"bad checksum\"}"),
        [(String::new(), 0)],
        "{metrics}"
    );
    node.del("c1", &p1).ok();
    // The other pod keeps its gateway.
    assert!(ping(&p2, "10.1.1.1"), "the shared gateway address survives");
    node.del("c2", &p2).ok();
    assert!(!has_link(&p1, "eth0") && !has_link(&p2, "eth0"));
    node.assert_no_pod_state();
}

/// Runs one plugin of a chain as libcni does: the network's name and version injected,
/// the previous result as prevResult.
fn run_chain(
    bin_dir: &std::path::Path,
    command: &str,
    plugins: &[Value],
    netns: &str,
    prev: Option<Value>,
) -> Option<Value> {
    let mut prev = prev;
    let order: Vec<&Value> = if command == "DEL" {
        plugins.iter().rev().collect()
    } else {
        plugins.iter().collect()
    };
    for p in order {
        let mut conf = p.clone();
        conf["name"] = json!("contiv-chain");
        conf["cniVersion"] = json!("1.0.0");
        if let Some(r) = &prev {
            conf["prevResult"] = r.clone();
        }
        let ty = conf["type"].as_str().unwrap().to_string();
        let bin = if ty == "contiv-cni" {
            bin_dir.join("contiv-cni").display().to_string()
        } else {
            format!("/usr/lib/cni/{ty}")
        };
        let path = format!("{}:/usr/lib/cni", bin_dir.display());
        let out = exec_plugin(
            &bin,
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", "chain1"),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", &path),
                (
                    "CNI_ARGS",
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE=t;K8S_POD_NAME=chain",
                ),
            ],
            &conf.to_string(),
        );
        assert_eq!(out.code, 0, "{ty} {command} failed: {}", out.stdout);
        if command == "ADD" {
            prev = Some(out.json());
        }
    }
    prev
}

#[test]
fn debians_reference_plugins_chain_after_ours() {
    if !can_run() {
        return;
    }
    if !std::path::Path::new("/usr/lib/cni/tuning").exists() {
        assert!(
            std::env::var_os("CONTIV_REQUIRE_TOOLS").is_none(),
            "ci/test.sh installs containernetworking-plugins"
        );
        eprintln!("skipped: no /usr/lib/cni (containernetworking-plugins)");
        return;
    }
    let node = Node::start("chain");
    let p = node.pod_netns(1);
    // The install step the DaemonSet runs: our binary and conflist into the runtime's
    // directories.
    let (bin_dir, conf_dir) = (node.dir.join("bin"), node.dir.join("net.d"));
    let install = std::process::Command::new(CNI)
        .arg("install")
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--conf-dir")
        .arg(&conf_dir)
        .arg("--socket")
        .arg(&node.socket)
        .output()
        .unwrap();
    assert!(install.status.success(), "{install:?}");
    let list: Value =
        serde_json::from_slice(&std::fs::read(conf_dir.join("10-contiv.conflist")).unwrap())
            .unwrap();
    let mut plugins = list["plugins"].as_array().unwrap().clone();
    assert_eq!(plugins[0]["type"], "contiv-cni", "ours first");
    // And tuning, to see a chained plugin act inside the pod.
    plugins.insert(
        1,
        json!({"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.accept_local": "1"}}),
    );
    let netns = p.path().display().to_string();
    let result = run_chain(&bin_dir, "ADD", &plugins, &netns, None).expect("a result");
    assert_eq!(result["cniVersion"], "1.0.0");
    assert_eq!(result["ips"][0]["address"], "10.1.1.2/32", "{result}");
    let sysctl = p
        .exec(&["cat", "/proc/sys/net/ipv4/conf/eth0/accept_local"])
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&sysctl.stdout).trim(),
        "1",
        "tuning set the sysctl in the pod"
    );
    assert!(ping(&p, "172.30.1.2"), "the chained pod has connectivity");
    run_chain(&bin_dir, "DEL", &plugins, &netns, Some(result));
    assert!(!has_link(&p, "eth0"));
    node.assert_no_pod_state();
}

#[test]
fn churn_of_200_pods_leaks_nothing() {
    if !can_run() {
        return;
    }
    let node = Arc::new(Node::start("churn"));
    let pods: Arc<Vec<_>> = Arc::new((0..200).map(|i| node.pod_netns(i)).collect());
    // Each pod is added then deleted; the order of all 400 steps is shuffled (with a
    // fixed seed) so that adds and deletes of different pods interleave, and 8 callers
    // run them concurrently. A pod's delete never runs before its add has returned.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0xC0_FFEE);
    let mut order: Vec<usize> = (0..200).collect();
    order.shuffle(&mut rng);
    let delete_after: Vec<usize> = order.iter().map(|_| rng.random_range(0..200)).collect();
    let queue = Arc::new(Mutex::new(
        order
            .iter()
            .zip(delete_after)
            .map(|(&p, d)| (p, d))
            .collect::<Vec<_>>(),
    ));
    let added = Arc::new(Mutex::new(Vec::<usize>::new()));
    let ips = Arc::new(Mutex::new(BTreeSet::new()));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (node, pods, queue, added, ips) = (
                node.clone(),
                pods.clone(),
                queue.clone(),
                added.clone(),
                ips.clone(),
            );
            std::thread::spawn(move || loop {
                let next = queue.lock().unwrap().pop();
                let Some((p, delete_after)) = next else {
                    // Drain: delete what is still added.
                    let left = added.lock().unwrap().pop();
                    match left {
                        Some(p) => {
                            node.del(&format!("churn{p}"), &pods[p]).ok();
                            continue;
                        }
                        None => break,
                    }
                };
                let r = node.add(&format!("churn{p}"), &pods[p]);
                let ip = result_ip(&r.ok().json());
                {
                    // Two live pods never share an address.
                    let mut live = ips.lock().unwrap();
                    assert!(live.insert(ip.clone()), "{ip} handed out twice");
                }
                added.lock().unwrap().push(p);
                // Delete a random earlier pod (possibly this one) now and then.
                if delete_after % 2 == 0 {
                    let victim = {
                        let mut a = added.lock().unwrap();
                        if a.is_empty() {
                            None
                        } else {
                            let i = delete_after % a.len();
                            Some(a.swap_remove(i))
                        }
                    };
                    if let Some(v) = victim {
                        let vip = pods[v]
                            .exec(&["ip", "-4", "-o", "addr", "show", "eth0"])
                            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                            .unwrap_or_default();
                        node.del(&format!("churn{v}"), &pods[v]).ok();
                        let mut live = ips.lock().unwrap();
                        live.retain(|ip| !vip.contains(&format!(" {ip}/32")));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a churn worker failed");
    }
    for p in pods.iter() {
        assert!(!has_link(p, "eth0"), "{} kept its interface", p.name);
    }
    node.assert_no_pod_state();
    assert_eq!(node.dump()["converged"], true);
}

#[test]
fn kill_9_of_the_agent_keeps_every_pod_and_its_traffic() {
    if !can_run() {
        return;
    }
    let mut node = Node::start("kill");
    let (p1, p2) = (node.pod_netns(1), node.pod_netns(2));
    let ip1 = result_ip(&node.add("c1", &p1).ok().json());
    let ip2 = result_ip(&node.add("c2", &p2).ok().json());
    let gone = node.pod_netns(3);
    node.add("c3", &gone).ok();
    assert!(ping(&p1, &ip2));

    node.kill_agent();
    // While the agent is down, a pod goes away without a DEL.
    drop(gone);
    node.start_agent();
    // No CNI call: the restarted agent re-adopts both pods.
    wait_for(Duration::from_secs(10), "traffic resumes", || {
        ping(&p1, &ip2).then_some(())
    });
    assert!(ping(&p2, &ip1));
    assert!(ping(&node.host, &ip1), "host to pod after the restart");
    let addr = p1
        .exec(&["ip", "-4", "-o", "addr", "show", "eth0"])
        .unwrap();
    assert!(String::from_utf8_lossy(&addr.stdout).contains(&format!("{ip1}/32")));
    // The vanished pod's address was released by the startup resync.
    let d = node.dump();
    let held: Vec<&str> = d["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a[1].as_str())
        .collect();
    assert_eq!(held, ["c1", "c2"], "{d}");
    assert_eq!(d["converged"], true);
    node.check("c1", &p1).ok();
    node.del("c1", &p1).ok();
    node.del("c2", &p2).ok();
    node.assert_no_pod_state();
}

#[test]
fn a_store_outage_during_add_leaves_all_or_nothing() {
    if !can_run() {
        return;
    }
    let mut node = Node::start("etcd");
    let first = node.pod_netns(0);
    node.add("c0", &first).ok();
    // Several ADDs in flight while etcd is killed: each either succeeds fully or fails
    // leaving no interface behind.
    let pods: Vec<_> = (1..7).map(|i| node.pod_netns(i)).collect();
    let etcd_pid = node.etcd.pid().expect("etcd runs").to_string();
    let outcomes = std::thread::scope(|s| {
        let calls: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let node = &node;
                s.spawn(move || node.add(&format!("c{}", i + 1), p))
            })
            .collect();
        // Kill etcd once the batch is under way: an address of it is in the store.
        wait_for(
            Duration::from_secs(10),
            "an ADD of the batch allocated",
            || (node.store_keys("ipam/").len() > 1).then_some(()),
        );
        std::process::Command::new("kill")
            .args(["-9", &etcd_pid])
            .status()
            .expect("kill runs");
        calls
            .into_iter()
            .map(|c| c.join().expect("ADD runs"))
            .collect::<Vec<_>>()
    });
    let mut failed = 0;
    for (p, out) in pods.iter().zip(&outcomes) {
        if out.code == 0 {
            let ip = result_ip(&out.json());
            assert!(
                ping(p, "10.1.1.1"),
                "a successful ADD is fully wired ({ip})"
            );
        } else {
            failed += 1;
            assert_eq!(out.error_code(), 11, "{}", out.stdout);
            assert!(!has_link(p, "eth0"), "a failed ADD leaves no interface");
        }
    }
    node.etcd.kill(); // reaps the process
                      // With the store down, every ADD now fails cleanly.
    let late = node.pod_netns(9);
    assert_eq!(node.add("late", &late).error_code(), 11);
    assert!(!has_link(&late, "eth0"));
    eprintln!(
        "{failed} of {} ADDs failed during the outage",
        outcomes.len()
    );
    node.etcd.restart().expect("etcd restarts");
    // The runtime's DELs (it calls DEL after a failed ADD too) clean everything.
    for (i, p) in pods.iter().enumerate() {
        wait_for(Duration::from_secs(10), "DEL after the outage", || {
            (node.del(&format!("c{}", i + 1), p).code == 0).then_some(())
        });
    }
    node.del("late", &late).ok();
    node.del("c0", &first).ok();
    node.assert_no_pod_state();
}

#[test]
fn bad_input_is_a_clear_error_and_leaks_nothing() {
    if !can_run() {
        return;
    }
    let node = Node::start_with(
        "bad",
        "ipam:\n  podSubnetCIDR: 10.1.0.0/16\n  podSubnetOneNodePrefixLen: 29\n  vppHostSubnetCIDR: 172.30.0.0/16\n  vppHostSubnetOneNodePrefixLen: 24\n  nodeInterconnectCIDR: 192.168.16.0/24\n  vxlanCIDR: 192.168.30.0/24\n  serviceCIDR: 10.96.0.0/12\n",
    );
    let p = node.pod_netns(0);
    let ns = p.path();
    assert_eq!(node.cni("ADD", "x", Some(&ns), "{not json").error_code(), 6);
    assert_eq!(
        node.cni("ADD", "x", None, &node.conf("1.0.0")).error_code(),
        4
    );
    let v = node.cni("ADD", "x", Some(&ns), &node.conf("0.1.0"));
    assert_eq!(v.error_code(), 1);
    let mut unknown: Value = serde_json::from_str(&node.conf("1.0.0")).unwrap();
    unknown["colour"] = json!("blue");
    let u = node.cni("ADD", "x", Some(&ns), &unknown.to_string());
    assert_eq!(u.error_code(), 2);
    assert!(u.json()["msg"].as_str().unwrap().contains("colour"));
    let missing = std::path::Path::new("/var/run/netns/no-such-namespace-here");
    let m = node.cni("ADD", "x", Some(missing), &node.conf("1.0.0"));
    assert_eq!(m.error_code(), 4);
    assert!(m.json()["msg"].as_str().unwrap().contains("does not exist"));
    assert!(
        node.store_keys("ipam/").is_empty(),
        "no address for bad input"
    );

    // A /29 holds .2 to .6 (the gateway is .1, .7 is broadcast): five pods.
    let node_base = node.dump()["pod_subnet"].as_str().unwrap().to_string();
    assert!(node_base.ends_with("/29"), "{node_base}");
    let pods: Vec<_> = (1..7).map(|i| node.pod_netns(i)).collect();
    for (i, pod) in pods.iter().take(5).enumerate() {
        node.add(&format!("full{i}"), pod).ok();
    }
    let exhausted = node.add("full5", &pods[5]);
    assert_eq!(exhausted.error_code(), 100);
    assert!(
        exhausted.json()["msg"]
            .as_str()
            .unwrap()
            .contains("no free address"),
        "{}",
        exhausted.stdout
    );
    assert!(!has_link(&pods[5], "eth0"));
    assert_eq!(node.store_keys("ipam/").len(), 5);
    for (i, pod) in pods.iter().take(5).enumerate() {
        node.del(&format!("full{i}"), pod).ok();
    }
    node.assert_no_pod_state();
}
