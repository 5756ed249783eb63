//! Hashing executables: SHA-256 streamed in fixed-size chunks, and a
//! per-process cache of digests keyed by (device, inode) and vouched for by
//! the file's stamp, so an unchanged binary is hashed once per process.
//!
//! What it does not do: it never trusts a digest merely read from somewhere
//! (a manifest, the environment); only [`remember_digest`] seeds the cache,
//! and its callers prove the digest first.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};

use crate::contract::env::ENV_SETTLE_MS;
use crate::contract::error::FsError;
use crate::contract::stamp::FileStamp;

/// How far apart two writes must be for a file system with nanosecond
/// timestamps to stamp them differently, with a margin: file timestamps
/// come from the kernel's coarse clock, whose tick this is a few of (at
/// least 5 ms, as the clock's resolution is read from the kernel), or
/// longer if [`ENV_SETTLE_MS`] asks for it.
pub fn timestamp_granule() -> std::time::Duration {
    static SYSTEM: OnceLock<std::time::Duration> = OnceLock::new();
    let system = *SYSTEM.get_or_init(|| {
        let tick = rustix::time::clock_getres(rustix::time::ClockId::RealtimeCoarse);
        let tick = std::time::Duration::new(
            tick.tv_sec.max(0) as u64,
            tick.tv_nsec.clamp(0, 999_999_999) as u32,
        );
        (tick * 4).max(std::time::Duration::from_millis(5))
    });
    let asked = std::env::var(ENV_SETTLE_MS)
        .ok()
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(std::time::Duration::from_millis)
        .unwrap_or_default();
    system.max(asked)
}

/// Size of the read buffer used for hashing.
const HASH_CHUNK: usize = 256 * 1024;

/// SHA-256 of everything readable from `reader`, streamed in fixed-size
/// chunks (memory use does not depend on the input size).
pub fn sha256_reader(mut reader: impl Read) -> io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_CHUNK];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(hasher.finalize().into())
}

/// SHA-256 of the file at `path`, streamed.
pub fn sha256_file(path: &Path) -> Result<[u8; 32], FsError> {
    let file = File::open(path).map_err(|e| FsError::io("open", path, e))?;
    sha256_reader(file).map_err(|e| FsError::io("read", path, e))
}

/// Digests by (device, inode), with the stamp they were computed for.
type DigestCache = Mutex<HashMap<(u64, u64), (FileStamp, [u8; 32])>>;

fn digest_cache() -> &'static DigestCache {
    static CACHE: OnceLock<DigestCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Seeds the digest cache with a digest proven otherwise: a file whose stamp
/// is still `stamp` is not hashed again by anything in this process. Only for
/// a digest that has been verified (a pool manifest's digest is, once the
/// backend it records has reported the same digest of that very inode in a
/// verified probe); a digest merely read from a file must never get here, or
/// a wrong one would make every later launch of the binary fail.
pub fn remember_digest(stamp: FileStamp, digest: [u8; 32]) {
    digest_cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((stamp.dev, stamp.ino), (stamp, digest));
}

/// SHA-256 of an open file, from the cache when its stamp is unchanged.
/// Returns the digest and whether the stamp vouches for it (so it may be
/// cached and recorded): always for a cached digest, and for a fresh one
/// when the file settled before hashing began and did not change during it.
pub fn cached_sha256(file: &File, stamp: FileStamp) -> io::Result<([u8; 32], bool)> {
    let key = (stamp.dev, stamp.ino);
    if let Some((cached, digest)) = digest_cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
    {
        if *cached == stamp {
            return Ok((*digest, true));
        }
    }
    let started = std::time::SystemTime::now();
    let mut reader = file;
    reader.seek(SeekFrom::Start(0))?;
    let digest = sha256_reader(reader)?;
    // A write during hashing would move ctime; a write just before it might
    // not have (coarse timestamps): cache only a settled, stable result.
    let settled = FileStamp::of(&file.metadata()?) == stamp
        && stamp.settled_before(started, timestamp_granule());
    if settled {
        digest_cache()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (stamp, digest));
    }
    Ok((digest, settled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_files_in_chunks() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        let data: Vec<u8> = (0..(HASH_CHUNK * 2 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let expected: [u8; 32] = Sha256::digest(&data).into();
        assert_eq!(sha256_file(&path).unwrap(), expected);
        assert!(sha256_file(&tmp.path().join("missing")).is_err());
    }
}
