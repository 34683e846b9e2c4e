//! Synthetic PHI tokens pushed through every runtime API must not appear in
//! any output: sink output, Debug of config, dispatchers and events, error
//! messages, and the crate's internal diagnostics.

use std::sync::{Arc, Mutex};

use phi_audit::{
    with_dispatch, ActionType, Actor, AuditEvent, Config, Dispatch, ErrorMessages, EventBuilder,
    FanOut, MemorySink, NonBlocking, Outcome, Phi, PseudonymKey, Sink, SinkError,
    SinkFailurePolicy, TracingSink,
};

const TOKENS: &[&str] = &[
    "SSN_123-45-6789",
    "DOB_1990-01-01",
    "PATIENT_JANE_DOE",
    "DIAGNOSIS_BIPOLAR",
    "NOTE_TEXT_I_AM_NOT_OK",
    "EMAIL_jane.doe@example.com",
];

/// Pieces of the tokens that are PHI on their own (the prefixes are ours).
const CORES: &[&str] = &[
    "123-45-6789",
    "1990-01-01",
    "JANE_DOE",
    "BIPOLAR",
    "I_AM_NOT_OK",
    "jane.doe@example.com",
];

fn assert_clean(what: &str, output: &str) {
    for t in TOKENS.iter().chain(CORES) {
        assert!(!output.contains(t), "{what} leaked {t:?}: {output}");
    }
}

/// A sink whose errors quote nothing but that always fails.
struct Failing;
impl Sink for Failing {
    fn write(&self, _e: &AuditEvent) -> Result<(), SinkError> {
        Err(SinkError::Other("backend unavailable".into()))
    }
}

/// Captures everything logged through `tracing` (all targets, all fields).
mod capture {
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    #[derive(Clone, Default)]
    pub struct All(pub Arc<Mutex<String>>);

    struct V<'a>(&'a mut String);
    impl Visit for V<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!("{}={:?}\n", field.name(), value));
        }
    }

    impl Subscriber for All {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut s = self.0.lock().unwrap();
            s.push_str(event.metadata().target());
            s.push(' ');
            event.record(&mut V(&mut s));
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
}

#[test]
fn synthetic_phi_never_reaches_any_output() {
    let memory = MemorySink::new();
    let key = PseudonymKey::new(b"a-test-key-of-32-bytes-length!!!").unwrap();
    let config = Config::new("phi-test")
        .metadata_allowlist(["reason"])
        .pseudonym_key(key.clone())
        .sink_failure(SinkFailurePolicy::Report)
        .build()
        .unwrap();
    let fan = FanOut::new()
        .with(memory.clone())
        .with(TracingSink::new())
        .with(Failing)
        .with(NonBlocking::builder(Failing).report_errors(true).build());
    let d = Dispatch::new(config.clone(), fan);
    let logs = capture::All::default();
    let mut debug_out = String::new();

    tracing::subscriber::with_default(logs.clone(), || {
        with_dispatch(&d, || {
            for t in TOKENS {
                let phi = Phi::new(t.to_string());
                // Phi values formatted anywhere print a redaction marker.
                debug_out.push_str(&format!("{phi:?} {phi}\n"));
                // Error messages: identifier patterns (SSN, dates, e-mail) are
                // sanitized even when raw; names and notes are no pattern a
                // sanitizer can know, so they only travel inside `Phi`.
                let raw = if PATTERN_TOKENS.contains(t) { t } else { "" };
                let ev = EventBuilder::new(ActionType::Update, "Patient")
                    .outcome(Outcome::failure(
                        "DbError",
                        format!("failed for {raw} / {phi}"),
                    ))
                    // Metadata outside the allowlist is dropped.
                    .metadata("note", *t)
                    .metadata("reason", "treatment")
                    // Identifiers that are PHI go in as keyed pseudonyms.
                    .patient_id(key.pseudonym(&phi))
                    .actor(Actor::human("dr-1"));
                ev.emit();
            }
            d.flush().ok();
        })
    });

    debug_out.push_str(&format!("{config:?}\n{d:?}\n{key:?}\n"));
    let events = memory.events();
    debug_out.push_str(&format!("{events:?}\n"));
    assert_eq!(events.len(), TOKENS.len());
    let mut sink_out = String::new();
    for e in &events {
        sink_out.push_str(&e.to_json());
        sink_out.push('\n');
    }
    let logs = logs.0.lock().unwrap().clone();
    assert!(
        logs.contains("phi_audit::internal"),
        "internal diagnostics were logged: {logs}"
    );
    assert!(logs.contains("phi_audit::event"));
    assert_clean("debug output", &debug_out);
    assert_clean("tracing output and internal diagnostics", &logs);
    assert_clean("sink output", &sink_out);
    assert!(
        sink_out.contains("[SSN]") && sink_out.contains("[DATE]") && sink_out.contains("[EMAIL]")
    );
}

const PATTERN_TOKENS: &[&str] = &[
    "SSN_123-45-6789",
    "DOB_1990-01-01",
    "EMAIL_jane.doe@example.com",
];

#[derive(Debug)]
struct LeakyError(String);
impl std::fmt::Display for LeakyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no chart for {}", self.0)
    }
}

#[test]
fn type_only_error_messages_never_read_display() {
    let memory = MemorySink::new();
    let d = Dispatch::new(
        Config::new("svc")
            .error_messages(ErrorMessages::TypeOnly)
            .build()
            .unwrap(),
        memory.clone(),
    );
    let out = Arc::new(Mutex::new(String::new()));
    with_dispatch(&d, || {
        for t in TOKENS {
            let r: Result<(), LeakyError> = Err(LeakyError(t.to_string()));
            // What `#[audited]` does with an `Err` of a type without AuditError:
            let mut call = phi_audit::__private::Call::start(&SITE);
            #[allow(unused_imports)]
            use phi_audit::__private::{
                ViaAnyError as _, ViaAuditError as _, ViaDisplay as _, ViaValue as _,
            };
            #[allow(clippy::needless_borrow)]
            let o = (&&&&phi_audit::__private::Probe(&r)).__phi_audit_outcome(&call, false);
            out.lock().unwrap().push_str(&format!("{o:?}"));
            call.finish(o);
        }
    });
    let mut all = out.lock().unwrap().clone();
    for e in memory.events() {
        all.push_str(&e.to_json());
        assert_eq!(e.outcome.error_type.as_deref(), Some("LeakyError"));
    }
    assert_clean("type-only outcomes", &all);
}

static SITE: phi_audit::__private::CallSite = phi_audit::__private::CallSite {
    action: ActionType::Read,
    resource: "Patient",
    name: "read_chart",
    phi_touched: Some(true),
    classification: None,
};

mod audited_calls {
    use super::*;
    use phi_audit::audited;

    #[derive(Debug)]
    pub struct NotFound(pub Phi<String>);

    impl std::fmt::Display for NotFound {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "no chart for {}", self.0)
        }
    }

    #[audited(action = "READ", resource = "Chart", id = pseudonym(name), patient = patient_id,
              metadata(reason = reason))]
    pub fn read_chart(
        patient_id: &str,
        #[phi] name: &str,
        #[phi] note: &str,
        reason: &'static str,
    ) -> Result<usize, NotFound> {
        let words = note.split(' ').count();
        phi_audit::record!(kind = "chart");
        if words > 3 {
            return Err(NotFound(Phi::new(name.to_string())));
        }
        if name.contains("PANIC") {
            panic!("crash while reading {name}: {note}");
        }
        Ok(words)
    }

    #[audited(action = "READ", resource = "Note")]
    pub async fn read_note(#[phi] text: String) -> usize {
        tokio::task::yield_now().await;
        text.len()
    }
}

#[test]
fn synthetic_phi_through_audited_functions_never_reaches_any_output() {
    let memory = MemorySink::new();
    let key = PseudonymKey::new(b"another-key-of-32-bytes-length!!").unwrap();
    let d = Dispatch::new(
        Config::new("phi-test").pseudonym_key(key).build().unwrap(),
        FanOut::new().with(memory.clone()).with(TracingSink::new()),
    );
    let logs = capture::All::default();
    tracing::subscriber::with_default(logs.clone(), || {
        with_dispatch(&d, || {
            for t in TOKENS {
                let _ = audited_calls::read_chart("p-1", t, t, "treatment");
                let _ = audited_calls::read_chart("p-1", t, &format!("{t} {t} {t} {t}"), "care");
                let panicky = format!("PANIC_{t}");
                let hook = std::panic::take_hook();
                std::panic::set_hook(Box::new(|_| {}));
                let r =
                    std::panic::catch_unwind(|| audited_calls::read_chart("p-1", &panicky, t, "x"));
                std::panic::set_hook(hook);
                assert!(r.is_err());
            }
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for t in TOKENS {
            rt.block_on(d.scope(audited_calls::read_note(t.to_string())));
        }
    });
    let events = memory.events();
    assert_eq!(events.len(), TOKENS.len() * 4);
    let mut out = format!("{events:?}\n");
    for e in &events {
        out.push_str(&e.to_json());
        out.push('\n');
    }
    out.push_str(&logs.0.lock().unwrap());
    assert_clean("audited-call output", &out);
    assert!(out.contains("\"error_type\":\"Panic\""));
    // The error's `Display` is never read: its type names it.
    assert!(out.contains("\"error_type\":\"NotFound\",\"error_message\":\"NotFound\""));
}

// ------------------------------------------------------------ error paths

/// Errors whose `Display` quotes a `#[phi]` argument, in every form a
/// service writes them, through every shape of audited function.
mod error_paths {
    use std::error::Error;
    use std::future::Future;
    use std::pin::Pin;

    use async_trait::async_trait;
    use phi_audit::{audited, Phi};

    /// A custom error whose `Display` holds the name it was asked for.
    #[derive(Debug)]
    pub struct NotFound(pub String);

    impl std::fmt::Display for NotFound {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "no chart for {} (dob 1990-01-01, diagnosis bipolar)",
                self.0
            )
        }
    }

    impl Error for NotFound {}

    /// Holds the value as `Phi`, but its `Display` exposes it.
    #[derive(Debug)]
    pub struct Exposing(pub Phi<String>);

    impl std::fmt::Display for Exposing {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "no chart for {}", self.0.expose())
        }
    }

    #[audited(action = "READ", resource = "Chart", id = patient_id)]
    pub fn custom(patient_id: &str, #[phi] full_name: &str) -> Result<u8, NotFound> {
        Err(NotFound(format!("{full_name} ({patient_id})")))
    }

    #[audited(action = "READ", resource = "Chart", id = patient_id)]
    pub fn string(patient_id: &str, #[phi] full_name: &str) -> Result<u8, String> {
        Err(format!("no chart for {full_name}"))
    }

    #[audited(action = "READ", resource = "Chart", id = patient_id)]
    pub fn boxed(
        patient_id: &str,
        #[phi] full_name: &str,
    ) -> Result<u8, Box<dyn Error + Send + Sync>> {
        Err(format!("no chart for {full_name}").into())
    }

    #[audited(action = "READ", resource = "Chart", id = patient_id)]
    pub fn io(patient_id: &str, #[phi] full_name: &str) -> std::io::Result<u8> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("/charts/{full_name}.pdf"),
        ))
    }

    #[audited(action = "READ", resource = "Chart", id = patient_id)]
    pub fn typed(patient_id: &str, full_name: Phi<String>) -> Result<u8, Exposing> {
        Err(Exposing(full_name))
    }

    #[audited(action = "READ", resource = "Chart", id = patient_id)]
    pub async fn in_async(patient_id: &str, #[phi] full_name: &str) -> Result<u8, NotFound> {
        tokio::task::yield_now().await;
        Err(NotFound(full_name.to_string()))
    }

    #[audited(action = "READ", resource = "Chart", id = patient_id)]
    pub fn in_box_future<'a>(
        patient_id: &'a str,
        #[phi] full_name: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<u8, String>> + Send + 'a>> {
        Box::pin(async move { Err(format!("no chart for {full_name}")) })
    }

    #[async_trait]
    pub trait Charts {
        async fn load(&self, patient_id: &str, full_name: &str) -> Result<u8, NotFound>;
    }

    pub struct Repo;

    #[async_trait]
    impl Charts for Repo {
        #[audited(action = "READ", resource = "Chart", id = patient_id)]
        async fn load(&self, patient_id: &str, #[phi] full_name: &str) -> Result<u8, NotFound> {
            Err(NotFound(full_name.to_string()))
        }
    }

    /// No PHI parameter, but the error quotes a name the function looked
    /// up: only the default (never reading `Display`) keeps it out.
    #[audited(action = "READ", resource = "Chart", id = patient_id)]
    pub fn looked_up(patient_id: &str, name_in_db: &'static str) -> Result<u8, NotFound> {
        let _ = patient_id;
        Err(NotFound(name_in_db.to_string()))
    }
}

/// Runs every error path with every token, and returns everything every sink
/// wrote (memory, tracing, a JSON lines file, a ledger) and the events.
fn error_path_outputs(messages: ErrorMessages, include_looked_up: bool) -> (String, usize) {
    use error_paths::Charts as _;
    let dir = std::env::temp_dir().join(format!(
        "phi-audit-error-paths-{}-{messages:?}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let memory = MemorySink::new();
    let d = Dispatch::new(
        Config::new("phi-test")
            .error_messages(messages)
            .build()
            .unwrap(),
        FanOut::new()
            .with(memory.clone())
            .with(TracingSink::new())
            .with(phi_audit::JsonlFileSink::open(dir.join("audit.jsonl")).unwrap())
            .with(phi_audit::LedgerSink::open(dir.join("ledger.jsonl")).unwrap()),
    );
    let logs = capture::All::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut calls = 0;
    tracing::subscriber::with_default(logs.clone(), || {
        for t in TOKENS {
            with_dispatch(&d, || {
                assert!(error_paths::custom("p-1", t).is_err());
                assert!(error_paths::string("p-1", t).is_err());
                assert!(error_paths::boxed("p-1", t).is_err());
                assert!(error_paths::io("p-1", t).is_err());
                assert!(error_paths::typed("p-1", Phi::new(t.to_string())).is_err());
                calls += 5;
                if include_looked_up {
                    assert!(error_paths::looked_up("p-1", t).is_err());
                    calls += 1;
                }
            });
            rt.block_on(d.scope(async {
                assert!(error_paths::in_async("p-1", t).await.is_err());
                assert!(error_paths::in_box_future("p-1", t).await.is_err());
                assert!(error_paths::Repo.load("p-1", t).await.is_err());
            }));
            calls += 3;
        }
        d.flush().unwrap();
    });
    let events = memory.events();
    assert_eq!(events.len(), calls);
    assert!(events
        .iter()
        .all(|e| e.outcome.status == phi_audit::OutcomeStatus::Failure));
    let mut out = format!("{events:?}\n");
    for e in &events {
        out.push_str(&e.to_json());
        out.push('\n');
    }
    out.push_str(&logs.0.lock().unwrap());
    for f in ["audit.jsonl", "ledger.jsonl"] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(text.lines().count(), calls, "{f}");
        out.push_str(&text);
    }
    let _ = std::fs::remove_dir_all(&dir);
    (out, calls)
}

#[test]
fn errors_quoting_phi_leave_no_trace_by_default() {
    let (out, _) = error_path_outputs(ErrorMessages::TypeOnly, true);
    assert_clean("error paths, default config", &out);
    // What the events say instead: the type, or the I/O error's kind.
    for want in [
        "\"error_type\":\"NotFound\",\"error_message\":\"NotFound\"",
        "\"error_type\":\"String\",\"error_message\":\"String\"",
        "\"error_type\":\"Error\",\"error_message\":\"Error\"",
        "\"error_type\":\"NotFound\",\"error_message\":\"entity not found\"",
        "\"error_type\":\"Exposing\",\"error_message\":\"Exposing\"",
    ] {
        assert!(out.contains(want), "{want}");
    }
}

#[test]
fn errors_quoting_phi_leave_no_trace_when_display_is_opted_in() {
    // Opted in, `Display` is still never read in a function with a `#[phi]`
    // or `Phi<T>` parameter.
    let (out, _) = error_path_outputs(ErrorMessages::Sanitized, false);
    assert_clean("error paths, Display opted in", &out);
}

#[test]
fn phi_fields_deserialize_without_quoting_their_values() {
    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Patient {
        id: String,
        name: Phi<String>,
        age: Phi<u8>,
    }
    let mut out = String::new();
    for t in TOKENS {
        let ok = format!(r#"{{"id":"p-1","name":"{t}","age":42}}"#);
        let p: Patient = serde_json::from_str(&ok).unwrap();
        assert_eq!(p.name.expose(), t);
        out.push_str(&format!("{p:?}\n"));
        let bad = format!(r#"{{"id":"p-1","name":"x","age":"{t}"}}"#);
        let e = serde_json::from_str::<Patient>(&bad).unwrap_err();
        out.push_str(&format!("{e}\n{e:?}\n"));
    }
    assert_clean("deserialized PHI and its errors", &out);
}
