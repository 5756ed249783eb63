//! The `.servicedef` store reader (`ServiceDefinition::load_file`) on a real
//! file in a private directory: its answer must be what the byte decoder
//! and the stem rule say for the file's content, with the decoder's error
//! carried through unchanged.
#![no_main]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use running_process::{DecodeError, ServiceDefinition, StoreError};

#[global_allocator]
static ALLOC: rp_fuzz::CappedAlloc = rp_fuzz::CappedAlloc;

const STEM: &str = "fuzz";

/// The definition file, in a private directory of this run that is removed
/// when the fuzzer exits; in memory (`/dev/shm`) where there is one, since
/// a disk-backed file system makes every run wait on the file system.
fn store() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("rp-fuzz-servicedef-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(base)
            .expect("temporary directory")
            .keep();
        SCRATCH.set(dir.clone()).expect("set once");
        // libFuzzer ends with exit(): no destructor runs, atexit handlers do.
        unsafe { libc::atexit(remove_scratch) };
        dir.join(format!("{STEM}.servicedef"))
    })
}

static SCRATCH: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_scratch() {
    if let Some(dir) = SCRATCH.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fuzz_target!(|data: &[u8]| {
    let path = store();
    std::fs::write(path, data).expect("write the definition file");
    let loaded = ServiceDefinition::load_file(path);
    match (ServiceDefinition::from_bytes(data), loaded) {
        (Ok(expected), Ok(sd)) => {
            assert_eq!(sd, expected);
            assert_eq!(sd.service_name, STEM);
        }
        (
            Ok(expected),
            Err(StoreError::StemMismatch {
                stem,
                service_name,
                path: at,
            }),
        ) => {
            assert_ne!(expected.service_name, STEM);
            assert_eq!((stem.as_str(), service_name), (STEM, expected.service_name));
            assert_eq!(&at, path);
        }
        (Err(DecodeError::Invalid(expected)), Err(StoreError::Invalid(e))) => {
            assert_eq!(e, expected)
        }
        (Err(expected), Err(StoreError::Decode { source, path: at })) => {
            assert!(!matches!(expected, DecodeError::Invalid(_)));
            assert_eq!(source, expected);
            assert_eq!(&at, path);
        }
        (expected, got) => panic!("decoder says {expected:?}, store says {got:?}"),
    }
});
