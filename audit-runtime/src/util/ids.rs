//! Fast UUIDv4 generation: a per-thread xoshiro256++ generator seeded once
//! from the operating system, so no system call per event id.
//!
//! A `fork()` copies the generator's state into the child, which would then
//! draw the parent's ids (and a store keyed by event id would drop one
//! side's events). A handler registered with `pthread_atfork` counts forks
//! in the child; a thread whose state was seeded before the last fork seeds
//! anew.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

/// A thread's generator: its state, and the fork count it was seeded under.
struct Generator {
    state: Cell<[u64; 4]>,
    forks: Cell<u64>,
}

thread_local! {
    static STATE: Generator = const {
        Generator {
            state: Cell::new([0; 4]),
            forks: Cell::new(0),
        }
    };
}

/// Forks this process came through (counted in the child).
static FORKS: AtomicU64 = AtomicU64::new(0);

#[cfg(all(unix, not(miri)))]
extern "C" fn forked_child() {
    // Async-signal-safe: one atomic add.
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Registers the fork handler, once per process.
fn watch_forks() {
    // Miri has no `fork`, and no `pthread_atfork` to watch for one.
    #[cfg(all(unix, not(miri)))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: `forked_child` is an `extern "C" fn()` that only adds
            // to an atomic, which is allowed in a child after fork.
            unsafe {
                libc::pthread_atfork(None, None, Some(forked_child));
            }
        });
    }
}

fn seed() -> [u64; 4] {
    // Two OS-random v4 UUIDs give 244 random bits; splitmix spreads them.
    let a = Uuid::new_v4().as_u128();
    let b = Uuid::new_v4().as_u128();
    let mut x = (a as u64) ^ ((b >> 64) as u64).rotate_left(17);
    let mut out = [0u64; 4];
    for (i, o) in out.iter_mut().enumerate() {
        x = x.wrapping_add(
            0x9E37_79B9_7F4A_7C15
                ^ ((a >> (i * 16)) as u64)
                ^ (b as u64).rotate_left(i as u32 * 13),
        );
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        *o = z ^ (z >> 31);
    }
    if out == [0; 4] {
        out[0] = 1;
    }
    out
}

fn next(s: &mut [u64; 4]) -> u64 {
    let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
    let t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s[3].rotate_left(45);
    result
}

/// A random (version 4) UUID from the per-thread generator.
pub fn fast_v4() -> Uuid {
    STATE.with(|g| {
        let mut s = g.state.get();
        let forks = FORKS.load(Ordering::Relaxed);
        if s == [0; 4] || g.forks.get() != forks {
            watch_forks();
            s = seed();
            g.forks.set(forks);
        }
        let hi = next(&mut s);
        let lo = next(&mut s);
        g.state.set(s);
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&hi.to_le_bytes());
        bytes[8..].copy_from_slice(&lo.to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_v4_and_distinct_across_threads() {
        const PER_THREAD: usize = if cfg!(miri) { 100 } else { 10_000 };
        let mut all = HashSet::new();
        let handles: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..PER_THREAD).map(|_| fast_v4()).collect::<Vec<_>>()))
            .collect();
        for h in handles {
            for id in h.join().unwrap() {
                assert_eq!(id.get_version_num(), 4);
                assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
                assert!(all.insert(id));
            }
        }
    }
}
