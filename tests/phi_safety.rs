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
    assert!(out.contains("[PHI REDACTED]"));
}
