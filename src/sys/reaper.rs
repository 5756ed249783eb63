//! Watching and reaping one spawned backend.
//!
//! Each [`ChildWatch`] owns the child's pidfd and one small thread that
//! blocks in `waitid(P_PIDFD, pidfd, WEXITED | WNOWAIT)`. When the child
//! exits, the thread kills what remains of its process group (helpers the
//! backend forked; safe because the unreaped zombie still holds the group
//! id), then reaps it and runs the cleanup it was given (the launcher's
//! removes a socket file the backend could not remove itself, as after a
//! SIGKILL): it never lingers as a zombie while the launching
//! process lives, and only that child is ever waited for. There is no `waitpid(-1)`
//! and no process-wide SIGCHLD handler, which would steal exit statuses from
//! the host program's own subprocesses.
//!
//! Signals go through the pidfd, so they can never reach a process that
//! reused the pid after the backend exited.
//!
//! A backend started by another process (found through a pool manifest) is
//! watched with [`ChildWatch::adopt`]: liveness and waiting use its pidfd,
//! but it is never reaped here (its parent does that) and its exit status is
//! not ours to know ([`Exit::Unknown`]).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::process::{pidfd_send_signal, waitid, Signal, WaitId, WaitIdOptions};

use crate::sys::spawn::Spawned;

/// How a backend ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
    /// It ended, but it was not our child, so its status went to its parent.
    Unknown,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
            Exit::Unknown => f.write_str("an exit whose status belongs to its parent"),
        }
    }
}

#[derive(Debug)]
struct State {
    pid: u32,
    pidfd: OwnedFd,
    /// Whether we spawned it (and so reap it).
    own_child: bool,
    exit: Mutex<Option<Exit>>,
    exited: Condvar,
}

impl State {
    fn exit(&self) -> MutexGuard<'_, Option<Exit>> {
        self.exit.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A spawned child, reaped in the background as soon as it exits.
#[derive(Debug, Clone)]
pub struct ChildWatch {
    state: Arc<State>,
}

/// A [`ChildWatch`] that does not keep the child's pidfd open: it upgrades
/// while the child runs (its reaper holds the watch) or a handle still
/// does, and not after the child has been reaped and every handle dropped.
#[derive(Debug, Clone)]
pub struct WeakChildWatch {
    state: std::sync::Weak<State>,
}

impl WeakChildWatch {
    pub fn upgrade(&self) -> Option<ChildWatch> {
        self.state.upgrade().map(|state| ChildWatch { state })
    }
}

impl ChildWatch {
    /// Starts watching `child`. `on_reaped` runs on the watching thread
    /// right after the child is reaped, before its exit is recorded, so
    /// whoever sees the exit also sees what `on_reaped` did. If the watching
    /// thread cannot be started, the child is killed and reaped here (nobody
    /// else would reap it) and the error returned.
    pub fn start(
        child: Spawned,
        on_reaped: impl FnOnce() + Send + 'static,
    ) -> io::Result<ChildWatch> {
        let state = Arc::new(State {
            pid: child.pid,
            pidfd: child.pidfd,
            own_child: true,
            exit: Mutex::new(None),
            exited: Condvar::new(),
        });
        let watched = Arc::clone(&state);
        let started = std::thread::Builder::new()
            .name(format!("rp-reap-{}", child.pid))
            .stack_size(64 * 1024)
            .spawn(move || {
                let pidfd = watched.pidfd.as_fd();
                // First wait without reaping: while the exited backend is a
                // zombie its pid, and so its process-group id, cannot be
                // reused, which makes the group kill below safe.
                let exit = loop {
                    match waitid(
                        WaitId::PidFd(pidfd),
                        WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
                    ) {
                        Ok(Some(status)) => {
                            if let Some(sig) = status.terminating_signal() {
                                break Exit::Signal(sig);
                            }
                            break Exit::Code(status.exit_status().unwrap_or(-1));
                        }
                        Ok(None) | Err(rustix::io::Errno::INTR) => continue,
                        // ECHILD: reaped elsewhere (should not happen); report
                        // it as gone rather than hang.
                        Err(_) => break Exit::Code(-1),
                    }
                };
                // Whatever the backend left in its process group (helpers it
                // forked) goes with it.
                if let Some(pgid) = rustix::process::Pid::from_raw(watched.pid as i32) {
                    let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
                }
                while let Err(rustix::io::Errno::INTR) | Ok(None) =
                    waitid(WaitId::PidFd(pidfd), WaitIdOptions::EXITED)
                {}
                on_reaped();
                *watched.exit() = Some(exit);
                watched.exited.notify_all();
            });
        if let Err(e) = started {
            let pidfd = state.pidfd.as_fd();
            let _ = pidfd_send_signal(pidfd, Signal::KILL);
            while let Err(rustix::io::Errno::INTR) | Ok(None) =
                waitid(WaitId::PidFd(pidfd), WaitIdOptions::EXITED)
            {}
            return Err(e);
        }
        Ok(ChildWatch { state })
    }

    /// Watches a running process we did not spawn. Fails with `ESRCH` if
    /// `pid` does not exist.
    pub fn adopt(pid: u32) -> io::Result<ChildWatch> {
        let raw = rustix::process::Pid::from_raw(pid as i32)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
        let pidfd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())?;
        Ok(ChildWatch {
            state: Arc::new(State {
                pid,
                pidfd,
                own_child: false,
                exit: Mutex::new(None),
                exited: Condvar::new(),
            }),
        })
    }

    /// Polls the pidfd for the process's end, up to `timeout` (None: forever).
    fn pidfd_ended(&self, timeout: Option<Duration>) -> bool {
        crate::sys::proc::pidfd_ended(self.state.pidfd.as_fd(), timeout)
    }

    /// For an adopted process: records and returns its end if it has ended.
    fn adopted_exit(&self, timeout: Option<Duration>) -> Option<Exit> {
        if self.pidfd_ended(timeout) {
            *self.state.exit() = Some(Exit::Unknown);
            return Some(Exit::Unknown);
        }
        None
    }

    /// Whether this process spawned it (and so reaps it, and ends what it
    /// left behind when it is reaped).
    pub fn is_own_child(&self) -> bool {
        self.state.own_child
    }

    pub fn pid(&self) -> u32 {
        self.state.pid
    }

    /// A reference that does not keep the pidfd open.
    pub fn downgrade(&self) -> WeakChildWatch {
        WeakChildWatch {
            state: Arc::downgrade(&self.state),
        }
    }

    /// The child's pidfd (readable once it has exited).
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.state.pidfd.as_fd()
    }

    /// How the child ended, if it has been reaped (or, adopted, has ended).
    pub fn try_exit(&self) -> Option<Exit> {
        let exit = *self.state.exit();
        if exit.is_none() && !self.state.own_child {
            return self.adopted_exit(Some(Duration::ZERO));
        }
        exit
    }

    /// Whether the child is still running (not exited, not reaped).
    pub fn is_alive(&self) -> bool {
        if self.try_exit().is_some() {
            return false;
        }
        // The pidfd polls readable as soon as the process exits, before the
        // reaper thread has recorded it.
        let mut fds = [rustix::event::PollFd::new(
            &self.state.pidfd,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&rustix::event::Timespec::default())) {
            Ok(n) => n == 0,
            Err(_) => true,
        }
    }

    /// Waits up to `timeout` for the child to exit and be reaped.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Exit> {
        if !self.state.own_child {
            return self.adopted_exit(Some(timeout));
        }
        let Some(deadline) = Instant::now().checked_add(timeout) else {
            return Some(self.wait());
        };
        let mut exit = self.state.exit();
        while exit.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            exit = self
                .state
                .exited
                .wait_timeout(exit, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *exit
    }

    /// Waits for the child to exit and be reaped.
    pub fn wait(&self) -> Exit {
        if !self.state.own_child {
            return self.adopted_exit(None).unwrap_or(Exit::Unknown);
        }
        let mut exit = self.state.exit();
        loop {
            if let Some(e) = *exit {
                return e;
            }
            exit = self
                .state
                .exited
                .wait(exit)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Sends `signal` through the pidfd. A child that already exited is not
    /// an error.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        match pidfd_send_signal(&self.state.pidfd, signal) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// SIGKILL through the pidfd, and wait until reaped. For our own child
    /// the reaper then kills what is left of its process group (it is a
    /// session and group leader, so that is every helper it forked and did
    /// not move elsewhere); an adopted process is reaped by its parent, so
    /// only the pidfd is safe to signal.
    pub fn kill(&self) -> Exit {
        let _ = self.signal(Signal::KILL);
        self.wait()
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; returns how it ended and
    /// whether it ended within `grace` of the SIGTERM (true) or needed the
    /// SIGKILL (false): for an adopted process, whose status goes to its own
    /// parent, that is all there is to tell a clean stop from a forced one.
    pub fn terminate_within(&self, grace: Duration) -> (Exit, bool) {
        let _ = self.signal(Signal::TERM);
        match self.wait_timeout(grace) {
            Some(exit) => (exit, true),
            None => (self.kill(), false),
        }
    }
}
