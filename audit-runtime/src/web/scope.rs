//! The request scope: audited calls made while a request is handled wait in
//! it until the response status is known, then leave with that status.

use std::fmt;
use std::sync::{Mutex, MutexGuard};

use crate::context::{AuditContext, ContextId};
use crate::dispatch::Dispatch;
use crate::record::{CallRecord, RecordRef};

/// Where a held call goes: the global dispatcher (no reference count to
/// take) or a scoped one.
pub(crate) enum Target {
    Global(&'static Dispatch),
    Local(Dispatch),
}

impl Target {
    fn emit(&self, record: CallRecord) {
        let d = match self {
            Target::Global(g) => *g,
            Target::Local(l) => l,
        };
        RecordRef::pass(record, |r| d.emit_record(r));
    }
}

/// One HTTP request's held calls.
///
/// Held records point at the request's context, which points back here: the
/// cycle lasts until [`RequestScope::finish`] takes them out, which the
/// layer's future does when the response head is known, when the inner
/// service fails, or when the future is dropped.
pub(crate) struct RequestScope {
    state: Mutex<State>,
    limit: usize,
}

#[derive(Default)]
struct State {
    /// The first held call, in place (most requests make one or two: no
    /// vector to allocate for them).
    first: Option<(Target, CallRecord)>,
    /// The others, in order.
    held: Vec<(Target, CallRecord)>,
    /// Calls emitted at once because `limit` were held.
    overflow: u64,
    /// Set when the request ended, with its status.
    done: Option<Option<u16>>,
    /// Copies without the scope of contexts whose calls were written
    /// before the request ended, by context (weakly, so no other context
    /// can take an address while it is a key).
    detached: Vec<(ContextId, AuditContext)>,
}

impl fmt::Debug for RequestScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestScope")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// What [`RequestScope::finish`] did, for the layer's counters.
pub(crate) struct Finished {
    pub(crate) held: u64,
    pub(crate) overflow: u64,
}

impl RequestScope {
    pub(crate) fn new(limit: usize) -> RequestScope {
        RequestScope {
            state: Mutex::new(State::default()),
            limit,
        }
    }

    /// Empty again, for another request (a context made over).
    pub(crate) fn reset(&mut self, limit: usize) {
        *self.state.get_mut().unwrap_or_else(|p| p.into_inner()) = State::default();
        self.limit = limit;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing user-supplied runs under this lock, and every update is
        // one push, one count or one swap: a poisoned state is consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a finished call made during the request: held until the
    /// response status is known; past the limit, emitted now without a
    /// status (counted); after the request ended, emitted now with its
    /// final status.
    pub(crate) fn hold(&self, target: Target, mut record: CallRecord) {
        let mut st = self.lock();
        match st.done {
            None if st.first.is_none() && self.limit > 0 => {
                st.first = Some((target, record));
            }
            None if st.held.len() + 1 < self.limit => {
                st.held.push((target, record));
            }
            None => {
                st.overflow += 1;
                // Written before the request's context has its status: on
                // a copy, so that the context's rendered JSON (cached once)
                // is only ever made with the status.
                if let Some(c) = record.context.take() {
                    let copy = match st.detached.iter().find(|(id, _)| id.is(&c)) {
                        Some((_, d)) => d.clone(),
                        None => {
                            let d = c.detached(None);
                            st.detached.push((c.id(), d.clone()));
                            d
                        }
                    };
                    record.context = Some(copy);
                }
                drop(st);
                target.emit(record);
            }
            Some(status) => {
                drop(st);
                if let Some(c) = record.context.take() {
                    record.context = Some(finished(c, status));
                }
                target.emit(record);
            }
        }
    }

    /// Ends the request with `status` (already set on its context `base`):
    /// the held calls are emitted, and any call made later is emitted at
    /// once. The first call decides; a later one does nothing.
    pub(crate) fn finish(&self, status: Option<u16>) -> Finished {
        let (first, held, overflow) = {
            let mut st = self.lock();
            if st.done.is_some() {
                return Finished {
                    held: 0,
                    overflow: 0,
                };
            }
            st.done = Some(status);
            st.detached.clear();
            (st.first.take(), std::mem::take(&mut st.held), st.overflow)
        };
        // The usual request: one call, nothing to share copies among.
        if held.is_empty() {
            let Some((target, mut record)) = first else {
                return Finished { held: 0, overflow };
            };
            if let Some(c) = record.context.take() {
                record.context = Some(finished(c, status));
            }
            target.emit(record);
            return Finished { held: 1, overflow };
        }
        let n = first.is_some() as u64 + held.len() as u64;
        // Copies of the request's context made by the handler (another
        // actor, say) get a finished copy, once each; the records keep
        // every one of them alive meanwhile, so addresses identify.
        let mut copies: Vec<(usize, AuditContext)> = Vec::new();
        for (target, mut record) in first.into_iter().chain(held) {
            if let Some(c) = record.context.take() {
                let f = if c.status() == status.filter(|s| (100..=599).contains(s)) {
                    c
                } else {
                    match copies.iter().find(|(a, _)| *a == c.addr()) {
                        Some((_, f)) => f.clone(),
                        None => {
                            let f = c.detached(status);
                            copies.push((c.addr(), f.clone()));
                            f
                        }
                    }
                };
                record.context = Some(f);
            }
            target.emit(record);
        }
        Finished { held: n, overflow }
    }
}

/// `ctx` (the request's context, or a copy a handler made of it) as the
/// request ended.
fn finished(ctx: AuditContext, status: Option<u16>) -> AuditContext {
    if ctx.status() == status.filter(|s| (100..=599).contains(s)) {
        ctx
    } else {
        ctx.detached(status)
    }
}
