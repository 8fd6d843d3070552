//! `rolegate import-haproxy FILE`: a haproxy.cfg that fronts PostgreSQL, MySQL/MariaDB or Redis
//! → a rolegate config on stdout, and one `FILE:LINE: message` on stderr per construct that
//! could not be translated.
//!
//! The pipeline is a chain of pure steps, one file each: `lex` splits a line into words the
//! way HAProxy does, `sections` groups them into sections with line numbers, `proxies`
//! folds each proxy over its `defaults` (`proxy` for its directives, `server` for
//! `server`/`default-server` parameters), `detect` reads the protocol and role out of the
//! health check (Patroni's REST paths, a Redis `tcp-check` script, `mysql-check`, xinetd
//! `clustercheck`), `translate` turns routes into clusters (`cluster`, `credentials`) and
//! listeners (`listener`), and `emit` writes the `model` as commented YAML. Every
//! message names the reason from `reasons`; only [`run`] touches the file system.
//!
//! The rule for what is carried over: **what the operator wrote is translated; what HAProxy
//! only defaulted is left to rolegate's defaults**, and a comment says where they differ (an
//! implicit `inter 2s` is not copied; an explicit `inter 3s` is). Credentials HAProxy's checks
//! never needed (an HTTP oracle, a passwordless `mysql-check` user) become `password_env`
//! placeholders, named at the top of the output and on stderr.

mod cluster;
mod credentials;
mod detect;
mod emit;
mod lex;
mod listener;
mod model;
mod proxies;
mod proxy;
mod reasons;
mod sections;
mod server;
mod translate;
mod values;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::process::ExitCode;

/// One construct that was not (or not fully) translated, at its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub line: usize,
    pub message: String,
}

/// The notes of one import, kept in the order found; [`Notes::sorted`] orders them by line.
#[derive(Debug, Default)]
pub(crate) struct Notes(Vec<Note>);

impl Notes {
    pub(crate) fn add(&mut self, line: usize, message: impl Into<String>) {
        self.0.push(Note {
            line,
            message: message.into(),
        });
    }

    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Note> {
        self.0.iter()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// By line, each distinct message once (a `defaults` line reached from several proxies
    /// is reported once).
    fn sorted(mut self) -> Vec<Note> {
        self.0.sort_by_key(|n| n.line);
        let mut seen = std::collections::HashSet::new();
        self.0
            .into_iter()
            .filter(|n| seen.insert((n.line, n.message.clone())))
            .collect()
    }
}

/// The result of one import.
#[derive(Debug)]
pub struct Imported {
    /// The rolegate config, when at least one listener was translated.
    pub config: Option<String>,
    /// What was not translated, by line.
    pub notes: Vec<Note>,
}

/// Translates the text of a haproxy.cfg; `source` names it in the output's header.
pub fn import(text: &str, source: &str) -> Imported {
    let mut notes = Notes::default();
    let sections = sections::parse(text, &mut notes);
    let model = translate::translate(&sections, &mut notes);
    let config = (!model.listeners.is_empty()).then(|| emit::yaml(&model, source));
    Imported {
        config,
        notes: notes.sorted(),
    }
}

/// The subcommand: config on stdout, notes on stderr; exit 0 when something was translated,
/// 1 when nothing was, 2 when the file cannot be read.
pub fn run(file: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("{}: cannot read: {error}", file.display());
            return ExitCode::from(2);
        }
    };
    let imported = import(&text, &file.display().to_string());
    for note in &imported.notes {
        eprintln!("{}:{}: {}", file.display(), note.line, note.message);
    }
    match imported.config {
        Some(config) => {
            print!("{config}");
            ExitCode::SUCCESS
        }
        None => {
            eprintln!(
                "{}: nothing could be translated into a rolegate listener",
                file.display()
            );
            ExitCode::FAILURE
        }
    }
}
