//! The `.servicedef` store: definitions saved as files in a private
//! directory and loaded back strictly.
//!
//! It sits above `sys` (it reads and writes files through the private
//! directory rules) and below the launcher. A file is named
//! `{service_name}.servicedef`; its stem must equal the name inside it; it
//! is trusted like a backend binary (the file and every directory above it
//! owned by this user or root and writable by nobody else, sticky
//! directories such as `/tmp` excepted), and it is read with a size cap and
//! without following symlinks. Saving is atomic (temporary file, fsync,
//! rename, directory fsync).

use std::path::{Path, PathBuf};

use crate::contract::env::ENV_SERVICE_DEF_DIR;
use crate::contract::error::{DecodeError, FsError, StoreError};
use crate::contract::names::validate_service_name;
use crate::contract::service::{ServiceDefinition, MAX_SERVICEDEF_BYTES, SERVICEDEF_EXTENSION};
use crate::sys::fs::{self as pfs, Bounded};

impl ServiceDefinition {
    /// Saves this definition as `{service_name}.servicedef` (mode 0600) in
    /// `dir` (default: [`service_def_dir`]). A missing directory is created
    /// 0700; an existing one must pass the check a load makes (owned by this
    /// user or root up to `/`, writable by nobody else unless sticky). The
    /// write is atomic.
    pub fn save(&self, dir: Option<&Path>) -> Result<PathBuf, StoreError> {
        self.validate()?;
        let dir = resolve_dir(dir)?;
        if std::fs::symlink_metadata(&dir).is_err() {
            pfs::ensure_private_dir(&dir, None)?;
        }
        let dir = check_trusted_def_dir(&dir)?;
        let path = pfs::write_atomic(&dir, &file_name(&self.service_name), &self.to_bytes())?;
        log::debug!(
            "saved service definition {} to {}",
            self.service_name,
            path.display()
        );
        Ok(path)
    }

    /// Loads `{service_name}.servicedef` from `dir` (default:
    /// [`service_def_dir`]). The directory must be private; the name inside
    /// the file must equal `service_name`.
    pub fn load(service_name: &str, dir: Option<&Path>) -> Result<Self, StoreError> {
        validate_service_name(service_name)?;
        let dir = resolve_dir(dir)?;
        Self::load_file(&dir.join(file_name(service_name)))
    }

    /// Loads a definition from a `.servicedef` file path.
    ///
    /// The file is trusted like a backend binary: it must be a regular file
    /// (a symlink is not followed) owned by this user or root and not
    /// writable by group or other, in a directory whose every ancestor is
    /// owned by this user or root and writable by nobody else (or sticky, as
    /// `/tmp` is). Its stem must equal the service name inside it. A missing
    /// file (or directory) is [`StoreError::NotFound`], whatever the
    /// directory is like.
    pub fn load_file(path: &Path) -> Result<Self, StoreError> {
        let absolute = absolute(path)?;
        let stem = absolute
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let not_found = |path: &Path| StoreError::NotFound {
            service_name: stem.clone(),
            path: path.to_path_buf(),
        };
        let (Some(parent), Some(name)) = (absolute.parent(), absolute.file_name()) else {
            return Err(not_found(&absolute));
        };
        let dir = match std::fs::canonicalize(parent) {
            Ok(dir) => dir,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found(&absolute)),
            Err(e) => return Err(FsError::io("resolve", parent, e).into()),
        };
        let path = dir.join(name);
        let (file, meta) = match pfs::open_regular(&path) {
            Ok(opened) => opened,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found(&path)),
            Err(e) => return Err(FsError::io("open", &path, e).into()),
        };
        check_trusted_def_dir(&dir)?;
        if let Some(reason) = pfs::untrusted_file_reason(&meta) {
            return Err(StoreError::Untrusted { path, reason });
        }
        let bytes = match pfs::read_open_bounded(file, &meta, MAX_SERVICEDEF_BYTES) {
            Ok(Bounded::Read(bytes)) => bytes,
            Ok(Bounded::TooLarge(length)) => {
                return Err(StoreError::TooLarge {
                    path,
                    length,
                    limit: MAX_SERVICEDEF_BYTES,
                })
            }
            Err(e) => return Err(FsError::io("read", &path, e).into()),
        };
        let sd = Self::from_bytes(&bytes).map_err(|source| match source {
            DecodeError::Invalid(v) => StoreError::Invalid(v),
            source => StoreError::Decode {
                path: path.clone(),
                source,
            },
        })?;
        if sd.service_name != stem {
            return Err(StoreError::StemMismatch {
                path,
                stem,
                service_name: sd.service_name,
            });
        }
        Ok(sd)
    }
}

/// The check a save or load makes of an existing definition directory
/// (resolved, then every directory up to `/` owned by this user or root and
/// writable by nobody else unless sticky); returns the resolved directory.
fn check_trusted_def_dir(dir: &Path) -> Result<PathBuf, FsError> {
    let dir = std::fs::canonicalize(dir).map_err(|e| FsError::io("resolve", dir, e))?;
    pfs::check_trusted_dir_chain(&dir)?;
    Ok(dir)
}

/// What [`ServiceDefinition::save`] would find in `dir`, changing nothing:
/// the directories it would create (0700) when `dir` is missing, else the
/// check a load makes of an existing one. This is what `doctor` reports.
pub fn inspect_def_dir(dir: &Path) -> Result<Vec<PathBuf>, FsError> {
    if std::fs::symlink_metadata(dir).is_err() {
        return pfs::inspect_private_dir(dir, None);
    }
    check_trusted_def_dir(dir).map(|_| Vec::new())
}

fn file_name(service_name: &str) -> String {
    format!("{service_name}.{SERVICEDEF_EXTENSION}")
}

/// `path` made absolute against the working directory (without resolving
/// symlinks), so that its parent is always a real directory to check.
fn absolute(path: &Path) -> Result<PathBuf, StoreError> {
    std::path::absolute(path).map_err(|e| FsError::io("resolve", path, e).into())
}

fn resolve_dir(dir: Option<&Path>) -> Result<PathBuf, StoreError> {
    match dir {
        Some(dir) => absolute(dir),
        None => absolute(&service_def_dir()?),
    }
}

/// The service definition directory: `$RUNNING_PROCESS_SERVICE_DEF_DIR`, else
/// `$XDG_CONFIG_HOME/running-process/services`, else
/// `~/.config/running-process/services`.
pub fn service_def_dir() -> Result<PathBuf, StoreError> {
    let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty(ENV_SERVICE_DEF_DIR) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(config) = non_empty("XDG_CONFIG_HOME").filter(|v| Path::new(v).is_absolute()) {
        return Ok(PathBuf::from(config)
            .join("running-process")
            .join("services"));
    }
    let home = non_empty("HOME").ok_or_else(|| {
        StoreError::Fs(FsError::io(
            "locate service definition directory",
            PathBuf::from("~"),
            std::io::Error::new(std::io::ErrorKind::NotFound, "HOME is not set"),
        ))
    })?;
    Ok(PathBuf::from(home)
        .join(".config")
        .join("running-process")
        .join("services"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::service::tests::sample;

    #[test]
    fn save_and_load() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("defs");
        let sd = sample();
        let path = sd.save(Some(&dir)).unwrap();
        assert_eq!(path, dir.join("zccache.servicedef"));
        assert_eq!(ServiceDefinition::load("zccache", Some(&dir)).unwrap(), sd);
        assert!(matches!(
            ServiceDefinition::load("other", Some(&dir)),
            Err(StoreError::NotFound { .. })
        ));
        std::fs::rename(&path, dir.join("renamed.servicedef")).unwrap();
        assert!(matches!(
            ServiceDefinition::load("renamed", Some(&dir)),
            Err(StoreError::StemMismatch { .. })
        ));
    }
}
