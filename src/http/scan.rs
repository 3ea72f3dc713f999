//! Byte scanning for the request decoder and the router: eight bytes at a time where the
//! generic searches of `core` spend their set-up on every short call.

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);

/// The index of the first `needle` in `haystack` at or after `from`.
pub fn find_byte(haystack: &[u8], needle: u8, from: usize) -> Option<usize> {
    let pattern = ONES.wrapping_mul(u64::from(needle));
    let mut at = from;
    while at + 8 <= haystack.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&haystack[at..at + 8]);
        // Little-endian, so the lowest flagged byte is the first one; the classic zero-byte test
        // can flag a byte above a true match, never one below it.
        let x = u64::from_le_bytes(word) ^ pattern;
        let found = x.wrapping_sub(ONES) & !x & HIGHS;
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    haystack[at.min(haystack.len())..]
        .iter()
        .position(|&b| b == needle)
        .map(|offset| at + offset)
}

/// Splits `text` at every `separator` byte (an ASCII one, so every piece is a `&str`), calling
/// `piece` on each in order until it returns false; false when one did.
pub fn for_each_piece<'t>(
    text: &'t str,
    separator: u8,
    mut piece: impl FnMut(&'t str) -> bool,
) -> bool {
    debug_assert!(separator.is_ascii());
    let bytes = text.as_bytes();
    let mut start = 0;
    while let Some(end) = find_byte(bytes, separator, start) {
        if !piece(&text[start..end]) {
            return false;
        }
        start = end + 1;
    }
    piece(&text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_like_position() {
        let text = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n0123456789abcdef\n";
        for from in 0..=text.len() {
            let expected = text[from..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|i| i + from);
            assert_eq!(find_byte(text, b'\n', from), expected, "from {from}");
        }
        assert_eq!(find_byte(b"", b'\n', 0), None);
        assert_eq!(find_byte(b"abc", b'\n', 5), None);
        // Bytes next to the needle's value must not be taken for it.
        assert_eq!(find_byte(&[0x0b, 0x09, 0x8a, 0x0a], b'\n', 0), Some(3));
        assert_eq!(find_byte(&[0x0b; 17], b'\n', 0), None);
    }

    #[test]
    fn pieces_like_split() {
        for text in ["", "/", "a", "api/v1/instances", "a//b/", "/x/"] {
            let mut pieces = Vec::new();
            assert!(for_each_piece(text, b'/', |p| {
                pieces.push(p);
                true
            }));
            assert_eq!(pieces, text.split('/').collect::<Vec<_>>(), "{text:?}");
        }
        let mut seen = 0;
        assert!(!for_each_piece("a/b/c", b'/', |_| {
            seen += 1;
            seen < 2
        }));
        assert_eq!(seen, 2);
    }
}
