//! The component's allocator: freed small blocks kept for reuse in front of
//! Talc.
//!
//! A hook call allocates and frees the same few small objects every time:
//! each string it reads from Sluice, each header change, the list that
//! carries them. Talc keeps its free blocks in bins and merges neighbours,
//! which is right for a long-lived heap but most of a hook's allocator time.
//! Here a freed block of up to [`LARGEST_CACHED`] bytes goes onto a list
//! for its size class, and the next allocation of that class pops it: a few
//! instructions each way. Larger blocks go to Talc directly. Cached blocks
//! are never handed back to Talc, so the cache holds at most what a call
//! had live at once in each class.
//!
//! A component has one thread (this is built only without the `atomics`
//! target feature), so the lists need no lock.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr::{self, NonNull};

/// Size classes, in bytes: a small block is rounded up to the first that
/// holds it.
const CLASSES: [usize; 6] = [16, 32, 48, 64, 128, 256];

/// The largest block kept for reuse.
const LARGEST_CACHED: usize = CLASSES[CLASSES.len() - 1];

/// The alignment every cached block has; larger alignments go to Talc.
const ALIGN: usize = 16;

/// A freed block, holding the link to the next one of its class.
struct Free {
    next: Option<NonNull<Free>>,
}

/// Talc, with lists of freed small blocks in front of it.
pub struct CachingTalc {
    talc: talc::wasm::WasmDynamicTalc,
    free: UnsafeCell<[Option<NonNull<Free>>; CLASSES.len()]>,
}

// SAFETY: the component runs on one thread (no `atomics` target feature),
// so the free lists are never touched from two threads.
unsafe impl Sync for CachingTalc {}

impl CachingTalc {
    /// The allocator, with empty lists.
    pub const fn new() -> Self {
        Self {
            talc: talc::wasm::new_wasm_dynamic_allocator(),
            free: UnsafeCell::new([None; CLASSES.len()]),
        }
    }
}

impl Default for CachingTalc {
    fn default() -> Self {
        Self::new()
    }
}

/// The index of the class a block of `layout` belongs to, if it is cached.
fn class(layout: Layout) -> Option<usize> {
    if layout.align() > ALIGN || layout.size() > LARGEST_CACHED {
        return None;
    }
    CLASSES.iter().position(|&size| layout.size() <= size)
}

/// The layout Talc allocates a block of class `index` with.
fn class_layout(index: usize) -> Layout {
    // SAFETY: the sizes are non-zero multiples of the alignment, a power of
    // two, and far below `isize::MAX`.
    unsafe { Layout::from_size_align_unchecked(CLASSES[index], ALIGN) }
}

unsafe impl GlobalAlloc for CachingTalc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(index) = class(layout) else {
            // SAFETY: passed on as the caller gave it.
            return unsafe { self.talc.alloc(layout) };
        };
        // SAFETY: one thread (see `Sync`); the list holds blocks of this
        // class that were freed and are not in use.
        unsafe {
            let lists = &mut *self.free.get();
            match lists[index] {
                Some(block) => {
                    lists[index] = block.as_ref().next;
                    block.as_ptr().cast()
                }
                None => self.talc.alloc(class_layout(index)),
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(index) = class(layout) else {
            // SAFETY: a block of this layout came from Talc.
            return unsafe { self.talc.dealloc(ptr, layout) };
        };
        // SAFETY: `ptr` is a block of this class (allocated above with the
        // class's size and alignment), no longer in use, large enough and
        // aligned for the link.
        unsafe {
            let lists = &mut *self.free.get();
            let block = ptr.cast::<Free>();
            block.write(Free { next: lists[index] });
            lists[index] = NonNull::new(block);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `layout` with `new_size` is valid, as the caller promises.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new_layout)) {
            // Both large: Talc may grow or shrink the block in place.
            // SAFETY: passed on as the caller gave it.
            (None, None) => unsafe { self.talc.realloc(ptr, layout, new_size) },
            // The same class: the block already has room.
            (Some(old), Some(new)) if old == new => ptr,
            _ => {
                // SAFETY: a fresh block of the new layout, the old one's
                // bytes copied up to the smaller size, then the old freed.
                unsafe {
                    let moved = self.alloc(new_layout);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    moved
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_sizes_fall_in_the_first_class_that_holds_them() {
        let layout = |size, align| Layout::from_size_align(size, align).unwrap();
        assert_eq!(class(layout(1, 1)), Some(0));
        assert_eq!(class(layout(16, 8)), Some(0));
        assert_eq!(class(layout(17, 1)), Some(1));
        assert_eq!(class(layout(100, 4)), Some(4));
        assert_eq!(class(layout(256, 16)), Some(5));
        assert_eq!(class(layout(257, 1)), None);
        assert_eq!(class(layout(8, 32)), None);
        for index in 0..CLASSES.len() {
            assert_eq!(class(class_layout(index)), Some(index));
        }
    }
}
