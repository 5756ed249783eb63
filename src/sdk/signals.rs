//! Process-wide SIGTERM/SIGINT routing to the server that asked last.
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread;

use signal_hook::consts::signal::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::accept::Shared;
use super::ShutdownReason;

struct Router {
    target: Mutex<Option<Weak<Shared>>>,
    /// When true, the signal's default action runs inside the handler.
    /// False only while a server waits for its first signal.
    default_action: Arc<AtomicBool>,
}

static ROUTER: Mutex<Option<&'static Router>> = Mutex::new(None);

fn router() -> io::Result<&'static Router> {
    let mut slot = ROUTER.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(router) = *slot {
        return Ok(router);
    }
    let default_action = Arc::new(AtomicBool::new(true));
    // Registered before the iterator, so on the first signal the
    // condition is still false and only the iterator acts.
    for sig in [SIGTERM, SIGINT] {
        signal_hook::flag::register_conditional_default(sig, Arc::clone(&default_action))?;
    }
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    let router: &'static Router = Box::leak(Box::new(Router {
        target: Mutex::new(None),
        default_action,
    }));
    thread::Builder::new()
        .name("rp-signals".to_owned())
        .spawn(move || {
            for sig in signals.forever() {
                deliver(router, sig);
            }
        })?;
    *slot = Some(router);
    Ok(router)
}

fn deliver(router: &Router, sig: i32) {
    let target = router
        .target
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    // Arm the default action first: from now on a signal terminates.
    router.default_action.store(true, Ordering::SeqCst);
    match target.and_then(|weak| weak.upgrade()) {
        Some(shared) => shared.request_stop(ShutdownReason::Signal(sig)),
        None => {
            let _ = signal_hook::low_level::emulate_default_handler(sig);
        }
    }
}

pub(super) fn route_to(shared: &Arc<Shared>) -> io::Result<()> {
    let router = router()?;
    let mut target = router.target.lock().unwrap_or_else(PoisonError::into_inner);
    *target = Some(Arc::downgrade(shared));
    router.default_action.store(false, Ordering::SeqCst);
    Ok(())
}

/// Called when `shared` has stopped: signals get their default action
/// back unless another server took over the routing.
pub(super) fn release(shared: &Shared) {
    let Some(router) = *ROUTER.lock().unwrap_or_else(PoisonError::into_inner) else {
        return;
    };
    let mut target = router.target.lock().unwrap_or_else(PoisonError::into_inner);
    if target
        .as_ref()
        .is_some_and(|weak| std::ptr::eq(weak.as_ptr(), shared))
    {
        router.default_action.store(true, Ordering::SeqCst);
        *target = None;
    }
}
