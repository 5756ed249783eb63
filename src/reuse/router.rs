//! The Hello router: from "service S at version V, please" to a verified
//! backend, reusing a live one, launching at most one per key, and saying no
//! with a v1 error code when it must.
//!
//! For each request, in order:
//!
//! 1. the whole request is validated before any side effect (name, version,
//!    the service in the catalog, its version policy);
//! 2. a registry hit is returned if its process is alive (pidfd) and, per the
//!    [`ReverifyPolicy`], passes a fresh verification; a dead or failing entry
//!    is removed (and a failing one killed) and the request goes on as a miss;
//! 3. a miss joins the launch in flight for the key, if any (single flight:
//!    every waiter receives the one result), or starts one: the per-key spawn
//!    budget is charged (RATE_LIMITED with a retry hint when spent; a success
//!    refunds it), a slot under the global cap on concurrent launches is
//!    taken, the registry is checked once more, and the launcher runs;
//! 4. a new backend is registered; if a cap on live backends is set and
//!    exceeded, the least recently used other backend is shut down
//!    gracefully.
//!
//! The router does not speak the Hello wire protocol itself (a broker front
//! end would decode `Hello` and encode `HelloReply` around [`HelloRouter::route`]).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::contract::error::{ValidationError, VersionRule};
use crate::contract::identity::Endpoint;
use crate::contract::keys::BackendKey;
use crate::contract::names::{validate_service_name, Version};
use crate::contract::service::ServiceDefinition;
use crate::contract::trace::TraceContext;
use crate::launch::{BackendHandle, BackendLauncher, LaunchError};
use crate::reuse::registry::BackendRegistry;

/// Error codes of the v1 `Refused` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Unspecified = 0,
    VersionUnsupported = 1,
    ServiceUnknown = 2,
    BackendSpawnFailed = 3,
    RateLimited = 4,
    ShuttingDown = 5,
    PeerRejected = 6,
    Internal = 7,
    VersionBlocked = 8,
    FdPressure = 9,
}

impl ErrorCode {
    /// The contract's upper-case name (`RATE_LIMITED`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Unspecified => "UNSPECIFIED",
            ErrorCode::VersionUnsupported => "VERSION_UNSUPPORTED",
            ErrorCode::ServiceUnknown => "SERVICE_UNKNOWN",
            ErrorCode::BackendSpawnFailed => "BACKEND_SPAWN_FAILED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::PeerRejected => "PEER_REJECTED",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::VersionBlocked => "VERSION_BLOCKED",
            ErrorCode::FdPressure => "FD_PRESSURE",
        }
    }
}

/// When a registry hit is verified again before it is handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReverifyPolicy {
    /// Liveness through the pidfd only.
    Never,
    /// A full verification (peer credentials, executable, probe) every hit.
    Always,
    /// A full verification when the last one is older than this.
    OlderThan(Duration),
}

/// Where service definitions come from.
#[derive(Debug, Clone)]
pub enum Catalog {
    /// `.servicedef` files in a private directory (read on each request, so
    /// an edited definition takes effect at once).
    Dir(PathBuf),
    /// Definitions held in memory, by service name.
    Map(HashMap<String, ServiceDefinition>),
}

impl Catalog {
    /// A catalog of definitions keyed by service name; a key that differs
    /// from its definition's `service_name` is refused (the router would
    /// launch a service under another service's name).
    pub fn from_definitions(
        definitions: impl IntoIterator<Item = (String, ServiceDefinition)>,
    ) -> Result<Catalog, ValidationError> {
        let mut map = HashMap::new();
        for (name, sd) in definitions {
            if sd.service_name != name {
                return Err(ValidationError::ServiceDefinition {
                    field: "service_name",
                    value: sd.service_name,
                    reason: format!("it is listed in the catalog under the key {name:?}"),
                });
            }
            map.insert(name, sd);
        }
        Ok(Catalog::Map(map))
    }

    fn lookup(&self, service_name: &str) -> Result<Option<ServiceDefinition>, String> {
        match self {
            Catalog::Map(map) => Ok(map.get(service_name).cloned()),
            Catalog::Dir(dir) => match ServiceDefinition::load(service_name, Some(dir)) {
                Ok(sd) => Ok(Some(sd)),
                Err(crate::contract::error::StoreError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.to_string()),
            },
        }
    }
}

/// Settings of a [`HelloRouter`].
#[derive(Debug, Clone)]
pub struct RouterOptions {
    pub reverify: ReverifyPolicy,
    /// Launch attempts allowed per key within `budget_window`.
    pub spawn_budget: u32,
    pub budget_window: Duration,
    /// Launches running at once, across all keys.
    pub max_concurrent_launches: usize,
    /// Live backends kept; the least recently used is shut down beyond it.
    pub max_live_backends: Option<usize>,
    /// Timeout of a re-verification.
    pub verify_timeout: Duration,
    /// Grace of an eviction's SIGTERM before SIGKILL.
    pub shutdown_grace: Duration,
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            reverify: ReverifyPolicy::Never,
            spawn_budget: 3,
            budget_window: Duration::from_secs(30),
            max_concurrent_launches: 4,
            max_live_backends: None,
            verify_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// The answer to a request.
#[derive(Debug, Clone)]
pub enum RouteOutcome {
    Negotiated {
        handle: BackendHandle,
        endpoint: Endpoint,
        daemon_version: String,
    },
    Refused {
        code: ErrorCode,
        reason: String,
        /// A hint for RATE_LIMITED: when a new attempt may succeed.
        retry_after_ms: u64,
    },
}

fn refused(code: ErrorCode, reason: impl Into<String>) -> RouteOutcome {
    RouteOutcome::Refused {
        code,
        reason: reason.into(),
        retry_after_ms: 0,
    }
}

/// A launch in progress that other requests for the same key wait for.
#[derive(Default)]
struct Flight {
    result: Mutex<Option<RouteOutcome>>,
    done: Condvar,
}

impl Flight {
    fn wait(&self) -> RouteOutcome {
        let mut result = self.result.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(outcome) = result.as_ref() {
                return outcome.clone();
            }
            result = self.done.wait(result).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn finish(&self, outcome: RouteOutcome) {
        *self.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
        self.done.notify_all();
    }
}

/// Counts launches in progress against the global cap.
#[derive(Default)]
struct Slots {
    busy: Mutex<usize>,
    freed: Condvar,
    /// Launches waiting for a slot (what the unit tests wait for).
    #[cfg(test)]
    waiting: std::sync::atomic::AtomicUsize,
}

struct SlotGuard<'a>(&'a Slots);

impl Slots {
    fn take(&self, cap: usize) -> SlotGuard<'_> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        #[cfg(test)]
        let waits = *busy >= cap.max(1);
        #[cfg(test)]
        if waits {
            self.waiting
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        while *busy >= cap.max(1) {
            busy = self.freed.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        #[cfg(test)]
        if waits {
            self.waiting
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
        *busy += 1;
        SlotGuard(self)
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.0.freed.notify_one();
    }
}

/// Routes requests to verified backends; see the module docs.
pub struct HelloRouter {
    launcher: Arc<dyn BackendLauncher>,
    catalog: Catalog,
    options: RouterOptions,
    registry: Arc<BackendRegistry>,
    flights: Mutex<HashMap<BackendKey, Arc<Flight>>>,
    attempts: Mutex<HashMap<BackendKey, VecDeque<Instant>>>,
    slots: Slots,
    launches: Mutex<u64>,
    /// Requests waiting for another request's launch (what the unit tests
    /// wait for).
    #[cfg(test)]
    joined: std::sync::atomic::AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HelloRouter {
    pub fn new(
        launcher: Arc<dyn BackendLauncher>,
        catalog: Catalog,
        options: RouterOptions,
    ) -> Self {
        Self::with_registry(launcher, catalog, options, Arc::new(BackendRegistry::new()))
    }

    /// A router that registers its backends in `registry` (shared with the
    /// caller, who can inspect or prune it).
    pub fn with_registry(
        launcher: Arc<dyn BackendLauncher>,
        catalog: Catalog,
        options: RouterOptions,
        registry: Arc<BackendRegistry>,
    ) -> Self {
        HelloRouter {
            launcher,
            catalog,
            options,
            registry,
            flights: Mutex::new(HashMap::new()),
            attempts: Mutex::new(HashMap::new()),
            slots: Slots::default(),
            launches: Mutex::new(0),
            #[cfg(test)]
            joined: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub fn registry(&self) -> &BackendRegistry {
        &self.registry
    }

    pub fn options(&self) -> &RouterOptions {
        &self.options
    }

    /// How many times the launcher has been called.
    pub fn launch_count(&self) -> u64 {
        *lock(&self.launches)
    }

    /// Validates the request; returns its definition and key, or the refusal.
    fn admit(
        &self,
        service_name: &str,
        wanted_version: &str,
    ) -> Result<(ServiceDefinition, BackendKey), RouteOutcome> {
        if let Err(e) = validate_service_name(service_name) {
            return Err(refused(ErrorCode::ServiceUnknown, e.to_string()));
        }
        if let Err(e) = Version::parse(wanted_version) {
            return Err(refused(ErrorCode::VersionUnsupported, e.to_string()));
        }
        let sd = match self.catalog.lookup(service_name) {
            Ok(Some(sd)) => sd,
            Ok(None) => {
                return Err(refused(
                    ErrorCode::ServiceUnknown,
                    format!("no service definition for {service_name:?}"),
                ))
            }
            Err(reason) => return Err(refused(ErrorCode::Internal, reason)),
        };
        match sd.check_version(wanted_version) {
            Ok(()) => {}
            Err(ValidationError::VersionRefused { rule, reason, .. }) => {
                let code = match rule {
                    VersionRule::MinVersion => ErrorCode::VersionUnsupported,
                    VersionRule::AllowList => ErrorCode::VersionBlocked,
                };
                return Err(refused(
                    code,
                    format!("version {wanted_version} refused: {reason}"),
                ));
            }
            Err(e) => return Err(refused(ErrorCode::VersionUnsupported, e.to_string())),
        }
        match BackendKey::for_service(&sd, wanted_version) {
            Ok(key) => Ok((sd, key)),
            Err(e) => Err(refused(ErrorCode::Internal, e.to_string())),
        }
    }

    /// A usable registry entry for `key`, after the liveness check and the
    /// re-verification policy; a dead or failing entry is removed.
    fn hit(&self, key: &BackendKey, trace: &TraceContext) -> Option<BackendHandle> {
        let entry = self.registry.entry(key)?;
        let pid = entry.handle.pid();
        if !entry.handle.is_alive() {
            log::info!("backend {key} pid {pid} is gone; launching a new one");
            if let Some(h) = self.registry.remove_if_pid(key, pid) {
                h.exit();
            }
            return None;
        }
        let due = match self.options.reverify {
            ReverifyPolicy::Never => false,
            ReverifyPolicy::Always => true,
            ReverifyPolicy::OlderThan(age) => entry.last_verified.elapsed() > age,
        };
        if due {
            if let Err(e) = entry.handle.verify(trace, self.options.verify_timeout) {
                log::warn!("backend {key} pid {pid} failed re-verification ({e}); replacing it");
                if let Some(h) = self.registry.remove_if_pid(key, pid) {
                    h.kill();
                }
                return None;
            }
            self.registry.mark_verified(key);
        }
        Some(entry.handle)
    }

    fn negotiated(key: &BackendKey, handle: BackendHandle) -> RouteOutcome {
        RouteOutcome::Negotiated {
            endpoint: handle.endpoint().clone(),
            daemon_version: key.service_version().to_owned(),
            handle,
        }
    }

    /// Answers one request (see the module docs for the order of checks).
    pub fn route(
        &self,
        service_name: &str,
        wanted_version: &str,
        trace: &TraceContext,
    ) -> RouteOutcome {
        let (sd, key) = match self.admit(service_name, wanted_version) {
            Ok(admitted) => admitted,
            Err(refusal) => return refusal,
        };
        if let Some(handle) = self.hit(&key, trace) {
            return Self::negotiated(&key, handle);
        }
        // Single flight: join the launch in progress, or become it.
        let (flight, leader) = {
            let mut flights = lock(&self.flights);
            match flights.get(&key) {
                Some(f) => (Arc::clone(f), false),
                None => {
                    let f = Arc::new(Flight::default());
                    flights.insert(key.clone(), Arc::clone(&f));
                    (f, true)
                }
            }
        };
        if !leader {
            #[cfg(test)]
            self.joined
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return flight.wait();
        }
        let outcome = self.launch_for(&key, &sd, trace);
        lock(&self.flights).remove(&key);
        flight.finish(outcome.clone());
        outcome
    }

    fn launch_for(
        &self,
        key: &BackendKey,
        sd: &ServiceDefinition,
        trace: &TraceContext,
    ) -> RouteOutcome {
        // Another flight may have registered a backend since our miss.
        if let Some(handle) = self.hit(key, trace) {
            return Self::negotiated(key, handle);
        }
        if let Err(retry_after) = self.charge_budget(key) {
            return RouteOutcome::Refused {
                code: ErrorCode::RateLimited,
                reason: format!(
                    "{key}: {} launch attempts within {:?}",
                    self.options.spawn_budget, self.options.budget_window
                ),
                retry_after_ms: u64::try_from(retry_after.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            };
        }
        let slot = self.slots.take(self.options.max_concurrent_launches);
        *lock(&self.launches) += 1;
        let launched = self.launcher.launch(key, sd, trace);
        drop(slot);
        match launched {
            Ok(handle) => {
                lock(&self.attempts).remove(key);
                if let Some(old) = self.registry.insert(key.clone(), handle.clone()) {
                    // Only possible if the old one was removed concurrently
                    // and re-added; never leave two backends for one key.
                    if old.pid() != handle.pid() {
                        old.shutdown(self.options.shutdown_grace);
                    }
                }
                self.evict_beyond_cap(key);
                Self::negotiated(key, handle)
            }
            Err(e) => {
                let code = match &e {
                    LaunchError::Invalid(ValidationError::VersionRefused {
                        rule: VersionRule::AllowList,
                        ..
                    }) => ErrorCode::VersionBlocked,
                    LaunchError::Invalid(_) => ErrorCode::VersionUnsupported,
                    _ => ErrorCode::BackendSpawnFailed,
                };
                refused(code, e.to_string())
            }
        }
    }

    /// Records a launch attempt for `key`, or returns how long until one is
    /// allowed again.
    fn charge_budget(&self, key: &BackendKey) -> Result<(), Duration> {
        let now = Instant::now();
        let window = self.options.budget_window;
        let mut attempts = lock(&self.attempts);
        let recent = attempts.entry(key.clone()).or_default();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            recent.pop_front();
        }
        if recent.len() >= self.options.spawn_budget as usize {
            let oldest = recent.front().copied().unwrap_or(now);
            return Err(window.saturating_sub(now.duration_since(oldest)));
        }
        recent.push_back(now);
        Ok(())
    }

    fn evict_beyond_cap(&self, keep: &BackendKey) {
        let Some(cap) = self.options.max_live_backends else {
            return;
        };
        while self.registry.len() > cap.max(1) {
            let Some((key, handle)) = self.registry.least_recently_used(keep) else {
                return;
            };
            if self.registry.remove_if_pid(&key, handle.pid()).is_some() {
                log::info!(
                    "evicting least recently used backend {key} pid {}",
                    handle.pid()
                );
                handle.shutdown(self.options.shutdown_grace);
            }
        }
    }

    /// Shuts down every registered backend gracefully.
    pub fn shutdown_all(&self) {
        for (key, entry) in self.registry.items() {
            if self
                .registry
                .remove_if_pid(&key, entry.handle.pid())
                .is_some()
            {
                entry.handle.shutdown(self.options.shutdown_grace);
            }
        }
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
