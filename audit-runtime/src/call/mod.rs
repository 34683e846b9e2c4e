//! The call guard behind `#[audited]`: captures a call, classifies how it
//! ended, and emits exactly one event, also on panic and cancellation.
//!
//! Generated code uses this through `phi_audit::__private`; it is public so
//! that the expansion can name it, not as an API to program against.

mod outcome;
mod panic;

pub use outcome::{
    short_type_name, Probe, UnfollowedFuture, ViaAnyError, ViaAuditError, ViaDisplay, ViaFuture,
    ViaValue,
};
pub use panic::flush_on_panic;

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context as TaskContext, Poll};

use crate::config::ErrorMessages;
use crate::context::AuditContext;
use crate::dispatch::{self, Dispatch};
use crate::model::event::{Actor, Outcome};
use crate::model::metadata::{MetaValue, Metadata};
use crate::model::phi::PseudonymSource;
use crate::record::{CallRecord, CallSite, ConfigRef, RecordRef};
use crate::time::timestamp::Timestamp;
use crate::util::text::Text;

enum DispatchRef {
    None,
    Global(&'static Dispatch),
    Local(Dispatch),
}

impl DispatchRef {
    fn current() -> DispatchRef {
        if let Some(d) = dispatch::local() {
            return DispatchRef::Local(d);
        }
        match dispatch::global() {
            Some(g) => DispatchRef::Global(g),
            None => DispatchRef::None,
        }
    }

    fn get(&self) -> Option<&Dispatch> {
        match self {
            DispatchRef::None => None,
            DispatchRef::Global(g) => Some(g),
            DispatchRef::Local(l) => Some(l),
        }
    }
}

thread_local! {
    /// The frame of the innermost audited call running on this thread
    /// (null outside one): where `record!` adds, and what a panic under
    /// `panic = "abort"` finishes. Installed by [`Call::run`] and
    /// [`Instrumented`]'s `poll` for exactly as long as they borrow the call.
    static FRAME: Cell<*const Frame> = const { Cell::new(std::ptr::null()) };
}

/// One audited call in progress. Dropping it unfinished records a panic (or,
/// for an async call, a cancellation).
pub struct Call {
    site: &'static CallSite,
    dispatch: DispatchRef,
    context: Option<AuditContext>,
    started: Timestamp,
    resource_id: Option<Text>,
    patient_id: Option<Text>,
    actor: Option<Actor>,
    metadata: Metadata,
    is_async: bool,
    finished: bool,
    /// Made by [`Call::defer`] and not yet resumed: dropping it records
    /// nothing (as an `async fn` never polled), unless a panic drops it.
    deferred: bool,
    /// `pseudonym(..)` values left out because no dispatcher was installed
    /// when a deferred call evaluated them: counted when it resumes under one.
    missed_pseudonyms: AtomicU8,
}

impl Call {
    /// Starts a synchronous call.
    #[inline]
    pub fn start(site: &'static CallSite) -> Call {
        Call::begin(site, false)
    }

    /// Starts an async call: dropping it before [`Call::finish`] records
    /// FAILURE `Cancelled`.
    #[inline]
    pub fn start_async(site: &'static CallSite) -> Call {
        Call::begin(site, true)
    }

    /// Starts a call whose function returns a future: the attribute's
    /// values are evaluated now, but the call begins (dispatcher, context,
    /// timestamp) when [`Call::resume`] runs at the returned future's first
    /// poll, as an `async fn`'s body would. Dropped before that: no event,
    /// unless a panic drops it (FAILURE `Panic`).
    #[inline]
    pub fn defer(site: &'static CallSite) -> Call {
        let mut call = Call::begin(site, true);
        call.deferred = true;
        call
    }

    /// Begins a deferred call (see [`Call::defer`]) where its future is
    /// first polled: the dispatcher, the context and the start time are
    /// taken here.
    pub fn resume(&mut self) {
        if !self.deferred {
            return;
        }
        self.deferred = false;
        let missed = self.missed_pseudonyms.swap(0, Ordering::Relaxed);
        self.dispatch = DispatchRef::current();
        let Some(d) = self.dispatch.get() else {
            self.context = None;
            return;
        };
        self.started = d.config().now();
        for _ in 0..missed {
            d.count_unkeyed_pseudonym();
        }
        self.context = AuditContext::current_for_call();
    }

    fn begin(site: &'static CallSite, is_async: bool) -> Call {
        let dispatch = DispatchRef::current();
        let started = match dispatch.get() {
            Some(d) => d.config().now(),
            None => Timestamp::from_unix_millis(0),
        };
        Call {
            site,
            context: if dispatch.get().is_some() {
                AuditContext::current_for_call()
            } else {
                None
            },
            dispatch,
            started,
            resource_id: None,
            patient_id: None,
            actor: None,
            metadata: Metadata::new(),
            is_async,
            finished: false,
            deferred: false,
            missed_pseudonyms: AtomicU8::new(0),
        }
    }

    /// Sets `resource.id` (fitted to the schema: see [`Call::fit_id`]).
    #[inline]
    pub fn set_resource_id(&mut self, id: Option<Text>) {
        self.resource_id = self.fit_id(id);
    }

    /// Sets `resource.patient_id` (fitted to the schema).
    #[inline]
    pub fn set_patient_id(&mut self, id: Option<Text>) {
        self.patient_id = self.fit_id(id);
    }

    /// An identifier as the schema takes it: 1 to 256 characters, none of
    /// them a control or bidirectional-formatting character. Empty ones are
    /// left out, long ones cut, bad characters replaced, each counted. A
    /// short printable ASCII id is settled by a few word operations.
    #[inline(always)]
    fn fit_id(&self, id: Option<Text>) -> Option<Text> {
        match id {
            Some(t) if !crate::model::clamp::fits(&t, 1, crate::model::clamp::ID) => {
                self.refit_id(t)
            }
            other => other,
        }
    }

    #[cold]
    #[inline(never)]
    fn refit_id(&self, id: Text) -> Option<Text> {
        let mut fixes = crate::model::clamp::Fixes::default();
        let id = crate::model::clamp::id(Some(id), &mut fixes);
        self.count(fixes);
        id
    }

    fn count(&self, fixes: crate::model::clamp::Fixes) {
        if let Some(d) = self.dispatch.get() {
            d.count_fixes(fixes);
        }
    }

    /// Sets the actor (overrides the context's), fitted to the schema; an
    /// actor with an empty id gives way to the context's (counted).
    #[inline]
    pub fn set_actor(&mut self, actor: Option<Actor>) {
        if let Some(a) = actor {
            let mut fixes = crate::model::clamp::Fixes::default();
            if let Some(a) = crate::model::clamp::actor(a, &mut fixes) {
                self.actor = Some(a);
            }
            if !fixes.is_none() {
                self.count(fixes);
            }
        }
    }

    /// Adds a metadata entry.
    #[inline]
    pub fn set_meta(&mut self, key: &'static str, value: MetaValue) {
        self.metadata.insert_value(Text::from_static(key), value);
    }

    /// The keyed pseudonym of `value`, or `None` (the field is left out and
    /// counted) when the config has no pseudonym key.
    pub fn pseudonym<T: PseudonymSource + ?Sized>(&self, value: &T) -> Option<Text> {
        let Some(d) = self.dispatch.get() else {
            if self.deferred {
                let _ = self.missed_pseudonyms.fetch_update(
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                    |n| n.checked_add(1),
                );
            }
            return None;
        };
        match d.config().pseudonym_key() {
            Some(k) => Some(k.pseudonym(value)),
            None => {
                d.count_unkeyed_pseudonym();
                None
            }
        }
    }

    /// The same pseudonym as a metadata value (`null` without a key).
    pub fn pseudonym_meta<T: PseudonymSource + ?Sized>(&self, value: &T) -> MetaValue {
        match self.pseudonym(value) {
            Some(t) => MetaValue::Str(t),
            None => MetaValue::Null,
        }
    }

    /// Runs `body` with `record!` adding to this call (what a synchronous
    /// body runs in). The call's own metadata is where entries go, through a
    /// pointer installed for the duration: no copying in and out.
    ///
    /// The `FnOnce` bound makes rustc build the body's closure as `FnOnce`,
    /// so a body that returns a borrow of a `&mut` argument still compiles.
    #[inline(always)]
    pub fn run<R>(&mut self, body: impl FnOnce() -> R) -> R {
        in_frame(self, body)
    }

    /// Runs an async body with `record!` adding to this call whenever it is
    /// polled.
    pub fn instrument<F: Future>(&mut self, body: F) -> Instrumented<'_, F> {
        Instrumented { call: self, body }
    }

    /// Whether an error's `Display` may be read for this call's event: only
    /// when the config opts in ([`ErrorMessages::Sanitized`]) and the
    /// function has no `#[phi]` or `Phi<T>` parameter (`phi_params`, which
    /// the macro knows).
    pub fn display_allowed(&self, phi_params: bool) -> bool {
        !phi_params
            && self
                .dispatch
                .get()
                .is_some_and(|d| d.config().inner().error_messages == ErrorMessages::Sanitized)
    }

    /// Ends the call with `outcome` and emits its event (once: a call
    /// already finished ignores this). By reference, not by value: moving
    /// the guard here copied all of it on every call.
    #[inline]
    pub fn finish(&mut self, outcome: Outcome) {
        if !self.finished {
            self.finished = true;
            self.emit(outcome);
        }
    }

    fn emit(&mut self, outcome: Outcome) {
        let (d, config) = match &self.dispatch {
            DispatchRef::None => {
                crate::stats::add_undispatched();
                return;
            }
            DispatchRef::Global(g) => (*g, ConfigRef::Static(g.config())),
            DispatchRef::Local(l) => (l, ConfigRef::Shared(l.config().clone())),
        };
        // The context's fields were fitted when it was made: count those
        // corrections for each event they go into.
        if let Some(fixes) = self.context.as_ref().and_then(AuditContext::fixes) {
            d.count_fixes(fixes);
        }
        // Field by field (not a method on `self`): `d` borrows the
        // dispatcher field meanwhile.
        macro_rules! take_record {
            ($config:expr) => {
                CallRecord {
                    site: self.site,
                    config: $config,
                    context: self.context.take(),
                    started: self.started,
                    resource_id: self.resource_id.take(),
                    patient_id: self.patient_id.take(),
                    actor: self.actor.take().map(Box::new),
                    outcome,
                    metadata: std::mem::take(&mut self.metadata),
                }
            };
        }
        // A call made while an `AuditLayer` handles a request waits for the
        // response status (the request scope emits it).
        #[cfg(feature = "tower")]
        if let Some(ctx) = self
            .context
            .as_ref()
            .filter(|c| c.request_scope().is_some())
        {
            // The scope lives in the context: a reference keeps it while
            // the record (and its own reference) moves in.
            let ctx = ctx.clone();
            let target = match &self.dispatch {
                DispatchRef::Global(g) => crate::web::Target::Global(g),
                _ => crate::web::Target::Local(d.clone()),
            };
            if let Some(scope) = ctx.request_scope() {
                scope.hold(target, take_record!(config));
            }
            return;
        }
        let record = take_record!(config);
        RecordRef::pass(record, |r| d.emit_record(r));
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.finished || (self.deferred && !std::thread::panicking()) {
            return;
        }
        // The panic payload is never recorded: it may hold PHI.
        let outcome = if std::thread::panicking() || !self.is_async {
            Outcome::failure("Panic", "the audited call panicked")
        } else {
            Outcome::failure(
                "Cancelled",
                "the audited call was cancelled before completion",
            )
        };
        self.emit(outcome);
    }
}

/// A running call on the stack of [`in_frame`], linked to the frame of the
/// call it runs in, so the chain of running calls can be walked.
struct Frame {
    call: *mut Call,
    outer: Cell<*const Frame>,
}

/// Puts [`FRAME`] back to what it was when dropped (on unwinding too).
struct Restore(*const Frame);

impl Drop for Restore {
    #[inline(always)]
    fn drop(&mut self) {
        let _ = FRAME.try_with(|f| f.set(self.0));
    }
}

/// Runs `f` with `call` installed as this thread's innermost running call.
/// The frame lives on this function's stack until `f` returns or unwinds,
/// and `call` stays borrowed all that time, so the pointers never outlive
/// their targets. Only [`Call::run`] and [`Instrumented`]'s `poll` call it.
#[inline(always)]
fn in_frame<R>(call: &mut Call, f: impl FnOnce() -> R) -> R {
    let frame = Frame {
        call,
        outer: Cell::new(std::ptr::null()),
    };
    let outer = FRAME
        .try_with(|c| c.replace(&frame))
        .unwrap_or(std::ptr::null());
    frame.outer.set(outer);
    let _restore = Restore(outer);
    f()
}

/// Under `panic = "abort"` nothing unwinds, so no call guard's drop records
/// the panic: the panic hook of [`crate::flush_on_panic`] calls this to
/// finish every audited call running on the panicking thread (innermost
/// first) with FAILURE `Panic`, and flushes their dispatchers. Returns how
/// many calls it finished.
pub(crate) fn finish_running_calls_on_abort() -> usize {
    let mut n = 0;
    let mut at = FRAME.try_with(Cell::get).unwrap_or(std::ptr::null());
    // Nothing is finished twice, even if the hook ran twice.
    let _ = FRAME.try_with(|f| f.set(std::ptr::null()));
    while !at.is_null() {
        // SAFETY: a non-null FRAME (and each `outer` link) points at a frame
        // on this thread's stack, below which the panic began, and its call
        // is held mutably borrowed there; with `panic = "abort"` that code
        // never runs again, so this is the only access from here on.
        let (call, outer) = unsafe { (&mut *(*at).call, (*at).outer.get()) };
        at = outer;
        if !call.finished {
            call.finish(Outcome::failure("Panic", "the audited call panicked"));
            n += 1;
            if let DispatchRef::Local(d) = &call.dispatch {
                let _ = d.flush();
            }
        }
    }
    n
}

pin_project_lite::pin_project! {
    /// The future returned by [`Call::instrument`].
    pub struct Instrumented<'a, F> {
        call: &'a mut Call,
        #[pin]
        body: F,
    }
}

impl<F: Future> Future for Instrumented<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let body = this.body;
        in_frame(this.call, || body.poll(cx))
    }
}

/// Adds metadata to the innermost audited call running on this thread (what
/// `record!` expands to). Outside an audited call it does nothing.
pub fn record(key: &'static str, value: MetaValue) {
    let _ = FRAME.try_with(|f| {
        let top = f.get();
        if !top.is_null() {
            // SAFETY: a non-null FRAME points at a frame on this thread's
            // stack whose call `in_frame` holds mutably borrowed right now
            // (`Restore` resets the pointer before either ends, on unwinding
            // too). Nothing else reaches that call meanwhile: the body cannot
            // name it, and this insertion runs no user code.
            unsafe {
                (*(*top).call)
                    .metadata
                    .insert_value(Text::from_static(key), value)
            };
        }
    });
}
