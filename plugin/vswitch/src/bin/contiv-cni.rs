//! contiv-cni: the CNI plugin binary the container runtime executes. All of its logic is
//! in the `contiv-cni` library; this is its process entry point.
//!
//! A runtime executes it without arguments. `contiv-cni install` is the DaemonSet's init
//! step: it copies this binary into the runtime's plugin directory and writes the
//! configuration list.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "contiv-cni install",
    about = "Installs contiv-cni and its configuration list"
)]
struct InstallArgs {
    /// The runtime's plugin directory.
    #[arg(long, default_value = "/opt/cni/bin")]
    bin_dir: PathBuf,
    /// The runtime's configuration directory.
    #[arg(long, default_value = "/etc/cni/net.d")]
    conf_dir: PathBuf,
    /// The agent's CNI socket.
    #[arg(long, default_value = contiv_cni::spec::DEFAULT_SOCKET)]
    socket: String,
}

fn main() {
    let mut args = std::env::args();
    if args.nth(1).as_deref() == Some("install") {
        let a = InstallArgs::parse_from(std::env::args().skip(1));
        let me = match std::env::current_exe() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("contiv-cni install: cannot find this executable: {e}");
                std::process::exit(1);
            }
        };
        match contiv_cni::install::install(&me, &a.bin_dir, &a.conf_dir, &a.socket) {
            Ok((bin, conf)) => {
                println!("installed {} and {}", bin.display(), conf.display());
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("contiv-cni install: {e}");
                std::process::exit(1);
            }
        }
    }
    std::process::exit(contiv_cni::plugin::main_with_process_env());
}
