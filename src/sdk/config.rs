//! A server's configuration: from the environment contract (what a
//! launcher passes) or built by hand, validated before anything is bound, and
//! the identity the server will report.

use std::ffi::OsString;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{ServerError, DEFAULT_CLASSIFY_WINDOW};
use crate::contract::clock;
use crate::contract::env::{
    parse_exe_digest, ENV_BACKEND_NAMESPACE, ENV_BACKEND_PIPE, ENV_EXE_DIGEST,
    ENV_IDLE_TIMEOUT_SECS, ENV_INSTANCE, ENV_LISTENER_FD, ENV_LISTEN_FDS, ENV_LISTEN_PID,
    ENV_SERVICE_NAME, ENV_SERVICE_VERSION, ENV_TRACEPARENT, ENV_TRACESTATE, LISTEN_FDS_START,
};
use crate::contract::error::ValidationError;
pub(super) use crate::contract::identity::endpoint_path_problem;
use crate::contract::identity::{validate_namespace_id, DaemonProcess, Endpoint};
use crate::contract::keys::{BackendKey, BrokerInstanceKey};
use crate::contract::names::{validate_service_name, validate_version};
use crate::contract::stamp::FileStamp;
use crate::contract::trace::TraceContext;
use crate::sys::digest::{digests_of_file, Digests, Need};
use crate::sys::host;
use crate::sys::proc;

/// Everything a [`BackendServer`] needs to bind: the endpoint, the backend
/// key's service name and version, and the optional parts of the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub(super) endpoint: Endpoint,
    pub(super) key: BackendKey,
    pub(super) trace: TraceContext,
    pub(super) idle_timeout_secs: Option<NonZeroU32>,
    pub(super) identity_exe: Option<PathBuf>,
    /// The launcher's digests of our executable and the stamp it hashed
    /// ([`ENV_EXE_DIGEST`]): used instead of hashing while the file still
    /// has that stamp.
    pub(super) exe_digest_hint: Option<(Digests, FileStamp)>,
    pub(super) classify_window: Duration,
    pub(super) exit_on_sigterm: bool,
    /// The variable the endpoint path came from, named by errors about it.
    pub(super) endpoint_variable: Option<&'static str>,
    /// Where to publish the identity once bound (removed on a clean end).
    pub(super) identity_file: Option<PathBuf>,
    /// A listening socket passed to this process to serve on instead of
    /// binding the path.
    pub(super) inherited: Option<InheritedListener>,
    /// The log bound a launcher asked for (see `sdk::logcap`).
    pub(super) log_cap: Option<super::logcap::LogCap>,
}

/// Listening sockets passed to this process, by descriptor number: the
/// launcher's single one ([`ENV_LISTENER_FD`]) or a service manager's
/// ([`ENV_LISTEN_FDS`], from descriptor 3 up), one of which must be bound to
/// the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct InheritedListener {
    pub(super) first: i32,
    pub(super) count: i32,
    /// The variable that passed them, named by errors about them.
    pub(super) variable: &'static str,
}

/// Most service-manager sockets looked at.
const MAX_LISTEN_FDS: i32 = 64;

/// The listening sockets passed through the environment, if any: the
/// launcher's [`ENV_LISTENER_FD`] first; otherwise socket activation
/// ([`ENV_LISTEN_FDS`]), which counts only when [`ENV_LISTEN_PID`] names this
/// process (it may have been meant for a parent).
fn inherited_from(
    lookup: &impl Fn(&str) -> Option<OsString>,
) -> Result<Option<InheritedListener>, ServerError> {
    let text = |name: &'static str| -> Result<Option<String>, ServerError> {
        match lookup(name) {
            None => Ok(None),
            Some(raw) if raw.is_empty() => Ok(None),
            Some(raw) => raw
                .into_string()
                .map(Some)
                .map_err(|raw| invalid_env(name, &raw.to_string_lossy(), "is not valid UTF-8")),
        }
    };
    if let Some(value) = text(ENV_LISTENER_FD)? {
        let fd = value
            .parse::<i32>()
            .ok()
            .filter(|fd| *fd >= LISTEN_FDS_START)
            .ok_or_else(|| {
                invalid_env(
                    ENV_LISTENER_FD,
                    &value,
                    "must be the number of an inherited descriptor (3 or more)",
                )
            })?;
        return Ok(Some(InheritedListener {
            first: fd,
            count: 1,
            variable: ENV_LISTENER_FD,
        }));
    }
    let Some(pid) = text(ENV_LISTEN_PID)? else {
        return Ok(None);
    };
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    let count = text(ENV_LISTEN_FDS)?.unwrap_or_default();
    let n = count
        .parse::<i32>()
        .ok()
        .filter(|n| (1..=MAX_LISTEN_FDS).contains(n))
        .ok_or_else(|| {
            invalid_env(
                ENV_LISTEN_FDS,
                &count,
                format!("must be a count of passed sockets from 1 to {MAX_LISTEN_FDS}"),
            )
        })?;
    Ok(Some(InheritedListener {
        first: LISTEN_FDS_START,
        count: n,
        variable: ENV_LISTEN_FDS,
    }))
}

/// The `reason` of a validation error, without the value it repeats.
pub(super) fn reason_of(err: &ValidationError) -> String {
    match err {
        ValidationError::Name { kind, reason, .. } => format!("{kind}: {reason}"),
        ValidationError::Version { reason, .. }
        | ValidationError::VersionRefused { reason, .. }
        | ValidationError::ServiceDefinition { reason, .. }
        | ValidationError::TraceContext { reason, .. }
        | ValidationError::Identity { reason, .. } => reason.clone(),
    }
}

pub(super) fn invalid_env(
    name: &'static str,
    value: &str,
    reason: impl Into<String>,
) -> ServerError {
    ServerError::InvalidEnv {
        name,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

impl ServerConfig {
    /// A configuration with validated names; no trace, no idle timeout, the
    /// running executable as identity, the default classification window.
    /// The endpoint path must be plain (see the module documentation).
    pub fn new(endpoint: Endpoint, key: BackendKey) -> Result<Self, ServerError> {
        endpoint.validate()?;
        if let Some(reason) = endpoint_path_problem(&endpoint.path) {
            return Err(ValidationError::Identity {
                field: "path",
                value: endpoint.path.clone(),
                reason,
            }
            .into());
        }
        Ok(ServerConfig {
            endpoint,
            key,
            trace: TraceContext::default(),
            idle_timeout_secs: None,
            identity_exe: None,
            exe_digest_hint: None,
            classify_window: DEFAULT_CLASSIFY_WINDOW,
            exit_on_sigterm: false,
            endpoint_variable: None,
            identity_file: None,
            inherited: None,
            log_cap: None,
        })
    }

    /// The configuration a launcher handed to this process through the
    /// environment contract.
    pub fn from_env() -> Result<Self, ServerError> {
        Self::from_lookup(|name| std::env::var_os(name))
    }

    /// The configuration from any source of variables (`lookup` returns a
    /// variable's value, or `None` when it is unset). Every variable is
    /// validated; an error names the variable. Optional variables that are
    /// set but empty count as unset, as the contract sets them only when
    /// non-empty. The endpoint path must be plain (see the module
    /// documentation); whether its directory exists is checked by
    /// [`BackendServer::bind`], whose error then names the variable too.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Self, ServerError> {
        let text = |name: &'static str, raw: OsString| {
            raw.into_string()
                .map_err(|raw| invalid_env(name, &raw.to_string_lossy(), "is not valid UTF-8"))
        };
        let required = |name: &'static str| match lookup(name) {
            None => Err(ServerError::MissingEnv { name }),
            Some(raw) => text(name, raw),
        };
        let optional = |name: &'static str| match lookup(name) {
            None => Ok(None),
            Some(raw) if raw.is_empty() => Ok(None),
            Some(raw) => text(name, raw).map(Some),
        };

        let service_name = required(ENV_SERVICE_NAME)?;
        validate_service_name(&service_name)
            .map_err(|e| invalid_env(ENV_SERVICE_NAME, &service_name, reason_of(&e)))?;
        let service_version = required(ENV_SERVICE_VERSION)?;
        validate_version(&service_version)
            .map_err(|e| invalid_env(ENV_SERVICE_VERSION, &service_version, reason_of(&e)))?;
        let path = required(ENV_BACKEND_PIPE)?;
        let namespace = required(ENV_BACKEND_NAMESPACE)?;
        validate_namespace_id(&namespace)
            .map_err(|e| invalid_env(ENV_BACKEND_NAMESPACE, &namespace, reason_of(&e)))?;
        let endpoint = Endpoint::new(&namespace, &path)
            .map_err(|e| invalid_env(ENV_BACKEND_PIPE, &path, reason_of(&e)))?;
        if let Some(reason) = endpoint_path_problem(&path) {
            return Err(invalid_env(ENV_BACKEND_PIPE, &path, reason));
        }
        let instance_id = required(ENV_INSTANCE)?;
        let instance = BrokerInstanceKey::from_id(&instance_id)
            .map_err(|e| invalid_env(ENV_INSTANCE, &instance_id, reason_of(&e)))?;
        // Each part was validated above with an error naming its variable.
        let key = BackendKey::new(instance, &service_name, &service_version)?;

        let traceparent = optional(ENV_TRACEPARENT)?.unwrap_or_default();
        let tracestate = optional(ENV_TRACESTATE)?.unwrap_or_default();
        let trace =
            TraceContext::new(0, traceparent.clone(), tracestate.clone()).map_err(
                |e| match &e {
                    ValidationError::TraceContext { field, .. } if *field == "tracestate" => {
                        invalid_env(ENV_TRACESTATE, &tracestate, reason_of(&e))
                    }
                    _ => invalid_env(ENV_TRACEPARENT, &traceparent, reason_of(&e)),
                },
            )?;

        let idle_timeout_secs = match optional(ENV_IDLE_TIMEOUT_SECS)? {
            None => None,
            Some(value) => Some(value.parse::<NonZeroU32>().map_err(|_| {
                invalid_env(
                    ENV_IDLE_TIMEOUT_SECS,
                    &value,
                    "must be a whole number of seconds from 1 to 4294967295 \
                     (leave it unset for no idle exit)",
                )
            })?),
        };

        Ok(ServerConfig {
            endpoint,
            key,
            trace,
            idle_timeout_secs,
            identity_exe: None,
            // A hint, not part of the contract: a malformed value is ignored
            // and the executable hashed.
            exe_digest_hint: lookup(ENV_EXE_DIGEST)
                .and_then(|raw| raw.into_string().ok())
                .and_then(|text| parse_exe_digest(&text))
                .map(|(sha256, blake3, stamp)| {
                    let digests = Digests {
                        blake3,
                        sha256: Some(sha256),
                    };
                    (digests, stamp)
                }),
            classify_window: DEFAULT_CLASSIFY_WINDOW,
            exit_on_sigterm: false,
            endpoint_variable: Some(ENV_BACKEND_PIPE),
            identity_file: None,
            inherited: inherited_from(&lookup)?,
            log_cap: super::logcap::LogCap::from_lookup(&lookup),
        })
    }

    /// Serve on the listening socket this process was passed, if any
    /// ([`ENV_LISTENER_FD`] from a launcher, or socket activation through
    /// [`ENV_LISTEN_FDS`] and [`ENV_LISTEN_PID`]), instead of binding the
    /// path: what [`ServerConfig::from_env`] does by itself, for a
    /// configuration built by hand (a daemon that takes its endpoint on the
    /// command line). The socket must be bound to this configuration's
    /// endpoint; [`BackendServer::bind`](super::BackendServer::bind) checks
    /// that.
    pub fn with_inherited_listener_from_env(mut self) -> Result<Self, ServerError> {
        self.inherited = inherited_from(&|name: &str| std::env::var_os(name))?;
        Ok(self)
    }

    /// Whether the server will serve on a passed listening socket.
    pub fn inherits_listener(&self) -> bool {
        self.inherited.is_some()
    }

    /// The incoming trace context.
    pub fn with_trace(mut self, trace: TraceContext) -> Self {
        self.trace = trace;
        self
    }

    /// End the server after this many seconds without an open application
    /// connection (`None`: never).
    pub fn with_idle_timeout_secs(mut self, secs: Option<NonZeroU32>) -> Self {
        self.idle_timeout_secs = secs;
        self
    }

    /// Report this file (canonicalized) as the executable in the identity
    /// instead of the running executable: a script backend reports its
    /// script, which is what its service definition names.
    pub fn with_identity_exe(mut self, path: impl Into<PathBuf>) -> Self {
        self.identity_exe = Some(path.into());
        self
    }

    /// Publish the server's identity at `path` once the socket is bound (as
    /// JSON of the current generation, atomically, mode 0600; see
    /// [`crate::sys::identity_file`]) and remove it when the server ends
    /// cleanly, if it still describes this server. The directory must
    /// exist.
    pub fn with_identity_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.identity_file = Some(path.into());
        self
    }

    pub fn identity_file(&self) -> Option<&Path> {
        self.identity_file.as_deref()
    }

    /// How long a new connection may take to show a complete probe request
    /// (see [`DEFAULT_CLASSIFY_WINDOW`]).
    pub fn with_classify_window(mut self, window: Duration) -> Self {
        self.classify_window = window;
        self
    }

    /// Make SIGTERM and SIGINT shut the server down gracefully, with the
    /// handling in place before the socket is bound (see
    /// [`BackendServer::exit_on_sigterm`] for what the handling does).
    pub fn with_exit_on_sigterm(mut self, exit_on_sigterm: bool) -> Self {
        self.exit_on_sigterm = exit_on_sigterm;
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The backend key this server serves.
    pub fn key(&self) -> &BackendKey {
        &self.key
    }

    pub fn instance(&self) -> &BrokerInstanceKey {
        self.key.instance()
    }

    pub fn service_name(&self) -> &str {
        self.key.service_name()
    }

    pub fn service_version(&self) -> &str {
        self.key.service_version()
    }

    pub fn trace(&self) -> &TraceContext {
        &self.trace
    }

    pub fn idle_timeout_secs(&self) -> Option<NonZeroU32> {
        self.idle_timeout_secs
    }

    pub fn identity_exe(&self) -> Option<&Path> {
        self.identity_exe.as_deref()
    }

    pub fn classify_window(&self) -> Duration {
        self.classify_window
    }

    pub fn exit_on_sigterm(&self) -> bool {
        self.exit_on_sigterm
    }

    /// The identity a server bound with this configuration reports, with
    /// `started_at_unix_ms` = now, in the compatible layout of the current
    /// generation: BLAKE3 in fields 8 and 9 and a real SHA-256 in field 3, so
    /// that probers of both generations accept it. Hashes the executable
    /// (both digests in one pass), so it costs a read of the whole file,
    /// unless the launcher passed its digest
    /// ([`ENV_EXE_DIGEST`]) with the stamp of the file it hashed and the
    /// file still has exactly that stamp (for a native executable, the
    /// running image cannot be written while it runs).
    ///
    /// Without an identity file, the hash is of the image this process runs
    /// (read through `/proc/self/exe`), not of whatever is at its path now:
    /// a binary replaced on disk after the exec must not lend its hash to
    /// the process still running the old one.
    pub fn daemon_identity(&self) -> Result<DaemonProcess, ServerError> {
        let (exe, hashed) = match &self.identity_exe {
            Some(path) => {
                let exe = std::fs::canonicalize(path)
                    .map_err(|e| ServerError::io("canonicalize", path, e))?;
                (exe.clone(), exe)
            }
            None => (running_exe_path()?, PathBuf::from(proc::SELF_EXE_LINK)),
        };
        let exe_path = exe.to_str().ok_or_else(|| ValidationError::Identity {
            field: "exe_path",
            value: exe.to_string_lossy().into_owned(),
            reason: "must be UTF-8 (the wire format carries it as a string)".to_owned(),
        })?;
        let digests = self.exe_digests(&hashed)?;
        let identity = DaemonProcess {
            pid: std::process::id(),
            exe_path: exe_path.to_owned(),
            exe_sha256: digests.sha256.unwrap_or_default(),
            exe_blake3: Some(digests.blake3),
            boot_id: host::boot_id()?,
            ipc_endpoint: self.endpoint.clone(),
            started_at_unix_ms: clock::unix_time_ms(),
            idle_timeout_secs: self.idle_timeout_secs.map(NonZeroU32::get),
        };
        identity.validate()?;
        Ok(identity)
    }
}

impl ServerConfig {
    /// The digests of `hashed`: the launcher's, if its stamp still holds.
    pub(super) fn exe_digests(&self, hashed: &Path) -> Result<Digests, ServerError> {
        if let Some((digests, stamp)) = &self.exe_digest_hint {
            let now = std::fs::metadata(hashed).map(|meta| FileStamp::of(&meta));
            if now.is_ok_and(|now| now == *stamp) {
                return Ok(*digests);
            }
        }
        Ok(digests_of_file(hashed, Need::Both)?)
    }
}

pub(super) fn running_exe_path() -> Result<PathBuf, ServerError> {
    proc::self_exe_path()
        .map_err(|e| ServerError::io("read link", Path::new(proc::SELF_EXE_LINK), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::env::format_exe_digest;

    fn config_with(digest_var: Option<String>) -> ServerConfig {
        ServerConfig::from_lookup(|name| {
            let value = match name {
                ENV_SERVICE_NAME => "echo".to_owned(),
                ENV_SERVICE_VERSION => "1.0.0".to_owned(),
                ENV_BACKEND_PIPE => "/tmp/rp-hint-test/s/b.sock".to_owned(),
                ENV_BACKEND_NAMESPACE | ENV_INSTANCE => "shared".to_owned(),
                ENV_EXE_DIGEST => digest_var.clone()?,
                _ => return None,
            };
            Some(value.into())
        })
        .unwrap()
    }

    #[test]
    fn the_launchers_digest_is_used_only_while_the_stamp_holds() {
        let exe = Path::new(proc::SELF_EXE_LINK);
        let stamp = FileStamp::of(&std::fs::metadata(exe).unwrap());
        let both = digests_of_file(exe, Need::Both).unwrap();
        let real = (both.sha256.unwrap(), Some(both.blake3));
        // Digests that are not ours show which source was used.
        let hinted = ([0x5a; 32], [0x6b; 32]);
        let identity = |var: Option<String>| {
            let id = config_with(var).daemon_identity().unwrap();
            (id.exe_sha256, id.exe_blake3)
        };
        let hint = |stamp: &FileStamp| Some(format_exe_digest(&hinted.0, &hinted.1, stamp));
        assert_eq!(identity(hint(&stamp)), (hinted.0, Some(hinted.1)));
        let moved = FileStamp {
            ctime: (stamp.ctime.0, stamp.ctime.1 + 1),
            ..stamp
        };
        assert_eq!(identity(hint(&moved)), real);
        let other = FileStamp {
            ino: stamp.ino + 1,
            ..stamp
        };
        assert_eq!(identity(hint(&other)), real);
        assert_eq!(identity(Some("not a digest".to_owned())), real);
        assert_eq!(identity(None), real);
    }

    #[test]
    fn endpoint_paths_must_be_plain() {
        for ok in [
            "/tmp/s/b.sock",
            "/run/user/0/rp/s/b..sock",
            "/tmp/s/.b.sock",
            "/tmp//b.sock",
        ] {
            assert_eq!(endpoint_path_problem(ok), None, "{ok}");
        }
        for (bad, says) in [
            ("/tmp/s/../b.sock", "'..'"),
            ("/tmp/s/..", "'..'"),
            ("/tmp/./b.sock", "'.'"),
            ("/tmp/s/b.sock\n", "control character '\\n'"),
            ("/tmp/s/b\r.sock", "control character"),
            ("/tmp/s/b\x7f.sock", "control character"),
            ("/tmp/s/b\u{9b}.sock", "control character"),
            ("/tmp/s/", "ends with '/'"),
        ] {
            let reason = endpoint_path_problem(bad).unwrap_or_default();
            assert!(reason.contains(says), "{bad:?}: {reason}");
        }
    }

    #[test]
    fn a_config_built_in_code_refuses_a_path_that_is_not_plain() {
        let key = BackendKey::new(BrokerInstanceKey::shared(), "echo", "1.0.0").unwrap();
        let endpoint = Endpoint::new("shared", "/tmp/s/../b.sock").unwrap();
        match ServerConfig::new(endpoint, key).unwrap_err() {
            ServerError::Validation(ValidationError::Identity { field, value, .. }) => {
                assert_eq!(field, "path");
                assert_eq!(value, "/tmp/s/../b.sock");
            }
            err => panic!("{err}"),
        }
    }

    #[test]
    fn validation_reasons_drop_the_repeated_value() {
        let err = validate_service_name("Zc").unwrap_err();
        let reason = reason_of(&err);
        assert!(reason.starts_with("service name: "), "{reason}");
        assert!(!reason.contains("\"Zc\""), "{reason}");
    }
}
