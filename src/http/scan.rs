//! Byte scanning for the request decoder and the router: eight bytes at a time where the
//! generic searches of `core` spend their set-up on every short call.

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const LOW_SEVEN: u64 = u64::from_ne_bytes([0x7f; 8]);

/// The high bit of every byte of `word` that equals the byte repeated in `pattern`, and no other
/// bit. Exact (no carry crosses a byte), so flags of bytes outside a range can be masked off.
#[inline(always)]
fn flags(word: u64, pattern: u64) -> u64 {
    let x = word ^ pattern;
    !(((x & LOW_SEVEN) + LOW_SEVEN) | x | LOW_SEVEN)
}

/// The eight bytes at `at` (little-endian, so byte `at` is the lowest).
#[inline(always)]
fn word_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// The flags of the needle among the bytes of `bytes` from `at` (less than its length) to at most
/// `at + 8`, and the index their bit 0 stands for. Near the end, the last eight bytes are read
/// again with those before `at` masked off, so no call goes byte by byte unless `bytes` is
/// shorter than a word.
#[inline(always)]
fn flags_from(bytes: &[u8], pattern: u64, at: usize) -> (u64, usize) {
    let len = bytes.len();
    if at + 8 <= len {
        (flags(word_at(bytes, at), pattern), at)
    } else {
        tail_flags(bytes, pattern, at)
    }
}

/// [`flags_from`] for the last bytes, fewer than eight from `at` on.
fn tail_flags(bytes: &[u8], pattern: u64, at: usize) -> (u64, usize) {
    let len = bytes.len();
    if len >= 8 {
        let base = len - 8;
        let seen = !0u64 << (8 * (at - base));
        (flags(word_at(bytes, base), pattern) & seen, base)
    } else {
        // Gathered byte by byte: a copy of a length known only now calls `memcpy`, which costs
        // more than these few bytes.
        let word = bytes
            .iter()
            .rev()
            .fold(0u64, |word, &byte| word << 8 | u64::from(byte));
        let inside = !0u64 >> (8 * (8 - len)) & !0u64 << (8 * at);
        (flags(word, pattern) & inside, 0)
    }
}

/// The index of the first `needle` in `haystack` at or after `from`.
pub fn find_byte(haystack: &[u8], needle: u8, from: usize) -> Option<usize> {
    let len = haystack.len();
    if len < 8 {
        // A few bytes (a Eureka app name, a short id): cheaper one at a time.
        let tail = haystack.get(from..)?;
        return tail.iter().position(|&b| b == needle).map(|at| from + at);
    }
    #[cfg(target_arch = "x86_64")]
    if len >= 16 {
        // SAFETY: the function's one requirement is SSE2, which the x86-64 architecture
        // includes: every processor this code runs on has it.
        return unsafe { find_byte_in_blocks(haystack, needle, from) };
    }
    find_byte_in_words(haystack, needle, from)
}

/// [`find_byte`] sixteen bytes at a time with SSE2, which every x86-64 processor has: a request's
/// path is searched for `?` in a few steps (eight instructions a block, where a word of
/// [`flags`] takes fifteen for half as many bytes). Near the end the last sixteen bytes are
/// read again, as [`flags_from`] does with words. For at least sixteen bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn find_byte_in_blocks(haystack: &[u8], needle: u8, from: usize) -> Option<usize> {
    use std::arch::x86_64::{_mm_cmpeq_epi8, _mm_movemask_epi8, _mm_set1_epi8, _mm_set_epi64x};
    let len = haystack.len();
    debug_assert!(len >= 16);
    let pattern = _mm_set1_epi8(needle as i8);
    let mut at = from;
    while at < len {
        // The block at `at`, or near the end the last sixteen bytes, those before `at` masked off.
        let (block, seen) = if at + 16 <= len {
            (at, !0u32)
        } else {
            (len - 16, !0u32 << (at - (len - 16)))
        };
        let low = word_at(haystack, block) as i64;
        let high = word_at(haystack, block + 8) as i64;
        // Bit i set when byte `block + i` is the needle.
        let found = _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_set_epi64x(high, low), pattern)) as u32;
        let found = found & seen;
        if found != 0 {
            return Some(block + found.trailing_zeros() as usize);
        }
        at = block + 16;
    }
    None
}

/// [`find_byte`] a word at a time, for at least eight bytes.
fn find_byte_in_words(haystack: &[u8], needle: u8, from: usize) -> Option<usize> {
    let len = haystack.len();
    let pattern = ONES.wrapping_mul(u64::from(needle));
    let mut at = from;
    while at + 8 <= len {
        // Little-endian, so the lowest flag is the first match.
        let found = flags(word_at(haystack, at), pattern);
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    if at >= len {
        return None;
    }
    let (found, base) = tail_flags(haystack, pattern, at);
    (found != 0).then(|| base + (found.trailing_zeros() / 8) as usize)
}

/// Splits `text` at every `separator` byte (an ASCII one, so every piece is a `&str`), calling
/// `piece` on each in order until it returns false; false when one did. One pass over `text`:
/// every separator a word holds is taken from its flags.
pub fn for_each_piece<'t>(
    text: &'t str,
    separator: u8,
    mut piece: impl FnMut(&'t str) -> bool,
) -> bool {
    debug_assert!(separator.is_ascii());
    let bytes = text.as_bytes();
    let pattern = ONES.wrapping_mul(u64::from(separator));
    let mut start = 0;
    let mut at = 0;
    while at < bytes.len() {
        let (mut found, base) = flags_from(bytes, pattern, at);
        while found != 0 {
            let end = base + (found.trailing_zeros() / 8) as usize;
            if !piece(&text[start..end]) {
                return false;
            }
            start = end + 1;
            found &= found - 1;
        }
        at = base + 8;
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
        // A match before `from` in the word read again near the end must not be taken, nor the
        // byte above it.
        assert_eq!(find_byte(b"0123456789\n\x0b", b'\n', 11), None);
        assert_eq!(find_byte(b"ab\n\x0bcd", b'\n', 3), None);
        for len in 0..20 {
            for from in 0..=len + 1 {
                let text = vec![b'/'; len];
                let expected = (from < len).then_some(from);
                assert_eq!(find_byte(&text, b'/', from), expected, "{len} {from}");
            }
        }
    }

    #[test]
    fn blocks_and_words_find_like_position_at_every_length() {
        for len in 0..80 {
            for at in 0..=len {
                let mut text: Vec<u8> = (0..len).map(|i| b'a' + (i % 20) as u8).collect();
                if at < len {
                    text[at] = b'?';
                }
                for from in [0, 1, 7, 8, 15, 16, 17, at, at + 1, len, len + 3] {
                    let expected = (at < len && from <= at).then_some(at);
                    assert_eq!(find_byte(&text, b'?', from), expected, "{len} {at} {from}");
                    if len >= 8 {
                        assert_eq!(find_byte_in_words(&text, b'?', from), expected);
                    }
                }
            }
        }
        // Bytes that differ from the needle by its high bit only are not it.
        let mut text = vec![b'?' | 0x80; 40];
        assert_eq!(find_byte(&text, b'?', 0), None);
        text[33] = b'?';
        assert_eq!(find_byte(&text, b'?', 0), Some(33));
        assert_eq!(find_byte(&text, b'?', 34), None);
    }

    #[test]
    fn pieces_like_split() {
        for text in [
            "",
            "/",
            "a",
            "api/v1/instances",
            "a//b/",
            "/x/",
            "api/v1/instances/0123456789abcdef/heartbeat",
            "////////////////////",
            "abcdefgh/",
            "abcdefg/h",
        ] {
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
