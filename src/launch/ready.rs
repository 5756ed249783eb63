//! Step 5 of a launch: waiting until the backend accepts, paced by the time
//! elapsed and woken at once by the child's exit, then handing the
//! connection to verification.

use std::io::{self};
use std::path::Path;
use std::time::{Duration, Instant};

use super::error::LaunchError;
use super::handle::log_tail;
use super::verify::{connect_failed, verify_connected, ExeProof};
use crate::contract::clock;
use crate::contract::identity::DaemonProcess;
use crate::contract::trace::TraceContext;
use crate::launch::verify::ProbeError;
use crate::sys::net::connect_until;
use crate::sys::reaper::ChildWatch;

/// Shortest and longest pause between connect attempts while a backend
/// starts (see [`ready_pause`]).
pub(super) const READY_MIN_PAUSE: Duration = Duration::from_micros(20);
pub(super) const READY_MAX_PAUSE: Duration = Duration::from_millis(2);
/// What one connect attempt costs the starting backend, in seconds: on a
/// small machine each wake-up of ours takes CPU time and cache from it
/// (measured: 175 attempts 200 µs apart slowed a 35 ms Python backend start
/// by 2 ms on 2 cores).
pub(super) const READY_WAKE_COST: f64 = 11e-6;

/// The pause before the next connect attempt, `elapsed` after the spawn.
/// Each attempt costs the backend [`READY_WAKE_COST`]; each pause may
/// oversleep the moment the backend binds by up to its length. For a start
/// time `t` the sum of both is smallest with pauses of
/// `sqrt(2 * READY_WAKE_COST * t)`, and the time elapsed so far is the best
/// guess of `t`: about 100 µs half a millisecond in (a native backend), 0.9
/// ms 35 ms in (a Python one). (Waiting on an inotify watch of the socket
/// directory instead is no faster and costs a descriptor whose close waits
/// for an RCU grace period, several milliseconds.)
pub(super) fn ready_pause(elapsed: Duration) -> Duration {
    let pace = (2.0 * READY_WAKE_COST * elapsed.as_secs_f64()).sqrt();
    Duration::from_secs_f64(pace).clamp(READY_MIN_PAUSE, READY_MAX_PAUSE)
}

/// How long a failed probe waits for the child's exit to show on its pidfd:
/// a child that dies closes its sockets a moment before it becomes a
/// zombie, so a probe cut short by that death may fail first. Only a failed
/// launch waits, and only while the child lives on.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// Waits until the backend accepts, then verifies it; fails at once if the
/// child exits first.
///
/// With `launcher_bound` (the endpoint was bound here and its listener
/// passed to the child) there is nothing to wait for: the first connect
/// succeeds and waits in the backlog, and the probe's answer is the
/// readiness signal. The child's death closes the last copy of the
/// listener, which cuts the probe short at once.
#[allow(clippy::too_many_arguments)]
pub(super) fn wait_ready_and_verify(
    watch: &ChildWatch,
    expected: &DaemonProcess,
    proof: &ExeProof,
    euid: u32,
    trace: &TraceContext,
    ready_timeout: Duration,
    log_path: &Path,
    launcher_bound: bool,
) -> Result<DaemonProcess, LaunchError> {
    let started = Instant::now();
    let deadline = clock::deadline_after(ready_timeout);
    let path = Path::new(&expected.ipc_endpoint.path);
    loop {
        match connect_until(path, deadline) {
            Ok(stream) => {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                return verify_connected(
                    stream,
                    watch,
                    expected,
                    proof,
                    euid,
                    trace,
                    left,
                    launcher_bound,
                )
                .map_err(|e| {
                    // The pidfd tells that the child ended; its status
                    // follows from the reaper.
                    let cut_short = matches!(
                        e,
                        LaunchError::Probe(ProbeError::Closed { .. } | ProbeError::Io { .. })
                    );
                    if cut_short {
                        crate::sys::proc::pidfd_ended(watch.pidfd(), Some(EXIT_GRACE));
                    }
                    let ended = (!watch.is_alive()).then(|| watch.wait());
                    match (e, ended) {
                        // A probe cut short by the child's death is an early exit.
                        (LaunchError::Probe(_), Some(exit)) => LaunchError::Exited {
                            pid: expected.pid,
                            exit,
                            log_tail: log_tail(log_path),
                        },
                        (LaunchError::Probe(ProbeError::Timeout { .. }), None) => {
                            LaunchError::NotReady {
                                pid: expected.pid,
                                timeout: ready_timeout,
                                log_tail: log_tail(log_path),
                            }
                        }
                        (e, _) => e,
                    }
                });
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound
                        | io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::TimedOut
                ) =>
            {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(LaunchError::NotReady {
                        pid: expected.pid,
                        timeout: ready_timeout,
                        log_tail: log_tail(log_path),
                    });
                }
                // Sleep on the pidfd: an exit wakes us at once.
                let wait = ready_pause(started.elapsed()).min(left);
                crate::sys::proc::pidfd_ended(watch.pidfd(), Some(wait));
            }
            Err(e) => return Err(connect_failed(e)),
        }
        if !watch.is_alive() {
            let exit = watch.wait();
            return Err(LaunchError::Exited {
                pid: expected.pid,
                exit,
                log_tail: log_tail(log_path),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn ready_pauses_grow_with_the_square_root_of_the_time_elapsed() {
        let pause = |us: u64| ready_pause(Duration::from_micros(us));
        assert_eq!(pause(0), READY_MIN_PAUSE);
        let native = pause(500);
        assert!(native > Duration::from_micros(90) && native < Duration::from_micros(120));
        let python = pause(35_000);
        assert!(python > Duration::from_micros(800) && python < Duration::from_micros(1000));
        // Four times the time elapsed, twice the pause, up to the cap.
        let ratio = pause(40_000).as_secs_f64() / pause(10_000).as_secs_f64();
        assert!((ratio - 2.0).abs() < 0.01, "{ratio}");
        assert_eq!(pause(60_000_000), READY_MAX_PAUSE);
        let mut last = Duration::ZERO;
        for us in (0..400_000).step_by(997) {
            let p = pause(us);
            assert!(p >= last && (READY_MIN_PAUSE..=READY_MAX_PAUSE).contains(&p));
            last = p;
        }
    }
}
