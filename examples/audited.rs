//! A tour of `#[audited]`: run with `cargo run --example audited` and read
//! the events it prints (one JSON line per call).

use phi_audit::{
    audited, record, with_dispatch, Actor, AuditContext, AuditError, Config, Dispatch, MemorySink,
    Outcome, PseudonymKey,
};

/// The application's error type: it tells the audit trail which errors are
/// denials, and which message is safe to keep.
#[derive(Debug)]
enum ChartError {
    Forbidden,
    Database,
}

impl AuditError for ChartError {
    fn audit_outcome(&self) -> Outcome {
        match self {
            ChartError::Forbidden => Outcome::denied("RoleDenied"),
            ChartError::Database => Outcome::failure("DatabaseError", "database unavailable"),
        }
    }
}

struct Session {
    user: String,
    role: &'static str,
}

impl Session {
    fn user_id(&self) -> &str {
        &self.user
    }
}

/// Reads a chart. `name` is PHI: the body may use it, the event never sees it.
#[audited(action = "READ", resource = "Patient", id = patient_id, patient = patient_id,
          actor = session.user_id(), metadata(reason = reason, page = page))]
fn read_chart(
    session: &Session,
    patient_id: &str,
    #[phi] name: &str,
    reason: &'static str,
    page: u32,
) -> Result<String, ChartError> {
    if session.role != "clinician" {
        return Err(ChartError::Forbidden);
    }
    if page > 100 {
        return Err(ChartError::Database);
    }
    let chart = format!("chart of {name}, page {page}");
    record!(lines = 42, cache = "miss");
    Ok(chart)
}

/// Looks a patient up by SSN: only a keyed pseudonym of it is stored.
#[audited(action = "READ", resource = "Patient", id = pseudonym(ssn))]
async fn find_by_ssn(#[phi] ssn: String) -> Option<u64> {
    (ssn.len() == 11).then_some(7)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sink = MemorySink::new();
    let config = Config::new("chart-service")
        .environment("demo")
        .pseudonym_key(PseudonymKey::new(b"demo key, use 32 random bytes!!!")?)
        .build()?;
    let dispatch = Dispatch::new(config, sink.clone());

    let clinician = Session {
        user: "dr-smith".into(),
        role: "clinician",
    };
    let clerk = Session {
        user: "clerk-1".into(),
        role: "clerk",
    };
    with_dispatch(&dispatch, || {
        let _ = read_chart(&clinician, "pat-7", "Jane Doe", "treatment", 1);
        let _ = read_chart(&clerk, "pat-7", "Jane Doe", "billing", 1);
        let _ = read_chart(&clinician, "pat-7", "Jane Doe", "treatment", 101);
        // The actor comes from the request context when the attribute names none.
        let ctx = AuditContext::new()
            .actor(Actor::human("dr-jones"))
            .request_id("req-1");
        ctx.in_scope(|| {
            let runtime = tokio::runtime::Builder::new_current_thread().build()?;
            runtime.block_on(find_by_ssn("123-45-6789".into()));
            Ok::<(), std::io::Error>(())
        })
    })?;

    for event in sink.events() {
        println!("{}", event.to_json());
    }
    Ok(())
}
