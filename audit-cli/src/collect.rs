//! `phi-audit collect`: a durable JetStream consumer that stores audit
//! events in PostgreSQL, exactly once.
//!
//! Each fetched batch is written into [`PostgresSink`] in one transaction
//! (chained per service), and its messages are acknowledged only after the
//! commit. Killed at any point, the collector leaves the batch in flight
//! unacknowledged: JetStream delivers it again (after `--ack-wait`) and the
//! table's `event_id` key skips what was committed, so every event is stored
//! once. Nothing read from a message is ever printed.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, AckKind};
use futures_util::StreamExt;
use phi_audit_runtime::{
    AuditEvent, NatsSink, NatsStream, PostgresOptions, PostgresSink, PostgresStats, Sink,
};
use tokio::signal::unix::{signal, SignalKind};

use crate::{EXIT_FAIL, EXIT_OK};

/// The command line of `phi-audit collect`.
#[derive(clap::Args)]
pub struct CollectArgs {
    /// NATS server URL (several separated by `,`: the servers of a cluster).
    #[arg(long, value_name = "URL")]
    pub nats: String,
    /// JetStream stream holding the events (created when absent, with
    /// subjects `<prefix>.>`).
    #[arg(long, value_name = "NAME")]
    pub stream: String,
    /// PostgreSQL URL of the audit table.
    #[arg(long, value_name = "URL")]
    pub postgres: String,
    /// Schema (namespace) of the audit table.
    #[arg(long, value_name = "NAME", default_value = "public")]
    pub schema: String,
    /// Subject prefix the producers publish under (`<prefix>.<service>`).
    #[arg(long, value_name = "PREFIX", default_value = "audit")]
    pub prefix: String,
    /// Name of the durable consumer (one per collector group: collectors
    /// sharing it share the work).
    #[arg(long, value_name = "NAME", default_value = "phi-audit-collector")]
    pub durable: String,
    /// Replicas of the stream when it is created (1 to 5).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub replicas: usize,
    /// Duplicate window of the stream when it is created (`2m`, `30s`, ..).
    #[arg(long = "duplicate-window", value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub duplicate_window: Duration,
    /// Most events per fetch and per transaction.
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch: u64,
    /// How long a delivered batch may stay unacknowledged before JetStream
    /// delivers it again (after a crash of the collector).
    #[arg(long = "ack-wait", value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub ack_wait: Duration,
}

/// Parses `500ms`, `30s`, `2m`, `1h` (a plain number is seconds).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a duration such as 500ms, 30s, 2m or 1h".to_owned())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err("expected a duration such as 500ms, 30s, 2m or 1h".to_owned()),
    };
    Ok(d)
}

/// Counters of one run (the stats line).
#[derive(Default)]
struct Counts {
    received: u64,
    malformed: u64,
    batches: u64,
    failed_batches: u64,
    fetch_errors: u64,
    ack_errors: u64,
    pending: Option<u64>,
    started: Option<Instant>,
}

fn stats_line(c: &Counts, pg: &PostgresStats) -> String {
    let secs = c.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    serde_json::json!({
        "received": c.received,
        "stored": pg.inserted,
        "duplicates": pg.duplicates,
        "conflicts": pg.conflicts,
        "malformed": c.malformed,
        "batches": c.batches,
        "failed_batches": c.failed_batches,
        "fetch_errors": c.fetch_errors,
        "ack_errors": c.ack_errors,
        "postgres_errors": pg.errors,
        "pending": c.pending,
        "seconds": (secs * 10.0).round() / 10.0,
    })
    .to_string()
}

/// Runs the collector until SIGINT or SIGTERM. Exit codes: 0 on a clean
/// stop with every received event stored, 1 when messages could not be
/// stored (malformed, or an `event_id` taken by another event: counted),
/// 2 when NATS, the stream or PostgreSQL cannot be reached at start.
pub fn run(args: CollectArgs) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return crate::error(format!("cannot start the runtime: {e}")),
    };
    let pg = match PostgresSink::connect(
        &args.postgres,
        PostgresOptions::new()
            .schema(args.schema.clone())
            .integrity(true)
            .batch_size(args.batch as usize)
            .give_up_after(Some(Duration::from_secs(20)))
            .report_errors(false),
    ) {
        Ok(pg) => Arc::new(pg),
        Err(e) => return crate::error(e),
    };
    runtime.block_on(collect(args, pg))
}

async fn collect(args: CollectArgs, pg: Arc<PostgresSink>) -> u8 {
    let addrs: Vec<async_nats::ServerAddr> = match args
        .nats
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(a) if !a.is_empty() => a,
        _ => {
            return crate::error(
                "invalid --nats URL; expected nats://HOST:PORT (several separated by `,`)",
            )
        }
    };
    let client = match async_nats::ConnectOptions::new()
        .name("phi-audit-collect")
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .reconnect_delay_callback(|n| Duration::from_millis((50u64 << n.min(6)).min(2000)))
        .connect(addrs)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            return crate::error(format!(
                "cannot connect to NATS ({e}); check the URL and that the server is running"
            ))
        }
    };
    let js = jetstream::new(client.clone());
    let spec = NatsStream::new(args.stream.clone())
        .replicas(args.replicas)
        .duplicate_window(args.duplicate_window);
    // A cluster that is starting (no JetStream meta leader yet) or a
    // stream being re-elected answers with errors for a few seconds: retry
    // for up to 30 s before giving up.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut consumer = loop {
        let attempt = async {
            let stream = spec
                .ensure(&js, &args.prefix)
                .await
                .map_err(|e| e.to_string())?;
            let config = consumer::pull::Config {
                durable_name: Some(args.durable.clone()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: args.ack_wait,
                deliver_policy: consumer::DeliverPolicy::All,
                filter_subject: format!("{}.>", args.prefix),
                max_ack_pending: (args.batch as i64).saturating_mul(4).max(1000),
                ..Default::default()
            };
            stream
                .get_or_create_consumer::<consumer::pull::Config>(&args.durable, config)
                .await
                .map_err(|e| format!("cannot create or open the durable consumer: {e}"))
        };
        match attempt.await {
            Ok(c) => break c,
            Err(e) if Instant::now() >= deadline => return crate::error(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };

    let (mut sigint, mut sigterm, mut sigusr1) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::user_defined1()),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        _ => return crate::error("cannot install signal handlers"),
    };

    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(200));
        b
    });
    let mut counts = Counts {
        started: Some(Instant::now()),
        ..Counts::default()
    };
    let mut last_info = Instant::now() - Duration::from_secs(10);
    let mut backoff = Duration::from_millis(100);

    'run: loop {
        // Lag, for the progress line (once a second).
        if last_info.elapsed() >= Duration::from_secs(1) {
            last_info = Instant::now();
            if let Ok(info) = consumer.info().await {
                counts.pending = Some(info.num_pending + info.num_ack_pending as u64);
            }
            if let Some(b) = &bar {
                let s = pg.stats();
                b.set_message(format!(
                    "stored {} events ({} duplicates), {} batches; lag {} messages",
                    s.inserted,
                    s.duplicates,
                    counts.batches,
                    counts.pending.map_or("?".to_owned(), |p| p.to_string())
                ));
            }
        }
        // One batch: wait for messages (or a signal).
        let fetch = async {
            let mut batch = consumer
                .batch()
                .max_messages(args.batch as usize)
                .expires(Duration::from_millis(1000))
                .messages()
                .await?;
            let mut msgs = Vec::with_capacity(args.batch as usize);
            while let Some(m) = batch.next().await {
                msgs.push(m?);
            }
            Ok::<_, async_nats::Error>(msgs)
        };
        let msgs = tokio::select! {
            r = fetch => r,
            _ = sigint.recv() => break 'run,
            _ = sigterm.recv() => break 'run,
            _ = sigusr1.recv() => {
                print_stats(&bar, &counts, &pg.stats());
                continue 'run;
            }
        };
        let msgs = match msgs {
            Ok(m) => {
                backoff = Duration::from_millis(100);
                m
            }
            Err(e) => {
                counts.fetch_errors += 1;
                if let Some(b) = &bar {
                    b.set_message(format!("fetching from JetStream failed ({e}); retrying"));
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = sigint.recv() => break 'run,
                    _ = sigterm.recv() => break 'run,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        if msgs.is_empty() {
            continue;
        }
        counts.received += msgs.len() as u64;
        // Decode; a message that is no audit event is terminated (never
        // redelivered) and counted.
        let mut events: Vec<AuditEvent> = Vec::with_capacity(msgs.len());
        let mut keep = Vec::with_capacity(msgs.len());
        for m in msgs {
            match NatsSink::decode(&m.payload) {
                Ok(e) => {
                    events.push(e);
                    keep.push(m);
                }
                Err(_) => {
                    counts.malformed += 1;
                    if m.ack_with(AckKind::Term).await.is_err() {
                        counts.ack_errors += 1;
                    }
                }
            }
        }
        if events.is_empty() {
            continue;
        }
        // Store, then acknowledge. The write runs off the runtime (the
        // PostgreSQL client blocks); a signal meanwhile is handled after it.
        let before = pg.stats();
        let sink = pg.clone();
        let written = tokio::task::spawn_blocking(move || {
            let r = sink.write_batch(&mut events);
            let _ = sink.flush();
            r.is_ok()
        })
        .await;
        let after = pg.stats();
        // Committed: written, or written but for events whose id another
        // event holds (counted as conflicts; acknowledging them loses
        // nothing more, retrying them never succeeds).
        let committed = match written {
            Ok(ok) => ok || after.failed_batches == before.failed_batches,
            Err(_) => false,
        };
        if committed {
            counts.batches += 1;
            for m in &keep {
                if m.ack().await.is_err() {
                    counts.ack_errors += 1;
                }
            }
        } else {
            counts.failed_batches += 1;
            for m in &keep {
                if m.ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await
                    .is_err()
                {
                    counts.ack_errors += 1;
                }
            }
        }
        let _ = client.flush().await;
    }
    let _ = client.flush().await;
    if let Ok(info) = consumer.info().await {
        counts.pending = Some(info.num_pending + info.num_ack_pending as u64);
    }
    let pg_stats = pg.stats();
    print_stats(&bar, &counts, &pg_stats);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if counts.malformed > 0 || pg_stats.conflicts > 0 {
        EXIT_FAIL
    } else {
        EXIT_OK
    }
}

fn print_stats(bar: &Option<indicatif::ProgressBar>, counts: &Counts, pg: &PostgresStats) {
    let line = format!("phi-audit collect: {}", stats_line(counts, pg));
    match bar {
        Some(b) => b.println(line),
        None => eprintln!("{line}"),
    }
}
