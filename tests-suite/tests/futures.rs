//! `#[audited]` on functions that return futures built by hand or by
//! `#[async_trait]`: the event is emitted when the returned future completes,
//! with its outcome, exactly as for an `async fn` (checked field by field
//! against an `async fn` doing the same), and the future stays `Send`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use phi_audit::{
    audited, schema, AuditContext, AuditError, AuditEvent, Config, Dispatch, MemorySink, Outcome,
    OutcomeStatus, PseudonymKey, Timestamp, ValidationPolicy,
};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Ok,
    Fail,
    Deny,
    Panic,
    /// Never completes: the test drops the future.
    Pending,
}

const MODES: [Mode; 5] = [Mode::Ok, Mode::Fail, Mode::Deny, Mode::Panic, Mode::Pending];

#[derive(Debug)]
enum AppError {
    Denied,
    Db,
}

impl AuditError for AppError {
    fn audit_outcome(&self) -> Outcome {
        match self {
            AppError::Denied => Outcome::denied("RoleDenied").with_message("role lacks chart:read"),
            AppError::Db => Outcome::failure("DatabaseError", "database unavailable"),
        }
    }
}

/// The work of every shape: awaits once, then ends as `mode` says.
async fn work(mode: Mode) -> Result<u32, AppError> {
    tokio::task::yield_now().await;
    match mode {
        Mode::Ok => Ok(7),
        Mode::Fail => Err(AppError::Db),
        Mode::Deny => Err(AppError::Denied),
        // The payload holds PHI: it must never reach the event.
        Mode::Panic => panic!("chart of Jane Doe"),
        Mode::Pending => std::future::pending().await,
    }
}

// ------------------------------------------------------------- the shapes

/// The reference: an `async fn`.
#[audited(action = "READ", resource = "Chart", id = id, name = "load")]
async fn reference(id: &str, mode: Mode) -> Result<u32, AppError> {
    work(mode).await
}

#[async_trait]
trait Repo {
    async fn load(
        &self,
        id: &str,
        #[allow(unused)] name: &str,
        mode: Mode,
    ) -> Result<u32, AppError>;
}

struct Charts;

#[async_trait]
impl Repo for Charts {
    #[audited(action = "READ", resource = "Chart", id = id)]
    async fn load(&self, id: &str, #[phi] name: &str, mode: Mode) -> Result<u32, AppError> {
        assert!(name.starts_with("Jane"));
        phi_audit::record!(shape = "async_trait");
        work(mode).await
    }
}

#[async_trait(?Send)]
trait LocalRepo {
    async fn load(&self, id: &str, mode: Mode) -> Result<u32, AppError>;
}

#[async_trait(?Send)]
impl LocalRepo for Charts {
    #[audited(action = "READ", resource = "Chart", id = id)]
    async fn load(&self, id: &str, mode: Mode) -> Result<u32, AppError> {
        work(mode).await
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// `Box::pin(async move { .. })` written by hand.
#[audited(action = "READ", resource = "Chart", id = id, name = "load")]
fn boxed(id: &str, mode: Mode) -> Pin<Box<dyn Future<Output = Result<u32, AppError>> + Send + '_>> {
    Box::pin(async move {
        let _ = id;
        work(mode).await
    })
}

/// Work before the future is made (which may panic), and two futures of
/// different types behind one boxed type.
#[audited(action = "READ", resource = "Chart", id = id, name = "load")]
fn boxed_with_prelude(
    id: String,
    mode: Mode,
    fail_early: bool,
) -> BoxFuture<'static, Result<u32, AppError>> {
    if fail_early {
        panic!("bad input for Jane Doe");
    }
    phi_audit::record!(prelude = true);
    if mode == Mode::Ok {
        return Box::pin(async move { work(Mode::Ok).await });
    }
    let id2 = id.clone();
    Box::pin(async move {
        let _ = id2;
        work(mode).await
    })
}

/// `impl Future`.
#[audited(action = "READ", resource = "Chart", id = id, name = "load")]
fn unboxed(id: &str, mode: Mode) -> impl Future<Output = Result<u32, AppError>> + Send + '_ {
    async move {
        let _ = id;
        phi_audit::record!(shape = "impl");
        work(mode).await
    }
}

// ------------------------------------------------------------ the harness

const NOW: i64 = 1_700_000_000_123;

fn pipeline() -> (Dispatch, MemorySink) {
    let sink = MemorySink::new();
    let d = Dispatch::new(
        Config::new("chart-service")
            .clock(|| Timestamp::from_unix_millis(NOW))
            .validate_on_emit(ValidationPolicy::Drop)
            .pseudonym_key(PseudonymKey::new(&[7; 32]).unwrap())
            .build()
            .unwrap(),
        sink.clone(),
    );
    (d, sink)
}

/// Runs `fut` under a fresh dispatcher (installed only around the future,
/// not where the function was called) to its end, or drops it when it
/// pends, and returns the events.
async fn run<F>(mode: Mode, fut: F) -> Vec<AuditEvent>
where
    F: Future + Send + 'static,
    F::Output: Send,
{
    let (dispatch, sink) = pipeline();
    let scoped = AuditContext::new()
        .request_id("req-1")
        .scope(dispatch.scope(fut));
    match mode {
        Mode::Pending => {
            let r = tokio::time::timeout(Duration::from_millis(20), scoped).await;
            assert!(r.is_err(), "the call never completes");
        }
        Mode::Panic => {
            let r = tokio::spawn(scoped).await;
            assert!(r.err().is_some_and(|e| e.is_panic()));
        }
        _ => {
            tokio::spawn(scoped).await.unwrap();
        }
    }
    assert_eq!(dispatch.stats().validation_failures, 0);
    sink.take()
}

/// The one event of a shape, compared with the reference's.
fn same_as_reference(mode: Mode, got: &[AuditEvent], want: &[AuditEvent], shape: &str) {
    assert_eq!(got.len(), 1, "{shape} {mode:?}: exactly one event");
    let (mut got, want) = (got[0].clone(), &want[0]);
    assert!(schema::validate(&got).is_ok());
    got.event_id = want.event_id;
    got.action.name = want.action.name.clone();
    got.metadata = want.metadata.clone();
    got.action.phi_touched = want.action.phi_touched;
    got.action.data_classification = want.action.data_classification;
    assert_eq!(&got, want, "{shape} {mode:?}");
    assert!(!got.to_json().contains("Jane"));
}

fn expected_status(mode: Mode) -> OutcomeStatus {
    match mode {
        Mode::Ok => OutcomeStatus::Success,
        Mode::Deny => OutcomeStatus::Denied,
        _ => OutcomeStatus::Failure,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shape_ends_as_an_async_fn_does() {
    for mode in MODES {
        let want = run(mode, reference("c-1", mode)).await;
        assert_eq!(want.len(), 1);
        assert_eq!(want[0].outcome.status, expected_status(mode), "{mode:?}");
        assert_eq!(
            want[0].correlation.as_ref().unwrap().request_id.as_deref(),
            Some("req-1"),
            "the context of where the future runs"
        );
        if mode == Mode::Pending {
            assert_eq!(want[0].outcome.error_type.as_deref(), Some("Cancelled"));
        }
        if mode == Mode::Panic {
            assert_eq!(want[0].outcome.error_type.as_deref(), Some("Panic"));
        }

        let got = run(mode, async move {
            Repo::load(&Charts, "c-1", "Jane Doe", mode).await
        })
        .await;
        same_as_reference(mode, &got, &want, "async_trait");
        assert_eq!(got[0].action.name.as_deref(), Some("load"));
        assert_eq!(got[0].action.phi_touched, Some(true));
        assert_eq!(
            got[0].metadata.get("shape"),
            Some(&phi_audit::MetaValue::Str("async_trait".into()))
        );

        let got = run(mode, boxed("c-1", mode)).await;
        same_as_reference(mode, &got, &want, "boxed");

        let got = run(mode, boxed_with_prelude("c-1".into(), mode, false)).await;
        same_as_reference(mode, &got, &want, "boxed_with_prelude");
        assert_eq!(
            got[0].metadata.get("prelude"),
            Some(&phi_audit::MetaValue::Bool(true)),
            "record! before the future is made counts"
        );

        let got = run(mode, unboxed("c-1", mode)).await;
        same_as_reference(mode, &got, &want, "impl Future");

        // `?Send` async-trait futures run on a local set.
        let local = tokio::task::LocalSet::new();
        let (dispatch, sink) = pipeline();
        let fut = AuditContext::new()
            .request_id("req-1")
            .scope(dispatch.scope(async move { LocalRepo::load(&Charts, "c-1", mode).await }));
        let r = local
            .run_until(async move {
                match mode {
                    Mode::Pending => tokio::time::timeout(Duration::from_millis(20), fut)
                        .await
                        .is_err(),
                    _ => tokio::task::spawn_local(fut).await.is_err() == (mode == Mode::Panic),
                }
            })
            .await;
        assert!(r);
        same_as_reference(mode, &sink.take(), &want, "async_trait ?Send");
    }
}

#[tokio::test]
async fn a_future_never_polled_records_nothing_as_an_async_fn() {
    let (dispatch, sink) = pipeline();
    dispatch.scope(async {}).await;
    phi_audit::with_dispatch(&dispatch, || {
        drop(reference("c-1", Mode::Ok));
        drop(boxed("c-1", Mode::Ok));
        drop(unboxed("c-1", Mode::Ok));
        drop(Repo::load(&Charts, "c-1", "Jane", Mode::Ok));
    });
    assert!(sink.take().is_empty());
}

#[test]
fn a_panic_while_the_future_is_made_is_recorded() {
    let (dispatch, sink) = pipeline();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = phi_audit::with_dispatch(&dispatch, || {
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            boxed_with_prelude("c-1".into(), Mode::Ok, true)
        }))
    });
    std::panic::set_hook(hook);
    assert!(r.is_err());
    let events = sink.take();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].outcome.error_type.as_deref(), Some("Panic"));
    assert!(!events[0].to_json().contains("Jane"));
}

#[test]
fn futures_stay_send() {
    fn is_send<T: Send>(_: &T) {}
    is_send(&Repo::load(&Charts, "c-1", "Jane", Mode::Ok));
    is_send(&boxed("c-1", Mode::Ok));
    is_send(&unboxed("c-1", Mode::Ok));
    is_send(&boxed_with_prelude("c-1".into(), Mode::Ok, false));
}
