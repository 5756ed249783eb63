//! W3C Trace Context (`traceparent`, `tracestate`) carried with each request
//! and handed to a launched backend through its environment.
//!
//! Values are checked against the W3C grammar at construction, so a
//! [`TraceContext`] that exists is safe to forward: no NUL bytes, no control
//! characters, nothing oversized. An empty `traceparent` means "no trace";
//! a `tracestate` without a `traceparent` is meaningless and refused.

use crate::contract::clock;
use crate::contract::env::{ENV_TRACEPARENT, ENV_TRACESTATE};
use crate::contract::error::ValidationError;

/// Most list members a `tracestate` may carry.
pub const MAX_TRACESTATE_MEMBERS: usize = 32;
/// Longest `tracestate`, in characters.
pub const MAX_TRACESTATE_LEN: usize = 512;
/// Length of a version-00 `traceparent`.
pub const TRACEPARENT_LEN: usize = 55;
/// Longest `traceparent` of a later version (extra fields included), in
/// characters: the W3C rules set no bound, but the value travels in every
/// frame and in a backend's environment, so it is bounded like `tracestate`.
pub const MAX_TRACEPARENT_LEN: usize = 512;

/// A validated W3C trace context plus the request id it travels with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TraceContext {
    pub(crate) request_id: u64,
    pub(crate) traceparent: String,
    pub(crate) tracestate: String,
}

fn trace_error(field: &'static str, value: &str, reason: impl Into<String>) -> ValidationError {
    ValidationError::TraceContext {
        field,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a `traceparent` against the W3C grammar. Version `00` must be exactly
/// 55 characters; a later version may carry more fields after a `-`, as the
/// W3C rules for future versions require, up to [`MAX_TRACEPARENT_LEN`]
/// characters in all; version `ff` is invalid.
pub fn validate_traceparent(value: &str) -> Result<(), ValidationError> {
    let err = |reason: &str| trace_error("traceparent", value, reason);
    if value.len() > MAX_TRACEPARENT_LEN {
        return Err(err(&format!(
            "is {} bytes; at most {MAX_TRACEPARENT_LEN} are allowed",
            value.len()
        )));
    }
    if !value.is_ascii() {
        return Err(err("must be ASCII"));
    }
    if value.len() < TRACEPARENT_LEN {
        return Err(err(&format!(
            "is {} characters; a traceparent has {TRACEPARENT_LEN}",
            value.len()
        )));
    }
    let version = &value[0..2];
    if !is_lower_hex(version) {
        return Err(err("version must be 2 lowercase hex digits"));
    }
    if version == "ff" {
        return Err(err("version ff is invalid"));
    }
    let bytes = value.as_bytes();
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return Err(err(
            "must be version-traceid-parentid-flags (2-32-16-2 hex digits)",
        ));
    }
    let (trace_id, parent_id, flags) = (&value[3..35], &value[36..52], &value[53..55]);
    for (name, part) in [
        ("trace id", trace_id),
        ("parent id", parent_id),
        ("flags", flags),
    ] {
        if !is_lower_hex(part) {
            return Err(err(&format!("{name} must be lowercase hex")));
        }
    }
    if trace_id.bytes().all(|b| b == b'0') {
        return Err(err("trace id must not be all zeros"));
    }
    if parent_id.bytes().all(|b| b == b'0') {
        return Err(err("parent id must not be all zeros"));
    }
    if value.len() > TRACEPARENT_LEN {
        if version == "00" {
            return Err(err("version 00 has trailing characters after the flags"));
        }
        if bytes[TRACEPARENT_LEN] != b'-' {
            return Err(err("fields after the flags must follow a '-'"));
        }
        if let Some(c) = value[TRACEPARENT_LEN..]
            .chars()
            .find(|c| !(c.is_ascii_graphic()))
        {
            return Err(err(&format!("contains {c:?}")));
        }
    }
    Ok(())
}

fn is_key_char(c: u8) -> bool {
    matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/')
}

fn check_tracestate_key(key: &str) -> Result<(), String> {
    let bad = || format!("list member key {key:?} breaks the W3C key grammar");
    let b = key.as_bytes();
    match key.split_once('@') {
        None => {
            // simple-key = lcalpha 0*255( lcalpha / DIGIT / "_" / "-"/ "*" / "/" )
            if b.is_empty() || b.len() > 256 || !b[0].is_ascii_lowercase() {
                return Err(bad());
            }
            if !b.iter().all(|&c| is_key_char(c)) {
                return Err(bad());
            }
        }
        Some((tenant, system)) => {
            // tenant-id "@" system-id
            let t = tenant.as_bytes();
            let s = system.as_bytes();
            if t.is_empty()
                || t.len() > 241
                || !(t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
            {
                return Err(bad());
            }
            if s.is_empty() || s.len() > 14 || !s[0].is_ascii_lowercase() {
                return Err(bad());
            }
            if !t.iter().chain(s.iter()).all(|&c| is_key_char(c)) {
                return Err(bad());
            }
        }
    }
    Ok(())
}

fn check_tracestate_value(key: &str, value: &str) -> Result<(), String> {
    // value = 0*255(chr) nblk-chr; chr = %x20 / nblk-chr;
    // nblk-chr = %x21-2B / %x2D-3C / %x3E-7E
    let b = value.as_bytes();
    let nblk = |c: u8| matches!(c, 0x21..=0x2B | 0x2D..=0x3C | 0x3E..=0x7E);
    if b.is_empty() || b.len() > 256 {
        return Err(format!("value of {key:?} must be 1 to 256 characters"));
    }
    if !nblk(b[b.len() - 1]) || !b.iter().all(|&c| c == b' ' || nblk(c)) {
        return Err(format!(
            "value of {key:?} has a character outside the W3C set"
        ));
    }
    Ok(())
}

/// Checks a `tracestate` against the W3C grammar: at most 32 list members, at
/// most 512 characters, valid keys and values, no duplicate keys.
pub fn validate_tracestate(value: &str) -> Result<(), ValidationError> {
    let err = |reason: String| trace_error("tracestate", value, reason);
    if value.len() > MAX_TRACESTATE_LEN {
        return Err(err(format!(
            "is {} characters; at most {MAX_TRACESTATE_LEN} are allowed",
            value.len()
        )));
    }
    let mut keys: Vec<&str> = Vec::new();
    for member in value.split(',') {
        let member = member.trim_matches(|c| c == ' ' || c == '\t');
        if member.is_empty() {
            continue;
        }
        let (key, val) = member
            .split_once('=')
            .ok_or_else(|| err(format!("list member {member:?} has no '='")))?;
        check_tracestate_key(key).map_err(&err)?;
        check_tracestate_value(key, val).map_err(&err)?;
        if keys.contains(&key) {
            return Err(err(format!("key {key:?} appears twice")));
        }
        keys.push(key);
        if keys.len() > MAX_TRACESTATE_MEMBERS {
            return Err(err(format!(
                "has more than {MAX_TRACESTATE_MEMBERS} list members"
            )));
        }
    }
    Ok(())
}

impl TraceContext {
    /// A validated trace context.
    pub fn new(
        request_id: u64,
        traceparent: impl Into<String>,
        tracestate: impl Into<String>,
    ) -> Result<Self, ValidationError> {
        let traceparent = traceparent.into();
        let tracestate = tracestate.into();
        if !traceparent.is_empty() {
            validate_traceparent(&traceparent)?;
        }
        if !tracestate.is_empty() {
            if traceparent.is_empty() {
                return Err(trace_error(
                    "tracestate",
                    &tracestate,
                    "a tracestate needs a traceparent",
                ));
            }
            validate_tracestate(&tracestate)?;
        }
        Ok(TraceContext {
            request_id,
            traceparent,
            tracestate,
        })
    }

    /// A fresh root context: random non-zero trace and parent ids, sampled.
    pub fn new_root(request_id: u64) -> Result<Self, crate::contract::error::HostError> {
        let mut ids = [0u8; 24];
        loop {
            clock::fill_random(&mut ids)?;
            if ids[..16].iter().any(|&b| b != 0) && ids[16..].iter().any(|&b| b != 0) {
                break;
            }
        }
        Ok(TraceContext {
            request_id,
            traceparent: format!(
                "00-{}-{}-01",
                hex::encode(&ids[..16]),
                hex::encode(&ids[16..])
            ),
            tracestate: String::new(),
        })
    }

    /// The context a launcher handed to this process through
    /// `RUNNING_PROCESS_BROKER_V1_TRACEPARENT` / `_TRACESTATE` (empty when
    /// unset). A value that is not valid UTF-8 or not valid W3C is an error.
    pub fn from_env() -> Result<Self, ValidationError> {
        let read = |name: &'static str, field: &'static str| -> Result<String, ValidationError> {
            match std::env::var_os(name) {
                None => Ok(String::new()),
                Some(v) => v.into_string().map_err(|raw| {
                    trace_error(
                        field,
                        &raw.to_string_lossy(),
                        format!("{name} is not UTF-8"),
                    )
                }),
            }
        };
        TraceContext::new(
            0,
            read(ENV_TRACEPARENT, "traceparent")?,
            read(ENV_TRACESTATE, "tracestate")?,
        )
    }

    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    pub fn tracestate(&self) -> &str {
        &self.tracestate
    }

    /// The 32-hex-digit trace id, if there is a traceparent.
    pub fn trace_id(&self) -> Option<&str> {
        (!self.traceparent.is_empty()).then(|| &self.traceparent[3..35])
    }

    /// The 16-hex-digit parent id, if there is a traceparent.
    pub fn parent_id(&self) -> Option<&str> {
        (!self.traceparent.is_empty()).then(|| &self.traceparent[36..52])
    }

    /// The trace flags byte, if there is a traceparent.
    pub fn trace_flags(&self) -> Option<u8> {
        if self.traceparent.is_empty() {
            return None;
        }
        u8::from_str_radix(&self.traceparent[53..55], 16).ok()
    }

    /// Whether the sampled flag is set (false without a traceparent).
    pub fn sampled(&self) -> bool {
        self.trace_flags().is_some_and(|f| f & 1 == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn accepts_the_w3c_example() {
        let tc = TraceContext::new(1, TP, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE").unwrap();
        assert_eq!(tc.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(tc.parent_id(), Some("00f067aa0ba902b7"));
        assert!(tc.sampled());
        assert_eq!(tc.trace_flags(), Some(1));
    }

    #[test]
    fn refuses_bad_traceparents() {
        let upper = TP.to_uppercase();
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zero_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        let ff = TP.replacen("00", "ff", 1);
        let trailing = format!("{TP}-x");
        let short = &TP[..54];
        for bad in [
            upper.as_str(),
            zero_trace,
            zero_parent,
            &ff,
            &trailing,
            short,
            "",
            "00",
        ] {
            if bad.is_empty() {
                continue;
            }
            assert!(validate_traceparent(bad).is_err(), "{bad} accepted");
        }
        let future = TP.replacen("00", "01", 1) + "-extra";
        validate_traceparent(&future).unwrap();
        assert!(validate_traceparent(&(TP.replacen("00", "01", 1) + "x")).is_err());
    }

    #[test]
    fn refuses_bad_tracestates() {
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert!(validate_tracestate(&many.join(",")).is_err());
        validate_tracestate(&many[..32].join(",")).unwrap();
        for bad in [
            "Key=v", "k=", "k", "k=v,k=w", "k=a,b", "1k=v", "k=v\u{1}", "t@Sys=v",
        ] {
            assert!(validate_tracestate(bad).is_err(), "{bad} accepted");
        }
        for ok in ["k=v", "a@b=c", " k=v , l=w ", "k=v,,l=w", "0t@s=v", "k=a b"] {
            validate_tracestate(ok).unwrap();
        }
        assert!(validate_tracestate(&format!("k={}", "v".repeat(600))).is_err());
        assert!(TraceContext::new(0, "", "k=v").is_err());
    }

    #[test]
    fn new_root_is_valid() {
        let tc = TraceContext::new_root(9).unwrap();
        validate_traceparent(tc.traceparent()).unwrap();
        assert!(tc.sampled());
        assert_ne!(tc, TraceContext::new_root(9).unwrap());
    }
}
