//! The wall clock at millisecond precision, read without a clock call on
//! most audited calls.
//!
//! An audited call needs the current millisecond, and within one millisecond
//! a busy service makes thousands of calls. Reading the system clock costs
//! ~28 ns on the bench machine (a virtual machine), the processor's time-stamp
//! counter ~9 ns. So each thread reads the system clock once, works out from
//! the counter's rate how many counter ticks are left until the next
//! millisecond begins, and until then answers from the counter alone: the
//! millisecond it returns is the one the system clock would have given.
//!
//! The shortcut is taken only where it is sound: x86-64 Linux whose processor
//! reports an invariant counter (constant rate, running in every power state)
//! and whose kernel itself keeps time with it (`tsc` clocksource, meaning the
//! kernel found it synchronized across cores). The rate is measured against
//! the system clock over at least 2 ms before it is trusted, and the
//! prediction stops 5% short of the next millisecond: a counter read after
//! that, or before the last system-clock read (a counter going backwards),
//! goes to the system clock again. Elsewhere every call reads the system
//! clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch from the system clock, truncated toward
/// the past.
pub(crate) fn system_millis() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64) * 1000 + i64::from(d.subsec_millis()),
        Err(e) => {
            let d = e.duration();
            let ms = (d.as_secs() as i64) * 1000
                + i64::from(d.subsec_millis())
                + i64::from(d.subsec_nanos() % 1_000_000 != 0);
            -ms
        }
    }
}

/// The current wall-clock millisecond (see the module docs).
#[inline]
pub(crate) fn now_millis() -> i64 {
    #[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
    if let Some(ms) = tsc::now_millis() {
        return ms;
    }
    system_millis()
}

#[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
mod tsc {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
    use std::sync::OnceLock;
    use std::time::{SystemTime, UNIX_EPOCH};

    /// Counter ticks per millisecond, once measured; 0 before.
    static TICKS_PER_MS: AtomicU64 = AtomicU64::new(0);
    /// The first (counter, wall-clock ns) pair, the base of the measurement.
    static FIRST: OnceLock<(u64, i128)> = OnceLock::new();
    /// 0 unknown, 1 usable, 2 not usable.
    static USABLE: AtomicU8 = AtomicU8::new(0);

    /// Reads from the counter alone (for tests).
    #[cfg(test)]
    pub(super) static FAST_READS: AtomicU64 = AtomicU64::new(0);

    /// Stop this fraction (in 1/1000) short of the predicted millisecond end.
    const MARGIN_PER_MILLE: u64 = 50;
    /// Measure the rate over at least this long (2 ms: reads bracket the
    /// clock within a few µs at worst, an error of ~0.15% against the 5%
    /// margin).
    const CALIBRATION_NS: i128 = 2_000_000;
    /// A pair whose two counter reads are further apart than this was
    /// interrupted: not used for measuring.
    const MAX_PAIR_TICKS: u64 = 10_000;

    #[derive(Clone, Copy)]
    struct Window {
        /// Counter reads in `from..until` are in millisecond `ms`.
        from: u64,
        until: u64,
        ms: i64,
    }

    thread_local! {
        static WINDOW: Cell<Window> = const { Cell::new(Window { from: 1, until: 0, ms: 0 }) };
    }

    #[inline(always)]
    fn counter() -> u64 {
        // SAFETY: RDTSC only reads the counter; x86-64 always has it.
        unsafe { std::arch::x86_64::_rdtsc() }
    }

    pub(super) fn usable() -> bool {
        match USABLE.load(Ordering::Relaxed) {
            1 => true,
            2 => false,
            _ => {
                let ok = invariant_counter() && kernel_uses_counter();
                USABLE.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
                ok
            }
        }
    }

    /// CPUID 0x8000_0007, EDX bit 8: the counter runs at a constant rate in
    /// every state.
    fn invariant_counter() -> bool {
        #[allow(unused_unsafe)]
        // SAFETY: CPUID is available on every x86-64 processor.
        let max = unsafe { std::arch::x86_64::__cpuid(0x8000_0000) }.eax;
        if max < 0x8000_0007 {
            return false;
        }
        #[allow(unused_unsafe)]
        // SAFETY: as above; the leaf exists (checked).
        let edx = unsafe { std::arch::x86_64::__cpuid(0x8000_0007) }.edx;
        edx & (1 << 8) != 0
    }

    fn kernel_uses_counter() -> bool {
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .is_ok_and(|s| s.trim() == "tsc")
    }

    /// A counter read, a wall-clock read, a counter read.
    fn pair() -> (u64, i128, u64) {
        let before = counter();
        let wall = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        };
        let after = counter();
        (before, wall, after)
    }

    /// Updates the rate from a fresh pair once enough time has passed.
    fn measure(before: u64, wall: i128, after: u64) -> u64 {
        let known = TICKS_PER_MS.load(Ordering::Relaxed);
        if known != 0 || after.wrapping_sub(before) > MAX_PAIR_TICKS {
            return known;
        }
        let &(t0, w0) = FIRST.get_or_init(|| (before, wall));
        let dw = wall - w0;
        if dw < CALIBRATION_NS || before <= t0 {
            return 0;
        }
        let rate = ((before - t0) as i128 * 1_000_000 / dw) as u64;
        TICKS_PER_MS.store(rate, Ordering::Relaxed);
        rate
    }

    #[inline]
    pub(super) fn now_millis() -> Option<i64> {
        if !usable() {
            return None;
        }
        let now = counter();
        WINDOW
            .try_with(|w| {
                let win = w.get();
                if now >= win.from && now < win.until {
                    #[cfg(test)]
                    FAST_READS.fetch_add(1, Ordering::Relaxed);
                    return win.ms;
                }
                let (before, wall, after) = pair();
                let ms = wall.div_euclid(1_000_000) as i64;
                let ticks_per_ms = measure(before, wall, after);
                // Ticks until the next millisecond begins, counted from the
                // read before the clock call (so never late), less the margin.
                let left_ns = 1_000_000 - wall.rem_euclid(1_000_000) as u64;
                let left = (u128::from(left_ns) * u128::from(ticks_per_ms) / 1_000_000) as u64;
                let left = left - left * MARGIN_PER_MILLE / 1000;
                w.set(Window {
                    from: after,
                    until: before.saturating_add(left),
                    ms,
                });
                ms
            })
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reading lies between two system-clock readings taken around it,
    /// on several threads at once, for long enough to cross many
    /// milliseconds (and the rate measurement).
    #[test]
    fn agrees_with_the_system_clock() {
        let threads: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(|| {
                    let start = system_millis();
                    let mut n = 0u64;
                    while system_millis() - start < 60 || n < 200_000 {
                        let before = system_millis();
                        let t = now_millis();
                        let after = system_millis();
                        assert!(
                            before <= t && t <= after,
                            "{before} <= {t} <= {after} failed"
                        );
                        n += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        #[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
        if tsc::usable() {
            assert!(
                tsc::FAST_READS.load(std::sync::atomic::Ordering::Relaxed) > 0,
                "the counter path was never taken"
            );
        }
    }

    #[test]
    fn system_millis_truncates_toward_the_past() {
        let a = system_millis();
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!(a <= d.as_millis() as i64);
    }
}
