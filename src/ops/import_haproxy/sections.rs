//! haproxy.cfg → its sections (`global`, `defaults`, `listen`, `frontend`, `backend`, and the
//! others the importer only names), each directive with its 1-based line number so every
//! message can point at the line that wrote it.

use super::lex;
use super::Notes;

/// One directive: its words, where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Directive {
    pub line: usize,
    pub words: Vec<String>,
}

impl Directive {
    /// The keyword (`server`, `option`, `timeout`, …).
    pub fn keyword(&self) -> &str {
        self.words.first().map_or("", String::as_str)
    }

    /// Word `i` (0 is the keyword), or "".
    pub fn arg(&self, i: usize) -> &str {
        self.words.get(i).map_or("", String::as_str)
    }

    /// The words as written, for messages.
    pub fn text(&self) -> String {
        self.words.join(" ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    Global,
    Defaults,
    Listen,
    Frontend,
    Backend,
    /// `userlist`, `peers`, `resolvers`, …: named in a message, contents skipped.
    Other(String),
}

/// One section: its header and its body.
#[derive(Debug, Clone)]
pub(super) struct Section {
    pub kind: Kind,
    /// The header line.
    pub header: Directive,
    pub body: Vec<Directive>,
}

impl Section {
    /// The section's name (`listen NAME`), if it has one.
    pub fn name(&self) -> Option<&str> {
        self.header.words.get(1).map(String::as_str)
    }
}

const OTHER_SECTIONS: &[&str] = &[
    "userlist",
    "peers",
    "resolvers",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
    "log-forward",
    "fcgi-app",
    "crt-store",
    "traces",
    "namespace_list",
];

/// Splits the file. Lines that cannot be tokenized, and directives before the first section,
/// are noted and skipped.
pub(super) fn parse(text: &str, notes: &mut Notes) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let words = match lex::words(raw) {
            Ok(words) if words.is_empty() => continue,
            Ok(words) => words,
            Err(error) => {
                notes.add(line, format!("cannot read this line: {error}"));
                continue;
            }
        };
        let directive = Directive { line, words };
        let kind = match directive.keyword() {
            "global" => Some(Kind::Global),
            "defaults" => Some(Kind::Defaults),
            "listen" => Some(Kind::Listen),
            "frontend" => Some(Kind::Frontend),
            "backend" => Some(Kind::Backend),
            other if OTHER_SECTIONS.contains(&other) => Some(Kind::Other(other.to_string())),
            _ => None,
        };
        match (kind, sections.last_mut()) {
            (Some(kind), _) => sections.push(Section {
                kind,
                header: directive,
                body: Vec::new(),
            }),
            (None, Some(section)) => section.body.push(directive),
            (None, None) => notes.add(
                line,
                format!(
                    "{:?} is outside any section; it is ignored",
                    directive.keyword()
                ),
            ),
        }
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_line_numbers_and_groups_bodies() {
        let text = "# haproxy\nglobal\n    maxconn 100\n\nlisten pg\n    bind *:5000\n    server a 10.0.0.1:5432 check\nuserlist admins\n    user bob insecure-password x\n";
        let mut notes = Notes::default();
        let sections = parse(text, &mut notes);
        assert!(notes.is_empty());
        let kinds: Vec<_> = sections.iter().map(|s| s.kind.clone()).collect();
        assert_eq!(
            kinds,
            [Kind::Global, Kind::Listen, Kind::Other("userlist".into())]
        );
        assert_eq!(sections[1].name(), Some("pg"));
        assert_eq!(sections[1].header.line, 5);
        let lines: Vec<_> = sections[1].body.iter().map(|d| d.line).collect();
        assert_eq!(lines, [6, 7]);
        assert_eq!(sections[1].body[1].arg(2), "10.0.0.1:5432");
        assert_eq!(sections[1].body[1].arg(9), "");
    }

    #[test]
    fn notes_unreadable_lines_and_orphan_directives() {
        let mut notes = Notes::default();
        let sections = parse(
            "maxconn 10\nlisten x\n  tcp-check send \"PING\n",
            &mut notes,
        );
        assert_eq!(sections.len(), 1);
        assert!(sections[0].body.is_empty());
        let lines: Vec<_> = notes.iter().map(|n| n.line).collect();
        assert_eq!(lines, [1, 3]);
        assert!(notes
            .iter()
            .nth(1)
            .unwrap()
            .message
            .contains("unterminated double quote"));
    }
}
