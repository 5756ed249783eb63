//! Adoption: verifying a backend some other process launched (its identity
//! read from a pool manifest) as a launch would, and handing out a handle.

use std::time::Duration;

use std::path::Path;

use super::error::{mismatch, LaunchError};
use super::fixed::check_fixed_endpoint;
use super::handle::{BackendHandle, Verified};
use super::policy::check_policy;
use super::start::log_file_name;
use super::verify::ExeProof;
use super::verify::{connect_and_verify, started_for};
use super::CommandBackendLauncher;
use crate::contract::identity::DaemonProcess;
use crate::contract::keys::BackendKey;
use crate::contract::probe::compare_hashes;
use crate::contract::service::ServiceDefinition;
use crate::contract::stamp::FileStamp;
use crate::contract::trace::TraceContext;
use crate::sys::digest::{remember_digest, Digests, Need};
use crate::sys::exe::open_backend_recorded;
use crate::sys::reaper::ChildWatch;

impl CommandBackendLauncher {
    /// [`CommandBackendLauncher::adopt`] of a pool manifest's record: the
    /// endpoint must be one of this launcher's (its namespace the key's
    /// instance), and with the stamp the binary had when
    /// the launching process hashed it (recorded in the pool manifest next to
    /// the digest). While the binary's stamp is still `recorded_stamp`, the
    /// recorded digest stands in for hashing it again, for this verification
    /// only; the process-wide digest cache learns it only once the backend
    /// has fully verified (the digest it reports in the probe, its own hash
    /// of its executable or the one its launcher computed for this very
    /// stamp, agrees). A wrong recorded digest thus fails this adoption and
    /// nothing else: later launches hash the binary themselves.
    pub fn adopt_recorded(
        &self,
        key: &BackendKey,
        sd: &ServiceDefinition,
        daemon: &DaemonProcess,
        recorded_stamp: Option<FileStamp>,
        trace: &TraceContext,
        timeout: Duration,
    ) -> Result<BackendHandle, LaunchError> {
        if daemon.ipc_endpoint.namespace_id != key.instance().id() {
            return Err(mismatch(
                "ipc_endpoint.namespace_id",
                key.instance().id(),
                &daemon.ipc_endpoint.namespace_id,
            ));
        }
        self.adopt_checked(
            key,
            sd,
            daemon,
            recorded_stamp,
            trace,
            timeout,
            Adopting::Recorded,
        )
    }

    /// A handle on a daemon that another process started, described by its
    /// identity (an identity file, a [`DaemonProcess`] from anywhere), after
    /// the whole verification of a launch: the key and definition agree and
    /// the version is admitted, the daemon's executable is the definition's
    /// binary (allow-list rules, and every digest the identity carries
    /// recomputed), the process runs that very file, its boot is ours, and
    /// the socket's peer credentials and the nonce probe prove the identity.
    ///
    /// Its endpoint is either one of this launcher's (the namespace is the
    /// key's instance and the socket directory passes the launch's checks)
    /// or a fixed endpoint, checked as [`Self::launch_with`] checks one.
    /// An identity of another boot or of a pid that has ended is
    /// [`LaunchError::Stale`]: never trusted, nothing signalled.
    ///
    /// The daemon is not our child: it is watched through a pidfd; the
    /// handle's `shutdown` sends it SIGTERM (then SIGKILL after the grace)
    /// through that pidfd, so a reused pid is never signalled.
    pub fn adopt(
        &self,
        key: &BackendKey,
        sd: &ServiceDefinition,
        daemon: &DaemonProcess,
        trace: &TraceContext,
        timeout: Duration,
    ) -> Result<BackendHandle, LaunchError> {
        let fixed = daemon.ipc_endpoint.namespace_id != key.instance().id()
            || Path::new(&daemon.ipc_endpoint.path).parent() != Some(self.socket_dir.as_path());
        if fixed {
            check_fixed_endpoint(&daemon.ipc_endpoint)?;
        }
        let adopting = if fixed {
            Adopting::Fixed
        } else {
            Adopting::Identity
        };
        self.adopt_checked(key, sd, daemon, None, trace, timeout, adopting)
    }

    #[allow(clippy::too_many_arguments)]
    fn adopt_checked(
        &self,
        key: &BackendKey,
        sd: &ServiceDefinition,
        daemon: &DaemonProcess,
        recorded_stamp: Option<FileStamp>,
        trace: &TraceContext,
        timeout: Duration,
        adopting: Adopting,
    ) -> Result<BackendHandle, LaunchError> {
        let fixed_endpoint = adopting == Adopting::Fixed;
        check_policy(key, sd)?;
        if daemon.boot_id != self.boot_id {
            return Err(LaunchError::Stale {
                field: "boot_id",
                reason: format!(
                    "{:?} is another boot's (this one is {:?})",
                    daemon.boot_id, self.boot_id
                ),
            });
        }
        let watch = ChildWatch::adopt(daemon.pid).map_err(|e| LaunchError::Stale {
            field: "pid",
            reason: format!("{} has ended ({e})", daemon.pid),
        })?;
        // The interpreter of a `#!/usr/bin/env NAME` script is found where
        // the launch found it: on the PATH of the definition's policy.
        let path_var = super::environ::backend_path(sd);
        // Every digest the record claims is checked against the binary: a
        // BLAKE3-only record needs no SHA-256.
        let need = match daemon.real_sha256() {
            Some(_) => Need::Both,
            None => Need::Blake3,
        };
        let recorded = match (recorded_stamp, daemon.exe_blake3) {
            (Some(stamp), Some(blake3)) => Some((
                stamp,
                Digests {
                    blake3,
                    sha256: daemon.real_sha256(),
                },
            )),
            _ => None,
        };
        let binary = open_backend_recorded(
            &sd.binary_path,
            &sd.per_version_binary_dir,
            path_var.as_deref(),
            recorded,
            need,
        )?;
        compare_hashes(binary.digests.sha256, Some(binary.digests.blake3), daemon)?;
        let exe_path = binary.canonical.to_string_lossy();
        if daemon.exe_path != exe_path {
            return Err(mismatch("exe_path", exe_path, &daemon.exe_path));
        }
        let proof = ExeProof::of(&binary);
        let attested = self.attested.still_holds(
            key,
            daemon,
            &watch,
            &proof,
            self.euid,
            self.options.full_probe_interval,
            timeout,
        );
        if !attested {
            if adopting == Adopting::Recorded {
                // A record of a backend this launcher started: the process
                // must have been started for this very key (a record forged
                // to name another key's backend is refused).
                started_for(daemon.pid, key, &daemon.ipc_endpoint.path).map_err(|e| {
                    mismatch(
                        "environment",
                        format!("started for {key} at {}", daemon.ipc_endpoint.path),
                        e.to_string(),
                    )
                })?;
            }
            connect_and_verify(&watch, daemon, &proof, self.euid, trace, timeout)?;
            self.attested
                .remember(key, daemon, &watch, self.options.full_probe_interval);
        }
        if recorded_stamp == Some(binary.stamp) {
            // The backend runs this very inode (the proof checked it) and
            // reported the recorded digest, computed by hashing that file
            // (by itself or by its launcher, for this stamp): it is proven.
            remember_digest(binary.stamp, binary.digests);
        }
        // The instance's socket directory must pass the same checks as for a
        // launch. The endpoint is not reserved in the allocator, though: its
        // socket file is on disk while the backend lives, which `allocate`
        // already skips, and a reservation could only be released by the
        // process that launched the backend (the one that reaps it), so a
        // long-lived process adopting backends that end elsewhere would
        // accumulate them.
        if !fixed_endpoint {
            self.allocator(key.instance())?;
        }
        let log_path = self.log_dir.join(log_file_name(key, &daemon.ipc_endpoint));
        let process = Verified {
            watch,
            proof,
            euid: self.euid,
        };
        Ok(BackendHandle::verified(
            key,
            daemon.clone(),
            log_path,
            process,
            None,
        ))
    }

    /// Applies the rules a request must meet before anything is spawned or
    /// adopted (the definition is valid and agrees with the key, the version
    /// is admitted), without touching the binary or the disk.
    pub fn check_request(
        &self,
        key: &BackendKey,
        sd: &ServiceDefinition,
    ) -> Result<(), LaunchError> {
        check_policy(key, sd)
    }

    /// How many endpoint paths this launcher's allocators hold reserved
    /// (one per launched backend not yet seen to end).
    pub fn reserved_endpoints(&self) -> usize {
        self.allocators
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|a| a.reserved_count())
            .sum()
    }
}

/// What is being adopted, which decides the checks beyond a launch's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adopting {
    /// A pool record of a backend this product launched: it must have been
    /// started for the key (see [`started_for`]).
    Recorded,
    /// A daemon described by an identity, at one of this launcher's
    /// endpoints.
    Identity,
    /// A daemon at a fixed endpoint.
    Fixed,
}
