//! [`Timestamp`]: UTC instants with millisecond precision, written as RFC 3339
//! (`2026-11-22T08:15:30.123Z`) by a hand-written formatter.

use std::cell::Cell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A UTC instant, milliseconds since the Unix epoch.
///
/// Written as `YYYY-MM-DDTHH:MM:SS.mmmZ`; sub-millisecond digits are
/// truncated, not rounded.
///
/// ```
/// use phi_audit::Timestamp;
/// let t = Timestamp::from_unix_millis(1_700_000_000_123);
/// assert_eq!(t.to_string(), "2023-11-14T22:13:20.123Z");
/// assert_eq!("2023-11-14T22:13:20.123Z".parse::<Timestamp>().unwrap(), t);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// A timestamp string that is not RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampError(&'static str);

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid RFC 3339 timestamp: {}", self.0)
    }
}

impl std::error::Error for TimestampError {}

impl Timestamp {
    /// The current time from the system clock, truncated to milliseconds.
    ///
    /// On x86-64 Linux with an invariant time-stamp counter that the kernel
    /// keeps time with, most reads come from the counter: each thread reads
    /// the system clock once per millisecond and answers from the counter
    /// until the next millisecond is due (stopping short of it, so the
    /// millisecond is always the one the system clock would give).
    pub fn now() -> Timestamp {
        Timestamp(crate::time::clock::now_millis())
    }

    /// Converts a [`SystemTime`], truncating to milliseconds.
    pub fn from_system_time(t: SystemTime) -> Timestamp {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(d.as_millis() as i64),
            Err(e) => {
                let d = e.duration();
                // Truncate toward the past, like the forward case truncates.
                let ms = d.as_millis() as i64 + i64::from(d.subsec_nanos() % 1_000_000 != 0);
                Timestamp(-ms)
            }
        }
    }

    /// From milliseconds since the Unix epoch.
    pub const fn from_unix_millis(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// Writes the RFC 3339 form into `out` (exactly 24 bytes; instants before
    /// year 1 or after 9999 are written as the first or last millisecond
    /// RFC 3339 validators accept).
    pub fn write_rfc3339(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.rfc3339_bytes());
    }

    /// [`Timestamp::rfc3339_bytes`], reusing this thread's last date and time
    /// of day when the second is the same (the encoders' hot path: a busy
    /// worker writes thousands of events per second).
    pub(crate) fn rfc3339_bytes_cached(self) -> [u8; 24] {
        thread_local! {
            static LAST: Cell<(i64, [u8; 24])> = const { Cell::new((i64::MIN, [0; 24])) };
        }
        // Years 0001..=9999; outside, the clamped forms are not cached.
        const FIRST: i64 = -62_135_596_800;
        const END: i64 = 253_402_300_800;
        let secs = self.0.div_euclid(1000);
        if !(FIRST..END).contains(&secs) {
            return self.rfc3339_bytes();
        }
        let ms = self.0.rem_euclid(1000) as u32;
        LAST.try_with(|last| {
            let (s, mut b) = last.get();
            if s != secs {
                b = self.rfc3339_bytes();
                last.set((secs, b));
                return b;
            }
            b[20] = b'0' + (ms / 100) as u8;
            b[21] = b'0' + (ms / 10 % 10) as u8;
            b[22] = b'0' + (ms % 10) as u8;
            b
        })
        .unwrap_or_else(|_| self.rfc3339_bytes())
    }

    /// The RFC 3339 form as ASCII bytes, on the stack.
    pub fn rfc3339_bytes(self) -> [u8; 24] {
        let ms = self.0.rem_euclid(1000) as u32;
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400) as u32;
        let (y, m, d) = civil_from_days(days);
        let (hh, mm, ss) = (sod / 3600, (sod / 60) % 60, sod % 60);
        if !(1..=9999).contains(&y) {
            // Outside what RFC 3339 can express (validators refuse year 0000
            // too); clamp rather than write garbage or an invalid event.
            return *if y < 1 {
                b"0001-01-01T00:00:00.000Z"
            } else {
                b"9999-12-31T23:59:59.999Z"
            };
        }
        let y = y as u32;
        let mut b = [0u8; 24];
        b[0] = b'0' + (y / 1000) as u8;
        b[1] = b'0' + (y / 100 % 10) as u8;
        b[2] = b'0' + (y / 10 % 10) as u8;
        b[3] = b'0' + (y % 10) as u8;
        b[4] = b'-';
        two(&mut b[5..7], m);
        b[7] = b'-';
        two(&mut b[8..10], d);
        b[10] = b'T';
        two(&mut b[11..13], hh);
        b[13] = b':';
        two(&mut b[14..16], mm);
        b[16] = b':';
        two(&mut b[17..19], ss);
        b[19] = b'.';
        b[20] = b'0' + (ms / 100) as u8;
        b[21] = b'0' + (ms / 10 % 10) as u8;
        b[22] = b'0' + (ms % 10) as u8;
        b[23] = b'Z';
        b
    }

    /// Parses RFC 3339 (`T` or space separator, any fraction, `Z` or `±HH:MM`).
    pub fn parse_rfc3339(s: &str) -> Result<Timestamp, TimestampError> {
        let b = s.as_bytes();
        if b.len() < 20 {
            return Err(TimestampError("too short"));
        }
        let num = |r: std::ops::Range<usize>| -> Result<i64, TimestampError> {
            let mut v = 0i64;
            for &c in &b[r] {
                if !c.is_ascii_digit() {
                    return Err(TimestampError("expected a digit"));
                }
                v = v * 10 + i64::from(c - b'0');
            }
            Ok(v)
        };
        if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
            return Err(TimestampError("expected YYYY-MM-DDTHH:MM:SS"));
        }
        if b[13] != b':' || b[16] != b':' {
            return Err(TimestampError("expected HH:MM:SS"));
        }
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
            return Err(TimestampError("date out of range"));
        }
        if h > 23 || mi > 59 || sec > 60 {
            return Err(TimestampError("time out of range"));
        }
        let mut i = 19;
        let mut ms = 0i64;
        if b[i] == b'.' {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - start < 3 {
                    ms = ms * 10 + i64::from(b[i] - b'0');
                }
                i += 1;
            }
            if i == start {
                return Err(TimestampError("empty fraction"));
            }
            for _ in (i - start)..3 {
                ms *= 10;
            }
        }
        let offset_min = match b.get(i) {
            Some(b'Z' | b'z') if i + 1 == b.len() => 0,
            Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
                let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
                if oh > 23 || om > 59 {
                    return Err(TimestampError("offset out of range"));
                }
                let o = oh * 60 + om;
                if sign == b'+' {
                    o
                } else {
                    -o
                }
            }
            _ => return Err(TimestampError("expected Z or a ±HH:MM offset")),
        };
        let days = days_from_civil(y, mo as u32, d as u32);
        let secs = days * 86_400 + h * 3600 + mi * 60 + sec.min(59) - offset_min * 60;
        Ok(Timestamp(secs * 1000 + ms))
    }
}

fn two(out: &mut [u8], v: u32) {
    out[0] = b'0' + (v / 10) as u8;
    out[1] = b'0' + (v % 10) as u8;
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil-calendar algorithms (public domain arithmetic).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.rfc3339_bytes();
        f.write_str(std::str::from_utf8(&b).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timestamp::parse_rfc3339(s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let b = self.rfc3339_bytes();
        s.serialize_str(std::str::from_utf8(&b).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_form_equals_the_computed_one() {
        // Walk through same-second runs, second and day changes, negative
        // times and both clamps, in an order that makes the cache both hit
        // and miss.
        let mut ms = vec![
            0,
            999,
            1000,
            1_700_000_000_123,
            1_700_000_000_999,
            1_700_000_001_000,
            -1,
            -1000,
            -1001,
            -62_167_219_200_000,
            -62_167_219_200_001,
            253_402_300_799_999,
            253_402_300_800_000,
            i64::MIN,
            i64::MAX,
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ms.push(1_700_000_000_000 + (x % 5_000) as i64);
            ms.push(x as i64);
        }
        for &m in ms.iter().chain(ms.iter().rev()) {
            let t = Timestamp::from_unix_millis(m);
            assert_eq!(t.rfc3339_bytes_cached(), t.rfc3339_bytes(), "{m}");
        }
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(951_782_400_000).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(Timestamp(-1).to_string(), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn parse_round_trips_and_truncates() {
        for ms in [
            0i64,
            1,
            999,
            1_700_000_000_123,
            4_102_444_799_999,
            -86_400_001,
        ] {
            let s = Timestamp(ms).to_string();
            assert_eq!(Timestamp::parse_rfc3339(&s).unwrap(), Timestamp(ms), "{s}");
        }
        let t = Timestamp::parse_rfc3339("2026-01-02T03:04:05.678999+01:00").unwrap();
        assert_eq!(t.to_string(), "2026-01-02T02:04:05.678Z");
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T25:00:00Z",
            "2026-01-01T00:00:00+0100",
            "20260101T000000Z-padding",
        ] {
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn system_time_truncates() {
        let t = UNIX_EPOCH + std::time::Duration::from_nanos(1_999_999);
        assert_eq!(Timestamp::from_system_time(t), Timestamp(1));
    }
}
