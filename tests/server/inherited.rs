//! A server that takes over the listening socket its launcher bound and
//! passed (`RUNNING_PROCESS_BROKER_LISTENER_FD`), or a service manager's
//! (`LISTEN_FDS`/`LISTEN_PID`): what it accepts, and the typed refusal of
//! every descriptor that is not the endpoint's listener, which it leaves
//! open and untouched.

use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

use running_process::env::{ENV_LISTENER_FD, ENV_LISTEN_FDS, ENV_LISTEN_PID};

use super::*;

/// The environment contract for a server at `path`, passing `fd`.
fn passing(path: &Path, fd: &str) -> Vec<(&'static str, String)> {
    let mut vars = with(ENV_BACKEND_PIPE, path.to_str().unwrap());
    vars.push((ENV_LISTENER_FD, fd.to_owned()));
    vars
}

/// A listening socket bound at `path`, as a launcher makes it, by number
/// (owned by the caller from now on).
fn launcher_bound(path: &Path) -> RawFd {
    UnixListener::bind(path).unwrap().into_raw_fd()
}

fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

fn refused(vars: &[(&'static str, String)]) -> String {
    let config = from_vars(vars)
        .unwrap()
        .with_identity_exe(identity_file(Path::new("/tmp")));
    match BackendServer::bind(config) {
        Err(ServerError::InvalidEnv { name, reason, .. }) => {
            assert_eq!(name, ENV_LISTENER_FD);
            reason
        }
        other => panic!("expected InvalidEnv, got {other:?}"),
    }
}

#[test]
fn a_passed_listener_is_served_and_connections_then_name_the_server() {
    let tmp = short_tempdir();
    let path = socket_path(tmp.path());
    let fd = launcher_bound(&path);
    // A connection queued before the takeover, as a launcher's first one.
    let early = UnixStream::connect(&path).unwrap();
    let config = from_vars(&passing(&path, &fd.to_string()))
        .unwrap()
        .with_identity_exe(identity_file(tmp.path()));
    assert!(config.inherits_listener());
    let server = BackendServer::bind(config).unwrap();
    // Close-on-exec now: the server's own children do not get it.
    // SAFETY: F_GETFD only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    let mut early = early;
    let actual = probe::probe_stream(&mut early, &TraceContext::default(), HANG).unwrap();
    assert_eq!(&actual, server.identity());
    let late = probe_path(&path).unwrap();
    assert_eq!(&late, server.identity());
    // The socket file is the launcher's, and the server removes it at its
    // end as its own.
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
    drop(server);
    assert!(!path.exists());
    assert!(!fd_is_open(fd));
}

#[test]
fn a_descriptor_that_is_not_the_endpoints_listener_is_refused_and_left_open() {
    let tmp = short_tempdir();
    let path = socket_path(tmp.path());

    let file = fs::File::open("/dev/null").unwrap();
    let reason = refused(&passing(&path, &file.as_raw_fd().to_string()));
    assert!(reason.contains("is not a socket"), "{reason}");
    assert!(fd_is_open(file.as_raw_fd()));

    let elsewhere = tmp.path().join("s").join("other.sock");
    let other = UnixListener::bind(&elsewhere).unwrap();
    let reason = refused(&passing(&path, &other.as_raw_fd().to_string()));
    assert!(
        reason.contains("is bound to") && reason.contains("other.sock"),
        "{reason}"
    );
    // Still listening: the refusal left it alone.
    UnixStream::connect(&elsewhere).unwrap();

    let unbound = socket2_like_unlistened(&path);
    let reason = refused(&passing(&path, &unbound.as_raw_fd().to_string()));
    assert!(reason.contains("is not listening"), "{reason}");
    drop(unbound);
    fs::remove_file(&path).unwrap();

    let (a, _b) = UnixStream::pair().unwrap();
    let reason = refused(&passing(&path, &a.as_raw_fd().to_string()));
    assert!(reason.contains("is not listening"), "{reason}");

    // A number no descriptor has (other tests of this process open and
    // close descriptors meanwhile, so a closed one could be reused).
    let reason = refused(&passing(&path, "1000000"));
    assert!(reason.contains("is not open"), "{reason}");
}

/// A Unix stream socket bound at `path` that never listened.
fn socket2_like_unlistened(path: &Path) -> std::os::fd::OwnedFd {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    rustix::net::bind(&fd, &SocketAddrUnix::new(path).unwrap()).unwrap();
    fd
}

#[test]
fn a_listener_fd_that_is_no_descriptor_number_is_refused_before_anything_is_bound() {
    for bad in ["abc", "-1", "0", "2", "99999999999"] {
        match from_vars(&passing(Path::new("/tmp/rpsx/s/b.sock"), bad)) {
            Err(ServerError::InvalidEnv { name, value, .. }) => {
                assert_eq!((name, value.as_str()), (ENV_LISTENER_FD, bad));
            }
            other => panic!("{bad}: expected InvalidEnv, got {other:?}"),
        }
    }
}

#[test]
fn a_passed_listener_is_claimed_by_one_server_only() {
    let tmp = short_tempdir();
    let path = socket_path(tmp.path());
    let fd = launcher_bound(&path);
    let vars = passing(&path, &fd.to_string());
    let config = from_vars(&vars)
        .unwrap()
        .with_identity_exe(identity_file(tmp.path()));
    let first = BackendServer::bind(config).unwrap();
    let reason = refused(&vars);
    assert!(reason.contains("taken over already"), "{reason}");
    probe_path(&path).unwrap();
    drop(first);
}

#[test]
fn socket_activation_counts_only_for_this_process() {
    // LISTEN_PID names another process: the variables were meant for it,
    // and the server binds the path itself.
    let tmp = short_tempdir();
    let path = socket_path(tmp.path());
    let mut vars = with(ENV_BACKEND_PIPE, path.to_str().unwrap());
    vars.push((ENV_LISTEN_PID, "1".to_owned()));
    vars.push((ENV_LISTEN_FDS, "1".to_owned()));
    let config = from_vars(&vars).unwrap();
    assert!(!config.inherits_listener());
    // Meant for this process, the count must make sense.
    let mut vars = with(ENV_BACKEND_PIPE, path.to_str().unwrap());
    vars.push((ENV_LISTEN_PID, std::process::id().to_string()));
    vars.push((ENV_LISTEN_FDS, "0".to_owned()));
    match from_vars(&vars) {
        Err(ServerError::InvalidEnv { name, .. }) => assert_eq!(name, ENV_LISTEN_FDS),
        other => panic!("expected InvalidEnv, got {other:?}"),
    }
}
