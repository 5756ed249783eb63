//! The v1 contract as data: names, keys, trace context, identity, service
//! definitions, protobuf messages, framing and the environment contract.
//!
//! Everything here is a plain value with its validation and its encodings.
//! Nothing here opens a file, starts a process, touches a socket or asks the
//! host a question; the one exception is [`clock`], which reads the clock and
//! the random source (portably) for deadlines, trace ids and nonces. The
//! error enums of every layer live in [`error`], at the bottom, so that a
//! layer can carry a lower layer's error without reaching upward.

pub mod args;
pub mod clock;
pub mod env;
pub mod error;
pub mod frame;
pub mod identity;
pub mod keys;
pub mod names;
pub mod probe;
pub mod proto;
pub mod service;
pub mod stamp;
pub mod trace;
