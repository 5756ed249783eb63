//! Python classes for the v1 value types. Each wraps one Rust type of the
//! core and adds only what Python needs: keyword constructors that validate,
//! read-only properties, `__eq__`/`__hash__`, `__repr__`, pickling. Values
//! know nothing of the launcher, the router or the errors module, so every
//! other binding module can use them without a cycle.

mod codes;
mod identity;
mod keys;
mod service;
mod trace;

pub(crate) use codes::{returncode, PyErrorCode};
pub(crate) use identity::{json_form, PyDaemonProcess};
pub(crate) use keys::{PyBackendKey, PyBrokerInstanceKey, PyEndpoint};
pub(crate) use service::{PyEnvPolicy, PyIsolation, PyListener, PyServiceDefinition};
pub(crate) use trace::PyTraceContext;

use std::collections::BTreeMap;
use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyMapping, PyString, PyType};

use crate::contract::error::ValidationError;

/// Python's `repr()` of a string (falls back to Rust quoting if Python fails).
pub(crate) fn pyrepr(py: Python<'_>, s: &str) -> String {
    PyString::new(py, s)
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| format!("{s:?}"))
}

/// A path argument (str or os.PathLike) as UTF-8 text, which the wire format
/// requires.
pub(crate) fn path_text(field: &'static str, path: PathBuf) -> Result<String, ValidationError> {
    path.into_os_string()
        .into_string()
        .map_err(|raw| ValidationError::ServiceDefinition {
            field,
            value: raw.to_string_lossy().into_owned(),
            reason: "is not valid UTF-8".to_owned(),
        })
}

/// What `__reduce__` returns: a callable and its arguments.
type Reduce<'py, Args> = (Bound<'py, PyAny>, Args);

/// `__reduce__` of an enum member: `getattr(cls, name)`, as Python's own
/// `enum` pickles members by name.
pub(crate) type ByName<'py> = Reduce<'py, (Bound<'py, PyType>, &'static str)>;

pub(crate) fn reduce_by_name<'py, T: pyo3::PyTypeInfo>(
    py: Python<'py>,
    name: &'static str,
) -> PyResult<ByName<'py>> {
    Ok((
        py.import("builtins")?.getattr("getattr")?,
        (py.get_type::<T>(), name),
    ))
}

/// Labels from any mapping of str to str (dict, MappingProxyType, ...).
pub(crate) fn labels_from_mapping(
    mapping: &Bound<'_, PyAny>,
) -> PyResult<BTreeMap<String, String>> {
    if let Ok(dict) = mapping.cast::<PyDict>() {
        return dict.extract();
    }
    let copy = PyDict::new(mapping.py());
    copy.update(mapping.cast::<PyMapping>()?)?;
    copy.extract()
}
