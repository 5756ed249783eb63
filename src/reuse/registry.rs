//! The in-process registry of live backends, one per [`BackendKey`].
//!
//! Entries remember when they were inserted, last handed out and last
//! verified, so the router can apply its re-verification policy and evict
//! the least recently used backend. The registry decides nothing itself: it
//! is a map with liveness pruning. Admission and launching are the router's.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::contract::keys::BackendKey;
use crate::launch::BackendHandle;

/// One registered backend.
#[derive(Debug, Clone)]
pub struct RegistryEntry {
    pub handle: BackendHandle,
    pub inserted_at: Instant,
    pub last_used: Instant,
    pub last_verified: Instant,
}

/// Live backends by key. Thread-safe.
#[derive(Debug, Default)]
pub struct BackendRegistry {
    entries: Mutex<HashMap<BackendKey, RegistryEntry>>,
}

impl BackendRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<BackendKey, RegistryEntry>> {
        // Every change is a single insert or remove: a panic elsewhere cannot
        // leave the map half-updated.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `handle` under `key` (as just verified); returns the handle
    /// it replaces, if any.
    pub fn insert(&self, key: BackendKey, handle: BackendHandle) -> Option<BackendHandle> {
        let now = Instant::now();
        let entry = RegistryEntry {
            handle,
            inserted_at: now,
            last_used: now,
            last_verified: now,
        };
        self.entries().insert(key, entry).map(|e| e.handle)
    }

    /// The backend of `key`, marked as used now.
    pub fn get(&self, key: &BackendKey) -> Option<BackendHandle> {
        self.entry(key).map(|e| e.handle)
    }

    /// The entry of `key`, marked as used now.
    pub fn entry(&self, key: &BackendKey) -> Option<RegistryEntry> {
        let mut entries = self.entries();
        let entry = entries.get_mut(key)?;
        entry.last_used = Instant::now();
        Some(entry.clone())
    }

    /// Records a successful re-verification of `key`'s backend.
    pub fn mark_verified(&self, key: &BackendKey) {
        if let Some(entry) = self.entries().get_mut(key) {
            entry.last_verified = Instant::now();
        }
    }

    /// Removes `key`'s entry (the backend itself is left running).
    pub fn remove(&self, key: &BackendKey) -> Option<BackendHandle> {
        self.entries().remove(key).map(|e| e.handle)
    }

    /// Removes `key`'s entry only if it still holds the backend with `pid`,
    /// so a caller that found a dead backend cannot remove its replacement.
    pub fn remove_if_pid(&self, key: &BackendKey, pid: u32) -> Option<BackendHandle> {
        let mut entries = self.entries();
        if entries.get(key).is_some_and(|e| e.handle.pid() == pid) {
            return entries.remove(key).map(|e| e.handle);
        }
        None
    }

    /// Every entry, in no particular order.
    pub fn items(&self) -> Vec<(BackendKey, RegistryEntry)> {
        self.entries()
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    /// Removes the entries whose process has exited (checked through their
    /// pidfds) and returns their keys.
    pub fn prune_stale(&self) -> Vec<BackendKey> {
        let mut entries = self.entries();
        let dead: Vec<BackendKey> = entries
            .iter()
            .filter(|(_, e)| !e.handle.is_alive())
            .map(|(k, _)| k.clone())
            .collect();
        for key in &dead {
            if let Some(entry) = entries.remove(key) {
                // Reaped already; this releases the endpoint and removes a
                // socket file the backend left.
                entry.handle.exit();
            }
        }
        dead
    }

    /// The least recently used entry, not counting `except`.
    pub fn least_recently_used(&self, except: &BackendKey) -> Option<(BackendKey, BackendHandle)> {
        self.entries()
            .iter()
            .filter(|(k, _)| *k != except)
            .min_by_key(|(_, e)| e.last_used)
            .map(|(k, e)| (k.clone(), e.handle.clone()))
    }
}
