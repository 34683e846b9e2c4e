//! Throughput of an audited call, side by side with tracing's JSON pipeline.
//!
//! `cargo bench -p phi-audit-tests --bench throughput` runs every variant, each in a fresh child
//! process (the global dispatcher and peak memory are per process), and
//! prints one JSON line per variant, then the ratios.
//! `cargo bench -p phi-audit-tests --bench throughput -- --variant jsonl-nonblocking --threads 1 --n 1000000`
//! runs one.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

// ---------------------------------------------------------------- allocations

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = COUNTING.try_with(|c| {
            if c.get() {
                let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
            }
        });
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = COUNTING.try_with(|c| {
            if c.get() {
                let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
            }
        });
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn count_allocs<R>(f: impl FnOnce() -> R) -> (R, u64) {
    ALLOCS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (r, ALLOCS.with(|a| a.get()))
}

fn vmhwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ------------------------------------------------------------------ workload

#[derive(Debug)]
struct MyErr;

impl std::fmt::Display for MyErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("patient record unavailable")
    }
}

impl std::error::Error for MyErr {}

fn work(patient_id: &str) -> Result<u64, MyErr> {
    let h = patient_id
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    if h % 10 == 0 {
        Err(MyErr)
    } else {
        Ok(h)
    }
}

mod audited {
    use super::{work, MyErr};

    #[phi_audit::audited(action = "READ", resource = "Patient", id = patient_id)]
    pub fn read_patient(patient_id: &str) -> Result<u64, MyErr> {
        work(patient_id)
    }
}

mod traced {
    use super::{work, MyErr};

    #[tracing::instrument(skip_all, fields(patient_id = %patient_id))]
    pub fn read_patient(patient_id: &str, actor: &str, request_id: &str) -> Result<u64, MyErr> {
        let r = work(patient_id);
        match &r {
            Ok(_) => tracing::info!(
                service.name = "bench-service",
                service.environment = "bench",
                actor.subject_id = actor,
                actor.subject_type = "human",
                action.type = "READ",
                action.name = "read_patient",
                resource.type = "Patient",
                resource.id = patient_id,
                outcome.status = "SUCCESS",
                correlation.request_id = request_id,
                "audit"
            ),
            Err(e) => tracing::info!(
                service.name = "bench-service",
                service.environment = "bench",
                actor.subject_id = actor,
                actor.subject_type = "human",
                action.type = "READ",
                action.name = "read_patient",
                resource.type = "Patient",
                resource.id = patient_id,
                outcome.status = "FAILURE",
                outcome.error_type = "MyErr",
                outcome.error_message = %e,
                correlation.request_id = request_id,
                "audit"
            ),
        }
        r
    }
}

/// Ids of typical length (`patient-000123`, 14 bytes), prepared up front so
/// the loop measures the audited call, not id formatting.
fn ids() -> Vec<String> {
    (0..4096).map(|i| format!("patient-{i:06}")).collect()
}

// ------------------------------------------------------------------ variants

struct Run {
    variant: String,
    threads: usize,
    n: u64,
    path: PathBuf,
}

struct Measured {
    caller_ns_per_call: f64,
    events_per_s: f64,
    allocs_per_call: f64,
}

fn run_threads(
    run: &Run,
    per_call: impl Fn(usize, &str) + Sync,
    per_thread_setup: impl Fn(usize) -> Box<dyn FnOnce(&mut dyn FnMut())> + Sync,
) -> (f64, f64, Instant) {
    let per_thread = run.n / run.threads as u64;
    let ids = ids();
    let start = Instant::now();
    let results: Vec<(f64, f64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..run.threads)
            .map(|t| {
                let ids = &ids;
                let per_call = &per_call;
                let setup = &per_thread_setup;
                s.spawn(move || {
                    let enter = setup(t);
                    let mut out = (0.0, 0.0);
                    enter(&mut || {
                        let (elapsed, allocs) = count_allocs(|| {
                            let t0 = Instant::now();
                            for i in 0..per_thread as usize {
                                per_call(t, &ids[i % ids.len()]);
                            }
                            t0.elapsed()
                        });
                        out = (
                            elapsed.as_nanos() as f64 / per_thread as f64,
                            allocs as f64 / per_thread as f64,
                        );
                    });
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ns = results.iter().map(|r| r.0).sum::<f64>() / results.len() as f64;
    let allocs = results.iter().map(|r| r.1).sum::<f64>() / results.len() as f64;
    (ns, allocs, start)
}

fn audit_variant(run: &Run) -> Measured {
    use phi_audit::{
        Actor, AuditContext, Config, FsyncPolicy, JsonlFileSink, JsonlOptions, LedgerOptions,
        LedgerSink, NonBlocking,
    };
    // tracing-appender never syncs; neither do these, so the comparison is
    // like for like (the default policy, fsync every event, is a durability
    // choice; with the non-blocking worker it costs one sync per batch).
    let jsonl = |p: &Path| {
        JsonlFileSink::open_with(p, JsonlOptions::new().fsync(FsyncPolicy::Never)).unwrap()
    };
    let config = Config::new("bench-service")
        .environment("bench")
        .build()
        .unwrap();
    let guard = match run.variant.as_str() {
        "jsonl-nonblocking" => phi_audit::init(config, NonBlocking::new(jsonl(&run.path))),
        "jsonl-sync" => phi_audit::init(config, jsonl(&run.path)),
        "ledger-nonblocking" => {
            let options = LedgerOptions::new().fsync(FsyncPolicy::Never);
            let ledger = LedgerSink::open_with(&run.path, options).unwrap();
            phi_audit::init(config, NonBlocking::new(ledger))
        }
        other => panic!("unknown variant {other}"),
    }
    .unwrap();
    let (ns, allocs, start) = run_threads(
        run,
        |_, id| {
            let _ = std::hint::black_box(audited::read_patient(std::hint::black_box(id)));
        },
        |t| {
            let ctx = AuditContext::new()
                .actor(Actor::human(format!("clinician-{t}")))
                .request_id(format!("req-{t:04}-7f3a9c"));
            Box::new(move |body: &mut dyn FnMut()| ctx.in_scope(body))
        },
    );
    drop(guard);
    let total = start.elapsed().as_secs_f64();
    Measured {
        caller_ns_per_call: ns,
        events_per_s: run.n as f64 / total,
        allocs_per_call: allocs,
    }
}

fn tracing_variant(run: &Run) -> Measured {
    use tracing_subscriber::fmt::format::FmtSpan;
    let file = std::fs::File::create(&run.path).unwrap();
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(file);
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(writer)
        .with_span_events(FmtSpan::NONE)
        .with_current_span(true)
        .with_span_list(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let (ns, allocs, start) = run_threads(
        run,
        |t, id| {
            let actor = ACTORS[t % ACTORS.len()];
            let req = REQS[t % REQS.len()];
            let _ =
                std::hint::black_box(traced::read_patient(std::hint::black_box(id), actor, req));
        },
        |_| Box::new(|body: &mut dyn FnMut()| body()),
    );
    drop(guard);
    let total = start.elapsed().as_secs_f64();
    Measured {
        caller_ns_per_call: ns,
        events_per_s: run.n as f64 / total,
        allocs_per_call: allocs,
    }
}

const ACTORS: &[&str] = &["clinician-0", "clinician-1"];
const REQS: &[&str] = &["req-0000-7f3a9c", "req-0001-7f3a9c"];

fn count_lines(path: &Path) -> (u64, u64) {
    let Ok(f) = std::fs::File::open(path) else {
        return (0, 0);
    };
    let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
    let lines = BufReader::with_capacity(1 << 20, f)
        .split(b'\n')
        .filter(|l| l.as_ref().is_ok_and(|l| !l.is_empty()))
        .count() as u64;
    (lines, bytes)
}

/// Writes and deletes `bytes` of scratch data next to the output file before
/// the measured run. On a virtual machine, memory the guest has not touched
/// lately is slow to touch the first time (the host backs it on demand), and
/// the first variant of a run would pay that for its page cache while the
/// later ones reuse the pages it freed. Every variant, tracing's included,
/// gets the same priming, so none measures the host instead of the code.
fn prime_page_cache(dir: &Path, bytes: u64) {
    use std::io::Write;
    let path = dir.join("prime");
    let chunk = vec![b'.'; 1 << 16];
    if let Ok(mut f) = std::fs::File::create(&path) {
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if f.write_all(&chunk[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
    }
    let _ = std::fs::remove_file(&path);
}

fn child(args: &[String]) {
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let variant = get("--variant").expect("--variant NAME");
    let threads: usize = get("--threads").map_or(1, |v| v.parse().unwrap());
    let n: u64 = get("--n").map_or(1_000_000, |v| v.parse().unwrap());
    let dir = std::env::temp_dir().join(format!("phi-audit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{variant}-{threads}.jsonl"));
    let _ = std::fs::remove_file(&path);
    let run = Run {
        variant: variant.clone(),
        threads,
        n,
        path: path.clone(),
    };
    prime_page_cache(&dir, n * 640);
    let (imp, m) = if variant == "tracing" {
        ("tracing", tracing_variant(&run))
    } else {
        ("phi-audit", audit_variant(&run))
    };
    let (lines, bytes) = count_lines(&path);
    let sink = match variant.as_str() {
        "tracing" => "json-nonblocking",
        v => v,
    };
    println!(
        "{{\"impl\":\"{imp}\",\"sink\":\"{sink}\",\"threads\":{threads},\"n\":{n},\"caller_ns_per_call\":{:.1},\"events_per_s\":{:.0},\"lines\":{lines},\"bytes_per_event\":{:.1},\"allocs_per_call\":{:.3},\"vmhwm_kb\":{}}}",
        m.caller_ns_per_call,
        m.events_per_s,
        bytes as f64 / lines.max(1) as f64,
        m.allocs_per_call,
        vmhwm_kb()
    );
    let _ = std::fs::remove_dir_all(&dir);
    if lines != n {
        eprintln!("LOST LINES: {variant} wrote {lines} of {n}");
        std::process::exit(1);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--variant") {
        child(&args);
        return;
    }
    let n: u64 = args
        .iter()
        .position(|a| a == "--n")
        .and_then(|i| args.get(i + 1))
        .map_or(1_000_000, |v| v.parse().unwrap());
    let exe = std::env::current_exe().unwrap();
    let variants: &[(&str, usize)] = &[
        ("jsonl-nonblocking", 1),
        ("jsonl-nonblocking", 2),
        ("jsonl-sync", 1),
        ("ledger-nonblocking", 1),
        ("tracing", 1),
        ("tracing", 2),
    ];
    let mut rows = Vec::new();
    let mut failed = false;
    for (variant, threads) in variants {
        let out = Command::new(&exe)
            .args([
                "--variant",
                variant,
                "--threads",
                &threads.to_string(),
                "--n",
                &n.to_string(),
            ])
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        println!("{line}");
        failed |= !out.status.success();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            rows.push(v);
        }
    }
    let find = |sink: &str, threads: u64| {
        rows.iter()
            .find(|r| r["sink"] == sink && r["threads"] == threads)
            .cloned()
    };
    if let (Some(a), Some(t)) = (find("jsonl-nonblocking", 1), find("json-nonblocking", 1)) {
        let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "{{\"ratio\":\"tracing/phi-audit, 1 thread\",\"caller_ns\":{:.1},\"events_per_s\":{:.1}}}",
            f(&t, "caller_ns_per_call") / f(&a, "caller_ns_per_call"),
            f(&a, "events_per_s") / f(&t, "events_per_s")
        );
    }
    if failed {
        std::process::exit(1);
    }
}
