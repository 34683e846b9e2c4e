//! Cache-line placement and a prefetch hint, for data two threads touch.
//!
//! Callers and a sink's worker run on different cores; every cache line one
//! of them writes and the other reads crosses between the cores. These keep
//! such lines few: shared state written per call sits on lines of its own,
//! and the caller asks for the queue's lines ahead of its stores.

/// A hint only: it changes nothing the program can observe, and on other
/// architectures it compiles to nothing.
///
/// Asks the processor to fetch the memory of `*slot` for writing now, in the
/// background, so a later store there does not wait for another core to give
/// the lines up.
#[inline(always)]
pub(crate) fn for_write<T>(slot: *mut T) {
    // Not under Miri, which does not run inline assembly.
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        // Every line the value touches: from the one holding its first byte
        // to the one holding its last (a value not aligned to a line spans
        // one more line than its size suggests).
        let start = slot as usize & !63;
        let end = slot as usize + std::mem::size_of::<T>();
        let mut line = start;
        while line < end {
            // SAFETY: PREFETCHW is a hint: it changes no register or memory
            // the program sees and never faults (processors without it run
            // it as a no-op). The address is only computed, never read.
            unsafe {
                std::arch::asm!(
                    "prefetchw [{p}]",
                    p = in(reg) line,
                    options(nostack, preserves_flags, readonly)
                );
            }
            line += 64;
        }
    }
    #[cfg(any(not(target_arch = "x86_64"), miri))]
    let _ = slot;
}

/// Aligns its content to its own cache lines (two: processors fetch adjacent
/// lines in pairs), so no unrelated data written by another thread shares
/// them.
#[repr(align(128))]
#[derive(Default)]
pub(crate) struct CacheLine<T>(pub(crate) T);

impl<T> std::ops::Deref for CacheLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
