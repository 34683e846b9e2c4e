//! Actors this thread saw lately, fitted to the schema and rendered once.
//!
//! A user's requests name the same actor one after another, and fitting an
//! actor to the schema and rendering its JSON was a good part of what the
//! layer cost per request. Each thread keeps the actors it fitted last in a
//! small table ([`SLOTS`] entries in sets of [`WAYS`]: an actor may sit in
//! any slot of the set its subject picks, and a newcomer replaces the one
//! of the set used least recently). A request naming one of them takes
//! the fitted copy and its JSON instead of doing the work again; every
//! correction is still counted for every request, as when it was made.

use std::cell::RefCell;

use super::service::clamp_actor;
use super::Shared;
use crate::context::ReadyActor;
use crate::model::event::Actor;

/// Entries per thread. A thread serving a couple of hundred users in turn
/// keeps nearly all of them. (With one slot per actor and 64 slots, 64
/// users taking turns missed on about a third of their requests: in the
/// `http_layer` bench the misses cost more than the rest of the layer's
/// start together.)
pub(crate) const SLOTS: usize = 512;
/// Slots an actor may take.
pub(crate) const WAYS: usize = 4;

struct Entry {
    /// What the extractor returned (or the layer's anonymous actor).
    key: Actor,
    /// Whether `key` came from the extractor (the layer fits those, and
    /// counts its cuts in [`HttpStats::clamped`](super::HttpStats::clamped)).
    extracted: bool,
    /// Values the layer cut or dropped from `key`.
    layer_cuts: u64,
    /// `None` when the extractor's actor has no subject (the anonymous
    /// actor stands in).
    ready: Option<ReadyActor>,
    /// The hash of `key`'s subject.
    hash: u64,
    /// The table's clock when this entry was last used.
    used: u64,
}

#[derive(Default)]
struct Table {
    slots: Vec<Option<Entry>>,
    /// Counts lookups: what `Entry::used` is read against.
    clock: u64,
}

thread_local! {
    static TABLE: RefCell<Table> = RefCell::new(Table::default());
}

/// A quick hash of a subject id.
fn hash(subject: &str) -> u64 {
    let mut h = subject.len() as u64;
    for chunk in subject.as_bytes().chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h.rotate_left(5) ^ u64::from_ne_bytes(w)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    // A product's low bits hear only the factors' low bits: subjects that
    // differ in their last bytes ("user-1", "user-2") differed only above
    // the bits that picked the slot, and all took one slot. Mix them down.
    h ^= h >> 29;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^ (h >> 32)
}

/// The slots of the set an actor's subject hash picks.
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
    match lookup(shared.anonymous.clone(), false, shared) {
        Some(ready) => ready,
        // Not reached: only an extracted actor can lack a subject here.
        None => ReadyActor::fit(shared.anonymous.clone()),
    }
}

/// `None` when an extracted actor has no subject.
fn lookup(actor: Actor, extracted: bool, shared: &Shared) -> Option<ReadyActor> {
    let counters = &shared.counters;
    let h = hash(&actor.subject_id);
    let hit = TABLE
        .try_with(|t| {
            let mut t = t.try_borrow_mut().ok()?;
            t.clock += 1;
            let now = t.clock;
            t.slots.get_mut(set(h))?.iter_mut().find_map(|e| {
                let e = e.as_mut()?;
                if e.hash != h || e.extracted != extracted || e.key != actor {
                    return None;
                }
                e.used = now;
                Some((e.layer_cuts, e.ready.clone()))
            })
        })
        .ok()
        .flatten();
    if let Some((cuts, ready)) = hit {
        counters.clamped.add(cuts);
        return ready;
    }
    let (fitted, cuts) = if extracted {
        clamp_actor(actor.clone())
    } else {
        (Some(actor.clone()), 0)
    };
    counters.clamped.add(cuts);
    let ready = fitted.map(ReadyActor::fit);
    let _ = TABLE.try_with(|t| {
        if let Ok(mut t) = t.try_borrow_mut() {
            if t.slots.is_empty() {
                t.slots.resize_with(SLOTS, || None);
            }
            // An empty slot (used 0), else the one used least recently.
            let i = set(h)
                .min_by_key(|&i| t.slots[i].as_ref().map_or(0, |e| e.used))
                .unwrap_or(0);
            let used = t.clock;
            t.slots[i] = Some(Entry {
                key: actor,
                extracted,
                layer_cuts: cuts,
                ready: ready.clone(),
                hash: h,
                used,
            });
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
}
