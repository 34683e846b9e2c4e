//! Verification speed: `phi-audit verify` (the release binary) against the
//! reference's `bh-audit` on the same ledger, and MB/s from the page cache.
//!
//! `cargo bench --bench verify` builds the release `phi-audit` binary, writes
//! a 200,000-event ledger with `LedgerSink`, times `phi-audit verify` and
//! `bh-audit --source file` on it (the reference is skipped, with the reason
//! printed, when `PHI_AUDIT_REF_PYTHON` is unset), then writes a
//! 1,000,000-event ledger and times `verify` and `validate` on it after a
//! warm-up read (page cache). One JSON line per measurement, then the ratio.
//! `-- --events N --big M --runs R` change the sizes and repetitions.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use phi_audit::sink::{FsyncPolicy, LedgerOptions, LedgerSink};
use phi_audit::{
    Action, ActionType, Actor, AuditEvent, Correlation, DataClassification, Http, HttpMethod,
    Metadata, Outcome, Resource, SchemaVersion, Service, Sink, Text, Timestamp,
};

fn event(i: u64) -> AuditEvent {
    let mut metadata = Metadata::new();
    metadata.insert("reason", "treatment");
    metadata.insert("rows", (i % 50) as i64);
    AuditEvent {
        schema_version: SchemaVersion::V1_1,
        event_id: uuid_of(i),
        timestamp: Timestamp::from_unix_millis(1_780_000_000_000 + i as i64 * 37),
        service: Service {
            name: "chart-service".into(),
            environment: Some("production".into()),
            version: Some("4.12.0".into()),
        },
        actor: Actor {
            org_id: Some("org-memorial".into()),
            owner_org_id: Some("org-memorial".into()),
            roles: Some(Arc::from(vec![
                Text::from("clinician"),
                Text::from("nurse"),
            ])),
            ..Actor::human(format!("user-{:05}", i % 700))
        },
        action: Action {
            kind: ActionType::Read,
            name: Some("read_patient_chart".into()),
            phi_touched: Some(true),
            data_classification: Some(DataClassification::Phi),
        },
        resource: Resource {
            kind: "Patient".into(),
            id: Some(format!("pat-{:07}", i % 90_000).into()),
            patient_id: Some(format!("pat-{:07}", i % 90_000).into()),
        },
        outcome: Outcome::SUCCESS,
        correlation: Some(Correlation {
            request_id: Some(format!("req-{i:012}").into()),
            trace_id: Some(format!("{:032x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).into()),
            session_id: Some(format!("sess-{:06}", i % 5000).into()),
        }),
        http: Some(Http {
            method: Some(HttpMethod::Get),
            route_template: Some("/patients/{id}/chart".into()),
            status_code: Some(200),
            client_ip: Some(format!("10.0.{}.{}", (i / 250) % 250, i % 250).into()),
            user_agent: Some("chart-ui/4.12".into()),
        }),
        delegation: None,
        metadata,
        integrity: None,
    }
}

fn uuid_of(i: u64) -> uuid::Uuid {
    let x = u128::from(i).wrapping_mul(0x2545_f491_4f6c_dd1d_9e37_79b9_7f4a_7c15);
    uuid::Builder::from_random_bytes(x.to_le_bytes()).into_uuid()
}

fn write_ledger(path: &Path, n: u64) {
    let _ = std::fs::remove_file(path);
    let sink = LedgerSink::open_with(path, LedgerOptions::new().fsync(FsyncPolicy::Never))
        .expect("open ledger");
    let mut batch = Vec::with_capacity(1000);
    for i in 0..n {
        batch.push(event(i));
        if batch.len() == 1000 {
            sink.write_batch(&mut batch).expect("write");
            batch.clear();
        }
    }
    sink.write_batch(&mut batch).expect("write");
    sink.close().expect("close");
}

/// Builds the release CLI and returns its path.
fn phi_audit_bin() -> PathBuf {
    // The cargo running this bench (same toolchain and target dir), else
    // the one on PATH (rustup honours rust-toolchain.toml).
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let st = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "phi-audit-cli",
            "--bin",
            "phi-audit",
        ])
        .status()
        .expect("run cargo");
    assert!(st.success(), "cargo build of phi-audit failed");
    // This bench runs from target/release/deps/.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    dir.join("phi-audit")
}

/// User + system CPU seconds of all waited-for children so far.
fn children_cpu() -> f64 {
    // SAFETY: getrusage writes only into the zeroed struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// Runs `cmd` `runs` times; returns the best wall time (s), the CPU time
/// (user + system, all threads) of that run, and the exit code. On a busy
/// machine the wall time grows with the load; the CPU time does not.
fn time(runs: u32, mut cmd: impl FnMut() -> Command) -> (f64, f64, i32) {
    let mut best = (f64::MAX, 0.0);
    let mut code = -1;
    for _ in 0..runs {
        let cpu0 = children_cpu();
        let t = Instant::now();
        let st = cmd()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run");
        let wall = t.elapsed().as_secs_f64();
        let cpu = children_cpu() - cpu0;
        if wall < best.0 {
            best = (wall, cpu);
        }
        code = st.code().unwrap_or(-1);
    }
    (best.0, best.1, code)
}

/// The 1-minute load average (how busy the machine was).
fn load() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(-1.0)
}

fn warm(path: &Path) {
    let _ = std::fs::read(path).map(|b| b.len());
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let n = arg("--events", 200_000);
    let big = arg("--big", 1_000_000);
    let runs = arg("--runs", 3) as u32;
    let bin = phi_audit_bin();
    // `--keep DIR`: write the ledgers there and leave them (for profiling).
    let args: Vec<String> = std::env::args().collect();
    let keep = args
        .iter()
        .position(|a| a == "--keep")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let dir = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("phi-audit-bench-verify-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).expect("temp dir");

    let small = dir.join("ledger-200k.jsonl");
    write_ledger(&small, n);
    let bytes = std::fs::metadata(&small).map(|m| m.len()).unwrap_or(0);
    warm(&small);
    let (ours, ours_cpu, code) = time(runs, || {
        let mut c = Command::new(&bin);
        c.arg("verify").arg(&small);
        c
    });
    assert_eq!(code, 0, "phi-audit verify failed on its own ledger");
    println!(
        "{{\"bench\":\"verify\",\"impl\":\"phi-audit\",\"events\":{n},\"bytes\":{bytes},\"seconds\":{ours:.4},\"cpu_seconds\":{ours_cpu:.4},\"mb_per_s\":{:.1},\"load_avg\":{:.1},\"exit\":{code}}}",
        bytes as f64 / 1e6 / ours,
        load()
    );
    match std::env::var_os("PHI_AUDIT_REF_PYTHON") {
        None => println!(
            "{{\"bench\":\"verify\",\"impl\":\"bh-audit\",\"skipped\":\"PHI_AUDIT_REF_PYTHON is not set (a venv python with bh-audit-logger[cli]==2.0.0)\"}}"
        ),
        Some(py) => {
            let bh = PathBuf::from(py).with_file_name("bh-audit");
            let (theirs, theirs_cpu, code) = time(1, || {
                let mut c = Command::new(&bh);
                c.args(["--source", "file", "--path"])
                    .arg(&small)
                    .args(["--format", "json"]);
                c
            });
            println!(
                "{{\"bench\":\"verify\",\"impl\":\"bh-audit\",\"events\":{n},\"bytes\":{bytes},\"seconds\":{theirs:.4},\"cpu_seconds\":{theirs_cpu:.4},\"mb_per_s\":{:.1},\"load_avg\":{:.1},\"exit\":{code}}}",
                bytes as f64 / 1e6 / theirs,
                load()
            );
            println!(
                "{{\"bench\":\"verify\",\"ratio\":\"bh-audit / phi-audit wall time\",\"events\":{n},\"value\":{:.1},\"cpu_time_ratio\":{:.1},\"target\":50}}",
                theirs / ours,
                theirs_cpu / ours_cpu.max(1e-9)
            );
        }
    }
    if keep.is_none() {
        let _ = std::fs::remove_file(&small);
    }

    let large = dir.join("ledger-1m.jsonl");
    write_ledger(&large, big);
    let bytes = std::fs::metadata(&large).map(|m| m.len()).unwrap_or(0);
    warm(&large);
    for cmd in ["verify", "validate"] {
        let (secs, cpu, code) = time(runs, || {
            let mut c = Command::new(&bin);
            c.arg(cmd).arg(&large);
            c
        });
        println!(
            "{{\"bench\":\"{cmd}\",\"impl\":\"phi-audit\",\"events\":{big},\"bytes\":{bytes},\"seconds\":{secs:.4},\"cpu_seconds\":{cpu:.4},\"mb_per_s\":{:.1},\"mb_per_cpu_s\":{:.1},\"target_mb_per_s\":400,\"load_avg\":{:.1},\"exit\":{code}}}",
            bytes as f64 / 1e6 / secs,
            bytes as f64 / 1e6 / cpu.max(1e-9),
            load()
        );
    }
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
