//! What `AuditLayer` costs an axum service: the same app (an `#[audited]`
//! READ handler) served with and without the layer, in the same process
//! and run, loaded by an in-process HTTP/1.1 client (hyper) over loopback
//! TCP with 64 keep-alive connections. Events go to a JSONL file through
//! `NonBlocking`, as a service would write them (without fsync, as in the
//! throughput bench: what is measured is the layer, not the disk).
//!
//! ```text
//! cargo bench -p phi-audit-tests --bench http_layer
//! cargo bench -p phi-audit-tests --bench http_layer -- --secs 2 --rounds 7 --connections 64
//! ```
//!
//! Variants: `plain` (no layer), `layer` (the actor from the
//! `Authorization` header with `AuditLayer::actor_from_header`, as the
//! example), `layer+routes` (and a route table: a second event per
//! request), `layer-closure` (the actor from a closure over the request
//! head, `AuditLayer::actor`, run on every request).
//!
//! Prints one JSON line per round and variant, one per
//! variant of the in-process calls without a network (`direct-*`: the
//! layer's own CPU time per request), then a summary: the medians, the
//! throughput the layer costs in percent and the latency it adds (target:
//! at most 5% at 64 connections).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
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
    secs: f64,
    rounds: usize,
    connections: usize,
    direct_n: usize,
    /// Only this variant (`plain`, `layer`, `layer+routes`, `layer-closure`),
    /// for profiling.
    direct_only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        // Many short rounds, the variants rotated within each: on a shared
        // machine the median of seven pairs moves less than that of three.
        secs: 2.0,
        rounds: 7,
        connections: 64,
        direct_n: 200_000,
        direct_only: None,
    };
    let argv: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < argv.len() {
        let next = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--secs" => a.secs = next.parse().expect("--secs N"),
            "--rounds" => a.rounds = next.parse().expect("--rounds N"),
            "--connections" => a.connections = next.parse().expect("--connections N"),
            "--direct-n" => a.direct_n = next.parse().expect("--direct-n N"),
            "--only" => a.direct_only = Some(next),
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

struct Round {
    requests: u64,
    secs: f64,
    latencies_us: Vec<u32>,
    /// CPU time of this process (all threads: client, server, the sink's
    /// worker; user and system) in the window.
    cpu_secs: f64,
}

/// User and system CPU time of this process so far, in seconds.
fn process_cpu() -> f64 {
    // SAFETY: `getrusage` fills the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a `rusage` for the call to fill.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// `connections` clients, each sending requests back to back on its own
/// keep-alive connection for `secs` (after a warm-up), counting those
/// completed in the window.
async fn load(addr: SocketAddr, connections: usize, secs: f64) -> Round {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (stop, measuring) = (stop.clone(), measuring.clone());
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let auth = format!("Bearer user-{c}:clinician");
            let mut lat = Vec::with_capacity(100_000);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
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
                if measuring.load(Ordering::Relaxed) {
                    lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
                n += 1;
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64((secs / 5.0).clamp(0.5, 2.0))).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let cpu_at_start = process_cpu();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    measuring.store(false, Ordering::Relaxed);
    let cpu_secs = process_cpu() - cpu_at_start;
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us = Vec::new();
    for t in tasks {
        latencies_us.extend(t.await.unwrap());
    }
    Round {
        requests: latencies_us.len() as u64,
        secs: elapsed,
        latencies_us,
        cpu_secs,
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
const N: usize = 4;

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

    let line = |variant: &str, round: usize, r: &Round| -> (f64, f64, f64) {
        let mut l = r.latencies_us.clone();
        l.sort_unstable();
        let mean = l.iter().map(|&x| x as f64).sum::<f64>() / l.len().max(1) as f64;
        let rps = r.requests as f64 / r.secs;
        let cpu_us = r.cpu_secs * 1e6 / r.requests.max(1) as f64;
        println!(
            "{{\"bench\":\"http_layer\",\"variant\":\"{variant}\",\"round\":{round},\"connections\":{},\"requests\":{},\"secs\":{:.2},\"rps\":{:.0},\"mean_us\":{:.1},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"cpu_us_per_request\":{cpu_us:.2}}}",
            a.connections,
            r.requests,
            r.secs,
            rps,
            mean,
            percentile(&l, 0.5),
            percentile(&l, 0.9),
            percentile(&l, 0.99)
        );
        (rps, mean, cpu_us)
    };

    const VARIANTS: [&str; N] = ["plain", "layer", "layer+routes", "layer-closure"];
    let only = a.direct_only.as_deref();
    // Per round: (rps, mean latency, CPU per request) of each variant.
    let mut rounds: Vec<[(f64, f64, f64); N]> = Vec::new();
    rt.block_on(async {
        let addrs = [
            serve(plain()).await,
            serve(layered(false, ActorBy::Header)).await,
            serve(layered(true, ActorBy::Header)).await,
            serve(layered(false, ActorBy::Closure)).await,
        ];
        for round in 0..a.rounds {
            // Rotate the order, so drift on this shared machine hits every
            // variant alike.
            let mut results = [(0.0, 0.0, 0.0); N];
            for k in 0..N {
                let v = (round + k) % N;
                if only.is_some_and(|o| o != VARIANTS[v]) {
                    continue;
                }
                let r = load(addrs[v], a.connections, a.secs).await;
                guard.flush().unwrap();
                // Keep the file small: the next run starts on an empty one.
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&file)
                    .and_then(|f| f.set_len(0));
                results[v] = line(VARIANTS[v], round, &r);
            }
            rounds.push(results);
        }
    });
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
                _ => layered(false, ActorBy::Closure),
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
    if !rounds.is_empty() && only.is_none() {
        for v in 1..N {
            // Each round's cost against the plain app of the same round.
            let cost = median(
                rounds
                    .iter()
                    .map(|r| (r[0].0 - r[v].0) / r[0].0 * 100.0)
                    .collect(),
            );
            let added = median(rounds.iter().map(|r| r[v].1 - r[0].1).collect());
            // The process's CPU per request (client, server and the sink's
            // worker together), against the plain app of the same round:
            // what the layer costs in CPU, less moved by other load on the
            // machine than requests per second.
            let cpu_cost = median(
                rounds
                    .iter()
                    .map(|r| (r[v].2 - r[0].2) / r[0].2 * 100.0)
                    .collect(),
            );
            println!(
                "{{\"bench\":\"http_layer\",\"variant\":\"summary\",\"compared\":\"{} vs plain\",\"connections\":{},\"rounds\":{},\"rps_plain_median\":{:.0},\"rps_median\":{:.0},\"throughput_cost_pct_median\":{cost:.1},\"added_mean_latency_us_median\":{added:.1},\"process_cpu_us_per_request_plain_median\":{:.2},\"process_cpu_us_per_request_median\":{:.2},\"process_cpu_cost_pct_median\":{cpu_cost:.1},\"cpu_ns_per_request_added_in_process_calls\":{:.0},\"target_pct\":5,\"within_target\":{}}}",
                VARIANTS[v],
                a.connections,
                rounds.len(),
                median(rounds.iter().map(|r| r[0].0).collect()),
                median(rounds.iter().map(|r| r[v].0).collect()),
                median(rounds.iter().map(|r| r[0].2).collect()),
                median(rounds.iter().map(|r| r[v].2).collect()),
                direct_ns[v] - direct_ns[0],
                cost <= 5.0
            );
        }
    }
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);
}
