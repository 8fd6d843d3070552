//! Shell completions (`rolegate completions bash|zsh|fish`) and manual pages (`rolegate man`),
//! both generated from the one clap command the binary parses with, so they cannot drift
//! from the flags it accepts. The Debian package ships what these write
//! (`packaging/build-deb.sh`).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::Command;
use clap_complete::Shell;

/// Writes the completion script for `shell` (the binary name is the command's name).
pub fn completions(shell: Shell, cmd: &mut Command, out: &mut dyn Write) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, cmd, name, out);
}

/// Writes the top-level page (`rolegate(1)`, with its list of subcommands) as roff.
///
/// # Errors
/// Writing to `out` failed.
pub fn man_page(cmd: Command, out: &mut dyn Write) -> io::Result<()> {
    clap_mangen::Man::new(prepared(cmd)).render(out)
}

/// As the pages see it: built, and without clap's `help` subcommand (`--help` is listed).
fn prepared(cmd: Command) -> Command {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// Writes `rolegate.1` and one `rolegate-SUBCOMMAND.1` per subcommand into `dir` (created if
/// missing); returns the files written, sorted.
///
/// # Errors
/// The directory or a file cannot be written.
pub fn man_pages(cmd: Command, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let cmd = prepared(cmd);
    let mut written = vec![clap_mangen::Man::new(cmd.clone()).generate_to(dir)?];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        written.push(clap_mangen::Man::new(sub.clone()).generate_to(dir)?);
    }
    written.sort();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn cmd() -> Command {
        Command::new("rolegate")
            .about("Role-aware TCP proxy")
            .version("1.2.3")
            .arg(Arg::new("config").long("config"))
            .subcommand(
                Command::new("status")
                    .about("Show the status")
                    .arg(Arg::new("json").long("json").num_args(0)),
            )
            .subcommand(Command::new("drain").about("Drain a backend"))
    }

    #[test]
    fn completions_know_every_subcommand_and_flag() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            completions(shell, &mut cmd(), &mut out);
            let text = String::from_utf8(out).unwrap();
            for word in ["status", "drain", "json", "config"] {
                assert!(text.contains(word), "{shell}: no {word} in\n{text}");
            }
        }
    }

    #[test]
    fn one_page_per_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let files = man_pages(cmd(), dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["rolegate-drain.1", "rolegate-status.1", "rolegate.1"]
        );
        let status = std::fs::read_to_string(dir.path().join("rolegate-status.1")).unwrap();
        assert!(status.starts_with(".ie"), "{status}");
        assert!(status.contains("\\-\\-json"), "{status}");
        let mut top = Vec::new();
        man_page(cmd(), &mut top).unwrap();
        let top = String::from_utf8(top).unwrap();
        assert!(
            top.contains(".TH rolegate 1") && top.contains("rolegate\\-status(1)"),
            "{top}"
        );
    }
}
