//! Integration tests of the backend SDK (`src/sdk`, `BackendServer`) and of the
//! example backend `rp-echo-backend`, over real sockets, threads and child
//! processes.
//!
//! Nothing here sleeps to let something happen: tests wait on the event
//! itself (accept, shutdown, a probe answer, a child's exit) and timeouts
//! only turn a hang into a failure. Socket paths live in short directories
//! under /tmp because `sun_path` holds 107 bytes.

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::num::NonZeroU32;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use running_process::env::{
    ENV_BACKEND_NAMESPACE, ENV_BACKEND_PIPE, ENV_IDLE_TIMEOUT_SECS, ENV_INSTANCE, ENV_SERVICE_NAME,
    ENV_SERVICE_VERSION, ENV_TRACEPARENT, ENV_TRACESTATE,
};
use running_process::wire::{self as probe, ProbeError, ProbeRequest, MAX_PROBE_RESPONSE};
use running_process::wire::{self as frame, MAX_FRAME_BODY};
use running_process::FsError;
use running_process::{
    boot_id, sha256_file, BackendKey, BrokerInstanceKey, DaemonProcess, Endpoint, TraceContext,
};
use running_process::{
    BackendServer, ServerConfig, ServerError, ShutdownReason, DEFAULT_CLASSIFY_WINDOW,
};

/// Long enough that only a hang reaches it.
const HANG: Duration = Duration::from_secs(30);
const ECHO_BIN: &str = env!("CARGO_BIN_EXE_rp-echo-backend");

/// A short temporary directory holding the private (0700) socket directory
/// `s`, as a launcher creates it before it starts a backend.
fn short_tempdir() -> tempfile::TempDir {
    let tmp = tempfile::Builder::new()
        .prefix("rps")
        .tempdir_in("/tmp")
        .unwrap();
    fs::DirBuilder::new()
        .mode(0o700)
        .create(tmp.path().join("s"))
        .unwrap();
    tmp
}

/// A small file to report as the executable, so that most tests do not hash
/// the (large, debug) test binary.
fn identity_file(dir: &Path) -> PathBuf {
    let path = dir.join("backend.sh");
    fs::write(&path, "#!/bin/sh\nexec echo-backend \"$@\"\n").unwrap();
    path
}

fn socket_path(dir: &Path) -> PathBuf {
    dir.join("s").join("b.sock")
}

fn config(dir: &Path) -> ServerConfig {
    let path = socket_path(dir);
    ServerConfig::new(
        Endpoint::new("shared", path.to_str().unwrap()).unwrap(),
        BackendKey::new(BrokerInstanceKey::shared(), "echo", "1.0.0").unwrap(),
    )
    .unwrap()
    .with_identity_exe(identity_file(dir))
}

fn probe_path(path: &Path) -> Result<DaemonProcess, ProbeError> {
    let mut stream = UnixStream::connect(path).map_err(|source| ProbeError::Io {
        operation: "connect",
        source,
    })?;
    probe::probe_stream(&mut stream, &TraceContext::default(), HANG)
}

/// Runs `f` on a thread and fails the test if it does not finish in time.
fn within<T: Send + 'static>(timeout: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(timeout).expect("operation hung")
}

fn read_all(stream: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    stream.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn probe_answers_with_the_server_identity() {
    let tmp = short_tempdir();
    let path = socket_path(tmp.path());
    let config = ServerConfig::new(
        Endpoint::new("private:echo", path.to_str().unwrap()).unwrap(),
        BackendKey::new(BrokerInstanceKey::private("echo").unwrap(), "echo", "1.0.0").unwrap(),
    )
    .unwrap()
    .with_idle_timeout_secs(NonZeroU32::new(600));
    let server = BackendServer::bind(config).unwrap();

    let exe = fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
    let expected = DaemonProcess {
        pid: std::process::id(),
        exe_path: exe.to_str().unwrap().to_owned(),
        exe_sha256: sha256_file(&exe).unwrap(),
        exe_blake3: Some(*blake3::hash(&fs::read(&exe).unwrap()).as_bytes()),
        boot_id: boot_id().unwrap(),
        ipc_endpoint: Endpoint::new("private:echo", path.to_str().unwrap()).unwrap(),
        started_at_unix_ms: server.identity().started_at_unix_ms,
        idle_timeout_secs: Some(600),
    };
    assert_eq!(server.identity(), &expected);

    // Answered although nobody calls accept(), and more than once.
    for _ in 0..3 {
        let actual = probe_path(&path).unwrap();
        probe::compare_identity(&expected, &actual).unwrap();
        assert_eq!(actual, expected);
    }

    // The response copies the request's trace fields.
    let trace = TraceContext::new(
        0,
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "vendor=opaque",
    )
    .unwrap();
    let request = ProbeRequest::new(&trace).unwrap();
    let mut stream = UnixStream::connect(&path).unwrap();
    stream.write_all(&request.bytes).unwrap();
    let response = probe::read_frame(&mut stream, MAX_PROBE_RESPONSE, HANG).unwrap();
    assert_eq!(response.traceparent, trace.traceparent());
    assert_eq!(response.tracestate, trace.tracestate());
    assert_eq!(request.check_response(&response).unwrap(), expected);
    // The server closes a probe connection after answering.
    assert_eq!(read_all(&mut stream), b"");

    assert_eq!(server.open_connections(), 0);
    assert_eq!(server.service_name(), "echo");
    assert_eq!(server.service_version(), "1.0.0");
    assert_eq!(server.endpoint().path(), path.to_str().unwrap());
    assert!(server.accept_timeout(Duration::ZERO).unwrap().is_none());
}

#[test]
fn identity_exe_override_reports_the_canonical_file() {
    let tmp = short_tempdir();
    let script = identity_file(tmp.path());
    let link = tmp.path().join("link.sh");
    std::os::unix::fs::symlink(&script, &link).unwrap();
    let server = BackendServer::bind(config(tmp.path()).with_identity_exe(&link)).unwrap();
    let identity = probe_path(&socket_path(tmp.path())).unwrap();
    let canonical = fs::canonicalize(&script).unwrap();
    assert_eq!(identity.exe_path, canonical.to_str().unwrap());
    assert_eq!(identity.exe_sha256, sha256_file(&canonical).unwrap());
    assert_eq!(
        identity.exe_blake3,
        Some(*blake3::hash(&fs::read(&canonical).unwrap()).as_bytes())
    );
    assert_eq!(identity.idle_timeout_secs, None);
    assert_eq!(&identity, server.identity());
}

#[test]
fn application_bytes_reach_accept_untouched() {
    let tmp = short_tempdir();
    let path = socket_path(tmp.path());
    let server = BackendServer::bind(config(tmp.path())).unwrap();

    // A frame that looks like a probe (protocol 0xB232, 32-byte payload)
    // but whose request id does not match its nonce, with bytes after it.
    let probe_like = {
        let real = ProbeRequest::with_nonce([7; 32], &TraceContext::default());
        let mut frame = frame::decode_frame(&real.bytes, MAX_FRAME_BODY).unwrap();
        frame.request_id ^= 1;
        let mut bytes = frame::encode_frame(&frame, MAX_FRAME_BODY).unwrap();
        bytes.extend_from_slice(b"and then some");
        bytes
    };
    // The first bytes of a real probe, then the client stops sending.
    let truncated_probe =
        ProbeRequest::with_nonce([9; 32], &TraceContext::default()).bytes[..10].to_vec();
    let messages: [Vec<u8>; 3] = [
        b"hello, application\n".to_vec(),
        probe_like,
        truncated_probe,
    ];

    for message in messages {
        let mut client = UnixStream::connect(&path).unwrap();
        client.write_all(&message).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut conn = server.accept_timeout(HANG).unwrap().expect("no connection");
        assert_eq!(server.open_connections(), 1);
        assert_eq!(read_all(&mut conn), message);
        conn.write_all(b"reply").unwrap();
        drop(conn);
        assert_eq!(read_all(&mut client), b"reply");
        assert_eq!(server.open_connections(), 0);
    }
}

#[test]
fn silent_connection_is_handed_over_after_the_window() {
    let tmp = short_tempdir();
    let path = socket_path(tmp.path());
    let server = BackendServer::bind(config(tmp.path())).unwrap();

    let connected = Instant::now();
    let mut client = UnixStream::connect(&path).unwrap();
    let mut conn = server.accept_timeout(HANG).unwrap().expect("no connection");
    assert!(connected.elapsed() >= DEFAULT_CLASSIFY_WINDOW);

    // A server-speaks-first exchange works, and nothing was consumed.
    conn.write_all(b"banner").unwrap();
    let mut banner = [0u8; 6];
    client.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"banner");
    client.write_all(b"late bytes").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut conn), b"late bytes");
}

#[test]
fn slow_connections_do_not_delay_a_probe() {
    let tmp = short_tempdir();
    let path = socket_path(tmp.path());
    // A window far longer than the test: the slow clients stay unclassified
    // for as long as the probe takes.
    let server =
        BackendServer::bind(config(tmp.path()).with_classify_window(Duration::from_secs(120)))
            .unwrap();

    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut client = UnixStream::connect(&path).unwrap();
        // The framing version byte: could be the start of a probe.
        client.write_all(&[1]).unwrap();
        slow.push(client);
    }
    for _ in 0..3 {
        probe_path(&path).unwrap();
    }
    assert!(server.accept_timeout(Duration::ZERO).unwrap().is_none());

    // A slow client that hangs up is the application's at once, with its
    // one byte unread.
    let client = slow.pop().unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut conn = server.accept_timeout(HANG).unwrap().expect("no connection");
    assert_eq!(read_all(&mut conn), [1]);
}

#[test]
fn socket_is_0600_in_a_0700_directory() {
    let tmp = short_tempdir();
    let path = socket_path(tmp.path());
    let _server = BackendServer::bind(config(tmp.path())).unwrap();
    let meta = fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(
        fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o7777,
        0o700
    );
}

#[test]
fn loose_socket_directory_is_refused() {
    let tmp = short_tempdir();
    let dir = socket_path(tmp.path()).parent().unwrap().to_path_buf();
    fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let err = BackendServer::bind(config(tmp.path())).unwrap_err();
    match &err {
        ServerError::Fs(FsError::InsecureDirectory { path, reason }) => {
            assert_eq!(path, &dir);
            assert!(reason.contains("0755"), "{reason}");
        }
        _ => panic!("{err}"),
    }
    assert!(!socket_path(tmp.path()).exists());
}

#[test]
fn symlinked_socket_directory_is_refused() {
    let tmp = short_tempdir();
    let link = tmp.path().join("l");
    std::os::unix::fs::symlink(tmp.path().join("s"), &link).unwrap();
    let config = ServerConfig::new(
        Endpoint::new("shared", link.join("b.sock").to_str().unwrap()).unwrap(),
        BackendKey::new(BrokerInstanceKey::shared(), "echo", "1.0.0").unwrap(),
    )
    .unwrap()
    .with_identity_exe(identity_file(tmp.path()));
    match BackendServer::bind(config).unwrap_err() {
        ServerError::Fs(FsError::InsecureDirectory { path, reason }) => {
            assert_eq!(path, link);
            assert!(reason.contains("symbolic link"), "{reason}");
        }
        err => panic!("{err}"),
    }
    assert_eq!(fs::read_dir(tmp.path().join("s")).unwrap().count(), 0);
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn missing_socket_directory_is_refused_and_not_created() {
    let tmp = short_tempdir();
    identity_file(tmp.path());
    let before = names_in(tmp.path());
    for missing in [
        tmp.path().join("gone"),
        tmp.path().join("gone").join("deeper"),
    ] {
        let sock = missing.join("b.sock");
        let config = ServerConfig::new(
            Endpoint::new("shared", sock.to_str().unwrap()).unwrap(),
            BackendKey::new(BrokerInstanceKey::shared(), "echo", "1.0.0").unwrap(),
        )
        .unwrap()
        .with_identity_exe(identity_file(tmp.path()));
        match BackendServer::bind(config).unwrap_err() {
            ServerError::Io {
                operation,
                path,
                source,
            } => {
                assert_eq!(operation, "inspect socket directory");
                assert_eq!(path, missing);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            err => panic!("{err}"),
        }
        assert_eq!(names_in(tmp.path()), before);
    }
}

#[test]
fn missing_socket_directory_from_the_environment_names_the_variable() {
    let tmp = short_tempdir();
    identity_file(tmp.path());
    let before = names_in(tmp.path());
    let missing = tmp.path().join("gone").join("deeper");
    let sock = missing.join("b.sock");
    let sock = sock.to_str().unwrap();
    let config = from_vars(&with(ENV_BACKEND_PIPE, sock))
        .unwrap()
        .with_identity_exe(identity_file(tmp.path()));
    match BackendServer::bind(config).unwrap_err() {
        ServerError::InvalidEnv {
            name,
            value,
            reason,
        } => {
            assert_eq!(name, ENV_BACKEND_PIPE);
            assert_eq!(value, sock);
            assert!(
                reason.contains(&format!("{} does not exist", missing.display())),
                "{reason}"
            );
        }
        err => panic!("{err}"),
    }
    assert_eq!(names_in(tmp.path()), before);

    // A file on the way to the directory: still named, still nothing made.
    let file = tmp.path().join("f");
    fs::write(&file, b"").unwrap();
    let sock = file.join("d").join("b.sock");
    let config = from_vars(&with(ENV_BACKEND_PIPE, sock.to_str().unwrap()))
        .unwrap()
        .with_identity_exe(identity_file(tmp.path()));
    match BackendServer::bind(config).unwrap_err() {
        ServerError::InvalidEnv { name, reason, .. } => {
            assert_eq!(name, ENV_BACKEND_PIPE);
            assert!(reason.contains("cannot be inspected"), "{reason}");
        }
        err => panic!("{err}"),
    }
    // The file itself as the directory: it exists, so it is judged, and
    // refused as no directory.
    let config = from_vars(&with(
        ENV_BACKEND_PIPE,
        file.join("b.sock").to_str().unwrap(),
    ))
    .unwrap()
    .with_identity_exe(identity_file(tmp.path()));
    match BackendServer::bind(config).unwrap_err() {
        ServerError::Fs(FsError::InsecureDirectory { path, reason }) => {
            assert_eq!(path, file);
            assert!(reason.contains("not a directory"), "{reason}");
        }
        err => panic!("{err}"),
    }
    assert_eq!(fs::read(&file).unwrap(), b"");
}

fn private_socket_dir(tmp: &Path) -> PathBuf {
    let path = socket_path(tmp);
    assert!(fs::symlink_metadata(path.parent().unwrap())
        .unwrap()
        .is_dir());
    path
}

#[test]
fn stale_socket_file_is_replaced() {
    let tmp = short_tempdir();
    let path = private_socket_dir(tmp.path());
    drop(UnixListener::bind(&path).unwrap());
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let server = BackendServer::bind(config(tmp.path())).unwrap();
    // (Inode numbers may be reused at once, so the mode tells the files apart.)
    assert_eq!(fs::symlink_metadata(&path).unwrap().mode() & 0o777, 0o600);
    assert_eq!(&probe_path(&path).unwrap(), server.identity());
}

#[test]
fn live_listener_is_left_alone() {
    let tmp = short_tempdir();
    let path = private_socket_dir(tmp.path());
    let other = UnixListener::bind(&path).unwrap();
    let ino = fs::symlink_metadata(&path).unwrap().ino();

    match BackendServer::bind(config(tmp.path())).unwrap_err() {
        ServerError::AddressInUse { path: p } => assert_eq!(p, path),
        err => panic!("{err}"),
    }
    assert_eq!(fs::symlink_metadata(&path).unwrap().ino(), ino);
    // The other listener still works.
    let mut client = UnixStream::connect(&path).unwrap();
    client.write_all(b"still mine").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    // Its backlog holds the liveness check first, then this client.
    let (mut liveness_check, _) = other.accept().unwrap();
    assert_eq!(read_all(&mut liveness_check), b"");
    let (mut accepted, _) = other.accept().unwrap();
    assert_eq!(read_all(&mut accepted), b"still mine");
}

#[test]
fn non_socket_at_the_path_is_left_alone() {
    let tmp = short_tempdir();
    let path = private_socket_dir(tmp.path());

    fs::write(&path, b"precious").unwrap();
    match BackendServer::bind(config(tmp.path())).unwrap_err() {
        ServerError::NotASocket { path: p, found } => {
            assert_eq!(p, path);
            assert_eq!(found, "regular file");
        }
        err => panic!("{err}"),
    }
    assert_eq!(fs::read(&path).unwrap(), b"precious");
    fs::remove_file(&path).unwrap();

    std::os::unix::fs::symlink(tmp.path().join("elsewhere"), &path).unwrap();
    let err = BackendServer::bind(config(tmp.path())).unwrap_err();
    assert!(
        matches!(
            err,
            ServerError::NotASocket {
                found: "symbolic link",
                ..
            }
        ),
        "{err}"
    );
    assert!(fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_symlink());
    fs::remove_file(&path).unwrap();

    fs::create_dir(&path).unwrap();
    let err = BackendServer::bind(config(tmp.path())).unwrap_err();
    assert!(
        matches!(
            err,
            ServerError::NotASocket {
                found: "directory",
                ..
            }
        ),
        "{err}"
    );
    assert!(path.is_dir());
}

#[test]
fn shutdown_wakes_accept_and_removes_the_socket_file() {
    let tmp = short_tempdir();
    let path = socket_path(tmp.path());
    let server = Arc::new(BackendServer::bind(config(tmp.path())).unwrap());
    let (entered_tx, entered_rx) = mpsc::channel();
    let waiter = {
        let server = Arc::clone(&server);
        thread::spawn(move || {
            entered_tx.send(()).unwrap();
            server.accept().map(|_| ())
        })
    };
    entered_rx.recv_timeout(HANG).unwrap();
    server.shutdown();
    assert!(!path.exists());
    let result = within(HANG, move || waiter.join().unwrap());
    assert!(matches!(result, Err(ServerError::ShuttingDown)));
    assert_eq!(server.shutdown_reason(), Some(ShutdownReason::Requested));
    assert!(matches!(server.accept(), Err(ServerError::ShuttingDown)));
    server.shutdown();
    assert!(UnixStream::connect(&path).is_err());
}

#[test]
fn drop_removes_only_its_own_socket_file() {
    let tmp = short_tempdir();
    let path = socket_path(tmp.path());
    drop(BackendServer::bind(config(tmp.path())).unwrap());
    assert!(!path.exists());

    let server = BackendServer::bind(config(tmp.path())).unwrap();
    fs::remove_file(&path).unwrap();
    let _replacement = UnixListener::bind(&path).unwrap();
    drop(server);
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
}

#[test]
fn idle_timeout_ends_an_unused_server() {
    let tmp = short_tempdir();
    let path = socket_path(tmp.path());
    let started = Instant::now();
    let server = Arc::new(
        BackendServer::bind(config(tmp.path()).with_idle_timeout_secs(NonZeroU32::new(1))).unwrap(),
    );
    let result = {
        let server = Arc::clone(&server);
        within(HANG, move || server.accept().map(|_| ()))
    };
    assert!(matches!(result, Err(ServerError::ShuttingDown)));
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(server.wait_for_shutdown(), ShutdownReason::Idle);
    assert!(!path.exists());
}

#[test]
fn open_connection_keeps_an_idle_server_alive_until_dropped() {
    let tmp = short_tempdir();
    let path = socket_path(tmp.path());
    let server =
        BackendServer::bind(config(tmp.path()).with_idle_timeout_secs(NonZeroU32::new(1))).unwrap();
    let mut client = UnixStream::connect(&path).unwrap();
    client.write_all(b"x").unwrap();
    let conn = server.accept_timeout(HANG).unwrap().expect("no connection");
    assert_eq!(server.open_connections(), 1);

    assert_eq!(
        server.wait_for_shutdown_timeout(Duration::from_millis(2500)),
        None
    );
    assert!(path.exists());

    let dropped = Instant::now();
    drop(conn);
    assert_eq!(
        server.wait_for_shutdown_timeout(HANG),
        Some(ShutdownReason::Idle)
    );
    assert!(dropped.elapsed() >= Duration::from_secs(1));
    assert!(!path.exists());
}

#[test]
fn detached_connection_counts_until_reported_closed() {
    let tmp = short_tempdir();
    let path = socket_path(tmp.path());
    let server =
        BackendServer::bind(config(tmp.path()).with_idle_timeout_secs(NonZeroU32::new(1))).unwrap();
    let mut client = UnixStream::connect(&path).unwrap();
    client.write_all(b"y").unwrap();
    let mut stream = server
        .accept_timeout(HANG)
        .unwrap()
        .expect("no connection")
        .detach();
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"y");
    drop(stream);
    assert_eq!(server.open_connections(), 1);
    assert_eq!(
        server.wait_for_shutdown_timeout(Duration::from_millis(2500)),
        None
    );
    server.connection_closed();
    assert_eq!(server.open_connections(), 0);
    assert_eq!(
        server.wait_for_shutdown_timeout(HANG),
        Some(ShutdownReason::Idle)
    );
}

#[test]
fn probes_do_not_keep_an_idle_server_alive() {
    let tmp = short_tempdir();
    let path = socket_path(tmp.path());
    let server =
        BackendServer::bind(config(tmp.path()).with_idle_timeout_secs(NonZeroU32::new(2))).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let prober = {
        let (done, answered, path) = (Arc::clone(&done), Arc::clone(&answered), path.clone());
        thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if probe_path(&path).is_ok() {
                    answered.fetch_add(1, Ordering::SeqCst);
                }
                // A launcher's health-check cadence, not synchronisation.
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let reason = server.wait_for_shutdown_timeout(HANG);
    done.store(true, Ordering::SeqCst);
    prober.join().unwrap();
    assert_eq!(reason, Some(ShutdownReason::Idle));
    assert!(answered.load(Ordering::SeqCst) > 0);
}

fn valid_env() -> Vec<(&'static str, String)> {
    vec![
        (ENV_SERVICE_NAME, "zccache".to_owned()),
        (ENV_SERVICE_VERSION, "1.11.20".to_owned()),
        (ENV_BACKEND_PIPE, "/tmp/rpsx/s/b.sock".to_owned()),
        (ENV_BACKEND_NAMESPACE, "shared".to_owned()),
        (ENV_INSTANCE, "shared".to_owned()),
    ]
}

fn from_vars(vars: &[(&'static str, String)]) -> Result<ServerConfig, ServerError> {
    ServerConfig::from_lookup(|name| {
        vars.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| OsString::from(v))
    })
}

fn with(name: &'static str, value: &str) -> Vec<(&'static str, String)> {
    let mut vars: Vec<_> = valid_env()
        .into_iter()
        .filter(|(n, _)| *n != name)
        .collect();
    vars.push((name, value.to_owned()));
    vars
}

mod env_contract;
mod example_backend;
mod inherited;

#[test]
fn a_connection_closed_without_a_byte_is_not_the_applications() {
    let tmp = short_tempdir();
    let path = socket_path(tmp.path());
    let server = BackendServer::bind(config(tmp.path())).unwrap();
    // A launcher checking who listens: connect, read the peer credentials,
    // hang up.
    for _ in 0..3 {
        drop(UnixStream::connect(&path).unwrap());
    }
    probe_path(&path).unwrap();
    // Had it been handed over (it was, before), it would be queued at once.
    assert!(server
        .accept_timeout(DEFAULT_CLASSIFY_WINDOW * 2)
        .unwrap()
        .is_none());
    assert_eq!(server.open_connections(), 0);
    // A client that sends a byte and hangs up is still the application's.
    let mut client = UnixStream::connect(&path).unwrap();
    client.write_all(b"x").unwrap();
    drop(client);
    let mut conn = server.accept_timeout(HANG).unwrap().expect("no connection");
    assert_eq!(read_all(&mut conn), b"x");
}
