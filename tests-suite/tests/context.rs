//! The request context follows code: sync scopes, futures across `.await` and
//! worker threads (tokio multi-thread), and a hand-rolled executor.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use phi_audit::{ActionType, Actor, AuditContext, Config, Dispatch, EventBuilder, MemorySink};

fn actor_of(ev: &phi_audit::AuditEvent) -> String {
    ev.actor.subject_id.to_string()
}

#[test]
fn in_scope_nests_and_restores_after_panic() {
    let a = AuditContext::new().actor(Actor::human("a"));
    let b = AuditContext::new().actor(Actor::human("b"));
    a.in_scope(|| {
        let r = std::panic::catch_unwind(|| {
            b.in_scope(|| {
                assert_eq!(
                    AuditContext::current()
                        .unwrap()
                        .actor_ref()
                        .unwrap()
                        .subject_id,
                    "b"
                );
                panic!("inner");
            })
        });
        assert!(r.is_err());
        assert_eq!(
            AuditContext::current()
                .unwrap()
                .actor_ref()
                .unwrap()
                .subject_id,
            "a"
        );
    });
    assert!(AuditContext::current().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn context_follows_futures_across_awaits_and_worker_threads() {
    let sink = MemorySink::new();
    let dispatch = Dispatch::new(Config::new("svc").build().unwrap(), sink.clone());
    let mut tasks = Vec::new();
    for i in 0..32 {
        let ctx = AuditContext::new()
            .actor(Actor::human(format!("user-{i}")))
            .request_id(format!("req-{i}"));
        let task = dispatch.scope(ctx.scope(async move {
            for step in 0..10 {
                // Yield and sleep so the task migrates between worker threads.
                tokio::task::yield_now().await;
                tokio::time::sleep(std::time::Duration::from_micros(50)).await;
                EventBuilder::new(ActionType::Read, "Note")
                    .metadata("task", i)
                    .metadata("step", step)
                    .emit();
            }
        }));
        tasks.push(tokio::spawn(task));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let events = sink.events();
    assert_eq!(events.len(), 320);
    for e in &events {
        let i = match e.metadata.get("task") {
            Some(phi_audit::MetaValue::Int(i)) => *i,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(actor_of(e), format!("user-{i}"));
        assert_eq!(
            e.correlation.as_ref().unwrap().request_id.as_deref(),
            Some(format!("req-{i}").as_str())
        );
    }
    // Outside the scoped futures nothing is installed.
    assert!(AuditContext::current().is_none());
}

struct Noop;
impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// A minimal executor: polls on whatever thread calls it.
fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    let mut f = Box::pin(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

struct YieldOnce(bool);
impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

#[test]
fn context_works_on_any_executor_and_does_not_leak_between_polls() {
    let ctx = AuditContext::new().actor(Actor::human("exec-user"));
    let seen = block_on(ctx.scope(async {
        YieldOnce(false).await;
        AuditContext::current().map(|c| c.actor_ref().unwrap().subject_id.to_string())
    }));
    assert_eq!(seen.as_deref(), Some("exec-user"));
    assert!(AuditContext::current().is_none());
}
