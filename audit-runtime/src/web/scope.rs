//! The request scope: audited calls made while a request is handled wait in
//! it until the response status is known, then leave with that status.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::call::{CallRecord, RecordRef};
use crate::context::{AuditContext, ContextId};
use crate::dispatch::Dispatch;

use super::Counters;

/// One HTTP request's held calls.
///
/// Held records point at the request's context, which points back here: the
/// cycle lasts until [`RequestScope::finish`] takes them out, which the
/// layer's future does when the response head is known, when the inner
/// service fails, or when the future is dropped.
pub(crate) struct RequestScope {
    state: Mutex<State>,
    limit: usize,
    counters: Arc<Counters>,
}

struct State {
    held: Vec<(Dispatch, CallRecord)>,
    /// Set once the request ended: its status, the request's context and
    /// that context as finished.
    done: Option<Arc<Done>>,
}

/// How a request ended, for the calls it held and any made later.
pub(crate) struct Done {
    status: Option<u16>,
    base: ContextId,
    /// The request's context as finished, made on first use.
    finished: OnceLock<AuditContext>,
}

impl Done {
    /// `ctx` (the request's context or a copy a handler made of it) as the
    /// request ended: with the status, without the scope.
    pub(crate) fn finished_for(&self, ctx: &AuditContext) -> AuditContext {
        if self.base.is(ctx) {
            return self
                .finished
                .get_or_init(|| ctx.finished(self.status))
                .clone();
        }
        ctx.finished(self.status)
    }
}

impl fmt::Debug for RequestScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestScope")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl RequestScope {
    pub(crate) fn new(limit: usize, counters: Arc<Counters>) -> RequestScope {
        RequestScope {
            state: Mutex::new(State {
                held: Vec::new(),
                done: None,
            }),
            limit,
            counters,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing user-supplied runs under this lock, and every update is
        // one push or one swap: a poisoned state is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a finished call made during the request: held until the
    /// response status is known; past the limit, emitted now without a
    /// status (counted); after the request ended, emitted now with its
    /// final status.
    pub(crate) fn hold(&self, dispatch: Dispatch, mut record: CallRecord) {
        let mut st = self.lock();
        match &st.done {
            None if st.held.len() < self.limit => {
                st.held.push((dispatch, record));
                drop(st);
                self.counters.add(&self.counters.held);
            }
            None => {
                drop(st);
                self.counters.add(&self.counters.emitted_without_status);
                emit(&dispatch, record);
            }
            Some(done) => {
                let done = Arc::clone(done);
                drop(st);
                if let Some(c) = record.context.take() {
                    record.context = Some(done.finished_for(&c));
                }
                emit(&dispatch, record);
            }
        }
    }

    /// Ends the request with `status`: the held calls are emitted with the
    /// request's context `base` as finished (see [`Done::finished_for`]),
    /// and any call made later is emitted at once the same way. The first
    /// call decides; a later one returns what it decided.
    pub(crate) fn finish(&self, status: Option<u16>, base: &AuditContext) -> Arc<Done> {
        let (done, held) = {
            let mut st = self.lock();
            if let Some(d) = &st.done {
                return Arc::clone(d);
            }
            let done = Arc::new(Done {
                status,
                base: base.id(),
                finished: OnceLock::new(),
            });
            st.done = Some(Arc::clone(&done));
            (done, std::mem::take(&mut st.held))
        };
        // Copies of the request's context made by the handler (another
        // actor, say) get their own finished copy, once each; the records
        // keep every one of them alive meanwhile, so addresses identify.
        let mut others: Vec<(usize, AuditContext)> = Vec::new();
        for (dispatch, mut record) in held {
            if let Some(c) = record.context.take() {
                let f = if done.base.is(&c) {
                    done.finished_for(&c)
                } else {
                    match others.iter().find(|(a, _)| *a == c.addr()) {
                        Some((_, f)) => f.clone(),
                        None => {
                            let f = done.finished_for(&c);
                            others.push((c.addr(), f.clone()));
                            f
                        }
                    }
                };
                record.context = Some(f);
            }
            emit(&dispatch, record);
        }
        done
    }
}

fn emit(dispatch: &Dispatch, record: CallRecord) {
    RecordRef::pass(record, |r| dispatch.emit_record(r));
}
