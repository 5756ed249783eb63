//! Wire messages of the v1 contract (package `running_process.broker.v1`),
//! written out by hand with `prost` derives so that building needs no
//! `protoc`. Field numbers are those of the contract; `tests/golden` pins them.
//!
//! These structs are the wire shape only. The validated value types that the
//! rest of the crate and Python use live in their own modules and convert to
//! and from these at the boundary.

use std::collections::BTreeMap;

/// `running_process.broker.v1.BrokerIsolation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum BrokerIsolation {
    PrivateBroker = 0,
    SharedBroker = 1,
    ExplicitInstance = 2,
}

/// `running_process.broker.v1.ServiceDefinition`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ServiceDefinitionMsg {
    #[prost(string, tag = "1")]
    pub service_name: String,
    #[prost(string, tag = "2")]
    pub binary_path: String,
    #[prost(enumeration = "BrokerIsolation", tag = "3")]
    pub isolation: i32,
    #[prost(string, tag = "4")]
    pub explicit_instance: String,
    #[prost(string, tag = "5")]
    pub per_version_binary_dir: String,
    #[prost(string, tag = "6")]
    pub min_version: String,
    #[prost(string, repeated, tag = "7")]
    pub version_allow_list: Vec<String>,
    /// A B-tree map so that encoding is deterministic (sorted by key).
    #[prost(btree_map = "string, string", tag = "8")]
    pub labels: BTreeMap<String, String>,
    /// This project's addition: the backend's command-line argument
    /// templates (see [`crate::contract::args`]). Far above the contract's
    /// numbers; peers that do not know it ignore it, as protobuf ignores
    /// unknown fields.
    #[prost(string, repeated, tag = "1001")]
    pub args: Vec<String>,
    /// This project's addition: who binds the endpoint (0 the launcher,
    /// which hands the listener over; 1 the backend itself). See
    /// [`crate::contract::service::Listener`].
    #[prost(int32, tag = "1002")]
    pub listener: i32,
    /// This project's addition: the environment policy (0 inherit, 1 login
    /// baseline, 2 clean). See [`crate::contract::service::EnvPolicy`].
    #[prost(int32, tag = "1003")]
    pub env_policy: i32,
    /// This project's addition: variables taken from the caller under the
    /// baseline and clean policies.
    #[prost(string, repeated, tag = "1004")]
    pub env_allow: Vec<String>,
    /// This project's addition: variables set for the backend (sorted, so
    /// encoding stays deterministic).
    #[prost(btree_map = "string, string", tag = "1005")]
    pub env_set: BTreeMap<String, String>,
}

/// `running_process.broker.v1.Endpoint`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EndpointMsg {
    #[prost(string, tag = "1")]
    pub namespace_id: String,
    #[prost(string, tag = "2")]
    pub path: String,
}

/// `running_process.broker.v1.DaemonProcess`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DaemonProcessMsg {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    #[prost(string, tag = "2")]
    pub exe_path: String,
    #[prost(bytes = "vec", tag = "3")]
    pub exe_sha256: Vec<u8>,
    #[prost(message, optional, tag = "4")]
    pub ipc_endpoint: Option<EndpointMsg>,
    #[prost(uint64, tag = "5")]
    pub started_at_unix_ms: u64,
    #[prost(string, tag = "6")]
    pub boot_id: String,
    #[prost(uint32, optional, tag = "7")]
    pub idle_timeout_secs: Option<u32>,
    /// The current generation's executable hash: its algorithm (only
    /// `"blake3"` is defined) and digest. Field 3 is then the legacy SHA-256
    /// slot, appended after these in probe answers.
    #[prost(string, tag = "8")]
    pub exe_hash_algorithm: String,
    #[prost(bytes = "vec", tag = "9")]
    pub exe_hash: Vec<u8>,
}

/// `Frame.kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum FrameKind {
    Request = 0,
    Response = 1,
    Event = 2,
    Cancel = 3,
}

/// `Frame.payload_encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PayloadEncoding {
    None = 0,
    Zstd = 1,
    Snappy = 2,
    Lz4 = 3,
}

/// `running_process.broker.v1.Frame`, the body of every framed message.
/// Field numbers 10 to 15 are reserved by the contract.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FrameMsg {
    #[prost(uint32, tag = "1")]
    pub envelope_version: u32,
    #[prost(enumeration = "FrameKind", tag = "2")]
    pub kind: i32,
    #[prost(uint32, tag = "3")]
    pub payload_protocol: u32,
    #[prost(bytes = "vec", tag = "4")]
    pub payload: Vec<u8>,
    #[prost(uint64, tag = "5")]
    pub request_id: u64,
    #[prost(enumeration = "PayloadEncoding", tag = "6")]
    pub payload_encoding: i32,
    #[prost(uint64, tag = "7")]
    pub deadline_unix_ms: u64,
    #[prost(string, tag = "8")]
    pub traceparent: String,
    #[prost(string, tag = "9")]
    pub tracestate: String,
}

/// Payload protocol ids of the contract.
pub mod payload_protocol {
    /// Broker control (Hello).
    pub const BROKER_CONTROL: u32 = 0x0000;
    /// Admin requests.
    pub const ADMIN: u32 = 0xAD01;
    /// Backend identity probe.
    pub const IDENTITY_PROBE: u32 = 0xB232;
    /// Handle hand-off.
    pub const HANDOFF: u32 = 0xD0FF;
    /// First id of the registered-consumer range.
    pub const CONSUMER_FIRST: u32 = 0x7000;
    /// Last id of the registered-consumer range.
    pub const CONSUMER_LAST: u32 = 0x7EFF;
    /// First id of the private-use range.
    pub const PRIVATE_FIRST: u32 = 0xF000;
    /// Last id of the private-use range.
    pub const PRIVATE_LAST: u32 = 0xFFFF;
}
