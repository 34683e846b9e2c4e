//! [`NatsSink`]: audit events to a NATS JetStream stream (feature `nats`).

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::Deserialize;

use super::{BatchError, Sink, SinkError};
use crate::config::INTERNAL_TARGET;
use crate::model::event::AuditEvent;

mod stream;

pub use stream::NatsStream;

/// Why connecting, creating a stream or decoding a message failed. Never
/// contains event content or a URL's credentials.
#[derive(Debug)]
pub enum NatsError {
    /// The server URL could not be parsed (its text is not repeated here).
    InvalidUrl,
    /// An option is out of range.
    InvalidOption(String),
    /// The tokio runtime or its thread could not be started.
    Runtime(String),
    /// Connecting failed.
    Connect(String),
    /// Creating, reading or checking the stream or consumer failed.
    Stream(String),
    /// A message is neither an audit event nor a CloudEvents envelope of one.
    Decode(&'static str),
}

impl fmt::Display for NatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsError::InvalidUrl => f.write_str(
                "invalid NATS URL; expected nats://HOST:PORT (several separated by `,`)",
            ),
            NatsError::InvalidOption(m) => write!(f, "invalid NATS option: {m}"),
            NatsError::Runtime(m) => write!(f, "cannot start the NATS client runtime: {m}"),
            NatsError::Connect(m) => write!(
                f,
                "cannot connect to NATS ({m}); check the URL and that the server is running"
            ),
            NatsError::Stream(m) => write!(f, "JetStream error: {m}"),
            NatsError::Decode(m) => write!(f, "not an audit event message: {m}"),
        }
    }
}

impl std::error::Error for NatsError {}

/// CloudEvents 1.0 structured mode: each message is an envelope
/// (`specversion` "1.0", `id` = the event's `event_id`, `source`, `type`,
/// `time` = its timestamp, `datacontenttype` "application/json", `data` =
/// the event), with the NATS header `Content-Type:
/// application/cloudevents+json`.
#[derive(Clone, Debug)]
pub struct CloudEvents {
    source: Option<String>,
    event_type: String,
}

impl Default for CloudEvents {
    fn default() -> Self {
        CloudEvents {
            source: None,
            event_type: CloudEvents::DEFAULT_TYPE.to_owned(),
        }
    }
}

impl CloudEvents {
    /// The default `type`.
    pub const DEFAULT_TYPE: &'static str = "org.bh-healthcare.audit.event";

    /// Envelopes with the default `type` and `source` `/services/<service>`.
    pub fn new() -> CloudEvents {
        CloudEvents::default()
    }

    /// A fixed `source` (a URI reference) for every envelope.
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The `type` of every envelope.
    pub fn event_type(mut self, event_type: impl Into<String>) -> Self {
        self.event_type = event_type.into();
        self
    }
}

/// Options of [`NatsSink::connect`].
#[derive(Clone, Debug)]
pub struct NatsOptions {
    prefix: String,
    stream: Option<String>,
    create: Option<NatsStream>,
    cloudevents: Option<CloudEvents>,
    max_in_flight: usize,
    ack_timeout: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    give_up_after: Option<Duration>,
    connect_timeout: Duration,
    report_errors: bool,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            prefix: "audit".into(),
            stream: None,
            create: None,
            cloudevents: None,
            max_in_flight: 512,
            ack_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            give_up_after: None,
            connect_timeout: Duration::from_secs(5),
            report_errors: true,
        }
    }
}

impl NatsOptions {
    /// The defaults: prefix `audit`, plain JSON lines, 512 publishes in
    /// flight, 5 s acknowledgement timeout, backoff 100 ms doubling to 5 s,
    /// retry forever, 5 s connect timeout, errors logged.
    pub fn new() -> NatsOptions {
        NatsOptions::default()
    }

    /// Subject prefix: events go to `<prefix>.<service>` (default `audit`).
    /// One or more NATS subject tokens separated by `.`, without wildcards.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The stream that must store the events: publishes carry
    /// `Nats-Expected-Stream`, so a subject captured by another stream is
    /// refused (and retried) instead of acknowledged.
    pub fn stream(mut self, name: impl Into<String>) -> Self {
        self.stream = Some(name.into());
        self
    }

    /// Create the stream at connect when it does not exist (and expect it,
    /// as [`NatsOptions::stream`]). Its subjects are `<prefix>.>` of this
    /// sink's prefix.
    pub fn create_stream(mut self, stream: NatsStream) -> Self {
        self.stream = Some(stream.name().to_owned());
        self.create = Some(stream);
        self
    }

    /// Publish CloudEvents 1.0 structured-mode envelopes instead of plain
    /// JSON lines.
    pub fn cloudevents(mut self, envelope: CloudEvents) -> Self {
        self.cloudevents = Some(envelope);
        self
    }

    /// Most publishes awaiting their acknowledgement at once (default 512,
    /// at least 1).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// How long to wait for a publish acknowledgement before publishing the
    /// event again (default 5 s).
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// First and longest wait between rounds of retries.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max.max(initial);
        self
    }

    /// Report a batch's unacknowledged events failed after this long
    /// (counted, and returned by [`Sink::flush`] as a loss). Default: retry
    /// forever (the caller, or the spool in front, waits).
    pub fn give_up_after(mut self, limit: Option<Duration>) -> Self {
        self.give_up_after = limit;
        self
    }

    /// Timeout of one connection attempt (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Log errors through `tracing` at [`crate::INTERNAL_TARGET`] (default
    /// on; kinds only, at most once a second).
    pub fn report_errors(mut self, on: bool) -> Self {
        self.report_errors = on;
        self
    }
}

/// Counters of a [`NatsSink`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatsStats {
    /// Publishes sent (retries included).
    pub published: u64,
    /// Events acknowledged by JetStream.
    pub acked: u64,
    /// Acknowledgements that said the stream already held the message id
    /// (a retry whose first publish was stored): stored once, not lost.
    pub duplicates: u64,
    /// Publishes repeated after an error or a missing acknowledgement.
    pub retries: u64,
    /// Errors seen (each failed publish or acknowledgement).
    pub errors: u64,
    /// Events given up on ([`NatsOptions::give_up_after`]): each a loss.
    pub failed: u64,
    /// Whether the client is connected now.
    pub connected: bool,
    /// The last error, described without event content.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    acked: AtomicU64,
    duplicates: AtomicU64,
    retries: AtomicU64,
    errors: AtomicU64,
    failed: AtomicU64,
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
}

/// One event ready to publish.
struct Outgoing {
    subject: String,
    id: String,
    payload: Bytes,
}

/// Publishes audit events to NATS JetStream (feature `nats`).
///
/// Each event is published as its JSON line (or, with
/// [`NatsOptions::cloudevents`], as a CloudEvents 1.0 structured-mode
/// envelope around it) to the subject `<prefix>.<service>`, with the header
/// `Nats-Msg-Id` = `event_id`, so JetStream drops a repeated publish within
/// the stream's duplicate window. A write returns only after JetStream's
/// publish acknowledgement (the event is stored on the stream's replicas);
/// the events of a batch are published pipelined, up to
/// [`NatsOptions::max_in_flight`] at a time, and those not acknowledged
/// within [`NatsOptions::ack_timeout`] are published again (same id) with
/// backoff, until acknowledged or [`NatsOptions::give_up_after`].
///
/// The sink drives the `async-nats` client on a small tokio runtime of its
/// own (one worker thread), so it serves synchronous callers: put it behind
/// a [`crate::Spool`] (callers wait only for the local append; events
/// survive outages and crashes on disk) or a [`crate::NonBlocking`] queue,
/// whose workers hand it whole batches.
/// Consumers (`phi-audit collect`) decode either form with
/// [`NatsSink::decode`].
///
/// ```no_run
/// use phi_audit_runtime::{Config, Dispatch, NatsOptions, NatsSink, Spool};
///
/// let nats = NatsSink::connect(
///     "nats://127.0.0.1:4222",
///     NatsOptions::new().stream("AUDIT"),
/// )?;
/// let spool = Spool::open("/var/lib/chart-service/audit-spool", nats)?;
/// let dispatch = Dispatch::new(Config::new("chart-service").build()?, spool);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct NatsSink {
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    js: jetstream::Context,
    options: NatsOptions,
    counters: Arc<Counters>,
    losses: super::loss::LossTracker,
    throttle: super::loss::ReportThrottle,
}

impl fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSink")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A NATS subject token for a service name: characters other than ASCII
/// letters, digits, `-` and `_` become `_` (`.`, `*`, `>` and spaces have
/// meanings in subjects); an empty name becomes `_`.
pub fn subject_token(service: &str) -> String {
    let mut s: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        s.push('_');
    }
    s
}

/// Whether `prefix` is one or more subject tokens without wildcards.
pub(crate) fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.split('.').all(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>')
        })
}

/// Splits `url` (one URL, or several separated by `,`) into server
/// addresses.
fn server_addrs(url: &str) -> Result<Vec<async_nats::ServerAddr>, NatsError> {
    let addrs: Vec<async_nats::ServerAddr> = url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| NatsError::InvalidUrl))
        .collect::<Result<_, _>>()?;
    if addrs.is_empty() {
        return Err(NatsError::InvalidUrl);
    }
    Ok(addrs)
}

/// Describes a client error by kind, without message content.
fn describe(e: &dyn fmt::Display) -> String {
    // async-nats errors name kinds and server codes; they carry no payload.
    e.to_string()
}

/// Runs `fut` on `runtime` and waits for it: from a plain thread directly,
/// from a thread that drives another runtime through a task of `runtime`.
/// `None` when the runtime dropped the task (it is shutting down).
fn run_on<F>(runtime: &tokio::runtime::Runtime, fut: F) -> Option<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return Some(runtime.block_on(fut));
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().ok()
}

/// A tokio runtime with one worker thread for the NATS client.
fn runtime(name: &str) -> Result<tokio::runtime::Runtime, NatsError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| NatsError::Runtime(e.to_string()))
}

/// Connects a client to `url` that keeps reconnecting, forever, and reports
/// its state into `connected` (when given).
async fn connect_client(
    addrs: Vec<async_nats::ServerAddr>,
    name: &str,
    connect_timeout: Duration,
    connected: Option<Arc<Counters>>,
    wait: bool,
) -> Result<async_nats::Client, NatsError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(connect_timeout)
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((50u64 << attempts.min(6)).min(2000))
        });
    if !wait {
        options = options.retry_on_initial_connect();
    }
    if let Some(c) = connected {
        options = options.event_callback(move |event| {
            let c = c.clone();
            async move {
                match event {
                    async_nats::Event::Connected => c.connected.store(true, Ordering::Release),
                    async_nats::Event::Disconnected | async_nats::Event::Closed => {
                        c.connected.store(false, Ordering::Release)
                    }
                    _ => {}
                }
            }
        });
    }
    let client = options
        .connect(addrs)
        .await
        .map_err(|e| NatsError::Connect(describe(&e)))?;
    Ok(client)
}

impl NatsSink {
    /// Starts the client for `url` (`nats://HOST:PORT`, or several
    /// separated by `,`: the servers of a cluster) and returns the sink.
    ///
    /// The client connects in the background and keeps reconnecting, so a
    /// server that is down at start-up delays events (they wait in the
    /// caller or the spool in front) without failing the service;
    /// [`NatsStats::connected`] and `last_error` show it. With
    /// [`NatsOptions::create_stream`] the first connection is awaited (at
    /// most the connect timeout per attempt) and the stream created if
    /// absent.
    pub fn connect(url: &str, options: NatsOptions) -> Result<NatsSink, NatsError> {
        if !valid_prefix(&options.prefix) {
            return Err(NatsError::InvalidOption(
                "the prefix must be one or more subject tokens separated by `.`, without `*`, `>` or spaces".into(),
            ));
        }
        let addrs = server_addrs(url)?;
        let runtime = runtime("phi-audit-nats")?;
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let timeout = options.connect_timeout;
        let create = options.create.clone();
        let prefix = options.prefix.clone();
        let max_in_flight = options.max_in_flight;
        let ack_timeout = options.ack_timeout;
        let js = run_on(&runtime, async move {
            let client =
                connect_client(addrs, "phi-audit", timeout, Some(c), create.is_some()).await?;
            let js = jetstream::ContextBuilder::new()
                .timeout(ack_timeout)
                .max_ack_inflight(max_in_flight)
                .backpressure_on_inflight(true)
                .build(client);
            if let Some(stream) = create {
                stream.ensure(&js, &prefix).await?;
            }
            Ok::<_, NatsError>(js)
        })
        .ok_or_else(|| NatsError::Runtime("the runtime stopped while connecting".into()))??;
        Ok(NatsSink {
            runtime: Some(runtime),
            js,
            options,
            counters,
            losses: Default::default(),
            throttle: Default::default(),
        })
    }

    /// Current counters.
    pub fn stats(&self) -> NatsStats {
        let c = &self.counters;
        NatsStats {
            published: c.published.load(Ordering::Acquire),
            acked: c.acked.load(Ordering::Acquire),
            duplicates: c.duplicates.load(Ordering::Acquire),
            retries: c.retries.load(Ordering::Acquire),
            errors: c.errors.load(Ordering::Acquire),
            failed: c.failed.load(Ordering::Acquire),
            connected: c.connected.load(Ordering::Acquire),
            last_error: c
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// The subject events of `service` are published to.
    pub fn subject_for(&self, service: &str) -> String {
        format!("{}.{}", self.options.prefix, subject_token(service))
    }

    /// The event a message carries: a JSON event (what the sink publishes
    /// by default) or a CloudEvents 1.0 structured-mode envelope whose
    /// `data` is one (and whose `id`, when present, is its `event_id`).
    /// Errors describe the problem without quoting the message.
    pub fn decode(payload: &[u8]) -> Result<AuditEvent, NatsError> {
        if let Ok(event) = serde_json::from_slice::<AuditEvent>(payload) {
            return Ok(event);
        }
        #[derive(Deserialize)]
        struct Envelope {
            specversion: String,
            #[serde(default)]
            id: Option<String>,
            data: Option<serde_json::Value>,
        }
        let env: Envelope = serde_json::from_slice(payload)
            .map_err(|_| NatsError::Decode("neither an audit event nor a CloudEvents envelope"))?;
        if env.specversion != "1.0" {
            return Err(NatsError::Decode("CloudEvents specversion is not 1.0"));
        }
        let data = env
            .data
            .ok_or(NatsError::Decode("CloudEvents envelope without data"))?;
        let event: AuditEvent = serde_json::from_value(data)
            .map_err(|_| NatsError::Decode("CloudEvents data is not a valid audit event"))?;
        if let Some(id) = env.id {
            if id != event.event_id.hyphenated().to_string() {
                return Err(NatsError::Decode(
                    "CloudEvents id differs from the event's event_id",
                ));
            }
        }
        Ok(event)
    }

    /// The message for `event`.
    fn encode(&self, event: &AuditEvent) -> Outgoing {
        let id = event.event_id.hyphenated().to_string();
        let subject = self.subject_for(event.service.name.as_str());
        let payload = match &self.options.cloudevents {
            None => {
                let mut v = Vec::with_capacity(640);
                event.write_json(&mut v);
                v
            }
            Some(ce) => {
                let mut v = Vec::with_capacity(900);
                let source = match &ce.source {
                    Some(s) => s.clone(),
                    None => format!("/services/{}", event.service.name.as_str()),
                };
                let time = event.timestamp.rfc3339_bytes();
                v.extend_from_slice(b"{\"specversion\":\"1.0\",\"id\":\"");
                v.extend_from_slice(id.as_bytes());
                v.extend_from_slice(b"\",\"source\":");
                let _ = serde_json::to_writer(&mut v, &source);
                v.extend_from_slice(b",\"type\":");
                let _ = serde_json::to_writer(&mut v, &ce.event_type);
                v.extend_from_slice(b",\"time\":\"");
                v.extend_from_slice(&time);
                v.extend_from_slice(b"\",\"datacontenttype\":\"application/json\",\"data\":");
                event.write_json(&mut v);
                v.push(b'}');
                v
            }
        };
        Outgoing {
            subject,
            id,
            payload: Bytes::from(payload),
        }
    }

    /// Publishes `events`, pipelined, until each is acknowledged (or given
    /// up on). Returns the count of events given up on and the error.
    fn deliver(&self, events: Vec<Outgoing>) -> Result<(), (u64, SinkError)> {
        if events.is_empty() {
            return Ok(());
        }
        let n = events.len() as u64;
        let js = self.js.clone();
        let counters = self.counters.clone();
        let options = self.options.clone();
        match &self.runtime {
            Some(runtime) => run_on(runtime, deliver(js, counters, options, events))
                .unwrap_or(Err((n, SinkError::Closed))),
            None => Err((n, SinkError::Closed)),
        }
    }

    fn lose(&self, n: u64, e: &SinkError) {
        self.counters.failed.fetch_add(n, Ordering::AcqRel);
        self.losses.record(n, e);
        if self.options.report_errors {
            if let Some(total) = self.throttle.add(n) {
                tracing::warn!(
                    target: INTERNAL_TARGET,
                    failed = n,
                    total,
                    error_kind = e.kind(),
                    "audit events not acknowledged by NATS JetStream"
                );
            }
        }
    }
}

fn record_error(counters: &Counters, description: String) {
    counters.errors.fetch_add(1, Ordering::AcqRel);
    *counters
        .last_error
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(description);
}

async fn deliver(
    js: jetstream::Context,
    counters: Arc<Counters>,
    options: NatsOptions,
    events: Vec<Outgoing>,
) -> Result<(), (u64, SinkError)> {
    let started = Instant::now();
    let mut backoff = options.backoff_initial;
    let mut todo: Vec<usize> = (0..events.len()).rev().collect();
    let mut again: Vec<usize> = Vec::new();
    let mut in_flight = FuturesUnordered::new();
    let mut last = String::new();
    loop {
        while in_flight.len() < options.max_in_flight {
            let Some(i) = todo.pop() else { break };
            let m = &events[i];
            let mut publish = jetstream::message::PublishMessage::build()
                .payload(m.payload.clone())
                .message_id(&m.id);
            if let Some(stream) = &options.stream {
                publish = publish.expected_stream(stream);
            }
            if options.cloudevents.is_some() {
                publish = publish.header("Content-Type", "application/cloudevents+json");
            }
            match js.send_publish(m.subject.clone(), publish).await {
                Ok(ack) => {
                    counters.published.fetch_add(1, Ordering::AcqRel);
                    in_flight.push(async move { (i, ack.await) });
                }
                Err(e) => {
                    last = format!("publish failed: {}", describe(&e));
                    record_error(&counters, last.clone());
                    again.push(i);
                }
            }
        }
        match in_flight.next().await {
            Some((_, Ok(ack))) => {
                counters.acked.fetch_add(1, Ordering::AcqRel);
                if ack.duplicate {
                    counters.duplicates.fetch_add(1, Ordering::AcqRel);
                }
            }
            Some((i, Err(e))) => {
                last = format!("no publish acknowledgement: {}", describe(&e));
                record_error(&counters, last.clone());
                again.push(i);
            }
            None => {
                if again.is_empty() {
                    return Ok(());
                }
                let n = again.len() as u64;
                if options
                    .give_up_after
                    .is_some_and(|l| started.elapsed() >= l)
                {
                    return Err((
                        n,
                        SinkError::Other(format!(
                            "{n} event(s) not acknowledged by NATS JetStream in time ({last})"
                        )),
                    ));
                }
                counters.retries.fetch_add(n, Ordering::AcqRel);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(options.backoff_max);
                again.sort_unstable_by(|a, b| b.cmp(a));
                todo.append(&mut again);
            }
        }
    }
}

impl Sink for NatsSink {
    fn write(&self, event: &AuditEvent) -> Result<(), SinkError> {
        match self.deliver(vec![self.encode(event)]) {
            Ok(()) => Ok(()),
            Err((n, e)) => {
                self.lose(n, &e);
                Err(e)
            }
        }
    }

    /// Publishes the whole batch pipelined and returns once every event is
    /// acknowledged by JetStream (or given up on).
    fn write_batch(&self, events: &mut Vec<AuditEvent>) -> Result<(), BatchError> {
        let out: Vec<Outgoing> = events.drain(..).map(|e| self.encode(&e)).collect();
        match self.deliver(out) {
            Ok(()) => Ok(()),
            Err((failed, error)) => {
                self.lose(failed, &error);
                Err(BatchError { failed, error })
            }
        }
    }

    /// Nothing is buffered (a write returns after the acknowledgements);
    /// returns [`SinkError::Lost`] when events were given up on since the
    /// previous flush.
    fn flush(&self) -> Result<(), SinkError> {
        self.losses.take()
    }
}

impl Drop for NatsSink {
    /// Sends what the client still buffers (at most 2 s) and stops the
    /// runtime without blocking, so the sink may be dropped anywhere, on an
    /// async runtime's thread too.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            if tokio::runtime::Handle::try_current().is_err() {
                let client = self.js.client();
                runtime.block_on(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
                });
            }
            runtime.shutdown_background();
        }
    }
}
