//! What every record of the one watch shares: the revision applied per key, so a replayed
//! (resumed watch) or older change is not applied twice, and the JSON parse that logs why a
//! record is ignored. Its own module so that the follower and the hold and admin syncs it
//! drives all use it without importing each other.

use std::collections::HashMap;

use tracing::error;

/// mod_revision of the record applied, per key: a replayed (resumed watch) or older change is
/// not applied twice.
#[derive(Debug, Default)]
pub struct Applied(HashMap<String, i64>);

impl Applied {
    /// Records `revision` for `key`; false when one as new was applied already.
    pub fn newer(&mut self, key: &str, revision: i64) -> bool {
        if self.0.get(key).is_some_and(|&r| r >= revision) {
            return false;
        }
        self.0.insert(key.to_string(), revision);
        true
    }

    pub fn get(&self, key: &str) -> Option<i64> {
        self.0.get(key).copied()
    }

    /// Forgets `key`; false when nothing was applied under it.
    pub fn remove(&mut self, key: &str) -> bool {
        self.0.remove(key).is_some()
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }
}

/// The JSON record under `key`, or `None` after an error line saying why it is ignored.
pub fn parse_record<T: serde::de::DeserializeOwned>(
    key: &str,
    value: &[u8],
    ignored: &'static str,
) -> Option<T> {
    serde_json::from_slice(value)
        .map_err(|e| error!(message = ignored, key = %key, reason = %e))
        .ok()
}
