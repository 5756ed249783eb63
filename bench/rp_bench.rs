//! `rp-bench`: the Rust side of the benchmark harness (`bench/run.py`).
//!
//! Each subcommand measures one figure and prints one JSON object on stdout:
//! `{"samples_ns": [...], ...}` with one sample per iteration. The harness
//! computes medians and percentiles, so this program only times.
//!
//! ```text
//! rp-bench cold     BINARY WORKDIR N   old floor, fair floor and verified launch, alternating
//! rp-bench floor    BINARY WORKDIR N   fork/exec + connect loop, no verification
//! rp-bench launch   BINARY WORKDIR N   verified cold launch (CommandBackendLauncher)
//! rp-bench hit      BINARY WORKDIR N   router hit: registry + pidfd liveness, no re-probe
//! rp-bench probe    BINARY WORKDIR N   probe round trip (connect, request, response, nonce check)
//! rp-bench verify   BINARY WORKDIR N   BackendHandle::verify (peer creds, /proc checks, probe)
//! rp-bench racer    BINARY WORKDIR GO QUIT  one of N processes racing on a pool key
//! rp-bench sha256   FILE N             sha256_file of FILE
//! rp-bench digest-cache FILE N         the launcher's digest lookup for an unchanged FILE
//! rp-bench digest-env BINARY           the digest variable the launcher passes for BINARY
//! rp-bench router-curve KEYS N         router hits with KEYS backends registered
//!                                      (stand-in handles: the router's own cost)
//! ```
//!
//! BINARY must sit in a per-version directory (its parent) that passes the
//! launcher's policy; WORKDIR is a private (0700) directory for sockets and
//! logs.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use running_process::bench_support::{
    cached_digests, fake_handle, format_exe_digest, FakeLauncher, FileStamp,
};
use running_process::env::{
    ENV_BACKEND_NAMESPACE, ENV_BACKEND_PIPE, ENV_EXE_DIGEST, ENV_INSTANCE, ENV_SERVICE_NAME,
    ENV_SERVICE_VERSION,
};
use running_process::wire::probe_stream;
use running_process::{
    sha256_file, user_sid_hash, BackendKey, BrokerInstanceKey, Isolation, ServiceDefinition,
    TraceContext,
};
use running_process::{
    BackendHandle, BackendLauncher, CommandBackendLauncher, LaunchOptions, Need,
};
use running_process::{BackendRegistry, Catalog, HelloRouter, RouteOutcome, RouterOptions};

const SERVICE: &str = "benchecho";
const VERSION: &str = "1.0.0";
const GRACE: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(30);

type Failure = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rp-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<String, Failure> {
    let arg = |i: usize| -> Result<&str, Failure> {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| "usage: see the module docs of bench/rp_bench.rs".into())
    };
    let count = |i: usize| -> Result<usize, Failure> { Ok(arg(i)?.parse()?) };
    if arg(0)? == "racer" {
        return racer(arg(1)?, arg(2)?, arg(3)?.parse()?, arg(4)?.parse()?);
    }
    if arg(0)? == "cold" {
        return Bench::new(arg(1)?, arg(2)?)?.cold(Path::new(arg(2)?), count(3)?);
    }
    let samples = match arg(0)? {
        "floor" => floor(Path::new(arg(1)?), Path::new(arg(2)?), count(3)?, None)?,
        "digest-env" => {
            return Ok(format!(
                "{{\"value\": \"{}\"}}",
                launcher_digest(Path::new(arg(1)?))?
            ))
        }
        "launch" => Bench::new(arg(1)?, arg(2)?)?.launches(count(3)?)?,
        "hit" => Bench::new(arg(1)?, arg(2)?)?.router_hits(count(3)?)?,
        "probe" => Bench::new(arg(1)?, arg(2)?)?.probes(count(3)?)?,
        "verify" => Bench::new(arg(1)?, arg(2)?)?.verifies(count(3)?)?,
        "sha256" => sha256(Path::new(arg(1)?), count(2)?)?,
        "digest-cache" => digest_cache(Path::new(arg(1)?), count(2)?)?,
        "router-curve" => router_curve(count(1)?, count(2)?)?,
        other => return Err(format!("unknown subcommand {other:?}").into()),
    };
    Ok(format!("{{\"samples_ns\": {}}}", json_list(&samples)))
}

fn nanos(d: Duration) -> u128 {
    d.as_nanos()
}

fn json_list(samples: &[u128]) -> String {
    let list: Vec<String> = samples.iter().map(|s| s.to_string()).collect();
    format!("[{}]", list.join(", "))
}

/// The floor: what any launcher must pay. `Command` fork/exec of the binary
/// in a new session with the contract's variables, then a tight connect loop
/// until the endpoint accepts. Nothing is checked. With `digest`, the
/// backend also gets the executable digest the launcher passes (the fair
/// floor: the backend then does the same work as under the launcher, and
/// does not hash itself); without it, the backend hashes its own binary
/// (the old floor).
fn floor(
    binary: &Path,
    workdir: &Path,
    n: usize,
    digest: Option<&str>,
) -> Result<Vec<u128>, Failure> {
    let instance = BrokerInstanceKey::shared().id();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let socket = workdir.join(format!("floor-{i}.sock"));
        let start = Instant::now();
        let mut command = Command::new(binary);
        if let Some(digest) = digest {
            command.env(ENV_EXE_DIGEST, digest);
        }
        let mut child = command
            .env(ENV_SERVICE_NAME, SERVICE)
            .env(ENV_SERVICE_VERSION, VERSION)
            .env(ENV_BACKEND_PIPE, &socket)
            .env(ENV_BACKEND_NAMESPACE, "shared")
            .env(ENV_INSTANCE, &instance)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let deadline = start + TIMEOUT;
        loop {
            if UnixStream::connect(&socket).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("floor: the backend never accepted".into());
            }
            std::thread::yield_now();
        }
        samples.push(nanos(start.elapsed()));
        // SIGTERM: the backends exit cleanly and remove their socket.
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::TERM,
        )?;
        child.wait()?;
        let _ = std::fs::remove_file(&socket);
    }
    Ok(samples)
}

/// The value of the digest variable the launcher passes for `binary` (once
/// its stamp vouches for the digest, as for a settled binary).
fn launcher_digest(binary: &Path) -> Result<String, Failure> {
    let file = File::open(binary)?;
    let stamp = FileStamp::of(&file.metadata()?);
    let (digests, vouches) = cached_digests(&file, stamp, Need::Both)?;
    let (true, Some(sha256)) = (vouches, digests.sha256) else {
        return Err("the binary has not settled; the launcher would not pass its digest".into());
    };
    Ok(format_exe_digest(&sha256, &digests.blake3, &stamp))
}

/// `HelloRouter::route` hits with `keys` backends registered. The handles
/// stand in for processes (a real backend per key would measure the
/// machine's memory, not the router): what grows with the keys is the
/// catalog lookup and the registry, which this measures.
fn router_curve(keys: usize, n: usize) -> Result<Vec<u128>, Failure> {
    let sd = ServiceDefinition {
        service_name: SERVICE.into(),
        binary_path: "/opt/bench/backend".into(),
        per_version_binary_dir: "/opt/bench".into(),
        isolation: Isolation::Shared,
        ..ServiceDefinition::default()
    };
    let registry = Arc::new(BackendRegistry::new());
    let versions: Vec<String> = (0..keys.max(1)).map(|i| format!("1.0.{i}")).collect();
    for (i, version) in versions.iter().enumerate() {
        let key = BackendKey::for_service(&sd, version)?;
        let (handle, _process) = fake_handle(&key, 10_000 + i as u32);
        registry.insert(key, handle);
    }
    let router = HelloRouter::with_registry(
        Arc::new(FakeLauncher::default()),
        Catalog::from_definitions([(SERVICE.to_owned(), sd)])?,
        RouterOptions::default(),
        registry,
    );
    let trace = TraceContext::default();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        // A stride through the keys, so that lookups do not stay in cache.
        let version = &versions[i.wrapping_mul(7919) % versions.len()];
        let start = Instant::now();
        let outcome = router.route(SERVICE, version, &trace);
        samples.push(nanos(start.elapsed()));
        if !matches!(outcome, RouteOutcome::Negotiated { .. }) {
            return Err(format!("router-curve: {version} was not a hit").into());
        }
    }
    Ok(samples)
}

struct Bench {
    launcher: Arc<CommandBackendLauncher>,
    sd: ServiceDefinition,
    key: BackendKey,
    trace: TraceContext,
}

impl Bench {
    fn new(binary: &str, workdir: &str) -> Result<Bench, Failure> {
        let workdir = PathBuf::from(workdir);
        let launcher = CommandBackendLauncher::new(
            &user_sid_hash()?,
            LaunchOptions {
                ready_timeout: TIMEOUT,
                socket_dir: Some(workdir.join("s")),
                log_dir: Some(workdir.join("logs")),
                ..LaunchOptions::default()
            },
        )?;
        let parent = Path::new(binary)
            .parent()
            .ok_or("the binary has no parent directory")?;
        let sd = ServiceDefinition {
            service_name: SERVICE.into(),
            binary_path: binary.into(),
            per_version_binary_dir: parent.to_path_buf(),
            isolation: Isolation::Shared,
            ..ServiceDefinition::default()
        };
        let key = BackendKey::for_service(&sd, VERSION)?;
        Ok(Bench {
            launcher: Arc::new(launcher),
            sd,
            key,
            trace: TraceContext::default(),
        })
    }

    fn launch(&self) -> Result<BackendHandle, Failure> {
        Ok(self.launcher.launch(&self.key, &self.sd, &self.trace)?)
    }

    /// Verified cold launches, each shut down (untimed) before the next.
    fn launches(&self, n: usize) -> Result<Vec<u128>, Failure> {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            let handle = self.launch()?;
            samples.push(nanos(start.elapsed()));
            handle.shutdown(GRACE);
        }
        Ok(samples)
    }

    /// The old floor, the fair floor and the verified launch, alternating,
    /// so that all see the same machine:
    /// `{"floor_ns": [...], "fair_floor_ns": [...], "launch_ns": [...]}`.
    fn cold(&self, workdir: &Path, n: usize) -> Result<String, Failure> {
        let binary = PathBuf::from(&self.sd.binary_path);
        let digest = launcher_digest(&binary)?;
        let mut floors = Vec::with_capacity(n);
        let mut fair_floors = Vec::with_capacity(n);
        let mut launches = Vec::with_capacity(n);
        for _ in 0..n {
            floors.extend(floor(&binary, workdir, 1, None)?);
            fair_floors.extend(floor(&binary, workdir, 1, Some(&digest))?);
            launches.extend(self.launches(1)?);
        }
        Ok(format!(
            "{{\"floor_ns\": {}, \"fair_floor_ns\": {}, \"launch_ns\": {}}}",
            json_list(&floors),
            json_list(&fair_floors),
            json_list(&launches)
        ))
    }

    /// `HelloRouter::route` hits with the default policy (no re-probe).
    fn router_hits(&self, n: usize) -> Result<Vec<u128>, Failure> {
        let catalog = Catalog::Map(HashMap::from([(SERVICE.to_owned(), self.sd.clone())]));
        let launcher: Arc<dyn BackendLauncher> = self.launcher.clone();
        let router = HelloRouter::new(launcher, catalog, RouterOptions::default());
        let route = || match router.route(SERVICE, VERSION, &self.trace) {
            RouteOutcome::Negotiated { handle, .. } => Ok(handle),
            RouteOutcome::Refused { code, reason, .. } => {
                Err(format!("refused: {} {reason}", code.name()))
            }
        };
        let first = route()?;
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            let handle = route()?;
            samples.push(nanos(start.elapsed()));
            if handle.pid() != first.pid() {
                return Err("a hit returned another backend".into());
            }
        }
        router.shutdown_all();
        Ok(samples)
    }

    /// One probe per connection, as the contract does it.
    fn probes(&self, n: usize) -> Result<Vec<u128>, Failure> {
        let handle = self.launch()?;
        let path = PathBuf::from(&handle.endpoint().path);
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            let mut stream = UnixStream::connect(&path)?;
            let claimed = probe_stream(&mut stream, &self.trace, TIMEOUT)?;
            samples.push(nanos(start.elapsed()));
            if claimed.pid != handle.pid() {
                return Err("the probe answered with another pid".into());
            }
        }
        handle.shutdown(GRACE);
        Ok(samples)
    }

    fn verifies(&self, n: usize) -> Result<Vec<u128>, Failure> {
        let handle = self.launch()?;
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            handle.verify(&self.trace, TIMEOUT)?;
            samples.push(nanos(start.elapsed()));
        }
        handle.shutdown(GRACE);
        Ok(samples)
    }
}

/// One racer: sets up a pool on WORKDIR, says `ready`, waits for a byte on
/// the inherited descriptor GO, asks for the key, prints the pid it got and
/// when (CLOCK_MONOTONIC, comparable across processes), then waits for a
/// byte on QUIT so that its exit does not compete with the other racers.
fn racer(binary: &str, workdir: &str, go: i32, quit: i32) -> Result<String, Failure> {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    let bench = Bench::new(binary, workdir)?;
    let pool = running_process::BackendPool::new(
        Arc::clone(&bench.launcher),
        Some(PathBuf::from(workdir).join("state")),
    );
    // SAFETY: the harness passes these descriptors to this process only.
    let (mut go, mut quit) = unsafe { (File::from_raw_fd(go), File::from_raw_fd(quit)) };
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    let mut byte = [0u8; 1];
    go.read_exact(&mut byte)?;
    let handle = pool.get_or_launch(&bench.key, &bench.sd, &bench.trace)?;
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let done_ns = now.tv_sec as u128 * 1_000_000_000 + now.tv_nsec as u128;
    writeln!(
        stdout,
        "{{\"pid\": {}, \"done_ns\": {done_ns}}}",
        handle.pid()
    )?;
    stdout.flush()?;
    quit.read_exact(&mut byte)?;
    Ok(String::new())
}

fn sha256(file: &Path, n: usize) -> Result<Vec<u128>, Failure> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        std::hint::black_box(sha256_file(file)?);
        samples.push(nanos(start.elapsed()));
    }
    Ok(samples)
}

/// The launcher's digest lookup: an unchanged file (same inode, size and
/// times) is not hashed again. The first sample includes the one hash.
fn digest_cache(file: &Path, n: usize) -> Result<Vec<u128>, Failure> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let opened = File::open(file)?;
        let stamp = FileStamp::of(&opened.metadata()?);
        std::hint::black_box(cached_digests(&opened, stamp, Need::Both)?);
        samples.push(nanos(start.elapsed()));
    }
    Ok(samples)
}
