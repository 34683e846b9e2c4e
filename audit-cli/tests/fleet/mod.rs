//! Test harness for the fleet tests: `nats-server` processes (single or a
//! cluster) on free loopback ports with temporary store directories, the
//! `phi-audit collect` process, producers and PostgreSQL checks.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use phi_audit_runtime::{
    with_dispatch, ActionType, Config, Dispatch, EventBuilder, NatsOptions, NatsSink, Spool,
};
use uuid::Uuid;

/// The nats-server binary: PHI_AUDIT_NATS_SERVER, else /usr/sbin/nats-server.
fn nats_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PHI_AUDIT_NATS_SERVER") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "PHI_AUDIT_NATS_SERVER is set but is not a file: {}",
            p.display()
        );
        return Some(p);
    }
    let p = PathBuf::from("/usr/sbin/nats-server");
    p.is_file().then_some(p)
}

/// nats-server and PostgreSQL for `test`, or `None` after a visible skip
/// (a failure under PHI_AUDIT_REQUIRE_SERVERS=1).
pub fn requirements(test: &str) -> Option<(PathBuf, String)> {
    let Some(bin) = nats_binary() else {
        phi_audit_test_env::skip_required(
            test,
            "no nats-server (set PHI_AUDIT_NATS_SERVER or install /usr/sbin/nats-server)",
        );
        return None;
    };
    let pg = phi_audit_test_env::server(phi_audit_test_env::PG_URL, test, "PostgreSQL URL")?;
    Some((bin, pg))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One nats-server process (restartable on the same ports and store).
pub struct NatsServer {
    pub name: String,
    bin: PathBuf,
    pub port: u16,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    fn new(bin: &Path, dir: &Path, name: &str, extra: Vec<String>) -> NatsServer {
        let port = free_port();
        let store = dir.join(format!("store-{name}"));
        std::fs::create_dir_all(&store).unwrap();
        let mut args = vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-js".into(),
            "-sd".into(),
            store.display().to_string(),
            "--server_name".into(),
            name.into(),
        ];
        args.extend(extra);
        NatsServer {
            name: name.into(),
            bin: bin.to_path_buf(),
            port,
            args,
            log: dir.join(format!("{name}.log")),
            child: None,
        }
    }

    /// A single JetStream server.
    pub fn single(bin: &Path, dir: &Path) -> NatsServer {
        let mut s = NatsServer::new(bin, dir, "n0", vec![]);
        s.start();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none());
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.bin)
            .args(&self.args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 3-node JetStream cluster on 127.0.0.1.
pub fn cluster(bin: &Path, dir: &Path, n: usize) -> Vec<NatsServer> {
    let cports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let mut nodes: Vec<NatsServer> = (0..n)
        .map(|i| {
            let routes: Vec<String> = (0..n)
                .filter(|&j| j != i)
                .map(|j| format!("nats://127.0.0.1:{}", cports[j]))
                .collect();
            NatsServer::new(
                bin,
                dir,
                &format!("n{}", i + 1),
                vec![
                    "--cluster_name".into(),
                    "phi-audit-test".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{}", cports[i]),
                    "--routes".into(),
                    routes.join(","),
                ],
            )
        })
        .collect();
    for s in &mut nodes {
        s.start();
    }
    nodes
}

/// A fresh schema name for a test.
pub fn schema(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("fleet_{test}_{}_{nanos}", std::process::id())
}

pub fn drop_schema(pg: &str, schema: &str) {
    if let Ok(mut c) = postgres::Client::connect(pg, postgres::NoTls) {
        let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
    }
}

/// Rows per service, and all event ids, in the table.
pub fn table(pg: &str, schema: &str) -> (BTreeMap<String, i64>, HashSet<Uuid>) {
    let mut c = postgres::Client::connect(pg, postgres::NoTls).unwrap();
    let exists: bool = c
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("\"{schema}\".audit_events")],
        )
        .unwrap()
        .get(0);
    if !exists {
        return Default::default();
    }
    let mut counts = BTreeMap::new();
    for r in c
        .query(
            &format!("SELECT service_name, count(*) FROM \"{schema}\".audit_events GROUP BY 1"),
            &[],
        )
        .unwrap()
    {
        counts.insert(r.get::<_, String>(0), r.get::<_, i64>(1));
    }
    let ids = c
        .query(
            &format!("SELECT event_id FROM \"{schema}\".audit_events"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get::<_, Uuid>(0))
        .collect();
    (counts, ids)
}

/// Waits until the table holds `total` rows (or the deadline passes).
pub fn wait_for_rows(pg: &str, schema: &str, total: i64, within: Duration) -> i64 {
    let deadline = Instant::now() + within;
    loop {
        let (counts, _) = table(pg, schema);
        let n: i64 = counts.values().sum();
        if n >= total || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `phi-audit collect` process.
pub struct Collector {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Collector {
    pub fn start(
        nats: &str,
        stream: &str,
        pg: &str,
        schema: &str,
        extra: &[&str],
        log: PathBuf,
    ) -> Collector {
        let err = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_phi-audit"))
            .args([
                "collect",
                "--nats",
                nats,
                "--stream",
                stream,
                "--postgres",
                pg,
                "--schema",
                schema,
                "--batch",
                "200",
                "--ack-wait",
                "2s",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("phi-audit collect starts");
        Collector {
            child: Some(child),
            log,
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal (`-USR1`, ...).
    pub fn signal(&self, sig: &str) {
        let c = self.child.as_ref().expect("running");
        let _ = Command::new("kill")
            .args([sig, &c.id().to_string()])
            .status();
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() >= deadline {
                let _ = c.kill();
                panic!("the collector did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether it exited by itself.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last stats line of a collector's log, as JSON.
pub fn last_stats(log: &str) -> serde_json::Value {
    let line = log
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("phi-audit collect: "))
        .expect("a stats line");
    serde_json::from_str(line).expect("stats JSON")
}

/// A producing service: a dispatch whose sink is NatsSink behind a Spool.
pub struct Producer {
    pub dispatch: Dispatch,
    pub spool: Option<Arc<Spool>>,
    pub nats: Option<Arc<NatsSink>>,
    pub ids: Vec<Uuid>,
}

/// The NatsSink of a producer.
pub fn nats_of(p: &Producer) -> &NatsSink {
    p.nats.as_deref().expect("a NatsSink")
}

pub fn nats_options(stream: &str) -> NatsOptions {
    NatsOptions::new()
        .stream(stream)
        .ack_timeout(Duration::from_millis(1000))
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .report_errors(false)
}

impl Producer {
    /// The service `service`, its spool in `dir/spool-<service>`.
    pub fn new(service: &str, url: &str, options: NatsOptions, dir: &Path) -> Producer {
        let nats = Arc::new(NatsSink::connect(url, options).expect("NatsSink"));
        let spool =
            Arc::new(Spool::open(dir.join(format!("spool-{service}")), nats.clone()).unwrap());
        let dispatch = Dispatch::new(Config::new(service).build().unwrap(), spool.clone());
        Producer {
            dispatch,
            spool: Some(spool),
            nats: Some(nats),
            ids: Vec::new(),
        }
    }

    /// Waits until every event is acknowledged by JetStream (the spool
    /// drained): flush (durable locally, no loss), then drain.
    pub fn deliver_all(&self) {
        self.dispatch.flush().expect("no event lost locally");
        let spool = self.spool.as_ref().expect("a spool");
        spool
            .drain(Duration::from_secs(90))
            .expect("every event acknowledged by JetStream");
        let s = spool.stats();
        assert_eq!(s.depth, 0);
        assert_eq!(
            s.undeliverable + s.refused + s.write_errors + s.corrupt,
            0,
            "{s:?}"
        );
    }

    /// A producer without a server, to build events.
    pub fn offline(service: &str) -> Producer {
        let dispatch = Dispatch::new(
            Config::new(service).build().unwrap(),
            phi_audit_runtime::MemorySink::new(),
        );
        Producer {
            dispatch,
            spool: None,
            nats: None,
            ids: Vec::new(),
        }
    }

    /// A complete event, as the dispatch makes it.
    pub fn event(&mut self, i: usize) -> phi_audit_runtime::AuditEvent {
        EventBuilder::access(ActionType::Read, "Patient", format!("p-{i}"))
            .event_id(Uuid::new_v4())
            .build(&self.dispatch)
    }

    /// Emits one audited call with a known id.
    pub fn emit(&mut self, i: usize) {
        let id = Uuid::new_v4();
        self.ids.push(id);
        with_dispatch(&self.dispatch, || {
            EventBuilder::access(ActionType::Read, "Patient", format!("p-{i}"))
                .event_id(id)
                .emit()
        });
    }
}

/// Runs `phi-audit verify --postgres` for a service.
pub fn verify(pg: &str, schema: &str, service: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_phi-audit"))
        .args([
            "verify",
            "--postgres",
            pg,
            "--pg-schema",
            schema,
            "--service",
            service,
        ])
        .output()
        .unwrap()
}
