//! Command-line argument templates of a service definition (this project's
//! addition to the contract): the arguments a backend is started with, with
//! placeholders for the values only the launcher knows.
//!
//! A template argument is text in which `{name}` stands for a value and
//! `{{` / `}}` for a literal brace. The launcher always fills
//! [`BUILTIN_PLACEHOLDERS`] (the endpoint path, the log file path, the
//! endpoint namespace, the service name and the version); a launch may give
//! more values by name. Arguments reach `execve` as a list, never through a
//! shell, so a value cannot become two arguments or a command.
//!
//! A template is checked when the definition is built (syntax, names,
//! sizes); that every placeholder has a value is checked when a launch
//! expands it, before anything is spawned.

use std::collections::BTreeMap;

use crate::contract::error::ValidationError;

/// Most arguments a definition may carry.
pub const MAX_ARGS: usize = 256;
/// Longest template argument, and longest expanded argument, in bytes.
pub const MAX_ARG_LEN: usize = 4096;
/// Longest placeholder name.
pub const MAX_PLACEHOLDER_LEN: usize = 64;

/// The placeholder for the endpoint's socket path.
pub const ENDPOINT: &str = "endpoint";
/// The placeholder for the backend's log file path.
pub const LOG_FILE: &str = "log_file";
/// The placeholder for the endpoint's namespace id.
pub const NAMESPACE: &str = "namespace";
/// The placeholder for the service name.
pub const SERVICE: &str = "service";
/// The placeholder for the backend version.
pub const VERSION: &str = "version";

/// Placeholders every launch fills; a launch's own values may not use these
/// names.
pub const BUILTIN_PLACEHOLDERS: &[&str] = &[ENDPOINT, LOG_FILE, NAMESPACE, SERVICE, VERSION];

fn args_error(value: &str, reason: impl Into<String>) -> ValidationError {
    ValidationError::ServiceDefinition {
        field: "args",
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// One piece of a template argument.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    /// `{` or `}` written doubled.
    Brace(char),
    Placeholder(&'a str),
}

/// Checks a placeholder name: 1 to 64 of `a-z`, `0-9`, `_`, not starting
/// with a digit.
pub fn validate_placeholder_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_PLACEHOLDER_LEN
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "placeholder {{{name}}}: a name is 1 to {MAX_PLACEHOLDER_LEN} of a-z, 0-9 and '_', \
             not starting with a digit"
        ))
    }
}

fn parse(arg: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = arg;
    while !rest.is_empty() {
        let Some(at) = rest.find(['{', '}']) else {
            pieces.push(Piece::Text(rest));
            break;
        };
        if at > 0 {
            pieces.push(Piece::Text(&rest[..at]));
        }
        let brace = rest[at..].chars().next().unwrap_or('{');
        let after = &rest[at + 1..];
        if after.starts_with(brace) {
            pieces.push(Piece::Brace(brace));
            rest = &after[1..];
            continue;
        }
        if brace == '}' {
            return Err("has a lone '}' (write '}}' for a literal brace)".to_owned());
        }
        let Some(end) = after.find('}') else {
            return Err("has a '{' without its '}' (write '{{' for a literal brace)".to_owned());
        };
        let name = &after[..end];
        validate_placeholder_name(name)?;
        pieces.push(Piece::Placeholder(name));
        rest = &after[end + 1..];
    }
    Ok(pieces)
}

fn check_text(what: &str, text: &str) -> Result<(), String> {
    if text.contains('\0') {
        return Err(format!("{what} contains a NUL byte"));
    }
    if text.len() > MAX_ARG_LEN {
        return Err(format!(
            "{what} is {} bytes; at most {MAX_ARG_LEN} are allowed",
            text.len()
        ));
    }
    Ok(())
}

/// Checks a definition's argument templates: at most [`MAX_ARGS`], each at
/// most [`MAX_ARG_LEN`] bytes without NUL, with well-formed placeholders.
pub fn validate_args(args: &[String]) -> Result<(), ValidationError> {
    if args.len() > MAX_ARGS {
        return Err(args_error(
            "",
            format!(
                "has {} arguments; at most {MAX_ARGS} are allowed",
                args.len()
            ),
        ));
    }
    for arg in args {
        check_text("the argument", arg).map_err(|reason| args_error(arg, reason))?;
        parse(arg).map_err(|reason| args_error(arg, reason))?;
    }
    Ok(())
}

/// Checks a launch's own placeholder values: valid names that are not
/// builtin, values without NUL.
pub fn validate_values(values: &BTreeMap<String, String>) -> Result<(), ValidationError> {
    for (name, value) in values {
        validate_placeholder_name(name).map_err(|reason| args_error(name, reason))?;
        if BUILTIN_PLACEHOLDERS.contains(&name.as_str()) {
            return Err(args_error(
                name,
                format!("{{{name}}} is filled by the launcher; a launch cannot set it"),
            ));
        }
        check_text("the value", value)
            .map_err(|reason| args_error(name, format!("{{{name}}}: {reason}")))?;
    }
    Ok(())
}

/// The arguments with every placeholder replaced by its value from
/// `values`. A placeholder without a value, or an expanded argument that is
/// too long or holds a NUL, is an error naming the argument.
pub fn expand_args(
    args: &[String],
    values: &BTreeMap<String, String>,
) -> Result<Vec<String>, ValidationError> {
    args.iter()
        .map(|arg| {
            let mut out = String::with_capacity(arg.len());
            for piece in parse(arg).map_err(|reason| args_error(arg, reason))? {
                match piece {
                    Piece::Text(text) => out.push_str(text),
                    Piece::Brace(brace) => out.push(brace),
                    Piece::Placeholder(name) => {
                        let value = values.get(name).ok_or_else(|| {
                            args_error(
                                arg,
                                format!(
                                    "placeholder {{{name}}} has no value (the launcher fills {}; \
                                     give others as arg_values)",
                                    BUILTIN_PLACEHOLDERS.join(", ")
                                ),
                            )
                        })?;
                        out.push_str(value);
                    }
                }
            }
            check_text("the expanded argument", &out).map_err(|reason| args_error(arg, reason))?;
            Ok(out)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn expands_placeholders_and_escapes() {
        let args = strings(&[
            "--foreground",
            "--endpoint",
            "{endpoint}",
            "--log-file={log_file}",
            "{{literal}} {service}-{version}",
            "",
        ]);
        validate_args(&args).unwrap();
        let got = expand_args(
            &args,
            &values(&[
                ("endpoint", "/run/x/sock v1"),
                ("log_file", "/l/a.log"),
                ("service", "zc"),
                ("version", "1.0.0"),
            ]),
        )
        .unwrap();
        assert_eq!(
            got,
            [
                "--foreground",
                "--endpoint",
                "/run/x/sock v1",
                "--log-file=/l/a.log",
                "{literal} zc-1.0.0",
                ""
            ]
        );
    }

    #[test]
    fn bad_templates_and_values_are_named() {
        for (bad, says) in [
            ("{", "without its '}'"),
            ("}", "lone '}'"),
            ("{Endpoint}", "a-z"),
            ("{}", "1 to 64"),
            ("{9lives}", "digit"),
            ("a\0b", "NUL"),
        ] {
            let err = validate_args(&strings(&[bad])).unwrap_err().to_string();
            assert!(err.contains("args") && err.contains(says), "{bad:?}: {err}");
        }
        let long = "x".repeat(MAX_ARG_LEN + 1);
        assert!(validate_args(&[long]).is_err());
        assert!(validate_args(&vec![String::new(); MAX_ARGS + 1]).is_err());

        let err = expand_args(&strings(&["--config={config}"]), &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("{config} has no value"), "{err}");
        let err = validate_values(&values(&[("endpoint", "/x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("filled by the launcher"), "{err}");
        assert!(validate_values(&values(&[("config", "a\0b")])).is_err());
        assert!(validate_values(&values(&[("Config", "a")])).is_err());
        validate_values(&values(&[("config", "/etc/x.toml")])).unwrap();
    }
}
