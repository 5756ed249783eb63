//! Endpoint reservations of adopted backends: a process that adopts
//! backends launched (and ended) elsewhere keeps no reservation for them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use running_process::broker::launcher::{BackendLauncher, CommandBackendLauncher, LaunchOptions};
use running_process::broker::reaper::Exit;
use running_process::{BackendKey, Isolation, ServiceDefinition, TraceContext};

fn launcher(root: &Path) -> CommandBackendLauncher {
    CommandBackendLauncher::new(
        "0123456789abcdef",
        LaunchOptions {
            ready_timeout: Duration::from_secs(60),
            idle_timeout_secs: None,
            socket_dir: Some(root.join("s")),
            log_dir: Some(root.join("logs")),
            ..LaunchOptions::default()
        },
    )
    .unwrap()
}

fn private_root() -> PathBuf {
    let root = tempfile::Builder::new()
        .prefix("rpp")
        .tempdir_in("/tmp")
        .unwrap()
        .keep();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
    root
}

#[test]
fn adopting_backends_that_end_elsewhere_reserves_nothing() {
    let root = private_root();
    let version_dir = root.join("1.0.0");
    std::fs::create_dir(&version_dir).unwrap();
    std::fs::set_permissions(&version_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = version_dir.join("rp-echo-backend");
    std::fs::copy(env!("CARGO_BIN_EXE_rp-echo-backend"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sd = ServiceDefinition {
        service_name: "echo".into(),
        binary_path: binary.to_string_lossy().into_owned(),
        per_version_binary_dir: version_dir.to_string_lossy().into_owned(),
        isolation: Isolation::Shared,
        ..ServiceDefinition::default()
    };
    let key = BackendKey::for_service(&sd, "1.0.0").unwrap();
    let trace = TraceContext::default();
    // The launching side and the adopting side, as two processes would be.
    let launching = launcher(&root);
    let adopting = launcher(&root);
    for _ in 0..3 {
        let launched = launching.launch(&key, &sd, &trace).unwrap();
        assert_eq!(launching.reserved_endpoints(), 1);
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
        assert_eq!(launching.reserved_endpoints(), 0);
        assert_eq!(
            adopting.reserved_endpoints(),
            0,
            "adopted endpoints stay reserved"
        );
        assert!(!Path::new(&launched.endpoint().path).exists());
    }
    std::fs::remove_dir_all(&root).unwrap();
}
