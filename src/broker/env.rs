//! The environment contract between a launcher and the backend it starts.
//!
//! The first seven names are those of the v1 contract; existing backends read
//! them. Names of this project's own carry the same prefix and are ignored by
//! backends that do not know them.

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
