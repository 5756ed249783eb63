//! Every operating-system fact and action the product needs: host identity,
//! private directories, process facts, spawning, reaping, opening and hashing
//! the executable that will be run, and peer identity of a socket.
//!
//! This is the only module that may select code by platform
//! (`cfg(target_os)`), and the home of every OS fact the layers above
//! need. It uses the value types of [`crate::contract`] and nothing higher.
//! (The layers above still use Unix sockets and a few Unix error numbers
//! directly, through `std::os::unix`, `rustix` and `libc`; moving those
//! behind this module is the work of the macOS and Windows port.)

pub mod digest;
pub mod exe;
pub mod fs;
pub mod host;
pub mod identity_file;
pub mod keylock;
pub mod net;
pub mod proc;
pub mod reaper;
pub mod spawn;
pub mod tmp_tree;
