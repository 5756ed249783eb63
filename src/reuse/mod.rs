//! Reuse of verified backends: the in-process [`registry`] and Hello
//! [`router`] (coalesced launches, admission budget, LRU eviction), and the
//! cross-process [`pool`] (one backend per key for all of a user's
//! processes).
//!
//! Reuse never trusts a record: a registry entry is handed out only while its
//! process is watched alive, and a pool manifest only after the backend it
//! names has been verified like a launch.

pub mod pool;
pub mod registry;
pub mod router;

#[cfg(any(test, feature = "bench"))]
pub(crate) mod fake;
