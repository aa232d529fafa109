//! Unwrapped keys kept for reuse, so repeated signatures with the same key
//! skip the AES-GCM unwrap and the PKCS#8 parse.
//!
//! Entries are keyed by blob *and* policy encoding: a hit therefore means the
//! exact pair (blob, policy) opened before, and a request that presents the
//! same blob with an edited policy misses and fails the unwrap as it should.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::keys::LoadedKey;

/// Bounded map from (blob, policy) to a parsed key.
pub struct KeyCache {
    capacity: usize,
    entries: Mutex<HashMap<Vec<u8>, Arc<LoadedKey>>>,
}

/// `len(blob) || blob || policy`: the length prefix keeps two different
/// (blob, policy) splits of the same bytes apart.
fn cache_key(blob: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + blob.len() + aad.len());
    key.extend_from_slice(&(blob.len() as u64).to_le_bytes());
    key.extend_from_slice(blob);
    key.extend_from_slice(aad);
    key
}

impl KeyCache {
    pub fn new(capacity: usize) -> KeyCache {
        KeyCache {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn lookup(&self, blob: &[u8], aad: &[u8]) -> Option<Arc<LoadedKey>> {
        let key = cache_key(blob, aad);
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(&key).cloned()
    }

    pub fn insert(&self, blob: &[u8], aad: &[u8], key: Arc<LoadedKey>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity {
            // Any victim will do: a miss only costs one unwrap.
            if let Some(victim) = entries.keys().next().cloned() {
                entries.remove(&victim);
            }
        }
        entries.insert(cache_key(blob, aad), key);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Curve, KeySpec};
    use crate::firmware::keys::generate;

    #[test]
    fn bounded_and_keyed_by_policy_too() {
        let key = Arc::new(generate(KeySpec::Ec(Curve::P256)).unwrap().key);
        let cache = KeyCache::new(2);
        cache.insert(b"a", b"p", Arc::clone(&key));
        assert!(cache.lookup(b"a", b"p").is_some());
        assert!(cache.lookup(b"a", b"q").is_none());
        assert!(cache.lookup(b"ap", b"").is_none());
        cache.insert(b"b", b"p", Arc::clone(&key));
        cache.insert(b"c", b"p", Arc::clone(&key));
        assert_eq!(cache.len(), 2);
        assert!(cache.lookup(b"c", b"p").is_some());
    }
}
