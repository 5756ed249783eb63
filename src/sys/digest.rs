//! Hashing executables: BLAKE3 (the current generation's executable hash,
//! multi-threaded on large files) and SHA-256 (the first generation's),
//! streamed in fixed-size chunks in one pass, and a per-process cache of
//! digests keyed by (device, inode) and vouched for by the file's stamp, so
//! an unchanged binary is hashed once per process.
//!
//! What it does not do: it never trusts a digest merely read from somewhere
//! (a manifest, the environment); only [`remember_digest`] seeds the cache,
//! and its callers prove the digest first.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
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

/// Files at least this large are hashed on several threads.
const PARALLEL_MIN: u64 = 1024 * 1024;

/// Most threads one BLAKE3 hash uses.
const MAX_BLAKE3_THREADS: usize = 8;

/// The digests of one file: BLAKE3 always, SHA-256 when it was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digests {
    pub blake3: [u8; 32],
    pub sha256: Option<[u8; 32]>,
}

impl Digests {
    /// Whether these digests include what `need` asks for.
    pub fn covers(&self, need: Need) -> bool {
        need == Need::Blake3 || self.sha256.is_some()
    }
}

/// Which digests a caller needs: BLAKE3 alone (checking a current-generation
/// identity that carries no real SHA-256), or both (a launch, whose backend
/// may answer in either generation, and an identity that carries both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Need {
    Blake3,
    Both,
}

/// Feeds `len` bytes of `file` from `offset` to `sink`, in fixed-size
/// chunks read at their position (no shared file offset, so threads can
/// read different ranges of one descriptor). A file that ends early is an
/// error: it changed while it was hashed.
fn read_range(file: &File, offset: u64, len: u64, mut sink: impl FnMut(&[u8])) -> io::Result<()> {
    let mut buf = vec![0u8; HASH_CHUNK.min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let want = buf.len().min((len - done) as usize);
        match file.read_at(&mut buf[..want], offset + done) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was hashed",
                ))
            }
            Ok(n) => {
                sink(&buf[..n]);
                done += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// BLAKE3 of the subtree of `len` bytes at `offset` of `file` (its chaining
/// value, or the root hash when `root`), split along the hash's own tree
/// between up to `threads` scoped threads: the left subtree is the largest
/// power-of-two number of chunks below `len`, as the BLAKE3 tree requires.
/// Threads end with the call; no pool outlives it.
fn blake3_subtree(
    file: &File,
    offset: u64,
    len: u64,
    threads: usize,
    root: bool,
) -> io::Result<[u8; 32]> {
    use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode};
    if threads <= 1 || len < PARALLEL_MIN {
        let mut hasher = blake3::Hasher::new();
        if offset > 0 {
            hasher.set_input_offset(offset);
        }
        read_range(file, offset, len, |chunk| {
            hasher.update(chunk);
        })?;
        return Ok(if root {
            *hasher.finalize().as_bytes()
        } else {
            hasher.finalize_non_root()
        });
    }
    let left_len = blake3::hazmat::left_subtree_len(len);
    let right_threads = threads / 2;
    let (left, right) = std::thread::scope(|scope| {
        let right = scope.spawn(move || {
            blake3_subtree(
                file,
                offset + left_len,
                len - left_len,
                right_threads,
                false,
            )
        });
        let left = blake3_subtree(file, offset, left_len, threads - right_threads, false);
        (left, right.join())
    });
    let right = right.map_err(|_| io::Error::other("a BLAKE3 thread panicked"))??;
    let left = left?;
    Ok(if root {
        *merge_subtrees_root(&left, &right, Mode::Hash).as_bytes()
    } else {
        merge_subtrees_non_root(&left, &right, Mode::Hash)
    })
}

fn blake3_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, MAX_BLAKE3_THREADS)
}

/// The digests `need` asks for of an open file, hashed from its first byte
/// to its size now: BLAKE3 split over several threads for a large file (as
/// the current generation of the contract hashes), and SHA-256, when
/// needed, on a thread of its own at the same time. Each digest reads the
/// file once.
pub fn digests_of(file: &File, need: Need) -> io::Result<Digests> {
    let len = file.metadata()?.len();
    let parallel = len >= PARALLEL_MIN;
    let threads = if parallel { blake3_threads() } else { 1 };
    let sha256_of = || -> io::Result<[u8; 32]> {
        let mut sha = Sha256::new();
        read_range(file, 0, len, |chunk| sha.update(chunk))?;
        Ok(sha.finalize().into())
    };
    let (blake3, sha256) = match need {
        Need::Blake3 => (blake3_subtree(file, 0, len, threads, true)?, None),
        Need::Both if !parallel => (blake3_subtree(file, 0, len, 1, true)?, Some(sha256_of()?)),
        Need::Both => std::thread::scope(|scope| {
            let sha = scope.spawn(sha256_of);
            let blake3 = blake3_subtree(file, 0, len, threads, true);
            let sha = sha
                .join()
                .map_err(|_| io::Error::other("the SHA-256 thread panicked"))?;
            Ok::<_, io::Error>((blake3?, Some(sha?)))
        })?,
    };
    Ok(Digests { blake3, sha256 })
}

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

/// [`digests_of`] the file at `path`.
pub fn digests_of_file(path: &Path, need: Need) -> Result<Digests, FsError> {
    let file = File::open(path).map_err(|e| FsError::io("open", path, e))?;
    digests_of(&file, need).map_err(|e| FsError::io("read", path, e))
}

/// Digests by (device, inode), with the stamp they were computed for.
type DigestCache = Mutex<HashMap<(u64, u64), (FileStamp, Digests)>>;

fn digest_cache() -> &'static DigestCache {
    static CACHE: OnceLock<DigestCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Seeds the digest cache with digests proven otherwise: a file whose stamp
/// is still `stamp` is not hashed again by anything in this process. Only for
/// digests that have been verified (a pool manifest's digests are, once the
/// backend it records has reported the same digests of that very inode in a
/// verified probe); digests merely read from a file must never get here, or
/// a wrong one would make every later launch of the binary fail.
pub fn remember_digest(stamp: FileStamp, digests: Digests) {
    let mut cache = digest_cache().lock().unwrap_or_else(|p| p.into_inner());
    let entry = cache
        .entry((stamp.dev, stamp.ino))
        .or_insert((stamp, digests));
    if entry.0 != stamp || entry.1.blake3 != digests.blake3 || digests.sha256.is_some() {
        *entry = (stamp, digests);
    }
}

/// The digests `need` asks for of an open file, from the cache when its
/// stamp is unchanged. Returns them and whether the stamp vouches for them
/// (so they may be cached and recorded): always for cached digests, and for
/// fresh ones when the file settled before hashing began and did not change
/// during it.
pub fn cached_digests(file: &File, stamp: FileStamp, need: Need) -> io::Result<(Digests, bool)> {
    let key = (stamp.dev, stamp.ino);
    if let Some((cached, digests)) = digest_cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
    {
        if *cached == stamp && digests.covers(need) {
            return Ok((*digests, true));
        }
    }
    let started = std::time::SystemTime::now();
    let digests = digests_of(file, need)?;
    // A write during hashing would move ctime; a write just before it might
    // not have (coarse timestamps): cache only a settled, stable result.
    let settled = FileStamp::of(&file.metadata()?) == stamp
        && stamp.settled_before(started, timestamp_granule());
    if settled {
        remember_digest(stamp, digests);
    }
    Ok((digests, settled))
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
        let both = digests_of_file(&path, Need::Both).unwrap();
        assert_eq!(both.sha256, Some(expected));
        assert_eq!(both.blake3, *blake3::hash(&data).as_bytes());
        let one = digests_of_file(&path, Need::Blake3).unwrap();
        assert_eq!((one.blake3, one.sha256), (both.blake3, None));
    }

    #[test]
    fn blake3_split_over_threads_matches_the_plain_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        let mb = PARALLEL_MIN;
        for len in [0, 1, 1024, 1025, mb - 1, mb, mb + 1, 3 * mb + 5000, 8 * mb] {
            let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            std::fs::write(&path, &data).unwrap();
            let file = File::open(&path).unwrap();
            let expected = *blake3::hash(&data).as_bytes();
            for threads in [1, 2, 3, 4, 8] {
                let got = blake3_subtree(&file, 0, len, threads, true).unwrap();
                assert_eq!(got, expected, "len {len}, {threads} threads");
            }
            let both = digests_of(&file, Need::Both).unwrap();
            assert_eq!(both.blake3, expected, "len {len}");
            assert_eq!(both.sha256, Some(Sha256::digest(&data).into()), "len {len}");
        }
    }
}
