//! `rp-example-daemon`: an echo daemon started the way tools that own their
//! endpoint start theirs: with command-line arguments and a fixed endpoint,
//! publishing its identity in a JSON file that clients read and verify.
//!
//! ```text
//! rp-example-daemon --endpoint PATH [--log-file PATH] [--identity-file PATH]
//!                   [--namespace ID] [--service NAME] [--version VERSION]
//!                   [--idle-timeout SECS]
//! ```
//!
//! - `--endpoint`: the Unix socket to serve (its directory is created 0700
//!   if missing; it must be private to this user).
//! - `--log-file`: stdout and stderr are appended there.
//! - `--identity-file`: where the identity is published once bound (default:
//!   the endpoint path with `.running-process.json` in place of `.sock`);
//!   removed with the socket on a clean end.
//! - `--namespace` (default `default`), `--service` (default
//!   `example-daemon`), `--version` (default this package's version): the
//!   identity's namespace and the key the daemon reports in its logs.
//! - `--idle-timeout`: exit after this many seconds without a client.
//!
//! It answers identity probes (both generations of the contract accept the
//! answer), echoes every application connection, exits 0 on SIGTERM or
//! SIGINT or when idle, and exits 2 after one line on stderr when it cannot
//! start.

use std::io;
use std::num::NonZeroU32;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[path = "common/echo.rs"]
mod echo;

use running_process::{BackendKey, BackendServer, BrokerInstanceKey, Endpoint, ServerConfig};

struct Options {
    endpoint: String,
    log_file: Option<PathBuf>,
    identity_file: Option<PathBuf>,
    namespace: String,
    service: String,
    version: String,
    idle_timeout: Option<NonZeroU32>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        endpoint: String::new(),
        log_file: None,
        identity_file: None,
        namespace: "default".to_owned(),
        service: "example-daemon".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        idle_timeout: None,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoint" => options.endpoint = value()?,
            "--log-file" => options.log_file = Some(value()?.into()),
            "--identity-file" => options.identity_file = Some(value()?.into()),
            "--namespace" => options.namespace = value()?,
            "--service" => options.service = value()?,
            "--version" => options.version = value()?,
            "--idle-timeout" => {
                let text = value()?;
                options.idle_timeout = Some(text.parse().map_err(|_| {
                    format!("--idle-timeout {text:?}: a whole number of seconds from 1")
                })?);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.endpoint.is_empty() {
        return Err("--endpoint PATH is required".to_owned());
    }
    Ok(options)
}

/// Appends stdout and stderr to `path` (created 0600).
fn redirect_output(path: &Path) -> io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    for target in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: dup2 on a descriptor we own onto a standard stream.
        if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&file), target) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn serve(options: Options) -> Result<(), String> {
    if let Some(log) = &options.log_file {
        redirect_output(log).map_err(|e| format!("--log-file {}: {e}", log.display()))?;
    }
    let endpoint = Endpoint::new(&options.namespace, &options.endpoint)
        .map_err(|e| format!("--endpoint: {e}"))?;
    let dir = Path::new(&options.endpoint)
        .parent()
        .unwrap_or(Path::new("/"));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    let identity_file = options.identity_file.unwrap_or_else(|| {
        let stem = options
            .endpoint
            .strip_suffix(".sock")
            .unwrap_or(&options.endpoint);
        PathBuf::from(format!("{stem}.running-process.json"))
    });
    let key = BackendKey::new(
        BrokerInstanceKey::shared(),
        &options.service,
        &options.version,
    )
    .map_err(|e| e.to_string())?;
    let config = ServerConfig::new(endpoint, key)
        .map_err(|e| e.to_string())?
        .with_idle_timeout_secs(options.idle_timeout)
        .with_identity_file(identity_file)
        .with_exit_on_sigterm(true)
        // A launcher that bound the endpoint passes its listener.
        .with_inherited_listener_from_env()
        .map_err(|e| e.to_string())?;
    let server = BackendServer::bind(config).map_err(|e| e.to_string())?;
    println!(
        "rp-example-daemon pid {} serving {}",
        std::process::id(),
        options.endpoint
    );
    echo::serve_until_shutdown(&server).map_err(|e| format!("accept: {e}"))
}

fn main() -> ExitCode {
    match parse(std::env::args().skip(1)).and_then(serve) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("rp-example-daemon: {message}");
            ExitCode::from(2)
        }
    }
}
