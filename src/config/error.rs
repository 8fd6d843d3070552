//! Config errors: one [`ConfigError`] per problem, each naming the field path and, when known,
//! the line and column; [`ConfigErrors`] is the non-empty list a load returns, printed one error
//! per line as `FILE:LINE:COLUMN: FIELD.PATH: MESSAGE`.
//!
//! Messages say what to do, not only what is wrong, and never contain a secret's value.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A 1-based line and column in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One problem in a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The YAML is malformed, or does not have the shape of a config (unknown key, wrong type,
    /// unknown enum value). Parsing stops at the first such error.
    #[error("{}", Line { location: *location, path, message, hint: hint.as_deref() })]
    Syntax {
        /// Field path such as `clusters[0].check`; empty when the error is not inside a field.
        path: String,
        location: Option<Location>,
        /// What is wrong, in yaml_serde's words with Rust type names translated.
        message: String,
        /// A likely fix, e.g. the closest known key for a typo.
        hint: Option<String>,
        #[source]
        source: yaml_serde::Error,
    },
    /// A well-formed value that is not acceptable (found by validation, all reported at once).
    #[error("{}", Line { location: *location, path, message, hint: hint.as_deref() })]
    Invalid {
        /// Field path such as `clusters[0].backends[1].address`.
        path: String,
        /// Where the value is (or the enclosing mapping, when the key is missing).
        location: Option<Location>,
        /// What is wrong.
        message: String,
        /// What to do about it, when the message alone does not say.
        hint: Option<String>,
    },
}

/// A leaf problem found by a value parser, before the validator attaches path and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

/// The shared rendering of `LINE:COLUMN: PATH: MESSAGE; HINT`, each part only when present.
struct Line<'a> {
    location: Option<Location>,
    path: &'a str,
    message: &'a str,
    hint: Option<&'a str>,
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(location) = self.location {
            write!(f, "{location}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(self.message)?;
        match self.hint {
            Some(hint) => write!(f, "; {hint}"),
            None => Ok(()),
        }
    }
}

// === impl Problem ===

impl Problem {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Problem {
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match &self.hint {
            Some(hint) => write!(f, "; {hint}"),
            None => Ok(()),
        }
    }
}

// === impl ConfigError ===

impl ConfigError {
    /// The field path (`clusters[0].backends[1].address`); empty for whole-file errors.
    pub fn path(&self) -> &str {
        match self {
            ConfigError::Read { .. } => "",
            ConfigError::Syntax { path, .. } | ConfigError::Invalid { path, .. } => path,
        }
    }

    /// Line and column in the file, when known.
    pub fn location(&self) -> Option<Location> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Syntax { location, .. } | ConfigError::Invalid { location, .. } => {
                *location
            }
        }
    }

    /// Writes the error as one `FILE:LINE:COLUMN: PATH: MESSAGE` line.
    fn write_line(&self, file: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(
                    f,
                    "{}: cannot read the config file: {source}",
                    path.display()
                )
            }
            // `Display` starts with `LINE:COLUMN: ` when there is a location.
            _ if self.location().is_some() => write!(f, "{file}:{self}"),
            _ => write!(f, "{file}: {self}"),
        }
    }
}

// === impl ConfigErrors ===

/// Every problem found in one config file (never empty). `Display` prints one per line.
#[derive(Debug)]
pub struct ConfigErrors {
    file: Option<PathBuf>,
    errors: Vec<ConfigError>,
}

impl ConfigErrors {
    /// One error. A [`ConfigError::Read`] also names the file.
    pub fn single(error: ConfigError) -> Self {
        let file = match &error {
            ConfigError::Read { path, .. } => Some(path.clone()),
            _ => None,
        };
        ConfigErrors {
            file,
            errors: vec![error],
        }
    }

    /// `None` when `errors` is empty, which keeps the non-empty invariant in the type.
    pub(crate) fn new(file: Option<&Path>, errors: Vec<ConfigError>) -> Option<Self> {
        (!errors.is_empty()).then(|| ConfigErrors {
            file: file.map(Path::to_path_buf),
            errors,
        })
    }

    /// Names the file the errors are in (a `Read` error already names its own).
    pub(crate) fn in_file(mut self, file: Option<&Path>) -> Self {
        if self.file.is_none() {
            self.file = file.map(Path::to_path_buf);
        }
        self
    }

    /// The file the errors are in, when the config came from a file.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The errors in file order (errors without a position last).
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }

    /// Number of errors; at least 1.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Always `false`: a `ConfigErrors` holds at least one error.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = match &self.file {
            Some(path) => path.display().to_string(),
            None => "<config>".to_string(),
        };
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            error.write_line(&file, f)?;
        }
        Ok(())
    }
}

/// The `Display` already lists every error, so there is no single `source()` to chain to.
impl std::error::Error for ConfigErrors {}
