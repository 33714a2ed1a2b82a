//! A small cache in front of the system allocator, for the daemon.
//!
//! musl's allocator (mallocng) unmaps a size class's group as soon as its
//! last slot is freed and maps it again for the next allocation: a lone
//! event after an idle spell paid for about ten mmap/munmap calls and
//! their page faults before its send (seen with strace). This keeps up to
//! [`KEEP`] freed blocks of each small size (16-byte steps up to [`MAX`])
//! to hand out again, so the next event reuses the last one's memory and
//! mallocng's groups stay mapped. At most about 64 KiB is held this way.
//! Larger or over-aligned requests go straight to the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

/// The largest size cached.
const MAX: usize = 512;
/// Sizes are kept in classes of this many bytes.
const STEP: usize = 16;
const CLASSES: usize = MAX / STEP;
/// Freed blocks kept per class.
const KEEP: usize = 8;

struct Class {
    busy: AtomicBool,
    /// Up to KEEP free blocks; `len` of them are valid.
    blocks: std::cell::UnsafeCell<[*mut u8; KEEP]>,
    len: std::cell::UnsafeCell<usize>,
}

// SAFETY: `blocks` and `len` are only touched while `busy` is held.
unsafe impl Sync for Class {}

impl Class {
    const fn new() -> Class {
        Class {
            busy: AtomicBool::new(false),
            blocks: std::cell::UnsafeCell::new([ptr::null_mut(); KEEP]),
            len: std::cell::UnsafeCell::new(0),
        }
    }

    /// Runs `f` with the class held; a short spin, as the critical section
    /// is a few instructions and never allocates.
    fn with<T>(&self, f: impl FnOnce(&mut [*mut u8; KEEP], &mut usize) -> T) -> T {
        while self
            .busy
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        // SAFETY: `busy` is held, so no other thread touches these.
        let out = unsafe { f(&mut *self.blocks.get(), &mut *self.len.get()) };
        self.busy.store(false, Ordering::Release);
        out
    }
}

/// The allocator the daemon's binary installs (see `main.rs`).
pub struct Cached;

static CACHE: [Class; CLASSES] = [const { Class::new() }; CLASSES];

/// The class of a request, and the layout its blocks have; `None` when
/// the request is not cached.
fn class_of(layout: Layout) -> Option<(usize, Layout)> {
    if layout.size() == 0 || layout.size() > MAX || layout.align() > STEP {
        return None;
    }
    let class = (layout.size() - 1) / STEP;
    let size = (class + 1) * STEP;
    Layout::from_size_align(size, STEP).ok().map(|l| (class, l))
}

// SAFETY: every block handed out is either fresh from `System` with the
// class's layout, or one of those returned to the cache; a block goes back
// to `System` with the layout it was allocated with.
unsafe impl GlobalAlloc for Cached {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some((class, block)) = class_of(layout) else {
            return System.alloc(layout);
        };
        let kept = CACHE[class].with(|blocks, len| {
            if *len == 0 {
                return ptr::null_mut();
            }
            *len -= 1;
            blocks[*len]
        });
        if kept.is_null() {
            System.alloc(block)
        } else {
            kept
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        let Some((class, block)) = class_of(layout) else {
            return System.dealloc(p, layout);
        };
        let kept = CACHE[class].with(|blocks, len| {
            if *len == KEEP {
                return false;
            }
            blocks[*len] = p;
            *len += 1;
            true
        });
        if !kept {
            System.dealloc(p, block);
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = Layout::from_size_align_unchecked(new_size, layout.align());
        match (class_of(layout), class_of(new)) {
            // Neither is cached: the system allocator may grow in place.
            (None, None) => System.realloc(p, layout, new_size),
            // The same block fits both sizes.
            (Some((a, _)), Some((b, _))) if a == b => p,
            _ => {
                let q = self.alloc(new);
                if !q.is_null() {
                    ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                    self.dealloc(p, layout);
                }
                q
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_come_back_and_sizes_keep_their_bytes() {
        let a = Cached;
        let l = Layout::from_size_align(40, 8).unwrap();
        // SAFETY: plain allocator calls with matching layouts.
        unsafe {
            let p = a.alloc(l);
            assert!(!p.is_null());
            p.write_bytes(7, 40);
            a.dealloc(p, l);
            // The freed block of that class is the next one handed out.
            let q = a.alloc(l);
            assert_eq!(p, q);
            q.write_bytes(9, 40);
            // Growing past the cache and back keeps the contents.
            let r = a.realloc(q, l, 4000);
            assert!(!r.is_null());
            assert!(std::slice::from_raw_parts(r, 40).iter().all(|b| *b == 9));
            let big = Layout::from_size_align(4000, 8).unwrap();
            let s = a.realloc(r, big, 24);
            assert!(std::slice::from_raw_parts(s, 24).iter().all(|b| *b == 9));
            a.dealloc(s, Layout::from_size_align(24, 8).unwrap());
        }
        assert_eq!(class_of(Layout::from_size_align(513, 8).unwrap()), None);
        assert_eq!(class_of(Layout::from_size_align(16, 32).unwrap()), None);
    }
}
