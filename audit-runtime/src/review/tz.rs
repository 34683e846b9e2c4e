//! Local calendar day, weekday and minute of an instant in the rules' time
//! zone (jiff's tz database: the system's, else the bundled copy).

use jiff::tz::TimeZone;

use super::rules::RulesError;
use crate::time::timestamp::Timestamp;

const HOUR_MS: i64 = 3_600_000;

/// Where an instant falls in local time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Local {
    /// Days since 1970-01-01 (local calendar).
    pub day: i64,
    /// 0 = Monday .. 6 = Sunday.
    pub weekday: u8,
    /// Minute of the local day, 0..1440.
    pub minute: u16,
}

/// Converts instants to local time, caching the UTC offset per UTC hour
/// (one tz lookup per hour of trail, not per event).
pub(crate) struct LocalTime {
    tz: TimeZone,
    /// (UTC hour index, offset in seconds valid for that whole hour).
    cache: Option<(i64, i64)>,
    utc: bool,
}

impl LocalTime {
    pub(crate) fn new(name: &str) -> Result<LocalTime, RulesError> {
        let utc = name.eq_ignore_ascii_case("UTC") || name == "Etc/UTC" || name == "Z";
        let tz = if utc {
            TimeZone::UTC
        } else {
            TimeZone::get(name).map_err(|_| {
                RulesError(format!(
                    "unknown time zone {:?}: give an IANA name such as \"America/New_York\" or \"UTC\"",
                    crate::report::escape_text(name)
                ))
            })?
        };
        Ok(LocalTime {
            tz,
            cache: None,
            utc,
        })
    }

    fn offset_secs_at(&self, ms: i64) -> i64 {
        match jiff::Timestamp::from_millisecond(ms) {
            Ok(t) => i64::from(self.tz.to_offset(t).seconds()),
            Err(_) => 0,
        }
    }

    /// The local day, weekday and minute of `t`.
    pub(crate) fn local(&mut self, t: Timestamp) -> Local {
        let ms = t.unix_millis();
        let offset = if self.utc {
            0
        } else {
            let hour = ms.div_euclid(HOUR_MS);
            match self.cache {
                Some((h, off)) if h == hour => off,
                _ => {
                    let start = hour.saturating_mul(HOUR_MS);
                    let a = self.offset_secs_at(start);
                    let b = self.offset_secs_at(start.saturating_add(HOUR_MS - 1));
                    if a == b {
                        self.cache = Some((hour, a));
                        a
                    } else {
                        // A transition inside this hour: look this instant up.
                        self.offset_secs_at(ms)
                    }
                }
            }
        };
        let local_secs = ms.div_euclid(1000).saturating_add(offset);
        let day = local_secs.div_euclid(86_400);
        let minute = (local_secs.rem_euclid(86_400) / 60) as u16;
        // 1970-01-01 was a Thursday (index 3).
        let weekday = (day + 3).rem_euclid(7) as u8;
        Local {
            day,
            weekday,
            minute,
        }
    }
}

/// `YYYY-MM-DD` of `day` (days since 1970-01-01).
pub(crate) fn date_string(day: i64) -> String {
    // Civil-from-days (proleptic Gregorian), H. Hinnant's algorithm.
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_and_new_york() {
        let t = Timestamp::parse_rfc3339("2026-03-02T03:30:00Z").unwrap(); // a Monday
        let mut utc = LocalTime::new("UTC").unwrap();
        let l = utc.local(t);
        assert_eq!((l.weekday, l.minute), (0, 210));
        assert_eq!(date_string(l.day), "2026-03-02");
        let mut ny = LocalTime::new("America/New_York").unwrap();
        let l = ny.local(t);
        // 22:30 on Sunday, the day before, in New York (UTC-5).
        assert_eq!((l.weekday, l.minute), (6, 22 * 60 + 30));
        assert_eq!(date_string(l.day), "2026-03-01");
        // Daylight saving time: UTC-4 in July.
        let t = Timestamp::parse_rfc3339("2026-07-01T12:00:00Z").unwrap();
        assert_eq!(ny.local(t).minute, 8 * 60);
        // India, a half-hour offset.
        let mut kol = LocalTime::new("Asia/Kolkata").unwrap();
        assert_eq!(kol.local(t).minute, 17 * 60 + 30);
        assert!(LocalTime::new("Mars/Olympus").is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(date_string(0), "1970-01-01");
        assert_eq!(date_string(-1), "1969-12-31");
        assert_eq!(date_string(20_514), "2026-03-02");
    }
}
