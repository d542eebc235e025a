//! Timestamps as the audit tools show and accept them: RFC 3339 in UTC with milliseconds
//! for output; RFC 3339 (or a bare date) or an age such as `15m` for input.
//!
//! Hand-written rather than a date crate because the collector only needs UTC civil dates
//! (no time zones database), and every dependency costs build time on small machines.

use meshguard::time::{self, civil_from_days};
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

/// Parses RFC 3339 with the filter's parser (one implementation, one table of valid and
/// invalid timestamps: `tests/fixtures/rfc3339.tsv`), plus a bare `YYYY-MM-DD` as midnight
/// UTC, a convenience for ranges by day.
fn parse_rfc3339(s: &str) -> Result<i64, &'static str> {
    let is_date = s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit() || b == b'-');
    let (secs, nanos) = if is_date {
        time::parse_rfc3339(&format!("{s}T00:00:00Z"))
    } else {
        time::parse_rfc3339(s)
    }
    .map_err(time::Rfc3339Error::reason)?;
    secs.checked_mul(NANOS_PER_SEC)
        .and_then(|n| n.checked_add(i64::from(nanos)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        let t = 1_738_314_000_123_000_000; // 2025-01-31T09:00:00.123Z
        assert_eq!(format_rfc3339_millis(t), "2025-01-31T09:00:00.123Z");
        assert_eq!(parse_instant("2025-01-31T09:00:00.123Z", 0), Ok(t));
        assert_eq!(parse_instant("2025-01-31T10:00:00.123+01:00", 0), Ok(t));
        assert_eq!(parse_instant("2025-01-31 09:00:00.123z", 0), Ok(t));
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

    /// The filter's table (`tests/fixtures/rfc3339.tsv`) through the CLI's time
    /// arguments: the same inputs valid, the same instants.
    #[test]
    fn the_shared_rfc3339_table_through_the_cli() {
        let mut rows = 0;
        for line in include_str!("../../tests/fixtures/rfc3339.tsv").lines() {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let cols: Vec<&str> = line.split('\t').collect();
            let input = cols[0];
            if input.trim() != input && !input.trim().is_empty() {
                // the CLI trims its arguments (shell quoting), so padding is not an error
                assert_eq!(
                    parse_instant(input, 0),
                    parse_instant(input.trim(), 0),
                    "{input:?}"
                );
                assert!(parse_instant(input, 0).is_ok(), "{input:?}");
                rows += 1;
                continue;
            }
            match cols[1] {
                "invalid" if input.len() == 10 && !input.contains('T') => {
                    // a bare date: the CLI's one extension, midnight UTC
                    assert!(parse_instant(input, 0).is_ok(), "{input:?}");
                }
                "invalid" => {
                    let e = parse_instant(input, 0).expect_err(input);
                    assert!(e.to_string().contains("is not a time"), "{e}");
                }
                secs => {
                    let nanos: i64 = cols[2].parse().unwrap();
                    let want = secs.parse::<i64>().unwrap() * NANOS_PER_SEC + nanos;
                    assert_eq!(parse_instant(input, 0), Ok(want), "{input:?}");
                }
            }
            rows += 1;
        }
        assert!(rows >= 40, "{rows}");
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
            "2025-01-31T09:00:00",
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
