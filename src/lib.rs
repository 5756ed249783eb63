//! running-process: launch, verify and reuse on-demand backend daemons,
//! compatible with the running-process broker v1 contract.
//!
//! The crate is the core of the Python package `running_process`; every Python
//! class wraps one Rust type of [`broker`]. The Python bindings are built only
//! with the `python` feature (maturin turns it on).

pub mod broker;
#[doc(hidden)]
pub mod fuzzing;

#[cfg(feature = "python")]
mod python;

pub use broker::allocator::{check_sun_path, BackendEndpointAllocator, SUN_PATH_MAX};
pub use broker::error::{
    AllocError, DecodeError, FsError, HostError, NameKind, StoreError, ValidationError,
};
pub use broker::host::{boot_id, socket_dir, user_sid_hash};
pub use broker::identity::{sha256_file, DaemonProcess, Endpoint};
pub use broker::keys::{BackendKey, BrokerInstanceKey};
pub use broker::names::{
    backend_socket_name, instance_broker_socket_name, service_broker_socket_name,
    shared_broker_socket_name, validate_instance_name, validate_service_name, validate_version,
    Version,
};
pub use broker::service::{Isolation, ServiceDefinition};
pub use broker::trace::TraceContext;
