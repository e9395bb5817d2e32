//! The stages' allocator: small blocks from free lists by size class.
//!
//! Every event crosses into a stage as a fresh guest allocation
//! (`cabi_realloc` for its lists) and every answer is freed again after the
//! call, so a 20 ms audio frame costs a stage a dozen small allocations.
//! wasi-libc's dlmalloc took as long over them as the codec and the VAD took
//! over the audio itself; a free list per power-of-two size takes a few
//! instructions. Blocks up to 4 KiB are kept for reuse (a stage's small-block
//! memory stays at its peak); larger or over-aligned ones go to the system
//! allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

const SMALLEST: usize = 16;
const LARGEST: usize = 4096;
/// 16, 32, ..., 4096.
const CLASSES: usize = (LARGEST.trailing_zeros() - SMALLEST.trailing_zeros() + 1) as usize;

/// Free lists by size class; a free block holds the next one's address.
pub struct SizeClasses {
    heads: UnsafeCell<[*mut u8; CLASSES]>,
}

// SAFETY: stages are single-threaded wasm (the global instance below exists
// only there); the tests use their own instance on one thread.
unsafe impl Sync for SizeClasses {}

impl SizeClasses {
    pub const fn new() -> Self {
        SizeClasses {
            heads: UnsafeCell::new([ptr::null_mut(); CLASSES]),
        }
    }
}

impl Default for SizeClasses {
    fn default() -> Self {
        Self::new()
    }
}

/// The class serving `layout`, if a small block can.
fn class(layout: Layout) -> Option<usize> {
    if layout.align() > SMALLEST || layout.size() > LARGEST {
        return None;
    }
    let size = layout.size().max(SMALLEST).next_power_of_two();
    Some((size.trailing_zeros() - SMALLEST.trailing_zeros()) as usize)
}

fn class_layout(class: usize) -> Layout {
    // SAFETY: a power of two from 16 to 4096, aligned to 16.
    unsafe { Layout::from_size_align_unchecked(SMALLEST << class, SMALLEST) }
}

unsafe impl GlobalAlloc for SizeClasses {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(c) = class(layout) else {
            // SAFETY: the caller's layout, as the system allocator takes it.
            return unsafe { System.alloc(layout) };
        };
        // SAFETY: single-threaded (see `Sync`), and a listed block is a
        // free block of this class whose first word is the next one.
        unsafe {
            let heads = &mut *self.heads.get();
            let block = heads[c];
            if block.is_null() {
                return System.alloc(class_layout(c));
            }
            heads[c] = block.cast::<*mut u8>().read();
            block
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(c) = class(layout) else {
            // SAFETY: allocated by the system allocator with this layout.
            return unsafe { System.dealloc(block, layout) };
        };
        // SAFETY: the block is at least 16 bytes, aligned to 16, and no
        // longer used by the caller.
        unsafe {
            let heads = &mut *self.heads.get();
            block.cast::<*mut u8>().write(heads[c]);
            heads[c] = block;
        }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY (layout): the caller guarantees `new_size` fits `layout.align()`.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new)) {
            // Still fits its block: nothing to move.
            (Some(a), Some(b)) if a == b => block,
            // SAFETY: both large: the system allocator owns the block.
            (None, None) => unsafe { System.realloc(block, layout, new_size) },
            _ => {
                // SAFETY: a fresh block of the new size; the old one is
                // copied up to the smaller size, then given back.
                unsafe {
                    let moved = self.alloc(new);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
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
    fn sizes_map_to_their_classes() {
        let l = |size, align| Layout::from_size_align(size, align).unwrap();
        assert_eq!(class(l(0, 1)), Some(0));
        assert_eq!(class(l(16, 8)), Some(0));
        assert_eq!(class(l(17, 1)), Some(1));
        assert_eq!(class(l(640, 2)), Some(6));
        assert_eq!(class(l(4096, 16)), Some(CLASSES - 1));
        assert_eq!(class(l(4097, 1)), None);
        assert_eq!(class(l(64, 32)), None);
    }

    #[test]
    fn blocks_are_reused_kept_apart_and_moved_intact() {
        let a = SizeClasses::new();
        let l = |size| Layout::from_size_align(size, 2).unwrap();
        unsafe {
            let p = a.alloc(l(640));
            let q = a.alloc(l(600));
            assert_ne!(p, q, "two live blocks never share memory");
            assert_eq!(p as usize % 16, 0);
            ptr::write_bytes(p, 7, 640);
            a.dealloc(p, l(640));
            // The freed block serves the next request of its class.
            let r = a.alloc(l(520));
            assert_eq!(r, p);
            // Growing within the class keeps the block; past it, the
            // contents move to a larger one.
            ptr::write_bytes(r, 9, 520);
            assert_eq!(a.realloc(r, l(520), 1000), r);
            let s = a.realloc(r, l(1000), 3000);
            assert_ne!(s, r);
            assert!((0..520).all(|i| *s.add(i) == 9));
            // Into and out of the system allocator's sizes.
            let big = a.realloc(s, l(3000), 10_000);
            assert!((0..520).all(|i| *big.add(i) == 9));
            let small = a.realloc(big, l(10_000), 100);
            assert!((0..100).all(|i| *small.add(i) == 9));
            a.dealloc(small, l(100));
            a.dealloc(q, l(600));
        }
    }
}
