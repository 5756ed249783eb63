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
    /// `hashing_started` on: its ctime must be at least a second older.
    /// Timestamps have a coarse granule, so a write in the same granule as
    /// the hash could leave the stamp equal while the bytes differ; such a
    /// file is simply hashed again next time (the rule git uses for its
    /// index).
    pub fn settled_before(&self, hashing_started: std::time::SystemTime) -> bool {
        let started = hashing_started
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.ctime.0.saturating_add(1) < started
    }
}
