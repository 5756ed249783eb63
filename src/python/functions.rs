//! Module-level functions of `running_process._native`.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::values::{json_form, PyDaemonProcess};
use crate::contract::names;
use crate::store;
use crate::sys::{digest, host, identity_file};

/// The per-user hash: 16 lowercase hex digits of BLAKE3 over
/// ``"{uid}:{machine_id}"``.
#[pyfunction]
pub fn user_sid_hash(py: Python<'_>) -> PyResult<String> {
    Ok(py.detach(host::user_sid_hash)?)
}

/// The trimmed id of the current boot.
#[pyfunction]
pub fn boot_id(py: Python<'_>) -> PyResult<String> {
    Ok(py.detach(host::boot_id)?)
}

/// The user's socket directory (not created by this call).
#[pyfunction]
pub fn socket_dir() -> String {
    host::socket_dir().to_string_lossy().into_owned()
}

/// The directory the socket directory's private tree hangs from
/// (``$XDG_RUNTIME_DIR``, or ``/tmp``): it must be owned by this user or
/// root, and sticky if others can write to it.
#[pyfunction]
pub fn socket_dir_base() -> String {
    host::socket_dir_with_base()
        .1
        .to_string_lossy()
        .into_owned()
}

/// The check a launch makes of a private directory, without creating
/// anything: ``base`` (default: the parent of ``path``) must be a trusted
/// base and every existing directory below it down to ``path`` private.
/// Returns the directories a launch would create; raises
/// ``InsecureDirectoryError`` or ``FilesystemError`` as the launch would.
#[pyfunction]
#[pyo3(signature = (path, base = None))]
pub fn check_private_dir(
    py: Python<'_>,
    path: PathBuf,
    base: Option<PathBuf>,
) -> PyResult<Vec<String>> {
    let missing = py.detach(|| crate::sys::fs::inspect_private_dir(&path, base.as_deref()))?;
    Ok(missing
        .into_iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect())
}

/// The check a save or load of a ``.servicedef`` makes of its directory,
/// changing nothing: for a missing directory, the directories a save would
/// create (0700); for an existing one, every directory from it up to ``/``
/// owned by this user or root and writable by nobody else unless sticky.
/// Raises ``InsecureDirectoryError`` or ``FilesystemError``.
#[pyfunction]
pub fn check_service_def_dir(py: Python<'_>, path: PathBuf) -> PyResult<Vec<String>> {
    let missing = py.detach(|| store::inspect_def_dir(&path))?;
    Ok(missing
        .into_iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect())
}

/// The default service definition directory (not created by this call).
#[pyfunction]
pub fn service_def_dir() -> PyResult<String> {
    Ok(store::service_def_dir()?.to_string_lossy().into_owned())
}

/// SHA-256 of a file, streamed in fixed-size chunks with the GIL released.
#[pyfunction]
pub fn sha256_file<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyBytes>> {
    let digest = py.detach(|| digest::sha256_file(&path))?;
    Ok(PyBytes::new(py, &digest))
}

/// BLAKE3 of a file (the current generation's executable hash), on several
/// threads for a large file, with the GIL released.
#[pyfunction]
pub fn blake3_file<'py>(py: Python<'py>, path: PathBuf) -> PyResult<Bound<'py, PyBytes>> {
    let digests = py.detach(|| digest::digests_of_file(&path, digest::Need::Blake3))?;
    Ok(PyBytes::new(py, &digests.blake3))
}

/// Writes ``daemon`` to the identity file at ``path``: pretty JSON of
/// ``form`` (``"current"``, the 4.10 form, by default; ``"legacy"``, the 4.5
/// form), atomically (a temporary file renamed into place), mode 0600.
#[pyfunction]
#[pyo3(signature = (path, daemon, form = "current"))]
pub fn write_identity_file(
    py: Python<'_>,
    path: PathBuf,
    daemon: &PyDaemonProcess,
    form: &str,
) -> PyResult<()> {
    let form = json_form(form)?;
    let daemon = daemon.inner.clone();
    Ok(py.detach(|| identity_file::write_identity_file(&path, &daemon, form))?)
}

/// The identity in the file at ``path`` (any of the three JSON forms);
/// raises if it is absent, unreadable, malformed or invalid.
#[pyfunction]
pub fn read_identity_file(py: Python<'_>, path: PathBuf) -> PyResult<PyDaemonProcess> {
    let inner = py.detach(|| identity_file::read_identity_file(&path))?;
    Ok(PyDaemonProcess { inner })
}

/// ``read_identity_file``, with an absent, unreadable or malformed file read
/// as ``None``, as the contract's clients read identity files.
#[pyfunction]
pub fn try_read_identity_file(py: Python<'_>, path: PathBuf) -> Option<PyDaemonProcess> {
    py.detach(|| identity_file::read_identity_file_tolerant(&path))
        .map(|inner| PyDaemonProcess { inner })
}

/// Raises ``InvalidNameError`` unless ``name`` matches ``[a-z0-9-]{1,64}``.
#[pyfunction]
pub fn validate_service_name(name: &str) -> PyResult<()> {
    Ok(names::validate_service_name(name)?)
}

/// Raises ``InvalidNameError`` unless ``name`` matches ``[a-z0-9-]{1,64}``.
#[pyfunction]
pub fn validate_instance_name(name: &str) -> PyResult<()> {
    Ok(names::validate_instance_name(name)?)
}

/// Raises ``InvalidVersionError`` unless ``version`` is ``MAJOR.MINOR.PATCH[-pre]``.
#[pyfunction]
pub fn validate_version(version: &str) -> PyResult<()> {
    Ok(names::validate_version(version)?)
}

/// ``rpb-v1-{user_sid_hash}-be-{token_hex}.sock``.
#[pyfunction]
pub fn backend_socket_name(user_sid_hash: &str, token_hex: &str) -> PyResult<String> {
    Ok(names::backend_socket_name(user_sid_hash, token_hex)?)
}

/// ``rpb-v1-{user_sid_hash}-shared.sock``.
#[pyfunction]
pub fn shared_broker_socket_name(user_sid_hash: &str) -> PyResult<String> {
    Ok(names::shared_broker_socket_name(user_sid_hash)?)
}

/// ``rpb-v1-{user_sid_hash}-svc-{service_name}.sock``.
#[pyfunction]
pub fn service_broker_socket_name(user_sid_hash: &str, service_name: &str) -> PyResult<String> {
    Ok(names::service_broker_socket_name(
        user_sid_hash,
        service_name,
    )?)
}

/// ``rpb-v1-{user_sid_hash}-inst-{instance_name}.sock``.
#[pyfunction]
pub fn instance_broker_socket_name(user_sid_hash: &str, instance_name: &str) -> PyResult<String> {
    Ok(names::instance_broker_socket_name(
        user_sid_hash,
        instance_name,
    )?)
}
