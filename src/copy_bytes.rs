//! The C library's `memcpy` and `memmove` for the static musl binary, with short copies done in
//! a few unaligned loads and stores.
//!
//! Why: musl's x86_64 `memcpy` copies everything of eight bytes or more with `rep movsq`, whose
//! start-up costs some 20–35 cycles whatever the length, and a request makes about 65 copies,
//! most of them under 64 bytes (header slots, JSON strings, pieces of the answer). In a profile
//! of registrations (wrk, 64 connections) musl's `memcpy` took 14 % of the server's time against
//! 3.5 % for glibc's. Copies of up to 64 bytes here load every byte first and then store, in at
//! most four overlapping pieces of 16 bytes, so they need no loop and handle overlap as
//! `memmove` must; longer ones use `rep movsq` and one more store, which current x86_64 processors run as
//! a fast string copy. The static binary links these definitions instead of the C library's (the linker
//! takes a symbol from it only when nothing else defines it); the glibc build keeps glibc's,
//! which is vectorised already.
//!
//! No loop here copies memory: the compiler turns such loops into calls of `memcpy`, which would
//! be this function calling itself.

// Other builds use these functions in the tests only.
#![cfg_attr(
    not(all(target_env = "musl", target_arch = "x86_64")),
    allow(dead_code)
)]

#[cfg(all(target_env = "musl", target_arch = "x86_64", not(test)))]
mod c_library {
    /// The C library's `memcpy`.
    ///
    /// # Safety
    ///
    /// As C's: `n` bytes readable at `source` and writable at `destination`, not overlapping.
    #[no_mangle]
    pub unsafe extern "C" fn memcpy(
        destination: *mut std::ffi::c_void,
        source: *const std::ffi::c_void,
        n: usize,
    ) -> *mut std::ffi::c_void {
        // SAFETY: the caller's promise; a forward copy is right for bytes that do not overlap.
        unsafe { super::copy_forward(destination.cast(), source.cast(), n) };
        destination
    }

    /// The C library's `memmove`.
    ///
    /// # Safety
    ///
    /// As C's: `n` bytes readable at `source` and writable at `destination`; they may overlap.
    #[no_mangle]
    pub unsafe extern "C" fn memmove(
        destination: *mut std::ffi::c_void,
        source: *const std::ffi::c_void,
        n: usize,
    ) -> *mut std::ffi::c_void {
        // SAFETY: the caller's promise.
        unsafe { super::move_bytes(destination.cast(), source.cast(), n) };
        destination
    }
}

/// Copies `n` bytes from `from` to `to`, which may overlap.
///
/// # Safety
///
/// `n` bytes readable at `from` and writable at `to`.
unsafe fn move_bytes(to: *mut u8, from: *const u8, n: usize) {
    // A forward copy is right unless the destination starts inside the source.
    let overlapping_ahead = (to as usize).wrapping_sub(from as usize) < n;
    // SAFETY: the caller's promise; the direction is chosen for the overlap.
    unsafe {
        if overlapping_ahead && n > SHORT {
            copy_backward(to, from, n);
        } else {
            copy_forward(to, from, n);
        }
    }
}

/// Copies of at most this many bytes are done by loads and stores, longer ones by the processor's
/// string copy.
const SHORT: usize = 64;

/// Copies `n` bytes from `from` to `to`: right when they do not overlap, and for overlapping
/// ones when `n <= SHORT` or `to` does not start inside the source.
///
/// # Safety
///
/// `n` bytes readable at `from` and writable at `to`.
#[inline(always)]
unsafe fn copy_forward(to: *mut u8, from: *const u8, n: usize) {
    // SAFETY (every arm): each offset stays within the `n` bytes the caller promised, and every
    // piece is loaded before any is stored, so short overlapping copies come out right.
    unsafe {
        if n <= 16 {
            copy_up_to_16(to, from, n);
        } else if n <= 32 {
            let (head, tail) = (load16(from, 0), load16(from, n - 16));
            store16(to, 0, head);
            store16(to, n - 16, tail);
        } else if n <= SHORT {
            let (a, b) = (load16(from, 0), load16(from, 16));
            let (c, d) = (load16(from, n - 32), load16(from, n - 16));
            store16(to, 0, a);
            store16(to, 16, b);
            store16(to, n - 32, c);
            store16(to, n - 16, d);
        } else {
            string_copy_forward(to, from, n);
        }
    }
}

/// # Safety
///
/// `n <= 16` bytes readable at `from` and writable at `to`.
#[inline(always)]
unsafe fn copy_up_to_16(to: *mut u8, from: *const u8, n: usize) {
    // SAFETY: as the caller promised; the two pieces of each arm lie within the `n` bytes.
    unsafe {
        if n >= 8 {
            let (head, tail) = (load::<u64>(from, 0), load::<u64>(from, n - 8));
            store(to, 0, head);
            store(to, n - 8, tail);
        } else if n >= 4 {
            let (head, tail) = (load::<u32>(from, 0), load::<u32>(from, n - 4));
            store(to, 0, head);
            store(to, n - 4, tail);
        } else if n > 0 {
            let (first, middle, last) = (*from, *from.add(n / 2), *from.add(n - 1));
            *to = first;
            *to.add(n / 2) = middle;
            *to.add(n - 1) = last;
        }
    }
}

#[inline(always)]
unsafe fn load<T: Copy>(from: *const u8, at: usize) -> T {
    // SAFETY: the caller's bounds; unaligned reads are allowed.
    unsafe { from.add(at).cast::<T>().read_unaligned() }
}

#[inline(always)]
unsafe fn store<T: Copy>(to: *mut u8, at: usize, value: T) {
    // SAFETY: the caller's bounds; unaligned writes are allowed.
    unsafe { to.add(at).cast::<T>().write_unaligned(value) }
}

#[inline(always)]
unsafe fn load16(from: *const u8, at: usize) -> u128 {
    // SAFETY: the caller's bounds.
    unsafe { load::<u128>(from, at) }
}

#[inline(always)]
unsafe fn store16(to: *mut u8, at: usize, value: u128) {
    // SAFETY: the caller's bounds.
    unsafe { store::<u128>(to, at, value) }
}

/// `rep movsq` upwards for all but the last few bytes, then the last eight bytes, loaded before
/// the copy: right when `to` does not start inside the source. (Eight bytes per step rather than
/// `rep movsb`'s one: as fast on current processors, and an eighth of the steps for callgrind,
/// which counts each as an instruction.)
///
/// # Safety
///
/// `n >= 8` bytes readable at `from` and writable at `to`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn string_copy_forward(to: *mut u8, from: *const u8, n: usize) {
    // SAFETY: the caller's bounds; the direction flag is clear, as the ABI requires at calls. The
    // tail is read before the copy can overwrite it (a `memmove` down by fewer than 8 bytes).
    unsafe {
        let tail = load::<u64>(from, n - 8);
        std::arch::asm!(
            "rep movsq",
            inout("rcx") n / 8 => _,
            inout("rdi") to => _,
            inout("rsi") from => _,
            options(nostack, preserves_flags)
        );
        store(to, n - 8, tail);
    }
}

/// `rep movsb` downwards, from the last byte: right for a destination that starts inside the
/// source. Rare (a `memmove` shifting bytes up), so not fast.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
unsafe fn copy_backward(to: *mut u8, from: *const u8, n: usize) {
    // SAFETY: the caller's bounds (`n > 0`); the direction flag is set for this copy only and
    // cleared again, as the ABI requires.
    unsafe {
        std::arch::asm!(
            "std",
            "rep movsb",
            "cld",
            inout("rcx") n => _,
            inout("rdi") to.add(n - 1) => _,
            inout("rsi") from.add(n - 1) => _,
            options(nostack)
        );
    }
}

/// Elsewhere (the tests of other targets) the standard library's copies stand in.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn string_copy_forward(to: *mut u8, from: *const u8, n: usize) {
    // SAFETY: the caller's bounds; `copy` allows overlap.
    unsafe { std::ptr::copy(from, to, n) }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn copy_backward(to: *mut u8, from: *const u8, n: usize) {
    // SAFETY: the caller's bounds; `copy` allows overlap.
    unsafe { std::ptr::copy(from, to, n) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn copies_every_length_between_separate_buffers() {
        for n in 0..300 {
            for offset in [0, 1, 7] {
                let source = pattern(n + offset);
                let mut destination = vec![0xAAu8; n + 16];
                // SAFETY: `n` bytes within both buffers.
                unsafe {
                    copy_forward(
                        destination.as_mut_ptr().add(3),
                        source.as_ptr().add(offset),
                        n,
                    )
                };
                assert_eq!(&destination[3..3 + n], &source[offset..offset + n], "n {n}");
                assert!(destination[..3].iter().all(|&b| b == 0xAA), "n {n}: before");
                assert!(
                    destination[3 + n..].iter().all(|&b| b == 0xAA),
                    "n {n}: after"
                );
            }
        }
    }

    #[test]
    fn moves_overlapping_bytes_either_way() {
        for n in 0..200 {
            for shift in [1, 3, 8, 17, 40, 100] {
                let original = pattern(n + shift);
                let mut up = original.clone();
                let base = up.as_mut_ptr();
                // SAFETY: both ranges lie within the buffer.
                unsafe { move_bytes(base.add(shift), base, n) };
                assert_eq!(
                    &up[shift..shift + n],
                    &original[..n],
                    "up: n {n} shift {shift}"
                );
                let mut down = original.clone();
                let base = down.as_mut_ptr();
                // SAFETY: both ranges lie within the buffer.
                unsafe { move_bytes(base, base.add(shift), n) };
                assert_eq!(
                    &down[..n],
                    &original[shift..shift + n],
                    "down: n {n} shift {shift}"
                );
            }
        }
    }
}
