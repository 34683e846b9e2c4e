//! `Spool` in front of `PostgresSink`, and the sink's timeouts, against a
//! throwaway PostgreSQL server each test starts itself (so it can be
//! stopped, or its processes stopped with SIGSTOP, without disturbing
//! anything else): see `common/throwaway_pg.rs`.
//!
//! Skipped, with the reason printed, where no PostgreSQL binaries are
//! installed (`PHI_AUDIT_PG_BIN`, default /usr/lib/postgresql/15/bin).
//!
//! Run: `cargo test -p audit-runtime --features postgres --test spool_postgres`
#![cfg(feature = "postgres")]

mod common;
#[path = "common/throwaway_pg.rs"]
mod throwaway_pg;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use phi_audit_runtime::{
    AuditEvent, NonBlocking, PostgresOptions, PostgresSink, Sink, Spool, SpoolOptions,
};
use uuid::Uuid;

/// A throwaway server for `test`, or `None` after a visible skip (a
/// failure under `PHI_AUDIT_REQUIRE_SERVERS`).
fn server(test: &str) -> Option<throwaway_pg::Server> {
    match throwaway_pg::Server::start() {
        Ok(Some(s)) => Some(s),
        Ok(None) => {
            phi_audit_test_env::skip_required(
                test,
                &throwaway_pg::unavailable().unwrap_or_default(),
            );
            None
        }
        Err(e) => panic!("starting a throwaway PostgreSQL failed: {e}"),
    }
}

/// Event `i` of run `run`: a distinct id per (run, i).
fn event(run: u64, i: u64) -> AuditEvent {
    let mut e = common::event(i);
    e.event_id = Uuid::from_u128(
        0x4000_0000_0000_4000_8000_0000_0000_0000 | (u128::from(run) << 32) | u128::from(i),
    );
    e
}

/// Ids in the table, with how often each is there.
fn stored(url: &str, schema: &str) -> HashMap<Uuid, i64> {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.query(
        &format!("SELECT event_id, count(*) FROM \"{schema}\".audit_events GROUP BY event_id"),
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get::<_, Uuid>(0), r.get::<_, i64>(1)))
    .collect()
}

#[test]
fn connect_gives_up_on_a_listener_that_never_answers() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            h.lock().unwrap().push(s); // accepted, never answered
        }
    });
    let started = Instant::now();
    let r = PostgresSink::connect(
        &format!("postgres://audit@127.0.0.1:{port}/app"),
        PostgresOptions::new()
            .connect_timeout(Duration::from_secs(1))
            .report_errors(false),
    );
    let took = started.elapsed();
    let err = r.expect_err("a listener that never answers cannot be connected to");
    assert!(
        err.to_string()
            .contains("no answer from PostgreSQL within 1s"),
        "{err}"
    );
    assert!(took < Duration::from_secs(3), "connect took {took:?}");
    assert_eq!(held.lock().unwrap().len(), 1, "the listener was reached");
}

#[test]
fn outage_behind_the_spool_never_holds_callers_and_loses_nothing() {
    let Some(server) = server("outage_behind_the_spool_never_holds_callers_and_loses_nothing")
    else {
        return;
    };
    let url = server.url("");
    let pg = Arc::new(
        PostgresSink::connect(
            &url,
            PostgresOptions::new()
                .schema("outage")
                .connect_timeout(Duration::from_secs(1))
                .backoff(Duration::from_millis(50), Duration::from_millis(500))
                .give_up_after(Some(Duration::from_secs(2)))
                .report_errors(false),
        )
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(
        Spool::open_with(
            dir.path(),
            pg.clone(),
            SpoolOptions {
                retry_max: Duration::from_millis(500),
                ..SpoolOptions::default()
            },
        )
        .unwrap(),
    );
    // As `?spool=DIR` composes it: callers -> queue -> spool -> PostgreSQL.
    let sink = Arc::new(NonBlocking::new(spool.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let worst_ns = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let callers: Vec<_> = (0..2u64)
        .map(|t| {
            let (sink, stop, worst, written) = (
                sink.clone(),
                stop.clone(),
                worst_ns.clone(),
                written.clone(),
            );
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let e = event(t, i);
                    let t0 = Instant::now();
                    sink.write_owned(e).unwrap();
                    let ns = t0.elapsed().as_nanos() as u64;
                    worst.fetch_max(ns, Ordering::Relaxed);
                    written.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                i
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    server.stop().unwrap();
    let down_at = Instant::now();
    // The outage: 20 s with the database gone.
    while down_at.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let during = spool.stats();
    server.start_again().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let counts: Vec<u64> = callers.into_iter().map(|c| c.join().unwrap()).collect();
    sink.flush().unwrap();
    spool.drain(Duration::from_secs(60)).unwrap();

    let worst = Duration::from_nanos(worst_ns.load(Ordering::Relaxed));
    eprintln!(
        "outage: {} events, worst caller wait {worst:?}; spool during the outage: {during:?}; pg: {:?}",
        written.load(Ordering::Relaxed),
        pg.stats()
    );
    assert!(
        worst <= Duration::from_millis(50),
        "a caller waited {worst:?}"
    );
    assert!(
        during.depth > 1000,
        "events waited in the spool: {during:?}"
    );
    assert!(
        during.inner_errors > 0 && during.last_error.is_some(),
        "{during:?}"
    );
    let table = stored(&url, "outage");
    let want: HashSet<Uuid> = counts
        .iter()
        .enumerate()
        .flat_map(|(t, &n)| (0..n).map(move |i| event(t as u64, i).event_id))
        .collect();
    assert_eq!(table.len(), want.len());
    assert!(table.iter().all(|(id, n)| *n == 1 && want.contains(id)));
    let st = spool.stats();
    assert_eq!((st.depth, st.undeliverable, st.corrupt), (0, 0, 0));
}

#[test]
fn a_hung_server_shows_in_the_sink_stats_within_the_timeout() {
    let Some(mut server) = server("a_hung_server_shows_in_the_sink_stats_within_the_timeout")
    else {
        return;
    };
    if !server.may_signal() {
        phi_audit_test_env::skip(
            "spool_postgres",
            "this process may not signal the PostgreSQL server's processes",
        );
        return;
    }
    let url = server.url("");
    let pg = Arc::new(
        PostgresSink::connect(
            &url,
            PostgresOptions::new()
                .schema("hung")
                .statement_timeout(Duration::from_secs(1))
                .connect_timeout(Duration::from_secs(1))
                .backoff(Duration::from_millis(50), Duration::from_millis(200))
                .report_errors(false),
        )
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path(), pg.clone()).unwrap();
    for i in 0..10 {
        spool.write(&event(7, i)).unwrap();
    }
    spool.drain(Duration::from_secs(30)).unwrap();
    assert_eq!(pg.stats().errors, 0);

    server.signal("STOP").unwrap();
    let stopped = Instant::now();
    let mut worst = Duration::ZERO;
    for i in 10..20 {
        let t0 = Instant::now();
        spool.write(&event(7, i)).unwrap();
        worst = worst.max(t0.elapsed());
    }
    // The answer limit is the statement timeout (1 s) plus 2 s.
    let mut seen = None;
    while stopped.elapsed() < Duration::from_secs(6) {
        let st = pg.stats();
        if st.errors > 0 {
            seen = Some((stopped.elapsed(), st));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    server.signal("CONT").unwrap();
    let (after, st) = seen.expect("the hung server was not reported within 6 s");
    eprintln!("hung server reported after {after:?}: {st:?}; worst spool write {worst:?}");
    assert!(after >= Duration::from_secs(2), "{after:?}");
    assert!(
        after <= Duration::from_secs(4) + Duration::from_millis(500),
        "{after:?}"
    );
    assert!(
        st.last_error
            .as_deref()
            .unwrap()
            .contains("no answer from PostgreSQL"),
        "{st:?}"
    );
    assert!(
        worst < Duration::from_secs(1),
        "spool writes waited {worst:?}"
    );
    spool.drain(Duration::from_secs(60)).unwrap();
    let table = stored(&url, "hung");
    assert_eq!(table.len(), 20);
    assert!(table.values().all(|&n| n == 1));
}

/// The producing process of the crash test, run as a child of the test
/// binary (`PHI_AUDIT_SPOOL_CHILD` set): writes events through a `Spool` in
/// front of `PostgresSink` from two threads and prints `ACK <id>` for each
/// write that returned Ok; with `drain` it only delivers what the spool
/// holds and prints the spool's counters. Without the variable it returns
/// at once (it is not a test of its own).
#[test]
fn crash_child_process() {
    let Ok(spec) = std::env::var("PHI_AUDIT_SPOOL_CHILD") else {
        return;
    };
    let mut parts = spec.split('|');
    let (url, dir, mode) = (
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
    );
    let pg = PostgresSink::connect(
        &url,
        PostgresOptions::new()
            .schema("crash")
            .statement_timeout(Duration::from_secs(1))
            .report_errors(false),
    )
    .unwrap();
    let spool = Arc::new(Spool::open(&dir, pg).unwrap());
    if mode == "drain" {
        let r = spool.drain(Duration::from_secs(60));
        println!(
            "STATS recovered={} {:?}",
            spool.stats().recovered,
            r.is_ok()
        );
        return;
    }
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let (spool, out) = (spool.clone(), out.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    let e = event(100 + t, i);
                    spool.write(&e).unwrap();
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ACK {}", e.event_id).unwrap();
                    o.flush().unwrap();
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn sigkill_with_a_full_spool_then_restart_delivers_every_acknowledged_event_once() {
    let Some(mut server) =
        server("sigkill_with_a_full_spool_then_restart_delivers_every_acknowledged_event_once")
    else {
        return;
    };
    if !server.may_signal() {
        phi_audit_test_env::skip(
            "spool_postgres",
            "this process may not signal the PostgreSQL server's processes",
        );
        return;
    }
    let url = server.url("");
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let child = |mode: &str| {
        Command::new(std::env::current_exe().unwrap())
            .args([
                "crash_child_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                "PHI_AUDIT_SPOOL_CHILD",
                format!("{url}|{}|{mode}", spool_dir.display()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut producer = child("produce");
    let lines = BufReader::new(producer.stdout.take().unwrap());
    let mut acked: Vec<Uuid> = Vec::new();
    let mut lines = lines.lines();
    // Some events delivered, then the database hangs and the spool fills.
    let mut hung = false;
    while let Some(Ok(line)) = lines.next() {
        if let Some(id) = line.strip_prefix("ACK ") {
            acked.push(id.parse().unwrap());
        }
        if acked.len() == 300 && !hung {
            server.signal("STOP").unwrap();
            hung = true;
        }
        if acked.len() >= 900 {
            break;
        }
    }
    // SIGKILL mid-stream: the producer is writing as it dies.
    producer.kill().unwrap();
    let _ = producer.wait();
    // Lines it printed before it died are acknowledged events too.
    for line in lines.map_while(Result::ok) {
        if let Some(id) = line.strip_prefix("ACK ") {
            acked.push(id.parse().unwrap());
        }
    }
    server.signal("CONT").unwrap();
    assert!(acked.len() >= 900);

    let restarted = child("drain").wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&restarted.stdout);
    // (The test harness may print its own words before it on the line.)
    let stats = text
        .lines()
        .find_map(|l| l.find("STATS ").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("the restarted producer said: {text}"));
    eprintln!(
        "restarted producer: {stats}; {} acknowledged before the kill",
        acked.len()
    );
    let recovered: u64 = stats
        .split_whitespace()
        .find_map(|w| w.strip_prefix("recovered="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        recovered > 0,
        "the spool was not empty at the kill: {stats}"
    );
    assert!(stats.ends_with("true"), "{stats}");

    let table = stored(&url, "crash");
    let missing = acked.iter().filter(|id| !table.contains_key(id)).count();
    assert_eq!(missing, 0, "acknowledged events missing from the table");
    assert!(table.values().all(|&n| n == 1));
    let set: HashSet<&Uuid> = acked.iter().collect();
    assert_eq!(set.len(), acked.len(), "an id was acknowledged twice");
}

#[test]
fn events_sent_again_after_a_stale_acknowledgement_are_duplicates_not_losses() {
    let Some(server) =
        server("events_sent_again_after_a_stale_acknowledgement_are_duplicates_not_losses")
    else {
        return;
    };
    let url = server.url("");
    let pg = Arc::new(
        PostgresSink::connect(
            &url,
            PostgresOptions::new()
                .schema("again")
                .integrity(true)
                .report_errors(false),
        )
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<AuditEvent> = (0..30).map(|i| event(9, i)).collect();
    {
        let spool = Spool::open(dir.path(), pg.clone()).unwrap();
        for e in &events {
            spool.write(e).unwrap();
        }
        spool.drain(Duration::from_secs(30)).unwrap();
    }
    // As after a power loss that kept the segment but not its
    // acknowledgement: the same events, unacknowledged, in a segment.
    let mut text = Vec::new();
    for e in &events {
        e.write_json(&mut text);
        text.push(b'\n');
    }
    std::fs::write(dir.path().join("seg-00000000000000000099.jsonl"), &text).unwrap();
    let spool = Spool::open(dir.path(), pg.clone()).unwrap();
    assert_eq!(spool.stats().recovered, 30);
    spool.drain(Duration::from_secs(30)).unwrap();
    let st = pg.stats();
    assert_eq!(
        (st.inserted, st.duplicates, st.conflicts),
        (30, 30, 0),
        "{st:?}"
    );
    let sp = spool.stats();
    assert_eq!(
        (sp.delivered, sp.undeliverable, sp.inner_errors),
        (30, 0, 0),
        "{sp:?}"
    );
    assert!(spool.flush().is_ok());
    assert!(stored(&url, "again").values().all(|&n| n == 1));
}
