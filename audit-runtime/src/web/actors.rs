//! Actors this thread saw lately, fitted to the schema and rendered once.
//!
//! A user's requests name the same actor one after another, and fitting an
//! actor to the schema and rendering its JSON was a good part of what the
//! layer cost per request. Each thread keeps the actors it fitted last in a
//! small table ([`SLOTS`] entries, picked by subject; a newer actor
//! replaces the older one in its slot). A request naming one of them takes
//! the fitted copy and its JSON instead of doing the work again; every
//! correction is still counted for every request, as when it was made.

use std::cell::RefCell;

use super::service::clamp_actor;
use super::Shared;
use crate::context::ReadyActor;
use crate::model::event::Actor;

/// Entries per thread.
pub(crate) const SLOTS: usize = 64;

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
}

thread_local! {
    static TABLE: RefCell<Vec<Option<Entry>>> = const { RefCell::new(Vec::new()) };
}

/// A quick hash of a subject id, to pick its slot.
fn slot(subject: &str) -> usize {
    let mut h = subject.len() as u64;
    for chunk in subject.as_bytes().chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h = (h.rotate_left(5) ^ u64::from_ne_bytes(w)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    (h >> 32) as usize % SLOTS
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
    let i = slot(&actor.subject_id);
    let hit = TABLE
        .try_with(|t| {
            let t = t.try_borrow().ok()?;
            let e = t.get(i)?.as_ref()?;
            (e.extracted == extracted && e.key == actor).then(|| (e.layer_cuts, e.ready.clone()))
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
            if t.is_empty() {
                t.resize_with(SLOTS, || None);
            }
            t[i] = Some(Entry {
                key: actor,
                extracted,
                layer_cuts: cuts,
                ready: ready.clone(),
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
}
