//! The backend endpoint allocator: an unguessable, private Unix socket path for
//! every backend.
//!
//! Each path is `{socket_dir}/rpb-v1-{user_sid_hash}-be-{32 hex}.sock` with 128
//! bits from the operating system's random source, in a directory that is
//! created 0700 and refused when it is a symlink, has another owner, or grants
//! group/other access. Where that path would not fit `sun_path` (a socket
//! directory longer than 42 bytes, e.g. under a 20-character
//! `XDG_RUNTIME_DIR` such as `/run/user/4294967294`), the compact name
//! `rpb-v1-be-{32 hex}.sock` is used instead (up to 59 bytes of directory);
//! a path that fits neither is an error before anything touches the disk. The allocator remembers the paths it handed out
//! (and any reserved explicitly) until they are released, and skips paths that
//! exist on disk; it does not bind sockets or remove files.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::contract::clock;
use crate::contract::error::{AllocError, ValidationError};
use crate::contract::identity::{validate_namespace_id, Endpoint};
pub use crate::contract::names::check_sun_path;
use crate::contract::names::{
    backend_socket_name, compact_backend_socket_name, validate_user_sid_hash,
    BACKEND_SOCKET_NAME_LEN, COMPACT_BACKEND_SOCKET_NAME_LEN,
};
use crate::sys::fs::ensure_private_dir;
use crate::sys::host;

/// Attempts `allocate` makes by default before giving up.
pub const DEFAULT_MAX_ATTEMPTS: NonZeroU32 = NonZeroU32::new(16).unwrap();

fn path_to_string(path: &Path) -> Result<String, ValidationError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| ValidationError::Identity {
            field: "path",
            value: path.to_string_lossy().into_owned(),
            reason: "socket paths must be UTF-8 (the wire format carries them as strings)"
                .to_owned(),
        })
}

/// Hands out backend endpoint paths in one namespace. Thread-safe.
#[derive(Debug)]
pub struct BackendEndpointAllocator {
    user_sid_hash: String,
    namespace_id: String,
    socket_dir: PathBuf,
    /// Directory the private tree hangs from (checked, never created private).
    base: Option<PathBuf>,
    max_attempts: NonZeroU32,
    reserved: Mutex<HashSet<PathBuf>>,
}

impl BackendEndpointAllocator {
    /// An allocator for the user's socket directory (see
    /// [`host::socket_dir`]).
    pub fn new(
        user_sid_hash: &str,
        namespace_id: &str,
        max_attempts: NonZeroU32,
    ) -> Result<Self, AllocError> {
        let (dir, base) = host::socket_dir_with_base();
        Self::build(user_sid_hash, namespace_id, dir, Some(base), max_attempts)
    }

    /// An allocator for an explicit socket directory (its parent is taken as
    /// the base; only the directory itself must be private).
    pub fn with_socket_dir(
        user_sid_hash: &str,
        namespace_id: &str,
        socket_dir: &Path,
        max_attempts: NonZeroU32,
    ) -> Result<Self, AllocError> {
        Self::build(
            user_sid_hash,
            namespace_id,
            socket_dir.to_path_buf(),
            None,
            max_attempts,
        )
    }

    /// An allocator for `socket_dir`, checking every component below `base`
    /// (default: only `socket_dir` itself).
    pub fn in_dir(
        user_sid_hash: &str,
        namespace_id: &str,
        socket_dir: &Path,
        base: Option<&Path>,
        max_attempts: NonZeroU32,
    ) -> Result<Self, AllocError> {
        Self::build(
            user_sid_hash,
            namespace_id,
            socket_dir.to_path_buf(),
            base.map(Path::to_path_buf),
            max_attempts,
        )
    }

    fn build(
        user_sid_hash: &str,
        namespace_id: &str,
        socket_dir: PathBuf,
        base: Option<PathBuf>,
        max_attempts: NonZeroU32,
    ) -> Result<Self, AllocError> {
        validate_user_sid_hash(user_sid_hash)?;
        validate_namespace_id(namespace_id)?;
        path_to_string(&socket_dir)?;
        Ok(BackendEndpointAllocator {
            user_sid_hash: user_sid_hash.to_owned(),
            namespace_id: namespace_id.to_owned(),
            socket_dir,
            base,
            max_attempts,
            reserved: Mutex::new(HashSet::new()),
        })
    }

    pub fn user_sid_hash(&self) -> &str {
        &self.user_sid_hash
    }

    pub fn namespace_id(&self) -> &str {
        &self.namespace_id
    }

    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts.get()
    }

    /// The reserved set. A panic while it was held cannot leave it
    /// half-updated (every change is one insert or remove), so a poisoned lock
    /// is simply taken over.
    fn reserved(&self) -> MutexGuard<'_, HashSet<PathBuf>> {
        self.reserved
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Allocates an endpoint with 128 bits from the operating system.
    pub fn allocate(&self) -> Result<Endpoint, AllocError> {
        self.allocate_with(|| {
            let mut token = [0u8; 16];
            clock::fill_random(&mut token)?;
            Ok::<_, AllocError>(token)
        })
    }

    /// Allocates an endpoint with tokens drawn from `random` (for tests that
    /// need determinism). Each attempt draws one token.
    pub fn allocate_with<E>(
        &self,
        mut random: impl FnMut() -> Result<[u8; 16], E>,
    ) -> Result<Endpoint, E>
    where
        E: From<AllocError>,
    {
        // The file names have fixed lengths, so the length check needs no
        // random draw and happens before the directory is touched. The v1
        // name where it fits; else the compact one (no per-user hash, which
        // the private directory makes redundant); else an error.
        let fits = |len: usize| check_sun_path(&self.socket_dir.join(OsStr::new(&"x".repeat(len))));
        let compact = match (
            fits(BACKEND_SOCKET_NAME_LEN),
            fits(COMPACT_BACKEND_SOCKET_NAME_LEN),
        ) {
            (Ok(()), _) => false,
            (Err(_), Ok(())) => true,
            (Err(_), Err(e)) => {
                return Err(match e {
                    AllocError::PathTooLong { length, limit, .. } => AllocError::PathTooLong {
                        path: self.socket_dir.join("rpb-v1-be-<32 hex>.sock"),
                        length,
                        limit,
                    },
                    other => other,
                }
                .into())
            }
        };
        ensure_private_dir(&self.socket_dir, self.base.as_deref()).map_err(AllocError::from)?;
        for _ in 0..self.max_attempts.get() {
            let token = random()?;
            let token_hex = hex::encode(token);
            let name = if compact {
                compact_backend_socket_name(&token_hex)
            } else {
                backend_socket_name(&self.user_sid_hash, &token_hex)
            }
            .map_err(AllocError::from)?;
            let path = self.socket_dir.join(name);
            let path_text = path_to_string(&path).map_err(AllocError::from)?;
            let mut reserved = self.reserved();
            if reserved.contains(&path) || std::fs::symlink_metadata(&path).is_ok() {
                drop(reserved);
                // Never log under the lock: a record may need the Python GIL,
                // which a thread waiting for this lock may hold.
                log::debug!("endpoint collision at {}; drawing again", path.display());
                continue;
            }
            reserved.insert(path.clone());
            drop(reserved);
            log::debug!(
                "allocated endpoint {} in {}",
                path.display(),
                self.namespace_id
            );
            return Ok(Endpoint {
                namespace_id: self.namespace_id.clone(),
                path: path_text,
            });
        }
        Err(AllocError::Exhausted {
            attempts: self.max_attempts.get(),
            dir: self.socket_dir.clone(),
        }
        .into())
    }

    /// Marks `path` as taken so `allocate` never returns it. Returns whether it
    /// was newly reserved.
    pub fn reserve_path(&self, path: &Path) -> bool {
        self.reserved().insert(path.to_path_buf())
    }

    /// Forgets a reserved path. Returns whether it was reserved.
    pub fn release(&self, path: &Path) -> bool {
        self.reserved().remove(path)
    }

    /// Whether `path` is currently reserved.
    pub fn is_reserved(&self, path: &Path) -> bool {
        self.reserved().contains(path)
    }

    /// How many paths are reserved.
    pub fn reserved_count(&self) -> usize {
        self.reserved().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::names::SUN_PATH_MAX;
    use std::os::unix::fs::PermissionsExt;

    const HASH: &str = "0123456789abcdef";

    fn private_tmp() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        tmp
    }

    #[test]
    fn allocates_unique_paths_and_releases() {
        let tmp = private_tmp();
        let dir = tmp.path().join("broker");
        let alloc =
            BackendEndpointAllocator::with_socket_dir(HASH, "shared", &dir, DEFAULT_MAX_ATTEMPTS)
                .unwrap();
        let a = alloc.allocate().unwrap();
        let b = alloc.allocate().unwrap();
        assert_ne!(a.path(), b.path());
        assert_eq!(a.namespace_id(), "shared");
        assert!(a.path().starts_with(dir.to_str().unwrap()));
        assert_eq!(alloc.reserved_count(), 2);
        assert!(alloc.release(Path::new(a.path())));
        assert!(!alloc.release(Path::new(a.path())));
        assert_eq!(alloc.reserved_count(), 1);
    }

    #[test]
    fn collisions_retry_then_exhaust() {
        let tmp = private_tmp();
        let dir = tmp.path().join("broker");
        let alloc = BackendEndpointAllocator::with_socket_dir(
            HASH,
            "shared",
            &dir,
            NonZeroU32::new(3).unwrap(),
        )
        .unwrap();
        let first = alloc
            .allocate_with(|| Ok::<_, AllocError>([1u8; 16]))
            .unwrap();
        let mut draws = 0;
        let err = alloc
            .allocate_with(|| {
                draws += 1;
                Ok::<_, AllocError>([1u8; 16])
            })
            .unwrap_err();
        assert_eq!(draws, 3);
        assert!(matches!(err, AllocError::Exhausted { attempts: 3, .. }));
        // An existing file is a collision too.
        alloc.release(Path::new(first.path()));
        std::fs::write(first.path(), b"").unwrap();
        assert!(alloc
            .allocate_with(|| Ok::<_, AllocError>([1u8; 16]))
            .is_err());
        let mut seq = [[1u8; 16], [2u8; 16]].into_iter();
        let next = alloc
            .allocate_with(|| Ok::<_, AllocError>(seq.next().unwrap()))
            .unwrap();
        assert!(next
            .path()
            .ends_with(&format!("-be-{}.sock", "02".repeat(16))));
    }

    #[test]
    fn too_long_dir_fails_before_touching_disk() {
        let tmp = private_tmp();
        let dir = tmp.path().join("d".repeat(60));
        let alloc =
            BackendEndpointAllocator::with_socket_dir(HASH, "shared", &dir, DEFAULT_MAX_ATTEMPTS)
                .unwrap();
        let err = alloc.allocate().unwrap_err();
        assert!(
            matches!(
                err,
                AllocError::PathTooLong {
                    limit: SUN_PATH_MAX,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!dir.exists());
    }

    /// A socket directory whose length leaves room for the compact name
    /// only: the compact name is used; one byte shorter, the v1 name.
    #[test]
    fn a_directory_too_long_for_the_v1_name_gets_the_compact_one() {
        use crate::contract::names::{is_backend_socket_name, COMPACT_BACKEND_SOCKET_NAME_LEN};
        let tmp = private_tmp();
        let base_len = tmp.path().as_os_str().len() + 1;
        let exact = SUN_PATH_MAX - 1 - BACKEND_SOCKET_NAME_LEN;
        assert!(
            exact > base_len,
            "temporary directory too long for this test"
        );
        for (dir_len, compact) in [(exact, false), (exact + 1, true)] {
            let dir = tmp.path().join("d".repeat(dir_len - base_len));
            assert_eq!(dir.as_os_str().len(), dir_len);
            let alloc = BackendEndpointAllocator::with_socket_dir(
                HASH,
                "shared",
                &dir,
                DEFAULT_MAX_ATTEMPTS,
            )
            .unwrap();
            let endpoint = alloc.allocate().unwrap();
            let name = Path::new(endpoint.path())
                .file_name()
                .unwrap()
                .to_str()
                .unwrap();
            assert!(is_backend_socket_name(name), "{name}");
            assert_eq!(name.starts_with("rpb-v1-be-"), compact, "{name}");
            assert!(endpoint.path().len() <= SUN_PATH_MAX);
            if compact {
                assert_eq!(name.len(), COMPACT_BACKEND_SOCKET_NAME_LEN);
            }
        }
    }
}
