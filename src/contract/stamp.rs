//! The stamp of a file: the facts the kernel gives about its content without
//! reading it. A plain value here; `sys` reads it from the file system.

/// Identity of a file's content as far as the kernel tells: if none of these
/// changed, neither did the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl FileStamp {
    /// Whether this stamp can vouch for the content hashed from
    /// `hashing_started` on: whether any write from then on is bound to
    /// change the ctime (which no user can set). A write in the same
    /// timestamp granule as the last one leaves the stamp equal while the
    /// bytes differ, so the ctime must be older than the hash by more than
    /// a granule; a file that is not is simply hashed again next time (the
    /// rule git uses for its index).
    ///
    /// The granule depends on the file system. One that keeps whole seconds
    /// (its ctime has no nanoseconds) needs the ctime to be in an earlier
    /// second than the one before the hash started. One with nanosecond
    /// timestamps (ext4, xfs, btrfs, tmpfs, ...) stamps a write with the
    /// kernel's coarse clock, which lags the true time by less than one of
    /// its ticks; `fine_granule` (a few ticks, from the system) must then
    /// separate the ctime from the start of the hash, so a binary copied
    /// into place is trusted milliseconds later instead of seconds.
    pub fn settled_before(
        &self,
        hashing_started: std::time::SystemTime,
        fine_granule: std::time::Duration,
    ) -> bool {
        let Ok(started) = hashing_started.duration_since(std::time::UNIX_EPOCH) else {
            return false;
        };
        let (secs, nanos) = self.ctime;
        if nanos == 0 {
            return secs.saturating_add(1) < started.as_secs() as i64;
        }
        let (Ok(secs), Ok(nanos)) = (u64::try_from(secs), u32::try_from(nanos)) else {
            return false;
        };
        std::time::Duration::new(secs, nanos).saturating_add(fine_granule) < started
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn stamp(ctime: (i64, i64)) -> FileStamp {
        FileStamp {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: ctime,
            ctime,
        }
    }

    #[test]
    fn whole_second_timestamps_need_an_earlier_second() {
        let now = UNIX_EPOCH + Duration::new(1_000, 500_000_000);
        let granule = Duration::from_millis(10);
        assert!(!stamp((1_000, 0)).settled_before(now, granule));
        assert!(!stamp((999, 0)).settled_before(now, granule));
        assert!(stamp((998, 0)).settled_before(now, granule));
    }

    #[test]
    fn nanosecond_timestamps_need_one_granule() {
        let now = UNIX_EPOCH + Duration::new(1_000, 500_000_000);
        let granule = Duration::from_millis(10);
        assert!(!stamp((1_000, 495_000_000)).settled_before(now, granule));
        assert!(!stamp((1_000, 490_000_000)).settled_before(now, granule));
        assert!(stamp((1_000, 489_999_999)).settled_before(now, granule));
        assert!(stamp((999, 999_000_000)).settled_before(now + granule, granule));
        // A ctime after the start (a clock step) never vouches.
        assert!(!stamp((1_001, 1)).settled_before(now, granule));
        assert!(!stamp((-1, 5)).settled_before(now, granule));
    }
}
