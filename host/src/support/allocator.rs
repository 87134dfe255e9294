//! The process's heap allocator: mimalloc, entered through its plain
//! `malloc`, `zalloc` and `realloc` whenever its size classes give the
//! alignment asked for anyway.
//!
//! Rust states an alignment with every allocation, and the `mimalloc`
//! crate passes each one to `mi_malloc_aligned`. mimalloc 3 serves that
//! from its fast path only when the next free block of the size class
//! happens to be aligned; otherwise it takes the plain path only for
//! power-of-two sizes and over-allocates the rest: a 232-byte header map
//! or a 4,112-byte future asked for with alignment 8 takes a larger block
//! and a longer path through `malloc` and `free`. A proxied request made
//! 16 such over-allocations and 24 trips through the aligned slow path,
//! 7,300 instructions of allocator a request where the plain entry points
//! take about a third of that (`docs/optimisations.md`).
//!
//! Every mimalloc block is aligned to 8 bytes, and to 16 when its size is
//! a multiple of 16: size classes are 8 bytes and then multiples of 16,
//! and a page's first block is 16-aligned. So a layout whose alignment is
//! at most 16 and divides its size gets it from the plain entry points; any
//! other layout (Tokio's 128-byte aligned task cells, for one) still goes
//! through the aligned ones.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The largest alignment the plain entry points give every block whose
/// size it divides (mimalloc's `MI_MAX_ALIGN_SIZE`).
const PLAIN_ALIGN: usize = 16;

/// mimalloc as a [`GlobalAlloc`], through its plain entry points where
/// they give the layout's alignment.
pub struct Mimalloc;

/// Whether the plain entry points give an allocation of `size` bytes the
/// alignment `align`.
#[inline]
fn plain(size: usize, align: usize) -> bool {
    // `align` is a power of two (`Layout` guarantees it), so a mask tells
    // whether it divides `size` without a division on every allocation.
    align <= PLAIN_ALIGN && size & (align - 1) == 0
}

// SAFETY: every pointer comes from mimalloc, which hands out blocks of at
// least the size asked for; alignment comes either from the aligned entry
// points or, per `plain`, from the size classes (checked by the tests
// below for every size up to a large allocation and each alignment).
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation functions take any size.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract),
        // and `mi_free` frees blocks from either kind of entry point.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (the
        // caller's contract); mimalloc reallocates blocks from either kind
        // of entry point.
        unsafe {
            if plain(new_size, layout.align()) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates every size up to `max` that `align` divides, a few times
    /// each so that blocks come from the middle of pages too, and checks
    /// each block's alignment and that it can be written whole.
    fn check_alignment(align: usize, max: usize, step: usize) {
        let mut held = Vec::new();
        for size in (align..=max).step_by(step.max(align)) {
            let layout = Layout::from_size_align(size, align).unwrap();
            for _ in 0..3 {
                // SAFETY: a non-zero size; each block is freed below with
                // the layout it was allocated with.
                let ptr = unsafe { Mimalloc.alloc(layout) };
                assert!(!ptr.is_null());
                assert_eq!(ptr as usize % align, 0, "size {size}, align {align}");
                // SAFETY: the block holds `size` bytes.
                unsafe { ptr.write_bytes(0xa5, size) };
                held.push((ptr, layout));
            }
        }
        for (ptr, layout) in held {
            // SAFETY: allocated above with this layout.
            unsafe { Mimalloc.dealloc(ptr, layout) };
        }
    }

    #[test]
    fn plain_allocations_keep_their_alignment() {
        for align in [1, 2, 4, 8, 16] {
            check_alignment(align, 4096, 1);
            check_alignment(align, 600_000, 4093);
        }
    }

    #[test]
    fn larger_alignments_go_through_the_aligned_entry_points() {
        assert!(!plain(512, 128));
        assert!(!plain(24, 16));
        check_alignment(128, 70_000, 128);
        check_alignment(4096, 70_000, 4096);
    }

    #[test]
    fn zeroed_and_reallocated_blocks_keep_contents_and_alignment() {
        for align in [8, 16, 64] {
            let layout = Layout::from_size_align(48, align).unwrap();
            // SAFETY: a non-zero size; freed below with its final layout.
            unsafe {
                let ptr = Mimalloc.alloc_zeroed(layout);
                assert!(std::slice::from_raw_parts(ptr, 48).iter().all(|&b| b == 0));
                ptr.write_bytes(7, 48);
                let grown = Mimalloc.realloc(ptr, layout, 5_000 * align);
                assert_eq!(grown as usize % align, 0);
                assert!(std::slice::from_raw_parts(grown, 48)
                    .iter()
                    .all(|&b| b == 7));
                Mimalloc.dealloc(
                    grown,
                    Layout::from_size_align(5_000 * align, align).unwrap(),
                );
            }
        }
    }
}
