//! Dispatch: where an emitted event goes, and what the config does to it on
//! the way.
//!
//! An event goes to the thread's scoped dispatcher if [`with_dispatch`] (or
//! [`Dispatch::scope`]) installed one, else to the global one installed by
//! [`init`], else nowhere: it is counted by [`crate::stats::undispatched`] and
//! nothing panics.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context as TaskContext, Poll};

use crate::config::{Config, SinkFailurePolicy, ValidationPolicy, INTERNAL_TARGET};
use crate::model::clamp::Fixes;
use crate::model::event::{AuditEvent, Outcome, OutcomeStatus};
use crate::model::metadata::{MetaValue, Metadata};
use crate::record::RecordRef;
use crate::settings::SettingsError;
use crate::sink::in_sink::in_sink;
use crate::sink::{Sink, SinkError};
use crate::stats::{Stats, StatsSnapshot};
use crate::util::cache::CacheLine;
use crate::util::text::Text;

/// A configured pipeline: config + sink + counters. Cheap to clone.
#[derive(Clone)]
pub struct Dispatch(Arc<Inner>);

struct Inner {
    config: Config,
    sink: Box<dyn Sink>,
    /// The sink's `__takes_records`, asked once.
    takes_records: bool,
    /// Written on every call: on lines of their own, away from the config
    /// and sink the worker of a non-blocking sink reads per event.
    stats: CacheLine<Stats>,
    /// Paces [`SinkFailurePolicy::Report`] (touched on failures only).
    report: crate::sink::loss::ReportThrottle,
    /// `failed` at the last flush, and the first sink error since.
    flushed_failed: std::sync::atomic::AtomicU64,
    cause: std::sync::Mutex<Option<String>>,
}

impl fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatch")
            .field("config", &self.0.config)
            .field("stats", &self.0.stats.snapshot())
            .finish_non_exhaustive()
    }
}

// Counters are atomics and sinks must stay usable after a panic elsewhere
// (the non-blocking and fan-out sinks catch them), so observing a dispatcher
// after an unwind is sound.
impl std::panic::RefUnwindSafe for Dispatch {}
impl std::panic::UnwindSafe for Dispatch {}

static GLOBAL: OnceLock<Dispatch> = OnceLock::new();

thread_local! {
    static LOCAL: RefCell<Option<Dispatch>> = const { RefCell::new(None) };
}

/// Why the global dispatcher was not installed: one was already (by
/// [`init`], [`init_from_env`](crate::init_from_env) or
/// [`Settings::init`](crate::Settings::init)), or the settings are wrong.
/// Its `Debug` output is its message (see [`SettingsError`]).
pub struct InitError(InitFailure);

enum InitFailure {
    AlreadyInstalled,
    Settings(SettingsError),
}

impl InitError {
    pub(crate) fn already_installed() -> InitError {
        InitError(InitFailure::AlreadyInstalled)
    }

    /// True when a global dispatcher was already installed.
    pub fn is_already_installed(&self) -> bool {
        matches!(self.0, InitFailure::AlreadyInstalled)
    }

    /// The settings' mistakes, when those are why.
    pub fn settings_error(&self) -> Option<&SettingsError> {
        match &self.0 {
            InitFailure::Settings(e) => Some(e),
            InitFailure::AlreadyInstalled => None,
        }
    }
}

impl From<SettingsError> for InitError {
    fn from(e: SettingsError) -> InitError {
        InitError(InitFailure::Settings(e))
    }
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            InitFailure::AlreadyInstalled => f.write_str(
                "the phi-audit global dispatcher is already installed: it is installed once per \
                 process, by phi_audit::init or init_from_env (use Dispatch::new with \
                 with_dispatch for scoped dispatchers)",
            ),
            InitFailure::Settings(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl fmt::Debug for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for InitError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            InitFailure::Settings(e) => Some(e),
            InitFailure::AlreadyInstalled => None,
        }
    }
}

/// Installs the global dispatcher. Call once at start-up and keep the guard
/// alive until the process ends: its drop flushes the sink.
///
/// Events emitted after the guard is dropped still reach the sink, but are
/// only flushed by a later [`flush`]. A process that calls
/// `std::process::exit` or aborts on panic skips destructors: call
/// [`Guard::flush`] (or [`flush`]) first, e.g. from a panic hook.
///
/// ```no_run
/// use phi_audit::{init, Config, StdoutSink};
/// let _guard = init(Config::new("chart-service").build()?, StdoutSink::new())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn init(config: Config, sink: impl Sink) -> Result<Guard, InitError> {
    install(Dispatch::new(config, sink))
}

/// Installs `dispatch` as the global dispatcher.
pub(crate) fn install(dispatch: Dispatch) -> Result<Guard, InitError> {
    GLOBAL
        .set(dispatch.clone())
        .map_err(|_| InitError::already_installed())?;
    Ok(Guard { dispatch })
}

/// Returned by [`init`]; flushes the sink when dropped.
#[must_use = "dropping the guard flushes the sink now; keep it alive (`let _guard = ...`), not `let _ = ...`"]
#[derive(Debug)]
pub struct Guard {
    dispatch: Dispatch,
}

impl Guard {
    /// Flushes the sink now.
    pub fn flush(&self) -> Result<(), SinkError> {
        self.dispatch.flush()
    }

    /// The global dispatcher.
    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = self.dispatch.flush() {
            self.dispatch.report_sink_error(&e);
        }
    }
}

/// Flushes the current dispatcher's sink (a no-op without one).
pub fn flush() -> Result<(), SinkError> {
    match current() {
        Some(d) => d.flush(),
        None => Ok(()),
    }
}

pub(crate) fn local() -> Option<Dispatch> {
    LOCAL.try_with(|l| l.borrow().clone()).ok().flatten()
}

pub(crate) fn global() -> Option<&'static Dispatch> {
    GLOBAL.get()
}

/// The dispatcher events emitted here would go to.
pub fn current() -> Option<Dispatch> {
    local().or_else(|| GLOBAL.get().cloned())
}

/// Runs `f` with `dispatch` installed for this thread; the previous one is
/// restored afterwards, also when `f` panics. Scopes nest.
///
/// ```
/// use phi_audit::{with_dispatch, ActionType, Config, Dispatch, EventBuilder, MemorySink};
/// let sink = MemorySink::new();
/// let dispatch = Dispatch::new(Config::new("svc").build().unwrap(), sink.clone());
/// with_dispatch(&dispatch, || EventBuilder::new(ActionType::Read, "Patient").emit());
/// assert_eq!(sink.len(), 1);
/// ```
pub fn with_dispatch<R>(dispatch: &Dispatch, f: impl FnOnce() -> R) -> R {
    let _restore = LocalSwap::install(Some(dispatch.clone()));
    f()
}

struct LocalSwap(Option<Dispatch>);

impl LocalSwap {
    fn install(d: Option<Dispatch>) -> LocalSwap {
        LocalSwap(LOCAL.with(|l| l.replace(d)))
    }
}

impl Drop for LocalSwap {
    fn drop(&mut self) {
        let prev = self.0.take();
        let _ = LOCAL.try_with(|l| l.replace(prev));
    }
}

impl Dispatch {
    /// A dispatcher writing to `sink`.
    pub fn new(config: Config, sink: impl Sink) -> Dispatch {
        Dispatch::from_boxed(config, Box::new(sink))
    }

    /// A dispatcher writing to a sink already boxed (not boxed again).
    pub(crate) fn from_boxed(config: Config, sink: Box<dyn Sink>) -> Dispatch {
        Dispatch(Arc::new(Inner {
            config,
            takes_records: sink.__takes_records(),
            sink,
            stats: CacheLine::default(),
            report: Default::default(),
            flushed_failed: Default::default(),
            cause: Default::default(),
        }))
    }

    /// Its configuration.
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// Its counters, including what its sink lost after accepting it
    /// ([`Sink::lost_events`], counted in `failed` and in `sink_lost`).
    pub fn stats(&self) -> StatsSnapshot {
        let mut s = self.0.stats.snapshot();
        s.sink_lost = self.0.sink.lost_events();
        s.failed += s.sink_lost;
        s
    }

    pub(crate) fn count_unkeyed_pseudonym(&self) {
        self.0.stats.add_unkeyed_pseudonym();
    }

    /// Flushes the sink (for a non-blocking sink: waits until everything
    /// queued is written). Returns [`SinkError::Lost`] with the count when
    /// events handed to the sink since the previous flush were not written:
    /// the larger of what the sink reports and what this dispatcher counted
    /// as `failed` since then (so a sink that only fails its writes is
    /// covered too).
    pub fn flush(&self) -> Result<(), SinkError> {
        use std::sync::atomic::Ordering;
        let r = in_sink(|| self.0.sink.flush());
        let failed = self.stats().failed;
        let since = failed.saturating_sub(self.0.flushed_failed.swap(failed, Ordering::AcqRel));
        let cause = self
            .0
            .cause
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match r {
            Err(SinkError::Lost { events, cause: c }) => Err(SinkError::Lost {
                events: events.max(since),
                cause: c,
            }),
            _ if since > 0 => Err(SinkError::Lost {
                events: since,
                cause: cause.unwrap_or_else(|| match &r {
                    Err(e) => e.to_string(),
                    Ok(()) => "the sink lost events it had accepted".to_owned(),
                }),
            }),
            r => r,
        }
    }

    /// Wraps `future` so this dispatcher is the thread's dispatcher whenever
    /// the future is polled (scoped dispatch for async tests and tasks).
    pub fn scope<F: Future>(&self, future: F) -> DispatchScoped<F> {
        DispatchScoped {
            dispatch: self.clone(),
            future,
        }
    }

    /// Applies the config to `event` and hands it to the sink. Never panics;
    /// every outcome is counted in [`Dispatch::stats`].
    ///
    /// Every string of the event is first fitted to the schema: empty
    /// optional fields are left out, long ones cut on a character boundary,
    /// control and bidirectional-formatting characters replaced, values a
    /// format rejects left out; each correction is counted
    /// ([`StatsSnapshot::empty_fields`], [`StatsSnapshot::truncated`],
    /// [`StatsSnapshot::chars_replaced`], [`StatsSnapshot::invalid_fields`]).
    pub fn emit(&self, mut event: AuditEvent) {
        let inner = &*self.0;
        let cfg = inner.config.inner();
        if event.service.name.is_empty() {
            event.service = cfg.service.clone();
        }
        let mut fixes = Fixes::default();
        crate::model::clamp::event(&mut event, &mut fixes);
        self.emit_fitted(event, fixes);
    }

    /// [`Dispatch::emit`] for an event whose strings were fitted where they
    /// were built (a finished call's), with the corrections made so far.
    /// Inlined into both callers: the event (~600 bytes) is then built in
    /// place, not copied into a call's arguments (measured: a copy per event
    /// more when it was not).
    #[inline(always)]
    fn emit_fitted(&self, mut event: AuditEvent, mut fixes: Fixes) {
        let inner = &*self.0;
        let cfg = inner.config.inner();
        if crate::schema::retarget(&mut event, cfg.target, cfg.downgrade).is_err() {
            inner.stats.add_fixes(fixes);
            inner.stats.add_dropped();
            return;
        }
        self.limit_parts(&mut event.metadata, &mut event.outcome, &mut fixes);
        if !fixes.is_none() {
            inner.stats.add_fixes(fixes);
        }
        if let Some(policy) = cfg.validate {
            if crate::schema::validate(&event).is_err() {
                inner.stats.add_validation_failure();
                if policy == ValidationPolicy::Drop {
                    inner.stats.add_dropped();
                    return;
                }
            }
        }
        match in_sink(|| inner.sink.write_owned(event)) {
            Ok(()) => inner.stats.add_emitted(),
            Err(e) => {
                inner.stats.add_failed();
                self.report_sink_error(&e);
            }
        }
    }

    /// Emits a finished call. When its JSON is the event as it is (see
    /// [`CallRecord::writes_as_is`]) and the sink takes records, the record
    /// goes to the sink after the limits; otherwise it becomes an event and
    /// takes [`Dispatch::emit`]'s way. Never panics; counted like `emit`.
    ///
    /// A call's strings were fitted to the schema where they were stored
    /// (the context's when it was made, the ids and actor when the call set
    /// them), and their corrections counted then.
    pub(crate) fn emit_record(&self, mut record: RecordRef<'_>) {
        let inner = &*self.0;
        if !inner.takes_records || !record.writes_as_is() {
            self.emit_fitted(record.into_record().into_event(), Fixes::default());
            return;
        }
        let r = &mut *record;
        let mut fixes = Fixes::default();
        self.limit_parts(&mut r.metadata, &mut r.outcome, &mut fixes);
        if !fixes.is_none() {
            inner.stats.add_fixes(fixes);
        }
        match in_sink(|| inner.sink.__write_record(record)) {
            Ok(()) => inner.stats.add_emitted(),
            Err(e) => {
                inner.stats.add_failed();
                self.report_sink_error(&e);
            }
        }
    }

    /// Counts corrections made outside the dispatcher (a call's ids, its
    /// context's fields).
    pub(crate) fn count_fixes(&self, fixes: Fixes) {
        self.0.stats.add_fixes(fixes);
    }

    /// Reports a sink failure (of `e.events()` events) under
    /// [`SinkFailurePolicy::Report`]: counts and the error's kind and
    /// description (never event content), at most once a second, summing
    /// the failures in between.
    fn report_sink_error(&self, e: &SinkError) {
        {
            let mut c = self.0.cause.lock().unwrap_or_else(|p| p.into_inner());
            if c.is_none() {
                *c = Some(e.to_string());
            }
        }
        if self.0.config.inner().sink_failure != SinkFailurePolicy::Report {
            return;
        }
        if let Some(failed) = self.0.report.add(e.events()) {
            tracing::warn!(
                target: INTERNAL_TARGET,
                failed,
                failed_total = self.stats().failed,
                error_kind = e.kind(),
                error = %e,
                "audit sink failed to write events"
            );
        }
    }

    /// The metadata allowlist and limits (keys, string lengths, at most
    /// [`METADATA`](crate::model::limits::METADATA) entries,
    /// non-finite floats), and the error type and message: sanitized when
    /// the config says so, fitted to the schema.
    fn limit_parts(&self, metadata: &mut Metadata, outcome: &mut Outcome, fixes: &mut Fixes) {
        let cfg = self.0.config.inner();
        let stats = &self.0.stats;
        if !metadata.is_empty() {
            let max = cfg.max_metadata_string;
            let mut removed = crate::model::clamp::metadata_keys(metadata, fixes);
            let mut kept = 0usize;
            removed += metadata.retain(|k, v| {
                if let Some(list) = &cfg.allowlist {
                    if !list.contains(k.as_str()) {
                        return false;
                    }
                }
                if v.is_non_finite() || kept >= crate::model::limits::METADATA {
                    return false;
                }
                if let MetaValue::Str(s) = v {
                    crate::model::clamp::any(s, max, fixes);
                }
                kept += 1;
                true
            }) as u64;
            stats.add_metadata_dropped(removed);
        }
        let o = outcome;
        if o.status != OutcomeStatus::Success {
            if let Some(msg) = &mut o.error_message {
                if cfg.sanitize_errors && !crate::sanitize::is_clean(msg) {
                    // Uncapped here: the cut below is counted.
                    *msg = Text::from(crate::sanitize::sanitize_message(msg, usize::MAX));
                }
            }
            crate::model::clamp::outcome(o, cfg.max_error_message, fixes);
        }
    }
}

pin_project_lite::pin_project! {
    /// A future running with a scoped dispatcher; see [`Dispatch::scope`].
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct DispatchScoped<F> {
        dispatch: Dispatch,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for DispatchScoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _restore = LocalSwap::install(Some(this.dispatch.clone()));
        this.future.poll(cx)
    }
}

/// Emits `event` through the current dispatcher.
pub fn emit(event: AuditEvent) {
    match current() {
        Some(d) => d.emit(event),
        None => crate::stats::add_undispatched(),
    }
}
