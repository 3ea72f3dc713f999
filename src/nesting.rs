//! The nesting bound checked before any JSON parser runs, shared by every reader of JSON from
//! outside (request bodies, tokens, catalog files, remote answers): a hostile document never
//! drives a recursive parser deep into a small stack. Knows nothing about what the JSON means.

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

#[cfg(test)]
mod tests {
    use super::*;

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
