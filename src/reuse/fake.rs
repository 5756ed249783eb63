//! Test doubles for the reuse layer's unit tests: a process that lives
//! until the test ends it, and a launcher that hands out such processes
//! (or fails on request) and counts what it is asked to do. The real-process
//! suites (`tests/`, pytest) prove the same behaviour end to end; these make
//! the router's logic testable in milliseconds. Built only for tests and
//! with the `bench` feature (the benchmark harness measures how the
//! router's cost grows with the number of keys, beyond what real processes
//! allow); never part of the package.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::contract::identity::{DaemonProcess, Endpoint};
use crate::contract::keys::BackendKey;
use crate::contract::service::ServiceDefinition;
use crate::contract::trace::TraceContext;
use crate::launch::Process;
use crate::launch::{BackendHandle, BackendLauncher, LaunchError};
use crate::sys::reaper::Exit;

/// A process that runs until [`FakeProcess::end`], `terminate` or `kill`.
#[derive(Default)]
pub struct FakeProcess {
    ended: Mutex<Option<Exit>>,
    changed: Condvar,
    /// Whether re-verification fails.
    pub fails_verification: AtomicBool,
    /// How many times it was asked to terminate gracefully.
    pub terminations: AtomicUsize,
    /// How many times it was killed.
    pub kills: AtomicUsize,
}

impl FakeProcess {
    /// Ends the process on its own (an idle exit, a crash).
    pub fn end(&self, exit: Exit) {
        let mut ended = self.ended.lock().unwrap();
        ended.get_or_insert(exit);
        self.changed.notify_all();
    }

    pub fn has_ended(&self) -> bool {
        self.ended.lock().unwrap().is_some()
    }
}

/// The handle side of a shared [`FakeProcess`].
struct Shared(Arc<FakeProcess>);

impl Process for Shared {
    fn is_alive(&self) -> bool {
        !self.0.has_ended()
    }

    fn wait(&self) -> Exit {
        let mut ended = self.0.ended.lock().unwrap();
        loop {
            if let Some(exit) = *ended {
                return exit;
            }
            ended = self.0.changed.wait(ended).unwrap();
        }
    }

    fn wait_timeout(&self, timeout: Duration) -> Option<Exit> {
        let ended = self.0.ended.lock().unwrap();
        let (ended, _) = self
            .0
            .changed
            .wait_timeout_while(ended, timeout, |e| e.is_none())
            .unwrap();
        *ended
    }

    fn terminate(&self, _grace: Duration) -> (Exit, bool) {
        self.0.terminations.fetch_add(1, Ordering::SeqCst);
        self.0.end(Exit::Signal(libc::SIGTERM));
        (self.wait(), true)
    }

    fn kill(&self) -> Exit {
        self.0.kills.fetch_add(1, Ordering::SeqCst);
        self.0.end(Exit::Signal(libc::SIGKILL));
        self.wait()
    }

    fn reverify(
        &self,
        daemon: &DaemonProcess,
        _trace: &TraceContext,
        _timeout: Duration,
    ) -> Result<(), LaunchError> {
        if self.0.fails_verification.load(Ordering::SeqCst) {
            return Err(LaunchError::Mismatch {
                field: "exe_sha256",
                expected: "the launched binary".into(),
                actual: format!("something else at pid {}", daemon.pid),
            });
        }
        Ok(())
    }
}

/// A handle on a fresh [`FakeProcess`] with process id `pid`.
pub fn handle(key: &BackendKey, pid: u32) -> (BackendHandle, Arc<FakeProcess>) {
    let process = Arc::new(FakeProcess::default());
    let daemon = DaemonProcess {
        pid,
        exe_path: "/opt/fake/backend".into(),
        exe_sha256: [7; 32],
        exe_blake3: None,
        boot_id: "fake-boot".into(),
        ipc_endpoint: Endpoint::new(&key.instance().id(), &format!("/tmp/fake-{pid}.sock"))
            .expect("a valid endpoint"),
        started_at_unix_ms: 1,
        idle_timeout_secs: None,
    };
    let handle = BackendHandle::new(
        key,
        daemon,
        format!("/tmp/fake-{pid}.log").into(),
        Box::new(Shared(Arc::clone(&process))),
        None,
        None,
    );
    (handle, process)
}

/// A launcher of [`FakeProcess`]es. A launch can be held at its start
/// ([`FakeLauncher::hold`]) until the test releases it, and made to fail.
#[derive(Default)]
pub struct FakeLauncher {
    next_pid: AtomicU32,
    /// Launches made (successful or not).
    pub launches: AtomicUsize,
    /// The most launches seen running at the same time.
    pub max_concurrent: AtomicUsize,
    running: AtomicUsize,
    /// Whether launches fail (with a spawn error).
    pub failing: AtomicBool,
    gate: Mutex<Gate>,
    gate_changed: Condvar,
    processes: Mutex<Vec<(BackendKey, Arc<FakeProcess>)>>,
}

#[derive(Default)]
struct Gate {
    held: bool,
    waiting: usize,
}

impl FakeLauncher {
    /// From now on, launches wait at their start until [`release`](Self::release).
    pub fn hold(&self) {
        self.gate.lock().unwrap().held = true;
    }

    /// How many launches are waiting at the gate now.
    pub fn waiting(&self) -> usize {
        self.gate.lock().unwrap().waiting
    }

    /// Lets held launches go on.
    pub fn release(&self) {
        self.gate.lock().unwrap().held = false;
        self.gate_changed.notify_all();
    }

    /// The processes launched for `key`, oldest first.
    pub fn processes(&self, key: &BackendKey) -> Vec<Arc<FakeProcess>> {
        self.processes
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, p)| Arc::clone(p))
            .collect()
    }
}

impl BackendLauncher for FakeLauncher {
    fn launch(
        &self,
        key: &BackendKey,
        _sd: &ServiceDefinition,
        _trace: &TraceContext,
    ) -> Result<BackendHandle, LaunchError> {
        self.launches.fetch_add(1, Ordering::SeqCst);
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_concurrent.fetch_max(running, Ordering::SeqCst);
        {
            let mut gate = self.gate.lock().unwrap();
            gate.waiting += 1;
            self.gate_changed.notify_all();
            while gate.held {
                gate = self.gate_changed.wait(gate).unwrap();
            }
            gate.waiting -= 1;
        }
        let result = if self.failing.load(Ordering::SeqCst) {
            Err(LaunchError::Spawn {
                path: "/opt/fake/backend".into(),
                errno: Some(libc::ENOEXEC),
                source: std::io::Error::from_raw_os_error(libc::ENOEXEC),
            })
        } else {
            let pid = 1000 + self.next_pid.fetch_add(1, Ordering::SeqCst);
            let (handle, process) = handle(key, pid);
            self.processes.lock().unwrap().push((key.clone(), process));
            Ok(handle)
        };
        self.running.fetch_sub(1, Ordering::SeqCst);
        result
    }
}
