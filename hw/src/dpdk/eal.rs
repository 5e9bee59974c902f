//! The EAL: initialised once per process (DPDK allows no second `rte_eal_init`).

use std::ffi::{CStr, CString};
use std::sync::Mutex;

use contiv_dpdk_sys as sys;
use tracing::info;

use super::{last_error, DpdkError};

/// EAL arguments. In tests: `--no-huge --no-pci -m 512 --file-prefix <unique>`; in
/// production, hugepages and the NIC's PCI address (`-a 0000:00:08.0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EalConfig {
    pub args: Vec<String>,
}

impl EalConfig {
    /// Arguments for a process without hugepages or PCI devices (tests, benchmarks on
    /// vdevs): `memory_mb` of ordinary memory, runtime files under
    /// `/var/run/dpdk/<file_prefix>`.
    pub fn no_huge(file_prefix: &str, memory_mb: u32) -> Self {
        let mut c = Self::vdevs_only(file_prefix, memory_mb);
        c.args.insert(0, "--no-huge".into());
        c
    }

    /// As [`EalConfig::no_huge`], on hugepages (benchmarks: about twice the rate).
    pub fn hugepages(file_prefix: &str, memory_mb: u32) -> Self {
        Self::vdevs_only(file_prefix, memory_mb)
    }

    fn vdevs_only(file_prefix: &str, memory_mb: u32) -> Self {
        let mut c = Self::single_process(file_prefix);
        c.args.extend([
            "--no-pci".into(),
            "-m".into(),
            memory_mb.to_string(),
            // One process: no shared configuration or multi-process channel.
            "--no-shconf".into(),
            "--log-level".into(),
            "lib.eal:warning".into(),
        ]);
        c
    }

    /// Production defaults for one device: hugepages, and the device allowed when it is
    /// a PCI address (`--no-pci` for a vdev, which needs no bus scan).
    pub fn for_device(devargs: &str, file_prefix: &str) -> Self {
        let mut c = Self::single_process(file_prefix);
        let name = devargs.split(',').next().unwrap_or_default();
        if super::port::is_vdev(name) {
            c.args.push("--no-pci".into());
        } else {
            c.args.extend(["-a".into(), devargs.into()]);
        }
        c
    }

    fn single_process(file_prefix: &str) -> Self {
        EalConfig {
            args: vec![
                "--file-prefix".into(),
                file_prefix.into(),
                "--no-telemetry".into(),
                // One lcore: the engine runs on threads of its own, not EAL workers.
                "-l".into(),
                "0".into(),
            ],
        }
    }
}

/// The initialised EAL of this process. Ports and mempools take a reference to it, so
/// they cannot be made before it.
#[derive(Debug)]
pub struct Eal {
    config: EalConfig,
    runtime_dir: String,
}

static EAL: Mutex<Option<&'static Eal>> = Mutex::new(None);

/// Where the EAL puts its runtime files for these arguments (DPDK's own rule: root under
/// /var/run, others under $XDG_RUNTIME_DIR or /tmp; the file prefix names the folder).
fn expected_runtime_dir(args: &[String]) -> std::path::PathBuf {
    let prefix = args
        .iter()
        .position(|a| a == "--file-prefix")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--file-prefix=").map(str::to_string))
        })
        .unwrap_or_else(|| "rte".into());
    // SAFETY: geteuid has no preconditions.
    let base = if unsafe { libc::geteuid() } == 0 {
        "/var/run".to_string()
    } else {
        std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| "/tmp".into())
    };
    std::path::Path::new(&base).join("dpdk").join(prefix)
}

/// DPDK's log redirected into memory (`open_memstream`) while the EAL starts.
struct LogCapture {
    stream: *mut libc::FILE,
    buf: Box<(*mut libc::c_char, libc::size_t)>,
}

impl LogCapture {
    fn start() -> Option<LogCapture> {
        let mut buf = Box::new((std::ptr::null_mut(), 0));
        // SAFETY: the two out-pointers live in a Box that outlives the stream (closed in
        // `finish`).
        let stream = unsafe { libc::open_memstream(&mut buf.0, &mut buf.1) };
        if stream.is_null() {
            return None;
        }
        // SAFETY: a valid stream; DPDK writes its log lines to it until reset.
        unsafe { sys::rte_openlog_stream(stream as *mut sys::FILE) };
        Some(LogCapture { stream, buf })
    }

    fn finish(self) -> String {
        // SAFETY: back to DPDK's default log stream, then the memstream is closed, which
        // makes `buf` hold the text (NUL-terminated, `size` bytes); it is copied and
        // freed as open_memstream requires.
        unsafe {
            sys::rte_openlog_stream(std::ptr::null_mut());
            libc::fclose(self.stream);
            if self.buf.0.is_null() {
                return String::new();
            }
            let text = CStr::from_ptr(self.buf.0).to_string_lossy().into_owned();
            libc::free(self.buf.0 as *mut libc::c_void);
            text
        }
    }
}

impl Eal {
    /// Initialises the EAL with `config`, or returns the running one when this process
    /// already did so with the same arguments. Other arguments are refused: the EAL
    /// cannot be initialised twice.
    pub fn init(config: &EalConfig) -> Result<&'static Eal, DpdkError> {
        let mut slot = EAL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(eal) = *slot {
            if eal.config == *config {
                return Ok(eal);
            }
            return Err(DpdkError::EalAlreadyInitialised {
                running: eal.config.args.clone(),
                requested: config.args.clone(),
            });
        }
        let mut owned = Vec::with_capacity(config.args.len() + 1);
        owned.push(CString::new("contiv-dataplane").expect("no NUL"));
        for a in &config.args {
            owned.push(CString::new(a.as_str()).map_err(|_| DpdkError::NulInArgument(a.clone()))?);
        }
        // The EAL may keep pointers into argv for the life of the process, so the strings
        // and the array are leaked on purpose (once per process).
        let owned: &'static mut [CString] = Vec::leak(owned);
        let argv: &'static mut [*mut libc::c_char] = Vec::leak(
            owned
                .iter_mut()
                .map(|s| s.as_ptr() as *mut libc::c_char)
                .collect(),
        );
        // rte_eal_init pins the calling thread to the main lcore's CPU, and every thread
        // and process it later spawns would inherit that; the engine's workers choose
        // their own placement, so the caller's affinity is put back.
        // SAFETY: all zeroes is an empty cpu_set_t; sched_getaffinity fills it.
        let mut affinity: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 is this thread; the size is the set's.
        let saved = unsafe {
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut affinity)
        } == 0;
        // DPDK says why it refuses arguments only in its log: the log is captured for the
        // length of the call and put in the error (or passed on to tracing).
        let runtime_dir = expected_runtime_dir(&config.args);
        let dir_existed = runtime_dir.exists();
        let capture = LogCapture::start();
        // SAFETY: argv holds argc valid NUL-terminated strings that live for the process;
        // the Mutex makes this the only rte_eal_init call in flight.
        let rc = unsafe { sys::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
        let log = capture.map(LogCapture::finish).unwrap_or_default();
        if saved {
            // SAFETY: a set read from this thread a moment ago.
            unsafe {
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &affinity)
            };
        }
        if rc < 0 {
            // A refused start still made the runtime directory; nothing of it is left.
            if !dir_existed && runtime_dir.exists() {
                let _ = std::fs::remove_dir_all(&runtime_dir);
            }
            let said: Vec<&str> = log
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            return Err(DpdkError::EalInit {
                args: config.args.clone(),
                cause: if said.is_empty() {
                    last_error()
                } else {
                    format!("{}; DPDK said: {}", last_error(), said.join(" / "))
                },
            });
        }
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            info!(target: "dpdk", "{}", line.trim());
        }
        // SAFETY: after a successful init, rte_eal_get_runtime_dir returns a pointer to a
        // static NUL-terminated string.
        let runtime_dir = unsafe { CStr::from_ptr(sys::rte_eal_get_runtime_dir()) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: rte_version returns a pointer to a static string.
        let version = unsafe { CStr::from_ptr(sys::rte_version()) }.to_string_lossy();
        info!(%version, args = ?config.args, %runtime_dir, "EAL initialised");
        let eal: &'static Eal = Box::leak(Box::new(Eal {
            config: config.clone(),
            runtime_dir,
        }));
        *slot = Some(eal);
        Ok(eal)
    }

    /// The EAL's runtime directory (`/var/run/dpdk/<file-prefix>` as root): remove it when
    /// the process is done with DPDK.
    pub fn runtime_dir(&self) -> &str {
        &self.runtime_dir
    }

    pub fn config(&self) -> &EalConfig {
        &self.config
    }

    /// Removes the runtime directory when dropped: tests and benchmarks hold one so
    /// that nothing stays under /var/run/dpdk however they end.
    pub fn runtime_dir_guard(&'static self) -> RuntimeDirGuard {
        RuntimeDirGuard(self)
    }
}

/// See [`Eal::runtime_dir_guard`].
pub struct RuntimeDirGuard(&'static Eal);

impl Drop for RuntimeDirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.runtime_dir());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_defaults_scan_the_pci_bus_only_for_a_pci_device() {
        let vdev = EalConfig::for_device("net_af_packet0,iface=eth0", "p").args;
        assert!(vdev.contains(&"--no-pci".to_string()), "{vdev:?}");
        let pci = EalConfig::for_device("0000:00:08.0", "p").args;
        assert!(
            pci.windows(2).any(|w| w == ["-a", "0000:00:08.0"]),
            "{pci:?}"
        );
        assert!(!pci.contains(&"--no-pci".to_string()));
        assert!(!EalConfig::hugepages("p", 64)
            .args
            .contains(&"--no-huge".to_string()));
        assert_eq!(EalConfig::no_huge("p", 64).args[0], "--no-huge");
    }
}
