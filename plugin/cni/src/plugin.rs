//! What the contiv-cni binary does, as a function of its environment and stdin, so that
//! it can be tested without executing it.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use tonic::transport::Channel;

use crate::client::{connect, ClientError};
use crate::proto::remote_cni_client::RemoteCniClient;
use crate::proto::{self, CniReply, CniRequest, GcRequest, StatusRequest};
use crate::spec::{
    add_result, code, parse_attachment, parse_config, requested_version, version_result, CniError,
    Command, SPEC_VERSION,
};

/// What the binary prints on stdout and the exit status it ends with.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub stdout: String,
    pub exit_code: i32,
}

impl Outcome {
    fn ok(v: Option<Value>) -> Outcome {
        Outcome {
            stdout: v.map(|v| v.to_string()).unwrap_or_default(),
            exit_code: 0,
        }
    }

    fn error(e: &CniError, version: &str) -> Outcome {
        Outcome {
            stdout: e.to_json(version).to_string(),
            exit_code: 1,
        }
    }
}

/// What one invocation needs of the world it runs in: its environment, whether a
/// namespace exists, and a channel to the agent. The binary's is the process's; the
/// simulated cluster's kubelet has simulated namespaces and a simulated network.
pub trait Invocation {
    fn var(&self, name: &str) -> Option<String>;
    fn netns_exists(&self, netns: &str) -> bool;
    fn connect(
        &self,
        server: &str,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<RemoteCniClient<Channel>, ClientError>>;
}

/// The process's world: `var` reads the environment, the agent is on a unix socket.
struct HostInvocation<'a> {
    var: &'a dyn Fn(&str) -> Option<String>,
}

impl Invocation for HostInvocation<'_> {
    fn var(&self, name: &str) -> Option<String> {
        (self.var)(name)
    }

    fn netns_exists(&self, netns: &str) -> bool {
        Path::new(netns).exists()
    }

    async fn connect(
        &self,
        server: &str,
        timeout: Duration,
    ) -> Result<RemoteCniClient<Channel>, ClientError> {
        connect(server, timeout).await
    }
}

/// Runs one invocation: `var` reads the environment, `stdin` is the configuration.
pub async fn run(var: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    run_in(&HostInvocation { var }, stdin).await
}

/// Runs one invocation in the world `inv` gives.
pub async fn run_in(inv: &impl Invocation, stdin: &[u8]) -> Outcome {
    let version = requested_version(stdin).unwrap_or_else(|| SPEC_VERSION.to_string());
    match run_command(inv, stdin).await {
        Ok(v) => Outcome::ok(v),
        Err(e) => Outcome::error(&e, &version),
    }
}

async fn run_command(inv: &impl Invocation, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let var = &|k: &str| inv.var(k);
    let command_str = var("CNI_COMMAND").unwrap_or_default();
    let command = Command::parse(&command_str).ok_or_else(|| {
        CniError::new(
            code::INVALID_ENVIRONMENT,
            format!(
                "CNI_COMMAND {command_str:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC"
            ),
        )
    })?;
    if command == Command::Version {
        return Ok(Some(version_result(requested_version(stdin).as_deref())));
    }
    let conf = parse_config(stdin)?;
    if conf.cni_version < command.since() {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "{command_str} needs cniVersion {} or later; the configuration has {}",
                command.since(),
                conf.cni_version
            ),
        ));
    }
    let timeout = Duration::from_millis(conf.timeout_ms);
    let unreachable_code = if command == Command::Status {
        code::NOT_AVAILABLE
    } else {
        code::TRY_AGAIN_LATER
    };
    let request = match command {
        Command::Add | Command::Del | Command::Check => {
            let a = parse_attachment(command, var)?;
            if let Some(ns) = &a.netns {
                if command != Command::Del && !inv.netns_exists(ns) {
                    return Err(CniError::new(
                        code::INVALID_ENVIRONMENT,
                        format!("CNI_NETNS {ns} does not exist"),
                    ));
                }
            }
            Some(CniRequest {
                container_id: a.container_id,
                netns: a.netns.unwrap_or_default(),
                ifname: a.ifname,
                pod_name: a.pod_name,
                pod_namespace: a.pod_namespace,
                network: conf.name.clone(),
                expected_ips: conf.prev_ips.clone(),
            })
        }
        _ => None,
    };
    let mut client = inv.connect(&conf.grpc_server, timeout).await.map_err(|e| {
        CniError::new(
            unreachable_code,
            "the contiv-vswitch agent is not reachable",
        )
        .with_details(e.to_string())
    })?;
    let call = async {
        match (command, request) {
            (Command::Add, Some(r)) => client.add(r).await,
            (Command::Del, Some(r)) => client.del(r).await,
            (Command::Check, Some(r)) => client.check(r).await,
            (Command::Status, _) => client.status(StatusRequest {}).await,
            _ => {
                let valid = conf
                    .valid_attachments
                    .iter()
                    .map(|(c, i)| proto::Attachment {
                        container_id: c.clone(),
                        ifname: i.clone(),
                    })
                    .collect();
                client.gc(GcRequest { valid }).await
            }
        }
    };
    let reply: CniReply = match tokio::time::timeout(timeout, call).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => {
            return Err(CniError::new(unreachable_code, "the agent did not answer")
                .with_details(status.message().to_string()))
        }
        Err(_) => {
            return Err(CniError::new(
                unreachable_code,
                format!("the agent did not answer within {timeout:?}"),
            ))
        }
    };
    if reply.error_code != 0 {
        return Err(CniError {
            code: reply.error_code,
            msg: reply.error_msg,
            details: reply.error_details,
        });
    }
    Ok(match command {
        Command::Add => Some(add_result(conf.cni_version, &reply)),
        _ => None,
    })
}

/// The binary's main: reads the process environment and stdin, prints, returns the exit
/// status.
pub fn main_with_process_env() -> i32 {
    use std::io::{Read, Write};
    let mut stdin = Vec::new();
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    // VERSION may come without stdin; for the rest an unreadable stdin is a decode error.
    if std::io::stdin().read_to_end(&mut stdin).is_err() && command != "VERSION" {
        stdin.clear();
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let err = CniError::new(code::IO_FAILURE, "cannot start the runtime")
                .with_details(e.to_string());
            println!("{}", err.to_json(SPEC_VERSION));
            return 1;
        }
    };
    let out = rt.block_on(run(&|k| std::env::var(k).ok(), &stdin));
    let mut so = std::io::stdout().lock();
    let _ = so.write_all(out.stdout.as_bytes());
    let _ = so.flush();
    out.exit_code
}
