//! Telling the recorded backend apart from any later process that reuses its
//! pid, before a signal or a verdict of "alive" or "gone".
//!
//! A manifest records, with the pid and boot id, the process's start time,
//! owner and executable stamp ([`ProcessMark`]). Proof that a pid still names
//! the recorded backend ([`prove_recorded`]) is: same boot; a pidfd opened
//! first; the mark read again for the pid and equal; the environment the
//! process was started with naming the key and the recorded endpoint; and
//! the pidfd still showing it running, so the reads described it. Anything
//! short of that is a [`NotProven`], and the process is never signalled.

use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::contract::error::HostError;
use crate::contract::identity::DaemonProcess;
use crate::contract::keys::BackendKey;
use crate::contract::stamp::FileStamp;
use crate::sys::host;
use crate::sys::proc::{self, Pidfd};

/// What tells the recorded backend apart from any later process that reuses
/// its pid: the start time (clock ticks after boot, field 22 of
/// `/proc/<pid>/stat`), meaningful together with the manifest's boot id; the
/// effective uid; and the stamp of `/proc/<pid>/exe` (the binary, or a
/// script's interpreter) when it could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessMark {
    pub start_ticks: u64,
    pub uid: u32,
    #[serde(default)]
    pub exe: Option<FileStamp>,
}

/// Why a recorded process was not killed: it is not proven to be the
/// recorded backend, or (proven) the signal failed.
#[derive(Debug, thiserror::Error)]
pub enum NotProven {
    #[error("the manifest records no start time (older format)")]
    NoMark,
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("it was recorded on boot {recorded}")]
    OtherBoot { recorded: String },
    #[error("it was recorded for uid {recorded}, not {euid}")]
    OtherOwner { recorded: u32, euid: u32 },
    #[error("no such process ({0})")]
    NoProcess(io::Error),
    #[error("/proc unreadable: {0}")]
    Unreadable(io::Error),
    #[error(
        "it started at tick {now}, the recorded process at tick {recorded}: the pid was reused"
    )]
    Reused { now: u64, recorded: u64 },
    #[error("it runs as uid {now}, the recorded process as uid {recorded}")]
    Uid { now: u32, recorded: u32 },
    #[error("its executable is not the recorded one")]
    Exe,
    #[error("its environment is unreadable: {0}")]
    Environment(io::Error),
    #[error("it was not started for {key} at {endpoint} ({name} is {found})")]
    StartedForOther {
        key: String,
        endpoint: String,
        name: &'static str,
        found: String,
    },
    #[error("it has ended")]
    Ended,
    /// Proven, but the signal could not be sent.
    #[error("SIGKILL failed: {0}")]
    Signal(io::Error),
}

impl ProcessMark {
    /// Reads the mark of `pid`. The caller must make sure the pid named the
    /// intended process for the whole read (a pidfd that has not signalled
    /// an exit afterwards, or an unreaped child).
    pub fn read(pid: u32) -> io::Result<ProcessMark> {
        Ok(ProcessMark {
            start_ticks: proc::stat(pid)?.start_ticks,
            uid: proc::effective_uid(pid)?,
            exe: proc::exe_stamp(pid).ok(),
        })
    }

    /// Why `now` (read for the same pid later) is not the process this mark
    /// recorded, or None if it is.
    pub fn differs(&self, now: &ProcessMark) -> Option<NotProven> {
        if now.start_ticks != self.start_ticks {
            return Some(NotProven::Reused {
                now: now.start_ticks,
                recorded: self.start_ticks,
            });
        }
        if now.uid != self.uid {
            return Some(NotProven::Uid {
                now: now.uid,
                recorded: self.uid,
            });
        }
        if self.exe.is_some() && now.exe != self.exe {
            return Some(NotProven::Exe);
        }
        None
    }
}

/// Checks that `pid` was started by a launcher for `key` at `endpoint` (see
/// [`crate::launch::verify::started_for`]).
pub fn started_for(pid: u32, key: &BackendKey, endpoint: &str) -> Result<(), NotProven> {
    use crate::launch::verify::{started_for, NotStartedFor};
    started_for(pid, key, endpoint).map_err(|e| match e {
        NotStartedFor::Unreadable(e) => NotProven::Environment(e),
        NotStartedFor::Other { name, found } => NotProven::StartedForOther {
            key: key.to_string(),
            endpoint: endpoint.to_owned(),
            name,
            found,
        },
    })
}

/// Proves that the recorded `daemon` of `key` is still the process its pid
/// names (see the module docs) and returns a pidfd on it, through which a
/// signal can reach only that process.
pub fn prove_recorded(
    key: &BackendKey,
    daemon: &DaemonProcess,
    mark: Option<&ProcessMark>,
) -> Result<Pidfd, NotProven> {
    let mark = mark.ok_or(NotProven::NoMark)?;
    if daemon.boot_id != host::boot_id()? {
        return Err(NotProven::OtherBoot {
            recorded: daemon.boot_id.clone(),
        });
    }
    let euid = host::effective_uid();
    if mark.uid != euid {
        return Err(NotProven::OtherOwner {
            recorded: mark.uid,
            euid,
        });
    }
    let pidfd = Pidfd::open(daemon.pid).map_err(NotProven::NoProcess)?;
    let now = ProcessMark::read(daemon.pid).map_err(NotProven::Unreadable)?;
    if let Some(why) = mark.differs(&now) {
        return Err(why);
    }
    started_for(daemon.pid, key, &daemon.ipc_endpoint.path)?;
    if pidfd.ended_within(Duration::ZERO) {
        return Err(NotProven::Ended);
    }
    Ok(pidfd)
}

/// Whether the recorded backend is provably gone: recorded on another boot,
/// no process with its pid, a zombie or dead process with it, or (when the
/// manifest records its start time) one that started at another time, so
/// the pid now names a later process. A process that cannot be told apart
/// from the recorded one is not gone.
pub fn recorded_process_gone(daemon: &DaemonProcess, mark: Option<&ProcessMark>) -> bool {
    match host::boot_id() {
        Ok(boot) if boot != daemon.boot_id => return true,
        Ok(_) => {}
        Err(_) => return false,
    }
    let stat = match proc::stat(daemon.pid) {
        Ok(stat) => stat,
        Err(e) => return e.kind() == io::ErrorKind::NotFound,
    };
    if stat.ended() {
        return true;
    }
    mark.is_some_and(|mark| stat.start_ticks != mark.start_ticks)
}

/// Whether the recorded backend is still running (for `BackendPool::list`):
/// same boot, and under a pidfd opened first, the pid's start time, uid and
/// executable stamp are the recorded ones and the pidfd shows no exit, so
/// the reads described the process it names. Without a recorded mark the
/// pid proves nothing: not alive.
pub fn recorded_alive(daemon: &DaemonProcess, mark: Option<&ProcessMark>) -> bool {
    let Some(mark) = mark else {
        return false;
    };
    if host::boot_id().map_or(true, |boot| boot != daemon.boot_id) {
        return false;
    }
    let Ok(pidfd) = Pidfd::open(daemon.pid) else {
        return false;
    };
    let Ok(now) = ProcessMark::read(daemon.pid) else {
        return false;
    };
    mark.differs(&now).is_none() && !pidfd.ended_within(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_of_this_process_is_stable_and_its_own() {
        let me = std::process::id();
        let mark = ProcessMark::read(me).unwrap();
        assert_eq!(mark.uid, host::effective_uid());
        assert!(mark.exe.is_some());
        assert!(mark.differs(&ProcessMark::read(me).unwrap()).is_none());
        let reused = ProcessMark {
            start_ticks: mark.start_ticks + 1,
            ..mark
        };
        assert!(matches!(
            mark.differs(&reused),
            Some(NotProven::Reused { .. })
        ));
        let other_uid = ProcessMark {
            uid: mark.uid + 1,
            ..mark
        };
        assert!(matches!(
            mark.differs(&other_uid),
            Some(NotProven::Uid { .. })
        ));
        let other_exe = ProcessMark { exe: None, ..mark };
        assert!(matches!(mark.differs(&other_exe), Some(NotProven::Exe)));
    }
}
