//! Every operating-system fact and action the product needs: host identity,
//! private directories, process facts, spawning, reaping, opening and hashing
//! the executable that will be run, and peer identity of a socket.
//!
//! This is the only module that may depend on the platform
//! (`cfg(target_os)`); everything above it asks `sys` instead of the kernel.
//! It uses the value types of [`crate::contract`] and nothing higher.

pub mod digest;
pub mod exe;
pub mod fs;
pub mod host;
pub mod net;
pub mod proc;
pub mod reaper;
pub mod spawn;
