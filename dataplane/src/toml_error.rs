//! Errors about TOML files that say where: file, line, column and key. The one implementation
//! of that mapping for every TOML format of the project — scenario files ([`crate::scenario`])
//! and the node crate's cluster configs and rates files: the byte span `toml` reports becomes a
//! 1-based line and column, and serde's messages (``unknown field `x`, expected one of ...``)
//! are reworded to name the key, and with [`KeyContext::Table`] its table too.
//!
//! Nothing here knows a format: each passes its vocabulary ([`Tables`]). No input panics.

use std::ops::Range;

/// 1-based line and column (in characters) of byte `offset` in `text`, for error messages
/// about TOML files. Never panics (an offset past the end counts as the end, one inside a
/// character as that character).
pub fn text_position(text: &str, offset: usize) -> (usize, usize) {
    let bytes = text.as_bytes();
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let column = before[line_start..]
        .iter()
        .filter(|&&b| (b & 0xC0) != 0x80)
        .count()
        + 1;
    (line, column)
}

/// What a format's messages may say about its tables ([`KeyContext::Table`]).
#[derive(Debug, Clone, Copy)]
pub struct Tables {
    /// A key only one table has, as serde quotes it in its list of expected keys ("`at_s`"),
    /// and where that table is ("in [[event]]"): how an unknown key's table is recognised.
    pub by_key: &'static [(&'static str, &'static str)],
    /// Serde's names of the format's structs ("struct RawLink") and what to say instead
    /// ("a [[link]] table").
    pub struct_names: &'static [(&'static str, &'static str)],
    /// Tables written `[[name]]` (there can be several): a `[name]` gets a hint.
    pub arrays: &'static [&'static str],
    /// Tables written `[name]` (only one): a `[[name]]` gets a hint.
    pub singles: &'static [&'static str],
}

/// How much a message says about where a key is.
#[derive(Debug, Clone, Copy)]
pub enum KeyContext {
    /// The key alone: `unknown key 'x' (expected one of `a`, `b`)`, `missing required key
    /// 'x'`, `invalid value for 'x': ...` (serde's text after the colon).
    Key,
    /// The key and its table: `unknown key 'x' in [[link]] (expected one of a, b; did you mean
    /// 'y'?)`, `missing required key 'x' in [dynamics]`, `invalid value for 'x' in [[link]]:
    /// ...`; a table written as the wrong kind (`[link]` for `[[link]]`) gets a hint; serde's
    /// struct names are replaced and a multi-line TOML syntax error becomes one line.
    Table(Tables),
}

/// A TOML parse error placed in its file: what the `Parse` variants of the formats' error
/// types carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

/// A TOML text and the name it is reported under, for turning byte spans into lines and
/// messages.
#[derive(Debug, Clone, Copy)]
pub struct TomlSource<'a> {
    pub text: &'a str,
    /// The file name errors start with.
    pub origin: &'a str,
}

impl<'a> TomlSource<'a> {
    pub fn new(text: &'a str, origin: &'a str) -> Self {
        Self { text, origin }
    }

    /// 1-based (line, column) of byte `offset`.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        text_position(self.text, offset)
    }

    /// 1-based line where `span` starts.
    pub fn line(&self, span: Range<usize>) -> usize {
        self.position(span.start).0
    }

    /// The text of the line holding `offset`, or "" if out of range.
    pub fn line_text(&self, offset: usize) -> &'a str {
        let line = self.position(offset).0;
        self.text.lines().nth(line - 1).unwrap_or("")
    }

    /// Where `offset` is: "in [[link]]" (the table header in force, found by scanning back
    /// from its line) or "at the top level".
    pub fn enclosing_table(&self, offset: usize) -> String {
        let line = self.position(offset).0;
        self.text
            .lines()
            .take(line)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .find_map(table_header)
            .map_or_else(|| "at the top level".to_string(), |h| format!("in {h}"))
    }

    /// A TOML or serde error, placed and reworded to name the key (and, with
    /// [`KeyContext::Table`], the table).
    pub fn locate(&self, err: &toml::de::Error, context: KeyContext) -> Located {
        let span = err.span().unwrap_or(0..0);
        let (line, column) = self.position(span.start);
        let raw = err.message().trim();
        let message = match context {
            KeyContext::Key => self.key_message(raw, span),
            KeyContext::Table(tables) => self.table_message(raw, span, &tables),
        };
        Located {
            line,
            column,
            message,
        }
    }

    /// [`KeyContext::Key`]'s wording.
    fn key_message(&self, raw: &str, span: Range<usize>) -> String {
        if let Some(rest) = raw.strip_prefix("unknown field `") {
            let key = rest.split('`').next().unwrap_or(rest);
            let expected = rest.split_once(", expected ").map(|x| x.1).unwrap_or("");
            format!("unknown key '{key}' (expected {expected})")
        } else if let Some(rest) = raw.strip_prefix("missing field `") {
            let key = rest.split('`').next().unwrap_or(rest);
            format!("missing required key '{key}'")
        } else if raw.starts_with("invalid type") || raw.starts_with("invalid value") {
            match self.line_text(span.start).split_once('=') {
                Some((key, _)) if !key.trim().is_empty() => {
                    format!(
                        "invalid value for '{}': {raw}",
                        key.trim().trim_matches('"')
                    )
                }
                _ => raw.to_string(),
            }
        } else {
            raw.to_string()
        }
    }

    /// [`KeyContext::Table`]'s wording.
    fn table_message(&self, raw: &str, span: Range<usize>, tables: &Tables) -> String {
        let mut message = if let Some(rest) = raw.strip_prefix("unknown field `") {
            unknown_key_message(rest, tables.by_key)
        } else if let Some(rest) = raw.strip_prefix("missing field `") {
            let key = rest.split('`').next().unwrap_or(rest);
            let table = if span.is_empty() {
                "at the top level".to_string()
            } else {
                self.enclosing_table(span.start)
            };
            format!("missing required key '{key}' {table}")
        } else if raw.starts_with("invalid type") || raw.starts_with("invalid value") {
            let line_text = self.line_text(span.start);
            match table_header(line_text) {
                Some(header) => {
                    let name = header.trim_matches(|c| c == '[' || c == ']');
                    let hint = match header.starts_with("[[") {
                        false if tables.arrays.contains(&name) => {
                            format!(" (write [[{name}]]: there can be several)")
                        }
                        true if tables.singles.contains(&name) => {
                            format!(" (write [{name}]: there is only one)")
                        }
                        _ => String::new(),
                    };
                    format!("invalid value for '{name}' at the top level: {raw}{hint}")
                }
                None => match line_text.split_once('=') {
                    Some((key, _)) if !key.trim().is_empty() && !key.contains('{') => {
                        let key = key.trim().trim_matches('"');
                        let table = self.enclosing_table(span.start);
                        format!("invalid value for '{key}' {table}: {raw}")
                    }
                    _ => raw.to_string(),
                },
            }
        } else {
            raw.to_string()
        };
        for (internal, public) in tables.struct_names {
            message = message.replace(internal, public);
        }
        // TOML syntax errors span several lines ("invalid table header\nexpected ...").
        message
            .lines()
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(": ")
    }
}

/// The header (`[[link]]`, `[dynamics]`) if `line` is a table header line.
fn table_header(line: &str) -> Option<String> {
    let line = line.trim();
    if !line.starts_with('[') {
        return None;
    }
    let end = if line.starts_with("[[") {
        line.find("]]").map(|i| i + 2)
    } else {
        line.find(']').map(|i| i + 1)
    };
    Some(line[..end.unwrap_or(line.len())].to_string())
}

/// Rewords serde's "unknown field `x`, expected one of `a`, `b`" (given from after the first
/// backtick) as "unknown key 'x' in [[link]] (expected one of a, b; did you mean 'y'?)",
/// the table recognised by a key only it has (`by_key`).
fn unknown_key_message(rest: &str, by_key: &[(&str, &str)]) -> String {
    let (key, tail) = rest.split_once('`').unwrap_or((rest, ""));
    let table = by_key
        .iter()
        .find(|(marker, _)| tail.contains(marker))
        .map_or("in this table", |(_, table)| table);
    let expected: Vec<&str> = tail
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| !s.is_empty())
        .collect();
    let mut msg = format!("unknown key '{key}' {table}");
    if !expected.is_empty() {
        msg.push_str(&format!(" (expected one of {})", expected.join(", ")));
    }
    if let Some(best) = expected
        .iter()
        .map(|e| (edit_distance(key, e), *e))
        .filter(|&(d, e)| d <= 2.max(e.len() / 3))
        .min()
    {
        msg.push_str(&format!("; did you mean '{}'?", best.1));
    }
    msg
}

/// Levenshtein distance, for "did you mean" hints on short keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// The scenario format's key markers (`scenario::TABLES`).
    const BY_KEY: &[(&str, &str)] = &[
        ("`at_s`", "in [[event]]"),
        ("`every_s`", "in [dynamics]"),
        ("`ingress_mbps`", "in [[node]]"),
        ("`bidirectional`", "in [[link]]"),
        ("`dynamics`", "at the top level"),
    ];

    #[test]
    fn positions_count_lines_and_characters() {
        let src = TomlSource {
            text: "ab\nçé=x\n",
            origin: "o",
        };
        assert_eq!(src.position(0), (1, 1));
        assert_eq!(src.position(3), (2, 1));
        assert_eq!(src.position(7), (2, 3)); // after two 2-byte characters
        assert_eq!(src.position(4), (2, 2)); // inside a character: no panic
        assert_eq!(src.position(1000), (3, 1));
        assert_eq!(src.line_text(5), "çé=x");
        assert_eq!(src.line(5..6), 2);
    }

    #[test]
    fn error_rewording_helpers() {
        assert_eq!(table_header("  [[link]] # c"), Some("[[link]]".into()));
        assert_eq!(table_header("[dynamics]"), Some("[dynamics]".into()));
        assert_eq!(table_header("[[oops"), Some("[[oops".into()));
        assert_eq!(table_header("mbps = 1"), None);
        assert_eq!(edit_distance("mbsp", "mbps"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        let msg = unknown_key_message(
            "latency`, expected one of `from`, `to`, `latency_ms`, `bidirectional`",
            BY_KEY,
        );
        assert_eq!(
            msg,
            "unknown key 'latency' in [[link]] (expected one of from, to, latency_ms, bidirectional); \
             did you mean 'latency_ms'?"
        );
        assert_eq!(
            unknown_key_message("zzz", BY_KEY),
            "unknown key 'zzz' in this table"
        );
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // fields exist to be parsed
    struct File {
        name: String,
        #[serde(default)]
        item: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        size: u32,
        #[serde(default)]
        colour_name: String,
    }

    const TABLES: Tables = Tables {
        by_key: &[("`colour_name`", "in [[item]]")],
        struct_names: &[("struct Item", "an [[item]] table")],
        arrays: &["item"],
        singles: &[],
    };

    fn locate(text: &str, context: KeyContext) -> Located {
        let err = toml::from_str::<File>(text).unwrap_err();
        TomlSource::new(text, "f.toml").locate(&err, context)
    }

    #[test]
    fn the_two_wordings_name_the_key() {
        let text = "name = \"x\"\n[[item]]\nsize = 1\ncolour_nam = \"red\"\n";
        let key = locate(text, KeyContext::Key);
        assert_eq!((key.line, key.column), (4, 1));
        assert_eq!(
            key.message,
            "unknown key 'colour_nam' (expected `size` or `colour_name`)"
        );
        let table = locate(text, KeyContext::Table(TABLES));
        assert_eq!((table.line, table.column), (4, 1));
        assert_eq!(
            table.message,
            "unknown key 'colour_nam' in [[item]] (expected one of size, colour_name); \
             did you mean 'colour_name'?"
        );

        let text = "name = \"x\"\n[[item]]\nsize = \"big\"\n";
        assert!(
            locate(text, KeyContext::Key)
                .message
                .starts_with("invalid value for 'size': invalid type"),
            "{:?}",
            locate(text, KeyContext::Key)
        );
        assert!(locate(text, KeyContext::Table(TABLES))
            .message
            .starts_with("invalid value for 'size' in [[item]]: invalid type"));

        let text = "[[item]]\nsize = 1\n";
        assert_eq!(
            locate(text, KeyContext::Key).message,
            "missing required key 'name'"
        );
        assert_eq!(
            locate(text, KeyContext::Table(TABLES)).message,
            "missing required key 'name' at the top level"
        );

        // A table written as the wrong kind.
        let text = "name = \"x\"\n[item]\nsize = 1\n";
        let m = locate(text, KeyContext::Table(TABLES)).message;
        assert!(
            m.starts_with("invalid value for 'item' at the top level:")
                && m.ends_with(" (write [[item]]: there can be several)"),
            "{m}"
        );
        // A syntax error: one line.
        let m = locate("name = \"x\"\n[[item\n", KeyContext::Table(TABLES)).message;
        assert!(!m.contains('\n'), "{m}");
    }
}
