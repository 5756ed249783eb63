//! Entry points for the fuzz targets (`fuzz/`) and the malformed-input tests
//! (`tests/malformed/`): decoders that are private to their modules, under
//! names that say what they decode. Not part of the supported API.
//!
//! Every other decoder is public already: [`crate::wire`] (frames and the
//! probe), [`crate::DaemonProcess`] and [`crate::ServiceDefinition`].

use crate::contract::identity::DaemonProcess;
use crate::contract::keys::BackendKey;

/// Decodes a pool manifest (the JSON a `BackendPool` writes per key) into the
/// key and identity it records, applying every rule the pool applies before
/// trusting one (manifest version, key and identity validation), without
/// the pool's comparison with a wanted key and without touching the digest
/// cache.
pub fn decode_pool_manifest(bytes: &[u8]) -> Result<(BackendKey, DaemonProcess), String> {
    crate::reuse::pool::decode_manifest(bytes).map_err(|e| e.to_string())
}
