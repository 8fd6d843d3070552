//! One haproxy.cfg line → its words, the way HAProxy's own `parse_line` splits them.
//!
//! Words are separated by spaces and tabs; `#` outside quotes starts a comment. A backslash
//! escapes a space, `#`, a quote or itself, and writes `\r`, `\n`, `\t` and `\xHH` as the bytes
//! they name (`tcp-check send info\ replication\r\n` is one word ending in CRLF). Double quotes
//! group a word and still honour escapes; single quotes group it verbatim. Quotes may start
//! mid-word (`foo"bar baz"` is `foobar baz`), and `""` is an empty word. Environment variables
//! (`"$VAR"`) are left as written: the importer must not bake one machine's values into a file.

/// Why a line could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum LexError {
    #[error("unterminated {0} quote")]
    Unterminated(&'static str),
    #[error("invalid \\x escape: {0:?} is not two hexadecimal digits")]
    BadHex(String),
}

/// Splits one line (without its newline) into words.
///
/// # Errors
/// An unterminated quote or a malformed `\x` escape.
pub(super) fn words(line: &str) -> Result<Vec<String>, LexError> {
    let mut out = Vec::new();
    let mut word = String::new();
    // A word exists once it has a character or an opened quote (so `""` is kept as empty).
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' => break,
            '\\' => {
                in_word = true;
                escape(&mut chars, &mut word)?;
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(LexError::Unterminated("double")),
                        Some('"') => break,
                        Some('\\') => escape(&mut chars, &mut word)?,
                        Some(other) => word.push(other),
                    }
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        None => return Err(LexError::Unterminated("single")),
                        Some('\'') => break,
                        Some(other) => word.push(other),
                    }
                }
            }
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    if in_word {
        out.push(word);
    }
    Ok(out)
}

/// After a backslash: the escaped character, or the bytes a `\r \n \t \xHH` sequence names.
/// An unknown escape keeps the backslash, as HAProxy does.
fn escape(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    word: &mut String,
) -> Result<(), LexError> {
    match chars.next() {
        None => word.push('\\'),
        Some('r') => word.push('\r'),
        Some('n') => word.push('\n'),
        Some('t') => word.push('\t'),
        Some('x') => {
            let digits: String = (0..2).filter_map(|_| chars.next()).collect();
            let byte = u8::from_str_radix(&digits, 16)
                .ok()
                .filter(|_| digits.len() == 2)
                .ok_or_else(|| LexError::BadHex(digits.clone()))?;
            word.push(char::from(byte));
        }
        Some(c @ (' ' | '#' | '\\' | '"' | '\'' | '$')) => word.push(c),
        Some(other) => {
            word.push('\\');
            word.push(other);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(line: &str) -> Vec<String> {
        words(line).expect("splits")
    }

    #[test]
    fn splits_on_spaces_and_tabs_and_drops_comments() {
        assert_eq!(
            w("  server\tpg1 10.0.0.1:5432  check # primary"),
            ["server", "pg1", "10.0.0.1:5432", "check"]
        );
        assert_eq!(w("# only a comment"), Vec::<String>::new());
        assert_eq!(w(""), Vec::<String>::new());
    }

    #[test]
    fn backslash_escapes_space_hash_and_control_bytes() {
        assert_eq!(
            w(r"tcp-check send info\ replication\r\n"),
            ["tcp-check", "send", "info replication\r\n"]
        );
        assert_eq!(
            w(r"stats realm HAProxy\ Statistics\#1"),
            ["stats", "realm", "HAProxy Statistics#1"]
        );
        assert_eq!(w(r"x \x41\x7e \t\\"), ["x", "A~", "\t\\"]);
        // Unknown escapes keep their backslash (regexes rely on it).
        assert_eq!(w(r"expect rstring ^\d"), ["expect", "rstring", r"^\d"]);
    }

    #[test]
    fn quotes_group_words_double_with_escapes_single_verbatim() {
        assert_eq!(
            w(r#"send "PING\r\n" 'a\r b' """#),
            ["send", "PING\r\n", r"a\r b", ""]
        );
        assert_eq!(w(r#"foo"bar baz"qux"#), ["foobar bazqux"]);
        assert_eq!(w(r##"x "# not a comment""##), ["x", "# not a comment"]);
        assert_eq!(w(r#"bind "$ADDR":5000"#), ["bind", "$ADDR:5000"]);
    }

    #[test]
    fn reports_unterminated_quotes_and_bad_hex() {
        assert_eq!(
            words(r#"send "PING"#),
            Err(LexError::Unterminated("double"))
        );
        assert_eq!(words("send 'PING"), Err(LexError::Unterminated("single")));
        assert_eq!(words(r"send \xZZ"), Err(LexError::BadHex("ZZ".into())));
        assert_eq!(words(r"send \x4"), Err(LexError::BadHex("4".into())));
    }
}
