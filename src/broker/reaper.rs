//! Watching and reaping one spawned backend.
//!
//! Each [`ChildWatch`] owns the child's pidfd and one small thread that
//! blocks in `waitid(P_PIDFD, pidfd, WEXITED)`: the child is reaped the moment
//! it exits, so it never lingers as a zombie while the launching process
//! lives, and only that child is ever waited for. There is no `waitpid(-1)`
//! and no process-wide SIGCHLD handler, which would steal exit statuses from
//! the host program's own subprocesses.
//!
//! Signals go through the pidfd, so they can never reach a process that
//! reused the pid after the backend exited.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::process::{pidfd_send_signal, waitid, Signal, WaitId, WaitIdOptions};

use super::spawn::Spawned;

/// How a backend ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => write!(f, "signal {s}"),
        }
    }
}

#[derive(Debug)]
struct State {
    pid: u32,
    pidfd: OwnedFd,
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

impl ChildWatch {
    /// Starts watching `child`.
    pub fn start(child: Spawned) -> io::Result<ChildWatch> {
        let state = Arc::new(State {
            pid: child.pid,
            pidfd: child.pidfd,
            exit: Mutex::new(None),
            exited: Condvar::new(),
        });
        let watched = Arc::clone(&state);
        std::thread::Builder::new()
            .name(format!("rp-reap-{}", child.pid))
            .stack_size(64 * 1024)
            .spawn(move || {
                let exit = loop {
                    match waitid(WaitId::PidFd(watched.pidfd.as_fd()), WaitIdOptions::EXITED) {
                        Ok(Some(status)) => {
                            if let Some(sig) = status.terminating_signal() {
                                break Exit::Signal(sig);
                            }
                            break Exit::Code(status.exit_status().unwrap_or(-1));
                        }
                        Ok(None) => continue,
                        Err(rustix::io::Errno::INTR) => continue,
                        // ECHILD: reaped elsewhere (should not happen); report
                        // it as gone rather than hang.
                        Err(_) => break Exit::Code(-1),
                    }
                };
                *watched.exit() = Some(exit);
                watched.exited.notify_all();
            })?;
        Ok(ChildWatch { state })
    }

    pub fn pid(&self) -> u32 {
        self.state.pid
    }

    /// The child's pidfd (readable once it has exited).
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.state.pidfd.as_fd()
    }

    /// How the child ended, if it has been reaped.
    pub fn try_exit(&self) -> Option<Exit> {
        *self.state.exit()
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

    /// SIGKILL to the backend's whole process group (it is a session and
    /// group leader, so this reaches helpers it forked), then to the backend
    /// through its pidfd, and wait until reaped.
    pub fn kill(&self) -> Exit {
        // While the leader is unreaped its pid, and so its group id, cannot be
        // reused: the group signal can only reach the backend's own group.
        if self.is_alive() {
            if let Some(pgid) = rustix::process::Pid::from_raw(self.state.pid as i32) {
                let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
            }
        }
        let _ = self.signal(Signal::KILL);
        self.wait()
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; returns how it ended.
    pub fn terminate(&self, grace: Duration) -> Exit {
        let _ = self.signal(Signal::TERM);
        match self.wait_timeout(grace) {
            Some(exit) => exit,
            None => self.kill(),
        }
    }
}
