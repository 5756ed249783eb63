//! Facts about a process, as the kernel reports them under `/proc`: its
//! executable, its start time and state, its effective uid, the environment
//! and command line it was started with, and its open descriptors.
//!
//! Every reader here is one read of one file; none of them proves that the
//! pid still names the same process afterwards. Callers hold a pidfd or an
//! unreaped child across the read, or compare start times, as the module
//! using the fact documents.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::contract::clock;
use crate::contract::stamp::FileStamp;

/// What Linux appends to a `/proc/<pid>/exe` link once the file has been
/// unlinked (deleted, or replaced by a rename).
const DELETED_SUFFIX: &[u8] = b" (deleted)";

/// `/proc/<pid>/exe`, the link to the running image.
pub fn exe_link(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/exe"))
}

/// The path `pid`'s executable was started from, as a launcher compares it
/// with the binary it started. The kernel's answer is absolute and free of
/// symbolic links. If the file has since been deleted or renamed over, the
/// kernel appends `" (deleted)"`; the suffix is always dropped, since the
/// path it was started from is the one the launcher expects (the stamp of
/// the running image tells the versions apart).
pub fn exe_path(pid: u32) -> io::Result<PathBuf> {
    fs::read_link(exe_link(pid)).map(strip_deleted)
}

/// `/proc/self/exe`: opening it reaches the image this process runs.
pub const SELF_EXE_LINK: &str = "/proc/self/exe";

/// The path this process's executable was started from, as a backend
/// reports it: like [`exe_path`], except that a path that exists as the
/// kernel gives it (a binary whose name really ends in `" (deleted)"`) is
/// kept as it is.
pub fn self_exe_path() -> io::Result<PathBuf> {
    let target = fs::read_link(Path::new(SELF_EXE_LINK))?;
    if target.exists() {
        return Ok(target);
    }
    Ok(strip_deleted(target))
}

fn strip_deleted(path: PathBuf) -> PathBuf {
    match path.as_os_str().as_bytes().strip_suffix(DELETED_SUFFIX) {
        Some(stripped) => PathBuf::from(OsStr::from_bytes(stripped)),
        None => path,
    }
}

/// The stamp of the file `pid` runs (through `/proc/<pid>/exe`, which
/// reaches the inode even after it was unlinked).
pub fn exe_stamp(pid: u32) -> io::Result<FileStamp> {
    fs::metadata(exe_link(pid)).map(|meta| FileStamp::of(&meta))
}

/// State and start time of a process, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Field 3: `R`, `S`, `Z`, ...
    pub state: u8,
    /// Field 22: clock ticks after boot at which the process started.
    pub start_ticks: u64,
}

impl Stat {
    /// Whether the process has ended (a zombie or dead entry).
    pub fn ended(&self) -> bool {
        matches!(self.state, b'Z' | b'X' | b'x')
    }
}

/// Reads `/proc/<pid>/stat`. `NotFound` when no process has the pid.
pub fn stat(pid: u32) -> io::Result<Stat> {
    let text = fs::read(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot parse /proc/{pid}/stat"),
        )
    })
}

/// Fields 3 and 22 of a `/proc/<pid>/stat` line. The command name in field 2
/// may hold spaces and parentheses, so fields are counted after the last
/// `)`.
pub fn parse_stat(stat: &[u8]) -> Option<Stat> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    // Fields 4, 5, ... follow the state: starttime is the 19th of them.
    let start_ticks = fields.nth(18)?.parse().ok()?;
    Some(Stat { state, start_ticks })
}

/// The effective uid of `pid`, from `/proc/<pid>/status`.
pub fn effective_uid(pid: u32) -> io::Result<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_effective_uid(&status).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot parse /proc/{pid}/status"),
        )
    })
}

/// The effective uid (second value of the `Uid:` line) of a
/// `/proc/<pid>/status` text.
pub fn parse_effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line["Uid:".len()..]
        .split_ascii_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The environment `pid` was started with (later changes by the process do
/// not show here), as `NAME=value` entries.
pub fn start_environment(pid: u32) -> io::Result<Vec<Vec<u8>>> {
    let environ = fs::read(format!("/proc/{pid}/environ"))?;
    Ok(split_nul(&environ))
}

/// The value of `name` in an environment as [`start_environment`] returns
/// it: the first entry, as `getenv` reads it.
pub fn env_value<'a>(environment: &'a [Vec<u8>], name: &str) -> Option<&'a [u8]> {
    environment
        .iter()
        .filter_map(|entry| entry.strip_prefix(name.as_bytes())?.strip_prefix(b"="))
        .next()
}

/// The command line of `pid`, one entry per argument.
pub fn command_line(pid: u32) -> io::Result<Vec<Vec<u8>>> {
    Ok(split_nul(&fs::read(format!("/proc/{pid}/cmdline"))?))
}

/// NUL-terminated entries; an empty entry inside stays (argument positions
/// must be exactly the kernel's), only the terminator of the last goes.
fn split_nul(bytes: &[u8]) -> Vec<Vec<u8>> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes.split(|&b| b == 0).map(<[u8]>::to_vec).collect()
}

/// `/proc/<pid>/fd/<fd>`: opening it reaches the very file `pid` holds.
pub fn fd_link(pid: u32, fd: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/fd/{fd}"))
}

/// The path of the file behind descriptor `fd` of this process.
pub fn own_fd_path(fd: i32) -> io::Result<PathBuf> {
    fs::read_link(format!("/proc/self/fd/{fd}"))
}

/// A process handle that survives pid reuse: signals and exit checks through
/// it reach the process it was opened for, or nothing.
#[derive(Debug)]
pub struct Pidfd(OwnedFd);

impl Pidfd {
    /// Opens a handle on `pid`; an error if no such process exists.
    pub fn open(pid: u32) -> io::Result<Pidfd> {
        let pid = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a process id"))?;
        Ok(Pidfd(rustix::process::pidfd_open(
            pid,
            rustix::process::PidfdFlags::empty(),
        )?))
    }

    /// Whether the process ends within `timeout` (ZERO: has it ended).
    pub fn ended_within(&self, timeout: Duration) -> bool {
        pidfd_ended(self.0.as_fd(), Some(timeout))
    }

    /// SIGKILL to the process; a process already gone is not an error.
    pub fn kill(&self) -> io::Result<()> {
        self.signal(rustix::process::Signal::KILL)
    }

    /// SIGTERM to the process; a process already gone is not an error.
    pub fn term(&self) -> io::Result<()> {
        self.signal(rustix::process::Signal::TERM)
    }

    fn signal(&self, signal: rustix::process::Signal) -> io::Result<()> {
        match rustix::process::pidfd_send_signal(&self.0, signal) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Ends (SIGKILL, through pidfds) every process of this user other than
/// `except` that started at or after `since_ticks` (field 22 of
/// `/proc/<pid>/stat`, this boot) and carries `name=value` in the
/// environment it was started with: what a backend forked, wherever it went
/// (another process group, another session, re-parented to init), since
/// its children inherit the backend's endpoint variable unless they clear
/// it. Each process is proven through a pidfd opened before the checks and
/// still running after them, so a reused pid is never signalled. Returns
/// the pids signalled.
pub fn end_marked(name: &str, value: &str, since_ticks: u64, except: u32) -> Vec<u32> {
    let euid = crate::sys::host::effective_uid();
    let me = std::process::id();
    let mut ended = Vec::new();
    let Ok(listing) = fs::read_dir("/proc") else {
        return ended;
    };
    for item in listing.flatten() {
        let Some(pid) = item
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == except || pid == me {
            continue;
        }
        // The directory belongs to the process's effective uid (cheap).
        if !item
            .metadata()
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == euid)
        {
            continue;
        }
        // Cheap filter first: most processes are older than the backend.
        let started_since = || stat(pid).is_ok_and(|s| s.start_ticks >= since_ticks);
        if !started_since() {
            continue;
        }
        let Ok(pidfd) = Pidfd::open(pid) else {
            continue;
        };
        let marked = started_since()
            && start_environment(pid)
                .is_ok_and(|env| env_value(&env, name) == Some(value.as_bytes()));
        if marked && !pidfd.ended_within(Duration::ZERO) && pidfd.kill().is_ok() {
            ended.push(pid);
        }
    }
    ended
}

/// How much `pid` has run so far: its threads' context switches (voluntary
/// and not) and CPU ticks, summed. Two readings that differ show that some
/// thread of the process ran in between; a process that is stopped, or
/// whose every thread is blocked for good, reads the same.
pub fn activity(pid: u32) -> io::Result<u64> {
    let mut total: u64 = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let Ok(task) = task else { continue };
        let Ok(status) = fs::read_to_string(task.path().join("status")) else {
            continue; // the thread ended meanwhile
        };
        for line in status.lines() {
            if let Some(rest) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total = total.wrapping_add(rest.trim().parse().unwrap_or(0));
            }
        }
    }
    let stat = fs::read(format!("/proc/{pid}/stat"))?;
    let close = stat.iter().rposition(|&b| b == b')').unwrap_or(0);
    let rest = String::from_utf8_lossy(&stat[close + 1..]).into_owned();
    // utime and stime are fields 14 and 15, the 11th and 12th after the
    // state (field 3).
    let ticks: u64 = rest
        .split_ascii_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Ok(total.wrapping_add(ticks))
}

/// Whether the process of `pidfd` ends within `timeout` (None: waits for
/// it; ZERO: has it ended). A signal during the wait does not shorten or
/// lengthen it.
pub fn pidfd_ended(pidfd: BorrowedFd<'_>, timeout: Option<Duration>) -> bool {
    let deadline = timeout.map(clock::deadline_after);
    loop {
        let timespec = deadline.map(|deadline| {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            rustix::event::Timespec {
                tv_sec: left.as_secs().min(i64::MAX as u64) as _,
                tv_nsec: left.subsec_nanos() as _,
            }
        });
        let mut fds = [rustix::event::PollFd::new(
            &pidfd,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, timespec.as_ref()) {
            Ok(n) => return n > 0,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let line =
            b"42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: b'S',
                start_ticks: 987654
            })
        );
        assert_eq!(parse_stat(b"42 (a) S 1"), None);
        assert_eq!(parse_stat(b"no parenthesis"), None);
    }

    #[test]
    fn effective_uid_is_the_second_uid() {
        assert_eq!(
            parse_effective_uid("Name:\tx\nUid:\t1000\t1001\t1002\t1003\n"),
            Some(1001)
        );
        assert_eq!(parse_effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn own_process_facts() {
        let pid = std::process::id();
        let st = stat(pid).unwrap();
        assert!(!st.ended());
        assert_eq!(
            effective_uid(pid).unwrap(),
            rustix::process::geteuid().as_raw()
        );
        assert_eq!(exe_path(pid).unwrap(), std::env::current_exe().unwrap());
        assert_eq!(self_exe_path().unwrap(), std::env::current_exe().unwrap());
        assert!(!command_line(pid).unwrap().is_empty());
    }

    #[test]
    fn empty_arguments_keep_their_position() {
        assert_eq!(
            split_nul(b"python\0\0/dev/fd/3\0"),
            vec![b"python".to_vec(), Vec::new(), b"/dev/fd/3".to_vec()]
        );
        assert!(split_nul(b"").is_empty());
    }

    #[test]
    fn deleted_suffix_is_dropped_only_at_the_end() {
        assert_eq!(
            strip_deleted(PathBuf::from("/opt/x/backend (deleted)")),
            PathBuf::from("/opt/x/backend")
        );
        assert_eq!(
            strip_deleted(PathBuf::from("/opt/x (deleted)/backend")),
            PathBuf::from("/opt/x (deleted)/backend")
        );
    }
}
