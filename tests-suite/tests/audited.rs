//! `#[audited]` end to end: every shape of function × every outcome, each
//! emitted event checked field by field against a `MemorySink`.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use phi_audit::{
    audited, schema, with_dispatch, Action, ActionType, Actor, AuditContext, AuditError,
    AuditEvent, Config, DataClassification, Dispatch, MemorySink, MetaValue, Metadata, Outcome,
    PseudonymKey, Resource, SchemaVersion, Service, Text, Timestamp, ValidationPolicy,
};

const NOW: i64 = 1_700_000_000_123;
const SERVICE: &str = "chart-service";

fn pipeline(key: Option<PseudonymKey>) -> (Dispatch, MemorySink) {
    let sink = MemorySink::new();
    let mut cfg = Config::new(SERVICE)
        .environment("test")
        .clock(|| Timestamp::from_unix_millis(NOW))
        .validate_on_emit(ValidationPolicy::Drop);
    if let Some(k) = key {
        cfg = cfg.pseudonym_key(k);
    }
    let dispatch = Dispatch::new(cfg.build().expect("valid config"), sink.clone());
    (dispatch, sink)
}

/// How a test call should end.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Ok,
    Fail,
    Deny,
    Panic,
    /// Async only: never completes (the test drops the future).
    Pending,
}

const SYNC_MODES: [Mode; 4] = [Mode::Ok, Mode::Fail, Mode::Deny, Mode::Panic];

/// A low-level error, converted by `?` into [`AppError`].
#[derive(Debug)]
enum LowError {
    Db,
    Forbidden,
}

/// The application's error: declares its own audit outcome.
#[derive(Debug)]
enum AppError {
    Denied,
    Db,
}

impl From<LowError> for AppError {
    fn from(e: LowError) -> Self {
        match e {
            LowError::Db => AppError::Db,
            LowError::Forbidden => AppError::Denied,
        }
    }
}

impl AuditError for AppError {
    fn audit_outcome(&self) -> Outcome {
        match self {
            AppError::Denied => Outcome::denied("RoleDenied").with_message("role lacks chart:read"),
            AppError::Db => Outcome::failure("DatabaseError", "database unavailable"),
        }
    }
}

fn step(mode: Mode) -> Result<u32, LowError> {
    match mode {
        Mode::Ok => Ok(7),
        Mode::Fail => Err(LowError::Db),
        Mode::Deny => Err(LowError::Forbidden),
        // The payload holds PHI: it must never reach the event.
        Mode::Panic => panic!("chart of Jane Doe, SSN 123-45-6789"),
        Mode::Pending => unreachable!("sync shapes never pend"),
    }
}

fn outcome_of(mode: Mode) -> Outcome {
    match mode {
        Mode::Ok => Outcome::SUCCESS,
        Mode::Fail => Outcome::failure("DatabaseError", "database unavailable"),
        Mode::Deny => Outcome::denied("RoleDenied").with_message("role lacks chart:read"),
        Mode::Panic => Outcome::failure("Panic", "the audited call panicked"),
        Mode::Pending => Outcome::failure(
            "Cancelled",
            "the audited call was cancelled before completion",
        ),
    }
}

/// What an event must hold, besides the pipeline's constants.
struct Want {
    action: ActionType,
    name: &'static str,
    resource: &'static str,
    id: Option<&'static str>,
    patient: Option<&'static str>,
    actor: Actor,
    phi_touched: Option<bool>,
    classification: Option<DataClassification>,
    metadata: Vec<(&'static str, MetaValue)>,
    outcome: Outcome,
}

impl Want {
    fn new(action: ActionType, name: &'static str, resource: &'static str) -> Want {
        Want {
            action,
            name,
            resource,
            id: None,
            patient: None,
            actor: Actor::service(SERVICE),
            phi_touched: None,
            classification: None,
            metadata: Vec::new(),
            outcome: Outcome::SUCCESS,
        }
    }

    fn phi(mut self) -> Want {
        self.phi_touched = Some(true);
        self.classification = Some(DataClassification::Phi);
        self
    }

    fn id(mut self, id: &'static str) -> Want {
        self.id = Some(id);
        self
    }

    fn patient(mut self, id: &'static str) -> Want {
        self.patient = Some(id);
        self
    }

    fn actor(mut self, actor: Actor) -> Want {
        self.actor = actor;
        self
    }

    fn meta(mut self, key: &'static str, value: MetaValue) -> Want {
        self.metadata.push((key, value));
        self
    }

    fn outcome(mut self, mode: Mode) -> Want {
        self.outcome = outcome_of(mode);
        self
    }
}

/// Compares the whole event (every field) and validates it.
fn check(event: &AuditEvent, want: Want) {
    let mut metadata = Metadata::new();
    for (k, v) in want.metadata {
        metadata.insert_value(Text::from_static(k), v);
    }
    let expected = AuditEvent {
        schema_version: SchemaVersion::V1_1,
        event_id: event.event_id,
        timestamp: Timestamp::from_unix_millis(NOW),
        service: Service {
            name: Text::from_static(SERVICE),
            environment: Some(Text::from_static("test")),
            version: None,
        },
        actor: want.actor,
        action: Action {
            kind: want.action,
            name: Some(Text::from_static(want.name)),
            phi_touched: want.phi_touched,
            data_classification: want.classification,
        },
        resource: Resource {
            kind: Text::from_static(want.resource),
            id: want.id.map(Text::from_static),
            patient_id: want.patient.map(Text::from_static),
        },
        outcome: want.outcome,
        correlation: None,
        http: None,
        delegation: None,
        metadata,
        integrity: None,
    };
    assert_eq!(event, &expected);
    assert_eq!(event.event_id.get_version_num(), 4, "event_id is a UUIDv4");
    assert!(
        schema::validate(event).is_ok(),
        "event validates: {event:?}"
    );
    let json = event.to_json();
    for secret in ["Jane", "123-45-6789", "555-0100"] {
        assert!(!json.contains(secret), "PHI `{secret}` leaked into {json}");
    }
}

/// Runs `f` under a fresh pipeline, catching a panic (and checking it was
/// re-raised), and returns the one event it emitted.
fn one_event<R>(mode: Mode, f: impl FnOnce() -> R) -> AuditEvent {
    let (dispatch, sink) = pipeline(None);
    let r = with_dispatch(&dispatch, || catch_unwind(AssertUnwindSafe(f)));
    assert_eq!(
        r.is_err(),
        mode == Mode::Panic,
        "the panic continues unwinding"
    );
    let mut events = sink.take();
    assert_eq!(events.len(), 1, "exactly one event per call");
    events.remove(0)
}

// ---------------------------------------------------------------- free fns

#[audited(action = "READ", resource = "Patient", id = patient_id, patient = patient_id,
          metadata(page = page))]
fn free_sync(patient_id: &str, #[phi] name: &str, page: u32, mode: Mode) -> Result<u32, AppError> {
    assert!(name.starts_with("Jane"));
    if mode == Mode::Ok && page == 0 {
        return Ok(0); // early return
    }
    let v = step(mode)?;
    Ok(v + page)
}

#[test]
fn free_sync_every_outcome() {
    for mode in SYNC_MODES {
        let ev = one_event(mode, || free_sync("pat-1", "Jane Doe", 3, mode));
        check(
            &ev,
            Want::new(ActionType::Read, "free_sync", "Patient")
                .phi()
                .id("pat-1")
                .patient("pat-1")
                .meta("page", MetaValue::Int(3))
                .outcome(mode),
        );
    }
}

#[test]
fn early_return_and_values() {
    let (dispatch, sink) = pipeline(None);
    let v = with_dispatch(&dispatch, || free_sync("p", "Jane", 0, Mode::Ok));
    assert_eq!(v.unwrap(), 0);
    let v = with_dispatch(&dispatch, || free_sync("p", "Jane", 2, Mode::Ok));
    assert_eq!(v.unwrap(), 9);
    let events = sink.take();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.outcome == Outcome::SUCCESS));
}

#[audited(action = "READ", resource = "Patient", id = patient_id,
          actor = user, name = "read_chart", classification = "PII", phi_touched = false,
          metadata(reason = reason, page = page, cached = false))]
async fn free_async(
    user: String,
    patient_id: u64,
    reason: &'static str,
    page: u32,
    mode: Mode,
) -> Result<u32, AppError> {
    tokio::task::yield_now().await;
    if mode == Mode::Pending {
        std::future::pending::<()>().await;
    }
    drop(user); // the body may move what the attribute named
    Ok(step(mode)? + page)
}

fn want_async(mode: Mode) -> Want {
    let mut w = Want::new(ActionType::Read, "read_chart", "Patient")
        .id("42")
        .actor(Actor::human("dr-smith"))
        .meta("reason", MetaValue::Str(Text::from_static("treatment")))
        .meta("page", MetaValue::Int(2))
        .meta("cached", MetaValue::Bool(false))
        .outcome(mode);
    w.phi_touched = Some(false);
    w.classification = Some(DataClassification::Pii);
    w
}

/// Runs an async call under a fresh pipeline: to completion, or (for
/// `Pending`) until a timeout drops it.
async fn one_async_event<F>(mode: Mode, fut: F) -> AuditEvent
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + fmt::Debug,
{
    let (dispatch, sink) = pipeline(None);
    let scoped = dispatch.scope(fut);
    if mode == Mode::Pending {
        let r = tokio::time::timeout(Duration::from_millis(20), scoped).await;
        assert!(r.is_err(), "the call never completes");
    } else if mode == Mode::Panic {
        let r = tokio::spawn(scoped).await;
        assert!(r.unwrap_err().is_panic());
    } else {
        scoped.await;
    }
    let mut events = sink.take();
    assert_eq!(events.len(), 1, "exactly one event per call");
    events.remove(0)
}

const ASYNC_MODES: [Mode; 5] = [Mode::Ok, Mode::Fail, Mode::Deny, Mode::Panic, Mode::Pending];

#[tokio::test]
async fn free_async_every_outcome() {
    for mode in ASYNC_MODES {
        let fut = free_async("dr-smith".to_string(), 42, "treatment", 2, mode);
        let ev = one_async_event(mode, fut).await;
        check(&ev, want_async(mode));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_calls_are_send_and_move_across_threads() {
    let (dispatch, sink) = pipeline(None);
    let handle = tokio::spawn(dispatch.scope(free_async(
        "dr-smith".to_string(),
        42,
        "treatment",
        2,
        Mode::Ok,
    )));
    assert_eq!(handle.await.unwrap().unwrap(), 9);
    check(&sink.take()[0], want_async(Mode::Ok));
}

// ---------------------------------------------------------------- methods

struct Chart {
    id: u64,
    views: u32,
}

impl Chart {
    #[audited(action = "READ", resource = "Chart", id = self.id)]
    fn by_ref(&self, mode: Mode) -> Result<u32, AppError> {
        Ok(step(mode)? + self.views)
    }

    /// Returns a borrow of `self`: the body runs as `FnOnce`.
    #[audited(action = "UPDATE", resource = "Chart", id = self.id)]
    fn by_mut(&mut self, mode: Mode) -> Result<&mut u32, AppError> {
        step(mode)?;
        self.views += 1;
        Ok(&mut self.views)
    }

    #[audited(action = "DELETE", resource = "Chart", id = self.id)]
    fn by_value(self, mode: Mode) -> Result<u64, AppError> {
        let Chart { id, .. } = self; // moves self
        step(mode)?;
        Ok(id)
    }

    #[audited(action = "CREATE", resource = "Chart", id = id)]
    fn create(id: u64, mode: Mode) -> Result<Chart, AppError> {
        step(mode)?;
        Ok(Chart { id, views: 0 })
    }

    #[audited(action = "READ", resource = "Chart", id = self.id)]
    async fn by_ref_async(&self, mode: Mode) -> Result<u32, AppError> {
        tokio::task::yield_now().await;
        if mode == Mode::Pending {
            std::future::pending::<()>().await;
        }
        Ok(step(mode)? + self.views)
    }
}

#[test]
fn inherent_methods_every_outcome() {
    for mode in SYNC_MODES {
        let chart = Chart { id: 5, views: 1 };
        let ev = one_event(mode, || chart.by_ref(mode).map(|_| ()));
        check(
            &ev,
            Want::new(ActionType::Read, "by_ref", "Chart")
                .id("5")
                .outcome(mode),
        );

        let mut chart = Chart { id: 6, views: 1 };
        let ev = one_event(mode, || {
            if let Ok(v) = chart.by_mut(mode) {
                *v += 10;
            }
        });
        check(
            &ev,
            Want::new(ActionType::Update, "by_mut", "Chart")
                .id("6")
                .outcome(mode),
        );
        if mode == Mode::Ok {
            assert_eq!(chart.views, 12);
        }

        let ev = one_event(mode, || Chart { id: 7, views: 0 }.by_value(mode));
        check(
            &ev,
            Want::new(ActionType::Delete, "by_value", "Chart")
                .id("7")
                .outcome(mode),
        );

        let ev = one_event(mode, || Chart::create(8, mode).map(|c| c.id));
        check(
            &ev,
            Want::new(ActionType::Create, "create", "Chart")
                .id("8")
                .outcome(mode),
        );
    }
}

#[tokio::test]
async fn async_method_every_outcome() {
    for mode in ASYNC_MODES {
        let chart = Box::leak(Box::new(Chart { id: 9, views: 1 }));
        let ev = one_async_event(mode, chart.by_ref_async(mode)).await;
        check(
            &ev,
            Want::new(ActionType::Read, "by_ref_async", "Chart")
                .id("9")
                .outcome(mode),
        );
    }
}

// ---------------------------------------------------------------- traits

trait Repo {
    fn load(&self, id: &str, mode: Mode) -> Result<u32, AppError>;
    async fn load_async(&self, id: &str, mode: Mode) -> Result<u32, AppError>;
}

struct PgRepo;

impl Repo for PgRepo {
    #[audited(action = "READ", resource = "Note", id = id)]
    fn load(&self, id: &str, mode: Mode) -> Result<u32, AppError> {
        Ok(step(mode)?)
    }

    #[audited(action = "READ", resource = "Note", id = id)]
    async fn load_async(&self, id: &str, mode: Mode) -> Result<u32, AppError> {
        tokio::task::yield_now().await;
        if mode == Mode::Pending {
            std::future::pending::<()>().await;
        }
        Ok(step(mode)?)
    }
}

#[test]
fn trait_impl_method_every_outcome() {
    for mode in SYNC_MODES {
        let ev = one_event(mode, || PgRepo.load("note-1", mode));
        check(
            &ev,
            Want::new(ActionType::Read, "load", "Note")
                .id("note-1")
                .outcome(mode),
        );
    }
}

#[tokio::test]
async fn async_trait_method_every_outcome() {
    for mode in ASYNC_MODES {
        static REPO: PgRepo = PgRepo;
        let ev = one_async_event(mode, REPO.load_async("note-2", mode)).await;
        check(
            &ev,
            Want::new(ActionType::Read, "load_async", "Note")
                .id("note-2")
                .outcome(mode),
        );
    }
}

// ---------------------------------------------------------------- generics, impl Trait, unsafe

#[audited(action = "EXPORT", resource = "Report", id = id.as_ref(), metadata(rows = rows))]
fn generic<'a, T, I>(id: &'a T, items: I, rows: usize, mode: Mode) -> Result<Vec<u8>, AppError>
where
    T: AsRef<str> + ?Sized,
    I: IntoIterator<Item = u8>,
{
    step(mode)?;
    Ok(items.into_iter().take(rows).collect())
}

#[test]
fn generic_every_outcome() {
    for mode in SYNC_MODES {
        let ev = one_event(mode, || generic("rep-1", vec![1, 2, 3], 2, mode));
        check(
            &ev,
            Want::new(ActionType::Export, "generic", "Report")
                .id("rep-1")
                .meta("rows", MetaValue::Int(2))
                .outcome(mode),
        );
    }
}

/// `impl Trait` in argument and return position; not a `Result`.
#[audited(action = "PRINT", resource = "Label", id = id.to_string())]
fn impl_trait(id: impl fmt::Display, mode: Mode) -> impl Iterator<Item = u32> {
    let n = match mode {
        Mode::Panic => step(mode).unwrap_or(0),
        _ => 3,
    };
    0..n
}

#[test]
fn impl_trait_every_outcome() {
    for mode in [Mode::Ok, Mode::Panic] {
        let ev = one_event(mode, || impl_trait(11, mode).sum::<u32>());
        // A value that is not a `Result` is SUCCESS unless it panicked.
        check(
            &ev,
            Want::new(ActionType::Print, "impl_trait", "Label")
                .id("11")
                .outcome(mode),
        );
    }
}

/// # Safety
/// `ptr` must be valid for reads.
#[audited(action = "READ", resource = "Buffer")]
unsafe fn read_raw(ptr: *const u32, mode: Mode) -> Result<u32, AppError> {
    step(mode)?;
    Ok(unsafe { *ptr })
}

#[test]
fn unsafe_fn_every_outcome() {
    for mode in SYNC_MODES {
        let x = 17u32;
        let ev = one_event(mode, || unsafe { read_raw(&x, mode) });
        check(
            &ev,
            Want::new(ActionType::Read, "read_raw", "Buffer").outcome(mode),
        );
    }
}

// ---------------------------------------------------------------- error types

/// No `AuditError`: FAILURE, error_type from the type name; the Display is
/// read (sanitized) only when the config opts in.
#[derive(Debug)]
struct LookupError(String);

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lookup failed for {}", self.0)
    }
}

#[audited(action = "READ", resource = "Patient")]
fn display_error(who: &str) -> Result<(), LookupError> {
    Err(LookupError(who.to_string()))
}

/// The same with a PHI parameter: Display is never read, opted in or not.
#[audited(
    action = "READ",
    resource = "Patient",
    phi_touched = false,
    classification = "NONE"
)]
fn display_error_phi(#[phi] who: &str) -> Result<(), LookupError> {
    Err(LookupError(who.to_string()))
}

/// Neither `AuditError` nor `Display`: FAILURE with the type name.
#[derive(Debug)]
struct Opaque;

#[audited(action = "READ", resource = "Patient")]
fn opaque_error() -> Result<u8, Opaque> {
    Err(Opaque)
}

#[audited(action = "READ", resource = "Patient")]
fn io_result() -> std::io::Result<u8> {
    Err(std::io::Error::other("disk /home/jane"))
}

#[audited(action = "READ", resource = "Patient")]
fn io_not_found() -> std::io::Result<u8> {
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        "chart of Jane",
    ))
}

#[audited(action = "READ", resource = "Patient")]
fn boxed_error() -> Result<u8, Box<dyn std::error::Error + Send + Sync>> {
    Err("no chart for Jane".into())
}

#[audited(action = "READ", resource = "Patient")]
fn string_error() -> Result<u8, String> {
    Err("no chart for Jane".to_string())
}

/// One event of `f` under a config that reads `Display` (sanitized).
fn one_event_reading_display<R>(f: impl FnOnce() -> R) -> AuditEvent {
    let sink = MemorySink::new();
    let dispatch = Dispatch::new(
        Config::new(SERVICE)
            .environment("test")
            .clock(|| Timestamp::from_unix_millis(NOW))
            .error_messages(phi_audit::ErrorMessages::Sanitized)
            .build()
            .unwrap(),
        sink.clone(),
    );
    with_dispatch(&dispatch, f);
    let mut events = sink.take();
    assert_eq!(events.len(), 1);
    events.remove(0)
}

#[test]
fn error_types_without_audit_error() {
    let type_only = |f: &'static str, ty: &'static str, msg: &'static str| Want {
        outcome: Outcome::failure(ty, msg),
        ..Want::new(ActionType::Read, f, "Patient")
    };
    // By default the Display is never read: the type names the error.
    let ev = one_event(Mode::Ok, || display_error("SSN 123-45-6789"));
    check(
        &ev,
        type_only("display_error", "LookupError", "LookupError"),
    );
    let ev = one_event(Mode::Ok, opaque_error);
    check(&ev, type_only("opaque_error", "Opaque", "Opaque"));
    let ev = one_event(Mode::Ok, boxed_error);
    check(&ev, type_only("boxed_error", "Error", "Error"));
    let ev = one_event(Mode::Ok, string_error);
    check(&ev, type_only("string_error", "String", "String"));
    // An I/O error says its kind, never its message.
    let ev = one_event(Mode::Ok, io_result);
    check(&ev, type_only("io_result", "Other", "other error"));
    let ev = one_event(Mode::Ok, io_not_found);
    check(
        &ev,
        type_only("io_not_found", "NotFound", "entity not found"),
    );

    // Opted in: the sanitized Display.
    let ev = one_event_reading_display(|| display_error("SSN 123-45-6789"));
    let msg = phi_audit::sanitize::sanitize_message("lookup failed for SSN 123-45-6789", 500);
    assert_eq!(msg, "lookup failed for SSN [SSN]");
    check(
        &ev,
        Want {
            outcome: Outcome::failure("LookupError", msg),
            ..Want::new(ActionType::Read, "display_error", "Patient")
        },
    );
    let ev = one_event_reading_display(io_not_found);
    check(
        &ev,
        type_only("io_not_found", "NotFound", "entity not found"),
    );
    // ... but never in a function with a PHI parameter.
    let ev = one_event_reading_display(|| display_error_phi("Jane Doe"));
    check(
        &ev,
        Want {
            phi_touched: Some(false),
            classification: Some(DataClassification::None),
            ..type_only("display_error_phi", "LookupError", "LookupError")
        },
    );
}

// ---------------------------------------------------------------- actor, record!, pseudonym

#[audited(action = "LOGIN", resource = "Session")]
fn login() {}

#[test]
fn actor_comes_from_context_then_config() {
    let ev = one_event(Mode::Ok, login);
    check(&ev, Want::new(ActionType::Login, "login", "Session"));

    let (dispatch, sink) = pipeline(None);
    let ctx = AuditContext::new().actor(Actor::human("dr-jones").org("org-1"));
    with_dispatch(&dispatch, || ctx.in_scope(login));
    check(
        &sink.take()[0],
        Want::new(ActionType::Login, "login", "Session")
            .actor(Actor::human("dr-jones").org("org-1")),
    );
}

#[audited(action = "READ", resource = "Patient", id = patient_id)]
fn with_record(patient_id: &str, #[phi] notes: Vec<String>, rows: usize) -> usize {
    let visible = notes.iter().take(rows).count(); // derived from PHI: never recorded
    phi_audit::record!(rows = rows, cache = "miss");
    let first_row = 1u8; // not derived from PHI
    phi_audit::record!(first = first_row);
    visible
}

#[test]
fn record_in_sync_body() {
    let ev = one_event(Mode::Ok, || {
        with_record("p-2", vec!["Jane".into(), "Doe".into()], 2)
    });
    check(
        &ev,
        Want::new(ActionType::Read, "with_record", "Patient")
            .phi()
            .id("p-2")
            .meta("rows", MetaValue::Int(2))
            .meta("cache", MetaValue::Str(Text::from_static("miss")))
            .meta("first", MetaValue::Int(1)),
    );
}

#[audited(action = "READ", resource = "Patient", metadata(kind = "async"))]
async fn with_record_async(n: u32) -> u32 {
    phi_audit::record!(before = n);
    tokio::task::yield_now().await;
    phi_audit::record!(after = n + 1);
    n
}

#[tokio::test]
async fn record_in_async_body_across_awaits() {
    let ev = one_async_event(Mode::Ok, with_record_async(4)).await;
    check(
        &ev,
        Want::new(ActionType::Read, "with_record_async", "Patient")
            .meta("kind", MetaValue::Str(Text::from_static("async")))
            .meta("before", MetaValue::Int(4))
            .meta("after", MetaValue::Int(5)),
    );
}

#[audited(action = "READ", resource = "Patient", id = pseudonym(ssn), patient = mrn,
          metadata(ssn_token = pseudonym(ssn)))]
fn by_ssn(#[phi] ssn: &str, mrn: &str) -> Result<(), AppError> {
    assert_eq!(ssn.len(), 11);
    Ok(())
}

#[test]
fn pseudonyms_are_keyed_tokens() {
    let key = PseudonymKey::new(b"0123456789abcdef0123456789abcdef").unwrap();
    let token = key.pseudonym("123-45-6789");
    let (dispatch, sink) = pipeline(Some(key));
    with_dispatch(&dispatch, || by_ssn("123-45-6789", "mrn-1")).unwrap();
    let ev = &sink.take()[0];
    let token_str: &'static str = Box::leak(token.as_str().to_string().into_boxed_str());
    check(
        ev,
        Want::new(ActionType::Read, "by_ssn", "Patient")
            .phi()
            .id(token_str)
            .patient("mrn-1")
            .meta("ssn_token", MetaValue::Str(token)),
    );

    // Without a key the fields are left out (never the raw value).
    let ev = one_event(Mode::Ok, || by_ssn("123-45-6789", "mrn-1"));
    check(
        &ev,
        Want::new(ActionType::Read, "by_ssn", "Patient")
            .phi()
            .patient("mrn-1")
            .meta("ssn_token", MetaValue::Null),
    );
}

// ---------------------------------------------------------------- evaluation order

static EVALS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn counted(id: &str) -> &str {
    EVALS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    id
}

#[audited(action = "UPDATE", resource = "Note", id = counted(&note_id), metadata(len = text.len()))]
fn moves_arguments(note_id: String, text: String) -> Result<String, AppError> {
    // The attribute already read both: the body may move them.
    let owned = note_id;
    let joined = owned + &text;
    drop(text);
    Ok(joined)
}

#[test]
fn attribute_expressions_are_evaluated_once_before_the_body() {
    let before = EVALS.load(std::sync::atomic::Ordering::SeqCst);
    let ev = one_event(Mode::Ok, || {
        moves_arguments("n-1".into(), "abc".into()).unwrap()
    });
    assert_eq!(EVALS.load(std::sync::atomic::Ordering::SeqCst) - before, 1);
    check(
        &ev,
        Want::new(ActionType::Update, "moves_arguments", "Note")
            .id("n-1")
            .meta("len", MetaValue::Int(3)),
    );
}

#[test]
fn no_dispatcher_no_event_no_panic() {
    assert_eq!(free_sync("p", "Jane", 1, Mode::Ok).unwrap(), 8);
}

// ---------------------------------------------------------------- schema versions

#[test]
fn events_validate_for_each_configured_schema_version() {
    for target in [
        SchemaVersion::V1_0,
        SchemaVersion::V1_1,
        SchemaVersion::V2_0,
    ] {
        for mode in SYNC_MODES {
            let sink = MemorySink::new();
            let cfg = Config::new(SERVICE)
                .target(target)
                .validate_on_emit(ValidationPolicy::Drop)
                .build()
                .unwrap();
            let dispatch = Dispatch::new(cfg, sink.clone());
            let r = with_dispatch(&dispatch, || {
                catch_unwind(AssertUnwindSafe(|| free_sync("p", "Jane", 1, mode)))
            });
            assert_eq!(r.is_err(), mode == Mode::Panic);
            let events = sink.take();
            assert_eq!(events.len(), 1, "{target:?} {mode:?}: one valid event");
            let ev = &events[0];
            assert_eq!(ev.schema_version, target);
            assert!(schema::validate(ev).is_ok());
            let status = outcome_of(mode).status;
            // 1.0 has no DENIED: a denial is recorded as a FAILURE there.
            let expected =
                if target == SchemaVersion::V1_0 && status == phi_audit::OutcomeStatus::Denied {
                    phi_audit::OutcomeStatus::Failure
                } else {
                    status
                };
            assert_eq!(ev.outcome.status, expected, "{target:?} {mode:?}");
            assert_eq!(dispatch.stats().validation_failures, 0);
        }
    }
}

// ---------------------------------------------------------------- nesting

#[audited(action = "READ", resource = "Note", id = id)]
fn inner_note(id: u32) -> u32 {
    phi_audit::record!(inner = true);
    id
}

#[audited(action = "READ", resource = "Patient", id = id)]
fn outer_chart(id: u32) -> u32 {
    phi_audit::record!(before = 1);
    let n = inner_note(id + 1);
    phi_audit::record!(after = 2);
    n
}

#[audited(action = "READ", resource = "Note", id = id)]
fn inner_note_that_panics(id: u32) -> u32 {
    phi_audit::record!(inner = true);
    panic!("note {id} unreadable");
}

#[audited(action = "READ", resource = "Patient", id = id)]
fn outer_chart_surviving_a_panic(id: u32) -> bool {
    let caught = std::panic::catch_unwind(|| inner_note_that_panics(id + 1)).is_err();
    // The inner call is gone: this lands in the outer call's event.
    phi_audit::record!(after = 2);
    caught
}

#[test]
fn metadata_after_an_inner_call_panicked_goes_to_the_outer_call() {
    let (dispatch, sink) = pipeline(None);
    assert!(with_dispatch(&dispatch, || outer_chart_surviving_a_panic(
        1
    )));
    let events = sink.take();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].outcome.status, phi_audit::OutcomeStatus::Failure);
    check(
        &events[1],
        Want::new(ActionType::Read, "outer_chart_surviving_a_panic", "Patient")
            .id("1")
            .meta("after", MetaValue::Int(2)),
    );
    // Outside any call, what `record!` expands to does nothing (and touches
    // no stale frame). (`record!` itself only compiles in an audited body.)
    phi_audit::__private::record("stray", phi_audit::__private::meta(&3));
    assert!(sink.take().is_empty());
}

#[test]
fn nested_calls_each_get_their_own_event_and_metadata() {
    let (dispatch, sink) = pipeline(None);
    assert_eq!(with_dispatch(&dispatch, || outer_chart(1)), 2);
    let events = sink.take();
    assert_eq!(events.len(), 2);
    // The inner call finishes first.
    check(
        &events[0],
        Want::new(ActionType::Read, "inner_note", "Note")
            .id("2")
            .meta("inner", MetaValue::Bool(true)),
    );
    check(
        &events[1],
        Want::new(ActionType::Read, "outer_chart", "Patient")
            .id("1")
            .meta("before", MetaValue::Int(1))
            .meta("after", MetaValue::Int(2)),
    );
}
