//! `rp-echo-backend`: a tiny backend built on [`BackendServer`], for
//! examples and tests.
//!
//! It reads the environment contract, binds its endpoint, answers identity
//! probes (the SDK does that), and echoes every byte of every application
//! connection back until the client closes its side. It exits 0 when the
//! server shuts down (idle timeout, SIGTERM or SIGINT), and 2 after printing
//! one line to stderr when it cannot start. Set `RP_ECHO_LOG` to a level
//! (`error`, `warn`, `info`, `debug`, `trace`) to log to stderr.
//!
//! Test behaviours, chosen with `RP_ECHO_MODE` (launcher failure tests use
//! them; they are not part of any real backend):
//!
//! | `RP_ECHO_MODE` | behaviour |
//! |---|---|
//! | unset or `echo` | the echo service described above |
//! | `exit3` | prints `exiting with 3` to stderr and exits with status 3 |
//! | `never-bind` | sleeps forever without binding |
//! | `garbage` | binds a plain listener (no probe answering) and answers every connection with 64 bytes of garbage, then closes it |
//! | `wrong-nonce` | binds a plain listener and answers probes with the right identity but a nonce whose bits are flipped |
//! | `slow-bind-ms=N` | sleeps N milliseconds, then behaves as `echo` |

use std::io::{self, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

#[path = "common/echo.rs"]
mod echo;

use running_process::wire::{self as probe, NONCE_LEN};
use running_process::{BackendServer, ServerConfig, MAX_PROBE_REQUEST};

const MODE_VAR: &str = "RP_ECHO_MODE";
const LOG_VAR: &str = "RP_ECHO_LOG";
/// How long the raw test modes wait on a peer before giving up on it.
const RAW_PEER_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    init_logging();
    let mode = std::env::var(MODE_VAR).unwrap_or_default();
    let result = match mode.as_str() {
        "" | "echo" => echo(),
        "exit3" => {
            eprintln!("exiting with 3");
            return ExitCode::from(3);
        }
        "never-bind" => loop {
            thread::park();
        },
        "garbage" => raw_listener(answer_with_garbage),
        "wrong-nonce" => wrong_nonce(),
        other => match other.strip_prefix("slow-bind-ms=").map(str::parse::<u64>) {
            Some(Ok(ms)) => {
                thread::sleep(Duration::from_millis(ms));
                echo()
            }
            _ => Err(format!("unknown {MODE_VAR} {other:?}")),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("rp-echo-backend: {message}");
            ExitCode::from(2)
        }
    }
}

/// The echo service. Startup errors are returned; once serving, it only
/// ends when the server shuts down.
fn echo() -> Result<(), String> {
    let config = ServerConfig::from_env()
        .map_err(|e| e.to_string())?
        .with_exit_on_sigterm(true);
    let server = BackendServer::bind(config).map_err(|e| e.to_string())?;
    if let Err(e) = echo::serve_until_shutdown(&server) {
        log::error!("accept failed: {e}");
    }
    Ok(())
}

/// Binds a plain listener at the endpoint of the environment contract
/// (bypassing the SDK) and serves each connection with `serve`, one at a
/// time.
fn raw_listener(serve: fn(&mut UnixStream) -> io::Result<()>) -> Result<(), String> {
    let config = ServerConfig::from_env().map_err(|e| e.to_string())?;
    let listener = plain_listener(&config)?;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(RAW_PEER_TIMEOUT));
        let _ = stream.set_write_timeout(Some(RAW_PEER_TIMEOUT));
        if let Err(e) = serve(&mut stream) {
            log::debug!("raw connection ended: {e}");
        }
    }
    Ok(())
}

/// The listener of a plain (SDK-less) mode: the one the launcher passed,
/// listened on again so that connections name this process, or else one
/// bound at the endpoint.
fn plain_listener(config: &ServerConfig) -> Result<UnixListener, String> {
    if let Ok(fd) = std::env::var(running_process::env::ENV_LISTENER_FD) {
        let fd: i32 = fd.parse().map_err(|e| format!("listener fd {fd:?}: {e}"))?;
        // SAFETY: the launcher passed this descriptor for this process's
        // listener; nothing else here owns it.
        let listener = unsafe { <UnixListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        rustix::net::listen(&listener, 16).map_err(|e| format!("listen on fd {fd}: {e}"))?;
        return Ok(listener);
    }
    UnixListener::bind(config.endpoint().path())
        .map_err(|e| format!("bind {}: {e}", config.endpoint().path()))
}

fn answer_with_garbage(stream: &mut UnixStream) -> io::Result<()> {
    // 0xde is not the framing version, so no reader can take it for a frame.
    let garbage: Vec<u8> = (0..64u8).map(|i| 0xde ^ i.wrapping_mul(7)).collect();
    stream.write_all(&garbage)?;
    // Read what the peer sent before closing, so the close is an orderly
    // end of stream for it rather than a reset.
    stream.shutdown(std::net::Shutdown::Write)?;
    io::copy(stream, &mut io::sink())?;
    Ok(())
}

fn wrong_nonce() -> Result<(), String> {
    let config = ServerConfig::from_env().map_err(|e| e.to_string())?;
    let identity = config.daemon_identity().map_err(|e| e.to_string())?;
    let listener = plain_listener(&config)?;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let Ok(request) = probe::read_frame(&mut stream, MAX_PROBE_REQUEST, RAW_PEER_TIMEOUT)
        else {
            continue;
        };
        let Some(nonce) = probe::probe_nonce(&request) else {
            continue;
        };
        let mut flipped = [0u8; NONCE_LEN];
        for (out, byte) in flipped.iter_mut().zip(nonce) {
            *out = !byte;
        }
        let response = probe::probe_response(&request, &flipped, &identity);
        let _ = stream.set_write_timeout(Some(RAW_PEER_TIMEOUT));
        if let Err(e) = stream.write_all(&response) {
            log::debug!("wrong-nonce answer failed: {e}");
        }
    }
    Ok(())
}

/// A minimal stderr logger, on only when `RP_ECHO_LOG` names a level, so
/// that a startup failure stays one line by default.
fn init_logging() {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            eprintln!(
                "rp-echo-backend[{}] {} {}: {}",
                std::process::id(),
                record.level(),
                record.target(),
                record.args()
            );
        }
        fn flush(&self) {}
    }
    static LOGGER: Stderr = Stderr;
    let Some(level) = std::env::var(LOG_VAR)
        .ok()
        .and_then(|v| v.parse::<log::LevelFilter>().ok())
    else {
        return;
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
