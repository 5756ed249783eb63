//! running-process: launch, verify and reuse on-demand backend daemons,
//! compatible with the running-process broker v1 contract.
//!
//! The crate is the core of the Python package `running_process`; every Python
//! class wraps one Rust type re-exported here. The Python bindings are built
//! only with the `python` feature (maturin turns it on).
//!
//! # Layout
//!
//! The modules follow the launch flow, each layer using only the ones below
//! it:
//!
//! - `contract`: the v1 contract as data (names, keys, trace context,
//!   identity, service definitions, protobuf messages, framing, the probe's
//!   messages, the environment contract). No I/O.
//! - `sys`: every operating-system fact and action (host identity, private
//!   directories, process facts, spawn, reaping, the hashed executable,
//!   sockets and peer credentials); the only place that selects code by
//!   platform.
//! - `store`: `.servicedef` files.
//! - `launch`: the verified launch as named steps (policy, endpoint, spawn,
//!   readiness, verification) and its handle.
//! - `reuse`: registry and router (one process), pool (all of a user's
//!   processes).
//! - `sdk`: the backend side (configuration from the environment, binding,
//!   probe classification, the accept loop, signals).
//! - `python` (feature `python`): the bindings, nothing but conversions.
//!
//! Only what is re-exported below is public API; the modules themselves are
//! private, so a file can move without breaking a user.

mod contract;
mod launch;
mod reuse;
mod sdk;
mod store;
mod sys;

#[doc(hidden)]
pub mod fuzzing;

#[cfg(feature = "python")]
mod python;

pub use contract::args::{BUILTIN_PLACEHOLDERS, MAX_ARGS, MAX_ARG_LEN};
pub use contract::error::{
    AllocError, DecodeError, FsError, HostError, NameKind, StoreError, ValidationError, VersionRule,
};
pub use contract::identity::{DaemonProcess, Endpoint, HashAlgorithm, JsonForm};
pub use contract::keys::{BackendKey, BrokerInstanceKey};
pub use contract::names::{
    backend_socket_name, check_sun_path, instance_broker_socket_name, service_broker_socket_name,
    shared_broker_socket_name, validate_instance_name, validate_service_name, validate_version,
    Version, BACKEND_SOCKET_NAME_LEN, SUN_PATH_MAX,
};
pub use contract::service::{
    EnvPolicy, Isolation, Listener, ServiceDefinition, MAX_ALLOW_LIST, MAX_LABELS,
    MAX_SERVICEDEF_BYTES,
};
pub use contract::trace::TraceContext;
pub use launch::endpoint::BackendEndpointAllocator;
pub use launch::{
    BackendHandle, BackendLauncher, CommandBackendLauncher, LaunchError, LaunchOptions,
    LaunchRequest, DEFAULT_IDLE_TIMEOUT_SECS, DEFAULT_READY_TIMEOUT,
};
pub use reuse::pool::{BackendPool, GcReport, PoolEntry, PoolError};
pub use reuse::registry::{BackendRegistry, RegistryEntry};
pub use reuse::router::{
    Catalog, ErrorCode, HelloRouter, ReverifyPolicy, RouteOutcome, RouterOptions,
};
pub use sdk::{
    BackendServer, Connection, ServerConfig, ServerError, ShutdownReason, DEFAULT_CLASSIFY_WINDOW,
    MAX_PROBE_REQUEST,
};
pub use store::{inspect_def_dir, service_def_dir};
pub use sys::digest::{digests_of_file, sha256_file, Digests, Need};
pub use sys::exe::BinaryError;
pub use sys::fs::inspect_private_dir;
pub use sys::host::{boot_id, socket_dir, user_sid_hash};
pub use sys::identity_file::{
    read_identity_file, read_identity_file_tolerant, remove_identity_file_of, write_identity_file,
    IdentityFileError, MAX_IDENTITY_FILE_BYTES,
};
pub use sys::reaper::Exit;

/// The environment contract between a launcher and its backend.
pub mod env {
    pub use crate::contract::env::{
        ENV_BACKEND_NAMESPACE, ENV_BACKEND_PIPE, ENV_EXE_DIGEST, ENV_IDLE_TIMEOUT_SECS,
        ENV_INSTANCE, ENV_LISTENER_FD, ENV_LISTEN_FDS, ENV_LISTEN_PID, ENV_OWNED_BIND,
        ENV_SERVICE_DEF_DIR, ENV_SERVICE_NAME, ENV_SERVICE_VERSION, ENV_SETTLE_MS, ENV_TRACEPARENT,
        ENV_TRACESTATE, V1_ENV_NAMES,
    };
}

/// The v1 wire format: framing, the protobuf messages, and the identity
/// probe (its messages, and one probe over a connected socket).
pub mod wire {
    pub use crate::contract::frame::*;
    pub use crate::contract::probe::*;
    pub use crate::contract::proto::*;
    pub use crate::launch::verify::{probe_stream, read_frame, MIN_TIMEOUT};
}

/// What the benchmark harness measures below the public API.
#[doc(hidden)]
pub mod bench_support {
    pub use crate::contract::env::format_exe_digest;
    pub use crate::contract::stamp::FileStamp;
    #[cfg(feature = "bench")]
    pub use crate::reuse::fake::{handle as fake_handle, FakeLauncher};
    pub use crate::sys::digest::cached_digests;
}
