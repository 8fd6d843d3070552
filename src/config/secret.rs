//! Secrets (check passwords, the admin token): the [`Secret`] newtype that cannot leak through
//! `Debug`/`Display`, and the resolution of the three ways a file may name one
//! (`*_env`, `*_file`, inline).
//!
//! Invariant: no message built here ever contains a secret's value — only variable names and
//! file paths — because these messages end up in logs and in `check-config` output.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::Problem;

/// A secret string. `Debug` and `Display` print `***`, so a `Config` can be logged whole; the
/// value is only reachable through [`Secret::expose`], which makes every use easy to audit.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Secret files are small; a path pointing at something huge (or `/dev/zero`) must fail fast
/// instead of eating memory while loading the config.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

// === impl Secret ===

impl Secret {
    /// Wraps a value (tests and probes build secrets directly).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value, for the one place that needs it (an AUTH exchange, a token comparison).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

// === impl SecretSource ===

/// Where the file says a secret comes from. Exactly one source per secret is allowed; the
/// caller checks that before resolving.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SecretSource<'a> {
    /// `password: "..."`: allowed for quick tests, discouraged because the file then holds it.
    Inline(&'a str),
    /// `password_env: NAME`: looked up through the caller's environment function.
    Env(&'a str),
    /// `password_file: PATH`: read at load time, one trailing newline trimmed.
    File(&'a str),
}

impl SecretSource<'_> {
    /// Reads the secret. Relative file paths are resolved from `base_dir` (the config file's
    /// directory), so a config and its secret files can move together.
    ///
    /// # Errors
    /// An unset or empty variable, an unreadable, empty or non-UTF-8 file, an empty inline value.
    pub(crate) fn resolve(
        self,
        env: &dyn Fn(&str) -> Option<String>,
        base_dir: Option<&Path>,
    ) -> Result<Secret, Problem> {
        match self {
            SecretSource::Inline("") => {
                Err(Problem::new("the value is empty")
                    .hint("remove the key if no secret is needed"))
            }
            SecretSource::Inline(value) => Ok(Secret::new(value)),
            SecretSource::Env(name) => resolve_env(name, env),
            SecretSource::File(path) => resolve_file(path, base_dir),
        }
    }
}

fn resolve_env(name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Secret, Problem> {
    // A value that is not a variable name is most likely the secret itself, written where
    // its variable's name belongs: never echo it (base64 secrets end in `=`, for one).
    if !is_variable_name(name) {
        return Err(Problem::new(format!(
            "the value ({} characters) is not an environment variable name; \
             *_env keys name a variable ([A-Za-z_][A-Za-z0-9_]*), not the secret itself",
            name.chars().count()
        ))
        .hint("export the secret in a variable and write its name here, e.g. password_env: ROLEGATE_PG_PASSWORD"));
    }
    match env(name) {
        None => Err(
            Problem::new(format!("environment variable {name} is not set"))
                .hint("export it before starting rolegate, or use a *_file key instead"),
        ),
        Some(value) if value.is_empty() => Err(Problem::new(format!(
            "environment variable {name} is set but empty"
        ))),
        Some(value) => Ok(Secret::new(value)),
    }
}

/// The shape of a portable environment variable name (POSIX `[A-Za-z_][A-Za-z0-9_]*`).
fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Reads a secret file as the `*_file` keys do (size cap, one trailing newline trimmed, the
/// content never in a message); for the admin client's `--token-file`.
///
/// # Errors
/// An unreadable, empty, oversized or non-UTF-8 file, described with its path.
pub fn read_secret_file(path: &Path) -> Result<Secret, String> {
    resolve_file(&path.to_string_lossy(), None).map_err(|p| p.to_string())
}

fn resolve_file(path: &str, base_dir: Option<&Path>) -> Result<Secret, Problem> {
    if path.is_empty() {
        return Err(Problem::new("the file path is empty"));
    }
    let full: PathBuf = match base_dir {
        Some(dir) if Path::new(path).is_relative() => dir.join(path),
        _ => PathBuf::from(path),
    };
    let shown = full.display();
    let mut bytes = Vec::new();
    let read = std::fs::File::open(&full)
        .and_then(|file| file.take(MAX_SECRET_FILE_BYTES + 1).read_to_end(&mut bytes));
    if let Err(error) = read {
        return Err(Problem::new(format!("cannot read \"{shown}\": {error}"))
            .hint("check the path and the file's permissions (relative paths start at the config file's directory)"));
    }
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(Problem::new(format!(
            "\"{shown}\" is larger than {MAX_SECRET_FILE_BYTES} bytes; it does not look like a secret file"
        )));
    }
    let Ok(text) = String::from_utf8(bytes) else {
        return Err(Problem::new(format!("\"{shown}\" is not valid UTF-8")));
    };
    // Editors and `echo` add a trailing newline that is never part of the secret.
    let value = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if value.is_empty() {
        return Err(Problem::new(format!("\"{shown}\" is empty")));
    }
    Ok(Secret::new(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn debug_and_display_hide_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "*** ***");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn env_lookup_uses_the_given_environment() {
        let env = |name: &str| (name == "PW").then(|| "s3cret".to_string());
        let secret = SecretSource::Env("PW").resolve(&env, None);
        assert_eq!(secret.map(|s| s.expose().to_string()), Ok("s3cret".into()));
        let missing = SecretSource::Env("OTHER").resolve(&env, None);
        assert!(missing.is_err_and(|p| p.message.contains("OTHER is not set")));
    }

    #[test]
    fn a_secret_written_where_a_variable_name_belongs_is_not_echoed() {
        let env = |_: &str| Some("x".to_string());
        for value in ["c2VjcmV0LXZhbHVl==", "hunter 2", "p@ss/word", "9lives", ""] {
            let problem = SecretSource::Env(value).resolve(&env, None).unwrap_err();
            let shown = problem.to_string();
            assert!(
                shown.contains("not an environment variable name"),
                "{shown}"
            );
            if !value.is_empty() {
                assert!(!shown.contains(value), "{shown}");
            }
        }
        for name in ["PGPASSWORD", "_x", "ROLEGATE_PG_PASSWORD_2"] {
            assert!(
                SecretSource::Env(name).resolve(&env, None).is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn file_trims_one_trailing_newline_and_never_echoes_content() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("pw"), "top secret \r\n").expect("write");
        let secret = SecretSource::File("pw").resolve(&no_env, Some(dir.path()));
        assert_eq!(
            secret.map(|s| s.expose().to_string()),
            Ok("top secret ".into())
        );

        std::fs::write(dir.path().join("empty"), "\n").expect("write");
        let empty = SecretSource::File("empty").resolve(&no_env, Some(dir.path()));
        assert!(empty.is_err_and(|p| p.message.ends_with("is empty")));

        let missing = SecretSource::File("nope").resolve(&no_env, Some(dir.path()));
        assert!(missing.is_err_and(|p| p.message.starts_with("cannot read")));
    }
}
