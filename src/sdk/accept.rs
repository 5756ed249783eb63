//! The accept thread and the state it shares with classifier threads, the
//! application's connections and the signal router: the queue of
//! application connections, the idle clock, and stopping.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use crate::sys::identity_file::remove_identity_file_of;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};

use super::bind::BoundSocketFile;
use super::classify::{handle_connection, judge, peek, serve, Class, Peeked};
use super::{signals, ShutdownReason, MAX_CLASSIFYING};
use crate::contract::identity::DaemonProcess;

/// Pause after an accept failure that would repeat at once (out of file
/// descriptors), so the accept thread does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Mutable state shared by the accept thread, the classifier threads and the
/// application.
pub(super) struct State {
    /// Application connections classified and not yet taken by `accept`.
    pub(super) queue: VecDeque<UnixStream>,
    /// Application connections queued or handed out and not yet reported
    /// closed. Probes are never counted.
    pub(super) open: usize,
    /// Connections being classified right now.
    pub(super) classifying: usize,
    /// When `open` last became zero (the start, at first).
    pub(super) idle_since: Instant,
    /// Set once when a shutdown is asked for.
    pub(super) stop: Option<ShutdownReason>,
    /// Set when the accept thread has removed the socket file and closed the
    /// listener.
    pub(super) stopped: bool,
}

/// What the accept thread, the classifier threads, the application's
/// [`Connection`]s and the signal router share.
pub(super) struct Shared {
    pub(super) identity: DaemonProcess,
    pub(super) idle_timeout: Option<Duration>,
    pub(super) classify_window: Duration,
    pub(super) state: Mutex<State>,
    pub(super) changed: Condvar,
    /// Read end of the stop pipe. One byte is written at shutdown and never
    /// read, so it stays readable and wakes every poll that includes it.
    pub(super) stop_rx: OwnedFd,
    pub(super) stop_tx: OwnedFd,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn wait_timeout<'a>(
        &self,
        guard: MutexGuard<'a, State>,
        timeout: Duration,
    ) -> MutexGuard<'a, State> {
        self.changed
            .wait_timeout(guard, timeout)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    /// Asks for a shutdown (the first reason wins) and wakes every waiter.
    pub(super) fn request_stop(&self, reason: ShutdownReason) {
        let mut st = self.lock();
        if st.stop.is_some() {
            return;
        }
        st.stop = Some(reason.clone());
        // Queued connections were never seen by the application; dropping
        // them closes them.
        st.open = st.open.saturating_sub(st.queue.len());
        st.queue.clear();
        drop(st);
        // Logged only after the lock is released: a log record may need the
        // Python GIL, and a Python thread holding it may be waiting for this
        // lock.
        log::info!(
            "backend server on {} stopping: {reason}",
            self.identity.ipc_endpoint.path
        );
        self.changed.notify_all();
        // A full pipe already wakes everyone, so a failed write changes nothing.
        let _ = rustix::io::write(&self.stop_tx, &[1]);
    }

    pub(super) fn connection_closed(&self) {
        let mut st = self.lock();
        if st.open == 0 {
            drop(st);
            log::warn!("connection_closed called more often than connections were accepted");
            return;
        }
        st.open -= 1;
        if st.open == 0 {
            st.idle_since = Instant::now();
        }
    }

    /// How long the accept thread may sleep before the idle timeout needs
    /// another look; `Some(ZERO)` when it is due. While application
    /// connections are open it looks again after one full timeout: the idle
    /// clock can only restart later than now, so that is never late.
    /// Connections being classified do not count: they may be probes.
    pub(super) fn idle_wait(&self, st: &State) -> Option<Duration> {
        let idle = self.idle_timeout?;
        if st.open > 0 {
            return Some(idle);
        }
        Some((st.idle_since + idle).saturating_duration_since(Instant::now()))
    }

    /// Called when the idle timeout is due: waits for the connections being
    /// classified (each within one window), since one of them may be an
    /// application connection that arrived just in time. True if the server
    /// is still idle afterwards; false if it has work or is stopping.
    pub(super) fn still_idle_after_classifying(&self) -> bool {
        let mut st = self.lock();
        while st.stop.is_none() && st.classifying > 0 {
            st = self.wait(st);
        }
        st.stop.is_none() && st.open == 0
    }

    /// Waits until `fd` (if any) reports one of `events` (or hang-up or
    /// error), the stop pipe becomes readable, or `timeout` passes.
    pub(super) fn poll_with_stop(
        &self,
        fd: Option<BorrowedFd<'_>>,
        events: PollFlags,
        timeout: Option<Duration>,
    ) -> io::Result<Woke> {
        let timespec = match timeout {
            Some(t) => Some(
                Timespec::try_from(t).map_err(|_| io::Error::other("poll timeout out of range"))?,
            ),
            None => None,
        };
        let mut fds = vec![PollFd::new(&self.stop_rx, PollFlags::IN)];
        if let Some(fd) = fd {
            fds.push(PollFd::from_borrowed_fd(fd, events));
        }
        loop {
            match rustix::event::poll(&mut fds, timespec.as_ref()) {
                Ok(0) => return Ok(Woke::Timeout),
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if !fds[0].revents().is_empty() {
            return Ok(Woke::Stop);
        }
        Ok(Woke::Ready)
    }

    pub(super) fn enqueue(&self, stream: UnixStream) {
        let mut st = self.lock();
        if st.stop.is_some() {
            return;
        }
        st.open += 1;
        st.queue.push_back(stream);
        drop(st);
        self.changed.notify_all();
    }
}

pub(super) enum Woke {
    Ready,
    Stop,
    Timeout,
}

/// Holds a classification slot; releasing it lets the accept thread go on.
pub(super) struct ClassifySlot(Arc<Shared>);

impl Drop for ClassifySlot {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.classifying -= 1;
        drop(st);
        self.0.changed.notify_all();
    }
}

/// How much of a new connection the accept thread peeks at before handing
/// it to a classifier thread: enough for any probe a launcher sends.
pub(super) const FAST_PEEK: usize = 1024;
/// How long the accept thread waits for a new connection's first bytes
/// before handing it to a classifier thread. Bounded and short: it delays
/// the next accept by at most this much.
pub(super) const FAST_WAIT: Duration = Duration::from_micros(500);

/// Classifies a connection whose first bytes are already queued (or arrive
/// within [`FAST_WAIT`]), on the accept thread: a complete probe is answered at once (its reply fits the
/// fresh socket's empty buffer, so the write cannot block), and bytes that
/// cannot start a probe go straight to the application. Returns the
/// connection when it needs a classifier thread (nothing or part of a frame
/// has arrived yet).
pub(super) fn classify_queued(shared: &Shared, stream: UnixStream) -> Option<UnixStream> {
    let mut buf = [0u8; FAST_PEEK];
    let mut seen = peek(&stream, &mut buf);
    if matches!(&seen, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
        // A prober writes its request right after connecting; it is usually
        // a few microseconds behind the accept.
        let mut fds = [rustix::event::PollFd::new(&stream, PollFlags::IN)];
        let timespec = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: FAST_WAIT.as_nanos() as _,
        };
        if matches!(rustix::event::poll(&mut fds, Some(&timespec)), Ok(1)) {
            seen = peek(&stream, &mut buf);
        }
    }
    let seen = match seen {
        Ok(0) => {
            serve(shared, stream, Class::Empty);
            return None;
        }
        Err(_) => return Some(stream),
        Ok(n) => n,
    };
    let class = match judge(&buf[..seen]) {
        Peeked::Probe {
            frame_len,
            request,
            nonce,
        } => Class::Probe {
            frame_len,
            request,
            nonce,
        },
        Peeked::NotProbe => Class::Application,
        Peeked::NeedMore { .. } => return Some(stream),
    };
    serve(shared, stream, class);
    None
}

pub(super) fn spawn_classifier(shared: &Arc<Shared>, stream: UnixStream) {
    let Some(stream) = classify_queued(shared, stream) else {
        return;
    };
    let accepted = Instant::now();
    shared.lock().classifying += 1;
    let slot = ClassifySlot(Arc::clone(shared));
    let spawned = thread::Builder::new()
        .name("rp-classify".to_owned())
        .spawn(move || {
            let slot = slot;
            handle_connection(&slot.0, stream, accepted);
        });
    if let Err(e) = spawned {
        // The closure, and with it the slot and the stream, was dropped.
        log::warn!("dropping connection: cannot start a thread to classify it: {e}");
    }
}

/// Owns the listener on the accept thread and, when that thread ends for any
/// reason (including a panic), removes the socket file, closes the listener
/// and marks the server stopped.
pub(super) struct ListenerGuard {
    pub(super) shared: Arc<Shared>,
    pub(super) listener: Option<UnixListener>,
    pub(super) path: PathBuf,
    pub(super) file: BoundSocketFile,
    /// The identity file this server published, removed with the socket
    /// (if it still describes this server).
    pub(super) identity_file: Option<PathBuf>,
    /// Whether the listener was passed to this process (see
    /// `bind::adopt_inherited`).
    pub(super) adopted: bool,
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        if let Some(path) = &self.identity_file {
            remove_identity_file_of(path, &self.shared.identity);
        }
        match self.file.is_at(&self.path) {
            Ok(true) => match std::fs::remove_file(&self.path) {
                Ok(()) => log::info!("removed socket file {}", self.path.display()),
                Err(e) => log::warn!("cannot remove socket file {}: {e}", self.path.display()),
            },
            Ok(false) => log::warn!(
                "socket file {} is gone or no longer the one this server bound; leaving it",
                self.path.display()
            ),
            Err(e) => log::warn!("cannot inspect socket file {}: {e}", self.path.display()),
        }
        if let Some(listener) = self.listener.take() {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
            drop(listener);
            if self.adopted {
                super::bind::release_adopted(fd);
            }
        }
        let mut st = self.shared.lock();
        if st.stop.is_none() {
            st.stop = Some(ShutdownReason::Failed {
                reason: "the accept thread ended unexpectedly".to_owned(),
            });
        }
        st.open = st.open.saturating_sub(st.queue.len());
        st.queue.clear();
        st.stopped = true;
        let reason = st.stop.clone();
        drop(st);
        self.shared.changed.notify_all();
        signals::release(&self.shared);
        if let Some(reason) = reason {
            log::info!(
                "backend server on {} shut down ({reason})",
                self.path.display()
            );
        }
    }
}

pub(super) fn accept_loop(guard: &ListenerGuard) {
    let shared = &guard.shared;
    let Some(listener) = guard.listener.as_ref() else {
        return;
    };
    loop {
        let idle_wait = {
            let mut st = shared.lock();
            while st.stop.is_none() && st.classifying >= MAX_CLASSIFYING {
                st = shared.wait(st);
            }
            if st.stop.is_some() {
                return;
            }
            shared.idle_wait(&st)
        };
        let idle_due = idle_wait.is_some_and(|wait| wait.is_zero());
        if idle_due {
            if !shared.still_idle_after_classifying() {
                continue;
            }
            // Still serve a client already waiting in the backlog; the
            // accept below ends the server if there is none.
        } else {
            match shared.poll_with_stop(Some(listener.as_fd()), PollFlags::IN, idle_wait) {
                Ok(Woke::Ready) => {}
                Ok(Woke::Timeout) => continue,
                Ok(Woke::Stop) => return,
                Err(e) => {
                    shared.request_stop(ShutdownReason::Failed {
                        reason: format!("poll: {e}"),
                    });
                    return;
                }
            }
        }
        match listener.accept() {
            Ok((stream, _)) => spawn_classifier(shared, stream),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if idle_due {
                    shared.request_stop(ShutdownReason::Idle);
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(e) => {
                // Typically out of file descriptors: the backlog stays
                // readable, so pause instead of spinning.
                log::warn!("accept on {} failed: {e}", guard.path.display());
                if let Ok(Woke::Stop) =
                    shared.poll_with_stop(None, PollFlags::empty(), Some(ACCEPT_ERROR_PAUSE))
                {
                    return;
                }
            }
        }
    }
}
