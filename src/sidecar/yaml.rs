//! The YAML subset of `--config` (sidecar contract §2.4): block mappings, block sequences, flow
//! sequences of scalars (`[a, "b"]`), plain, single- and double-quoted scalars, comments and one
//! optional `---` document start. Anchors, aliases, tags, block scalars, flow mappings, further
//! documents and anything else are errors, each naming its line, so that a file never means
//! something other than what it appears to say.
//!
//! The reader is a pure function from text to a [`Node`] tree; the configuration code converts
//! the tree, key by key, into typed values.

use crate::config;
use std::fmt;

/// Largest configuration file read, in bytes: a sidecar's configuration is a few hundred bytes.
pub const MAX_CONFIG_FILE_BYTES: usize = 1024 * 1024;

/// Deepest nesting of mappings and sequences; the contract's keys nest three levels deep.
const MAX_DEPTH: usize = 32;

/// One node of the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// No value: `key:` alone, `~` or `null`.
    Null,
    /// A scalar's text (quotes removed, escapes resolved).
    Scalar(String),
    /// A sequence, block or flow.
    Seq(Vec<Node>),
    /// A mapping, its keys in document order (each key once).
    Map(Vec<(String, Node)>),
}

impl Node {
    /// What the node is, for error lines (`a list where a text is expected`).
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Null => "nothing",
            Node::Scalar(_) => "a text",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }
}

/// Why the file is not in the subset, with the 1-based line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct YamlError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// One line that carries content: its number, indentation and text after the indentation.
#[derive(Clone, Debug)]
struct Line<'a> {
    number: usize,
    indent: usize,
    text: &'a str,
}

fn error(line: usize, message: impl Into<String>) -> YamlError {
    YamlError {
        line,
        message: message.into(),
    }
}

/// Reads a document. An empty document (only comments) is an empty mapping.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // YAML breaks lines at CR LF, LF and a CR alone (old Mac files); only LF is split on below.
    let text = if text.contains('\r') {
        std::borrow::Cow::Owned(text.replace("\r\n", "\n").replace('\r', "\n"))
    } else {
        std::borrow::Cow::Borrowed(text)
    };
    let mut lines = Vec::new();
    let mut seen_content = false;
    for (index, raw) in text.split('\n').enumerate() {
        let number = index + 1;
        let content = raw.trim_end_matches([' ', '\t', '\r']);
        let indent = content.len() - content.trim_start_matches(' ').len();
        let rest = &content[indent..];
        if rest.is_empty() || rest.starts_with('#') {
            continue;
        }
        if rest.starts_with('\t') {
            return Err(error(number, "tabs are not allowed in indentation"));
        }
        if has_bare_tab(rest) {
            return Err(error(
                number,
                "a tab is allowed only inside a quoted text or a comment (separate with spaces)",
            ));
        }
        if indent == 0 && is_marker(rest, "---") {
            if seen_content {
                return Err(error(number, "only one document is allowed"));
            }
            if !after_marker(rest, "---").is_empty() {
                return Err(error(number, "nothing may follow the document start '---'"));
            }
            seen_content = true;
            continue;
        }
        if indent == 0 && is_marker(rest, "...") {
            return Err(error(number, "document end markers are not supported"));
        }
        if indent == 0 && rest.starts_with('%') {
            return Err(error(number, "directives are not supported"));
        }
        seen_content = true;
        lines.push(Line {
            number,
            indent,
            text: rest,
        });
    }
    let mut reader = Reader { lines, next: 0 };
    if reader.lines.is_empty() {
        return Ok(Node::Map(Vec::new()));
    }
    let first = reader.lines[0].indent;
    let node = reader.block(first, 0)?;
    if let Some(line) = reader.lines.get(reader.next) {
        let why = if line.indent == first {
            "a mapping and a list cannot share one level"
        } else {
            "unexpected indentation"
        };
        return Err(error(line.number, why));
    }
    Ok(node)
}

/// Whether a line holds a tab outside quoted texts and its comment. YAML lets a tab separate
/// tokens (`key:<TAB>value`, `a<TAB># note`, `[a,<TAB>b]`), which this reader splits at spaces
/// only; refusing such tabs keeps it from reading a different value than YAML would.
fn has_bare_tab(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let opens = i == 0 || matches!(bytes[i - 1], b' ' | b'[' | b',');
        match b {
            b'\t' => return true,
            b'#' if i == 0 || bytes[i - 1] == b' ' => return false,
            b'"' if opens => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            // Inside single quotes `''` is a quote, not the end.
            b'\'' if opens => {
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == b'\'' {
                        if bytes.get(i + 1) != Some(&b'\'') {
                            break;
                        }
                        i += 1;
                    }
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    false
}

/// `---` or `...` alone or followed by a space or a comment.
fn is_marker(text: &str, marker: &str) -> bool {
    text == marker || (text.starts_with(marker) && text[marker.len()..].starts_with([' ', '\t']))
}

fn after_marker<'a>(text: &'a str, marker: &str) -> &'a str {
    let rest = text[marker.len()..].trim_start();
    if rest.starts_with('#') {
        ""
    } else {
        rest
    }
}

/// Whether a line (or the rest of one after `- `) is a sequence item.
fn is_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

struct Reader<'a> {
    lines: Vec<Line<'a>>,
    next: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<&Line<'a>> {
        self.lines.get(self.next)
    }

    /// The block that starts at the next line, which is indented by exactly `indent`.
    fn block(&mut self, indent: usize, depth: usize) -> Result<Node, YamlError> {
        let Some(line) = self.peek() else {
            return Ok(Node::Null);
        };
        if depth > MAX_DEPTH {
            return Err(error(line.number, "nested too deeply"));
        }
        if is_item(line.text) {
            self.sequence(indent, depth)
        } else {
            self.mapping(indent, depth)
        }
    }

    fn sequence(&mut self, indent: usize, depth: usize) -> Result<Node, YamlError> {
        let mut items = Vec::new();
        while let Some(line) = self.peek().cloned() {
            if line.indent != indent || !is_item(line.text) {
                break;
            }
            let after_dash = &line.text[1..];
            let rest = after_dash.trim_start_matches(' ');
            if rest.is_empty() || rest.starts_with('#') {
                self.next += 1;
                items.push(self.nested(indent, depth)?);
                continue;
            }
            // `- key: value` or `- - item`: a block whose first line starts at the item's column.
            let column = indent + 1 + (after_dash.len() - rest.len());
            if is_item(rest) || split_key(rest, line.number)?.is_some() {
                self.lines[self.next] = Line {
                    number: line.number,
                    indent: column,
                    text: rest,
                };
                items.push(self.block(column, depth + 1)?);
                continue;
            }
            self.next += 1;
            items.push(inline_value(rest, line.number)?);
        }
        Ok(Node::Seq(items))
    }

    fn mapping(&mut self, indent: usize, depth: usize) -> Result<Node, YamlError> {
        let mut entries: Vec<(String, Node)> = Vec::new();
        while let Some(line) = self.peek().cloned() {
            if line.indent < indent {
                break;
            }
            if line.indent > indent {
                return Err(error(line.number, "unexpected indentation"));
            }
            if is_item(line.text) {
                return Err(error(
                    line.number,
                    "a list item where a key is expected (indent the list under its key)",
                ));
            }
            let Some((key, rest)) = split_key(line.text, line.number)? else {
                return Err(error(
                    line.number,
                    "expected 'key: value' (flow mappings and multi-line texts are not supported)",
                ));
            };
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(error(
                    line.number,
                    format!("duplicate key {}", config::quoted(&key)),
                ));
            }
            self.next += 1;
            let value = if rest.is_empty() {
                // A list may sit at the key's own indentation (`key:` then `- item`).
                match self.peek() {
                    Some(next) if next.indent == indent && is_item(next.text) => {
                        self.sequence(indent, depth + 1)?
                    }
                    _ => self.nested(indent, depth)?,
                }
            } else if is_item(rest) {
                // YAML refuses `key: - a`; read as a text it would silently not be a list.
                return Err(error(
                    line.number,
                    "a list cannot start on its key's line (put each '- item' on a line of its own)",
                ));
            } else {
                inline_value(rest, line.number)?
            };
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }

    /// The block nested under a line of indentation `indent` (a key or a `-` alone), if any.
    fn nested(&mut self, indent: usize, depth: usize) -> Result<Node, YamlError> {
        match self.peek() {
            Some(next) if next.indent > indent => {
                let inner = next.indent;
                self.block(inner, depth + 1)
            }
            _ => Ok(Node::Null),
        }
    }
}

/// Splits `key: rest` (the rest trimmed, comments removed by the value reader); `None` when the
/// text is not a mapping entry.
fn split_key(text: &str, line: usize) -> Result<Option<(String, &str)>, YamlError> {
    if let Some(quote) = text.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let (key, used) = quoted(text, quote, line)?;
        let after = text[used..].trim_start_matches(' ');
        return match after.strip_prefix(':') {
            Some(rest) if rest.is_empty() || rest.starts_with(' ') => {
                Ok(Some((key, strip_comment(rest.trim_start()))))
            }
            _ => Ok(None),
        };
    }
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && i > 0 && bytes[i - 1] == b' ' {
            return Ok(None);
        }
        if b == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' ') {
            let key = text[..i].trim_end();
            if key.is_empty() {
                return Err(error(line, "empty key"));
            }
            check_plain_start(key, line)?;
            if key.starts_with('[') {
                return Err(error(line, "complex keys are not supported"));
            }
            return Ok(Some((
                key.to_string(),
                strip_comment(text[i + 1..].trim_start()),
            )));
        }
    }
    Ok(None)
}

/// A value with nothing but a comment is empty.
fn strip_comment(rest: &str) -> &str {
    if rest.starts_with('#') {
        ""
    } else {
        rest
    }
}

/// Refuses the YAML features outside the subset where a scalar would start.
fn check_plain_start(text: &str, line: usize) -> Result<(), YamlError> {
    let refused = match text.as_bytes().first() {
        Some(b'&') => Some("anchors are not supported"),
        Some(b'*') => Some("aliases are not supported"),
        Some(b'!') => Some("tags are not supported"),
        Some(b'|') | Some(b'>') => Some("block scalars ('|', '>') are not supported"),
        Some(b'{') => Some("flow mappings are not supported"),
        Some(b'@') | Some(b'`') => Some("'@' and '`' cannot start a plain scalar"),
        Some(b'%') => Some("'%' cannot start a plain scalar"),
        _ => None,
    };
    match refused {
        Some(why) => Err(error(line, why)),
        None => Ok(()),
    }
}

/// A value written on its key's (or item's) line: a quoted or plain scalar, or a flow sequence.
fn inline_value(text: &str, line: usize) -> Result<Node, YamlError> {
    if let Some(quote) = text.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let (value, used) = quoted(text, quote, line)?;
        end_of_value(&text[used..], line)?;
        return Ok(Node::Scalar(value));
    }
    if text.starts_with('[') {
        let (items, used) = flow_sequence(text, line)?;
        end_of_value(&text[used..], line)?;
        return Ok(Node::Seq(items));
    }
    check_plain_start(text, line)?;
    let value = plain_until_comment(text);
    if value.contains(": ") || value.ends_with(':') {
        return Err(error(
            line,
            "a mapping is not allowed here (quote the text if it holds ': ')",
        ));
    }
    Ok(plain(value))
}

/// Nothing but spaces and a comment may follow a quoted scalar or a flow sequence.
fn end_of_value(rest: &str, line: usize) -> Result<(), YamlError> {
    let rest = rest.trim_start_matches(' ');
    if rest.is_empty() || rest.starts_with('#') {
        Ok(())
    } else {
        Err(error(
            line,
            format!("unexpected text {} after the value", config::quoted(rest)),
        ))
    }
}

/// A plain scalar ends at ` #` (a comment) and has its trailing spaces removed.
fn plain_until_comment(text: &str) -> &str {
    let bytes = text.as_bytes();
    let end = (1..bytes.len())
        .find(|&i| bytes[i] == b'#' && bytes[i - 1] == b' ')
        .unwrap_or(bytes.len());
    text[..end].trim_end()
}

fn plain(text: &str) -> Node {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => Node::Null,
        _ => Node::Scalar(text.to_string()),
    }
}

/// `[a, "b", 'c']` on one line: scalars only. Returns the items and the bytes used.
fn flow_sequence(text: &str, line: usize) -> Result<(Vec<Node>, usize), YamlError> {
    let skip_spaces =
        |at: usize| at + (text[at..].len() - text[at..].trim_start_matches(' ').len());
    let mut items = Vec::new();
    let mut at = skip_spaces(1);
    if text[at..].starts_with(']') {
        return Ok((items, at + 1));
    }
    loop {
        let (item, used) = flow_item(&text[at..], line)?;
        items.push(item);
        at = skip_spaces(at + used);
        match text[at..].chars().next() {
            Some(']') => return Ok((items, at + 1)),
            Some(',') => {
                at = skip_spaces(at + 1);
                // A trailing comma, as YAML allows.
                if text[at..].starts_with(']') {
                    return Ok((items, at + 1));
                }
            }
            _ => {
                return Err(error(
                    line,
                    "a flow sequence must close with ']' on its own line",
                ))
            }
        }
    }
}

fn flow_item(text: &str, line: usize) -> Result<(Node, usize), YamlError> {
    if let Some(quote) = text.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let (value, used) = quoted(text, quote, line)?;
        return Ok((Node::Scalar(value), used));
    }
    match text.as_bytes().first() {
        None => {
            return Err(error(
                line,
                "a flow sequence must close with ']' on its line",
            ))
        }
        Some(b'[') => return Err(error(line, "nested flow sequences are not supported")),
        Some(b',') => return Err(error(line, "empty item in a flow sequence")),
        _ => check_plain_start(text, line)?,
    }
    let end = text.find([',', ']']).unwrap_or(text.len());
    let item = text[..end].trim_end();
    if item.contains(": ") || item.contains(" #") {
        return Err(error(line, "only scalars may appear in a flow sequence"));
    }
    Ok((plain(item), end))
}

/// A quoted scalar starting at `text[0]`: its value and the bytes used, closing quote included.
fn quoted(text: &str, quote: char, line: usize) -> Result<(String, usize), YamlError> {
    let mut out = String::new();
    let mut chars = text.char_indices().skip(1).peekable();
    while let Some((i, c)) = chars.next() {
        if c == quote {
            if quote == '\'' && chars.peek().map(|&(_, n)| n) == Some('\'') {
                chars.next();
                out.push('\'');
                continue;
            }
            return Ok((out, i + 1));
        }
        if c == '\\' && quote == '"' {
            let Some((_, escaped)) = chars.next() else {
                break;
            };
            match escaped {
                '"' => out.push('"'),
                '\\' => out.push('\\'),
                '/' => out.push('/'),
                ' ' => out.push(' '),
                '0' => out.push('\0'),
                'a' => out.push('\u{7}'),
                'b' => out.push('\u{8}'),
                't' | '\t' => out.push('\t'),
                'n' => out.push('\n'),
                'v' => out.push('\u{b}'),
                'f' => out.push('\u{c}'),
                'r' => out.push('\r'),
                'e' => out.push('\u{1b}'),
                'x' | 'u' | 'U' => {
                    let digits = match escaped {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let mut code = 0u32;
                    for _ in 0..digits {
                        let digit = chars
                            .next()
                            .and_then(|(_, d)| d.to_digit(16))
                            .ok_or_else(|| error(line, "bad escape in a double-quoted text"))?;
                        code = code * 16 + digit;
                    }
                    let c = char::from_u32(code)
                        .ok_or_else(|| error(line, "bad escape in a double-quoted text"))?;
                    out.push(c);
                }
                other => {
                    return Err(error(
                        line,
                        format!("unknown escape '\\{other}' in a double-quoted text"),
                    ))
                }
            }
            continue;
        }
        out.push(c);
    }
    Err(error(
        line,
        "a quoted text must end on its line (multi-line texts are not supported)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Node {
        Node::Scalar(text.to_string())
    }

    fn map(entries: &[(&str, Node)]) -> Node {
        Node::Map(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    #[test]
    fn reads_the_contract_example() {
        let text = r#"
register: true
service:
  name: reviews
  tags: [v1, canary]
endpoint:
  host: 10.0.0.5
  port: 9080
registry:
  url: http://registry:8080
  protocol: amalgam8          # new (§2.2)
healthchecks:
  - type: http                # http | https | tcp | file
    value: http://localhost:9080/health
    interval: 10s
  - type: file
    value: /opt/app/check.sh
    args: [--quick]
commands:
  - cmd: [/opt/app/reviews, "9080"]
    env: [MODE=prod]
    on_exit: terminate
log_level: info
"#;
        let node = parse(text).unwrap();
        assert_eq!(
            node,
            map(&[
                ("register", s("true")),
                (
                    "service",
                    map(&[
                        ("name", s("reviews")),
                        ("tags", Node::Seq(vec![s("v1"), s("canary")]))
                    ])
                ),
                (
                    "endpoint",
                    map(&[("host", s("10.0.0.5")), ("port", s("9080"))])
                ),
                (
                    "registry",
                    map(&[
                        ("url", s("http://registry:8080")),
                        ("protocol", s("amalgam8"))
                    ])
                ),
                (
                    "healthchecks",
                    Node::Seq(vec![
                        map(&[
                            ("type", s("http")),
                            ("value", s("http://localhost:9080/health")),
                            ("interval", s("10s")),
                        ]),
                        map(&[
                            ("type", s("file")),
                            ("value", s("/opt/app/check.sh")),
                            ("args", Node::Seq(vec![s("--quick")])),
                        ]),
                    ])
                ),
                (
                    "commands",
                    Node::Seq(vec![map(&[
                        ("cmd", Node::Seq(vec![s("/opt/app/reviews"), s("9080")])),
                        ("env", Node::Seq(vec![s("MODE=prod")])),
                        ("on_exit", s("terminate")),
                    ])])
                ),
                ("log_level", s("info")),
            ])
        );
    }

    #[test]
    fn scalars_quotes_comments_and_the_document_start() {
        let text = "# leading comment\n---\na: 'it''s # not a comment'\nb: \"tab\\there \\u00e9\"\nc: plain text # comment\nd: http://x/#frag\ne:\nf: ~\n";
        assert_eq!(
            parse(text).unwrap(),
            map(&[
                ("a", s("it's # not a comment")),
                ("b", s("tab\there é")),
                ("c", s("plain text")),
                ("d", s("http://x/#frag")),
                ("e", Node::Null),
                ("f", Node::Null),
            ])
        );
    }

    #[test]
    fn block_lists_may_sit_at_their_keys_indentation() {
        let text = "tags:\n- a\n- 'b'\nother:\n  -\n    x: 1\n  - - nested\n";
        assert_eq!(
            parse(text).unwrap(),
            map(&[
                ("tags", Node::Seq(vec![s("a"), s("b")])),
                (
                    "other",
                    Node::Seq(vec![map(&[("x", s("1"))]), Node::Seq(vec![s("nested")])])
                ),
            ])
        );
        assert_eq!(
            parse("a: [ ]\nb: [x, 'y, z', ]\n").unwrap(),
            map(&[
                ("a", Node::Seq(vec![])),
                ("b", Node::Seq(vec![s("x"), s("y, z")]))
            ])
        );
        assert_eq!(parse("# nothing\n").unwrap(), Node::Map(vec![]));
    }

    #[test]
    fn features_outside_the_subset_are_errors_with_their_line() {
        for (text, line, why) in [
            ("a: &x 1\n", 1, "anchors"),
            ("a: 1\nb: *x\n", 2, "aliases"),
            ("a: !!str 1\n", 1, "tags"),
            ("a: |\n  text\n", 1, "block scalars"),
            ("a: >\n  text\n", 1, "block scalars"),
            ("a: {b: 1}\n", 1, "flow mappings"),
            ("a: 1\n---\nb: 2\n", 2, "one document"),
            ("a: [b, [c]]\n", 1, "nested flow"),
            ("a: [b,\n  c]\n", 1, "close"),
            ("a: [b c\n", 1, "close"),
            ("a: 'open\n", 1, "end on its line"),
            ("a: 1\na: 2\n", 2, "duplicate key"),
            ("a: 1\n  b: 2\n", 2, "unexpected indentation"),
            ("a:\n\tb: 1\n", 2, "tabs"),
            ("just text\n", 1, "expected 'key: value'"),
            ("a: b: c\n", 1, "mapping is not allowed"),
            ("a: \"x\" y\n", 1, "unexpected text"),
            ("a: \"\\q\"\n", 1, "unknown escape"),
            ("...\n", 1, "document end"),
            ("%YAML 1.2\n", 1, "directives"),
            ("- a\nb: 1\n", 2, "cannot share one level"),
            ("a: 1\nx: - a\n", 2, "a list cannot start on its key's line"),
            ("x: -\n", 1, "a list cannot start on its key's line"),
            (
                "y:\n  - x: - a\n",
                2,
                "a list cannot start on its key's line",
            ),
            (
                "x:\ta\n",
                1,
                "a tab is allowed only inside a quoted text or a comment",
            ),
            ("x: a\t# note\n", 1, "a tab"),
            ("x: [a,\tb]\n", 1, "a tab"),
            ("x:\n  -\ta\n", 2, "a tab"),
            ("\"k\":\tv\n", 1, "a tab"),
            ("a: 1\r\rx:\ta\r", 3, "a tab"),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.message.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn tabs_inside_quotes_and_comments_are_text() {
        assert_eq!(
            parse("a: \"x\ty\"\nb: 'p\tq'\nc: [\"1\t\", '2']\nd: e # a\tcomment\n").unwrap(),
            map(&[
                ("a", s("x\ty")),
                ("b", s("p\tq")),
                ("c", Node::Seq(vec![s("1\t"), s("2")])),
                ("d", s("e")),
            ])
        );
        assert_eq!(parse("a: it's\n").unwrap(), map(&[("a", s("it's"))]));
        assert_eq!(
            parse("a: 'it''s\tok'\nb: \"q\\\"\tr\"\n").unwrap(),
            map(&[("a", s("it's\tok")), ("b", s("q\"\tr"))])
        );
    }

    #[test]
    fn a_cr_alone_ends_a_line_as_crlf_and_lf_do() {
        let expected = map(&[("a", s("1")), ("b", Node::Seq(vec![s("x")]))]);
        for text in [
            "a: 1\rb:\r  - x\r",
            "a: 1\r\nb:\r\n  - x\r\n",
            "a: 1\nb:\n  - x\n",
        ] {
            assert_eq!(parse(text).unwrap(), expected, "{text:?}");
        }
        assert_eq!(
            parse("a: 1\n\rb: 2").unwrap(),
            map(&[("a", s("1")), ("b", s("2"))])
        );
        assert_eq!(parse("a: 1\r\rb: [").unwrap_err().line, 3);
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let mut text = String::new();
        for depth in 0..100 {
            text.push_str(&" ".repeat(depth));
            text.push_str("k:\n");
        }
        assert!(parse(&text).unwrap_err().message.contains("deeply"));
    }
}
