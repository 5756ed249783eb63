//! The environment a backend starts with, before the launcher adds the
//! contract's variables: the definition's [`EnvPolicy`] applied to the
//! caller's environment, the scrub list applied to everything taken from the
//! caller, then the definition's `env_set`.
//!
//! The scrub list ([`DEFAULT_ENV_SCRUB`] unless the launcher is given its
//! own) holds what makes a process load or run code other than its binary:
//! the dynamic loader's variables, the glibc variables it ignores for
//! set-uid programs, and the start-up hooks of interpreters and shells
//! (`PYTHONPATH`, `NODE_OPTIONS`, `PERL5OPT`, `BASH_ENV`, ...). A pool
//! backend is shared by every later caller, so what one caller's environment
//! carries must not become code in everyone's backend.

use std::collections::BTreeMap;
use std::ffi::{CStr, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::contract::env;
use crate::contract::service::{is_contract_env_name, EnvPolicy, ServiceDefinition};

/// Variables removed from everything a backend takes from the caller, by
/// default (a trailing `*` matches a prefix).
pub const DEFAULT_ENV_SCRUB: &[&str] = &[
    // The dynamic loader, and what glibc ignores for set-uid programs.
    "LD_*",
    "GCONV_PATH",
    "GETCONF_DIR",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "MALLOC_*",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "DYLD_*",
    // Interpreters: modules, start-up code and options that run code.
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONINSPECT",
    "PYTHONUSERBASE",
    "PYTHONEXECUTABLE",
    "PYTHONBREAKPOINT",
    "PYTHONPLATLIBDIR",
    "PYTHONWARNINGS",
    "NODE_OPTIONS",
    "NODE_PATH",
    "PERL5OPT",
    "PERL5LIB",
    "PERLLIB",
    "PERL5DB",
    "RUBYOPT",
    "RUBYLIB",
    "JAVA_TOOL_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "_JAVA_OPTIONS",
    "CLASSPATH",
    "LUA_INIT",
    "LUA_PATH",
    "LUA_CPATH",
    "TCLLIBPATH",
    "OPENSSL_CONF",
    "OPENSSL_ENGINES",
    "OPENSSL_MODULES",
    // Shells: start-up files, exported functions, trace prompts.
    "BASH_ENV",
    "ENV",
    "BASH_FUNC_*",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "ZDOTDIR",
];

/// Variables the login baseline carries over from the caller (a trailing
/// `*` matches a prefix), as the current generation of the contract does.
const BASELINE_CARRIED: &[&str] = &["LANG", "TZ", "TMPDIR", "XDG_RUNTIME_DIR", "LC_*"];

/// `PATH` of the login baseline, as login(1) sets it by default.
const LOGIN_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// `PATH` of the login baseline for root.
const LOGIN_PATH_ROOT: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn matches(rule: &str, name: &[u8]) -> bool {
    match rule.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix.as_bytes()),
        None => name == rule.as_bytes(),
    }
}

fn matches_any<S: AsRef<str>>(rules: &[S], name: &[u8]) -> bool {
    rules.iter().any(|rule| matches(rule.as_ref(), name))
}

/// The user's entry in the password database: `USER`, `LOGNAME`, `HOME`,
/// `SHELL`. None when there is none (a uid without an account, as in some
/// containers).
fn password_entry(uid: u32) -> Option<[(OsString, OsString); 4]> {
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: a zeroed passwd is a valid out-parameter; getpwuid_r
        // fills it with pointers into `buf`, which outlives their use.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: buffer and length agree; `found` is an out-parameter.
        let rc = unsafe {
            libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || found.is_null() {
            return None;
        }
        let text = |p: *const libc::c_char| -> OsString {
            if p.is_null() {
                return OsString::new();
            }
            // SAFETY: a NUL-terminated string inside `buf`.
            OsString::from_vec(unsafe { CStr::from_ptr(p) }.to_bytes().to_vec())
        };
        let name = text(pwd.pw_name);
        return Some([
            ("USER".into(), name.clone()),
            ("LOGNAME".into(), name),
            ("HOME".into(), text(pwd.pw_dir)),
            ("SHELL".into(), text(pwd.pw_shell)),
        ]);
    }
}

/// The backend's environment under `sd`'s policy, from the caller's
/// `caller` variables, with `scrub` applied to what is taken from the
/// caller; the contract's variables are not in it (the launcher adds them).
pub(crate) fn backend_environment<S: AsRef<str>>(
    sd: &ServiceDefinition,
    scrub: &[S],
    caller: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    environment_of(sd, scrub, caller, true)
}

/// [`backend_environment`]; without `account`, the login baseline leaves
/// out what the password database says (for a caller that wants only the
/// `PATH`, which does not depend on it).
fn environment_of<S: AsRef<str>>(
    sd: &ServiceDefinition,
    scrub: &[S],
    caller: impl IntoIterator<Item = (OsString, OsString)>,
    account: bool,
) -> Vec<(OsString, OsString)> {
    let usable = |name: &OsStr| {
        let text = name.to_str().unwrap_or_default();
        !matches_any(scrub, name.as_bytes()) && !is_contract_env_name(text)
    };
    let caller: Vec<(OsString, OsString)> = caller.into_iter().filter(|(k, _)| usable(k)).collect();
    let allowed = |name: &OsStr| matches_any(&sd.env_allow, name.as_bytes());
    let mut vars: BTreeMap<OsString, OsString> = BTreeMap::new();
    match sd.env_policy {
        EnvPolicy::Inherit => vars.extend(caller),
        EnvPolicy::Baseline => {
            let uid = crate::sys::host::effective_uid();
            let from_caller = |name: &str| {
                caller
                    .iter()
                    .find(|(k, _)| k.as_bytes() == name.as_bytes())
                    .map(|(_, v)| v.clone())
            };
            let entry = if account { password_entry(uid) } else { None };
            match entry {
                Some(entry) => vars.extend(entry),
                None if !account => {}
                None => {
                    // No account: what the caller says about itself.
                    for name in ["USER", "LOGNAME", "HOME", "SHELL"] {
                        if let Some(value) = from_caller(name) {
                            vars.insert(name.into(), value);
                        }
                    }
                }
            }
            let path = if uid == 0 {
                LOGIN_PATH_ROOT
            } else {
                LOGIN_PATH
            };
            vars.insert("PATH".into(), path.into());
            vars.extend(
                caller
                    .iter()
                    .filter(|(k, _)| matches_any(BASELINE_CARRIED, k.as_bytes()) || allowed(k))
                    .cloned(),
            );
            vars.insert(env::ENV_IS_DAEMON.into(), "1".into());
        }
        EnvPolicy::Clean => vars.extend(caller.into_iter().filter(|(k, _)| allowed(k))),
    }
    vars.extend(
        sd.env_set
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    );
    vars.into_iter().collect()
}

/// The `PATH` the backend will see under `sd`'s policy (a `#!/usr/bin/env
/// NAME` script's `NAME` is looked up there, by a launch and by every
/// adoption alike), if any. The same rules as [`backend_environment`],
/// without reading the password database.
pub(crate) fn backend_path(sd: &ServiceDefinition) -> Option<OsString> {
    let caller = std::env::var_os("PATH").map(|path| (OsString::from("PATH"), path));
    environment_of::<&str>(sd, &[], caller, false)
        .into_iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v)
}

/// A one-line description of `sd`'s environment policy, for `ls` and
/// `doctor`: `inherit`, `baseline`, `clean`, with what is allowed from the
/// caller and set.
pub fn describe(sd: &ServiceDefinition) -> String {
    let mut text = sd.env_policy.name().to_ascii_lowercase();
    if sd.env_policy != EnvPolicy::Inherit && !sd.env_allow.is_empty() {
        text.push_str(&format!(" +{}", sd.env_allow.join(",")));
    }
    if !sd.env_set.is_empty() {
        let names: Vec<&str> = sd.env_set.keys().map(String::as_str).collect();
        text.push_str(&format!(" set {}", names.join(",")));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn get<'a>(env: &'a [(OsString, OsString)], name: &str) -> Option<&'a OsStr> {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_os_str())
    }

    fn caller() -> Vec<(OsString, OsString)> {
        vars(&[
            ("PATH", "/caller/bin:/usr/bin"),
            ("HOME", "/caller/home"),
            ("USER", "somebody-else"),
            ("LANG", "C.UTF-8"),
            ("LC_ALL", "C"),
            ("PYTHONPATH", "/tmp/evil"),
            ("NODE_OPTIONS", "--require /tmp/evil.js"),
            ("BASH_FUNC_ls%%", "() { evil; }"),
            ("LD_PRELOAD", "/tmp/evil.so"),
            ("MALLOC_CHECK_", "3"),
            ("ZCCACHE_DIR", "/cache"),
            ("RUNNING_PROCESS_BROKER_V1_BACKEND_PIPE", "/forged"),
            ("RUNNING_PROCESS_IS_DAEMON", "0"),
            ("TOOL_TOKEN", "secret"),
        ])
    }

    #[test]
    fn inherit_takes_everything_but_the_scrub_list_and_the_contract() {
        let sd = ServiceDefinition::default();
        let env = backend_environment(&sd, DEFAULT_ENV_SCRUB, caller());
        for gone in [
            "PYTHONPATH",
            "NODE_OPTIONS",
            "BASH_FUNC_ls%%",
            "LD_PRELOAD",
            "MALLOC_CHECK_",
            "RUNNING_PROCESS_BROKER_V1_BACKEND_PIPE",
            "RUNNING_PROCESS_IS_DAEMON",
        ] {
            assert_eq!(get(&env, gone), None, "{gone}");
        }
        assert_eq!(get(&env, "TOOL_TOKEN"), Some(OsStr::new("secret")));
        assert_eq!(get(&env, "PATH"), Some(OsStr::new("/caller/bin:/usr/bin")));
    }

    #[test]
    fn baseline_rebuilds_the_login_variables_and_carries_only_the_locale_and_the_allowed() {
        let sd = ServiceDefinition {
            env_policy: EnvPolicy::Baseline,
            env_allow: vec!["ZCCACHE_*".into(), "PYTHONPATH".into()],
            ..Default::default()
        };
        let env = backend_environment(&sd, DEFAULT_ENV_SCRUB, caller());
        let uid = crate::sys::host::effective_uid();
        let entry = password_entry(uid).expect("this user has an account");
        assert_eq!(get(&env, "USER"), Some(entry[0].1.as_os_str()));
        assert_eq!(get(&env, "HOME"), Some(entry[2].1.as_os_str()));
        let path = if uid == 0 {
            LOGIN_PATH_ROOT
        } else {
            LOGIN_PATH
        };
        assert_eq!(get(&env, "PATH"), Some(OsStr::new(path)));
        assert_eq!(get(&env, "LANG"), Some(OsStr::new("C.UTF-8")));
        assert_eq!(get(&env, "LC_ALL"), Some(OsStr::new("C")));
        assert_eq!(get(&env, "ZCCACHE_DIR"), Some(OsStr::new("/cache")));
        assert_eq!(
            get(&env, "RUNNING_PROCESS_IS_DAEMON"),
            Some(OsStr::new("1"))
        );
        // Allowed, but the scrub list wins.
        assert_eq!(get(&env, "PYTHONPATH"), None);
        assert_eq!(get(&env, "TOOL_TOKEN"), None);
    }

    #[test]
    fn clean_takes_only_the_allowed_and_set_wins() {
        let sd = ServiceDefinition {
            env_policy: EnvPolicy::Clean,
            env_allow: vec!["TOOL_TOKEN".into()],
            env_set: [("PATH".to_owned(), "/opt/tool/bin".to_owned())].into(),
            ..Default::default()
        };
        let env = backend_environment(&sd, DEFAULT_ENV_SCRUB, caller());
        let names: Vec<&OsStr> = env.iter().map(|(k, _)| k.as_os_str()).collect();
        assert_eq!(names, [OsStr::new("PATH"), OsStr::new("TOOL_TOKEN")]);
        assert_eq!(get(&env, "PATH"), Some(OsStr::new("/opt/tool/bin")));
    }
}
