//! A cache prefetch hint for the hand-over of events between threads.
//!
//! A hint only: it changes nothing the program can observe, and on other
//! architectures it compiles to nothing.

/// Asks the processor to fetch the memory of `*slot` for writing now, in the
/// background, so a later store there does not wait for another core to give
/// the lines up.
#[inline(always)]
pub(crate) fn for_write<T>(slot: *mut T) {
    #[cfg(target_arch = "x86_64")]
    {
        let base = slot.cast::<u8>();
        let mut off = 0;
        while off < std::mem::size_of::<T>() {
            // SAFETY: PREFETCHW is a hint: it changes no register or memory
            // the program sees and never faults (processors without it run
            // it as a no-op). The address is only computed, never read.
            unsafe {
                std::arch::asm!(
                    "prefetchw [{p}]",
                    p = in(reg) base.wrapping_add(off),
                    options(nostack, preserves_flags, readonly)
                );
            }
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slot;
}
