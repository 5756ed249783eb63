//! `Isolation` and `ServiceDefinition`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::{labels_from_mapping, path_text, pyrepr, reduce_by_name, ByName};
use crate::contract::service::{EnvPolicy, Isolation, Listener, ServiceDefinition};

/// The Python face of a contract enum: a frozen enum class with the same
/// members in upper case, conversions both ways, `from_value`, `name`,
/// `value`, a hash equal to the wire value's (members compare equal to it)
/// and pickling by name.
macro_rules! wire_enum {
    (
        $(#[$doc:meta])*
        $py:ident ($pyname:literal) <-> $core:ident {
            $($member:ident = $value:literal <-> $variant:ident),+ $(,)?
        }
        $what:literal, $values:literal, $names:literal
    ) => {
        $(#[$doc])*
        #[pyclass(
            name = $pyname,
            module = "running_process._native",
            eq,
            eq_int,
            frozen,
            from_py_object
        )]
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(clippy::upper_case_acronyms)]
        pub enum $py {
            $($member = $value),+
        }

        impl From<$core> for $py {
            fn from(value: $core) -> Self {
                match value {
                    $(<$core>::$variant => <$py>::$member),+
                }
            }
        }

        impl From<$py> for $core {
            fn from(value: $py) -> Self {
                match value {
                    $(<$py>::$member => <$core>::$variant),+
                }
            }
        }

        #[pymethods]
        impl $py {
            /// The member with wire value ``value``.
            #[staticmethod]
            fn from_value(value: i32) -> PyResult<Self> {
                <$core>::from_i32(value).map(Into::into).ok_or_else(|| {
                    pyo3::exceptions::PyValueError::new_err(format!(
                        concat!("{} is not ", $what, " value (", $values, ")"),
                        value
                    ))
                })
            }

            #[doc = concat!("The member's name (", $names, ").")]
            #[getter]
            fn name(&self) -> &'static str {
                <$core>::from(*self).name()
            }

            #[doc = concat!("The wire value (", $values, ").")]
            #[getter]
            fn value(&self) -> i32 {
                <$core>::from(*self) as i32
            }

            /// Hashes as the wire value, because members compare equal to it.
            fn __hash__(&self) -> isize {
                self.value() as isize
            }

            fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<ByName<'py>> {
                reduce_by_name::<$py>(py, self.name())
            }
        }
    };
}

wire_enum!(
    /// Which broker instance serves a service.
    PyIsolation("Isolation") <-> Isolation {
        PRIVATE = 0 <-> Private,
        SHARED = 1 <-> Shared,
        EXPLICIT = 2 <-> Explicit,
    }
    "an Isolation",
    "0, 1 or 2",
    "``\"PRIVATE\"``, ``\"SHARED\"``, ``\"EXPLICIT\"``"
);

wire_enum!(
    /// Who binds a backend's endpoint: the launcher, which hands the
    /// listening socket over (``INHERIT``, the default), or the backend
    /// itself (``BIND``).
    PyListener("Listener") <-> Listener {
        INHERIT = 0 <-> Inherit,
        BIND = 1 <-> Bind,
    }
    "a Listener",
    "0 or 1",
    "``\"INHERIT\"``, ``\"BIND\"``"
);

wire_enum!(
    /// Which environment a backend starts with: the caller's minus the scrub
    /// list (``INHERIT``, the default), a login baseline as the current
    /// generation of the contract spawns daemons (``BASELINE``), or nothing
    /// from the caller but the names allowed (``CLEAN``).
    PyEnvPolicy("EnvPolicy") <-> EnvPolicy {
        INHERIT = 0 <-> Inherit,
        BASELINE = 1 <-> Baseline,
        CLEAN = 2 <-> Clean,
    }
    "an EnvPolicy",
    "0, 1 or 2",
    "``\"INHERIT\"``, ``\"BASELINE\"``, ``\"CLEAN\"``"
);

/// A backend service (the v1 ``ServiceDefinition`` message).
#[pyclass(
    name = "ServiceDefinition",
    module = "running_process._native",
    frozen,
    eq,
    hash
)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PyServiceDefinition {
    pub(crate) inner: ServiceDefinition,
}

/// The environment fields of a definition's repr, where not the defaults.
fn env_repr(py: Python<'_>, sd: &ServiceDefinition) -> String {
    let mut text = String::new();
    if sd.env_policy != EnvPolicy::Inherit {
        text.push_str(&format!(", env_policy=EnvPolicy.{}", sd.env_policy.name()));
    }
    if !sd.env_allow.is_empty() {
        let names: Vec<String> = sd.env_allow.iter().map(|a| pyrepr(py, a)).collect();
        text.push_str(&format!(", env_allow=[{}]", names.join(", ")));
    }
    if !sd.env_set.is_empty() {
        let pairs: Vec<String> = sd
            .env_set
            .iter()
            .map(|(k, v)| format!("{}: {}", pyrepr(py, k), pyrepr(py, v)))
            .collect();
        text.push_str(&format!(", env_set={{{}}}", pairs.join(", ")));
    }
    text
}

#[pymethods]
impl PyServiceDefinition {
    #[new]
    #[pyo3(signature = (
        service_name,
        binary_path,
        per_version_binary_dir,
        isolation = PyIsolation::PRIVATE,
        explicit_instance = String::new(),
        min_version = String::new(),
        version_allow_list = Vec::new(),
        labels = None,
        args = Vec::new(),
        listener = PyListener::INHERIT,
        env_policy = PyEnvPolicy::INHERIT,
        env_allow = Vec::new(),
        env_set = BTreeMap::new(),
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        service_name: String,
        binary_path: PathBuf,
        per_version_binary_dir: PathBuf,
        isolation: PyIsolation,
        explicit_instance: String,
        min_version: String,
        version_allow_list: Vec<String>,
        labels: Option<Bound<'_, PyAny>>,
        args: Vec<String>,
        listener: PyListener,
        env_policy: PyEnvPolicy,
        env_allow: Vec<String>,
        env_set: BTreeMap<String, String>,
    ) -> PyResult<Self> {
        let labels = match labels {
            None => BTreeMap::new(),
            Some(mapping) => labels_from_mapping(&mapping)?,
        };
        let inner = ServiceDefinition::from_text(
            service_name,
            path_text("binary_path", binary_path)?,
            path_text("per_version_binary_dir", per_version_binary_dir)?,
            isolation.into(),
            explicit_instance,
            &min_version,
            &version_allow_list,
            labels,
            args,
        )?;
        let inner = ServiceDefinition {
            listener: listener.into(),
            env_policy: env_policy.into(),
            env_allow,
            env_set,
            ..inner
        };
        inner.validate()?;
        Ok(PyServiceDefinition { inner })
    }

    #[getter]
    fn service_name(&self) -> &str {
        &self.inner.service_name
    }

    #[getter]
    fn binary_path(&self) -> &str {
        // Validated as UTF-8 on the way in.
        self.inner.binary_path.to_str().unwrap_or_default()
    }

    #[getter]
    fn per_version_binary_dir(&self) -> &str {
        self.inner
            .per_version_binary_dir
            .to_str()
            .unwrap_or_default()
    }

    #[getter]
    fn isolation(&self) -> PyIsolation {
        self.inner.isolation.into()
    }

    #[getter]
    fn explicit_instance(&self) -> &str {
        &self.inner.explicit_instance
    }

    #[getter]
    fn min_version(&self) -> String {
        self.inner
            .min_version
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    /// A copy of the allow-list (changing it does not change the definition).
    #[getter]
    fn version_allow_list(&self) -> Vec<String> {
        self.inner
            .version_allow_list
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// A copy of the labels (changing it does not change the definition).
    #[getter]
    fn labels(&self) -> BTreeMap<String, String> {
        self.inner.labels.clone()
    }

    /// A copy of the argument templates (changing it does not change the
    /// definition).
    #[getter]
    fn args(&self) -> Vec<String> {
        self.inner.args.clone()
    }

    /// Who binds the endpoint.
    #[getter]
    fn listener(&self) -> PyListener {
        self.inner.listener.into()
    }

    /// Which environment the backend starts with.
    #[getter]
    fn env_policy(&self) -> PyEnvPolicy {
        self.inner.env_policy.into()
    }

    /// A copy of the names (or ``PREFIX*``) taken from the caller under
    /// ``BASELINE`` and ``CLEAN``.
    #[getter]
    fn env_allow(&self) -> Vec<String> {
        self.inner.env_allow.clone()
    }

    /// A copy of the variables set for the backend, whatever the policy.
    #[getter]
    fn env_set(&self) -> BTreeMap<String, String> {
        self.inner.env_set.clone()
    }

    /// The environment policy in one line (``"inherit"``, ``"baseline
    /// +ZCCACHE_*"``, ``"clean +TOKEN set PATH"``), as ``ls`` shows it.
    #[getter]
    fn env_summary(&self) -> String {
        crate::launch::describe_environment(&self.inner)
    }

    /// Re-applies every rule of the contract; raises on the first broken one.
    fn validate(&self) -> PyResult<()> {
        Ok(self.inner.validate()?)
    }

    /// Raises ``InvalidVersionError`` or ``VersionRefusedError`` unless this
    /// definition admits ``version``.
    fn check_version(&self, version: &str) -> PyResult<()> {
        Ok(self.inner.check_version(version)?)
    }

    /// The binary checks a launch makes (allow-list root, executable file,
    /// trusted path, ``#!`` interpreter), spawning nothing; raises
    /// ``BinaryPolicyError`` as the launch would. GIL released (hashes).
    fn check_binary(&self, py: Python<'_>) -> PyResult<()> {
        let inner = self.inner.clone();
        Ok(py.detach(move || inner.check_binary())?)
    }

    /// Protobuf encoding.
    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.to_bytes())
    }

    /// Decodes and validates a protobuf encoding.
    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        Ok(PyServiceDefinition {
            inner: ServiceDefinition::from_bytes(data)?,
        })
    }

    /// Saves as ``{service_name}.servicedef`` (atomically, mode 0600) in
    /// ``dir`` or the default directory; returns the file path.
    #[pyo3(signature = (dir = None))]
    fn save(&self, py: Python<'_>, dir: Option<PathBuf>) -> PyResult<String> {
        let path = py.detach(|| self.inner.save(dir.as_deref()))?;
        Ok(path.to_string_lossy().into_owned())
    }

    /// Loads ``{service_name}.servicedef`` from ``dir`` or the default directory.
    #[staticmethod]
    #[pyo3(signature = (service_name, dir = None))]
    fn load(py: Python<'_>, service_name: &str, dir: Option<PathBuf>) -> PyResult<Self> {
        let inner = py.detach(|| ServiceDefinition::load(service_name, dir.as_deref()))?;
        Ok(PyServiceDefinition { inner })
    }

    /// Loads a definition from a ``.servicedef`` file path.
    #[staticmethod]
    fn load_file(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = py.detach(|| ServiceDefinition::load_file(&path))?;
        Ok(PyServiceDefinition { inner })
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let sd = &self.inner;
        let list: Vec<String> = sd
            .version_allow_list
            .iter()
            .map(|v| pyrepr(py, &v.to_string()))
            .collect();
        let labels: Vec<String> = sd
            .labels
            .iter()
            .map(|(k, v)| format!("{}: {}", pyrepr(py, k), pyrepr(py, v)))
            .collect();
        format!(
            "ServiceDefinition(service_name={}, binary_path={}, per_version_binary_dir={}, \
             isolation=Isolation.{}, explicit_instance={}, min_version={}, \
             version_allow_list=[{}], labels={{{}}}{}{}{})",
            pyrepr(py, &sd.service_name),
            pyrepr(py, self.binary_path()),
            pyrepr(py, self.per_version_binary_dir()),
            sd.isolation.name(),
            pyrepr(py, &sd.explicit_instance),
            pyrepr(py, &self.min_version()),
            list.join(", "),
            labels.join(", "),
            if sd.args.is_empty() {
                String::new()
            } else {
                let args: Vec<String> = sd.args.iter().map(|a| pyrepr(py, a)).collect();
                format!(", args=[{}]", args.join(", "))
            },
            match sd.listener {
                Listener::Inherit => String::new(),
                other => format!(", listener=Listener.{}", other.name()),
            },
            env_repr(py, sd),
        )
    }

    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyBytes>,))> {
        Ok((
            py.get_type::<PyServiceDefinition>().getattr("from_bytes")?,
            (self.to_bytes(py),),
        ))
    }
}
