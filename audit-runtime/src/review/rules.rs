//! The review's rules and their thresholds, read from TOML
//! ([`Rules::from_toml_str`]) over built-in defaults ([`DEFAULT_RULES_TOML`]).

use std::fmt;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// The built-in rules, as a TOML file: what `phi-audit review
/// --print-default-rules` prints and what [`Rules::default`] holds. A rules
/// file overrides any subset of it; keys it leaves out keep these values.
pub const DEFAULT_RULES_TOML: &str = r#"# phi-audit review: the built-in rules. A --rules file overrides any subset
# of these keys; the rest keep these values. Durations: a number and a unit
# (s, m, h, d), or several ("1h30m"). Thresholds: a finding when the count is
# MORE than the threshold.

# IANA time zone for office hours and for calendar days (exports,
# off_hours, cross_org, new_patient).
time_zone = "UTC"
# Evidence (event references) listed per finding; the rest are counted.
max_evidence = 20
# Subjects (actors, IPs) tracked at once per rule. Past it, subjects idle
# longest are dropped (closing their windows) and counted in the summary.
max_subjects = 100000

# An actor with more than `threshold` DENIED outcomes within `window`.
[denials]
enabled = true
threshold = 10
window = "1h"

# More than `threshold` failed LOGINs (FAILURE or DENIED) from one client IP
# (http.client_ip) within `window`.
[failed_logins]
enabled = true
threshold = 5
window = "15m"

# More than `threshold` successful EXPORTs by one actor in one calendar day.
[exports]
enabled = true
threshold = 20

# PHI access (action.phi_touched or data_classification PHI) outside office
# hours: before `start` or from `end` on, or on a day not in `days`. One
# finding per actor and day with more than `threshold` such events.
[off_hours]
enabled = true
start = "07:00"
end = "19:00"
days = ["mon", "tue", "wed", "thu", "fri"]
threshold = 0

# Cross-organization access: actor.org_id and actor.owner_org_id both set and
# different. One finding per actor, owner organization and day with more
# than `threshold` such events.
[cross_org]
enabled = true
threshold = 0

# One actor touching more than `threshold` distinct patients
# (resource.patient_id) within `window`. At most `max_tracked` patients are
# remembered per actor (the oldest go first).
[distinct_patients]
enabled = true
threshold = 50
window = "1h"
max_tracked = 10000

# Opt-in: an actor touching a patient they had not touched before in the
# input, after a `baseline` period (from the first event) in which access is
# only learned. One finding per actor and day with more than `threshold`
# first-time patients. (actor, patient) pairs are remembered as 64-bit keyed
# hashes, at most `max_pairs` of them (~40 bytes each); past that the rule
# stops and the summary says where.
[new_patient]
enabled = false
baseline = "7d"
threshold = 0
max_pairs = 5000000
"#;

/// A length of time in whole seconds, written in TOML as `"90s"`, `"15m"`,
/// `"1h"`, `"7d"` or a combination (`"1h30m"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration {
    secs: u64,
}

impl Duration {
    /// `secs` seconds.
    pub const fn from_secs(secs: u64) -> Duration {
        Duration { secs }
    }

    /// In seconds.
    pub const fn as_secs(self) -> u64 {
        self.secs
    }

    /// In milliseconds (saturating).
    pub fn as_millis(self) -> i64 {
        i64::try_from(self.secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// Parses `"1h"`, `"15m"`, `"1h30m"`, `"7d"`, `"90s"`. Not zero.
    pub fn parse(s: &str) -> Result<Duration, String> {
        let bad = || {
            format!(
                "invalid duration {:?}: expected e.g. \"15m\", \"1h\", \"1h30m\", \"7d\"",
                crate::report::escape_text(s)
            )
        };
        let mut total: u64 = 0;
        let mut num: Option<u64> = None;
        for c in s.trim().chars() {
            if let Some(d) = c.to_digit(10) {
                num = Some(
                    num.unwrap_or(0)
                        .checked_mul(10)
                        .and_then(|n| n.checked_add(u64::from(d)))
                        .ok_or_else(bad)?,
                );
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                ' ' if num.is_none() => continue,
                _ => return Err(bad()),
            };
            let n = num.take().ok_or_else(bad)?;
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(bad)?;
        }
        if num.is_some() || total == 0 || total > 3650 * 86_400 {
            return Err(bad());
        }
        Ok(Duration { secs: total })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.secs;
        if s == 0 {
            return f.write_str("0s");
        }
        for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if s >= n {
                write!(f, "{}{unit}", s / n)?;
                s %= n;
            }
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).map_err(de::Error::custom)
    }
}

/// A time of day, `"HH:MM"` (`"24:00"` allowed as an end).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClockTime {
    /// Minutes after midnight, 0..=1440.
    pub minutes: u16,
}

impl ClockTime {
    /// Parses `"HH:MM"`.
    pub fn parse(s: &str) -> Result<ClockTime, String> {
        let bad = || {
            format!(
                "invalid time of day {:?}: expected \"HH:MM\", e.g. \"07:30\"",
                crate::report::escape_text(s)
            )
        };
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        if h.is_empty() || h.len() > 2 || m.len() != 2 {
            return Err(bad());
        }
        let h: u16 = h.parse().map_err(|_| bad())?;
        let m: u16 = m.parse().map_err(|_| bad())?;
        if m > 59 || h > 24 || (h == 24 && m != 0) {
            return Err(bad());
        }
        Ok(ClockTime {
            minutes: h * 60 + m,
        })
    }
}

impl fmt::Display for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.minutes / 60, self.minutes % 60)
    }
}

impl<'de> Deserialize<'de> for ClockTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ClockTime::parse(&s).map_err(de::Error::custom)
    }
}

/// A day of the week.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    /// 0 = Monday .. 6 = Sunday.
    pub fn index(self) -> u8 {
        self as u8
    }
}

/// A count over a sliding window: more than `threshold` within `window`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowRule {
    /// Whether the rule runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A finding when the count within `window` is more than this.
    pub threshold: u64,
    /// The sliding window's length.
    pub window: Duration,
}

/// A count per subject and calendar day (in [`Rules::time_zone`]).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DailyRule {
    /// Whether the rule runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A finding when a day's count is more than this.
    pub threshold: u64,
}

/// PHI access outside office hours.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffHoursRule {
    /// Whether the rule runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Office hours start (local time, inclusive).
    pub start: ClockTime,
    /// Office hours end (local time, exclusive). Before `start`: hours that
    /// span midnight (`start = "22:00"`, `end = "06:00"`).
    pub end: ClockTime,
    /// Office days; any time on another day is outside hours.
    pub days: Vec<Weekday>,
    /// A finding when an actor's off-hours PHI events in a day are more
    /// than this.
    pub threshold: u64,
}

impl OffHoursRule {
    /// True when local `weekday` (0 = Monday) at `minute` of the day is
    /// within office hours.
    pub fn in_hours(&self, weekday: u8, minute: u16) -> bool {
        if !self.days.iter().any(|d| d.index() == weekday) {
            return false;
        }
        let (s, e) = (self.start.minutes, self.end.minutes);
        if s <= e {
            minute >= s && minute < e
        } else {
            minute >= s || minute < e
        }
    }
}

/// Distinct patients per actor in a sliding window.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistinctPatientsRule {
    /// Whether the rule runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A finding when an actor touched more than this many distinct
    /// patients within `window`.
    pub threshold: u64,
    /// The sliding window's length.
    pub window: Duration,
    /// Patients remembered per actor (at least `threshold + 1`).
    pub max_tracked: u64,
}

/// First-time access to a patient by an actor (opt-in).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPatientRule {
    /// Whether the rule runs (off by default).
    #[serde(default)]
    pub enabled: bool,
    /// From the first event, how long access is only learned.
    pub baseline: Duration,
    /// A finding when an actor's first-time patients in a day are more
    /// than this.
    pub threshold: u64,
    /// (actor, patient) pairs remembered; past it the rule stops.
    pub max_pairs: u64,
}

fn yes() -> bool {
    true
}

/// Every rule and its thresholds. [`Rules::default`] is
/// [`DEFAULT_RULES_TOML`]; [`Rules::from_toml_str`] overrides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// IANA time zone name for office hours and calendar days.
    pub time_zone: String,
    /// Evidence references listed per finding.
    pub max_evidence: usize,
    /// Subjects tracked at once per rule.
    pub max_subjects: usize,
    /// Actors with many DENIED outcomes.
    pub denials: WindowRule,
    /// Client IPs with many failed logins.
    pub failed_logins: WindowRule,
    /// Actors with many exports in a day.
    pub exports: DailyRule,
    /// PHI access outside office hours.
    pub off_hours: OffHoursRule,
    /// Cross-organization access.
    pub cross_org: DailyRule,
    /// Many distinct patients in a window.
    pub distinct_patients: DistinctPatientsRule,
    /// First-time patient access (opt-in).
    pub new_patient: NewPatientRule,
}

/// A rules file that cannot be used. Its message names the key and line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulesError(pub(crate) String);

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RulesError {}

impl Default for Rules {
    fn default() -> Rules {
        // The defaults are a constant; their parse is tested.
        match parse_merged(None) {
            Ok(r) => r,
            Err(e) => unreachable!("the built-in rules do not parse: {e}"),
        }
    }
}

impl Rules {
    /// The defaults with what `toml` sets overridden. Unknown keys, wrong
    /// types, bad durations and unknown time zones are errors.
    ///
    /// ```
    /// use phi_audit_runtime::review::Rules;
    /// let r = Rules::from_toml_str("[denials]\nthreshold = 3\nwindow = \"10m\"").unwrap();
    /// assert_eq!(r.denials.threshold, 3);
    /// assert_eq!(r.failed_logins.threshold, 5); // a default
    /// assert!(Rules::from_toml_str("[denial]\nthreshold = 3").is_err());
    /// ```
    pub fn from_toml_str(toml: &str) -> Result<Rules, RulesError> {
        parse_merged(Some(toml))
    }

    /// Checks the values together (a time zone that exists, limits that
    /// can hold a finding).
    pub fn check(&self) -> Result<(), RulesError> {
        super::tz::LocalTime::new(&self.time_zone)?;
        if self.max_subjects < 16 {
            return Err(RulesError("max_subjects must be at least 16".into()));
        }
        if self.distinct_patients.max_tracked <= self.distinct_patients.threshold {
            return Err(RulesError(
                "distinct_patients.max_tracked must be more than its threshold".into(),
            ));
        }
        for (name, t) in [
            ("denials", self.denials.threshold),
            ("failed_logins", self.failed_logins.threshold),
        ] {
            if t >= 1_000_000 {
                return Err(RulesError(format!(
                    "{name}.threshold must be under 1000000 (a window keeps threshold + 1 events)"
                )));
            }
        }
        if self.distinct_patients.max_tracked > 10_000_000 {
            return Err(RulesError(
                "distinct_patients.max_tracked must be at most 10000000".into(),
            ));
        }
        Ok(())
    }
}

/// Line (1-based) of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn toml_error(e: toml::de::Error, text: &str, what: &str) -> RulesError {
    let at = e
        .span()
        .map(|s| format!(" (line {})", line_of(text, s.start)))
        .unwrap_or_default();
    RulesError(format!(
        "{what}{at}: {}",
        crate::report::escape_text(e.message().trim())
    ))
}

/// Merges `user` over the defaults, table by table, then deserializes.
fn parse_merged(user: Option<&str>) -> Result<Rules, RulesError> {
    let mut base: toml::Table = toml::from_str(DEFAULT_RULES_TOML)
        .map_err(|e| toml_error(e, DEFAULT_RULES_TOML, "built-in rules"))?;
    if let Some(text) = user {
        let over: toml::Table =
            toml::from_str(text).map_err(|e| toml_error(e, text, "rules file"))?;
        for (k, v) in over {
            match (base.get_mut(&k), v) {
                (Some(toml::Value::Table(b)), toml::Value::Table(o)) => {
                    for (k2, v2) in o {
                        if !b.contains_key(&k2) {
                            return Err(RulesError(format!(
                                "rules file: [{}] has no key `{}`",
                                crate::report::escape_text(&k),
                                crate::report::escape_text(&k2)
                            )));
                        }
                        b.insert(k2, v2);
                    }
                }
                (Some(toml::Value::Table(_)), _) => {
                    return Err(RulesError(format!(
                        "rules file: `{}` must be a table ([{0}])",
                        crate::report::escape_text(&k)
                    )))
                }
                (Some(slot), v) => *slot = v,
                (None, _) => {
                    return Err(RulesError(format!(
                        "rules file: unknown rule or key `{}` (known: time_zone, max_evidence, \
                         max_subjects, denials, failed_logins, exports, off_hours, cross_org, \
                         distinct_patients, new_patient)",
                        crate::report::escape_text(&k)
                    )))
                }
            }
        }
    }
    fn take<T: serde::de::DeserializeOwned>(
        t: &mut toml::Table,
        key: &str,
    ) -> Result<T, RulesError> {
        let v = t
            .remove(key)
            .ok_or_else(|| RulesError(format!("rules: `{key}` is missing")))?;
        let table = matches!(v, toml::Value::Table(_));
        v.try_into().map_err(|e: toml::de::Error| {
            let at = if table {
                format!("[{key}]")
            } else {
                format!("`{key}`")
            };
            RulesError(format!(
                "rules file: {at}: {}",
                crate::report::escape_text(e.message().trim())
            ))
        })
    }
    let t = &mut base;
    let rules = Rules {
        time_zone: take(t, "time_zone")?,
        max_evidence: take(t, "max_evidence")?,
        max_subjects: take(t, "max_subjects")?,
        denials: take(t, "denials")?,
        failed_logins: take(t, "failed_logins")?,
        exports: take(t, "exports")?,
        off_hours: take(t, "off_hours")?,
        cross_org: take(t, "cross_org")?,
        distinct_patients: take(t, "distinct_patients")?,
        new_patient: take(t, "new_patient")?,
    };
    rules.check()?;
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("15m").unwrap().as_secs(), 900);
        assert_eq!(Duration::parse("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(Duration::parse("7d").unwrap().as_secs(), 7 * 86_400);
        assert_eq!(Duration::parse("1h30m").unwrap().to_string(), "1h30m");
        for bad in ["", "0s", "15", "m", "1x", "99999999999999999999d", "-1h"] {
            assert!(Duration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn clock_times() {
        assert_eq!(ClockTime::parse("07:30").unwrap().minutes, 450);
        assert_eq!(ClockTime::parse("24:00").unwrap().minutes, 1440);
        for bad in ["7", "07:60", "25:00", "24:01", "ab:cd", "07:3"] {
            assert!(ClockTime::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_parse() {
        let r = Rules::default();
        assert_eq!(r.denials.threshold, 10);
        assert!(!r.new_patient.enabled);
        assert_eq!(r.time_zone, "UTC");
    }

    #[test]
    fn office_hours_across_midnight() {
        let mut r = Rules::default().off_hours;
        assert!(r.in_hours(0, 7 * 60));
        assert!(!r.in_hours(0, 19 * 60));
        assert!(!r.in_hours(5, 12 * 60));
        r.start = ClockTime::parse("22:00").unwrap();
        r.end = ClockTime::parse("06:00").unwrap();
        assert!(r.in_hours(0, 23 * 60));
        assert!(r.in_hours(0, 60));
        assert!(!r.in_hours(0, 12 * 60));
    }
}
