//! `memcpy` and `memmove` for the static (musl, x86-64) build.
//!
//! musl's x86-64 `memcpy` aligns and copies with `rep movsq` and moves the odd bytes
//! one `movsb` at a time: correct, but slow to start, and Rust calls `memcpy` for every
//! `copy_from_slice` whose length is not a constant. Those are mostly small (names,
//! headers, hash inputs), so a LUKS2 keyslot unlock and the FUSE server's tree walks
//! spend much of their copying in that start (figures in benches/README.md).
//! These copy up to 64 bytes with a pair of possibly overlapping loads and stores of
//! the largest width that fits, and longer runs with `rep movsb`, which CPUs with the
//! ERMS feature (Intel since 2012, AMD since Zen 3) run at full speed; on others it is
//! still correct, and no slower than musl's own.
//!
//! Being `#[no_mangle]`, they replace musl's for the whole binary, the C libraries
//! linked into it included. Every load of a small copy happens before its first store, so the small path is
//! also a correct `memmove`. The bodies never copy through `core::ptr::copy*`, which
//! would call these functions again.

use core::arch::asm;
use core::ptr::{read_unaligned as load, write_unaligned as store};

/// Copies `n` bytes, `size_of::<T>() <= n <= 2 * size_of::<T>()`, as a load of `T` at
/// each end (possibly overlapping) and then the two stores.
///
/// # Safety
/// `src` is readable and `dst` writable for `n` bytes.
#[inline(always)]
unsafe fn ends<T: Copy>(dst: *mut u8, src: *const u8, n: usize) {
    let w = core::mem::size_of::<T>();
    // SAFETY: both accesses lie within `n` bytes (`w <= n`); unaligned accesses are
    // allowed; both loads come before the stores.
    unsafe {
        let a = load(src as *const T);
        let b = load(src.add(n - w) as *const T);
        store(dst as *mut T, a);
        store(dst.add(n - w) as *mut T, b);
    }
}

/// Copies `n <= 64` bytes; `src` and `dst` may overlap.
///
/// # Safety
/// `src` is readable and `dst` writable for `n` bytes.
#[inline(always)]
unsafe fn small(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: every access is within `n` bytes of `src` or `dst`, and all
    // loads come before the first store.
    unsafe {
        match n {
            33..=64 => ends::<[u128; 2]>(dst, src, n),
            16..=32 => ends::<u128>(dst, src, n),
            8..=15 => ends::<u64>(dst, src, n),
            4..=7 => ends::<u32>(dst, src, n),
            1..=3 => {
                let (a, b, c) = (*src, *src.add(n / 2), *src.add(n - 1));
                *dst = a;
                *dst.add(n / 2) = b;
                *dst.add(n - 1) = c;
            }
            _ => {}
        }
    }
}

/// `rep movsb`, forwards.
///
/// # Safety
/// `src` is readable and `dst` writable for `n` bytes; if they overlap, `dst` is below
/// `src` (a forward byte copy is then still correct).
#[inline(always)]
unsafe fn forward(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the caller's contract; the direction flag is clear (the ABI requires it
    // on every function entry and exit).
    unsafe {
        asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags)
        );
    }
}

/// `rep movsb` with the direction flag set: from the last byte down.
///
/// # Safety
/// `src` is readable and `dst` writable for `n > 0` bytes.
#[inline(always)]
unsafe fn backward(dst: *mut u8, src: *const u8, n: usize) {
    // SAFETY: the caller's contract; the direction flag is set only for this one
    // instruction and cleared again before anything else runs.
    unsafe {
        asm!(
            "std",
            "rep movsb",
            "cld",
            inout("rcx") n => _,
            inout("rdi") dst.add(n - 1) => _,
            inout("rsi") src.add(n - 1) => _,
            options(nostack)
        );
    }
}

/// # Safety
/// The C contract: `src` readable and `dst` writable for `n` bytes, not overlapping.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract, which both paths need.
    unsafe {
        if n <= 64 {
            small(dst, src, n);
        } else {
            forward(dst, src, n);
        }
    }
    dst
}

/// # Safety
/// The C contract: `src` readable and `dst` writable for `n` bytes; they may overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract. A small copy loads everything before storing; a
    // forward copy is correct when `dst` is below `src` or the ranges are apart
    // (`dst - src`, wrapping, is at least `n`); otherwise the copy runs backwards.
    unsafe {
        if n <= 64 {
            small(dst, src, n);
        } else if (dst as usize).wrapping_sub(src as usize) >= n {
            forward(dst, src, n);
        } else {
            backward(dst, src, n);
        }
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 + 7) as u8).collect()
    }

    #[test]
    fn memcpy_copies_every_length_at_every_alignment() {
        for n in 0..300 {
            for off in 0..8 {
                let src = pattern(n + 16);
                let mut dst = vec![0xEEu8; n + 32];
                // SAFETY: both buffers are long enough for `off + n` bytes.
                let r = unsafe { memcpy(dst.as_mut_ptr().add(off), src.as_ptr().add(3), n) };
                assert_eq!(r, dst.as_mut_ptr().wrapping_add(off));
                assert_eq!(&dst[off..off + n], &src[3..3 + n], "n {n} off {off}");
                assert!(dst[..off].iter().all(|&b| b == 0xEE), "n {n}: wrote before");
                assert!(
                    dst[off + n..].iter().all(|&b| b == 0xEE),
                    "n {n}: wrote past"
                );
            }
        }
    }

    #[test]
    fn memmove_handles_overlap_in_both_directions() {
        for n in 0..300 {
            for shift in [1usize, 2, 7, 8, 15, 16, 33, 64, 65] {
                let orig = pattern(n + shift);
                // Up: dst above src.
                let mut b = orig.clone();
                // SAFETY: both ranges lie inside `b`.
                unsafe { memmove(b.as_mut_ptr().add(shift), b.as_ptr(), n) };
                assert_eq!(&b[shift..shift + n], &orig[..n], "up n {n} shift {shift}");
                assert_eq!(&b[..shift], &orig[..shift]);
                // Down: dst below src.
                let mut b = orig.clone();
                // SAFETY: as above.
                unsafe { memmove(b.as_mut_ptr(), b.as_ptr().add(shift), n) };
                assert_eq!(&b[..n], &orig[shift..shift + n], "down n {n} shift {shift}");
                assert_eq!(&b[n..], &orig[n..], "down n {n}: wrote past");
            }
        }
    }
}
