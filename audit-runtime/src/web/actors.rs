//! Actors this thread saw lately, fitted to the schema and rendered once.
//!
//! A user's requests name the same actor one after another, and fitting an
//! actor to the schema and rendering its JSON was a good part of what the
//! layer cost per request. Each thread keeps the actors it fitted last in a
//! small table ([`SLOTS`] entries in sets of [`WAYS`]: an actor may sit in
//! any slot of the set its key picks, and a newcomer replaces the one of
//! the set used least recently). A request naming one of them takes the
//! fitted copy and its JSON instead of doing the work again; every
//! correction is still counted for every request, as when it was made.
//!
//! Two tables: actors by what the extractor returned
//! ([`AuditLayer::actor`](super::AuditLayer::actor)), and actors by the
//! header value they were read from
//! ([`AuditLayer::actor_from_header`](super::AuditLayer::actor_from_header)),
//! which spares the extractor itself on a hit.

use std::cell::RefCell;
use std::sync::Arc;

use ::http::header::{HeaderName, HeaderValue};

use super::service::clamp_actor;
use super::Shared;
use crate::context::ReadyActor;
use crate::model::event::Actor;

/// Entries per thread and table. A thread serving a couple of hundred
/// users in turn keeps nearly all of them. (With one slot per actor and 64
/// slots, 64 users taking turns missed on about a third of their requests:
/// in the `http_layer` bench the misses cost more than the rest of the
/// layer's start together.)
pub(crate) const SLOTS: usize = 512;
/// Slots an actor may take.
pub(crate) const WAYS: usize = 4;
/// Longest header value kept in the table (a longer one is read by the
/// extractor on every request).
pub(crate) const MAX_KEPT_VALUE: usize = 4096;

/// What [`AuditLayer::actor_from_header`](super::AuditLayer::actor_from_header) calls with a value.
pub(crate) type ReadFn = Arc<dyn Fn(&str) -> Option<Actor> + Send + Sync>;

/// The actor a header names, as [`AuditLayer::actor_from_header`](super::AuditLayer::actor_from_header) sets it up.
pub(crate) struct HeaderActor {
    pub(crate) name: HeaderName,
    pub(crate) read: ReadFn,
    /// Tells this extractor's entries from those of other layers (and of
    /// layers gone, whose memory a new extractor may take).
    pub(crate) id: u64,
}

impl HeaderActor {
    pub(crate) fn new(name: HeaderName, read: ReadFn) -> HeaderActor {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        HeaderActor {
            name,
            read,
            id: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl Clone for HeaderActor {
    fn clone(&self) -> Self {
        HeaderActor {
            name: self.name.clone(),
            read: Arc::clone(&self.read),
            id: self.id,
        }
    }
}

struct Entry<K> {
    key: K,
    /// Values the layer cut or dropped from the actor.
    layer_cuts: u64,
    /// `None` when there is no actor with a subject (the anonymous actor
    /// stands in).
    ready: Option<ReadyActor>,
    /// The hash of `key`.
    hash: u64,
    /// The table's clock when this entry was last used.
    used: u64,
}

struct Table<K> {
    slots: Vec<Option<Entry<K>>>,
    /// Counts lookups: what `Entry::used` is read against.
    clock: u64,
}

impl<K> Table<K> {
    const fn new() -> Table<K> {
        Table {
            slots: Vec::new(),
            clock: 0,
        }
    }

    /// The entry for `hash` whose key `is` accepts: its cuts and actor.
    fn get(&mut self, hash: u64, is: impl Fn(&K) -> bool) -> Option<(u64, Option<ReadyActor>)> {
        self.clock += 1;
        let now = self.clock;
        self.slots.get_mut(set(hash))?.iter_mut().find_map(|e| {
            let e = e.as_mut()?;
            if e.hash != hash || !is(&e.key) {
                return None;
            }
            e.used = now;
            Some((e.layer_cuts, e.ready.clone()))
        })
    }

    fn put(&mut self, hash: u64, key: K, layer_cuts: u64, ready: Option<ReadyActor>) {
        if self.slots.is_empty() {
            self.slots.resize_with(SLOTS, || None);
        }
        // An empty slot (used 0), else the one used least recently.
        let i = set(hash)
            .min_by_key(|&i| self.slots[i].as_ref().map_or(0, |e| e.used))
            .unwrap_or(0);
        self.slots[i] = Some(Entry {
            key,
            layer_cuts,
            ready,
            hash,
            used: self.clock,
        });
    }
}

thread_local! {
    /// By the extractor's actor, and whether it came from the extractor
    /// (the layer fits those, and counts its cuts in
    /// [`HttpStats::clamped`](super::HttpStats::clamped)) or is the
    /// layer's anonymous actor.
    static ACTORS: RefCell<Table<(Actor, bool)>> = const { RefCell::new(Table::new()) };
    /// By extractor id and header value.
    static VALUES: RefCell<Table<(u64, Box<[u8]>)>> = const { RefCell::new(Table::new()) };
}

/// A quick hash of some bytes, seeded.
fn hash(seed: u64, bytes: &[u8]) -> u64 {
    let step = |h: u64, w: u64| (h.rotate_left(5) ^ w).wrapping_mul(0x517c_c1b7_2722_0a95);
    let mut h = seed ^ bytes.len() as u64;
    let words = bytes.chunks_exact(8);
    let rest = words.remainder();
    for w in words {
        if let Some(w) = w.first_chunk::<8>() {
            h = step(h, u64::from_le_bytes(*w));
        }
    }
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = step(h, u64::from_le_bytes(w));
    }
    // A product's low bits hear only the factors' low bits: subjects that
    // differ in their last bytes ("user-1", "user-2") differed only above
    // the bits that picked the slot, and all took one slot. Mix them down.
    h ^= h >> 29;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^ (h >> 32)
}

/// The slots of the set a hash picks.
fn set(hash: u64) -> std::ops::Range<usize> {
    let first = (hash as usize % (SLOTS / WAYS)) * WAYS;
    first..first + WAYS
}

/// The request's actor, ready for its context: what the extractor returned,
/// fitted by the layer, else (none, or no subject) the anonymous actor.
/// Counts the layer's cuts in `shared`'s counters.
pub(crate) fn ready(extracted: Option<Actor>, shared: &Shared) -> ReadyActor {
    if let Some(actor) = extracted {
        if let Some(ready) = lookup(actor, true, shared) {
            return ready;
        }
    }
    anonymous(shared)
}

/// The layer's anonymous actor, ready.
fn anonymous(shared: &Shared) -> ReadyActor {
    match lookup(shared.anonymous.clone(), false, shared) {
        Some(ready) => ready,
        // Not reached: only an extracted actor can lack a subject here.
        None => ReadyActor::fit(shared.anonymous.clone()),
    }
}

/// The actor the header `from` names in a request whose value of it is
/// `value`: the extractor runs once per value and thread while the value
/// stays in this thread's table. Counts the layer's cuts in `shared`'s
/// counters on every request.
pub(crate) fn from_header(
    from: &HeaderActor,
    value: Option<&HeaderValue>,
    shared: &Shared,
) -> ReadyActor {
    let Some(value) = value else {
        return anonymous(shared);
    };
    let bytes = value.as_bytes();
    let read = || value.to_str().ok().and_then(|s| (from.read)(s));
    if bytes.len() > MAX_KEPT_VALUE {
        return ready(read(), shared);
    }
    let h = hash(from.id, bytes);
    let hit = VALUES
        .try_with(|t| {
            let mut t = t.try_borrow_mut().ok()?;
            t.get(h, |(id, v)| *id == from.id && **v == *bytes)
        })
        .ok()
        .flatten();
    let counters = &shared.counters;
    let (cuts, ready) = match hit {
        Some(found) => found,
        None => {
            let found = match read() {
                Some(actor) => fit(actor),
                None => (0, None),
            };
            let _ = VALUES.try_with(|t| {
                if let Ok(mut t) = t.try_borrow_mut() {
                    t.put(h, (from.id, Box::from(bytes)), found.0, found.1.clone());
                }
            });
            found
        }
    };
    counters.clamped.add(cuts);
    match ready {
        Some(r) => r,
        None => anonymous(shared),
    }
}

/// An extracted actor fitted by the layer (`None`: no subject) and the
/// values cut or dropped.
fn fit(actor: Actor) -> (u64, Option<ReadyActor>) {
    let (fitted, cuts) = clamp_actor(actor);
    (cuts, fitted.map(ReadyActor::fit))
}

/// `None` when an extracted actor has no subject.
fn lookup(actor: Actor, extracted: bool, shared: &Shared) -> Option<ReadyActor> {
    let counters = &shared.counters;
    let h = hash(0, actor.subject_id.as_bytes());
    let hit = ACTORS
        .try_with(|t| {
            let mut t = t.try_borrow_mut().ok()?;
            t.get(h, |(a, e)| *e == extracted && *a == actor)
        })
        .ok()
        .flatten();
    if let Some((cuts, ready)) = hit {
        counters.clamped.add(cuts);
        return ready;
    }
    let (cuts, ready) = if extracted {
        fit(actor.clone())
    } else {
        (0, Some(ReadyActor::fit(actor.clone())))
    };
    counters.clamped.add(cuts);
    let _ = ACTORS.try_with(|t| {
        if let Ok(mut t) = t.try_borrow_mut() {
            t.put(h, (actor, extracted), cuts, ready.clone());
        }
    });
    ready
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::AuditLayer;

    /// A repeated actor comes from the table (its JSON shared), and its
    /// cuts are counted on every request all the same.
    #[test]
    fn repeated_actors_are_fitted_once_and_counted_each_time() {
        let layer = AuditLayer::new();
        let shared = &layer.shared;
        let long = Actor::human("s".repeat(300)).roles(["clinician"]);
        let a = ready(Some(long.clone()), shared);
        let b = ready(Some(long), shared);
        assert_eq!(a.actor().unwrap().subject_id.chars().count(), 256);
        assert!(a.same_json(&b));
        assert_eq!(layer.stats().clamped, 2);
        // Another actor in the same slot replaces it; both stay right.
        for i in 0..(SLOTS * 3) {
            let r = ready(Some(Actor::human(format!("user-{i}"))), shared);
            assert_eq!(r.actor().unwrap().subject_id, format!("user-{i}").as_str());
        }
        // No subject: the anonymous actor, not counted as a cut twice.
        let anon = ready(Some(Actor::human("  ")), shared);
        assert_eq!(anon.actor().unwrap().subject_id, "anonymous");
        let anon = ready(None, shared);
        assert_eq!(anon.actor().unwrap().subject_id, "anonymous");
        assert_eq!(layer.stats().clamped, 2);
    }

    /// Users taking turns (as many as the bench's connections, and more)
    /// are fitted once each, not again on every turn.
    #[test]
    fn users_taking_turns_stay_in_the_table() {
        let layer = AuditLayer::new();
        let shared = &layer.shared;
        let users: Vec<Actor> = (0..128)
            .map(|i| Actor::human(format!("user-{i}")).roles(["clinician"]))
            .collect();
        let first: Vec<ReadyActor> = users
            .iter()
            .map(|u| ready(Some(u.clone()), shared))
            .collect();
        for _ in 0..3 {
            let kept = users
                .iter()
                .zip(&first)
                .filter(|(u, f)| ready(Some((*u).clone()), shared).same_json(f))
                .count();
            assert!(kept >= 126, "{kept} of 128 kept");
        }
    }

    fn header_layer(calls: &Arc<std::sync::atomic::AtomicUsize>) -> AuditLayer {
        let calls = Arc::clone(calls);
        AuditLayer::new().actor_from_header(::http::header::AUTHORIZATION, move |v| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let subject = v.strip_prefix("Bearer ")?;
            Some(Actor::human(subject).roles(["clinician"]))
        })
    }

    fn value(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    /// The extractor runs once per value and thread; each layer has its
    /// own entries; what it returned (an actor or none) is reused, and its
    /// cuts are counted on every request.
    #[test]
    fn header_values_are_read_once_per_thread() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        std::thread::spawn(|| {
            let calls = Arc::new(AtomicUsize::new(0));
            let layer = header_layer(&calls);
            let shared = &layer.shared;
            let from = shared.actor_header.as_ref().unwrap();
            for _ in 0..3 {
                for u in 0..100 {
                    let v = value(&format!("Bearer user-{u}"));
                    let r = from_header(from, Some(&v), shared);
                    assert_eq!(r.actor().unwrap().subject_id, format!("user-{u}").as_str());
                }
            }
            assert_eq!(calls.load(Ordering::Relaxed), 100);

            // Another layer, same values: its own extractor, its own entries.
            let calls2 = Arc::new(AtomicUsize::new(0));
            let other = header_layer(&calls2);
            let from2 = other.shared.actor_header.as_ref().unwrap();
            from_header(from2, Some(&value("Bearer user-1")), &other.shared);
            from_header(from2, Some(&value("Bearer user-1")), &other.shared);
            assert_eq!(calls2.load(Ordering::Relaxed), 1);

            // No actor (the extractor says so, or no header, or a value
            // that is not text): the anonymous actor; reused as well.
            for v in [Some(value("Basic abc")), Some(value("Basic abc")), None] {
                let r = from_header(from, v.as_ref(), shared);
                assert_eq!(r.actor().unwrap().subject_id, "anonymous");
            }
            assert_eq!(calls.load(Ordering::Relaxed), 101);
            let opaque = HeaderValue::from_bytes(b"Bearer \xff").unwrap();
            let r = from_header(from, Some(&opaque), shared);
            assert_eq!(r.actor().unwrap().subject_id, "anonymous");
            assert_eq!(calls.load(Ordering::Relaxed), 101);

            // Cuts counted per request, also when reused.
            let long = value(&format!("Bearer {}", "s".repeat(300)));
            for _ in 0..3 {
                let r = from_header(from, Some(&long), shared);
                assert_eq!(r.actor().unwrap().subject_id.chars().count(), 256);
            }
            assert_eq!(layer.stats().clamped, 3);
            assert_eq!(calls.load(Ordering::Relaxed), 102);

            // Values too long to keep are read every time.
            let huge = value(&format!("Bearer {}", "h".repeat(MAX_KEPT_VALUE)));
            from_header(from, Some(&huge), shared);
            from_header(from, Some(&huge), shared);
            assert_eq!(calls.load(Ordering::Relaxed), 104);
        })
        .join()
        .unwrap();
    }
}
