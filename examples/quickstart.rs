//! The phi-audit tour: annotated service functions emitting real audit events
//! to standard output and to a JSONL file.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! The same program with the sinks chosen by the environment instead of the
//! code (`phi_audit::init_from_env`, see the README):
//!
//! ```text
//! PHI_AUDIT_SERVICE=chart-service PHI_AUDIT_SINK=stdout,ledger:/tmp/phi-audit-ledger.jsonl \
//!     cargo run --example quickstart
//! ```

use std::fmt;

use phi_audit::{
    audited, Actor, AuditContext, AuditError, Config, FanOut, JsonlFileSink, NonBlocking, Outcome,
    StdoutSink,
};

/// What the service's functions return on error.
#[derive(Debug)]
enum AppError {
    /// The caller may not do this: recorded as DENIED.
    Forbidden,
    /// The database failed: recorded as FAILURE, without the driver's text.
    Database(String),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Forbidden => f.write_str("forbidden"),
            AppError::Database(detail) => write!(f, "database error: {detail}"),
        }
    }
}

impl std::error::Error for AppError {}

impl AuditError for AppError {
    fn audit_outcome(&self) -> Outcome {
        match self {
            AppError::Forbidden => {
                Outcome::denied("RoleDenied").with_message("export needs the records-officer role")
            }
            AppError::Database(_) => Outcome::failure("DatabaseError", "database unavailable"),
        }
    }
}

struct Chart {
    patient_id: String,
    lines: usize,
}

/// A read of a patient's chart. The patient's name is PHI: tagged `#[phi]`,
/// it can be used in the body but never recorded.
#[audited(action = "READ", resource = "Chart", id = patient_id, patient = patient_id,
          metadata(reason = reason))]
fn read_chart(
    patient_id: &str,
    #[phi] name: &str,
    reason: &'static str,
) -> Result<Chart, AppError> {
    // The body may use PHI freely; it just cannot be recorded. Writing
    // `record!(name_len = name.len())` here would be a compile error: the
    // value is derived from `name`.
    let title = format!("Chart of {name}");
    std::hint::black_box(title);
    let lines = 12;
    phi_audit::record!(lines = lines, source = "primary-db");
    Ok(Chart {
        patient_id: patient_id.to_string(),
        lines,
    })
}

/// An update; the note text is PHI.
#[audited(action = "UPDATE", resource = "Note", id = note_id, patient = patient_id)]
fn update_note(patient_id: &str, note_id: u64, #[phi] text: &str) -> Result<(), AppError> {
    if text.is_empty() {
        return Err(AppError::Database(
            "constraint note_text_not_empty violated".into(),
        ));
    }
    Ok(())
}

/// An export the caller is not allowed to make: DENIED.
#[audited(action = "EXPORT", resource = "Chart", patient = patient_id)]
fn export_chart(patient_id: &str, caller_role: &str) -> Result<Vec<u8>, AppError> {
    if caller_role != "records-officer" {
        return Err(AppError::Forbidden);
    }
    Ok(Vec::new())
}

/// A bug: the panic is recorded as FAILURE `Panic` (never its message), then
/// unwinds to the caller as usual.
#[audited(action = "READ", resource = "Appointment", id = appointment_id)]
fn read_appointment(appointment_id: u64) -> u64 {
    if appointment_id == 0 {
        panic!("appointment 0 does not exist");
    }
    appointment_id
}

/// An async handler: the actor and request id come from the `AuditContext`
/// the request middleware installed.
#[audited(action = "READ", resource = "Patient", id = patient_id)]
async fn get_patient(patient_id: String) -> Result<String, AppError> {
    tokio::task::yield_now().await;
    Ok(patient_id)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join("phi-audit-quickstart.jsonl");
    let _ = std::fs::remove_file(&path);

    // Start-up: where events go. With PHI_AUDIT_SERVICE set, the environment
    // chooses (PHI_AUDIT_SINK, PHI_AUDIT_CONFIG, ...), as RUST_LOG does for
    // tracing; a mistake there stops the program here, with every mistake
    // named. Otherwise the code chooses: stdout and a JSONL file, through a
    // non-blocking worker so callers only pay for queueing.
    let from_env = std::env::var_os("PHI_AUDIT_SERVICE").is_some();
    let guard = if from_env {
        phi_audit::init_from_env()?
    } else {
        let sinks = FanOut::new()
            .with(StdoutSink::new())
            .with(JsonlFileSink::open(&path)?);
        let config = Config::new("chart-service")
            .environment("dev")
            .version("0.1.0")
            .build()?;
        phi_audit::init(config, NonBlocking::new(sinks))?
    };

    // A request: the middleware sets who is calling.
    let ctx = AuditContext::new()
        .actor(
            Actor::human("dr-grey")
                .org("north-clinic")
                .roles(["clinician"]),
        )
        .request_id("req-0001");
    ctx.in_scope(|| -> Result<(), AppError> {
        let chart = read_chart("patient-42", "Jane Doe", "treatment")?;
        println!(
            "# read {} lines of {}'s chart",
            chart.lines, chart.patient_id
        );
        update_note("patient-42", 7, "feeling better")?;
        let _ = update_note("patient-42", 8, ""); // FAILURE
        let _ = export_chart("patient-42", "clinician"); // DENIED
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {})); // keep the demo output tidy
        let caught = std::panic::catch_unwind(|| read_appointment(0));
        std::panic::set_hook(hook);
        println!("# the panic reached the caller: {}", caught.is_err());
        Ok(())
    })?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let ctx = AuditContext::new()
        .actor(Actor::human("nurse-joy"))
        .request_id("req-0002");
    rt.block_on(ctx.scope(get_patient("patient-7".into())))?;

    // Shutdown: dropping the guard writes everything queued.
    guard.flush()?;
    drop(guard);
    if from_env {
        println!("# audit events written where PHI_AUDIT_SINK says");
        return Ok(());
    }
    println!(
        "# {} audit events written to stdout and to {}",
        count_lines(&path),
        path.display()
    );
    println!(
        "# verify them: cargo run -p phi-audit-cli -- validate {}",
        path.display()
    );
    Ok(())
}

fn count_lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}
