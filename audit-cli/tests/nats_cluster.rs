//! A 3-node JetStream cluster on 127.0.0.1, the stream with 3 replicas:
//! SIGKILL the stream's leader mid-stream; the producers keep going once a
//! new leader is elected, every event is stored exactly once in
//! PostgreSQL, and `phi-audit verify --postgres` passes for every service.
//!
//! Needs nats-server (PHI_AUDIT_NATS_SERVER, else /usr/sbin/nats-server)
//! and PHI_AUDIT_PG_URL; skips with the reason otherwise.

mod fleet;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use fleet::*;

const SERVICES: [&str; 2] = ["chart-service", "lab-service"];

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The server name of the stream's leader, once there is one.
fn stream_leader(urls: &str, stream: &str) -> Option<String> {
    rt().block_on(async {
        let addrs: Vec<&str> = urls.split(',').collect();
        let c = async_nats::connect(addrs).await.ok()?;
        let mut s = jetstream::new(c).get_stream(stream).await.ok()?;
        let info = s.info().await.ok()?;
        info.cluster.as_ref().and_then(|c| c.leader.clone())
    })
}

#[test]
fn cluster_leader_killed_mid_stream_every_event_once() {
    let Some((bin, pg)) = requirements("cluster_leader_killed_mid_stream_every_event_once") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let schema = schema("cluster");
    let mut nodes = cluster(&bin, dir.path(), 3);
    let urls: String = nodes.iter().map(|n| n.url()).collect::<Vec<_>>().join(",");
    let mut collector = Collector::start(
        &urls,
        "AUDIT",
        &pg,
        &schema,
        &["--replicas", "3"],
        dir.path().join("collector.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        if let Some(l) = stream_leader(&urls, "AUDIT") {
            break l;
        }
        assert!(
            Instant::now() < deadline && collector.exited().is_none(),
            "the stream was not created: {}",
            collector.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut producers: Vec<Producer> = SERVICES
        .iter()
        .map(|s| Producer::new(s, &urls, nats_options("AUDIT"), dir.path()))
        .collect();
    for i in 0..1000 {
        for p in &mut producers {
            p.emit(i);
        }
    }
    let seen = wait_for_rows(&pg, &schema, 200, Duration::from_secs(30));
    assert!(
        seen >= 200,
        "events did not flow before the failover ({seen})"
    );
    // SIGKILL the stream's leader while events are still being published.
    let node = nodes
        .iter_mut()
        .find(|n| n.name == leader)
        .expect("leader is a node");
    node.kill();
    for i in 1000..2000 {
        for p in &mut producers {
            p.emit(i);
        }
    }
    for p in &producers {
        p.dispatch
            .flush()
            .expect("every event acknowledged after the re-election");
    }
    // The stream's info is asked of any live node; an answer may come from
    // the killed node's address first, or before the election settled.
    let deadline = Instant::now() + Duration::from_secs(30);
    let new_leader = loop {
        match stream_leader(&urls, "AUDIT") {
            Some(l) if l != leader => break l,
            _ => {
                assert!(
                    Instant::now() < deadline,
                    "no new stream leader within 30 s"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    assert_ne!(new_leader, leader);
    let rows = wait_for_rows(&pg, &schema, 4000, Duration::from_secs(60));
    assert_eq!(rows, 4000, "collector log:\n{}", collector.log_text());
    let status = collector.stop();
    let log = collector.log_text();
    assert_eq!(status.code(), Some(0), "collector log:\n{log}");
    let (counts, ids) = table(&pg, &schema);
    for s in SERVICES {
        assert_eq!(
            counts.get(s).copied(),
            Some(2000),
            "rows of {s}: {counts:?}"
        );
        let out = verify(&pg, &schema, s);
        assert!(
            out.status.success(),
            "verify --postgres {s}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let sent: HashSet<uuid::Uuid> = producers
        .iter()
        .flat_map(|p| p.ids.iter().copied())
        .collect();
    assert_eq!(ids, sent, "the table holds exactly the events sent");
    drop(producers);
    drop_schema(&pg, &schema);
}
