//! The call guard behind `#[audited]`: captures a call, classifies how it
//! ended, and emits exactly one event, also on panic and cancellation.
//!
//! Generated code uses this through `phi_audit::__private`; it is public so
//! that the expansion can name it, not as an API to program against.

use std::cell::Cell;
use std::fmt::{Display, Write as _};
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context as TaskContext, Poll};

use crate::config::{Config, ErrorMessages};
use crate::context::AuditContext;
use crate::dispatch::{self, Dispatch};
use crate::event::{
    Action, ActionType, Actor, AuditEvent, DataClassification, Outcome, Resource, SchemaVersion,
    Service,
};
use crate::metadata::{MetaValue, Metadata};
use crate::phi::PseudonymSource;
use crate::text::Text;
use crate::timestamp::Timestamp;

/// The constant part of an audited function, built at compile time.
#[derive(Debug)]
pub struct CallSite {
    /// `action.type`.
    pub action: ActionType,
    /// `resource.type`.
    pub resource: &'static str,
    /// `action.name`.
    pub name: &'static str,
    /// `action.phi_touched`.
    pub phi_touched: Option<bool>,
    /// `action.data_classification`.
    pub classification: Option<DataClassification>,
}

/// An error type's own account of itself in the audit trail.
///
/// Implement it (or derive it: `#[derive(AuditError)]` in `phi-audit`) to
/// mark denials (the event becomes DENIED) and to choose the `error_type`
/// and a PHI-free message. Error types without it still work: their calls
/// end as FAILURE with the type's short name as `error_type` and message;
/// their `Display` is only read when the config opts in
/// ([`ErrorMessages::Sanitized`]), and never in a function with a PHI
/// parameter. `std::io::Error` implements it: its `ErrorKind` and the kind's
/// description.
///
/// ```
/// use audit_runtime::{AuditError, Outcome};
///
/// enum AppError { Forbidden, NotFound, Db(String) }
///
/// impl AuditError for AppError {
///     fn audit_outcome(&self) -> Outcome {
///         match self {
///             AppError::Forbidden => Outcome::denied("RoleDenied"),
///             AppError::NotFound => Outcome::failure("NotFound", "no such record"),
///             // The database text may quote data: never pass it on.
///             AppError::Db(_) => Outcome::failure("DatabaseError", "database unavailable"),
///         }
///     }
/// }
/// ```
pub trait AuditError {
    /// The outcome to record for this error: usually
    /// [`Outcome::denied`] or [`Outcome::failure`].
    fn audit_outcome(&self) -> Outcome;
}

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
            Some(t) if !crate::clamp::fits(&t, 1, crate::clamp::ID) => self.refit_id(t),
            other => other,
        }
    }

    #[cold]
    #[inline(never)]
    fn refit_id(&self, id: Text) -> Option<Text> {
        let mut fixes = crate::clamp::Fixes::default();
        let id = crate::clamp::id(Some(id), &mut fixes);
        self.count(fixes);
        id
    }

    fn count(&self, fixes: crate::clamp::Fixes) {
        if let Some(d) = self.dispatch.get() {
            d.count_fixes(fixes);
        }
    }

    /// Sets the actor (overrides the context's), fitted to the schema; an
    /// actor with an empty id gives way to the context's (counted).
    #[inline]
    pub fn set_actor(&mut self, actor: Option<Actor>) {
        if let Some(a) = actor {
            let mut fixes = crate::clamp::Fixes::default();
            if let Some(a) = crate::clamp::actor(a, &mut fixes) {
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

/// A [`CallRecord`] handed on by reference but owned all the same: the code
/// that keeps it moves it out once ([`RecordRef::into_record`]), and one
/// that does not drops it.
///
/// Passing a record by value through the dispatcher, a smart pointer and a
/// queue copied all of its bytes at every step (measured: a quarter of an
/// audited call's time); this way it is copied once, into its place in the
/// queue.
pub struct RecordRef<'a>(&'a mut ManuallyDrop<CallRecord>);

impl RecordRef<'_> {
    /// Runs `f` with `record` passed to it by reference.
    #[inline(always)]
    pub(crate) fn pass<R>(record: CallRecord, f: impl FnOnce(RecordRef<'_>) -> R) -> R {
        let mut slot = ManuallyDrop::new(record);
        // The slot is never touched again: the record is dropped or moved
        // out through the reference, exactly once.
        f(RecordRef(&mut slot))
    }

    /// Takes the record.
    #[inline]
    pub fn into_record(self) -> CallRecord {
        let me = ManuallyDrop::new(self);
        // SAFETY: the slot holds a live record (only this reference can take
        // or drop it, and it is consumed here without running its `Drop`).
        unsafe { std::ptr::read(&**me.0) }
    }

    /// Moves the record to the end of `records`: one copy, straight into
    /// the vector's memory.
    #[inline]
    pub(crate) fn push_to(self, records: &mut Vec<CallRecord>) {
        records.reserve(1);
        let me = ManuallyDrop::new(self);
        // SAFETY: `reserve` made room for one more element past `len`; the
        // record is live and, `self` being consumed without its `Drop`,
        // nothing else reads or drops it after this copy.
        unsafe {
            let len = records.len();
            std::ptr::copy_nonoverlapping(&**me.0, records.as_mut_ptr().add(len), 1);
            records.set_len(len + 1);
        }
    }
}

impl Drop for RecordRef<'_> {
    fn drop(&mut self) {
        // SAFETY: the record was neither taken nor dropped (both consume
        // `self` without running this).
        unsafe { ManuallyDrop::drop(self.0) }
    }
}

impl std::ops::Deref for RecordRef<'_> {
    type Target = CallRecord;
    fn deref(&self) -> &CallRecord {
        self.0
    }
}

impl std::ops::DerefMut for RecordRef<'_> {
    fn deref_mut(&mut self) -> &mut CallRecord {
        self.0
    }
}

/// The config a [`CallRecord`] is emitted under: borrowed from the global
/// dispatcher, or shared with a scoped one.
pub(crate) enum ConfigRef {
    Static(&'static Config),
    Shared(Config),
}

impl ConfigRef {
    pub(crate) fn get(&self) -> &Config {
        match self {
            ConfigRef::Static(c) => c,
            ConfigRef::Shared(c) => c,
        }
    }
}

/// A finished audited call on its way to a sink, before it is an
/// [`AuditEvent`].
///
/// It holds what varies per call and points at what does not (the call
/// site, the config, the request's context), so handing it to a queue moves
/// about half the bytes of an event, and a sink that writes JSON lines can
/// copy the constant parts as pre-rendered text. Any sink can turn it into
/// the event with [`CallRecord::into_event`]; where the dispatcher hands a
/// record on as it is (a 1.1 config without validation), both forms produce
/// the same JSON, byte for byte. The event id is drawn (from the config's source)
/// when the record is written or turned into the event, which happens once.
/// Sinks receive records only through the hidden `Sink` methods used by the
/// crate's own sinks.
pub struct CallRecord {
    pub(crate) site: &'static CallSite,
    pub(crate) config: ConfigRef,
    pub(crate) context: Option<AuditContext>,
    pub(crate) started: Timestamp,
    pub(crate) resource_id: Option<Text>,
    pub(crate) patient_id: Option<Text>,
    /// The actor named in the attribute, over the context's (boxed: it is
    /// rare, and 96 bytes inline would make every record half as big again).
    pub(crate) actor: Option<Box<Actor>>,
    pub(crate) outcome: Outcome,
    pub(crate) metadata: Metadata,
}

impl std::fmt::Debug for CallRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Identifiers and messages are left out, as everywhere in this crate.
        f.debug_struct("CallRecord")
            .field("site", &self.site.name)
            .field("status", &self.outcome.status)
            .finish_non_exhaustive()
    }
}

impl CallRecord {
    /// The event this call stands for (schema 1.1, before the dispatcher's
    /// retargeting and validation).
    pub fn into_event(self) -> AuditEvent {
        let cfg = self.config.get();
        let site = self.site;
        let ctx = self.context.as_ref();
        let actor = match self.actor {
            Some(a) => *a,
            None => match ctx.and_then(AuditContext::actor_ref) {
                Some(a) => a.clone(),
                None => cfg.default_actor().clone(),
            },
        };
        AuditEvent {
            schema_version: SchemaVersion::V1_1,
            event_id: cfg.new_event_id(),
            timestamp: self.started,
            service: Service::clone(cfg.service()),
            actor,
            action: Action {
                kind: site.action,
                name: Some(Text::from_static(site.name)),
                phi_touched: site.phi_touched,
                data_classification: site.classification,
            },
            resource: Resource {
                kind: Text::from_static(site.resource),
                id: self.resource_id,
                patient_id: self.patient_id,
            },
            outcome: self.outcome,
            correlation: ctx.and_then(|c| c.correlation().cloned()),
            http: ctx.and_then(|c| c.http_for_event().map(std::borrow::Cow::into_owned)),
            delegation: None,
            metadata: self.metadata,
            integrity: None,
        }
    }

    /// True when the record's JSON is the 1.1 event as it is, with no
    /// rewriting by the dispatcher: a config targeting 1.1 without
    /// validation, and nothing 1.1 lacks (agent actors, OVERRIDE actions).
    pub(crate) fn writes_as_is(&self) -> bool {
        use crate::event::SubjectType;
        let cfg = self.config.get();
        let inner = cfg.inner();
        if inner.target != SchemaVersion::V1_1
            || inner.validate.is_some()
            || self.site.action == ActionType::Override
        {
            return false;
        }
        let actor = match &self.actor {
            Some(a) => a,
            None => match self.context.as_ref().and_then(AuditContext::actor_ref) {
                Some(a) => a,
                None => cfg.default_actor(),
            },
        };
        actor.subject_type != SubjectType::Agent
    }

    /// Appends the record's compact JSON (what [`CallRecord::into_event`]
    /// would encode to), copying the pre-rendered parts: the config's service
    /// and default actor, the context's actor and correlation, and the call
    /// site's action (rendered once per site per thread).
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        crate::encode::record(out, self);
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

/// The future returned by [`Call::instrument`].
pub struct Instrumented<'a, F> {
    call: &'a mut Call,
    body: F,
}

impl<F: Future> Future for Instrumented<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        // SAFETY: `body` is structurally pinned (never moved out, no Drop
        // impl on this type); `call` is a plain reference.
        let this = unsafe { self.get_unchecked_mut() };
        let body = &mut this.body;
        // SAFETY: see above.
        in_frame(this.call, || unsafe { Pin::new_unchecked(body) }.poll(cx))
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

/// Holds a reference to a return value while its outcome is classified.
///
/// The macro calls `(&&&&&Probe(&ret)).__phi_audit_outcome(&call, phi)`
/// (four `&` for async bodies and futures, whose value is never itself a
/// future): method resolution takes the first of the `Via*` traits, from
/// [`ViaFuture`] down to [`ViaValue`], whose impl applies to the value's
/// type. `phi` is true when the function has a `#[phi]` or `Phi<T>`
/// parameter.
pub struct Probe<'a, T: ?Sized>(pub &'a T);

/// A synchronous audited function returning a future the macro cannot
/// follow to its completion: a compile error, never a silent SUCCESS.
pub trait ViaFuture {
    /// The future's type.
    type Future;
    /// Never compiles: [`UnfollowedFuture`] has no implementations.
    fn __phi_audit_outcome(&self, call: &Call, phi: bool) -> Outcome
    where
        Self::Future: UnfollowedFuture;
}

/// Implemented by no type: what makes an audited function returning a named
/// future type a compile error that says what to do.
#[diagnostic::on_unimplemented(
    message = "#[audited] cannot see when `{Self}` completes, so it cannot record how the call ended",
    label = "this function returns a future of a type #[audited] cannot wrap",
    note = "#[audited] records a future's outcome when it completes if the function is an `async fn` or returns `impl Future<Output = ..>` or `Pin<Box<dyn Future<Output = ..> + ..>>`",
    note = "return one of those (e.g. `-> impl Future<Output = T>` around this value), or audit the code that awaits it"
)]
pub trait UnfollowedFuture {}

/// Outcome of an `Err` whose type implements [`AuditError`].
pub trait ViaAuditError {
    /// The outcome.
    fn __phi_audit_outcome(&self, call: &Call, phi: bool) -> Outcome;
}

/// Outcome of an `Err` whose type implements `Display` (read only when the
/// config opts in and the function has no PHI parameter).
pub trait ViaDisplay {
    /// The outcome.
    fn __phi_audit_outcome(&self, call: &Call, phi: bool) -> Outcome;
}

/// Outcome of any other `Err`.
pub trait ViaAnyError {
    /// The outcome.
    fn __phi_audit_outcome(&self, call: &Call, phi: bool) -> Outcome;
}

/// Outcome of a value that is not a `Result`: SUCCESS.
pub trait ViaValue {
    /// The outcome.
    fn __phi_audit_outcome(&self, call: &Call, phi: bool) -> Outcome;
}

impl<F: Future> ViaFuture for &&&&Probe<'_, F> {
    type Future = F;
    fn __phi_audit_outcome(&self, _call: &Call, _phi: bool) -> Outcome
    where
        F: UnfollowedFuture,
    {
        Outcome::SUCCESS
    }
}

impl<T, E: AuditError> ViaAuditError for &&&Probe<'_, Result<T, E>> {
    fn __phi_audit_outcome(&self, _call: &Call, _phi: bool) -> Outcome {
        match self.0 {
            Ok(_) => Outcome::SUCCESS,
            Err(e) => e.audit_outcome(),
        }
    }
}

impl<T, E: Display> ViaDisplay for &&Probe<'_, Result<T, E>> {
    fn __phi_audit_outcome(&self, call: &Call, phi: bool) -> Outcome {
        match self.0 {
            Ok(_) => Outcome::SUCCESS,
            Err(e) => {
                let ty = Text::from_static(short_type_name::<E>());
                if call.display_allowed(phi) {
                    let mut msg = StackText::new();
                    let _ = write!(msg, "{e}");
                    Outcome::failure(ty, msg.into_text())
                } else {
                    Outcome::failure(ty.clone(), ty)
                }
            }
        }
    }
}

impl<T, E> ViaAnyError for &Probe<'_, Result<T, E>> {
    fn __phi_audit_outcome(&self, _call: &Call, _phi: bool) -> Outcome {
        match self.0 {
            Ok(_) => Outcome::SUCCESS,
            Err(_) => {
                let ty = Text::from_static(short_type_name::<E>());
                Outcome::failure(ty.clone(), ty)
            }
        }
    }
}

impl<T: ?Sized> ViaValue for Probe<'_, T> {
    fn __phi_audit_outcome(&self, _call: &Call, _phi: bool) -> Outcome {
        Outcome::SUCCESS
    }
}

/// Formats into a stack buffer, spilling to the heap only for long text, so
/// an error message costs at most one allocation (none up to 23 bytes).
struct StackText {
    buf: [u8; 256],
    len: usize,
    spill: Option<String>,
}

impl StackText {
    fn new() -> StackText {
        StackText {
            buf: [0; 256],
            len: 0,
            spill: None,
        }
    }

    fn into_text(self) -> Text {
        match self.spill {
            Some(s) => Text::from(s),
            // Only whole `&str`s were copied in, so this is valid UTF-8.
            None => Text::new(std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()),
        }
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if let Some(spill) = &mut self.spill {
            spill.push_str(s);
        } else if self.len + s.len() <= self.buf.len() {
            self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
            self.len += s.len();
        } else {
            let mut spill = String::with_capacity(self.len + s.len());
            spill.push_str(std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default());
            spill.push_str(s);
            self.spill = Some(spill);
        }
        Ok(())
    }
}

/// `my_app::errors::AppError<T>` → `AppError`; through `Box`, `Arc` and
/// `Rc` to what they hold (`Box<dyn Error + Send>` → `Error`,
/// `Box<MyError>` → `MyError`).
pub fn short_type_name<T: ?Sized>() -> &'static str {
    short_name(std::any::type_name::<T>())
}

fn short_name(full: &'static str) -> &'static str {
    // Plain byte scans: this runs on every failed call, and a substring
    // search for `::` cost more than the rest of the outcome. The common
    // case (`my_app::AppError<T>`) takes one scan forward to `<` and one
    // back to `:`.
    if !full.starts_with("dyn ") {
        let b = full.as_bytes();
        let end = b.iter().position(|&c| c == b'<').unwrap_or(b.len());
        let start = b[..end]
            .iter()
            .rposition(|&c| c == b':')
            .map_or(0, |i| i + 1);
        match &full[start..end] {
            "Box" | "Arc" | "Rc" => {}
            "" => return full,
            name => return name,
        }
    }
    wrapped_short_name(full)
}

/// [`short_name`] through `dyn` and `Box`/`Arc`/`Rc`.
#[cold]
fn wrapped_short_name(full: &'static str) -> &'static str {
    let mut s = full;
    let mut inside = false;
    loop {
        if let Some(rest) = s.strip_prefix("dyn ") {
            s = rest;
        }
        let b = s.as_bytes();
        // A path ends at its generics (`<`) or, after `dyn`, at ` + Send`.
        let end = if inside {
            b.iter()
                .position(|&c| matches!(c, b'<' | b' ' | b',' | b'>'))
        } else {
            b.iter().position(|&c| c == b'<' || c == b' ')
        }
        .unwrap_or(b.len());
        let start = b[..end]
            .iter()
            .rposition(|&c| c == b':')
            .map_or(0, |i| i + 1);
        let name = &s[start..end];
        if matches!(name, "Box" | "Arc" | "Rc") && b.get(end) == Some(&b'<') {
            s = &s[end + 1..];
            inside = true;
            continue;
        }
        return if name.is_empty() { full } else { name };
    }
}

/// `std::io::Error` says what it is without its message: `error_type` is
/// its [`ErrorKind`](std::io::ErrorKind) (`NotFound`, `PermissionDenied`)
/// and `error_message` the kind's fixed description (`entity not found`).
/// A custom I/O error's message, which may quote a path or a value, is
/// never read.
impl AuditError for std::io::Error {
    fn audit_outcome(&self) -> Outcome {
        let kind = self.kind();
        let mut ty = StackText::new();
        let _ = write!(ty, "{kind:?}");
        let mut msg = StackText::new();
        let _ = write!(msg, "{kind}");
        Outcome::failure(ty.into_text(), msg.into_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_text_spills_long_messages_intact() {
        let mut t = StackText::new();
        let long = "é".repeat(200);
        write!(t, "a{long}").unwrap();
        assert_eq!(t.into_text().as_str(), format!("a{long}"));
        let mut t = StackText::new();
        write!(t, "short").unwrap();
        assert_eq!(t.into_text(), "short");
    }

    /// A record passed by reference is dropped exactly once, wherever it
    /// ends: left alone, taken, or moved into a vector.
    #[test]
    fn a_record_passed_by_reference_is_dropped_once() {
        static SITE: CallSite = CallSite {
            action: ActionType::Read,
            resource: "Patient",
            name: "read",
            phi_touched: None,
            classification: None,
        };
        let config = crate::Config::new("svc").build().unwrap();
        let id: std::sync::Arc<str> = std::sync::Arc::from("an-identifier-longer-than-inline");
        let record = || CallRecord {
            site: &SITE,
            config: ConfigRef::Shared(config.clone()),
            context: None,
            started: Timestamp::from_unix_millis(0),
            resource_id: Some(Text::from(id.clone())),
            patient_id: None,
            actor: None,
            outcome: Outcome::SUCCESS,
            metadata: Metadata::new(),
        };
        let refs = || std::sync::Arc::strong_count(&id);

        RecordRef::pass(record(), |r| {
            assert_eq!(r.resource_id.as_deref(), Some(&*id))
        });
        assert_eq!(refs(), 1, "an unconsumed reference drops its record");

        let taken = RecordRef::pass(record(), |r| r.into_record());
        assert_eq!(refs(), 2, "a taken record lives on");
        drop(taken);
        assert_eq!(refs(), 1);

        let mut queue = Vec::new();
        for _ in 0..3 {
            RecordRef::pass(record(), |r| r.push_to(&mut queue));
        }
        assert_eq!(refs(), 4, "records moved into the vector live there");
        assert!(queue.iter().all(|r| r.resource_id.as_deref() == Some(&*id)));
        drop(queue);
        assert_eq!(refs(), 1);

        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            RecordRef::pass(record(), |_r| panic!("a sink panicked"))
        }));
        assert!(result.is_err());
        assert_eq!(refs(), 1, "a panic drops the record once");
    }

    mod records {
        use super::*;
        use crate::event::{ActionType, DataClassification, Http, HttpMethod};
        use proptest::prelude::*;

        /// Text with what JSON escapes, non-ASCII, and inline and shared lengths.
        fn text() -> impl Strategy<Value = String> {
            prop::collection::vec(
                prop_oneof![
                    Just('a'),
                    Just('"'),
                    Just('\\'),
                    Just('\n'),
                    Just('\u{1}'),
                    Just('é'),
                    Just('🩺'),
                    any::<char>()
                ],
                0..40,
            )
            .prop_map(String::from_iter)
        }

        fn word() -> impl Strategy<Value = String> {
            "[a-z][a-z0-9-]{0,30}"
        }

        fn actor() -> impl Strategy<Value = Actor> {
            (
                word(),
                any::<bool>(),
                prop::option::of(text()),
                prop::option::of(text()),
                prop::option::of(prop::collection::vec(text(), 0..3)),
            )
                .prop_map(|(id, human, org, owner, roles)| {
                    let mut a = if human {
                        Actor::human(id)
                    } else {
                        Actor::service(id)
                    };
                    if let Some(o) = org {
                        a = a.org(o);
                    }
                    if let Some(o) = owner {
                        a = a.owner_org(o);
                    }
                    if let Some(r) = roles {
                        a = a.roles(r);
                    }
                    a
                })
        }

        fn context() -> impl Strategy<Value = Option<AuditContext>> {
            prop::option::of((
                prop::option::of(actor()),
                prop::option::of(text()),
                prop::option::of(text()),
                prop::option::of(text()),
                any::<bool>(),
                prop::option::of(text()),
            ))
            .prop_map(|c| {
                c.map(|(actor, req, trace, session, http, route)| {
                    let mut ctx = AuditContext::new();
                    if let Some(a) = actor {
                        ctx = ctx.actor(a);
                    }
                    if let Some(r) = req {
                        ctx = ctx.request_id(r);
                    }
                    if let Some(t) = trace {
                        ctx = ctx.trace_id(t);
                    }
                    if let Some(t) = session {
                        ctx = ctx.session_id(t);
                    }
                    if http {
                        ctx = ctx.http(Http {
                            method: Some(HttpMethod::Get),
                            route_template: route.map(Text::from),
                            status_code: Some(200),
                            ..Http::default()
                        });
                    }
                    ctx
                })
            })
        }

        fn outcome() -> impl Strategy<Value = Outcome> {
            (0..3u8, text(), prop::option::of(text())).prop_map(|(k, ty, msg)| match k {
                0 => Outcome::SUCCESS,
                1 => Outcome::failure(ty, msg.unwrap_or_default()),
                _ => match msg {
                    Some(m) => Outcome::denied(ty).with_message(m),
                    None => Outcome::denied(ty),
                },
            })
        }

        fn site() -> impl Strategy<Value = &'static CallSite> {
            (
                prop_oneof![
                    Just(ActionType::Read),
                    Just(ActionType::Update),
                    Just(ActionType::Export)
                ],
                word(),
                word(),
                prop::option::of(any::<bool>()),
                prop::option::of(Just(DataClassification::Phi)),
            )
                .prop_map(|(action, resource, name, phi, class)| {
                    // Call sites are statics; a test leaks its few.
                    &*Box::leak(Box::new(CallSite {
                        action,
                        resource: Box::leak(resource.into_boxed_str()),
                        name: Box::leak(name.into_boxed_str()),
                        phi_touched: phi,
                        classification: class,
                    }))
                })
        }

        fn config() -> impl Strategy<Value = Config> {
            (
                word(),
                prop::option::of(word()),
                prop::option::of(word()),
                actor(),
            )
                .prop_map(|(name, env, version, default)| {
                    // A config refuses what does not fit the schema; the
                    // default actor is fitted the way a context's is.
                    let mut fixes = crate::clamp::Fixes::default();
                    let default = crate::clamp::actor(default, &mut fixes)
                        .unwrap_or_else(|| Actor::service("svc"));
                    let mut b = Config::new(name).default_actor(default);
                    if let Some(e) = env {
                        b = b.environment(e);
                    }
                    if let Some(v) = version {
                        b = b.version(v);
                    }
                    b.build().unwrap()
                })
        }

        type Parts = (
            &'static CallSite,
            Config,
            Option<AuditContext>,
            Option<String>,
            Option<String>,
            Option<Actor>,
            Outcome,
            Vec<(String, i64)>,
            u128,
            i64,
        );

        fn parts() -> impl Strategy<Value = Parts> {
            (
                site(),
                config(),
                context(),
                prop::option::of(text()),
                prop::option::of(text()),
                prop::option::of(actor()),
                outcome(),
                prop::collection::vec((word(), any::<i64>()), 0..4),
                any::<u128>(),
                -62_000_000_000_000i64..250_000_000_000_000,
            )
                .prop_map(|mut p| {
                    p.1 = with_id(&p.1, p.8);
                    p
                })
        }

        /// `cfg` with every event id `id` (ids are drawn when a record is
        /// written, so two writes of one record compare equal).
        fn with_id(cfg: &Config, id: u128) -> Config {
            let i = cfg.inner();
            let mut b = Config::new(i.service.name.clone())
                .default_actor(i.default_actor.clone())
                .id_source(move || uuid::Uuid::from_u128(id));
            if let Some(e) = &i.service.environment {
                b = b.environment(e.clone());
            }
            if let Some(v) = &i.service.version {
                b = b.version(v.clone());
            }
            b.build().unwrap()
        }

        fn record(p: &Parts) -> CallRecord {
            let mut metadata = Metadata::new();
            for (k, v) in &p.7 {
                metadata.insert_value(Text::from(k.as_str()), MetaValue::Int(*v));
            }
            CallRecord {
                site: p.0,
                config: ConfigRef::Shared(p.1.clone()),
                context: p.2.clone(),
                started: Timestamp::from_unix_millis(p.9),
                resource_id: p.3.as_deref().map(Text::from),
                patient_id: p.4.as_deref().map(Text::from),
                actor: p.5.clone().map(Box::new),
                outcome: p.6.clone(),
                metadata,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// A record's JSON is its event's, as the dispatcher would write
            /// it for schema 1.1, byte for byte.
            #[test]
            fn record_json_is_the_event_json(p in parts()) {
                let r = record(&p);
                prop_assert!(r.writes_as_is());
                let mut fast = Vec::new();
                r.write_json(&mut fast);
                // The context's fragments are cached now: a second write
                // must agree with the first.
                let mut again = Vec::new();
                r.write_json(&mut again);
                prop_assert_eq!(&fast, &again);
                let mut event = record(&p).into_event();
                crate::schema::retarget(&mut event, SchemaVersion::V1_1, Default::default())
                    .unwrap();
                prop_assert_eq!(
                    String::from_utf8(fast).unwrap(),
                    String::from_utf8(serde_json::to_vec(&event).unwrap()).unwrap()
                );
            }
        }

        #[test]
        fn what_the_dispatcher_rewrites_is_not_written_as_is() {
            let site = |action| -> &'static CallSite {
                Box::leak(Box::new(CallSite {
                    action,
                    resource: "Patient",
                    name: "f",
                    phi_touched: None,
                    classification: None,
                }))
            };
            let cfg = Config::new("svc").build().unwrap();
            let mut p: Parts = (
                site(ActionType::Read),
                cfg.clone(),
                None,
                None,
                None,
                None,
                Outcome::SUCCESS,
                Vec::new(),
                1,
                0,
            );
            assert!(record(&p).writes_as_is());
            p.0 = site(ActionType::Override);
            assert!(!record(&p).writes_as_is());
            p.0 = site(ActionType::Read);
            p.5 = Some(Actor::agent("bot"));
            assert!(!record(&p).writes_as_is());
            p.5 = None;
            p.2 = Some(AuditContext::new().actor(Actor::agent("bot")));
            assert!(!record(&p).writes_as_is());
            p.2 = None;
            p.1 = Config::new("svc")
                .target(SchemaVersion::V1_0)
                .build()
                .unwrap();
            assert!(!record(&p).writes_as_is());
            p.1 = Config::new("svc")
                .validate_on_emit(crate::config::ValidationPolicy::Drop)
                .build()
                .unwrap();
            assert!(!record(&p).writes_as_is());
        }
    }

    #[test]
    fn short_names() {
        assert_eq!(short_type_name::<std::io::Error>(), "Error");
        assert_eq!(short_type_name::<Vec<String>>(), "Vec");
        assert_eq!(short_type_name::<u8>(), "u8");
        assert_eq!(short_type_name::<dyn std::error::Error>(), "Error");
        assert_eq!(
            short_type_name::<Box<dyn std::error::Error + Send + Sync>>(),
            "Error"
        );
        assert_eq!(short_type_name::<Box<std::fmt::Error>>(), "Error");
        assert_eq!(
            short_type_name::<std::sync::Arc<std::num::ParseIntError>>(),
            "ParseIntError"
        );
        assert_eq!(short_type_name::<String>(), "String");
        assert_eq!(short_type_name::<&str>(), "&str");
        assert_eq!(short_type_name::<[u8]>(), "[u8]");
        assert_eq!(
            short_type_name::<std::collections::HashMap<String, std::io::Error>>(),
            "HashMap"
        );
    }
}
