//! Error types of the broker core, one enum per layer.
//!
//! Every variant carries the input that was refused and a reason a person can
//! act on. None of these types panics on hostile input; the Python layer maps
//! each variant to an exception class of the same family (see
//! `python/running_process/errors.py`).

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Which kind of name a [`ValidationError::Name`] refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NameKind {
    /// A service name (`[a-z0-9-]{1,64}`).
    ServiceName,
    /// An explicit broker instance name (`[a-z0-9-]{1,64}`).
    InstanceName,
    /// A per-user hash (16 lowercase hex characters).
    UserSidHash,
    /// The random part of a backend endpoint name (32 lowercase hex characters).
    EndpointToken,
    /// A broker instance id (`shared`, `private:<service>`, `explicit:<name>`).
    InstanceId,
    /// A backend key as text (`instance/service@version`).
    BackendKey,
}

impl NameKind {
    /// The human name of this kind, as used in messages and in Python's
    /// `InvalidNameError.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            NameKind::ServiceName => "service name",
            NameKind::InstanceName => "instance name",
            NameKind::UserSidHash => "user sid hash",
            NameKind::EndpointToken => "endpoint token",
            NameKind::InstanceId => "instance id",
            NameKind::BackendKey => "backend key",
        }
    }
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which part of a version policy refused a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VersionRule {
    /// Below `min_version`.
    MinVersion,
    /// Not in a non-empty `version_allow_list`.
    AllowList,
}

impl VersionRule {
    /// `min_version` or `version_allow_list`: the field that refused.
    pub fn field(self) -> &'static str {
        match self {
            VersionRule::MinVersion => "min_version",
            VersionRule::AllowList => "version_allow_list",
        }
    }
}

/// A value that breaks a rule of the v1 contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A service name, instance name, hash or id with a bad shape.
    #[error("invalid {kind} {value:?}: {reason}")]
    Name {
        kind: NameKind,
        value: String,
        reason: String,
    },
    /// A version that is not `MAJOR.MINOR.PATCH[-pre]`.
    #[error("invalid version {value:?}: {reason}")]
    Version { value: String, reason: String },
    /// A version that is well formed but refused by a service's policy.
    #[error("version {version:?} of service {service_name:?} refused: {reason}")]
    VersionRefused {
        service_name: String,
        version: String,
        rule: VersionRule,
        reason: String,
    },
    /// A service definition field that breaks a rule.
    #[error("invalid service definition field {field} = {value:?}: {reason}")]
    ServiceDefinition {
        field: &'static str,
        value: String,
        reason: String,
    },
    /// A W3C trace context field that breaks the W3C grammar.
    #[error("invalid trace context field {field} = {value:?}: {reason}")]
    TraceContext {
        field: &'static str,
        value: String,
        reason: String,
    },
    /// A daemon identity or endpoint field that cannot be right.
    #[error("invalid daemon identity field {field} = {value:?}: {reason}")]
    Identity {
        field: &'static str,
        value: String,
        reason: String,
    },
}

/// A directory or file that is missing, unsafe, or could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A directory that someone else could read, write, or swap.
    #[error("insecure directory {path}: {reason}")]
    InsecureDirectory { path: PathBuf, reason: String },
    /// An operating system call failed.
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl FsError {
    pub(crate) fn io(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        FsError::Io {
            operation,
            path: path.into(),
            source,
        }
    }
}

/// Facts about this host (machine id, boot id) that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Neither machine-id file gave a usable id.
    #[error("no usable machine id in {paths:?}: {reason}")]
    MachineId { paths: Vec<PathBuf>, reason: String },
    /// The kernel's boot id could not be read.
    #[error("cannot read boot id from {path}: {reason}")]
    BootId { path: PathBuf, reason: String },
    /// The operating system's random source failed.
    #[error("operating system random source failed: {reason}")]
    Entropy { reason: String },
}

/// Bytes that do not decode into the expected message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a valid encoding of `what` at all.
    #[error("cannot decode {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
    /// A frame header or body outside the framing rules.
    #[error("bad frame: {reason}")]
    Frame { reason: String },
    /// A frame whose declared body length is over the cap; refused before any
    /// buffer is allocated.
    #[error("frame body of {length} bytes is over the {limit}-byte cap")]
    FrameTooLarge { length: u64, limit: u64 },
    /// Decoded, but a field breaks a rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

/// Failure of the backend endpoint allocator.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// The socket path would not fit `sun_path`; never truncated.
    #[error("socket path {path} is {length} bytes; a Unix socket path holds at most {limit}")]
    PathTooLong {
        path: PathBuf,
        length: usize,
        limit: usize,
    },
    /// Every attempt collided with a reserved or existing path.
    #[error("no free endpoint path after {attempts} attempts in {dir}")]
    Exhausted { attempts: u32, dir: PathBuf },
    /// An argument that cannot make a valid endpoint.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The socket directory is unsafe or unusable.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The random source failed.
    #[error(transparent)]
    Host(#[from] HostError),
}

/// Failure to save or load a `.servicedef` file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No definition file for that service.
    #[error("no service definition for {service_name:?} at {path}")]
    NotFound { service_name: String, path: PathBuf },
    /// The file's stem and the service name inside it differ.
    #[error(
        "service definition file {path} is named {stem:?} but defines service {service_name:?}"
    )]
    StemMismatch {
        path: PathBuf,
        stem: String,
        service_name: String,
    },
    /// The file belongs to someone else or others can write it.
    #[error("untrusted service definition file {path}: {reason}")]
    Untrusted { path: PathBuf, reason: String },
    /// The file is larger than any honest definition.
    #[error("service definition file {path} is {length} bytes; the limit is {limit}")]
    TooLarge {
        path: PathBuf,
        length: u64,
        limit: u64,
    },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error("{path}: {source}")]
    Decode {
        path: PathBuf,
        #[source]
        source: DecodeError,
    },
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Host(#[from] HostError),
}
