//! The audit context and scoped dispatcher across tasks and threads.
//!
//! An [`AuditContext`] and a scoped [`Dispatch`] are installed per thread,
//! while a scope runs or a scoped future is polled. A new task or thread
//! starts without them, as a new `tracing` task starts outside its parent's
//! span: plain `tokio::spawn`, `tokio::task::spawn_blocking` and
//! `std::thread::spawn` do not carry them. Audited calls there record the
//! config's default actor and no correlation ids, and go to the global
//! dispatcher (or, without one, nowhere: counted by
//! [`stats::undispatched`](crate::stats::undispatched)).
//!
//! [`spawn`] and [`spawn_blocking`] (feature `tokio`) carry both;
//! [`carry`] and [`CurrentScope`] do the same for any executor or thread.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use crate::context::AuditContext;
use crate::dispatch::{self, Dispatch};

/// The audit context and scoped dispatcher of the calling thread, captured
/// to be installed on another task or thread.
///
/// ```
/// use phi_audit::{AuditContext, CurrentScope};
/// let ctx = AuditContext::new().request_id("req-7");
/// let captured = ctx.in_scope(CurrentScope::capture);
/// std::thread::spawn(move || {
///     captured.in_scope(|| {
///         let cur = AuditContext::current().unwrap();
///         assert_eq!(cur.correlation().unwrap().request_id.as_deref(), Some("req-7"));
///     })
/// })
/// .join()
/// .unwrap();
/// ```
#[derive(Clone, Debug, Default)]
pub struct CurrentScope {
    context: Option<AuditContext>,
    dispatch: Option<Dispatch>,
}

impl CurrentScope {
    /// The context and scoped dispatcher installed on this thread now
    /// (either may be absent; the global dispatcher needs no carrying).
    pub fn capture() -> CurrentScope {
        CurrentScope {
            context: AuditContext::current(),
            dispatch: dispatch::local(),
        }
    }

    /// The captured context, if there was one.
    pub fn context(&self) -> Option<&AuditContext> {
        self.context.as_ref()
    }

    /// Runs `f` with what was captured installed (what was absent is left
    /// as it is on this thread).
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let with_dispatch = || match &self.dispatch {
            Some(d) => dispatch::with_dispatch(d, f),
            None => f(),
        };
        match &self.context {
            Some(c) => c.in_scope(with_dispatch),
            None => with_dispatch(),
        }
    }

    /// Wraps `future` so that what was captured is installed whenever it is
    /// polled.
    pub fn scope<F: Future>(self, future: F) -> Carried<F> {
        Carried {
            scope: self,
            future,
        }
    }
}

/// Wraps `future` so that the calling thread's audit context and scoped
/// dispatcher are installed whenever it is polled, wherever that is: for
/// executors other than tokio, `futures::join_all` over spawned work, or a
/// future handed to another thread.
pub fn carry<F: Future>(future: F) -> Carried<F> {
    CurrentScope::capture().scope(future)
}

pin_project_lite::pin_project! {
    /// A future carrying an audit context and dispatcher; see [`carry`].
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct Carried<F> {
        scope: CurrentScope,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for Carried<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let future = this.future;
        this.scope.in_scope(|| future.poll(cx))
    }
}

/// `tokio::spawn` that carries the caller's audit context and scoped
/// dispatcher into the new task (feature `tokio`; call it inside a tokio
/// runtime, as `tokio::spawn`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use phi_audit::AuditContext;
/// let ctx = AuditContext::new().request_id("req-9");
/// let seen = ctx
///     .scope(async {
///         phi_audit::spawn(async { AuditContext::current().is_some() }).await.unwrap()
///     })
///     .await;
/// assert!(seen);
/// let lost = ctx
///     .scope(async { tokio::spawn(async { AuditContext::current().is_some() }).await.unwrap() })
///     .await;
/// assert!(!lost, "plain tokio::spawn does not carry the context");
/// # }
/// ```
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(carry(future))
}

/// `tokio::task::spawn_blocking` that carries the caller's audit context
/// and scoped dispatcher to the blocking thread (feature `tokio`).
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub fn spawn_blocking<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let scope = CurrentScope::capture();
    tokio::task::spawn_blocking(move || scope.in_scope(f))
}
