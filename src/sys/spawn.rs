//! Detached spawn of a backend from an already-open executable.
//!
//! The child is started like `posix_spawn` does it (`clone` with
//! `CLONE_VM | CLONE_VFORK`, see [`clone_child`]) and set up in a fixed
//! order before `execveat`, using only async-signal-safe calls on memory
//! prepared before the clone (the parent may be a multi-threaded Python
//! process):
//!
//! 1. signal dispositions back to default and the signal mask emptied
//!    (Python ignores SIGPIPE; that must not leak into the backend);
//! 2. `setsid`: a new session, so the backend outlives the caller's terminal
//!    and process group;
//! 3. stdin from `/dev/null`, stdout and stderr to the log file;
//! 4. working directory `/` and umask 077;
//! 5. every descriptor from 3 up marked close-on-exec, except the ones passed
//!    on purpose (a script's own descriptor, see below, and the listening
//!    socket a launcher bound for the backend);
//! 6. `execveat(fd, "", AT_EMPTY_PATH)` of the descriptor that was hashed (or,
//!    for a script, of its interpreter's), so a file swapped at the path
//!    after hashing is never the one that runs.
//!
//! An exec failure is written as an errno to a close-on-exec pipe, so the
//! parent learns of it (and reaps the child) before it ever reports a pid:
//! [`spawn`] returns only after the exec has happened. Unlike `execvp`, a
//! file the kernel cannot run fails with `ENOEXEC` instead of being handed to
//! `/bin/sh`.
//!
//! A `#!` script is not handed to the kernel, which would look its
//! interpreter up by path (and `/usr/bin/env` would look the program up on
//! `PATH`) after the launcher checked it. The launcher executes the
//! interpreter's descriptor itself, opened where it was resolved and checked,
//! with the command line the kernel would have built (`interpreter [arg]
//! /dev/fd/N args...`, or `NAME /dev/fd/N args...` for `#!/usr/bin/env
//! NAME`), and keeps the script's descriptor N open across the exec (and only
//! then).
//!
//! This module starts processes; it does not wait for them, verify them or
//! reap them (see `reaper` and `launcher`).

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// What to start and how.
pub struct SpawnRequest<'a> {
    /// The open executable (the descriptor that was hashed).
    pub executable: &'a File,
    /// Set when the executable is a `#!` script: the interpreter runs it.
    pub script: Option<ScriptExec<'a>>,
    /// `argv`, including `argv[0]` (for a script, `argv[0]` is replaced as
    /// the kernel would: see [`ScriptExec`]).
    pub argv: Vec<CString>,
    /// The complete environment as `NAME=value` strings.
    pub env: Vec<CString>,
    /// Where stdout and stderr go.
    pub log: &'a File,
    /// A descriptor the child keeps under the same number (the listening
    /// socket a launcher bound for it); everything else from 3 up is closed
    /// at exec.
    pub pass: Option<RawFd>,
}

/// How a `#!` script is started: the interpreter's descriptor is executed
/// with the command line the kernel would have built for the script
/// (`leading` arguments, then `/dev/fd/N` naming the script's descriptor,
/// then `argv[1..]`), and the script's descriptor stays open across the exec.
pub struct ScriptExec<'a> {
    /// The interpreter, opened where it was resolved and checked.
    pub interpreter: &'a File,
    /// The arguments before `/dev/fd/N`: the interpreter as the `#!` line
    /// names it and the line's argument, or `NAME` for `/usr/bin/env NAME`.
    pub leading: Vec<CString>,
}

/// A started child: its pid and a pidfd that names it even after the pid is
/// reused.
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    pub pidfd: OwnedFd,
}

/// Why a spawn failed.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// Setting up the spawn failed in the parent (pipe, clone, /dev/null...).
    #[error("{operation} failed: {source}")]
    Setup {
        operation: &'static str,
        #[source]
        source: io::Error,
    },
    /// The child could not exec; `errno` is the kernel's answer.
    #[error("exec failed: {source}")]
    Exec {
        errno: i32,
        #[source]
        source: io::Error,
    },
}

fn setup(operation: &'static str) -> impl FnOnce(io::Error) -> SpawnError {
    move |source| SpawnError::Setup { operation, source }
}

/// A `NAME=value` C string, or None if either part holds a NUL byte.
pub fn env_entry(name: &OsStr, value: &OsStr) -> Option<CString> {
    let mut bytes = Vec::with_capacity(name.len() + value.len() + 1);
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(b'=');
    bytes.extend_from_slice(value.as_bytes());
    CString::new(bytes).ok()
}

/// Duplicates `fd` to a number of at least 3, close-on-exec, so that the
/// child's `dup2` onto 0-2 never meets a source that is already 0-2.
pub(crate) fn above_stdio(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC creates a new descriptor we then own.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn cloexec_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are fresh descriptors owned by us.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Stack of the child between clone and exec: it only makes system calls.
const CHILD_STACK: usize = 64 * 1024;

/// What the child needs, prepared by the parent before the clone.
#[derive(Clone, Copy)]
struct ChildArgs {
    /// The descriptor to execute.
    exec: RawFd,
    /// A script's descriptor, kept open across the exec (or -1).
    script: RawFd,
    null: RawFd,
    log: RawFd,
    err_pipe: RawFd,
    pass: RawFd,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
}

extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` `clone_child` passed, alive while the
    // parent is suspended (CLONE_VFORK); we are the new child.
    unsafe { child_exec(&*(arg as *const ChildArgs)) }
}

/// Starts the child the way `posix_spawn` does: `clone(CLONE_VM |
/// CLONE_VFORK)` on a stack of its own. The child shares our memory until it
/// execs (no page tables copied, which makes a spawn from a large Python
/// process as cheap as from a small one), and this thread is suspended until
/// then, so nothing the child reads can change under it.
///
/// Every signal is blocked around the clone: a handler of ours must never
/// run in the child, which shares our memory. The child inherits the full
/// mask, resets every disposition to default (its signal table is its own
/// copy), and only then unblocks. Returns the pid, or `-errno`.
///
/// # Safety
/// `args` must point into memory that stays valid and unchanged until this
/// returns; `stack` is used as the child's stack.
unsafe fn clone_child(args: &ChildArgs, stack: &mut [u8]) -> libc::pid_t {
    let mut all: libc::sigset_t = std::mem::zeroed();
    let mut old: libc::sigset_t = std::mem::zeroed();
    libc::sigfillset(&mut all);
    libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    // The stack grows down from its 16-byte-aligned end.
    let top = stack.as_mut_ptr().add(stack.len());
    let top = top.sub(top as usize % 16);
    let pid = libc::clone(
        child_entry,
        top.cast(),
        libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
        args as *const ChildArgs as *mut libc::c_void,
    );
    let result = if pid < 0 {
        -*libc::__errno_location()
    } else {
        pid
    };
    libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    result
}

/// Child side, between clone and exec. Only async-signal-safe calls, no
/// allocation; never returns.
///
/// # Safety
/// Must be called only in the child right after the clone, with pointers
/// into memory prepared before it.
unsafe fn child_exec(args: &ChildArgs) -> ! {
    let ChildArgs {
        exec,
        script,
        null,
        log,
        err_pipe,
        pass,
        argv,
        envp,
    } = *args;
    let fail = |err_pipe: RawFd| -> ! {
        let errno = *libc::__errno_location();
        let bytes = errno.to_ne_bytes();
        libc::write(err_pipe, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    };

    // 1. Default signal dispositions, then an empty mask: in this order, a
    // signal that arrives in between can never run an inherited handler
    // (which might write to a descriptor shared with the parent).
    for sig in 1..=libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    // 2. New session.
    if libc::setsid() < 0 {
        fail(err_pipe);
    }
    // 3. Standard streams.
    if libc::dup2(null, 0) < 0 || libc::dup2(log, 1) < 0 || libc::dup2(log, 2) < 0 {
        fail(err_pipe);
    }
    // 4. Working directory and umask.
    if libc::chdir(c"/".as_ptr()) < 0 {
        fail(err_pipe);
    }
    libc::umask(0o077);
    // 5. Nothing from 3 up survives exec but what is passed on purpose.
    //    Through the raw system call: the glibc wrapper exists only from
    //    2.34, and the wheel is built for glibc 2.17.
    if libc::syscall(
        libc::SYS_close_range,
        3 as libc::c_uint,
        libc::c_uint::MAX,
        libc::CLOSE_RANGE_CLOEXEC,
    ) < 0
    {
        let mut limit: libc::rlimit = std::mem::zeroed();
        let top = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur.min(1 << 20) as RawFd
        } else {
            4096
        };
        for fd in 3..top {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    if script >= 0 && libc::fcntl(script, libc::F_SETFD, 0) < 0 {
        fail(err_pipe);
    }
    if pass >= 0 && libc::fcntl(pass, libc::F_SETFD, 0) < 0 {
        fail(err_pipe);
    }
    // 6. Run exactly the file behind the descriptor.
    libc::syscall(
        libc::SYS_execveat,
        exec,
        c"".as_ptr(),
        argv,
        envp,
        libc::AT_EMPTY_PATH,
    );
    fail(err_pipe)
}

/// Starts the process described by `request` and returns once it has exec'd.
pub fn spawn(request: &SpawnRequest<'_>) -> Result<Spawned, SpawnError> {
    let null = File::open("/dev/null").map_err(setup("open /dev/null"))?;
    let null = above_stdio(null.as_raw_fd()).map_err(setup("duplicate /dev/null"))?;
    let log = above_stdio(request.log.as_raw_fd()).map_err(setup("duplicate log file"))?;
    let exe = above_stdio(request.executable.as_raw_fd()).map_err(setup("duplicate executable"))?;
    let interpreter = match &request.script {
        Some(script) => Some(
            above_stdio(script.interpreter.as_raw_fd()).map_err(setup("duplicate interpreter"))?,
        ),
        None => None,
    };
    let (err_read, err_write) = cloexec_pipe().map_err(setup("create exec-status pipe"))?;

    // A script: the command line the kernel would build, with the script's
    // descriptor number as it will be in the child.
    let script_argv: Vec<CString> = match &request.script {
        Some(script) => {
            let dev_fd = CString::new(format!("/dev/fd/{}", exe.as_raw_fd()))
                .map_err(|e| setup("build command line")(io::Error::other(e)))?;
            script
                .leading
                .iter()
                .cloned()
                .chain(std::iter::once(dev_fd))
                .chain(request.argv.iter().skip(1).cloned())
                .collect()
        }
        None => Vec::new(),
    };
    let argv_source = if request.script.is_some() {
        &script_argv
    } else {
        &request.argv
    };
    let mut argv: Vec<*const libc::c_char> = argv_source.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = request.env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());

    let (exec, script) = match &interpreter {
        Some(interpreter) => (interpreter.as_raw_fd(), exe.as_raw_fd()),
        None => (exe.as_raw_fd(), -1),
    };
    let args = ChildArgs {
        exec,
        script,
        null: null.as_raw_fd(),
        log: log.as_raw_fd(),
        err_pipe: err_write.as_raw_fd(),
        pass: request.pass.unwrap_or(-1),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
    };
    let mut stack = vec![0u8; CHILD_STACK];
    // SAFETY: see `clone_child`; `args`, `stack` and the arrays they point
    // into outlive the child's use of them (CLONE_VFORK).
    let pid = unsafe { clone_child(&args, &mut stack) };
    drop(stack);
    if pid < 0 {
        return Err(SpawnError::Setup {
            operation: "clone",
            source: io::Error::from_raw_os_error(-pid),
        });
    }
    drop(err_write);
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into a local buffer from a descriptor we own.
        let n = unsafe {
            libc::read(
                err_read.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        if n == 0 {
            break;
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // Cannot tell what happened: do not leave a child behind.
            kill_and_reap(pid);
            return Err(SpawnError::Setup {
                operation: "read exec status",
                source: e,
            });
        }
        got += n as usize;
    }
    if got > 0 {
        reap(pid);
        let errno = if got == 4 {
            i32::from_ne_bytes(buf)
        } else {
            libc::EIO
        };
        return Err(SpawnError::Exec {
            errno,
            source: io::Error::from_raw_os_error(errno),
        });
    }
    let pid_u32 = pid as u32;
    match rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid).ok_or_else(|| SpawnError::Setup {
            operation: "clone",
            source: io::Error::other("clone returned pid 0 in the parent"),
        })?,
        rustix::process::PidfdFlags::empty(),
    ) {
        Ok(pidfd) => Ok(Spawned {
            pid: pid_u32,
            pidfd,
        }),
        Err(e) => {
            kill_and_reap(pid);
            Err(SpawnError::Setup {
                operation: "pidfd_open",
                source: e.into(),
            })
        }
    }
}

/// Waits for our own child `pid` (never any other process).
fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waiting for a specific child we created.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
}

fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: `pid` is our unreaped child, so it cannot have been reused.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    reap(pid);
}

/// `argv[0]` for a binary: its canonical path.
pub fn arg0(path: &std::path::Path) -> Option<CString> {
    CString::new(path.as_os_str().as_bytes()).ok()
}
