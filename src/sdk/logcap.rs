//! The size bound of a backend's log, kept by the backend itself.
//!
//! A launcher that bounds logs tells the backend where its log is
//! ([`ENV_LOG_FILE`]) and how large it may grow ([`ENV_LOG_MAX_BYTES`]).
//! When standard output is that very file (same device and inode), a
//! thread checks its size every [`CHECK_EVERY`]; past the bound the file is
//! renamed to `<log>.1` (replacing the previous one), a new empty log is
//! created in its place (0600, never through a link), and standard output
//! and standard error are moved onto it. Nothing written is lost at the
//! switch: writes in flight land in the renamed file. So at most the bound
//! plus what the backend writes within one check stays in `<log>`, and as
//! much again in `<log>.1`.
//!
//! Both variables are hints: a malformed value, a log that is not standard
//! output, or a log replaced by someone else turns the bound off (logged),
//! never the backend.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::contract::env::{ENV_LOG_FILE, ENV_LOG_MAX_BYTES};
use crate::sys::fs::create_private_file;

/// How often the log's size is checked.
pub const CHECK_EVERY: Duration = Duration::from_millis(20);

/// Smallest bound honoured (a smaller one is taken as this).
const MIN_BYTES: u64 = 4096;

/// A log and its bound, from the launcher's variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCap {
    path: PathBuf,
    max_bytes: u64,
}

impl LogCap {
    /// The bound the launcher asked for, if both variables are set and
    /// valid (an absolute path, a positive number of bytes).
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<OsString>) -> Option<LogCap> {
        let path = PathBuf::from(lookup(ENV_LOG_FILE)?);
        let max_bytes = lookup(ENV_LOG_MAX_BYTES)?
            .into_string()
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)?;
        path.is_absolute().then_some(LogCap {
            path,
            max_bytes: max_bytes.max(MIN_BYTES),
        })
    }

    /// Starts keeping the bound, once per process, if standard output is
    /// the log.
    pub fn start(self) {
        static STARTED: OnceLock<()> = OnceLock::new();
        if !stdout_is(&self.path) || STARTED.set(()).is_err() {
            return;
        }
        let shown = self.path.display().to_string();
        let spawned = std::thread::Builder::new()
            .name("rp-log-cap".to_owned())
            .stack_size(64 * 1024)
            .spawn(move || loop {
                std::thread::sleep(CHECK_EVERY);
                if let Err(e) = self.rotate_if_over() {
                    log::warn!("log {} is no longer bounded: {e}", self.path.display());
                    return;
                }
            });
        if let Err(e) = spawned {
            log::warn!("cannot bound log {shown}: {e}");
        }
    }

    /// Rotates the log once it is over the bound; whether it did.
    fn rotate_if_over(&self) -> io::Result<bool> {
        let out = fs::metadata("/proc/self/fd/1")?;
        if out.len() <= self.max_bytes {
            return Ok(false);
        }
        if !stdout_is(&self.path) {
            return Err(io::Error::other("it is no longer standard output"));
        }
        let mut rotated = self.path.clone().into_os_string();
        rotated.push(".1");
        fs::rename(&self.path, &rotated)?;
        let fresh = create_private_file(&self.path)?;
        for target in [1, 2] {
            // SAFETY: dup2 onto a standard descriptor of this process; the
            // old file behind it stays valid for writes already in flight.
            if unsafe { libc::dup2(fresh.as_raw_fd(), target) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(true)
    }
}

/// Whether standard output is the file at `path` (same device and inode).
fn stdout_is(path: &Path) -> bool {
    match (fs::metadata("/proc/self/fd/1"), fs::symlink_metadata(path)) {
        (Ok(out), Ok(file)) => out.dev() == file.dev() && out.ino() == file.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.into())
    }

    #[test]
    fn only_a_valid_pair_of_variables_asks_for_a_bound() {
        let ok = lookup(&[(ENV_LOG_FILE, "/l/x.log"), (ENV_LOG_MAX_BYTES, "100")]);
        assert_eq!(
            LogCap::from_lookup(&ok),
            Some(LogCap {
                path: "/l/x.log".into(),
                max_bytes: MIN_BYTES
            })
        );
        for bad in [
            lookup(&[(ENV_LOG_FILE, "/l/x.log")]),
            lookup(&[(ENV_LOG_FILE, "x.log"), (ENV_LOG_MAX_BYTES, "100000")]),
            lookup(&[(ENV_LOG_FILE, "/l/x.log"), (ENV_LOG_MAX_BYTES, "0")]),
            lookup(&[(ENV_LOG_FILE, "/l/x.log"), (ENV_LOG_MAX_BYTES, "-1")]),
            lookup(&[(ENV_LOG_FILE, "/l/x.log"), (ENV_LOG_MAX_BYTES, "lots")]),
        ] {
            assert_eq!(LogCap::from_lookup(&bad), None);
        }
    }
}
