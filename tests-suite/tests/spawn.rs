//! The audit context and scoped dispatcher across tasks: `phi_audit::spawn`
//! and `spawn_blocking` carry them, plain `tokio::spawn` does not (as a
//! `tracing` span is not carried into a spawned task).

use phi_audit::{
    audited, carry, Actor, AuditContext, AuditEvent, Config, CurrentScope, Dispatch, MemorySink,
};

#[audited(action = "READ", resource = "Patient", id = id)]
async fn read_async(id: &'static str) -> &'static str {
    tokio::task::yield_now().await;
    id
}

#[audited(action = "READ", resource = "Lab", id = id)]
fn read_sync(id: &'static str) -> &'static str {
    id
}

fn pipeline() -> (Dispatch, MemorySink) {
    let sink = MemorySink::new();
    let d = Dispatch::new(Config::new("svc").build().unwrap(), sink.clone());
    (d, sink)
}

fn ctx() -> AuditContext {
    AuditContext::new()
        .actor(Actor::human("dr-spawn"))
        .request_id("req-spawn")
}

fn assert_carried(e: &AuditEvent) {
    assert_eq!(e.actor.subject_id, "dr-spawn");
    assert_eq!(
        e.correlation.as_ref().unwrap().request_id.as_deref(),
        Some("req-spawn")
    );
}

/// Under a scoped dispatcher, events of a `phi_audit::spawn`ed task and of
/// `spawn_blocking` reach that dispatcher with the caller's context (with
/// plain `tokio::spawn` they were not written at all: no dispatcher there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_and_spawn_blocking_carry_context_and_dispatch() {
    let (d, sink) = pipeline();
    let out = d
        .scope(ctx().scope(async {
            let a = phi_audit::spawn(read_async("p-1")).await.unwrap();
            let b = phi_audit::spawn_blocking(|| read_sync("l-1"))
                .await
                .unwrap();
            // Nested: a task spawned from a spawned task.
            let c = phi_audit::spawn(async { phi_audit::spawn(read_async("p-2")).await.unwrap() })
                .await
                .unwrap();
            (a, b, c)
        }))
        .await;
    assert_eq!(out, ("p-1", "l-1", "p-2"));
    let events = sink.events();
    assert_eq!(events.len(), 3);
    for e in &events {
        assert_carried(e);
        phi_audit::validate(e).unwrap();
    }
    let ids: Vec<_> = events
        .iter()
        .map(|e| e.resource.id.clone().unwrap())
        .collect();
    assert!(ids.iter().any(|i| i == "p-1") && ids.iter().any(|i| i == "l-1"));
}

/// Plain `tokio::spawn` and `spawn_blocking` start without the context and
/// without the scoped dispatcher: the documented behaviour, as `tracing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tokio_spawn_carries_nothing() {
    let (d, sink) = pipeline();
    let seen = d
        .scope(ctx().scope(async {
            let task = tokio::spawn(async {
                (
                    AuditContext::current().is_some(),
                    phi_audit::current().is_some(),
                )
            })
            .await
            .unwrap();
            let blocking = tokio::task::spawn_blocking(|| {
                (
                    AuditContext::current().is_some(),
                    phi_audit::current().is_some(),
                )
            })
            .await
            .unwrap();
            let here = (
                AuditContext::current().is_some(),
                phi_audit::current().is_some(),
            );
            (task, blocking, here)
        }))
        .await;
    // This test binary installs no global dispatcher.
    assert_eq!(seen, ((false, false), (false, false), (true, true)));
    assert!(sink.events().is_empty());
}

/// `carry` and `CurrentScope` do the same for any executor or thread.
#[test]
fn carry_and_current_scope_without_tokio() {
    let (d, sink) = pipeline();
    let (fut, captured) = phi_audit::with_dispatch(&d, || {
        ctx().in_scope(|| (carry(read_async_free("p-9")), CurrentScope::capture()))
    });
    // Polled on another thread, outside any scope.
    let out = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(fut)
    })
    .join()
    .unwrap();
    assert_eq!(out, "p-9");
    std::thread::spawn(move || captured.in_scope(|| read_sync("l-9")))
        .join()
        .unwrap();
    let events = sink.events();
    assert_eq!(events.len(), 2);
    events.iter().for_each(assert_carried);
}

#[audited(action = "READ", resource = "Patient", id = id)]
async fn read_async_free(id: &'static str) -> &'static str {
    id
}
