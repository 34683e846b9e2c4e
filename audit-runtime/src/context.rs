//! The ambient request context: who is acting and which request this is.
//!
//! Set it once where a request enters the service (middleware, a message
//! handler) and every audited call below it picks it up.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};

use crate::event::{Actor, Correlation, Http};
use crate::text::Text;

/// Actor and correlation ids of the current request.
///
/// Cheap to clone (one reference count). Install it with
/// [`AuditContext::in_scope`] for synchronous code or [`AuditContext::scope`]
/// for a future; the future keeps its context across `.await` points and
/// worker threads, on any executor.
///
/// ```
/// use audit_runtime::{Actor, AuditContext};
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

#[derive(Clone, Debug, Default)]
struct Inner {
    actor: Option<Actor>,
    correlation: Option<Correlation>,
    http: Option<Http>,
    fragments: FragmentCell,
}

/// Parts of an event's JSON that come from a context, rendered the first
/// time a record needs them.
pub(crate) struct Fragments {
    /// `,"actor":{..}` when the context names the actor.
    pub(crate) actor: Option<Box<[u8]>>,
    /// `,"correlation":{..},"http":{..}` (each when present; may be empty).
    pub(crate) tail: Box<[u8]>,
}

/// Holds a context's [`Fragments`] once rendered. A copy starts empty: the
/// builder methods edit a copy, and its fragments must be rendered anew.
#[derive(Default)]
struct FragmentCell(OnceLock<Fragments>);

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
}

impl AuditContext {
    /// An empty context.
    pub fn new() -> AuditContext {
        AuditContext::default()
    }

    fn edit(mut self, f: impl FnOnce(&mut Inner)) -> AuditContext {
        let inner = Arc::make_mut(&mut self.0);
        f(inner);
        inner.fragments = FragmentCell::default();
        self
    }

    /// This context's parts of an event's JSON (rendered on first use).
    pub(crate) fn fragments(&self) -> &Fragments {
        self.0.fragments.0.get_or_init(|| Fragments {
            actor: self
                .0
                .actor
                .as_ref()
                .map(|a| crate::encode::rendered(|out| crate::encode::actor(out, a))),
            tail: crate::encode::rendered(|out| {
                crate::encode::context_tail(
                    out,
                    self.0.correlation.as_ref().filter(|c| !c.is_empty()),
                    self.0.http.as_ref(),
                )
            }),
        })
    }

    /// Sets the actor.
    pub fn actor(self, actor: Actor) -> AuditContext {
        self.edit(|i| i.actor = Some(actor))
    }

    /// Sets the request id.
    pub fn request_id(self, id: impl Into<Text>) -> AuditContext {
        self.edit(|i| {
            i.correlation
                .get_or_insert_with(Default::default)
                .request_id = Some(id.into())
        })
    }

    /// Sets the trace id.
    pub fn trace_id(self, id: impl Into<Text>) -> AuditContext {
        self.edit(|i| i.correlation.get_or_insert_with(Default::default).trace_id = Some(id.into()))
    }

    /// Sets the session id.
    pub fn session_id(self, id: impl Into<Text>) -> AuditContext {
        self.edit(|i| {
            i.correlation
                .get_or_insert_with(Default::default)
                .session_id = Some(id.into())
        })
    }

    /// Sets the HTTP request details (method, route template, client IP...).
    pub fn http(self, http: Http) -> AuditContext {
        self.edit(|i| i.http = Some(http))
    }

    /// The actor, if set.
    pub fn actor_ref(&self) -> Option<&Actor> {
        self.0.actor.as_ref()
    }

    /// The correlation ids, if any is set.
    pub fn correlation(&self) -> Option<&Correlation> {
        self.0.correlation.as_ref()
    }

    /// The HTTP details, if set.
    pub fn http_ref(&self) -> Option<&Http> {
        self.0.http.as_ref()
    }

    /// The context installed on this thread (by `in_scope`, or by `scope`
    /// while its future is being polled).
    pub fn current() -> Option<AuditContext> {
        CURRENT.with(|c| c.borrow().clone())
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

/// A future running inside an [`AuditContext`]; see [`AuditContext::scope`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Scoped<F> {
    ctx: AuditContext,
    future: F,
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        // SAFETY: `future` is structurally pinned: it is never moved out of
        // `self`, and `Scoped` has no `Drop` impl or `Unpin` impl that could
        // move it. `ctx` is not pinned and only cloned.
        let this = unsafe { self.get_unchecked_mut() };
        let _restore = Swap::install(Some(this.ctx.clone()));
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        future.poll(cx)
    }
}
