//! The router's logic against the fake launcher: admission, hits, single
//! flight, the spawn budget, the launch cap and eviction, in milliseconds.
//! The same behaviour with real processes is in `tests/test_router.py`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::contract::service::Isolation;
use crate::reuse::fake::FakeLauncher;
use crate::sys::reaper::Exit;

fn version(text: &str) -> Version {
    Version::parse(text).unwrap()
}

fn definition(name: &str) -> ServiceDefinition {
    ServiceDefinition {
        service_name: name.into(),
        binary_path: format!("/opt/{name}/1.0.0/backend").into(),
        per_version_binary_dir: format!("/opt/{name}/1.0.0").into(),
        isolation: Isolation::Shared,
        min_version: Some(version("1.0.0")),
        version_allow_list: ["1.0.0", "1.1.0", "2.0.0"].map(version).to_vec(),
        ..ServiceDefinition::default()
    }
}

fn router(options: RouterOptions) -> (HelloRouter, Arc<FakeLauncher>) {
    let launcher = Arc::new(FakeLauncher::default());
    let catalog = Catalog::Map(
        ["echo", "other", "third"]
            .iter()
            .map(|n| ((*n).to_owned(), definition(n)))
            .collect(),
    );
    let router = HelloRouter::new(
        Arc::clone(&launcher) as Arc<dyn BackendLauncher>,
        catalog,
        options,
    );
    (router, launcher)
}

fn route(router: &HelloRouter, service: &str, version: &str) -> RouteOutcome {
    router.route(service, version, &TraceContext::default())
}

fn pid_of(outcome: &RouteOutcome) -> u32 {
    match outcome {
        RouteOutcome::Negotiated { handle, .. } => handle.pid(),
        RouteOutcome::Refused { code, reason, .. } => panic!("refused {code:?}: {reason}"),
    }
}

fn code_of(outcome: &RouteOutcome) -> ErrorCode {
    match outcome {
        RouteOutcome::Refused { code, .. } => *code,
        RouteOutcome::Negotiated { .. } => panic!("negotiated"),
    }
}

fn key(service: &str, version: &str) -> BackendKey {
    BackendKey::for_service(&definition(service), version).unwrap()
}

#[test]
fn requests_are_refused_before_any_launch() {
    let (router, launcher) = router(RouterOptions::default());
    let cases = [
        ("Echo", "1.0.0", ErrorCode::ServiceUnknown),
        ("missing", "1.0.0", ErrorCode::ServiceUnknown),
        ("echo", "1.0", ErrorCode::VersionUnsupported),
        ("echo", "0.9.0", ErrorCode::VersionUnsupported),
        ("echo", "1.2.0", ErrorCode::VersionBlocked),
    ];
    for (service, version, code) in cases {
        assert_eq!(
            code_of(&route(&router, service, version)),
            code,
            "{service} {version}"
        );
    }
    assert_eq!(launcher.launches.load(Ordering::SeqCst), 0);
    assert_eq!(router.launch_count(), 0);
}

#[test]
fn a_live_backend_is_reused() {
    let (router, launcher) = router(RouterOptions::default());
    let first = pid_of(&route(&router, "echo", "1.0.0"));
    assert_eq!(pid_of(&route(&router, "echo", "1.0.0")), first);
    assert_ne!(pid_of(&route(&router, "echo", "1.1.0")), first);
    assert_eq!(launcher.launches.load(Ordering::SeqCst), 2);
}

#[test]
fn a_backend_that_ended_is_replaced() {
    let (router, launcher) = router(RouterOptions::default());
    let first = pid_of(&route(&router, "echo", "1.0.0"));
    launcher.processes(&key("echo", "1.0.0"))[0].end(Exit::Code(0));
    let second = pid_of(&route(&router, "echo", "1.0.0"));
    assert_ne!(second, first);
    assert_eq!(router.registry().len(), 1);
}

#[test]
fn a_hit_that_fails_reverification_is_killed_and_replaced() {
    let (router, launcher) = router(RouterOptions {
        reverify: ReverifyPolicy::Always,
        ..RouterOptions::default()
    });
    let first = pid_of(&route(&router, "echo", "1.0.0"));
    assert_eq!(pid_of(&route(&router, "echo", "1.0.0")), first);
    let process = &launcher.processes(&key("echo", "1.0.0"))[0];
    process.fails_verification.store(true, Ordering::SeqCst);
    assert_ne!(pid_of(&route(&router, "echo", "1.0.0")), first);
    assert_eq!(process.kills.load(Ordering::SeqCst), 1);
}

#[test]
fn without_reverification_a_hit_costs_no_probe() {
    let (router, launcher) = router(RouterOptions::default());
    let first = pid_of(&route(&router, "echo", "1.0.0"));
    // A backend that would fail a probe is still handed out: the policy
    // checks liveness only.
    launcher.processes(&key("echo", "1.0.0"))[0]
        .fails_verification
        .store(true, Ordering::SeqCst);
    assert_eq!(pid_of(&route(&router, "echo", "1.0.0")), first);
}

/// Waits (up to a minute, which only a hang exhausts) until `done` holds.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn concurrent_requests_for_one_key_share_one_launch() {
    let (router, launcher) = router(RouterOptions::default());
    let router = Arc::new(router);
    launcher.hold();
    let askers: Vec<_> = (0..8)
        .map(|_| {
            let router = Arc::clone(&router);
            std::thread::spawn(move || pid_of(&route(&router, "echo", "1.0.0")))
        })
        .collect();
    // Every request is either launching (held at the gate) or waiting for
    // the launch in flight; without single flight all eight would launch.
    wait_until("all requests are in", || {
        launcher.waiting() + router.joined.load(Ordering::SeqCst) == 8
    });
    assert_eq!(launcher.waiting(), 1);
    launcher.release();
    let pids: Vec<u32> = askers.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(pids.iter().all(|p| *p == pids[0]), "{pids:?}");
    assert_eq!(launcher.launches.load(Ordering::SeqCst), 1);
}

#[test]
fn the_spawn_budget_limits_failing_launches_and_a_success_refunds_it() {
    let (router, launcher) = router(RouterOptions {
        spawn_budget: 2,
        budget_window: Duration::from_secs(3600),
        ..RouterOptions::default()
    });
    launcher.failing.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        assert_eq!(
            code_of(&route(&router, "echo", "1.0.0")),
            ErrorCode::BackendSpawnFailed
        );
    }
    match route(&router, "echo", "1.0.0") {
        RouteOutcome::Refused {
            code: ErrorCode::RateLimited,
            retry_after_ms,
            ..
        } => assert!(retry_after_ms > 0 && retry_after_ms <= 3_600_000),
        other => panic!("{other:?}"),
    }
    assert_eq!(launcher.launches.load(Ordering::SeqCst), 2);
    // Another key has a budget of its own; its success clears only its own.
    launcher.failing.store(false, Ordering::SeqCst);
    pid_of(&route(&router, "other", "1.0.0"));
    assert_eq!(
        code_of(&route(&router, "echo", "1.0.0")),
        ErrorCode::RateLimited
    );
}

#[test]
fn a_success_refunds_the_keys_budget() {
    let (router, launcher) = router(RouterOptions {
        spawn_budget: 2,
        budget_window: Duration::from_secs(3600),
        ..RouterOptions::default()
    });
    launcher.failing.store(true, Ordering::SeqCst);
    code_of(&route(&router, "echo", "1.0.0"));
    launcher.failing.store(false, Ordering::SeqCst);
    pid_of(&route(&router, "echo", "1.0.0"));
    launcher.processes(&key("echo", "1.0.0"))[0].end(Exit::Code(1));
    launcher.failing.store(true, Ordering::SeqCst);
    // Two failures are allowed again after the success.
    for _ in 0..2 {
        assert_eq!(
            code_of(&route(&router, "echo", "1.0.0")),
            ErrorCode::BackendSpawnFailed
        );
    }
    assert_eq!(
        code_of(&route(&router, "echo", "1.0.0")),
        ErrorCode::RateLimited
    );
}

#[test]
fn launches_across_keys_respect_the_global_cap() {
    let (router, launcher) = router(RouterOptions {
        max_concurrent_launches: 1,
        ..RouterOptions::default()
    });
    let router = Arc::new(router);
    launcher.hold();
    let askers: Vec<_> = ["echo", "other", "third"]
        .iter()
        .map(|service| {
            let router = Arc::clone(&router);
            std::thread::spawn(move || pid_of(&route(&router, service, "1.0.0")))
        })
        .collect();
    // One launch runs (held at the gate), the two others wait for a slot;
    // without the cap all three would be at the gate.
    wait_until("all launches are in", || {
        launcher.waiting() + router.slots.waiting.load(Ordering::SeqCst) == 3
    });
    assert_eq!(launcher.waiting(), 1);
    launcher.release();
    for asker in askers {
        asker.join().unwrap();
    }
    assert_eq!(launcher.launches.load(Ordering::SeqCst), 3);
    assert_eq!(launcher.max_concurrent.load(Ordering::SeqCst), 1);
}

#[test]
fn beyond_the_cap_the_least_recently_used_backend_is_shut_down() {
    let (router, launcher) = router(RouterOptions {
        max_live_backends: Some(2),
        ..RouterOptions::default()
    });
    pid_of(&route(&router, "echo", "1.0.0"));
    pid_of(&route(&router, "other", "1.0.0"));
    // Using echo again makes "other" the least recently used.
    pid_of(&route(&router, "echo", "1.0.0"));
    pid_of(&route(&router, "third", "1.0.0"));
    let other = &launcher.processes(&key("other", "1.0.0"))[0];
    assert_eq!(other.terminations.load(Ordering::SeqCst), 1);
    assert!(
        launcher.processes(&key("echo", "1.0.0"))[0]
            .terminations
            .load(Ordering::SeqCst)
            == 0
    );
    assert_eq!(router.registry().len(), 2);
    assert!(router.registry().get(&key("other", "1.0.0")).is_none());
}

#[test]
fn shutdown_all_terminates_every_backend_gracefully() {
    let (router, launcher) = router(RouterOptions::default());
    pid_of(&route(&router, "echo", "1.0.0"));
    pid_of(&route(&router, "other", "1.0.0"));
    router.shutdown_all();
    for service in ["echo", "other"] {
        let process = &launcher.processes(&key(service, "1.0.0"))[0];
        assert_eq!(process.terminations.load(Ordering::SeqCst), 1);
        assert_eq!(process.kills.load(Ordering::SeqCst), 0);
    }
    assert!(router.registry().is_empty());
}
