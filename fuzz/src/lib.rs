//! Shared parts of the fuzz targets: an allocator that turns an outsized
//! allocation into a finding, and the fixed values the targets and their
//! seed corpus agree on.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;

use running_process::{DaemonProcess, Endpoint};

/// Largest single allocation any decoder may make for an input of at most
/// `-max_len` bytes (scripts/fuzz.sh keeps that at 64 KiB or less). A body
/// length taken from the input and allocated before it is checked, or any
/// other amplification, aborts the run, and libFuzzer keeps the input.
pub const ALLOCATION_CAP: usize = 1 << 20;

/// The system allocator with [`ALLOCATION_CAP`] enforced on every request.
pub struct CappedAlloc;

fn over_cap(size: usize) -> bool {
    // A panic is already a finding; its backtrace may allocate freely.
    size > ALLOCATION_CAP && !std::thread::panicking()
}

fn refuse(size: usize) -> ! {
    // No formatting here: the allocator must not allocate.
    let _ = std::io::stderr().write_all(b"fuzz: allocation over the 1 MiB cap: ");
    let mut digits = [0u8; 20];
    let mut n = size;
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let _ = std::io::stderr().write_all(&digits[at..]);
    let _ = std::io::stderr().write_all(b" bytes\n");
    std::process::abort()
}

unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if over_cap(layout.size()) {
            refuse(layout.size());
        }
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if over_cap(layout.size()) {
            refuse(layout.size());
        }
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if over_cap(new_size) {
            refuse(new_size);
        }
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

/// The nonce of the probe that the `probe` target answers; the seed corpus
/// holds responses to it.
pub const PROBE_NONCE: [u8; 32] = *b"running-process fuzz probe nonce";

/// A valid identity, for building answers to probe requests the fuzzer finds.
pub fn sample_identity() -> DaemonProcess {
    DaemonProcess {
        pid: 4242,
        exe_path: "/opt/echo/1.0.0/echo".to_owned(),
        exe_sha256: [0xab; 32],
        exe_blake3: Some([0xcd; 32]),
        boot_id: "0d3c9a52-6c1e-4c2f-9a43-2f1d2a7b9e10".to_owned(),
        ipc_endpoint: Endpoint::new("shared", "/run/user/1000/rp/be.sock")
            .expect("the sample endpoint is valid"),
        started_at_unix_ms: 1_764_000_000_000,
        idle_timeout_secs: Some(30),
    }
}
