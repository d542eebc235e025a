//! Timestamps as the audit tools show and accept them: RFC 3339 in UTC with milliseconds
//! for output; RFC 3339 (or a bare date) or an age such as `15m` for input.
//!
//! Hand-written rather than a date crate because the collector only needs UTC civil dates
//! (no time zones database), and every dependency costs build time on small machines.

use meshguard::time::{civil_from_days, days_from_civil};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const NANOS_PER_SEC: i64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

/// A time or duration the user typed that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeError {
    /// Not an RFC 3339 time nor an age.
    Format {
        /// What the user typed.
        input: String,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// A duration that is zero, negative or too long.
    Duration {
        /// What the user typed.
        input: String,
        /// What was wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeError::Format { input, reason } => write!(
                f,
                "{input:?} is not a time: {reason} (use RFC 3339 such as 2025-01-31T09:00:00Z, \
                 a date such as 2025-01-31, or an age such as 90s, 15m, 1h, 7d)"
            ),
            TimeError::Duration { input, reason } => write!(
                f,
                "{input:?} is not a duration: {reason} (use a number with a unit: 90s, 15m, 1h, 7d)"
            ),
        }
    }
}

impl std::error::Error for TimeError {}

/// Now, in nanoseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Parses `90s`, `15m`, `1h`, `7d`, `2w` or a plain number of seconds.
pub fn parse_duration(input: &str) -> Result<Duration, TimeError> {
    let s = input.trim();
    let bad = |reason| TimeError::Duration {
        input: input.to_string(),
        reason,
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(bad("it does not start with a number"));
    }
    let n: u64 = num.parse().map_err(|_| bad("the number is too large"))?;
    let mult: u64 = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad("unknown unit")),
    };
    let secs = n.checked_mul(mult).ok_or_else(|| bad("it is too long"))?;
    if secs == 0 {
        return Err(bad("it must be greater than zero"));
    }
    // Keep every duration representable as i64 nanoseconds, which is how times are stored.
    if secs > (i64::MAX / NANOS_PER_SEC) as u64 {
        return Err(bad("it is too long"));
    }
    Ok(Duration::from_secs(secs))
}

/// Parses a point in time: an age (`1h` = one hour before `now`) or an RFC 3339 time.
/// Returns nanoseconds since the epoch.
pub fn parse_instant(input: &str, now: i64) -> Result<i64, TimeError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(TimeError::Format {
            input: input.to_string(),
            reason: "it is empty",
        });
    }
    let looks_like_age = s.len() < 10 && !s.contains('-');
    if looks_like_age {
        let d = parse_duration(s).map_err(|_| TimeError::Format {
            input: input.to_string(),
            reason: "not a valid age",
        })?;
        let nanos = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        return Ok(now.saturating_sub(nanos));
    }
    parse_rfc3339(s).map_err(|reason| TimeError::Format {
        input: input.to_string(),
        reason,
    })
}

fn digits(s: &str, what: &'static str) -> Result<i64, &'static str> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(what);
    }
    s.parse().map_err(|_| what)
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`; a time without an offset
/// is taken as UTC, the zone every audit tool prints.
fn parse_rfc3339(s: &str) -> Result<i64, &'static str> {
    let (date, time) = match s.find(['T', 't', ' ']) {
        Some(i) => (s.get(..i).unwrap_or(""), s.get(i + 1..).unwrap_or("")),
        None => (s, ""),
    };
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the date must be YYYY-MM-DD");
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err("the date must be YYYY-MM-DD");
    }
    let (y, m, d) = (
        digits(y, "bad year")?,
        digits(m, "bad month")?,
        digits(d, "bad day")?,
    );
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err("no such date");
    }
    let mut secs = days_from_civil(y, m, d) * SECS_PER_DAY;
    let mut nanos = 0i64;
    if !time.is_empty() {
        // Split off the offset: `Z`, or the last `+`/`-`.
        let (clock, offset_secs) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
            (c, 0)
        } else if let Some(i) = time.rfind(['+', '-']) {
            let sign = if time.as_bytes().get(i) == Some(&b'-') {
                -1
            } else {
                1
            };
            let off = time.get(i + 1..).unwrap_or("");
            let (oh, om) = off.split_once(':').ok_or("the offset must be ±HH:MM")?;
            if oh.len() != 2 || om.len() != 2 {
                return Err("the offset must be ±HH:MM");
            }
            let (oh, om) = (digits(oh, "bad offset")?, digits(om, "bad offset")?);
            if oh > 23 || om > 59 {
                return Err("bad offset");
            }
            (time.get(..i).unwrap_or(""), sign * (oh * 3_600 + om * 60))
        } else {
            (time, 0)
        };
        let (hms, frac) = match clock.split_once('.') {
            Some((hms, frac)) => (hms, Some(frac)),
            None => (clock, None),
        };
        let mut t = hms.split(':');
        let (Some(h), Some(mi), Some(sec), None) = (t.next(), t.next(), t.next(), t.next()) else {
            return Err("the time must be HH:MM:SS");
        };
        if h.len() != 2 || mi.len() != 2 || sec.len() != 2 {
            return Err("the time must be HH:MM:SS");
        }
        let (h, mi, sec) = (
            digits(h, "bad hour")?,
            digits(mi, "bad minute")?,
            digits(sec, "bad second")?,
        );
        // 60 is a leap second; treat it as the last second of the minute.
        if h > 23 || mi > 59 || sec > 60 {
            return Err("no such time of day");
        }
        secs += h * 3_600 + mi * 60 + sec.min(59) - offset_secs;
        if let Some(frac) = frac {
            if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return Err("bad fraction of a second");
            }
            let padded = format!("{frac:0<9}");
            nanos = digits(&padded, "bad fraction of a second")?;
        }
    }
    secs.checked_mul(NANOS_PER_SEC)
        .and_then(|n| n.checked_add(nanos))
        .ok_or("out of range")
}

/// Formats nanoseconds since the epoch as `2025-01-31T09:00:00.123Z`.
pub fn format_rfc3339_millis(nanos: i64) -> String {
    let secs = nanos.div_euclid(NANOS_PER_SEC);
    let millis = nanos.rem_euclid(NANOS_PER_SEC) / 1_000_000;
    let days = secs.div_euclid(SECS_PER_DAY);
    let sod = secs.rem_euclid(SECS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3_600,
        sod % 3_600 / 60,
        sod % 60
    )
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        let t = 1_738_314_000_123_000_000; // 2025-01-31T09:00:00.123Z
        assert_eq!(format_rfc3339_millis(t), "2025-01-31T09:00:00.123Z");
        assert_eq!(parse_instant("2025-01-31T09:00:00.123Z", 0), Ok(t));
        assert_eq!(parse_instant("2025-01-31T10:00:00.123+01:00", 0), Ok(t));
        assert_eq!(parse_instant("2025-01-31 09:00:00.123", 0), Ok(t));
        assert_eq!(
            parse_instant("2025-01-31", 0),
            Ok(1_738_281_600 * NANOS_PER_SEC)
        );
        assert_eq!(format_rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            parse_instant("2024-02-29T23:59:59Z", 0).map(format_rfc3339_millis),
            Ok("2024-02-29T23:59:59.000Z".to_string())
        );
    }

    #[test]
    fn ages_are_relative_to_now() {
        let now = 10_000 * NANOS_PER_SEC;
        assert_eq!(parse_instant("1h", now), Ok(now - 3_600 * NANOS_PER_SEC));
        assert_eq!(parse_instant("90s", now), Ok(now - 90 * NANOS_PER_SEC));
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    }

    #[test]
    fn rejects_nonsense_with_a_reason() {
        for bad in [
            "",
            "yesterday",
            "2025-02-30",
            "2025-01-31T25:00:00Z",
            "2025-1-31",
            "1x",
        ] {
            let e = parse_instant(bad, 0).expect_err(bad);
            assert!(e.to_string().contains("is not a time"), "{e}");
        }
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("s").is_err());
    }
}
