//! Pure interpretation of what the databases answer to the role checks: text and reply values
//! in, [`Facts`](super::Facts) (or an operator-readable failure) out. No I/O and no clock, so
//! every shape — including malformed and hostile ones — is unit-tested here, and the functions
//! are public so that fuzz targets can call them directly.
//!
//! Invariant: nothing in this module panics, whatever the input.

pub mod mysql;
pub mod postgres;
pub mod redis;

use std::time::Duration;

/// Seconds as servers print them (`17`, `17.263554`, `-0.2`) into a [`Duration`]. A negative
/// value (the replica's clock is behind the primary's) is clamped to zero; NaN, infinities and
/// absurd values are rejected.
pub fn parse_seconds(text: &str) -> Option<Duration> {
    let seconds: f64 = text.trim().parse().ok()?;
    if !seconds.is_finite() {
        return None;
    }
    Duration::try_from_secs_f64(seconds.max(0.0)).ok()
}

/// At most `max` characters of a value the server sent, for failure details.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_accept_integers_fractions_and_clamp_negatives() {
        assert_eq!(parse_seconds("17"), Some(Duration::from_secs(17)));
        assert_eq!(parse_seconds(" 0.25 "), Some(Duration::from_millis(250)));
        assert_eq!(parse_seconds("-3.5"), Some(Duration::ZERO));
        for bad in ["", "NaN", "inf", "-inf", "1e400", "1e300", "ten", "1s"] {
            assert_eq!(parse_seconds(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn shorten_cuts_on_char_boundaries() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("ééééé", 2), "éé...");
    }
}
