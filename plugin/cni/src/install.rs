//! The install step the DaemonSet's init container runs: puts the contiv-cni binary in
//! the runtime's plugin directory and our network configuration list in its
//! configuration directory, with contiv-cni first in the chain. Both are written to a
//! temporary name and renamed, so a runtime never reads half a file.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::spec::SPEC_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The name of the configuration list (runtimes take the first in lexical order).
pub const CONFLIST_NAME: &str = "10-contiv.conflist";

/// The network configuration list: contiv-cni, then the reference plugins for host
/// ports and bandwidth limits, which chain on our result.
pub fn conflist(socket: &str) -> Value {
    json!({
        "cniVersion": SPEC_VERSION,
        "name": "k8s-pod-network",
        "plugins": [
            {"type": "contiv-cni", "grpcServer": socket},
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
            {"type": "bandwidth", "capabilities": {"bandwidth": true}},
        ]
    })
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("contiv"),
        std::process::id()
    ));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Installs `binary` as `<bin_dir>/contiv-cni` and the configuration list into
/// `conf_dir`; returns the two paths.
pub fn install(
    binary: &Path,
    bin_dir: &Path,
    conf_dir: &Path,
    socket: &str,
) -> Result<(PathBuf, PathBuf), InstallError> {
    let exe = std::fs::read(binary).map_err(io(binary))?;
    let bin = bin_dir.join("contiv-cni");
    write_atomically(&bin, &exe, 0o755)?;
    let conf = conf_dir.join(CONFLIST_NAME);
    let text = serde_json::to_vec_pretty(&conflist(socket)).unwrap_or_default();
    write_atomically(&conf, &text, 0o644)?;
    Ok((bin, conf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_the_binary_and_a_conflist_with_us_first() {
        let root = std::env::temp_dir().join(format!("contiv-install-{}", std::process::id()));
        let src = root.join("src-binary");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(&src, b"#!/bin/true\n").unwrap();
        let (bin, conf) = install(&src, &root.join("bin"), &root.join("net.d"), "/s.sock").unwrap();
        assert_eq!(std::fs::read(&bin).unwrap(), b"#!/bin/true\n");
        let mode = std::fs::metadata(&bin).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        let list: Value = serde_json::from_slice(&std::fs::read(&conf).unwrap()).unwrap();
        assert_eq!(list["plugins"][0]["type"], "contiv-cni");
        assert_eq!(list["plugins"][0]["grpcServer"], "/s.sock");
        assert_eq!(list["plugins"].as_array().unwrap().len(), 3);
        // Installing again replaces both in place.
        install(&src, &root.join("bin"), &root.join("net.d"), "/other.sock").unwrap();
        let list: Value = serde_json::from_slice(&std::fs::read(&conf).unwrap()).unwrap();
        assert_eq!(list["plugins"][0]["grpcServer"], "/other.sock");
        let leftovers = std::fs::read_dir(root.join("net.d")).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary files left");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
