//! The environment contract between a launcher and the backend it starts.
//!
//! The first seven names are those of the v1 contract; existing backends read
//! them. Names of this project's own carry the same prefix and are ignored by
//! backends that do not know them.

use crate::contract::stamp::FileStamp;

/// Service name of the backend key.
pub const ENV_SERVICE_NAME: &str = "RUNNING_PROCESS_BROKER_V1_SERVICE_NAME";
/// Service version of the backend key.
pub const ENV_SERVICE_VERSION: &str = "RUNNING_PROCESS_BROKER_V1_SERVICE_VERSION";
/// Unix socket path the backend must bind.
pub const ENV_BACKEND_PIPE: &str = "RUNNING_PROCESS_BROKER_V1_BACKEND_PIPE";
/// Namespace id of the endpoint (the broker instance id).
pub const ENV_BACKEND_NAMESPACE: &str = "RUNNING_PROCESS_BROKER_V1_BACKEND_NAMESPACE";
/// Broker instance id: `shared`, `private:<service>` or `explicit:<name>`.
pub const ENV_INSTANCE: &str = "RUNNING_PROCESS_BROKER_V1_INSTANCE";
/// Incoming W3C traceparent; set only when non-empty.
pub const ENV_TRACEPARENT: &str = "RUNNING_PROCESS_BROKER_V1_TRACEPARENT";
/// Incoming W3C tracestate; set only when non-empty.
pub const ENV_TRACESTATE: &str = "RUNNING_PROCESS_BROKER_V1_TRACESTATE";
/// Seconds without clients after which the backend should exit (this
/// project's addition).
pub const ENV_IDLE_TIMEOUT_SECS: &str = "RUNNING_PROCESS_BROKER_V1_IDLE_TIMEOUT_SECS";

/// The seven names of the v1 contract, in the contract's order.
pub const V1_ENV_NAMES: [&str; 7] = [
    ENV_SERVICE_NAME,
    ENV_SERVICE_VERSION,
    ENV_BACKEND_PIPE,
    ENV_BACKEND_NAMESPACE,
    ENV_INSTANCE,
    ENV_TRACEPARENT,
    ENV_TRACESTATE,
];

/// Where the service definition directory is taken from first.
pub const ENV_SERVICE_DEF_DIR: &str = "RUNNING_PROCESS_SERVICE_DEF_DIR";

/// The digests the launcher computed of the executable it started, with the
/// stamp of the file it hashed:
/// `<SHA-256, 64 hex>-<BLAKE3, 64 hex>:<dev>:<ino>:<size>:<mtime s>.<ns>:<ctime s>.<ns>`
/// (this project's addition; set only when the stamp vouches for the
/// digests). The backend SDK reports them in its identity instead of
/// hashing its own executable again, but only if the file it would hash
/// still has exactly that stamp; otherwise it hashes. It is a hint, never a
/// proof: the launcher verifies the running image through `/proc` itself.
pub const ENV_EXE_DIGEST: &str = "RUNNING_PROCESS_EXE_DIGEST";

/// Number of the listening socket the launcher bound for the backend and
/// passed to it (the current generation of the v1 contract, Unix). A backend
/// that receives it must serve on that listener and not bind the path again.
pub const ENV_LISTENER_FD: &str = "RUNNING_PROCESS_BROKER_LISTENER_FD";
/// Set in the launcher's own environment to `0`, `false`, `no` or `off`, it
/// turns the launcher-side bind off for every definition (the contract's
/// opt-out); any other value, or none, leaves it to each definition.
pub const ENV_OWNED_BIND: &str = "RUNNING_PROCESS_BROKER_OWNED_BIND";
/// Set to `1` for a backend started with the login baseline environment, as
/// the current generation of the contract marks the daemons it spawns.
pub const ENV_IS_DAEMON: &str = "RUNNING_PROCESS_IS_DAEMON";
/// This project's addition: the path of the backend's log (its standard
/// output and error), set with [`ENV_LOG_MAX_BYTES`] by a launcher that
/// bounds logs; the SDK then keeps the bound (see `sdk::logcap`).
pub const ENV_LOG_FILE: &str = "RUNNING_PROCESS_LOG_FILE";
/// This project's addition: the size the backend's log may reach before
/// the SDK rotates it to `<log>.1`.
pub const ENV_LOG_MAX_BYTES: &str = "RUNNING_PROCESS_LOG_MAX_BYTES";
/// Socket activation by a service manager (`sd_listen_fds`): the number of
/// sockets passed from descriptor 3 up, for the process named by
/// [`ENV_LISTEN_PID`].
pub const ENV_LISTEN_FDS: &str = "LISTEN_FDS";
/// The pid the [`ENV_LISTEN_FDS`] sockets are meant for.
pub const ENV_LISTEN_PID: &str = "LISTEN_PID";
/// Names of the [`ENV_LISTEN_FDS`] sockets, colon-separated.
pub const ENV_LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// First descriptor of socket activation (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: i32 = 3;

/// Whether a value of [`ENV_OWNED_BIND`] turns the launcher-side bind off.
pub fn owned_bind_disabled(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "0" | "false" | "no" | "off"
    )
}

/// Milliseconds a binary on a file system with nanosecond timestamps must
/// have stayed unchanged before its stamp vouches for its digest, when more
/// than the system's own granule (a few ticks of the kernel's coarse clock)
/// is wanted (this project's addition). It can only lengthen the wait: a
/// smaller value, or one that does not parse, is ignored.
pub const ENV_SETTLE_MS: &str = "RUNNING_PROCESS_SETTLE_MS";

/// The value of [`ENV_EXE_DIGEST`] for the SHA-256 and BLAKE3 digests of a
/// file with `stamp`.
pub fn format_exe_digest(sha256: &[u8; 32], blake3: &[u8; 32], stamp: &FileStamp) -> String {
    format!(
        "{}-{}:{}:{}:{}:{}.{}:{}.{}",
        hex::encode(sha256),
        hex::encode(blake3),
        stamp.dev,
        stamp.ino,
        stamp.size,
        stamp.mtime.0,
        stamp.mtime.1,
        stamp.ctime.0,
        stamp.ctime.1
    )
}

/// Parses an [`ENV_EXE_DIGEST`] value into (SHA-256, BLAKE3, stamp); `None`
/// for anything malformed.
pub fn parse_exe_digest(value: &str) -> Option<([u8; 32], [u8; 32], FileStamp)> {
    let mut parts = value.split(':');
    let (sha_hex, blake_hex) = parts.next()?.split_once('-')?;
    let mut sha256 = [0u8; 32];
    hex::decode_to_slice(sha_hex, &mut sha256).ok()?;
    let mut blake3 = [0u8; 32];
    hex::decode_to_slice(blake_hex, &mut blake3).ok()?;
    let number = |text: Option<&str>| text?.parse::<u64>().ok();
    let time = |text: Option<&str>| {
        let (secs, nanos) = text?.split_once('.')?;
        Some((secs.parse::<i64>().ok()?, nanos.parse::<i64>().ok()?))
    };
    let stamp = FileStamp {
        dev: number(parts.next())?,
        ino: number(parts.next())?,
        size: number(parts.next())?,
        mtime: time(parts.next())?,
        ctime: time(parts.next())?,
    };
    parts.next().is_none().then_some((sha256, blake3, stamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exe_digest_round_trips_and_refuses_malformed_values() {
        let stamp = FileStamp {
            dev: 64769,
            ino: 1234567,
            size: 742536,
            mtime: (1_764_000_000, 123_456_789),
            ctime: (1_764_000_001, 5),
        };
        let (sha256, blake3) = ([0xab; 32], [0xcd; 32]);
        let text = format_exe_digest(&sha256, &blake3, &stamp);
        assert_eq!(parse_exe_digest(&text), Some((sha256, blake3, stamp)));
        for bad in [
            "",
            "abc",
            &text[1..],
            &format!("{text}:1"),
            &text.replace(".123456789", ""),
            &text.replacen("ab", "zz", 1),
            &text.replacen("-", "", 1),
            &text[65..],
        ] {
            assert_eq!(parse_exe_digest(bad), None, "{bad:?}");
        }
    }
}
