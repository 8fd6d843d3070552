//! Positions for errors: which line and column each field path came from.
//!
//! yaml_serde reports a position only for the errors it finds itself (syntax, wrong type,
//! unknown key). Validation errors are found later, on plain Rust values, so [`Locator`] walks
//! the same text once more with yaml-rust2's event parser and records where every key and value
//! starts, under the same path syntax the errors use: `clusters[0].backends[1].address`.
//! [`syntax_error`] turns a yaml_serde error into a [`ConfigError`] with that path syntax.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::error::{ConfigError, Location};

/// Field path → position of the value (and of the key, for mapping entries).
#[derive(Debug, Default)]
pub(crate) struct Locator {
    /// First occurrence: the value serde kept when it accepted the document.
    values: HashMap<String, Location>,
    /// Last occurrence, so that a key written twice can be pointed at where it repeats.
    keys: HashMap<String, Location>,
}

/// One open collection while walking the events. `path` is `None` inside a complex key
/// (a mapping used as a key), which no error can name.
enum Frame {
    Map {
        path: Option<String>,
        /// The key whose value comes next; `None` while waiting for a key.
        key: Option<Option<String>>,
        /// Block mappings report their start after the first key, so the first key fixes it.
        first_key_seen: bool,
    },
    Seq {
        path: Option<String>,
        next_index: usize,
    },
}

#[derive(Default)]
struct Walker {
    locator: Locator,
    stack: Vec<Frame>,
    done: bool,
}

// === impl Locator ===

impl Locator {
    /// Records the positions in `text`. Best effort: a document yaml-rust2 cannot parse (serde
    /// already accepted it, so this is rare) leaves the positions found before the problem.
    pub(crate) fn new(text: &str) -> Locator {
        let mut walker = Walker::default();
        // An error here only truncates the map; errors then print without a position.
        let _ = Parser::new_from_str(text).load(&mut walker, false);
        walker.locator
    }

    /// Position of the value at `path`, or of the nearest enclosing value that has one (an
    /// error about a missing key points at the mapping that lacks it).
    pub(crate) fn value(&self, path: &str) -> Option<Location> {
        let mut path = path;
        loop {
            if let Some(location) = self.values.get(path) {
                return Some(*location);
            }
            path = parent(path)?;
        }
    }

    /// Position of the key at `path`, falling back to the value's position.
    pub(crate) fn key(&self, path: &str) -> Option<Location> {
        self.keys.get(path).copied().or_else(|| self.value(path))
    }
}

/// `a.b[2].c` → `a.b[2]` → `a.b` → `a` → `` → `None`.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

fn location(mark: Marker) -> Location {
    // yaml-rust2 lines are 1-based, columns 0-based; yaml_serde and editors count both from 1.
    Location {
        line: mark.line(),
        column: mark.col() + 1,
    }
}

// === impl Walker ===

impl Walker {
    /// Path of the node that starts now, as a child of the innermost open collection; records
    /// keys on the way. Returns `Err(())` when the node is itself a mapping key.
    fn child_path(&mut self, event: &Event, mark: Marker) -> Result<Option<String>, ()> {
        let Some(frame) = self.stack.last_mut() else {
            return Ok(Some(String::new()));
        };
        match frame {
            Frame::Seq { path, next_index } => {
                let child = path.as_ref().map(|p| format!("{p}[{next_index}]"));
                *next_index += 1;
                Ok(child)
            }
            Frame::Map {
                path,
                key,
                first_key_seen,
            } => match key.take() {
                Some(child) => Ok(child),
                None => {
                    let child = match (path.as_deref(), event) {
                        (Some(""), Event::Scalar(k, ..)) => Some(k.clone()),
                        (Some(p), Event::Scalar(k, ..)) => Some(format!("{p}.{k}")),
                        _ => None,
                    };
                    if let (Some(map_path), false) = (path.as_ref(), *first_key_seen) {
                        let here = location(mark);
                        let start = self.locator.values.entry(map_path.clone()).or_insert(here);
                        *start = (*start).min(here);
                    }
                    *first_key_seen = true;
                    if let Some(child) = &child {
                        self.locator.keys.insert(child.clone(), location(mark));
                    }
                    *key = Some(child);
                    Err(())
                }
            },
        }
    }

    fn record(&mut self, path: &Option<String>, mark: Marker) {
        if let Some(path) = path {
            self.locator
                .values
                .entry(path.clone())
                .or_insert(location(mark));
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.done {
            return;
        }
        match event {
            Event::Scalar(..) | Event::Alias(_) => {
                if let Ok(path) = self.child_path(&event, mark) {
                    self.record(&path, mark);
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A collection used as a mapping key has no path; its contents are skipped.
                let path = self.child_path(&event, mark).unwrap_or(None);
                self.record(&path, mark);
                self.stack.push(match event {
                    Event::MappingStart(..) => Frame::Map {
                        path,
                        key: None,
                        first_key_seen: false,
                    },
                    _ => Frame::Seq {
                        path,
                        next_index: 0,
                    },
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            // Only the first document is a config (yaml_serde refuses more than one).
            Event::DocumentEnd => self.done = true,
            _ => {}
        }
    }
}

// === yaml_serde errors ===

/// Converts a yaml_serde error: position from `location()`, field path from the `path: ` prefix
/// yaml_serde puts on its messages, and the offending key appended for unknown/duplicate keys.
/// `text` is only read again for a duplicate key, which serde positions at the enclosing
/// mapping while the operator needs the line of the repeat.
pub(crate) fn syntax_error(error: yaml_serde::Error, text: &str) -> ConfigError {
    let mut location = error.location().map(|l| Location {
        line: l.line(),
        column: l.column(),
    });
    let mut rendered = error.to_string();
    if let Some(l) = &location {
        rendered = rendered.replacen(&format!(" at line {} column {}", l.line, l.column), "", 1);
    }
    let (mut path, message) = split_path(&rendered);
    let mut message = friendly_types(message);
    let mut hint = None;
    if let Some(key) = quoted_after(&message, "unknown field `") {
        path = join(&path, &key);
        hint = Some(match closest(&key, &expected_names(&message)) {
            Some(name) => format!("did you mean `{name}`?"),
            None => "remove it, or check the spelling against the configuration reference \
                     (README.md#configuration-reference)"
                .to_string(),
        });
    } else if let Some(value) = quoted_after(&message, "unknown variant `") {
        if let Some(name) = closest(&value, &expected_names(&message)) {
            hint = Some(format!("did you mean `{name}`?"));
        }
    } else if let Some(key) = quoted_after(&message, "duplicate field `") {
        path = join(&path, &key);
        location = Locator::new(text).key(&path).or(location);
        message = format!("`{key}` is set twice");
        hint = Some("keep one of them".to_string());
    }
    ConfigError::Syntax {
        path,
        location,
        message,
        hint,
        source: error,
    }
}

/// yaml_serde writes `clusters[0].rise: invalid type...`; a path never contains a space, which
/// tells it apart from messages such as `invalid type: ...` at the document root.
fn split_path(text: &str) -> (String, &str) {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "_-.[]?".contains(c);
    match text.split_once(": ") {
        Some((path, rest)) if !path.is_empty() && path.chars().all(is_path_char) => {
            (path.to_string(), rest)
        }
        _ => (String::new(), text),
    }
}

/// Rust type names mean nothing to an operator.
fn friendly_types(message: &str) -> String {
    let mut out = message.to_string();
    for int in [
        "expected u16",
        "expected u32",
        "expected u64",
        "expected usize",
    ] {
        out = out.replace(int, "expected a whole number (0 or more)");
    }
    if let Some(at) = out.find("expected struct ") {
        let name_start = at + "expected struct ".len();
        let name_len = out[name_start..]
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .unwrap_or(out.len() - name_start);
        out.replace_range(at..name_start + name_len, "expected a mapping of keys");
    }
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The text between `prefix` and the next backtick.
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let start = message.find(prefix)? + prefix.len();
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// The backtick-quoted names after "expected" in serde's "expected one of `a`, `b`".
fn expected_names(message: &str) -> Vec<String> {
    let Some(at) = message.find("expected") else {
        return Vec::new();
    };
    message[at..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The candidate within a small edit (Levenshtein) distance of `word` (a typo), if any.
fn closest(word: &str, candidates: &[String]) -> Option<String> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
admin:
  listen: 127.0.0.1:9813
clusters:
  - name: pg
    backends:
      - { name: a, address: 10.0.0.1:5432 }
      - name: b
        address: \"10.0.0.2:5432\"
";

    fn at(line: usize, column: usize) -> Option<Location> {
        Some(Location { line, column })
    }

    #[test]
    fn records_values_and_keys_in_block_and_flow_style() {
        let locator = Locator::new(TEXT);
        assert_eq!(locator.value("admin.listen"), at(2, 11));
        assert_eq!(locator.key("admin.listen"), at(2, 3));
        assert_eq!(locator.value("clusters[0].name"), at(4, 11));
        assert_eq!(locator.value("clusters[0].backends[0].address"), at(6, 29));
        assert_eq!(locator.value("clusters[0].backends[1].address"), at(8, 18));
        // A block mapping starts at its first key, a flow mapping at its brace.
        assert_eq!(locator.value("clusters[0]"), at(4, 5));
        assert_eq!(locator.value("clusters[0].backends[0]"), at(6, 9));
    }

    #[test]
    fn missing_paths_fall_back_to_the_enclosing_value() {
        let locator = Locator::new(TEXT);
        assert_eq!(locator.value("clusters[0].check.user"), at(4, 5));
        assert_eq!(locator.value("listeners"), at(1, 1));
    }

    #[test]
    fn suggests_the_closest_name() {
        let names = ["protocol".to_string(), "backends".to_string()];
        assert_eq!(closest("protocl", &names), Some("protocol".to_string()));
        assert_eq!(closest("xyz", &names), None);
    }

    #[test]
    fn an_unknown_key_far_from_every_name_points_at_the_reference() {
        let text = "clusters: []\nxyzzy_plugh: 1\n";
        let error = syntax_error(crate::config::raw::parse(text).unwrap_err(), text);
        let line = error.to_string();
        assert!(
            line.starts_with("2:1: xyzzy_plugh: unknown field `xyzzy_plugh`"),
            "{line}"
        );
        assert!(
            line.ends_with(
                "; remove it, or check the spelling against the configuration reference \
                 (README.md#configuration-reference)"
            ),
            "{line}"
        );
    }

    #[test]
    fn never_panics_on_odd_documents() {
        for text in [
            "",
            "[",
            "? [a]\n: 1",
            "a: &x 1\nb: *x",
            "- - - ",
            "{a: {b: [c, {d: e}]}}",
        ] {
            let _ = Locator::new(text);
        }
    }
}
