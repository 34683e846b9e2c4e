//! Where a command reads events, written as the service's `PHI_AUDIT_SINK`
//! writes them: a file (`PATH`, `-`, `jsonl:PATH`, `ledger:PATH`) or a
//! PostgreSQL table (`postgres://USER@HOST/DB?schema=NAME`). Options that
//! only matter when writing (`alg`, `fsync`, `sync`, ...) are accepted and
//! ignored, so a sink spec can be pasted as it is.

use phi_audit_runtime::settings::{SinkKind, SinkSpec};

use crate::Command;

/// What one argument names.
pub(crate) enum Input {
    File(String),
    /// The driver's URL, and the table's schema when the spec names one.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Postgres(String, Option<String>),
}

/// True when `arg` is written as a sink spec rather than a plain path.
fn is_spec(arg: &str) -> bool {
    ["jsonl:", "ledger:", "postgres:", "postgresql:"]
        .iter()
        .any(|p| arg.starts_with(p))
}

pub(crate) fn input(arg: &str) -> Result<Input, String> {
    if !is_spec(arg) {
        return Ok(Input::File(arg.to_owned()));
    }
    let spec: SinkSpec = arg.parse().map_err(|e: phi_audit_runtime::SettingsError| {
        let all: Vec<String> = e.problems().iter().map(|p| p.to_string()).collect();
        format!("invalid {}", all.join("; "))
    })?;
    let file = |path: std::path::PathBuf| {
        path.into_os_string()
            .into_string()
            .map(Input::File)
            .map_err(|_| "the path is not valid UTF-8".to_owned())
    };
    match spec.kind {
        SinkKind::Jsonl(j) => file(j.path),
        SinkKind::Ledger(l) => file(l.path),
        #[cfg(feature = "postgres")]
        SinkKind::Postgres(p) => {
            let schema = (p.schema != "public").then(|| p.schema.clone());
            Ok(Input::Postgres(p.url().to_owned(), schema))
        }
        other => Err(format!(
            "cannot read events from `{}`: give PATH, jsonl:PATH, ledger:PATH, - (standard \
             input) or a PostgreSQL URL",
            other.scheme()
        )),
    }
}

/// A `--postgres` value: a URL may carry the sink's `?schema=NAME`; any
/// other connection string goes to the driver as it is.
pub(crate) fn postgres_arg(arg: &str) -> Result<(String, Option<String>), String> {
    if !arg.starts_with("postgres") {
        return Ok((arg.to_owned(), None));
    }
    match input(arg)? {
        Input::Postgres(url, schema) => Ok((url, schema)),
        Input::File(_) => Err("--postgres takes a PostgreSQL URL".into()),
    }
}

/// The table's schema: the URL's `schema=` or `--pg-schema`, not two
/// different ones.
pub(crate) fn schema(from_url: Option<String>, pg_schema: &mut String) -> Result<(), String> {
    match from_url {
        Some(s) if pg_schema != "public" && *pg_schema != s => {
            Err("the URL's `schema=` and --pg-schema differ: give the schema once".into())
        }
        Some(s) => {
            *pg_schema = s;
            Ok(())
        }
        None => Ok(()),
    }
}

/// `command` with its input arguments read as sink specs: `jsonl:PATH` and
/// `ledger:PATH` become PATH; a PostgreSQL URL given as the input of
/// `verify` or `report` becomes `--postgres`.
pub(crate) fn resolve(mut command: Command) -> Result<Command, String> {
    match &mut command {
        Command::Verify {
            path,
            postgres,
            service,
            pg_schema,
            public_key,
            checkpoints,
            anchor,
            ..
        } => {
            let mut pg = postgres.as_deref().map(postgres_arg).transpose()?;
            if let Some(p) = path.take() {
                match input(&p)? {
                    Input::File(f) => *path = Some(f),
                    Input::Postgres(url, s) => pg = Some((url, s)),
                }
            }
            if let Some((url, s)) = pg {
                if service.is_none() {
                    return Err("verifying a PostgreSQL table needs --service NAME".into());
                }
                if public_key.is_some() || checkpoints.is_some() || anchor.is_some() {
                    return Err(
                        "--public-key, --checkpoints and --anchor apply to ledger files, not to a \
                         PostgreSQL table"
                            .into(),
                    );
                }
                schema(s, pg_schema)?;
                *postgres = Some(url);
            }
        }
        Command::Report {
            path,
            postgres,
            pg_schema,
            ..
        } => {
            let mut pg = postgres.as_deref().map(postgres_arg).transpose()?;
            if let Some(p) = path.take() {
                match input(&p)? {
                    Input::File(f) => *path = Some(f),
                    Input::Postgres(url, s) => pg = Some((url, s)),
                }
            }
            if let Some((url, s)) = pg {
                schema(s, pg_schema)?;
                *postgres = Some(url);
            }
        }
        // `review` and `report --html` resolve their inputs themselves.
        Command::Review(_) => {}
        Command::Validate { path, .. } => match input(path)? {
            Input::File(f) => *path = f,
            Input::Postgres(..) => {
                return Err(
                    "validate reads JSON-lines files: PATH, jsonl:PATH, ledger:PATH or -".into(),
                )
            }
        },
        #[cfg(feature = "nats")]
        Command::Collect(_) => {}
    }
    Ok(command)
}
