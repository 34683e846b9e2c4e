//! What `AuditLayer` costs an axum service: the same app (an `#[audited]`
//! READ handler) served with and without the layer, in the same process
//! and run, loaded by an in-process HTTP/1.1 client (hyper) over loopback
//! TCP with 64 keep-alive connections per variant. Events go to a JSONL
//! file through `NonBlocking`, as a service would write them (without
//! fsync, as in the throughput bench: what is measured is the layer, not
//! the disk).
//!
//! ```text
//! cargo bench --bench http_layer
//! cargo bench --bench http_layer -- --cycles 40 --slice-secs 0.25 --connections 64
//! ```
//!
//! Variants: `plain` (no layer), `layer` (the actor from the
//! `Authorization` header with `AuditLayer::actor_from_header`, as the
//! example), `layer+routes` (and a route table: a second event per
//! request), `layer-closure` (the actor from a closure over the request
//! head, `AuditLayer::actor`, run on every request), `noop-layer` (a tower
//! layer that does nothing: what axum's wrapping of a layered route costs
//! any layer).
//!
//! The variants take turns in short slices (default 0.25 s), rotated, for
//! `--cycles` cycles: on a shared VM whose speed drifts by a quarter from
//! one second to the next, two variants measured seconds apart differ by
//! more than the layer costs; slices of one cycle see the same machine.
//! Every variant's clients stay connected; only the active variant's send.
//! Prints one JSON line per cycle (requests per second and the process's
//! CPU time per request of each variant), one per variant of the
//! in-process calls without a network (`direct-*`: the layer's own CPU
//! time per request), then a summary per variant against `plain`: the
//! median over cycles of the throughput cost and of the CPU cost, the
//! pooled figures and latencies (target: at most 5% at 64 connections).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::http::header::AUTHORIZATION;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Router;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use phi_audit::web::{route, AuditLayer, READ};
use phi_audit::{audited, Actor, Config, FsyncPolicy, JsonlFileSink, JsonlOptions, NonBlocking};
use tower::ServiceExt;

struct Args {
    cycles: usize,
    slice_secs: f64,
    connections: usize,
    direct_n: usize,
    /// Only this variant (`plain`, `layer`, `layer+routes`, `layer-closure`,
    /// `noop-layer`),
    /// for profiling.
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        cycles: 40,
        slice_secs: 0.25,
        connections: 64,
        direct_n: 200_000,
        only: None,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let next = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--cycles" => a.cycles = next.parse().expect("--cycles N"),
            "--slice-secs" => a.slice_secs = next.parse().expect("--slice-secs S"),
            "--connections" => a.connections = next.parse().expect("--connections N"),
            "--direct-n" => a.direct_n = next.parse().expect("--direct-n N"),
            "--only" => a.only = Some(next),
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

// ---------------------------------------------------------------- the app

/// Demo auth, as the example: `Bearer <subject>[:<role>,..]`.
fn demo_actor(value: &str) -> Option<Actor> {
    let token = value.strip_prefix("Bearer ")?;
    let (subject, roles) = token.split_once(':').unwrap_or((token, ""));
    let a = Actor::human(subject);
    Some(if roles.is_empty() {
        a
    } else {
        a.roles(roles.split(','))
    })
}

#[audited(action = "READ", resource = "Patient", id = id, patient = id)]
async fn read_patient(Path(id): Path<String>) -> Result<String, StatusCode> {
    if id.is_empty() {
        return Err(StatusCode::NOT_FOUND);
    }
    Ok(id)
}

fn plain() -> Router {
    Router::new()
        .route("/patients/{id}", get(read_patient))
        .route("/health", get(|| async { "ok" }))
}

/// How the layered app learns the actor.
#[derive(Clone, Copy)]
enum ActorBy {
    /// `AuditLayer::actor_from_header`: the demo token read once per value
    /// and thread.
    Header,
    /// `AuditLayer::actor` with a closure over the request head: run on
    /// every request.
    Closure,
}

/// The app with the layer: the actor from the request, correlation ids,
/// the `http` block and the handler's event held for its status; with
/// `routes`, also one route-table event per request (a second event).
fn layered(routes: bool, by: ActorBy) -> Router {
    let mut layer = match by {
        ActorBy::Header => AuditLayer::new().actor_from_header(AUTHORIZATION, demo_actor),
        ActorBy::Closure => AuditLayer::new()
            .actor(|parts| demo_actor(parts.headers.get(AUTHORIZATION)?.to_str().ok()?)),
    };
    if routes {
        layer = layer.route(
            route("/patients/{id}", READ, "Patient")
                .method("GET")
                .id_from_path("id")
                .patient_from_path("id"),
        );
    }
    plain().layer(layer)
}

/// The app with a tower layer that does nothing: what axum's wrapping of
/// a layered route costs any layer (the floor under `AuditLayer`'s cost).
fn noop_layered() -> Router {
    plain().layer(tower::layer::layer_fn(|service| service))
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    addr
}

// ---------------------------------------------------------------- load

/// User and system CPU time of this process so far, in seconds.
fn process_cpu() -> (f64, f64) {
    // SAFETY: `getrusage` fills the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a `rusage` for the call to fill.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return (0.0, 0.0);
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (t(ru.ru_utime), t(ru.ru_stime))
}

/// Which variant's clients send (`IDLE`: none; `STOP`: all end).
const IDLE: usize = usize::MAX - 1;
const STOP: usize = usize::MAX;

/// `connections` clients of variant `v` at `addr`, each on its own
/// keep-alive connection, sending requests back to back while `v` is the
/// active variant. Counts completed requests in `done`; returns the
/// latencies (µs) of the requests sent while measuring.
fn clients(
    v: usize,
    addr: SocketAddr,
    connections: usize,
    active: &tokio::sync::watch::Receiver<usize>,
    measuring: &Arc<AtomicBool>,
    done: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<Vec<u32>>> {
    (0..connections)
        .map(|c| {
            let (mut active, measuring, done) = (active.clone(), measuring.clone(), done.clone());
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let auth = format!("Bearer user-{c}:clinician");
                let mut lat = Vec::with_capacity(50_000);
                let mut n = 0u64;
                loop {
                    let now = *active.wait_for(|a| *a == v || *a == STOP).await.unwrap();
                    if now == STOP {
                        return lat;
                    }
                    let req = Request::builder()
                        .uri(format!("/patients/p-{}", n % 1000))
                        .header("host", "bench")
                        .header("authorization", &auth)
                        .header("user-agent", "http-layer-bench/1")
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let t = Instant::now();
                    send.ready().await.unwrap();
                    let resp = send.send_request(req).await.unwrap();
                    assert_eq!(resp.status(), StatusCode::OK);
                    let _ = resp.into_body().collect().await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                    if measuring.load(Ordering::Relaxed) {
                        lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    n += 1;
                }
            })
        })
        .collect()
}

/// One variant's slice of a cycle.
#[derive(Clone, Copy, Default)]
struct Slice {
    requests: u64,
    secs: f64,
    /// User and system CPU time.
    cpu_secs: f64,
    sys_secs: f64,
}

impl Slice {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.secs.max(1e-9)
    }

    fn cpu_us(&self) -> f64 {
        self.cpu_secs * 1e6 / self.requests.max(1) as f64
    }

    fn sys_us(&self) -> f64 {
        self.sys_secs * 1e6 / self.requests.max(1) as f64
    }
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// ns per request of `app` called in process (no network, no connection
/// handling): the router, the handler and, for the layered app, the layer.
async fn direct(app: Router, n: usize) -> f64 {
    // As `into_make_service` does for the served apps: the handlers become
    // routes once, not on every request.
    let app = app.with_state(());
    let call = |i: usize| {
        let app = app.clone();
        async move {
            let req = Request::builder()
                .uri(format!("/patients/p-{}", i % 1000))
                .header("authorization", "Bearer user-1:clinician")
                .header("user-agent", "http-layer-bench/1")
                // What `into_make_service_with_connect_info` adds.
                .extension(axum::extract::ConnectInfo(SocketAddr::from((
                    [127, 0, 0, 1],
                    40_000,
                ))))
                .body(axum::body::Body::empty())
                .unwrap();
            let resp = app.oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
        }
    };
    for i in 0..n / 10 {
        call(i).await;
    }
    let t = Instant::now();
    for i in 0..n {
        call(i).await;
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// The variants: the app without the layer, with it (the actor from the
/// header, as the example), with it and a route table, and with it and the
/// actor from a closure run on every request.
const N: usize = 5;

fn main() {
    let a = args();
    let dir = std::env::temp_dir().join(format!("phi-audit-http-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file: PathBuf = dir.join("audit.jsonl");
    let config = Config::new("bench-service").build().unwrap();
    // No fsync, as in the throughput bench: the layer's cost, not the disk's.
    let options = JsonlOptions::new().fsync(FsyncPolicy::Never);
    let sink = JsonlFileSink::open_with(&file, options).unwrap();
    let guard = phi_audit::init(config, NonBlocking::new(sink)).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    const VARIANTS: [&str; N] = [
        "plain",
        "layer",
        "layer+routes",
        "layer-closure",
        "noop-layer",
    ];
    let only = a.only.as_deref();
    let runs = |v: usize| only.is_none_or(|o| o == VARIANTS[v]);
    // Per cycle, each variant's slice.
    let mut cycles: Vec<[Slice; N]> = Vec::new();
    let mut latencies: Vec<Vec<u32>> = vec![Vec::new(); N];
    if a.cycles > 0 {
        rt.block_on(async {
            let addrs = [
                serve(plain()).await,
                serve(layered(false, ActorBy::Header)).await,
                serve(layered(true, ActorBy::Header)).await,
                serve(layered(false, ActorBy::Closure)).await,
                serve(noop_layered()).await,
            ];
            let (set, active) = tokio::sync::watch::channel(IDLE);
            let measuring = Arc::new(AtomicBool::new(false));
            let done: Vec<Arc<AtomicU64>> = (0..N).map(|_| Arc::default()).collect();
            let tasks: Vec<_> = (0..N)
                .map(|v| clients(v, addrs[v], a.connections, &active, &measuring, &done[v]))
                .collect();
            let slice = Duration::from_secs_f64(a.slice_secs);
            // Warm-up: each variant for half a second.
            for v in (0..N).filter(|v| runs(*v)) {
                set.send_replace(v);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            measuring.store(true, Ordering::Relaxed);
            for cycle in 0..a.cycles {
                let mut slices = [Slice::default(); N];
                for k in 0..N {
                    // Rotated, so no variant always follows the same one.
                    let v = (cycle + k) % N;
                    if !runs(v) {
                        continue;
                    }
                    let (before, cpu, t) = (done[v].load(Ordering::Relaxed), process_cpu(), Instant::now());
                    set.send_replace(v);
                    tokio::time::sleep(slice).await;
                    let (user, sys) = process_cpu();
                    slices[v] = Slice {
                        requests: done[v].load(Ordering::Relaxed) - before,
                        secs: t.elapsed().as_secs_f64(),
                        cpu_secs: user + sys - cpu.0 - cpu.1,
                        sys_secs: sys - cpu.1,
                    };
                }
                print!("{{\"bench\":\"http_layer\",\"cycle\":{cycle},\"connections\":{}", a.connections);
                for v in (0..N).filter(|v| runs(*v)) {
                    print!(
                        ",\"{}\":{{\"requests\":{},\"rps\":{:.0},\"cpu_us_per_request\":{:.2},\"sys_us_per_request\":{:.2}}}",
                        VARIANTS[v],
                        slices[v].requests,
                        slices[v].rps(),
                        slices[v].cpu_us(),
                        slices[v].sys_us()
                    );
                }
                println!("}}");
                cycles.push(slices);
                // Keep the file small.
                if cycle % 8 == 7 {
                    guard.flush().unwrap();
                    let _ = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&file)
                        .and_then(|f| f.set_len(0));
                }
            }
            measuring.store(false, Ordering::Relaxed);
            set.send_replace(STOP);
            for (v, t) in tasks.into_iter().enumerate() {
                for t in t {
                    latencies[v].extend(t.await.unwrap());
                }
            }
        });
    }
    let direct_ns = rt.block_on(async {
        let mut ns = [0.0; N];
        for (v, name) in VARIANTS.iter().enumerate() {
            if only.is_some_and(|o| o != *name) {
                continue;
            }
            let app = match v {
                0 => plain(),
                1 => layered(false, ActorBy::Header),
                2 => layered(true, ActorBy::Header),
                3 => layered(false, ActorBy::Closure),
                _ => noop_layered(),
            };
            ns[v] = direct(app, a.direct_n).await;
        }
        ns
    });
    guard.flush().unwrap();
    for (v, name) in VARIANTS.iter().enumerate() {
        if only.is_some_and(|o| o != *name) {
            continue;
        }
        println!(
            "{{\"bench\":\"http_layer\",\"variant\":\"direct-{name}\",\"requests\":{},\"ns_per_request\":{:.0}}}",
            a.direct_n, direct_ns[v]
        );
    }
    if !cycles.is_empty() && only.is_none() {
        let pooled = |v: usize| {
            let r: u64 = cycles.iter().map(|c| c[v].requests).sum();
            let secs: f64 = cycles.iter().map(|c| c[v].secs).sum();
            let cpu: f64 = cycles.iter().map(|c| c[v].cpu_secs).sum();
            (r as f64 / secs, cpu * 1e6 / r.max(1) as f64)
        };
        let lat = |v: usize| {
            let mut l = latencies[v].clone();
            l.sort_unstable();
            let mean = l.iter().map(|&x| x as f64).sum::<f64>() / l.len().max(1) as f64;
            (mean, percentile(&l, 0.5), percentile(&l, 0.99))
        };
        let (plain_rps, plain_cpu) = pooled(0);
        let plain_lat = lat(0);
        for v in 1..N {
            // Each cycle's cost against the plain app's slice of the same cycle.
            let cost = median(
                cycles
                    .iter()
                    .map(|c| (c[0].rps() - c[v].rps()) / c[0].rps() * 100.0)
                    .collect(),
            );
            let cpu_cost = median(
                cycles
                    .iter()
                    .map(|c| (c[v].cpu_us() - c[0].cpu_us()) / c[0].cpu_us() * 100.0)
                    .collect(),
            );
            // Of which in the kernel (system time), in µs per request.
            let sys_added = median(
                cycles
                    .iter()
                    .map(|c| c[v].sys_us() - c[0].sys_us())
                    .collect(),
            );
            let cpu_added = median(
                cycles
                    .iter()
                    .map(|c| c[v].cpu_us() - c[0].cpu_us())
                    .collect(),
            );
            let (rps, cpu) = pooled(v);
            let (mean, p50, p99) = lat(v);
            println!(
                "{{\"bench\":\"http_layer\",\"variant\":\"summary\",\"compared\":\"{} vs plain\",\"connections\":{},\"cycles\":{},\"slice_secs\":{},\"throughput_cost_pct_median\":{cost:.1},\"process_cpu_cost_pct_median\":{cpu_cost:.1},\"process_cpu_us_added_median\":{cpu_added:.2},\"of_which_system_us_median\":{sys_added:.2},\"rps_plain_pooled\":{plain_rps:.0},\"rps_pooled\":{rps:.0},\"throughput_cost_pct_pooled\":{:.1},\"process_cpu_us_per_request_plain\":{plain_cpu:.2},\"process_cpu_us_per_request\":{cpu:.2},\"mean_latency_us_plain\":{:.0},\"mean_latency_us\":{mean:.0},\"p50_us\":{p50},\"p99_us\":{p99},\"cpu_ns_per_request_added_in_process_calls\":{:.0},\"target_pct\":5,\"within_target\":{}}}",
                VARIANTS[v],
                a.connections,
                cycles.len(),
                a.slice_secs,
                (plain_rps - rps) / plain_rps * 100.0,
                plain_lat.0,
                direct_ns[v] - direct_ns[0],
                cost <= 5.0
            );
        }
    }
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);
}
