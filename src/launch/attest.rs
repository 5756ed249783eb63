//! Kernel-attested re-verification: how a process re-adopts a backend it
//! has already proven with the full nonce probe, without the probe's round
//! trip.
//!
//! Once a backend has passed the whole verification in this process (a
//! launch, or an adoption with the probe), later adoptions of the same
//! identity within [`LaunchOptions::full_probe_interval`] check only what the
//! kernel attests, each read after the pidfd that pins the process:
//!
//! - `/proc/<pid>/stat`: the start time recorded at the full verification
//!   (so the pid names the same process) and a state that is neither
//!   stopped, traced nor ended (a SIGSTOPped backend would pass every other
//!   check but answers nobody: it always gets the full probe, which then
//!   times out);
//! - `/proc/<pid>/exe` and the stamp of the hashed file ([`ExeProof`]);
//! - a connection to the endpoint whose peer credentials, recorded by the
//!   kernel when the listener called `listen`, are the backend's pid and our
//!   uid. The connection is closed without a byte sent; the SDK drops such
//!   a connection without handing it to the application.
//!
//! Anything else (no full verification yet in this process, the interval
//! passed, any check failing) takes the full path. What the fast path does
//! not see is a backend that is alive, listening and unchanged but hung:
//! the interval bounds how long that goes unnoticed.
//!
//! [`LaunchOptions::full_probe_interval`]: super::LaunchOptions::full_probe_interval

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::verify::ExeProof;
use crate::contract::clock;
use crate::contract::identity::DaemonProcess;
use crate::contract::keys::BackendKey;
use crate::sys::net::{connect_until, peer_credentials};
use crate::sys::proc;
use crate::sys::reaper::ChildWatch;

/// Backends fully verified by this process, by endpoint path.
#[derive(Default)]
pub(super) struct Attested {
    proven: Mutex<HashMap<String, Proven>>,
}

struct Proven {
    /// The key the backend was proven for: a proof never serves another
    /// key (a manifest forged to name this backend under another key).
    key: BackendKey,
    daemon: DaemonProcess,
    start_ticks: u64,
    at: Instant,
}

/// Most backends remembered; the oldest proofs are forgotten first.
const MAX_PROVEN: usize = 4096;

impl Attested {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Proven>> {
        self.proven.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `daemon` (the process `watch` pins) has just passed the full
    /// verification.
    pub(super) fn remember(
        &self,
        key: &BackendKey,
        daemon: &DaemonProcess,
        watch: &ChildWatch,
        interval: Duration,
    ) {
        if interval.is_zero() {
            return;
        }
        let Ok(stat) = proc::stat(daemon.pid) else {
            return;
        };
        // Read under the pidfd: if the process still runs, the start time
        // is its own.
        if !watch.is_alive() {
            return;
        }
        let mut map = self.map();
        // A proof older than the interval is never used again.
        map.retain(|_, p| p.at.elapsed() < interval);
        if map.len() >= MAX_PROVEN {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, p)| p.at)
                .map(|(path, _)| path.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            daemon.ipc_endpoint.path.clone(),
            Proven {
                key: key.clone(),
                daemon: daemon.clone(),
                start_ticks: stat.start_ticks,
                at: Instant::now(),
            },
        );
    }

    /// Forgets whatever was proven at `daemon`'s endpoint.
    pub(super) fn forget(&self, daemon: &DaemonProcess) {
        self.forget_endpoint(&daemon.ipc_endpoint.path);
    }

    /// Forgets whatever was proven at the endpoint `path` (its backend has
    /// ended).
    pub(super) fn forget_endpoint(&self, path: &str) {
        self.map().remove(path);
    }

    /// Whether `daemon`, proven in full within `interval`, still is what the
    /// kernel says (see the module documentation). `false` means "take the
    /// full path", not "refused".
    #[allow(clippy::too_many_arguments)]
    pub(super) fn still_holds(
        &self,
        key: &BackendKey,
        daemon: &DaemonProcess,
        watch: &ChildWatch,
        proof: &ExeProof,
        euid: u32,
        interval: Duration,
        timeout: Duration,
    ) -> bool {
        let start_ticks = {
            let map = self.map();
            match map.get(&daemon.ipc_endpoint.path) {
                Some(p) if p.key == *key && p.daemon == *daemon && p.at.elapsed() < interval => {
                    p.start_ticks
                }
                _ => return false,
            }
        };
        let holds = kernel_attests(daemon, watch, proof, euid, start_ticks, timeout);
        if !holds {
            self.forget(daemon);
        }
        holds
    }
}

fn kernel_attests(
    daemon: &DaemonProcess,
    watch: &ChildWatch,
    proof: &ExeProof,
    euid: u32,
    start_ticks: u64,
    timeout: Duration,
) -> bool {
    let Ok(stat) = proc::stat(daemon.pid) else {
        return false;
    };
    if stat.start_ticks != start_ticks || matches!(stat.state, b'T' | b't') || stat.ended() {
        return false;
    }
    if proof.check(daemon.pid).is_err() {
        return false;
    }
    let Ok(stream) = connect_until(
        Path::new(&daemon.ipc_endpoint.path),
        clock::deadline_after(timeout),
    ) else {
        return false;
    };
    let peer = peer_credentials(&stream);
    drop(stream);
    peer.is_ok_and(|peer| peer == (daemon.pid, euid)) && watch.is_alive()
}
