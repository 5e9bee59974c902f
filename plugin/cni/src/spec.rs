//! The CNI specification as contiv-cni speaks it: the environment the runtime sets, the
//! network configuration on stdin, the result formats of each version, and the error
//! object with the spec's codes. Everything here is pure: bytes and strings in, values or
//! a [`CniError`] out, never a panic (fuzzed by the property tests).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{json, Map, Value};

use crate::proto::CniReply;

/// The version of the spec this plugin implements.
pub const SPEC_VERSION: &str = "1.1.0";

/// The spec's error codes, and ours from 100.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const NOT_AVAILABLE_LIMITED: u32 = 51;
    /// No address could be allocated (the node's pod subnet is exhausted).
    pub const IPAM_FAILED: u32 = 100;
    /// The pod's interface or the dataplane could not be set up.
    pub const WIRING_FAILED: u32 = 101;
    /// CHECK found the attachment not as ADD left it.
    pub const CHECK_FAILED: u32 = 102;
    /// The agent failed in a way that fits no other code.
    pub const INTERNAL: u32 = 103;
}

/// A CNI error: what the plugin prints on stdout (with a non-zero exit).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The spec's error object.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut o = json!({"cniVersion": cni_version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            o["details"] = Value::String(self.details.clone());
        }
        o
    }
}

/// The versions whose configurations and results we handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    pub const ALL: [CniVersion; 5] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];

    pub fn parse(s: &str) -> Option<CniVersion> {
        CniVersion::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }

    /// The first version that has this command.
    pub fn since(self) -> CniVersion {
        match self {
            Command::Add | Command::Del | Command::Version => CniVersion::V0_3_0,
            Command::Check => CniVersion::V0_4_0,
            Command::Status | Command::Gc => CniVersion::V1_1_0,
        }
    }
}

/// The per-attachment environment of ADD, DEL and CHECK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: String,
    /// `None` only on DEL (the runtime may have lost the namespace already).
    pub netns: Option<String>,
    pub ifname: String,
    pub pod_name: String,
    pub pod_namespace: String,
}

/// The keys of `CNI_ARGS` we understand; others are refused unless `IgnoreUnknown` is
/// true (the convention of the reference plugins).
const KNOWN_ARGS: [&str; 5] = [
    "K8S_POD_NAME",
    "K8S_POD_NAMESPACE",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
    "IgnoreUnknown",
];

/// Parses `CNI_ARGS` (`K=V;K=V`).
pub fn parse_cni_args(s: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut out = BTreeMap::new();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("CNI_ARGS: {pair:?} is not KEY=VALUE"),
            )
        })?;
        out.insert(k.to_string(), v.to_string());
    }
    let ignore_unknown = out
        .get("IgnoreUnknown")
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true"));
    if !ignore_unknown {
        if let Some((k, v)) = out.iter().find(|(k, _)| !KNOWN_ARGS.contains(&k.as_str())) {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                format!("CNI_ARGS: unknown argument {k}={v} (set IgnoreUnknown=1 to allow it)"),
            ));
        }
    }
    Ok(out)
}

/// A container ID as the spec allows it: alphanumerics first, then alphanumerics, `_`,
/// `.` and `-`.
fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// An interface name the kernel accepts.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
}

/// Reads the environment of ADD, DEL or CHECK through `var`.
pub fn parse_attachment(
    command: Command,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Attachment, CniError> {
    let need = |name: &str| -> Result<String, CniError> {
        match var(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(CniError::new(
                code::INVALID_ENVIRONMENT,
                format!("{name} is missing or empty"),
            )),
        }
    };
    let container_id = need("CNI_CONTAINERID")?;
    if !valid_container_id(&container_id) {
        return Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("CNI_CONTAINERID {container_id:?} has characters the spec does not allow"),
        ));
    }
    let ifname = need("CNI_IFNAME")?;
    if !valid_ifname(&ifname) {
        return Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("CNI_IFNAME {ifname:?} is not a valid interface name"),
        ));
    }
    let netns = match command {
        Command::Del => var("CNI_NETNS").filter(|v| !v.is_empty()),
        _ => Some(need("CNI_NETNS")?),
    };
    let args = parse_cni_args(&var("CNI_ARGS").unwrap_or_default())?;
    Ok(Attachment {
        container_id,
        netns,
        ifname,
        pod_name: args.get("K8S_POD_NAME").cloned().unwrap_or_default(),
        pod_namespace: args.get("K8S_POD_NAMESPACE").cloned().unwrap_or_default(),
    })
}

/// Our plugin's network configuration, with what the runtime adds to it.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConf {
    pub cni_version: CniVersion,
    pub name: String,
    /// The agent's socket (`grpcServer`).
    pub grpc_server: String,
    /// Bound on one call to the agent, connection included (`timeoutMs`).
    pub timeout_ms: u64,
    /// CHECK: the addresses of the result ADD returned.
    pub prev_ips: Vec<String>,
    /// GC: `cni.dev/valid-attachments`.
    pub valid_attachments: Vec<(String, String)>,
}

pub const DEFAULT_SOCKET: &str = "/var/run/contiv/cni.sock";
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// Fields the spec defines for a plugin's configuration (and that runtimes add), which we
/// accept and mostly ignore; any other field is refused with code 2.
const SPEC_FIELDS: [&str; 13] = [
    "cniVersion",
    "cniVersions",
    "name",
    "type",
    "args",
    "ipMasq",
    "ipam",
    "dns",
    "capabilities",
    "runtimeConfig",
    "prevResult",
    "disableCheck",
    "disableGC",
];
const OUR_FIELDS: [&str; 2] = ["grpcServer", "timeoutMs"];
const GC_FIELD: &str = "cni.dev/valid-attachments";

/// The version a configuration asks for, if it can be read at all (for the version of
/// an error object).
pub fn requested_version(stdin: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    v.get("cniVersion")?.as_str().map(str::to_string)
}

/// Parses the network configuration on stdin.
pub fn parse_config(stdin: &[u8]) -> Result<NetConf, CniError> {
    let v: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODE_FAILURE,
            "the network configuration is not valid JSON",
        )
        .with_details(e.to_string())
    })?;
    let Value::Object(o) = v else {
        return Err(CniError::new(
            code::DECODE_FAILURE,
            "the network configuration is not a JSON object",
        ));
    };
    let version_str = str_field(&o, "cniVersion")?
        .ok_or_else(|| CniError::new(code::INVALID_NETWORK_CONFIG, "cniVersion is missing"))?;
    let cni_version = CniVersion::parse(&version_str).ok_or_else(|| {
        CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {version_str:?} is not supported (supported: {})",
                CniVersion::ALL.map(|v| v.as_str()).join(", ")
            ),
        )
    })?;
    let name = str_field(&o, "name")?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| CniError::new(code::INVALID_NETWORK_CONFIG, "name is missing"))?;
    if let Some((k, val)) = o.iter().find(|(k, _)| {
        !SPEC_FIELDS.contains(&k.as_str()) && !OUR_FIELDS.contains(&k.as_str()) && k != &GC_FIELD
    }) {
        return Err(CniError::new(
            code::UNSUPPORTED_FIELD,
            format!("unsupported field in the network configuration: {k}={val}"),
        ));
    }
    let grpc_server = str_field(&o, "grpcServer")?.unwrap_or_else(|| DEFAULT_SOCKET.into());
    let timeout_ms = match o.get("timeoutMs") {
        None => DEFAULT_TIMEOUT_MS,
        Some(t) => t
            .as_u64()
            .filter(|t| (1..=600_000).contains(t))
            .ok_or_else(|| {
                CniError::new(
                    code::INVALID_NETWORK_CONFIG,
                    format!(
                        "timeoutMs must be a whole number of milliseconds in 1..600000, not {t}"
                    ),
                )
            })?,
    };
    let mut prev_ips = Vec::new();
    if let Some(prev) = o.get("prevResult") {
        let ips = prev.get("ips").and_then(Value::as_array);
        for ip in ips.into_iter().flatten() {
            match ip.get("address").and_then(Value::as_str) {
                Some(a) => prev_ips.push(a.to_string()),
                None => {
                    return Err(CniError::new(
                        code::DECODE_FAILURE,
                        "prevResult.ips has an entry without an address",
                    ))
                }
            }
        }
    }
    let mut valid_attachments = Vec::new();
    if let Some(list) = o.get(GC_FIELD) {
        let bad = || {
            CniError::new(
                code::INVALID_NETWORK_CONFIG,
                format!("{GC_FIELD} must be a list of {{\"containerID\", \"ifname\"}} objects"),
            )
        };
        for a in list.as_array().ok_or_else(bad)? {
            let c = a
                .get("containerID")
                .and_then(Value::as_str)
                .ok_or_else(bad)?;
            let i = a.get("ifname").and_then(Value::as_str).ok_or_else(bad)?;
            valid_attachments.push((c.to_string(), i.to_string()));
        }
    }
    Ok(NetConf {
        cni_version,
        name,
        grpc_server,
        timeout_ms,
        prev_ips,
        valid_attachments,
    })
}

fn str_field(o: &Map<String, Value>, key: &str) -> Result<Option<String>, CniError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(CniError::new(
            code::INVALID_NETWORK_CONFIG,
            format!("{key} must be a string, not {other}"),
        )),
    }
}

/// The answer to VERSION.
pub fn version_result(requested: Option<&str>) -> Value {
    let shown = requested
        .filter(|r| CniVersion::parse(r).is_some())
        .unwrap_or(SPEC_VERSION);
    json!({
        "cniVersion": shown,
        "supportedVersions": CniVersion::ALL.map(|v| v.as_str()),
    })
}

/// The result of ADD in the format of `version`.
pub fn add_result(version: CniVersion, reply: &CniReply) -> Value {
    let interfaces: Vec<Value> = reply
        .interfaces
        .iter()
        .map(|i| {
            let mut o = json!({"name": i.name, "mac": i.mac});
            if !i.sandbox.is_empty() {
                o["sandbox"] = Value::String(i.sandbox.clone());
            }
            if version >= CniVersion::V1_1_0 && i.mtu > 0 {
                o["mtu"] = json!(i.mtu);
            }
            o
        })
        .collect();
    let ips: Vec<Value> = reply
        .ips
        .iter()
        .map(|ip| {
            let mut o = json!({"address": ip.address, "interface": ip.interface});
            if !ip.gateway.is_empty() {
                o["gateway"] = Value::String(ip.gateway.clone());
            }
            // 0.3.x and 0.4.0 name the address family; 1.0.0 dropped the field.
            if version < CniVersion::V1_0_0 {
                o["version"] = Value::String("4".into());
            }
            o
        })
        .collect();
    let routes: Vec<Value> = reply
        .routes
        .iter()
        .map(|r| {
            let mut o = json!({"dst": r.dst});
            if !r.gw.is_empty() {
                o["gw"] = Value::String(r.gw.clone());
            }
            o
        })
        .collect();
    json!({
        "cniVersion": version.as_str(),
        "interfaces": interfaces,
        "ips": ips,
        "routes": routes,
        "dns": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Interface, IpConfig, Route};

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn attachment_needs_its_variables() {
        let full = [
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;FOO=bar",
            ),
        ];
        let a = parse_attachment(Command::Add, &env(&full)).unwrap();
        assert_eq!(a.pod_name, "web-0");
        assert_eq!(a.pod_namespace, "shop");
        let no_netns = &full[..1]
            .iter()
            .chain(&full[2..])
            .copied()
            .collect::<Vec<_>>();
        let e = parse_attachment(Command::Add, &env(no_netns)).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENVIRONMENT);
        assert!(e.msg.contains("CNI_NETNS"), "{e}");
        // DEL may come without a namespace.
        assert_eq!(
            parse_attachment(Command::Del, &env(no_netns))
                .unwrap()
                .netns,
            None
        );
        let bad_id = [
            ("CNI_CONTAINERID", "-x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/n"),
        ];
        assert_eq!(
            parse_attachment(Command::Add, &env(&bad_id))
                .unwrap_err()
                .code,
            code::INVALID_ENVIRONMENT
        );
        let bad_if = [
            ("CNI_CONTAINERID", "x"),
            ("CNI_IFNAME", "a/b"),
            ("CNI_NETNS", "/n"),
        ];
        assert!(parse_attachment(Command::Add, &env(&bad_if))
            .unwrap_err()
            .msg
            .contains("CNI_IFNAME"));
    }

    #[test]
    fn unknown_cni_args_are_refused_unless_ignored() {
        let e = parse_cni_args("K8S_POD_NAME=a;COLOUR=blue").unwrap_err();
        assert_eq!(e.code, code::UNSUPPORTED_FIELD);
        assert!(e.msg.contains("COLOUR=blue"));
        assert!(parse_cni_args("IgnoreUnknown=true;COLOUR=blue").is_ok());
        assert_eq!(
            parse_cni_args("novalue").unwrap_err().code,
            code::INVALID_ENVIRONMENT
        );
    }

    #[test]
    fn config_errors_have_the_spec_codes() {
        let c = |s: &str| parse_config(s.as_bytes());
        assert_eq!(c("{nope").unwrap_err().code, code::DECODE_FAILURE);
        assert_eq!(c("[1]").unwrap_err().code, code::DECODE_FAILURE);
        assert_eq!(
            c(r#"{"cniVersion":"9.9.9","name":"n"}"#).unwrap_err().code,
            code::INCOMPATIBLE_VERSION
        );
        assert_eq!(
            c(r#"{"name":"n"}"#).unwrap_err().code,
            code::INVALID_NETWORK_CONFIG
        );
        let e = c(r#"{"cniVersion":"1.0.0","name":"n","colour":"blue"}"#).unwrap_err();
        assert_eq!(e.code, code::UNSUPPORTED_FIELD);
        assert!(e.msg.contains("colour=\"blue\""), "{e}");
        assert_eq!(
            c(r#"{"cniVersion":"1.0.0","name":"n","timeoutMs":0}"#)
                .unwrap_err()
                .code,
            code::INVALID_NETWORK_CONFIG
        );
        let ok = c(r#"{"cniVersion":"1.1.0","name":"k8s-pod-network","type":"contiv-cni",
            "grpcServer":"/tmp/s.sock","runtimeConfig":{},"prevResult":{"ips":[{"address":"10.1.1.2/32"}]},
            "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#)
        .unwrap();
        assert_eq!(ok.cni_version, CniVersion::V1_1_0);
        assert_eq!(ok.grpc_server, "/tmp/s.sock");
        assert_eq!(ok.prev_ips, ["10.1.1.2/32"]);
        assert_eq!(
            ok.valid_attachments,
            [("a".to_string(), "eth0".to_string())]
        );
    }

    #[test]
    fn results_follow_their_version() {
        let reply = CniReply {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "02:00:00:00:00:01".into(),
                sandbox: "/var/run/netns/p".into(),
                mtu: 1450,
            }],
            ips: vec![IpConfig {
                address: "10.1.1.2/32".into(),
                gateway: "10.1.1.1".into(),
                interface: 0,
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: "10.1.1.1".into(),
            }],
            ..Default::default()
        };
        let old = add_result(CniVersion::V0_3_1, &reply);
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["cniVersion"], "0.3.1");
        assert!(old["interfaces"][0].get("mtu").is_none());
        let v1 = add_result(CniVersion::V1_0_0, &reply);
        assert!(v1["ips"][0].get("version").is_none());
        assert_eq!(v1["routes"][0]["gw"], "10.1.1.1");
        let v11 = add_result(CniVersion::V1_1_0, &reply);
        assert_eq!(v11["interfaces"][0]["mtu"], 1450);
    }

    #[test]
    fn version_answers_with_every_supported_version() {
        let v = version_result(Some("0.4.0"));
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 5);
        assert_eq!(version_result(Some("7.0.0"))["cniVersion"], SPEC_VERSION);
    }

    proptest::proptest! {
        #[test]
        fn config_parsing_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parse_config(&bytes);
            let _ = requested_version(&bytes);
        }

        #[test]
        fn cni_args_parsing_never_panics(s in ".{0,64}") {
            let _ = parse_cni_args(&s);
        }
    }
}
