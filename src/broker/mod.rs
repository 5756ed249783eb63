//! The broker v1 core: names, wire messages, value types, and the endpoint
//! allocator. Each submodule holds one concept of the contract.

pub mod allocator;
pub mod binary;
pub mod env;
pub mod error;
pub mod frame;
pub mod fs;
pub mod host;
pub mod identity;
pub mod keys;
pub mod launcher;
pub mod names;
pub mod pool;
pub mod probe;
pub mod proto;
pub mod reaper;
pub mod registry;
pub mod router;
pub mod server;
pub mod service;
pub mod spawn;
pub mod trace;
