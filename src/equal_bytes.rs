//! Byte-string equality eight bytes at a time, and in the static musl binary the C library's
//! `bcmp` replaced by it.
//!
//! Why: every `==` of two strings of unknown length (the store's map keys, route literals, header
//! names) compiles to a call of `bcmp`, and musl's goes one byte at a time through `memcmp`:
//! comparing two 16-byte instance ids cost 118 instructions, and a heartbeat made about ten
//! comparisons. The static binary links the definition below instead (the linker takes a symbol
//! from the C library only when nothing else defines it). The glibc build keeps glibc's, which is
//! vectorised already. `memcmp` (orderings) stays musl's: the measured request paths order no
//! strings.

/// True when `a` and `b` hold the same bytes.
#[inline]
pub fn equal_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && same_prefix(a, b, a.len())
}

#[inline(always)]
fn word(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_ne_bytes(word)
}

#[inline(always)]
fn half_word(bytes: &[u8], at: usize) -> u32 {
    let mut half = [0u8; 4];
    half.copy_from_slice(&bytes[at..at + 4]);
    u32::from_ne_bytes(half)
}

/// True when the first `len` bytes of `a` and `b` (both at least that long) are the same.
/// Short lengths are compared with two overlapping loads instead of a loop.
#[inline]
fn same_prefix(a: &[u8], b: &[u8], len: usize) -> bool {
    let (a, b) = (&a[..len], &b[..len]);
    if len >= 8 {
        let mut at = 0;
        while at + 8 < len {
            if word(a, at) != word(b, at) {
                return false;
            }
            at += 8;
        }
        word(a, len - 8) == word(b, len - 8)
    } else if len >= 4 {
        half_word(a, 0) == half_word(b, 0) && half_word(a, len - 4) == half_word(b, len - 4)
    } else if len > 0 {
        a[0] == b[0] && a[len / 2] == b[len / 2] && a[len - 1] == b[len - 1]
    } else {
        true
    }
}

/// The C library's `bcmp`: zero when the `n` bytes at `left` and `right` are the same.
///
/// # Safety
///
/// As C's: both point to at least `n` readable bytes (any pointers when `n` is 0).
#[cfg(all(target_env = "musl", not(test)))]
#[no_mangle]
pub unsafe extern "C" fn bcmp(
    left: *const std::ffi::c_void,
    right: *const std::ffi::c_void,
    n: usize,
) -> std::ffi::c_int {
    if n == 0 {
        return 0;
    }
    // SAFETY: the caller promises `n` readable bytes behind each pointer, and `n` is not 0, so
    // neither is null.
    let (left, right) = unsafe {
        (
            std::slice::from_raw_parts(left.cast::<u8>(), n),
            std::slice::from_raw_parts(right.cast::<u8>(), n),
        )
    };
    std::ffi::c_int::from(!same_prefix(left, right, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_slice_equality_at_every_length_and_position() {
        for len in 0..=40 {
            let base: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
            assert!(equal_bytes(&base, &base.clone()), "length {len}");
            for at in 0..len {
                let mut changed = base.clone();
                changed[at] ^= 0x80;
                assert!(!equal_bytes(&base, &changed), "length {len}, byte {at}");
                changed[at] ^= 0x81;
                assert!(!equal_bytes(&base, &changed), "length {len}, byte {at}");
            }
            assert!(!equal_bytes(&base, &[base.as_slice(), b"x"].concat()));
        }
        assert!(equal_bytes(b"", b""));
        assert!(!equal_bytes(b"", b"a"));
    }

    #[test]
    fn compares_slices_at_any_alignment() {
        let text = b"0123456789abcdef0123456789abcdef0123456789abcdef";
        for start in 0..16 {
            for len in 0..=17 {
                let a = &text[start..start + len];
                let b = &text[start + 16..start + 16 + len];
                assert!(equal_bytes(a, b), "{start} {len}");
            }
        }
    }
}
