//! Human durations as written in the config file: `250ms`, `2s`, `1m`, `1m30s` (humantime).
//!
//! A bare number is refused rather than guessed: `timeout: 5` could mean seconds or
//! milliseconds, and a wrong guess is a factor of 1000 (pgcat's unit-less `u64` timeouts are
//! the cautionary tale).

use std::time::Duration;

use super::error::Problem;

/// Upper bound for every duration. Far beyond any sensible setting, and low enough that
/// `Instant::now() + d` can never overflow anywhere in the proxy.
pub(crate) const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

const EXAMPLES: &str = "write a number with a unit, e.g. 250ms, 2s, 1m30s";

/// Parses one duration.
///
/// # Errors
/// Empty text, a number without a unit, anything humantime rejects, or more than a year.
pub(crate) fn parse(text: &str) -> Result<Duration, Problem> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Problem::new("empty duration").hint(EXAMPLES));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::new(format!("duration {text} has no unit"))
            .hint(format!("write {text}s or {text}ms")));
    }
    let duration = humantime::parse_duration(text).map_err(|error| {
        Problem::new(format!("invalid duration {text:?}: {error}")).hint(EXAMPLES)
    })?;
    if duration > MAX {
        return Err(Problem::new(format!(
            "duration {text:?} is longer than the supported maximum of 365 days"
        )));
    }
    Ok(duration)
}

/// Formats a duration the way the file would write it (`1s`, `1s500ms`), for messages.
pub(crate) fn display(duration: Duration) -> String {
    humantime::format_duration(duration)
        .to_string()
        .replace(' ', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_units_and_compounds() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn bare_number_asks_for_a_unit() {
        let problem = parse("5").expect_err("no unit");
        assert_eq!(
            problem.to_string(),
            "duration 5 has no unit; write 5s or 5ms"
        );
    }

    #[test]
    fn rejects_garbage_and_huge_values() {
        assert!(parse("").is_err());
        assert!(parse("fast").is_err());
        assert!(parse("-1s").is_err());
        assert!(parse("400d").is_err());
        assert!(parse("99999999999999999999999999h").is_err());
    }

    #[test]
    fn display_round_trips() {
        assert_eq!(display(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(display(Duration::from_secs(2)), "2s");
    }
}
