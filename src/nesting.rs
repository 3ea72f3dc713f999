//! The checks run over JSON from outside before any parser, shared by its readers (request
//! bodies, tokens, catalog files, remote answers): the nesting bound, so a hostile document never
//! drives a recursive parser deep into a small stack, and the `\u` escapes, so no text is taken
//! in, and echoed, that strict JSON parsers refuse. Knows nothing about what the JSON means.

/// True when `body` nests arrays and objects at most `limit` deep (the top-level value counts as
/// 1; brackets inside strings do not count). Stops at the first level too deep.
pub fn nesting_within(body: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in body {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// False when a string of `body` holds a `\u` escape of a UTF-16 surrogate that is not part of a
/// pair (a high one, D800 to DBFF, not followed at once by a low one, DC00 to DFFF, or a low one
/// alone). Such an escape names no character: the grammar lets it through a raw-text reader, and
/// serde_json, Jackson in strict mode and most clients then refuse the document it is echoed in.
/// Other malformations are left to the parser.
pub fn surrogate_escapes_paired(body: &[u8]) -> bool {
    let mut in_string = false;
    // The previous escape was a high surrogate: only a low one may come next.
    let mut awaiting_low = false;
    let mut i = 0;
    while i < body.len() {
        let byte = body[i];
        if !in_string {
            in_string = byte == b'"';
            i += 1;
            continue;
        }
        if byte != b'\\' || body.get(i + 1) != Some(&b'u') {
            if awaiting_low {
                return false;
            }
            match byte {
                b'"' => in_string = false,
                // Whatever is escaped, it is not a quote that ends the string.
                b'\\' => i += 1,
                _ => {}
            }
            i += 1;
            continue;
        }
        let Some(code) = body.get(i + 2..i + 6).and_then(hex4) else {
            return true;
        };
        let high = (0xD800..=0xDBFF).contains(&code);
        let low = (0xDC00..=0xDFFF).contains(&code);
        if awaiting_low != low {
            return false;
        }
        awaiting_low = high;
        i += 6;
    }
    !awaiting_low
}

fn hex4(digits: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(digits).ok()?;
    u16::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surrogate_escapes_must_come_in_pairs() {
        assert!(surrogate_escapes_paired(br#"{"a":"\u00e9\uD83D\uDE00x"}"#));
        assert!(surrogate_escapes_paired(br#"{"\uD83D\uDE00":1}"#));
        assert!(
            surrogate_escapes_paired(br#"{"a":"\\uD800"}"#),
            "an escaped backslash"
        );
        assert!(surrogate_escapes_paired(br#"{"a":"uD800"}"#));
        for lone in [
            br#"{"a":"\uD800"}"#.as_slice(),
            br#"{"a":"\uDacAxyz"}"#,
            br#"{"\uDC00":1}"#,
            br#"{"a":"\uD800\u0041"}"#,
            br#"{"a":"\uD800\n"}"#,
            br#"{"a":"\uD800"#,
        ] {
            assert!(
                !surrogate_escapes_paired(lone),
                "{}",
                String::from_utf8_lossy(lone)
            );
        }
    }

    #[test]
    fn only_structure_outside_strings_counts() {
        assert!(nesting_within(b"{}", 1));
        assert!(!nesting_within(b"{}", 0));
        assert!(nesting_within(br#"{"a":[1,{"b":[]}],"c":{}}"#, 4));
        assert!(!nesting_within(br#"{"a":[1,{"b":[]}],"c":{}}"#, 3));
        assert!(nesting_within(br#"{"a":"[[[{{{"}"#, 1));
        // An escaped quote stays in the string; an escaped backslash does not escape the quote.
        assert!(nesting_within(br#"{"a":"\"[[["}"#, 1));
        assert!(!nesting_within(br#"{"a":"\\"}[["#, 1));
        assert!(nesting_within(b"]]]]{", 1));
        assert!(nesting_within(b"", 0));
    }
}
