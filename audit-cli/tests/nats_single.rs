//! Single JetStream server: SIGKILL `nats-server` mid-stream and restart it
//! on the same store, and SIGKILL the collector mid-batch and restart it;
//! every event ends up exactly once in PostgreSQL, and the chains verify.
//!
//! Needs nats-server (PHI_AUDIT_NATS_SERVER, else /usr/sbin/nats-server)
//! and PHI_AUDIT_PG_URL; skips with the reason otherwise.

mod fleet;

use std::collections::HashSet;
use std::time::Duration;

use fleet::*;
use phi_audit_runtime::{CloudEvents, NatsSink};

const SERVICES: [&str; 2] = ["chart-service", "billing-service"];

fn check_exactly_once(pg: &str, schema: &str, producers: &[Producer], per_service: i64) {
    let (counts, ids) = table(pg, schema);
    for s in SERVICES {
        assert_eq!(
            counts.get(s).copied(),
            Some(per_service),
            "rows of {s}: {counts:?}"
        );
    }
    let sent: HashSet<uuid::Uuid> = producers
        .iter()
        .flat_map(|p| p.ids.iter().copied())
        .collect();
    assert_eq!(sent.len() as i64, per_service * SERVICES.len() as i64);
    assert_eq!(ids, sent, "the table holds exactly the events sent");
    for s in SERVICES {
        let out = verify(pg, schema, s);
        assert!(
            out.status.success(),
            "verify --postgres {s}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn nats_server_killed_mid_stream_every_event_once() {
    let Some((bin, pg)) = requirements("nats_server_killed_mid_stream_every_event_once") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let schema = schema("natskill");
    let mut server = NatsServer::single(&bin, dir.path());
    let mut collector = Collector::start(
        &server.url(),
        "AUDIT",
        &pg,
        &schema,
        &[],
        dir.path().join("collector.log"),
    );
    let mut producers: Vec<Producer> = SERVICES
        .iter()
        .map(|s| Producer::new(s, &server.url(), nats_options("AUDIT"), dir.path()))
        .collect();
    for p in &mut producers {
        for i in 0..1000 {
            p.emit(i);
        }
    }
    // Some events stored: the stream is live. Kill the server mid-stream.
    let seen = wait_for_rows(&pg, &schema, 200, Duration::from_secs(30));
    assert!(
        seen >= 200,
        "events did not flow before the outage ({seen})"
    );
    server.kill();
    for p in &mut producers {
        for i in 1000..1500 {
            p.emit(i);
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    server.start();
    for p in &producers {
        p.dispatch
            .flush()
            .expect("every event acknowledged by JetStream");
    }
    let errors: u64 = producers.iter().map(|p| nats_of(p).stats().errors).sum();
    let retries: u64 = producers.iter().map(|p| nats_of(p).stats().retries).sum();
    assert!(
        errors > 0 && retries > 0,
        "the outage was seen by the producers"
    );
    let rows = wait_for_rows(&pg, &schema, 3000, Duration::from_secs(60));
    assert_eq!(rows, 3000, "collector log:\n{}", collector.log_text());
    let status = collector.stop();
    let log = collector.log_text();
    assert_eq!(status.code(), Some(0), "collector log:\n{log}");
    let stats = last_stats(&log);
    assert_eq!(stats["malformed"], 0);
    assert_eq!(stats["conflicts"], 0);
    check_exactly_once(&pg, &schema, &producers, 1500);
    drop(producers);
    drop_schema(&pg, &schema);
}

#[test]
fn collector_killed_mid_batch_every_event_once() {
    let Some((bin, pg)) = requirements("collector_killed_mid_batch_every_event_once") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let schema = schema("collkill");
    let server = NatsServer::single(&bin, dir.path());
    let log = dir.path().join("collector.log");
    let mut collector = Collector::start(&server.url(), "AUDIT", &pg, &schema, &[], log.clone());
    // One service publishes CloudEvents envelopes, the other plain events:
    // the collector reads both.
    let mut producers: Vec<Producer> = vec![
        Producer::new(
            SERVICES[0],
            &server.url(),
            nats_options("AUDIT"),
            dir.path(),
        ),
        Producer::new(
            SERVICES[1],
            &server.url(),
            nats_options("AUDIT").cloudevents(CloudEvents::new()),
            dir.path(),
        ),
    ];
    for i in 0..1500 {
        for p in &mut producers {
            p.emit(i);
        }
    }
    for p in &producers {
        p.dispatch
            .flush()
            .expect("every event acknowledged by JetStream");
    }
    // Kill the collector while it is storing batches.
    let seen = wait_for_rows(&pg, &schema, 600, Duration::from_secs(30));
    collector.kill();
    let after_kill = wait_for_rows(&pg, &schema, 3000, Duration::from_millis(10));
    assert!(
        seen >= 600 && after_kill < 3000,
        "the collector was killed mid-stream ({seen}, {after_kill} rows)"
    );
    let mut collector = Collector::start(&server.url(), "AUDIT", &pg, &schema, &[], log);
    let rows = wait_for_rows(&pg, &schema, 3000, Duration::from_secs(60));
    assert_eq!(rows, 3000, "collector log:\n{}", collector.log_text());
    // Nothing more arrives (redeliveries of committed batches are skipped).
    std::thread::sleep(Duration::from_millis(2500));
    let status = collector.stop();
    let text = collector.log_text();
    assert_eq!(status.code(), Some(0), "collector log:\n{text}");
    let stats = last_stats(&text);
    assert_eq!(stats["conflicts"], 0);
    assert_eq!(stats["pending"], 0, "every message acknowledged: {stats}");
    check_exactly_once(&pg, &schema, &producers, 1500);
    drop(producers);
    drop_schema(&pg, &schema);
}

#[test]
fn decode_reads_events_and_cloudevents_envelopes_and_quotes_nothing() {
    let mut p = Producer::offline("decode-service");
    let event = p.event(7);
    let json = event.to_json();
    assert_eq!(NatsSink::decode(json.as_bytes()).unwrap(), event);
    let id = event.event_id.hyphenated().to_string();
    let envelope = format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"/services/decode-service","type":"t","time":"2026-01-01T00:00:00.000Z","datacontenttype":"application/json","data":{json}}}"#
    );
    assert_eq!(NatsSink::decode(envelope.as_bytes()).unwrap(), event);
    // The envelope's id must be the event's.
    let other = envelope.replacen(&id, "00000000-0000-4000-8000-000000000000", 1);
    let e = NatsSink::decode(other.as_bytes()).unwrap_err().to_string();
    assert!(e.contains("event_id"), "{e}");
    let v2 = envelope.replace("\"specversion\":\"1.0\"", "\"specversion\":\"0.3\"");
    assert!(NatsSink::decode(v2.as_bytes()).is_err());
    // Not an event: the error never quotes the message.
    for bad in [
        "SSN 123-45-6789".as_bytes(),
        br#"{"patient":"Jane Roe 123-45-6789"}"#,
        br#"{"specversion":"1.0","data":{"name":"Jane Roe"}}"#,
    ] {
        let e = NatsSink::decode(bad).unwrap_err().to_string();
        assert!(!e.contains("123-45") && !e.contains("Jane"), "{e}");
    }
}

#[test]
fn collector_terminates_messages_that_are_not_events_and_never_echoes_them() {
    let Some((bin, pg)) =
        requirements("collector_terminates_messages_that_are_not_events_and_never_echoes_them")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let schema = schema("malformed");
    let server = NatsServer::single(&bin, dir.path());
    let mut collector = Collector::start(
        &server.url(),
        "AUDIT",
        &pg,
        &schema,
        &[],
        dir.path().join("collector.log"),
    );
    let mut p = Producer::new(
        "chart-service",
        &server.url(),
        nats_options("AUDIT"),
        dir.path(),
    );
    p.emit(1);
    p.deliver_all();
    publish_raw(
        &server.url(),
        "audit.chart-service",
        b"Jane Roe SSN 123-45-6789",
    );
    assert_eq!(wait_for_rows(&pg, &schema, 1, Duration::from_secs(30)), 1);
    // The garbage message is fetched, terminated and counted: SIGUSR1
    // asks for the stats line.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        collector.signal("-USR1");
        std::thread::sleep(Duration::from_millis(300));
        let log = collector.log_text();
        if log.contains("phi-audit collect: ") && last_stats(&log)["malformed"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
    }
    let status = collector.stop();
    let log = collector.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert_eq!(last_stats(&log)["malformed"], 1);
    assert!(!log.contains("Jane") && !log.contains("123-45"), "{log}");
    let (counts, _) = table(&pg, &schema);
    assert_eq!(counts.get("chart-service"), Some(&1));
    drop(p);
    drop_schema(&pg, &schema);
}

fn publish_raw(url: &str, subject: &'static str, payload: &'static [u8]) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let c = async_nats::connect(url).await.unwrap();
            let js = async_nats::jetstream::new(c);
            js.publish(subject, payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        });
}
