//! The rules' state: sliding windows as bounded ring buffers, per-day
//! counters, and per-subject maps with eviction.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use uuid::Uuid;

use super::event::ReviewEvent;
use super::rules::{Rules, RulesError};
use super::tz::{date_string, LocalTime};
use super::{EvidenceRef, Finding, ReviewReport, Rule, RuleSummary};
use crate::model::event::{ActionType, OutcomeStatus};
use crate::time::timestamp::Timestamp;

/// Hashes a `u64` that is already a keyed hash (of a patient or a pair) to
/// itself: no second SipHash per lookup. Safe against crafted collisions
/// because the keys' hash is keyed with a per-run random key.
#[derive(Default)]
struct KeyedHashHasher(u64);

impl Hasher for KeyedHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type HashedMap<V> = HashMap<u64, V, BuildHasherDefault<KeyedHashHasher>>;
type HashedSet = HashSet<u64, BuildHasherDefault<KeyedHashHasher>>;

/// A finding being gathered.
struct Open {
    count: u64,
    first: i64,
    last: i64,
    /// Sequence number of the newest event in it.
    last_seq: u64,
    evidence: Vec<(i64, EvidenceRef)>,
    omitted: u64,
}

impl Open {
    fn new() -> Open {
        Open {
            count: 0,
            first: i64::MAX,
            last: i64::MIN,
            last_seq: 0,
            evidence: Vec::new(),
            omitted: 0,
        }
    }

    fn add(&mut self, ts: i64, seq: u64, at: EvidenceRef, cap: usize) {
        self.count += 1;
        self.first = self.first.min(ts);
        self.last = self.last.max(ts);
        self.last_seq = self.last_seq.max(seq);
        if self.evidence.len() < cap {
            self.evidence.push((ts, at));
        } else {
            self.omitted += 1;
        }
    }
}

/// Where closed findings go (bounded by `max_findings`).
struct Out {
    findings: Vec<Finding>,
    omitted: u64,
    max: usize,
    per_rule: [u64; Rule::ALL.len()],
}

impl Out {
    fn push(&mut self, rule: Rule, subject: &str, detail: String, open: Open) {
        if open.count == 0 {
            return;
        }
        self.per_rule[rule as usize] += 1;
        if self.findings.len() >= self.max {
            self.omitted += 1;
            return;
        }
        let mut evidence = open.evidence;
        evidence.sort_by_key(|(ts, at)| (*ts, at.source, at.line));
        self.findings.push(Finding {
            rule,
            subject: subject.to_owned(),
            detail,
            count: open.count,
            first: Timestamp::from_unix_millis(open.first),
            last: Timestamp::from_unix_millis(open.last),
            evidence: evidence.into_iter().map(|(_, at)| at).collect(),
            evidence_omitted: open.omitted,
        });
    }
}

/// One entry of a window.
#[derive(Clone, Copy)]
struct Entry {
    ts: i64,
    seq: u64,
    at: EvidenceRef,
}

/// "More than N within W" for one subject: the newest N+1 events, sorted by
/// time. The window holds more than N events exactly when the oldest of
/// these is within W of the newest.
struct WindowState {
    buf: VecDeque<Entry>,
    open: Option<Open>,
    last_seen: i64,
}

struct WindowRuleState {
    rule: Rule,
    threshold: u64,
    window_ms: i64,
    detail: String,
    subjects: HashMap<Box<str>, WindowState>,
    evicted: u64,
}

impl WindowRuleState {
    fn new(rule: Rule, r: &super::rules::WindowRule) -> WindowRuleState {
        let mut s = WindowRuleState {
            rule,
            threshold: r.threshold,
            window_ms: r.window.as_millis(),
            detail: String::new(),
            subjects: HashMap::new(),
            evicted: 0,
        };
        s.detail = s.describe();
        s
    }

    fn describe(&self) -> String {
        match self.rule {
            Rule::Denials => format!(
                "more than {} DENIED outcomes within {}",
                self.threshold,
                super::rules::Duration::from_secs((self.window_ms / 1000) as u64)
            ),
            _ => format!(
                "more than {} failed LOGINs from this client IP within {}",
                self.threshold,
                super::rules::Duration::from_secs((self.window_ms / 1000) as u64)
            ),
        }
    }

    fn observe(&mut self, key: &str, e: Entry, cap: usize, max_subjects: usize, out: &mut Out) {
        if !self.subjects.contains_key(key) {
            if self.subjects.len() >= max_subjects {
                self.make_room(e.ts, max_subjects, out);
            }
            self.subjects.insert(
                key.into(),
                WindowState {
                    buf: VecDeque::with_capacity((self.threshold as usize + 1).min(64)),
                    open: None,
                    last_seen: e.ts,
                },
            );
        }
        let Some(s) = self.subjects.get_mut(key) else {
            return;
        };
        s.last_seen = s.last_seen.max(e.ts);
        // Sorted insert (in order: a push at the back).
        let pos = s
            .buf
            .iter()
            .rposition(|x| x.ts <= e.ts)
            .map_or(0, |i| i + 1);
        s.buf.insert(pos, e);
        let n = self.threshold as usize + 1;
        while s.buf.len() > n {
            s.buf.pop_front();
        }
        let (Some(front), Some(back)) = (s.buf.front(), s.buf.back()) else {
            return;
        };
        let over = s.buf.len() == n && back.ts - front.ts < self.window_ms;
        if !over {
            return;
        }
        // Overlapping windows over the threshold are one finding.
        let continues = s.open.as_ref().is_some_and(|o| o.last >= front.ts);
        if !continues {
            if let Some(done) = s.open.take() {
                out.push(self.rule, key, self.detail.clone(), done);
            }
            s.open = Some(Open::new());
        }
        if let Some(o) = s.open.as_mut() {
            let since = if continues { o.last_seq } else { 0 };
            for x in s.buf.iter().filter(|x| x.seq > since) {
                o.add(x.ts, x.seq, x.at, cap);
            }
        }
    }

    /// Closes the windows of subjects idle for a window, then, if still
    /// near the cap, drops the half idle longest (counted).
    fn make_room(&mut self, now: i64, max: usize, out: &mut Out) {
        let horizon = now.saturating_sub(self.window_ms);
        let stale: Vec<Box<str>> = self
            .subjects
            .iter()
            .filter(|(_, s)| s.last_seen < horizon)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.remove(&k, out, false);
        }
        if self.subjects.len() >= max * 3 / 4 {
            let cutoff = median_last_seen(self.subjects.values().map(|s| s.last_seen));
            let old: Vec<Box<str>> = self
                .subjects
                .iter()
                .filter(|(_, s)| s.last_seen <= cutoff)
                .map(|(k, _)| k.clone())
                .collect();
            for k in old {
                self.remove(&k, out, true);
            }
        }
    }

    fn remove(&mut self, key: &str, out: &mut Out, evicted: bool) {
        if let Some(s) = self.subjects.remove(key) {
            if evicted {
                self.evicted += 1;
            }
            if let Some(o) = s.open {
                out.push(self.rule, key, self.detail.clone(), o);
            }
        }
    }

    fn finish(&mut self, out: &mut Out) {
        let detail = self.detail.clone();
        let mut all: Vec<(Box<str>, WindowState)> = self.subjects.drain().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, s) in all {
            if let Some(o) = s.open {
                out.push(self.rule, &k, detail.clone(), o);
            }
        }
    }
}

fn median_last_seen(values: impl Iterator<Item = i64>) -> i64 {
    let mut v: Vec<i64> = values.collect();
    if v.is_empty() {
        return i64::MIN;
    }
    let mid = v.len() / 2;
    *v.select_nth_unstable(mid).1
}

/// Counts per subject and local day; a day's finding closes when the
/// subject moves on two days, or at the end.
struct DailyState {
    days: Vec<(i64, Open)>,
    /// Per-subject detail (cross_org: the organizations).
    detail: String,
    last_day: i64,
}

struct DailyRuleState {
    rule: Rule,
    threshold: u64,
    subjects: HashMap<Box<str>, DailyState>,
    evicted: u64,
}

impl DailyRuleState {
    fn new(rule: Rule, threshold: u64) -> DailyRuleState {
        DailyRuleState {
            rule,
            threshold,
            subjects: HashMap::new(),
            evicted: 0,
        }
    }

    /// Counts one event for `key` on local `day`. `subject` is what the
    /// finding names (the key up to a NUL, for composite keys).
    #[allow(clippy::too_many_arguments)]
    fn observe(
        &mut self,
        key: &str,
        detail: impl FnOnce() -> String,
        day: i64,
        e: Entry,
        cap: usize,
        max_subjects: usize,
        out: &mut Out,
    ) {
        if !self.subjects.contains_key(key) {
            if self.subjects.len() >= max_subjects {
                self.make_room(day, max_subjects, out);
            }
            self.subjects.insert(
                key.into(),
                DailyState {
                    days: Vec::with_capacity(1),
                    detail: detail(),
                    last_day: day,
                },
            );
        }
        let Some(s) = self.subjects.get_mut(key) else {
            return;
        };
        s.last_day = s.last_day.max(day);
        let i = match s.days.iter().position(|(d, _)| *d == day) {
            Some(i) => i,
            None => {
                s.days.push((day, Open::new()));
                s.days.len() - 1
            }
        };
        s.days[i].1.add(e.ts, e.seq, e.at, cap);
        // Keep today and yesterday (late events); close older days.
        let latest = s.last_day;
        let mut k = 0;
        while k < s.days.len() {
            if s.days[k].0 < latest - 1 {
                let (d, o) = s.days.swap_remove(k);
                emit_day(self.rule, self.threshold, key, &s.detail, d, o, out);
            } else {
                k += 1;
            }
        }
    }

    fn make_room(&mut self, today: i64, max: usize, out: &mut Out) {
        let stale: Vec<Box<str>> = self
            .subjects
            .iter()
            .filter(|(_, s)| s.last_day < today - 1)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.remove(&k, out, false);
        }
        if self.subjects.len() >= max * 3 / 4 {
            let cutoff = median_last_seen(self.subjects.values().map(|s| s.last_day));
            let old: Vec<Box<str>> = self
                .subjects
                .iter()
                .filter(|(_, s)| s.last_day <= cutoff)
                .map(|(k, _)| k.clone())
                .collect();
            for k in old {
                self.remove(&k, out, true);
            }
        }
    }

    fn remove(&mut self, key: &str, out: &mut Out, evicted: bool) {
        if let Some(s) = self.subjects.remove(key) {
            if evicted {
                self.evicted += 1;
            }
            for (d, o) in s.days {
                emit_day(self.rule, self.threshold, key, &s.detail, d, o, out);
            }
        }
    }

    fn finish(&mut self, out: &mut Out) {
        let mut all: Vec<(Box<str>, DailyState)> = self.subjects.drain().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, mut s) in all {
            s.days.sort_by_key(|(d, _)| *d);
            for (d, o) in s.days {
                emit_day(self.rule, self.threshold, &k, &s.detail, d, o, out);
            }
        }
    }
}

fn emit_day(rule: Rule, threshold: u64, key: &str, detail: &str, day: i64, o: Open, out: &mut Out) {
    if o.count > threshold {
        let subject = key.split('\0').next().unwrap_or(key);
        out.push(rule, subject, format!("{}: {detail}", date_string(day)), o);
    }
}

/// Distinct patients per actor within a window: each patient's newest
/// access, in a map and in a time-ordered queue (stale queue entries are
/// skipped, and the queue is rebuilt when they outnumber the live ones).
struct PatientsState {
    last: HashedMap<(i64, u64, EvidenceRef)>,
    queue: VecDeque<(i64, u64)>,
    open: Option<Open>,
    open_set: HashedSet,
    was_over: bool,
    last_seen: i64,
}

struct PatientsRuleState {
    detail: String,
    threshold: u64,
    window_ms: i64,
    max_tracked: usize,
    hasher: RandomState,
    subjects: HashMap<Box<str>, PatientsState>,
    evicted: u64,
    patients_dropped: u64,
}

impl PatientsRuleState {
    fn new(r: &super::rules::DistinctPatientsRule) -> PatientsRuleState {
        PatientsRuleState {
            detail: format!(
                "more than {} distinct patients within {}",
                r.threshold, r.window
            ),
            threshold: r.threshold,
            window_ms: r.window.as_millis(),
            max_tracked: usize::try_from(r.max_tracked).unwrap_or(usize::MAX),
            hasher: RandomState::new(),
            subjects: HashMap::new(),
            evicted: 0,
            patients_dropped: 0,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn observe(
        &mut self,
        actor: &str,
        patient: &str,
        e: Entry,
        cap: usize,
        max_subjects: usize,
        out: &mut Out,
    ) {
        let p = self.hasher.hash_one(patient);
        if !self.subjects.contains_key(actor) {
            if self.subjects.len() >= max_subjects {
                self.make_room(e.ts, max_subjects, out);
            }
            self.subjects.insert(
                actor.into(),
                PatientsState {
                    last: HashedMap::default(),
                    queue: VecDeque::new(),
                    open: None,
                    open_set: HashedSet::default(),
                    was_over: false,
                    last_seen: e.ts,
                },
            );
        }
        let (window_ms, threshold, max_tracked) =
            (self.window_ms, self.threshold as usize, self.max_tracked);
        let Some(s) = self.subjects.get_mut(actor) else {
            return;
        };
        s.last_seen = s.last_seen.max(e.ts);
        let now = s.last_seen;
        match s.last.get_mut(&p) {
            Some(v) if v.0 >= e.ts => {}
            Some(v) => {
                *v = (e.ts, e.seq, e.at);
                s.queue.push_back((e.ts, p));
            }
            None => {
                s.last.insert(p, (e.ts, e.seq, e.at));
                s.queue.push_back((e.ts, p));
            }
        }
        // Expire patients last touched a window ago or more, and the
        // oldest beyond the cap (counted).
        while let Some(&(ts, q)) = s.queue.front() {
            let live = s.last.get(&q).is_some_and(|v| v.0 == ts);
            if !live {
                s.queue.pop_front();
                continue;
            }
            if now - ts >= window_ms || s.last.len() > max_tracked {
                if now - ts < window_ms {
                    self.patients_dropped += 1;
                }
                s.last.remove(&q);
                s.queue.pop_front();
                continue;
            }
            break;
        }
        if s.queue.len() > 2 * s.last.len() + 64 {
            let mut v: Vec<(i64, u64)> = s.last.iter().map(|(q, v)| (v.0, *q)).collect();
            v.sort_unstable();
            s.queue = v.into();
        }
        let over = s.last.len() > threshold;
        if over {
            let window_start = now - window_ms;
            let continues = s.open.as_ref().is_some_and(|o| o.last > window_start);
            if !continues {
                if let Some(done) = s.open.take() {
                    out.push(Rule::DistinctPatients, actor, self.detail.clone(), done);
                }
                s.open = Some(Open::new());
                s.open_set.clear();
            }
            let Some(o) = s.open.as_mut() else { return };
            if !continues || !s.was_over {
                // Every patient of the window joins the finding.
                let mut all: Vec<(u64, (i64, u64, EvidenceRef))> =
                    s.last.iter().map(|(q, v)| (*q, *v)).collect();
                all.sort_unstable_by_key(|(_, v)| (v.0, v.1));
                for (q, (ts, seq, at)) in all {
                    if s.open_set.len() < max_tracked && s.open_set.insert(q) {
                        o.add(ts, seq, at, cap);
                    }
                }
            } else if s.open_set.len() < max_tracked && s.open_set.insert(p) {
                o.add(e.ts, e.seq, e.at, cap);
            } else {
                o.last = o.last.max(e.ts);
                o.last_seq = o.last_seq.max(e.seq);
            }
        }
        s.was_over = over;
    }

    fn make_room(&mut self, now: i64, max: usize, out: &mut Out) {
        let horizon = now.saturating_sub(self.window_ms);
        let stale: Vec<Box<str>> = self
            .subjects
            .iter()
            .filter(|(_, s)| s.last_seen < horizon)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            self.remove(&k, out, false);
        }
        if self.subjects.len() >= max * 3 / 4 {
            let cutoff = median_last_seen(self.subjects.values().map(|s| s.last_seen));
            let old: Vec<Box<str>> = self
                .subjects
                .iter()
                .filter(|(_, s)| s.last_seen <= cutoff)
                .map(|(k, _)| k.clone())
                .collect();
            for k in old {
                self.remove(&k, out, true);
            }
        }
    }

    fn remove(&mut self, key: &str, out: &mut Out, evicted: bool) {
        if let Some(s) = self.subjects.remove(key) {
            if evicted {
                self.evicted += 1;
            }
            if let Some(o) = s.open {
                out.push(Rule::DistinctPatients, key, self.detail.clone(), o);
            }
        }
    }

    fn finish(&mut self, out: &mut Out) {
        let detail = self.detail.clone();
        let mut all: Vec<(Box<str>, PatientsState)> = self.subjects.drain().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, s) in all {
            if let Some(o) = s.open {
                out.push(Rule::DistinctPatients, &k, detail.clone(), o);
            }
        }
    }
}

/// First-time (actor, patient) pairs after a baseline.
struct NewPatientState {
    baseline_ms: i64,
    start: Option<i64>,
    max_pairs: usize,
    hasher: RandomState,
    seen: HashedSet,
    stopped_at: Option<EvidenceRef>,
    daily: DailyRuleState,
}

/// Reviews a stream of events against [`Rules`]: feed every event with
/// [`Reviewer::observe`] (in time order for exact windows; see the module
/// docs), then take the findings with [`Reviewer::finish`].
///
/// ```
/// use phi_audit_runtime::review::{EvidenceRef, ReviewEvent, Reviewer, Rules};
/// let rules = Rules::from_toml_str("[denials]\nthreshold = 1").unwrap();
/// let mut r = Reviewer::new(rules).unwrap();
/// let src = r.add_source("inline");
/// for (i, t) in ["10:00", "10:05"].iter().enumerate() {
///     let line = format!(r#"{{"timestamp":"2026-03-02T{t}:00Z","actor":{{"subject_id":"dr-a"}},"action":{{"type":"READ"}},"resource":{{"type":"Patient"}},"outcome":{{"status":"DENIED"}}}}"#);
///     let e = ReviewEvent::parse(&line).unwrap();
///     r.observe(&e, EvidenceRef::line(src, i as u64 + 1, e.event_id));
/// }
/// let report = r.finish();
/// assert_eq!(report.findings.len(), 1);
/// assert_eq!(report.findings[0].subject, "dr-a");
/// assert_eq!(report.findings[0].count, 2);
/// ```
pub struct Reviewer {
    rules: Rules,
    local: LocalTime,
    seq: u64,
    events: u64,
    sources: Vec<String>,
    denials: WindowRuleState,
    logins: WindowRuleState,
    exports: DailyRuleState,
    off_hours: DailyRuleState,
    cross_org: DailyRuleState,
    patients: PatientsRuleState,
    new_patient: NewPatientState,
    out: Out,
}

impl std::fmt::Debug for Reviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reviewer")
            .field("events", &self.events)
            .field("findings", &self.out.findings.len())
            .finish_non_exhaustive()
    }
}

/// Findings kept in memory; more are counted.
pub const MAX_FINDINGS: usize = 100_000;

impl Reviewer {
    /// A reviewer for `rules` (checked: see [`Rules::check`]).
    pub fn new(rules: Rules) -> Result<Reviewer, RulesError> {
        rules.check()?;
        let local = LocalTime::new(&rules.time_zone)?;
        let ms = |d: super::rules::Duration| d.as_millis();
        Ok(Reviewer {
            local,
            seq: 0,
            events: 0,
            sources: Vec::new(),
            denials: WindowRuleState::new(Rule::Denials, &rules.denials),
            logins: WindowRuleState::new(Rule::FailedLogins, &rules.failed_logins),
            exports: DailyRuleState::new(Rule::Exports, rules.exports.threshold),
            off_hours: DailyRuleState::new(Rule::OffHours, rules.off_hours.threshold),
            cross_org: DailyRuleState::new(Rule::CrossOrg, rules.cross_org.threshold),
            patients: PatientsRuleState::new(&rules.distinct_patients),
            new_patient: NewPatientState {
                baseline_ms: ms(rules.new_patient.baseline),
                start: None,
                max_pairs: usize::try_from(rules.new_patient.max_pairs).unwrap_or(usize::MAX),
                hasher: RandomState::new(),
                seen: HashedSet::default(),
                stopped_at: None,
                daily: DailyRuleState::new(Rule::NewPatient, rules.new_patient.threshold),
            },
            out: Out {
                findings: Vec::new(),
                omitted: 0,
                max: MAX_FINDINGS,
                per_rule: [0; Rule::ALL.len()],
            },
            rules,
        })
    }

    /// The rules in force.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Registers a source (a file name, `-`, `postgres`) that evidence
    /// refers to; returns its index for [`EvidenceRef`].
    pub fn add_source(&mut self, name: &str) -> u32 {
        self.sources.push(name.to_owned());
        u32::try_from(self.sources.len() - 1).unwrap_or(u32::MAX)
    }

    /// Events observed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Feeds one event; `at` is how findings will refer to it.
    pub fn observe(&mut self, e: &ReviewEvent<'_>, at: EvidenceRef) {
        self.seq += 1;
        self.events += 1;
        let entry = Entry {
            ts: e.timestamp.unix_millis(),
            seq: self.seq,
            at,
        };
        let cap = self.rules.max_evidence;
        let max_subjects = self.rules.max_subjects;
        let out = &mut self.out;
        if self.rules.denials.enabled && e.outcome == OutcomeStatus::Denied {
            self.denials
                .observe(&e.actor, entry, cap, max_subjects, out);
        }
        if self.rules.failed_logins.enabled
            && e.action == ActionType::Login
            && e.outcome != OutcomeStatus::Success
        {
            if let Some(ip) = &e.client_ip {
                self.logins.observe(ip, entry, cap, max_subjects, out);
            }
        }
        let need_local = (self.rules.exports.enabled
            && e.action == ActionType::Export
            && e.outcome == OutcomeStatus::Success)
            || (self.rules.off_hours.enabled && e.phi)
            || (self.rules.cross_org.enabled && e.cross_org())
            || (self.rules.new_patient.enabled && e.patient.is_some());
        if need_local {
            let local = self.local.local(e.timestamp);
            if self.rules.exports.enabled
                && e.action == ActionType::Export
                && e.outcome == OutcomeStatus::Success
            {
                let t = self.rules.exports.threshold;
                self.exports.observe(
                    &e.actor,
                    || format!("more than {t} successful EXPORTs in a day"),
                    local.day,
                    entry,
                    cap,
                    max_subjects,
                    out,
                );
            }
            if self.rules.off_hours.enabled
                && e.phi
                && !self.rules.off_hours.in_hours(local.weekday, local.minute)
            {
                let r = &self.rules.off_hours;
                let tz = &self.rules.time_zone;
                self.off_hours.observe(
                    &e.actor,
                    || {
                        let days: Vec<&str> =
                            r.days.iter().map(|d| weekday_name(d.index())).collect();
                        format!(
                            "PHI access outside office hours ({}-{} {}, {tz})",
                            r.start,
                            r.end,
                            days.join(",")
                        )
                    },
                    local.day,
                    entry,
                    cap,
                    max_subjects,
                    out,
                );
            }
            if self.rules.cross_org.enabled && e.cross_org() {
                let (org, owner) = (
                    e.actor_org.as_deref().unwrap_or_default(),
                    e.owner_org.as_deref().unwrap_or_default(),
                );
                let key = format!("{}\0{owner}", e.actor);
                self.cross_org.observe(
                    &key,
                    || format!("actor org {org} accessed data owned by org {owner}"),
                    local.day,
                    entry,
                    cap,
                    max_subjects,
                    out,
                );
            }
            if self.rules.new_patient.enabled {
                if let Some(p) = &e.patient {
                    let np = &mut self.new_patient;
                    let start = *np.start.get_or_insert(entry.ts);
                    let pair = np.hasher.hash_one((&*e.actor, &**p));
                    if np.stopped_at.is_none() {
                        let new = if np.seen.len() >= np.max_pairs {
                            if np.seen.contains(&pair) {
                                false
                            } else {
                                np.stopped_at = Some(at);
                                false
                            }
                        } else {
                            np.seen.insert(pair)
                        };
                        if new && entry.ts >= start.saturating_add(np.baseline_ms) {
                            let b = self.rules.new_patient.baseline;
                            let t = self.rules.new_patient.threshold;
                            np.daily.observe(
                                &e.actor,
                                || {
                                    format!(
                                        "more than {t} patients touched for the first time (after a {b} baseline)"
                                    )
                                },
                                local.day,
                                entry,
                                cap,
                                max_subjects,
                                out,
                            );
                        }
                    }
                }
            }
        }
        if self.rules.distinct_patients.enabled {
            if let Some(p) = &e.patient {
                self.patients
                    .observe(&e.actor, p, entry, cap, max_subjects, out);
            }
        }
    }

    /// Closes every open window and day and returns the findings, sorted by
    /// first event time, rule and subject.
    pub fn finish(mut self) -> ReviewReport {
        let out = &mut self.out;
        self.denials.finish(out);
        self.logins.finish(out);
        self.exports.finish(out);
        self.off_hours.finish(out);
        self.cross_org.finish(out);
        self.patients.finish(out);
        self.new_patient.daily.finish(out);
        let mut findings = std::mem::take(&mut out.findings);
        findings.sort_by(|a, b| {
            (a.first, a.rule, &a.subject, a.last).cmp(&(b.first, b.rule, &b.subject, b.last))
        });
        let r = &self.rules;
        let enabled = |rule: Rule| match rule {
            Rule::Denials => r.denials.enabled,
            Rule::FailedLogins => r.failed_logins.enabled,
            Rule::Exports => r.exports.enabled,
            Rule::OffHours => r.off_hours.enabled,
            Rule::CrossOrg => r.cross_org.enabled,
            Rule::DistinctPatients => r.distinct_patients.enabled,
            Rule::NewPatient => r.new_patient.enabled,
        };
        let evicted = |rule: Rule| match rule {
            Rule::Denials => self.denials.evicted,
            Rule::FailedLogins => self.logins.evicted,
            Rule::Exports => self.exports.evicted,
            Rule::OffHours => self.off_hours.evicted,
            Rule::CrossOrg => self.cross_org.evicted,
            Rule::DistinctPatients => self.patients.evicted,
            Rule::NewPatient => self.new_patient.daily.evicted,
        };
        let note = |rule: Rule| -> Option<String> {
            match rule {
                Rule::DistinctPatients if self.patients.patients_dropped > 0 => Some(format!(
                    "{} patient(s) dropped from full per-actor windows (max_tracked)",
                    self.patients.patients_dropped
                )),
                Rule::NewPatient => self.new_patient.stopped_at.map(|at| {
                    format!(
                        "stopped at {}: max_pairs (actor, patient) pairs remembered",
                        at.describe(&self.sources)
                    )
                }),
                _ => None,
            }
        };
        let rules = Rule::ALL
            .iter()
            .map(|&rule| RuleSummary {
                rule,
                enabled: enabled(rule),
                findings: self.out.per_rule[rule as usize],
                subjects_evicted: evicted(rule),
                note: note(rule),
            })
            .collect();
        ReviewReport {
            sources: self.sources,
            events: self.events,
            findings,
            findings_omitted: self.out.omitted,
            rules,
            time_zone: self.rules.time_zone.clone(),
        }
    }
}

fn weekday_name(i: u8) -> &'static str {
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][usize::from(i % 7)]
}

impl EvidenceRef {
    /// An event at 1-based `line` of source `source`.
    pub fn line(source: u32, line: u64, event_id: Option<Uuid>) -> EvidenceRef {
        EvidenceRef {
            source,
            line: Some(line),
            event_id,
        }
    }

    /// An event known by its id only (a database row).
    pub fn id(source: u32, event_id: Uuid) -> EvidenceRef {
        EvidenceRef {
            source,
            line: None,
            event_id: Some(event_id),
        }
    }

    /// `file:line` or `source event <id>`, with the source name as given.
    pub fn describe(&self, sources: &[String]) -> String {
        let name = sources
            .get(self.source as usize)
            .map(String::as_str)
            .unwrap_or("?");
        match (self.line, self.event_id) {
            (Some(l), _) => format!("{name}:{l}"),
            (None, Some(id)) => format!("{name} event {id}"),
            (None, None) => name.to_owned(),
        }
    }
}
