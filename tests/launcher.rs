//! The Rust launcher against the real example backend (`rp-echo-backend`):
//! success, each failure mode, and the race between hashing and exec.
//!
//! The backend's behaviour is chosen by `RP_ECHO_MODE` in the environment the
//! launcher passes on, so these tests run one at a time (the environment is
//! process-wide).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use running_process::sha256_file;
use running_process::Exit;
use running_process::{BackendKey, Isolation, ServiceDefinition, TraceContext};
use running_process::{BackendLauncher, CommandBackendLauncher, LaunchError, LaunchOptions};

static SERIAL: Mutex<()> = Mutex::new(());

/// A private root with `1.0.0/rp-echo-backend`, a socket dir and a log dir.
struct Fixture {
    root: PathBuf,
    binary: PathBuf,
    launcher: CommandBackendLauncher,
    _serial: MutexGuard<'static, ()>,
}

impl Fixture {
    fn new(mode: Option<&str>, ready_timeout: Duration) -> Fixture {
        let serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        match mode {
            Some(m) => std::env::set_var("RP_ECHO_MODE", m),
            None => std::env::remove_var("RP_ECHO_MODE"),
        }
        let root = tempfile::Builder::new()
            .prefix("rpl")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
        let version_dir = root.join("1.0.0");
        std::fs::create_dir(&version_dir).unwrap();
        std::fs::set_permissions(&version_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let binary = version_dir.join("rp-echo-backend");
        std::fs::copy(env!("CARGO_BIN_EXE_rp-echo-backend"), &binary).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let launcher = Self::launcher_in(&root, ready_timeout);
        Fixture {
            root,
            binary,
            launcher,
            _serial: serial,
        }
    }

    /// A launcher using the socket and log directories of `root`.
    fn launcher_in(root: &Path, ready_timeout: Duration) -> CommandBackendLauncher {
        CommandBackendLauncher::new(
            "0123456789abcdef",
            LaunchOptions {
                ready_timeout,
                socket_dir: Some(root.join("s")),
                log_dir: Some(root.join("logs")),
                ..LaunchOptions::default()
            },
        )
        .unwrap()
    }

    fn sd(&self) -> ServiceDefinition {
        ServiceDefinition {
            service_name: "echo".into(),
            binary_path: self.binary.clone(),
            per_version_binary_dir: self.binary.parent().unwrap().to_path_buf(),
            isolation: Isolation::Shared,
            ..ServiceDefinition::default()
        }
    }

    fn key(&self) -> BackendKey {
        BackendKey::for_service(&self.sd(), "1.0.0").unwrap()
    }

    fn launch(&self) -> Result<running_process::BackendHandle, LaunchError> {
        self.launcher
            .launch(&self.key(), &self.sd(), &TraceContext::new_root(1).unwrap())
    }

    /// Nothing left behind: no socket or log files, no child of ours.
    fn assert_clean(&self) {
        for dir in ["s", "logs"] {
            let dir = self.root.join(dir);
            if dir.exists() {
                let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
                assert!(left.is_empty(), "{} still holds {left:?}", dir.display());
            }
        }
        assert_eq!(children_of_this_process(), Vec::<u32>::new());
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        std::env::remove_var("RP_ECHO_MODE");
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Processes whose parent is this process (any state, zombies included).
fn children_of_this_process() -> Vec<u32> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state, ppid, ...
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
        if ppid == me {
            found.push(pid);
        }
    }
    found
}

#[test]
fn launches_verifies_echoes_and_shuts_down() {
    let f = Fixture::new(None, Duration::from_secs(30));
    let handle = f.launch().unwrap();
    let daemon = handle.daemon().clone();
    assert_eq!(
        daemon.exe_path,
        f.binary.canonicalize().unwrap().to_string_lossy()
    );
    assert_eq!(daemon.exe_sha256, sha256_file(&f.binary).unwrap());
    assert_eq!(daemon.ipc_endpoint.namespace_id, "shared");
    assert!(handle.is_alive());

    let mut conn = handle.connect().unwrap();
    conn.write_all(b"ping").unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echoed = Vec::new();
    conn.read_to_end(&mut echoed).unwrap();
    assert_eq!(echoed, b"ping");

    handle
        .verify(&TraceContext::default(), Duration::from_secs(10))
        .unwrap();
    // The example backend handles SIGTERM and exits 0.
    assert_eq!(handle.shutdown(Duration::from_secs(10)), Exit::Code(0));
    assert!(!Path::new(&daemon.ipc_endpoint.path).exists());
    f.assert_clean();
}

#[test]
fn early_exit_carries_status_and_log_tail() {
    let f = Fixture::new(Some("exit3"), Duration::from_secs(30));
    match f.launch().unwrap_err() {
        LaunchError::Exited { exit, log_tail, .. } => {
            assert_eq!(exit, Exit::Code(3));
            assert!(log_tail.contains("exiting with 3"), "{log_tail:?}");
        }
        other => panic!("{other}"),
    }
    f.assert_clean();
}

#[test]
fn never_binding_backend_times_out_and_is_killed() {
    let f = Fixture::new(Some("never-bind"), Duration::from_millis(500));
    assert!(matches!(
        f.launch().unwrap_err(),
        LaunchError::NotReady { .. }
    ));
    f.assert_clean();
}

#[test]
fn garbage_and_wrong_nonce_are_probe_failures() {
    for mode in ["garbage", "wrong-nonce"] {
        let f = Fixture::new(Some(mode), Duration::from_secs(30));
        match f.launch().unwrap_err() {
            LaunchError::Probe(e) => {
                if mode == "wrong-nonce" {
                    assert!(e.to_string().contains("nonce"), "{e}");
                }
            }
            other => panic!("{mode}: {other}"),
        }
        f.assert_clean();
    }
}

#[test]
fn a_backend_that_binds_late_is_waited_for() {
    let f = Fixture::new(Some("slow-bind-ms=300"), Duration::from_secs(30));
    let handle = f.launch().unwrap();
    assert_eq!(handle.shutdown(Duration::from_secs(10)), Exit::Code(0));
    f.assert_clean();
}

#[test]
fn version_policy_is_applied_before_anything_is_spawned() {
    let f = Fixture::new(None, Duration::from_secs(30));
    let mut sd = f.sd();
    sd.min_version = Some("2.0.0".parse().unwrap());
    let err = f
        .launcher
        .launch(&f.key(), &sd, &TraceContext::default())
        .unwrap_err();
    assert!(matches!(err, LaunchError::Invalid(_)), "{err}");
    assert!(!f.root.join("s").exists() && !f.root.join("logs").exists());
    f.assert_clean();
}

/// While another thread replaces the binary (by rename, and by rewriting it
/// in place) at varying moments of each launch, every launch either fails
/// with a typed error or reports exactly the hash of the file its process
/// runs.
#[test]
fn binary_swapped_during_launch_never_runs_under_a_verified_identity() {
    let f = Fixture::new(None, Duration::from_secs(30));
    let original = std::fs::read(&f.binary).unwrap();
    let mut variant = original.clone();
    // Trailing bytes keep the ELF runnable but change its hash.
    variant.extend_from_slice(b"another build of the same backend");
    let staging = f.binary.with_extension("staging");
    // Delays of the swap after the launch starts: before hashing, around
    // the exec, during readiness.
    let schedule_us = [0u64, 50, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000];
    let mut launched = 0;
    let mut refused = 0;
    for attempt in 0..36 {
        let delay = Duration::from_micros(schedule_us[attempt % schedule_us.len()]);
        let in_place = attempt % 2 == 1;
        let bytes = if attempt % 4 < 2 {
            variant.clone()
        } else {
            original.clone()
        };
        let (path, staging) = (f.binary.clone(), staging.clone());
        // Every other attempt swaps before the launch starts: that launch
        // must see the new file (and not a stale cached digest).
        let before = attempt % 3 == 0;
        let swap = move || {
            if in_place {
                // Fails with ETXTBSY once the file is running; that is fine.
                let _ = std::fs::write(&path, &bytes);
            } else {
                std::fs::write(&staging, &bytes).unwrap();
                std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o755)).unwrap();
                std::fs::rename(&staging, &path).unwrap();
            }
        };
        let result = if before {
            swap();
            f.launch()
        } else {
            let swapper = std::thread::spawn(move || {
                std::thread::sleep(delay);
                swap();
            });
            let result = f.launch();
            swapper.join().unwrap();
            result
        };
        match result {
            Ok(handle) => {
                if before {
                    let expected: [u8; 32] = sha256_file(&f.binary).unwrap();
                    assert_eq!(handle.daemon().exe_sha256, expected, "stale digest");
                }
                let running =
                    sha256_file(Path::new(&format!("/proc/{}/exe", handle.pid()))).unwrap();
                assert_eq!(handle.daemon().exe_sha256, running);
                launched += 1;
                handle.shutdown(Duration::from_secs(10));
            }
            Err(e) => {
                assert!(!before, "a launch after the swap failed: {e}");
                assert!(
                    matches!(
                        e,
                        LaunchError::Mismatch { .. }
                            | LaunchError::Probe(_)
                            | LaunchError::Binary(_)
                            | LaunchError::Spawn { .. }
                            | LaunchError::Exited { .. }
                    ),
                    "unexpected {e}"
                );
                refused += 1;
            }
        }
    }
    eprintln!("{launched} launches verified, {refused} refused");
    assert!(launched > 0, "no launch succeeded");
    f.assert_clean();
}

/// A process that adopts backends launched (and ended) elsewhere keeps no
/// endpoint reservation for them.
#[test]
fn adopting_backends_that_end_elsewhere_reserves_nothing() {
    let fx = Fixture::new(None, Duration::from_secs(60));
    let (sd, key, trace) = (fx.sd(), fx.key(), TraceContext::default());
    // The adopting side, as another process would be.
    let adopting = Fixture::launcher_in(&fx.root, Duration::from_secs(60));
    for _ in 0..3 {
        let launched = fx.launch().unwrap();
        assert_eq!(fx.launcher.reserved_endpoints(), 1);
        let adopted = adopting
            .adopt(
                &key,
                &sd,
                launched.daemon(),
                &trace,
                Duration::from_secs(30),
            )
            .unwrap();
        assert_eq!(adopted.pid(), launched.pid());
        // The backend ends at the hands of its launcher; the adopting side
        // drops its handle without ever seeing the exit.
        assert_eq!(launched.kill(), Exit::Signal(libc::SIGKILL));
        drop(adopted);
        assert_eq!(fx.launcher.reserved_endpoints(), 0);
        assert_eq!(
            adopting.reserved_endpoints(),
            0,
            "adopted endpoints stay reserved"
        );
        assert!(!Path::new(&launched.endpoint().path).exists());
    }
    // A killed backend keeps its log; nothing else may be left.
    assert_eq!(children_of_this_process(), Vec::<u32>::new());
    assert!(std::fs::read_dir(fx.root.join("s"))
        .unwrap()
        .next()
        .is_none());
}
