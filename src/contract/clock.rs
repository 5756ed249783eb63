//! Time and entropy for the value types: deadlines that never overflow,
//! wall-clock milliseconds for identities, and random ids for trace contexts,
//! nonces and endpoint tokens. Portable (std and `getrandom` only); no host
//! fact lives here.

use crate::contract::error::HostError;

/// Fills `buf` from the operating system's random source.
pub fn fill_random(buf: &mut [u8]) -> Result<(), HostError> {
    getrandom::fill(buf).map_err(|e| HostError::Entropy {
        reason: e.to_string(),
    })
}

/// `timeout` from now, saturating: a timeout too large to represent means
/// "no deadline" in practice (a century) instead of an overflow panic.
pub fn deadline_after(timeout: std::time::Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(std::time::Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_time_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
