//! What every record of the one watch shares: the revision applied per key, so a replayed
//! (resumed watch) or older change is not applied twice, and the verdict on a record that is
//! not applied, which the follower logs and counts in one place. Its own module so that the
//! follower and the hold and admin syncs it drives all use it without importing each other.

use std::collections::HashMap;
use std::fmt::Display;

/// mod_revision of the record applied, per key.
#[derive(Debug, Default)]
pub struct Applied(HashMap<String, i64>);

impl Applied {
    /// Whether `revision` is newer than the one applied under `key`.
    pub fn is_newer(&self, key: &str, revision: i64) -> bool {
        self.0.get(key).is_none_or(|&r| r < revision)
    }

    pub fn record(&mut self, key: &str, revision: i64) {
        self.0.insert(key.to_string(), revision);
    }

    /// Records `revision` for `key`; false when one as new was applied already.
    pub fn newer(&mut self, key: &str, revision: i64) -> bool {
        let newer = self.is_newer(key, revision);
        if newer {
            self.record(key, revision);
        }
        newer
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

/// A record that was not applied: the error line's message and why.
#[derive(Debug)]
pub struct Refused {
    pub message: &'static str,
    pub reason: String,
}

impl Refused {
    pub fn new(message: &'static str, reason: impl Display) -> Refused {
        Refused {
            message,
            reason: reason.to_string(),
        }
    }
}

/// `Err`: the record was ignored (bad JSON, unknown cluster, backend or action) and the
/// state in force kept.
pub type Verdict = Result<(), Refused>;

/// The JSON record in `value`, or why it is refused (logged as `message`).
pub fn parse<T: serde::de::DeserializeOwned>(
    value: &[u8],
    message: &'static str,
) -> Result<T, Refused> {
    serde_json::from_slice(value).map_err(|e| Refused::new(message, e))
}
