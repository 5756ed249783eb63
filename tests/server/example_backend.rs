use super::*;

// ---- the example backend as a real child process -------------------------

/// Kills and reaps the child if a test fails before it exits.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn pid(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        rustix::process::kill_process(pid, sig).unwrap();
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.0.as_mut().unwrap().try_wait().unwrap()
    }

    /// Waits for the exit and returns the status and stderr.
    fn wait(mut self) -> (ExitStatus, String) {
        let child = self.0.take().unwrap();
        within(HANG, move || {
            let output = child.wait_with_output().unwrap();
            (
                output.status,
                String::from_utf8_lossy(&output.stderr).into_owned(),
            )
        })
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn_echo(vars: &[(&'static str, String)], mode: Option<&str>) -> ChildGuard {
    spawn_backend(Path::new(ECHO_BIN), vars, mode)
}

fn spawn_backend(bin: &Path, vars: &[(&'static str, String)], mode: Option<&str>) -> ChildGuard {
    let mut cmd = Command::new(bin);
    for name in [
        ENV_SERVICE_NAME,
        ENV_SERVICE_VERSION,
        ENV_BACKEND_PIPE,
        ENV_BACKEND_NAMESPACE,
        ENV_INSTANCE,
        ENV_TRACEPARENT,
        ENV_TRACESTATE,
        ENV_IDLE_TIMEOUT_SECS,
        "RP_ECHO_MODE",
        "RP_ECHO_LOG",
    ] {
        cmd.env_remove(name);
    }
    for (name, value) in vars {
        cmd.env(name, value);
    }
    if let Some(mode) = mode {
        cmd.env("RP_ECHO_MODE", mode);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // A file this process just wrote can be briefly "busy" for exec while a
    // concurrently forked child of another test still holds the write
    // descriptor (until that child's own exec closes it).
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Ok(child) => return ChildGuard(Some(child)),
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 100 => {
                attempts += 1;
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("spawn {}: {e}", bin.display()),
        }
    }
}

fn echo_env(path: &Path) -> Vec<(&'static str, String)> {
    vec![
        (ENV_SERVICE_NAME, "echo".to_owned()),
        (ENV_SERVICE_VERSION, "1.0.0".to_owned()),
        (ENV_BACKEND_PIPE, path.to_str().unwrap().to_owned()),
        (ENV_BACKEND_NAMESPACE, "shared".to_owned()),
        (ENV_INSTANCE, "shared".to_owned()),
    ]
}

/// Waits until something accepts connections at `path` (the child binds
/// when it is ready), failing if the child exits first.
fn wait_until_listening(child: &mut ChildGuard, path: &Path) {
    let deadline = Instant::now() + HANG;
    let mut pause = Duration::from_millis(1);
    loop {
        if UnixStream::connect(path).is_ok() {
            return;
        }
        if let Some(status) = child.exited() {
            panic!("backend exited before listening: {status}");
        }
        assert!(Instant::now() < deadline, "backend never listened");
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn expected_echo_identity(pid: u32, path: &Path) -> DaemonProcess {
    let exe = fs::canonicalize(ECHO_BIN).unwrap();
    DaemonProcess {
        pid,
        exe_path: exe.to_str().unwrap().to_owned(),
        exe_sha256: sha256_file(&exe).unwrap(),
        exe_blake3: Some(*blake3::hash(&fs::read(&exe).unwrap()).as_bytes()),
        boot_id: boot_id().unwrap(),
        ipc_endpoint: Endpoint::new("shared", path.to_str().unwrap()).unwrap(),
        started_at_unix_ms: 0,
        idle_timeout_secs: None,
    }
}

#[test]
fn echo_backend_probes_echoes_and_exits_on_sigterm() {
    let tmp = short_tempdir();
    let path = socket_path(tmp.path());
    let mut child = spawn_echo(&echo_env(&path), None);
    wait_until_listening(&mut child, &path);

    let identity = probe_path(&path).unwrap();
    probe::compare_identity(&expected_echo_identity(child.pid(), &path), &identity).unwrap();

    let message = b"echo me, then echo me again".repeat(1000);
    let mut client = UnixStream::connect(&path).unwrap();
    client.set_read_timeout(Some(HANG)).unwrap();
    let writer = {
        let mut client = client.try_clone().unwrap();
        let message = message.clone();
        thread::spawn(move || {
            client.write_all(&message).unwrap();
            client.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    assert_eq!(read_all(&mut client), message);
    writer.join().unwrap();

    // An open connection does not hold up a SIGTERM shutdown.
    let _idle_client = UnixStream::connect(&path).unwrap();
    child.signal(rustix::process::Signal::TERM);
    let (status, stderr) = child.wait();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(!path.exists());
}

#[test]
fn replaced_binary_reports_the_running_image() {
    let tmp = short_tempdir();
    let path = socket_path(tmp.path());
    let bin = tmp.path().join("rp-echo-backend");
    let original = fs::read(ECHO_BIN).unwrap();
    fs::write(&bin, &original).unwrap();
    fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let canonical = fs::canonicalize(&bin).unwrap();

    // The backend hashes itself after its slow start; the binary is replaced
    // (renamed over, as an upgrade does) before that, or, on a stalled
    // machine, after. Either way the identity is the running image's.
    let mut child = spawn_backend(&bin, &echo_env(&path), Some("slow-bind-ms=500"));
    let staging = tmp.path().join("staging");
    let mut newer = original.clone();
    newer.extend_from_slice(b"a newer build");
    fs::write(&staging, &newer).unwrap();
    fs::rename(&staging, &bin).unwrap();

    wait_until_listening(&mut child, &path);
    let identity = probe_path(&path).unwrap();
    assert_eq!(identity.exe_path, canonical.to_str().unwrap());
    assert_eq!(
        identity.exe_sha256,
        sha256_file(Path::new(&format!("/proc/{}/exe", child.pid()))).unwrap()
    );
    assert_ne!(identity.exe_sha256, sha256_file(&bin).unwrap());
    let running = fs::read(format!("/proc/{}/exe", child.pid())).unwrap();
    assert_eq!(
        identity.exe_blake3,
        Some(*blake3::hash(&running).as_bytes())
    );
    child.signal(rustix::process::Signal::TERM);
    let (status, stderr) = child.wait();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
}

#[test]
fn echo_backend_exits_on_sigint_and_when_idle() {
    let tmp = short_tempdir();
    let path = socket_path(tmp.path());
    let mut child = spawn_echo(&echo_env(&path), None);
    wait_until_listening(&mut child, &path);
    child.signal(rustix::process::Signal::INT);
    let (status, stderr) = child.wait();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(!path.exists());

    let mut vars = echo_env(&path);
    vars.push((ENV_IDLE_TIMEOUT_SECS, "1".to_owned()));
    let mut child = spawn_echo(&vars, Some("slow-bind-ms=50"));
    wait_until_listening(&mut child, &path);
    let identity = probe_path(&path).unwrap();
    assert_eq!(identity.idle_timeout_secs, Some(1));
    let (status, stderr) = child.wait();
    assert_eq!(status.code(), Some(0), "stderr: {stderr}");
    assert!(!path.exists());
}

#[test]
fn echo_backend_startup_errors_exit_2_with_one_line() {
    let tmp = short_tempdir();
    let path = socket_path(tmp.path());
    let vars: Vec<_> = echo_env(&path)
        .into_iter()
        .filter(|(n, _)| *n != ENV_SERVICE_NAME)
        .collect();
    let (status, stderr) = spawn_echo(&vars, None).wait();
    assert_eq!(status.code(), Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(ENV_SERVICE_NAME), "{stderr}");

    let (status, stderr) = spawn_echo(&echo_env(&path), Some("no-such-mode")).wait();
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("RP_ECHO_MODE"), "{stderr}");

    let (status, stderr) = spawn_echo(&echo_env(&path), Some("exit3")).wait();
    assert_eq!(status.code(), Some(3));
    assert!(stderr.contains("exiting with 3"), "{stderr}");
}

#[test]
fn echo_backend_failure_modes_fail_the_probe() {
    let tmp = short_tempdir();
    let path = private_socket_dir(tmp.path());

    let mut child = spawn_echo(&echo_env(&path), Some("garbage"));
    wait_until_listening(&mut child, &path);
    let err = probe_path(&path).unwrap_err();
    assert!(matches!(err, ProbeError::Decode(_)), "{err}");
    drop(child);
    fs::remove_file(&path).unwrap();

    let mut child = spawn_echo(&echo_env(&path), Some("wrong-nonce"));
    wait_until_listening(&mut child, &path);
    match probe_path(&path).unwrap_err() {
        ProbeError::Protocol { field, .. } => assert_eq!(field, "nonce"),
        err => panic!("{err}"),
    }
}
