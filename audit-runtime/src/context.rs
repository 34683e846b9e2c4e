//! The ambient request context: who is acting and which request this is.
//!
//! Set it once where a request enters the service (middleware, a message
//! handler) and every audited call below it picks it up.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};

use crate::model::clamp::{self, Fixes};
use crate::model::event::{Actor, Correlation, Http};
use crate::util::text::Text;

/// Actor and correlation ids of the current request.
///
/// Cheap to clone (one reference count). Install it with
/// [`AuditContext::in_scope`] for synchronous code or [`AuditContext::scope`]
/// for a future; the future keeps its context across `.await` points and
/// worker threads, on any executor.
///
/// ```
/// use phi_audit::{Actor, AuditContext};
/// let ctx = AuditContext::new()
///     .actor(Actor::human("dr-house").org("org-1").roles(["clinician"]))
///     .request_id("req-42");
/// ctx.in_scope(|| {
///     let cur = AuditContext::current().unwrap();
///     assert_eq!(cur.actor_ref().unwrap().subject_id, "dr-house");
/// });
/// assert!(AuditContext::current().is_none());
/// ```
#[derive(Clone, Debug, Default)]
pub struct AuditContext(Arc<Inner>);

// Not aligned to a cache line: callers never read the fields per call (the
// worker reads the rendered fragments), and the counts are taken in banks,
// so sharing a line with them costs little, while an aligned allocation
// would slow down building a context per request (measured: ~10-20% per call
// with one fresh context per call). `repr(C)` keeps the request scope, which
// every audited call reads when the `tower` feature is on, last: off the
// cache line of the reference counts that the sink's worker writes.
#[derive(Clone, Debug, Default)]
#[repr(C)]
struct Inner {
    actor: ActorSlot,
    correlation: Option<Correlation>,
    http: Option<Http>,
    fragments: FragmentCell,
    /// Corrections made to fit each field to the schema when it was set
    /// (indexed by the `SLOT_` constants), and their sum, which every call
    /// under this context adds to its dispatcher's counts.
    slot_fixes: [Fixes; SLOTS],
    fixes: Fixes,
    /// Whether `fixes` holds any (read per call).
    any_fixes: bool,
    /// The HTTP request this context belongs to, whose audited calls are
    /// held until the response status is known (set by `AuditLayer`), in
    /// the context's own allocation.
    #[cfg(feature = "tower")]
    scope: ScopeSlot,
    /// The response status of that request once known (0: not yet): set
    /// once, before any event with this context is written, so the
    /// rendered fragments include it.
    #[cfg(feature = "tower")]
    status: StatusCell,
}

/// A context's actor: none, one set with [`AuditContext::actor`], or one
/// the HTTP layer fitted and rendered once for many requests.
#[derive(Clone, Debug, Default)]
enum ActorSlot {
    #[default]
    None,
    Own(Actor),
    #[cfg(feature = "tower")]
    Ready(ReadyActor),
}

impl ActorSlot {
    fn get(&self) -> Option<&Actor> {
        match self {
            ActorSlot::None => None,
            ActorSlot::Own(a) => Some(a),
            #[cfg(feature = "tower")]
            ActorSlot::Ready(r) => r.0.actor.as_ref(),
        }
    }
}

/// An actor fitted to the schema as [`AuditContext::actor`] fits it, with
/// its corrections and its rendered JSON: made once and shared by the
/// contexts of many requests (see `web::actors`); a clone is one reference
/// count.
#[cfg(feature = "tower")]
#[derive(Clone, Debug)]
pub(crate) struct ReadyActor(Arc<ReadyInner>);

#[cfg(feature = "tower")]
#[derive(Debug)]
struct ReadyInner {
    actor: Option<Actor>,
    fixes: Fixes,
    /// `,"actor":{..}` of `actor`.
    json: Option<Box<[u8]>>,
}

#[cfg(feature = "tower")]
impl ReadyActor {
    /// `actor` fitted (left out, counted, when its id is empty) and
    /// rendered.
    pub(crate) fn fit(actor: Actor) -> ReadyActor {
        let mut fixes = Fixes::default();
        let actor = clamp::actor(actor, &mut fixes);
        let json = actor.as_ref().map(|a| {
            let mut out = Vec::new();
            crate::json::encode::actor(&mut out, a);
            out.into_boxed_slice()
        });
        ReadyActor(Arc::new(ReadyInner { actor, fixes, json }))
    }

    /// The fitted actor.
    #[cfg(test)]
    pub(crate) fn actor(&self) -> Option<&Actor> {
        self.0.actor.as_ref()
    }

    /// Whether both share one rendering.
    #[cfg(test)]
    pub(crate) fn same_json(&self, other: &ReadyActor) -> bool {
        Arc::ptr_eq(&self.0, &other.0) && self.0.json.is_some()
    }
}

/// A context's request scope: its own (the request's context), the one of
/// the request context it is an edited copy of, or none.
// The scope is large and in place on purpose: boxing it would cost an
// allocation per request again (freed on the sink's thread).
#[cfg(feature = "tower")]
#[derive(Default)]
#[allow(clippy::large_enum_variant)]
enum ScopeSlot {
    #[default]
    None,
    Own(crate::web::RequestScope),
    Of(Arc<Inner>),
}

#[cfg(feature = "tower")]
impl ScopeSlot {
    /// A request's own scope holding up to `limit` calls (`None`: none).
    fn request(limit: Option<usize>) -> ScopeSlot {
        match limit {
            Some(limit) => ScopeSlot::Own(crate::web::RequestScope::new(limit)),
            None => ScopeSlot::None,
        }
    }
}

#[cfg(feature = "tower")]
impl Clone for ScopeSlot {
    /// A field's copy cannot name the context it was in: `edit` links an
    /// edited copy of a request's context to it.
    fn clone(&self) -> Self {
        match self {
            ScopeSlot::Of(parent) => ScopeSlot::Of(Arc::clone(parent)),
            _ => ScopeSlot::None,
        }
    }
}

#[cfg(feature = "tower")]
impl std::fmt::Debug for ScopeSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScopeSlot::None => f.write_str("None"),
            ScopeSlot::Own(s) => std::fmt::Debug::fmt(s, f),
            ScopeSlot::Of(_) => f.write_str("OfRequest"),
        }
    }
}

/// A response status set once (0: none); a copy keeps the value.
#[cfg(feature = "tower")]
#[derive(Default)]
struct StatusCell(std::sync::atomic::AtomicU16);

#[cfg(feature = "tower")]
impl Clone for StatusCell {
    fn clone(&self) -> Self {
        StatusCell(std::sync::atomic::AtomicU16::new(
            self.0.load(std::sync::atomic::Ordering::Acquire),
        ))
    }
}

#[cfg(feature = "tower")]
impl std::fmt::Debug for StatusCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.0.load(std::sync::atomic::Ordering::Acquire), f)
    }
}

const SLOT_ACTOR: usize = 0;
const SLOT_REQUEST: usize = 1;
const SLOT_TRACE: usize = 2;
const SLOT_SESSION: usize = 3;
const SLOT_HTTP: usize = 4;
const SLOTS: usize = 5;

/// Parts of an event's JSON that come from a context, rendered the first
/// time a record needs them.
///
/// Both parts live in one allocation (a context per request renders them
/// once per request).
pub(crate) struct Fragments {
    /// The actor's part, then the tail.
    buf: Box<[u8]>,
    /// Where the tail starts; `None` when the context names no actor.
    actor_end: Option<usize>,
}

impl Fragments {
    /// `,"actor":{..}` when the context names the actor.
    pub(crate) fn actor(&self) -> Option<&[u8]> {
        self.actor_end.map(|end| &self.buf[..end])
    }

    /// `,"correlation":{..},"http":{..}` (each when present; may be empty).
    pub(crate) fn tail(&self) -> &[u8] {
        &self.buf[self.actor_end.unwrap_or(0)..]
    }
}

/// Holds a context's [`Fragments`] once rendered (and whether they were
/// asked for before). A copy starts empty: the builder methods edit a copy,
/// and its fragments must be rendered anew.
#[derive(Default)]
struct FragmentCell(OnceLock<Fragments>, std::sync::atomic::AtomicBool);

impl Clone for FragmentCell {
    fn clone(&self) -> Self {
        FragmentCell::default()
    }
}

impl std::fmt::Debug for FragmentCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

thread_local! {
    static CURRENT: RefCell<Option<AuditContext>> = const { RefCell::new(None) };
    static BANK: RefCell<Bank> = const { RefCell::new(Bank::EMPTY) };
}

/// Request contexts this thread is done with, oldest first, kept to be
/// made over for later requests once nothing else holds them.
///
/// A request's context is made on the thread serving the request, and its
/// last reference usually goes with the last record, on the sink's worker
/// thread: every context was freed on another thread than the one that
/// made it, the allocator's slowest path on both sides (the freeing thread
/// keeps few spare blocks of a size and hands the rest back under a lock;
/// the making thread never has one of its own to reuse). Kept by the
/// thread that finished the request (usually the one that started it) and
/// made over in place there, a context's memory stays with the request
/// threads, and its old contents are dropped there too; the sink's worker
/// only lets go of a reference.
#[cfg(feature = "tower")]
mod spares {
    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::sync::Arc;

    use crate::context::{Inner, BANK};

    /// Contexts kept per thread.
    const KEPT: usize = 64;
    /// Kept contexts looked at per request (a context some code keeps is
    /// passed over, and dropped from the list when it reaches the end).
    const LOOKS: usize = 4;

    thread_local! {
        static SPARES: RefCell<VecDeque<Arc<Inner>>> = const { RefCell::new(VecDeque::new()) };
    }

    /// A kept context that nothing else holds any more (no strong or weak
    /// reference), to be made over.
    pub(super) fn take() -> Option<Arc<Inner>> {
        let spare = SPARES
            .try_with(|s| {
                let mut s = s.try_borrow_mut().ok()?;
                for _ in 0..LOOKS.min(s.len()) {
                    let mut a = s.pop_front()?;
                    if Arc::get_mut(&mut a).is_some() {
                        return Some(a);
                    }
                    s.push_back(a);
                }
                None
            })
            .ok()
            .flatten()?;
        // This thread's bank may still name the address (with no counts
        // left, or the context would not be unique): it starts over for
        // the new context as for any other.
        let ptr = Arc::as_ptr(&spare);
        let _ = BANK.try_with(|b| {
            if let Ok(mut b) = b.try_borrow_mut() {
                if b.ptr == ptr {
                    debug_assert_eq!(b.left, 0);
                    b.next = 1;
                }
            }
        });
        Some(spare)
    }

    /// Keeps `ctx` for [`take`]; past [`KEPT`], the oldest is let go.
    pub(super) fn keep(ctx: Arc<Inner>) {
        let old = SPARES
            .try_with(|s| {
                let mut s = s.try_borrow_mut().ok()?;
                let old = if s.len() >= KEPT { s.pop_front() } else { None };
                s.push_back(ctx);
                old
            })
            .ok()
            .flatten();
        drop(old);
    }
}

/// References to one context paid for in advance, up to [`BANK_SIZE`] at a
/// time.
///
/// Every audited call holds its context until its record is written, and a
/// non-blocking sink drops records on its worker thread: with one reference
/// count taken per call, the count's cache line would cross between the
/// caller's core and the worker's twice per call. Taking the references in
/// a row keeps the line with the caller for all but one call in
/// [`BANK_SIZE`].
///
/// The batch grows with use: the first call under a context takes one
/// reference, and each refill for the same context takes twice as many as
/// the last, up to [`BANK_SIZE`]. A service that makes a new context per
/// request, with a few audited calls each, so pays about one count per call
/// and returns at most as many unused ones as it used, instead of taking and
/// returning a full batch per request. The context then lives until the
/// thread's bank moves on to another context or the thread ends.
struct Bank {
    ptr: *const Inner,
    /// Strong counts held for `ptr` and not yet handed out.
    left: usize,
    /// How many the next refill for `ptr` takes.
    next: usize,
}

const BANK_SIZE: usize = 64;

impl Bank {
    const EMPTY: Bank = Bank {
        ptr: std::ptr::null(),
        left: 0,
        next: 1,
    };

    fn release(&mut self) {
        for _ in 0..self.left {
            // SAFETY: `left` strong counts of the `Arc` behind `ptr` were
            // taken by `Bank::take` and never handed out.
            unsafe { Arc::decrement_strong_count(self.ptr) };
        }
        self.left = 0;
    }

    /// One strong reference to `ctx`'s `Arc`, from the bank.
    fn take(&mut self, ctx: &AuditContext) -> AuditContext {
        let ptr = Arc::as_ptr(&ctx.0);
        if self.ptr != ptr {
            self.release();
            self.next = 1;
        }
        // Always the live context's pointer: with no spares left, the bank
        // holds no count, its context may have been freed and a new one
        // allocated at the same address, and the old pointer (equal, but of
        // the freed allocation) must not be used for the new one's counts
        // (found by Miri).
        self.ptr = ptr;
        if self.left == 0 {
            for _ in 0..self.next {
                // SAFETY: `ptr` comes from a live `Arc` (`ctx`).
                unsafe { Arc::increment_strong_count(ptr) };
            }
            self.left = self.next;
            self.next = (self.next * 2).min(BANK_SIZE);
        }
        self.left -= 1;
        // SAFETY: hands over one of the strong counts the bank holds for
        // `ptr`, which came from `Arc::as_ptr` of the same type.
        AuditContext(unsafe { Arc::from_raw(ptr) })
    }
}

impl Drop for Bank {
    fn drop(&mut self) {
        self.release();
    }
}

impl AuditContext {
    /// An empty context.
    pub fn new() -> AuditContext {
        AuditContext::default()
    }

    /// Sets one field through `f`, which fits it to the schema and notes
    /// its corrections.
    fn edit(mut self, slot: usize, f: impl FnOnce(&mut Inner, &mut Fixes)) -> AuditContext {
        // An edited copy of a request's context keeps its calls in the
        // request's scope.
        #[cfg(feature = "tower")]
        let request = match &self.0.scope {
            ScopeSlot::Own(_) => Some(Arc::clone(&self.0)),
            _ => None,
        };
        let inner = Arc::make_mut(&mut self.0);
        #[cfg(feature = "tower")]
        if let Some(request) = request {
            inner.scope = ScopeSlot::Of(request);
        }
        let mut fixes = Fixes::default();
        f(inner, &mut fixes);
        inner.slot_fixes[slot] = fixes;
        let mut total = Fixes::default();
        for f in &inner.slot_fixes {
            total.add(*f);
        }
        inner.fixes = total;
        inner.any_fixes = !total.is_none();
        inner.fragments = FragmentCell::default();
        self
    }

    /// The corrections made to this context's fields (counted for every
    /// event they go into), if any.
    #[inline]
    pub(crate) fn fixes(&self) -> Option<Fixes> {
        self.0.any_fixes.then_some(self.0.fixes)
    }

    /// This context's parts of an event's JSON, rendered and kept from its
    /// second use on; `None` the first time, when the encoder writes them
    /// straight into the event ([`AuditContext::write_actor`],
    /// [`AuditContext::write_tail`]): a context per request is mostly used
    /// once, and rendering it apart cost an allocation and a copy.
    pub(crate) fn fragments(&self) -> Option<&Fragments> {
        let cell = &self.0.fragments;
        if let Some(f) = cell.0.get() {
            return Some(f);
        }
        if !cell.1.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        Some(cell.0.get_or_init(|| {
            let mut actor_end = None;
            let buf = crate::json::encode::rendered(|out| {
                if self.write_actor(out) {
                    actor_end = Some(out.len());
                }
                self.write_tail(out);
            });
            Fragments { buf, actor_end }
        }))
    }

    /// Writes `,"actor":{..}` when the context names the actor (returns
    /// whether it did).
    pub(crate) fn write_actor(&self, out: &mut Vec<u8>) -> bool {
        match &self.0.actor {
            ActorSlot::None => false,
            ActorSlot::Own(a) => {
                crate::json::encode::actor(out, a);
                true
            }
            #[cfg(feature = "tower")]
            ActorSlot::Ready(r) => match &r.0.json {
                Some(json) => {
                    out.extend_from_slice(json);
                    true
                }
                None => false,
            },
        }
    }

    /// Writes `,"correlation":{..},"http":{..}` (each when present), the
    /// response status included once known.
    pub(crate) fn write_tail(&self, out: &mut Vec<u8>) {
        #[cfg(feature = "tower")]
        let status = self.status();
        #[cfg(not(feature = "tower"))]
        let status = None;
        crate::json::encode::context_tail_status(
            out,
            self.0.correlation.as_ref().filter(|c| !c.is_empty()),
            self.0.http.as_ref(),
            status,
        )
    }

    /// Sets the actor. Its strings are fitted to the schema (see
    /// [`Dispatch::emit`](crate::Dispatch::emit)); an actor with an empty
    /// id is left out, so the config's default actor stands in.
    pub fn actor(self, actor: Actor) -> AuditContext {
        self.edit(SLOT_ACTOR, |i, f| {
            i.actor = clamp::actor(actor, f).map_or(ActorSlot::None, ActorSlot::Own)
        })
    }

    fn correlation_id(
        self,
        slot: usize,
        id: Text,
        field: fn(&mut Correlation) -> &mut Option<Text>,
    ) -> AuditContext {
        self.edit(slot, |i, f| {
            let mut id = Some(id);
            clamp::opt(&mut id, clamp::ID, f);
            let c = i.correlation.get_or_insert_with(Default::default);
            *field(c) = id;
            if c.is_empty() {
                i.correlation = None;
            }
        })
    }

    /// Sets the request id (1 to 256 characters; an empty one is left out).
    pub fn request_id(self, id: impl Into<Text>) -> AuditContext {
        self.correlation_id(SLOT_REQUEST, id.into(), |c| &mut c.request_id)
    }

    /// Sets the trace id (1 to 256 characters; an empty one is left out).
    pub fn trace_id(self, id: impl Into<Text>) -> AuditContext {
        self.correlation_id(SLOT_TRACE, id.into(), |c| &mut c.trace_id)
    }

    /// Sets the session id (1 to 256 characters; an empty one is left out).
    pub fn session_id(self, id: impl Into<Text>) -> AuditContext {
        self.correlation_id(SLOT_SESSION, id.into(), |c| &mut c.session_id)
    }

    /// Sets the HTTP request details (method, route template, client IP...).
    /// A client IP that is not an IP address and a status code outside
    /// 100..=599 are left out; the route and user agent are cut to 512
    /// characters.
    pub fn http(self, mut http: Http) -> AuditContext {
        self.edit(SLOT_HTTP, |i, f| {
            clamp::http(&mut http, f);
            i.http = Some(http);
        })
    }

    /// The actor, if set.
    pub fn actor_ref(&self) -> Option<&Actor> {
        self.0.actor.get()
    }

    /// The correlation ids, if any is set.
    pub fn correlation(&self) -> Option<&Correlation> {
        self.0.correlation.as_ref()
    }

    /// The HTTP details, if set, as the request arrived: the response
    /// status that `AuditLayer` adds to events is not among them.
    pub fn http_ref(&self) -> Option<&Http> {
        self.0.http.as_ref()
    }

    /// The `http` block of an event made under this context: the details,
    /// with the response status once the request has one.
    pub(crate) fn http_for_event(&self) -> Option<std::borrow::Cow<'_, Http>> {
        let http = self.0.http.as_ref()?;
        #[cfg(feature = "tower")]
        if let Some(status) = self.status() {
            let mut h = http.clone();
            h.status_code = Some(status);
            return Some(std::borrow::Cow::Owned(h));
        }
        Some(std::borrow::Cow::Borrowed(http))
    }

    /// A context with all of its parts at once (one allocation), for
    /// `AuditLayer`: `http.client_ip` must be an address written from an
    /// `IpAddr` (it is not checked again).
    #[cfg(feature = "tower")]
    pub(crate) fn for_request(
        actor: ReadyActor,
        correlation: Option<Correlation>,
        http: Option<Http>,
        held_limit: Option<usize>,
    ) -> AuditContext {
        // Fitted as the builder methods fit them (the layer clamps what it
        // reads from headers already; this is the same guarantee for every
        // way a context is made).
        let mut slot_fixes = [Fixes::default(); SLOTS];
        slot_fixes[SLOT_ACTOR] = actor.0.fixes;
        let correlation = correlation.and_then(|mut c| {
            clamp::opt(&mut c.request_id, clamp::ID, &mut slot_fixes[SLOT_REQUEST]);
            clamp::opt(&mut c.trace_id, clamp::ID, &mut slot_fixes[SLOT_TRACE]);
            clamp::opt(&mut c.session_id, clamp::ID, &mut slot_fixes[SLOT_SESSION]);
            (!c.is_empty()).then_some(c)
        });
        let http = http.map(|mut h| {
            // Written from an `IpAddr` by the layer: no need to parse it
            // back.
            let ip = h.client_ip.take();
            clamp::http(&mut h, &mut slot_fixes[SLOT_HTTP]);
            h.client_ip = ip;
            h
        });
        let mut fixes = Fixes::default();
        for f in &slot_fixes {
            fixes.add(*f);
        }
        let any_fixes = !fixes.is_none();
        if let Some(mut spare) = spares::take() {
            if let Some(i) = Arc::get_mut(&mut spare) {
                // Made over field by field (the old values are dropped
                // here, on this thread), the request scope reset in place.
                i.actor = ActorSlot::Ready(actor);
                i.correlation = correlation;
                i.http = http;
                i.fragments = FragmentCell::default();
                i.slot_fixes = slot_fixes;
                i.fixes = fixes;
                i.any_fixes = any_fixes;
                match (&mut i.scope, held_limit) {
                    (ScopeSlot::Own(s), Some(limit)) => s.reset(limit),
                    (slot, limit) => *slot = ScopeSlot::request(limit),
                }
                i.status = StatusCell::default();
                return AuditContext(spare);
            }
        }
        AuditContext(Arc::new(Inner {
            actor: ActorSlot::Ready(actor),
            correlation,
            http,
            fragments: FragmentCell::default(),
            slot_fixes,
            fixes,
            any_fixes,
            scope: ScopeSlot::request(held_limit),
            status: StatusCell::default(),
        }))
    }

    /// Keeps this request's context (the layer calls it when the request
    /// ended) to be made over for a later request on this thread, once the
    /// records and copies holding it are gone.
    #[cfg(feature = "tower")]
    pub(crate) fn recycle(&self) {
        if matches!(self.0.scope, ScopeSlot::Own(_)) {
            spares::keep(Arc::clone(&self.0));
        }
    }

    /// The request whose audited calls wait for its response status.
    #[cfg(feature = "tower")]
    #[inline(always)]
    pub(crate) fn request_scope(&self) -> Option<&crate::web::RequestScope> {
        match &self.0.scope {
            ScopeSlot::None => None,
            ScopeSlot::Own(s) => Some(s),
            ScopeSlot::Of(request) => match &request.scope {
                ScopeSlot::Own(s) => Some(s),
                _ => None,
            },
        }
    }

    /// The response status, once [`AuditContext::set_status`] set it.
    #[cfg(feature = "tower")]
    #[inline]
    pub(crate) fn status(&self) -> Option<u16> {
        match self.0.status.0.load(std::sync::atomic::Ordering::Acquire) {
            0 => None,
            s => Some(s),
        }
    }

    /// Sets the response status (kept only in 100..=599, as the schema
    /// allows). Call it before anything with this context is written: the
    /// rendered fragments are cached.
    #[cfg(feature = "tower")]
    pub(crate) fn set_status(&self, status: Option<u16>) {
        if let Some(s) = status.filter(|s| (100..=599).contains(s)) {
            self.0
                .status
                .0
                .store(s, std::sync::atomic::Ordering::Release);
        }
    }

    /// A copy of this context with `status` and without a request scope:
    /// for events written apart from the request's own context.
    #[cfg(feature = "tower")]
    pub(crate) fn detached(&self, status: Option<u16>) -> AuditContext {
        let mut inner = Inner::clone(&self.0);
        inner.scope = ScopeSlot::None;
        inner.status = StatusCell::default();
        let ctx = AuditContext(Arc::new(inner));
        ctx.set_status(status);
        ctx
    }

    /// The context's identity (its allocation's address): equal for
    /// clones of one context, different for an edited copy. Compare only
    /// while both contexts are alive (or see [`ContextId`]).
    #[cfg(feature = "tower")]
    pub(crate) fn addr(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// This context's identity, without keeping it alive.
    #[cfg(feature = "tower")]
    pub(crate) fn id(&self) -> ContextId {
        ContextId(Arc::downgrade(&self.0))
    }

    /// The context installed on this thread (by `in_scope`, or by `scope`
    /// while its future is being polled).
    pub fn current() -> Option<AuditContext> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// [`AuditContext::current`] for an audited call: the same context,
    /// its reference taken from this thread's [`Bank`].
    pub(crate) fn current_for_call() -> Option<AuditContext> {
        CURRENT
            .try_with(|c| {
                let cur = c.borrow();
                let ctx = cur.as_ref()?;
                Some(
                    BANK.try_with(|b| match b.try_borrow_mut() {
                        Ok(mut bank) => bank.take(ctx),
                        Err(_) => ctx.clone(),
                    })
                    .unwrap_or_else(|_| ctx.clone()),
                )
            })
            .ok()
            .flatten()
    }

    /// Runs `f` with this context installed; the previous one is restored
    /// afterwards, also when `f` panics.
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let _restore = Swap::install(Some(self.clone()));
        f()
    }

    /// Wraps `future` so that this context is installed whenever it is polled.
    pub fn scope<F: Future>(&self, future: F) -> Scoped<F> {
        Scoped {
            ctx: self.clone(),
            future,
        }
    }
}

/// A context's identity that does not keep it alive, and whose address no
/// other context can take while it exists (a weak reference keeps the
/// allocation).
#[cfg(feature = "tower")]
pub(crate) struct ContextId(std::sync::Weak<Inner>);

#[cfg(feature = "tower")]
impl ContextId {
    /// True when `ctx` is the context this identifies.
    pub(crate) fn is(&self, ctx: &AuditContext) -> bool {
        std::ptr::eq(self.0.as_ptr(), Arc::as_ptr(&ctx.0))
    }
}

/// Installs a context for its lifetime and restores the previous one on drop.
struct Swap(Option<AuditContext>);

impl Swap {
    fn install(ctx: Option<AuditContext>) -> Swap {
        Swap(CURRENT.with(|c| c.replace(ctx)))
    }
}

impl Drop for Swap {
    fn drop(&mut self) {
        let prev = self.0.take();
        // During thread teardown the slot may be gone; nothing to restore then.
        let _ = CURRENT.try_with(|c| c.replace(prev));
    }
}

pin_project_lite::pin_project! {
    /// A future running inside an [`AuditContext`]; see [`AuditContext::scope`].
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct Scoped<F> {
        ctx: AuditContext,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _restore = Swap::install(Some(this.ctx.clone()));
        this.future.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// References handed out for calls are real ones, and the bank gives
    /// back what it holds when the thread moves to another context and when
    /// the thread ends: no context outlives its last user for long.
    #[test]
    fn the_bank_returns_every_reference() {
        let a = AuditContext::new().request_id("req-a");
        let b = AuditContext::new().request_id("req-b");
        let (a2, b2) = (a.clone(), b.clone());
        std::thread::spawn(move || {
            let held: Vec<AuditContext> = a2.in_scope(|| {
                (0..BANK_SIZE * 2 + 3)
                    .map(|_| AuditContext::current_for_call().unwrap())
                    .collect()
            });
            assert!(held.iter().all(|c| Arc::ptr_eq(&c.0, &a2.0)));
            // Ours, the test's and the held ones, and the bank's spares.
            assert!(Arc::strong_count(&a2.0) >= 2 + held.len());
            drop(held);
            b2.in_scope(|| {
                drop(AuditContext::current_for_call());
                drop(AuditContext::current_for_call());
            });
            // Moving to `b` gave `a`'s spares back.
            assert_eq!(Arc::strong_count(&a2.0), 2);
            assert!(Arc::strong_count(&b2.0) > 2);
        })
        .join()
        .unwrap();
        // The thread ended: its bank gave back `b`'s spares.
        assert_eq!(Arc::strong_count(&a.0), 1);
        assert_eq!(Arc::strong_count(&b.0), 1);
        assert!(AuditContext::current_for_call().is_none());
    }

    /// A context per request: the bank takes no more than the calls use
    /// (at most twice as many), so short-lived contexts do not each pay for
    /// a full batch.
    #[test]
    // The spare counts depend on whether the allocator gives a new context
    // the address of the one just freed (the bank then takes it for the
    // same context and keeps growing its batch): Miri's allocator does.
    #[cfg_attr(miri, ignore = "spare counts depend on address reuse")]
    fn spares_grow_with_use() {
        std::thread::spawn(|| {
            for uses in [1usize, 2, 3, 5, 17, 64, 65, 200] {
                let ctx = AuditContext::new().request_id(format!("req-{uses}"));
                let held: Vec<AuditContext> = ctx.in_scope(|| {
                    (0..uses)
                        .map(|_| AuditContext::current_for_call().unwrap())
                        .collect()
                });
                let spares = Arc::strong_count(&ctx.0) - 1 - held.len();
                assert!(spares < uses.max(2), "{uses} calls left {spares} spares");
                if uses == 1 {
                    assert_eq!(spares, 0);
                }
                assert!(spares < BANK_SIZE);
            }
        })
        .join()
        .unwrap();
    }

    /// A request's context made over for a later request is one nothing
    /// holds any more: a context kept by code (a clone, a record, an
    /// identity) keeps its contents, and the bank starts over for a made
    /// over context.
    #[cfg(feature = "tower")]
    #[test]
    fn request_contexts_are_made_over_only_when_nothing_holds_them() {
        fn request(id: &str) -> AuditContext {
            AuditContext::for_request(
                ReadyActor::fit(Actor::human("user-1")),
                Some(Correlation {
                    request_id: Some(Text::from(id)),
                    ..Correlation::default()
                }),
                None,
                Some(8),
            )
        }
        fn request_id(c: &AuditContext) -> String {
            let id = c.correlation().and_then(|c| c.request_id.as_ref());
            id.map(|t| t.to_string()).unwrap_or_default()
        }
        std::thread::spawn(|| {
            let kept = request("req-kept");
            kept.recycle();
            let weak = request("req-weak");
            let weak_id = weak.id();
            weak.recycle();
            drop(weak);
            // A call's reference from the bank, then the request ends.
            let banked = request("req-banked");
            let call = banked.in_scope(|| AuditContext::current_for_call().unwrap());
            banked.recycle();
            drop(banked);

            let mut made = Vec::new();
            for i in 0..200 {
                let c = request(&format!("req-{i}"));
                assert_ne!(c.addr(), kept.addr());
                assert!(!weak_id.is(&c));
                assert_ne!(c.addr(), call.addr());
                assert_eq!(request_id(&c), format!("req-{i}"));
                made.push(c.addr());
                c.recycle();
            }
            assert_eq!(request_id(&kept), "req-kept");
            assert_eq!(request_id(&call), "req-banked");
            // Once let go, contexts are made over: few new allocations.
            let distinct: std::collections::HashSet<usize> = made.iter().copied().collect();
            assert!(distinct.len() <= 8, "{} allocations", distinct.len());
            // The bank starts over for a made-over context at its address.
            drop(call);
            let c = request("req-again");
            let held: Vec<AuditContext> = c.in_scope(|| {
                (0..1)
                    .map(|_| AuditContext::current_for_call().unwrap())
                    .collect()
            });
            assert_eq!(Arc::strong_count(&c.0), 2, "no spare counts for one call");
            drop(held);
        })
        .join()
        .unwrap();
    }
}
