//! UTC timestamps as RFC 3339 text (bundle `created_at`, health `lastSync`), without a
//! date-time dependency in the module.

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month, day) of a day number since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format(unix_secs: u64) -> String {
    let secs = i64::try_from(unix_secs).unwrap_or(i64::MAX);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Why a text is not an RFC 3339 timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rfc3339Error {
    /// Not shaped `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
    Shape,
    /// A month or day that does not exist (`2025-02-30`).
    NoSuchDate,
    /// An hour, minute or second that does not exist (`24:00`).
    NoSuchTime,
    /// The zone is missing or is not `Z` or `±HH:MM`.
    Zone,
    /// A `.` without digits after it.
    Fraction,
}

impl Rfc3339Error {
    /// What is wrong, in words an operator acts on.
    pub fn reason(self) -> &'static str {
        match self {
            Rfc3339Error::Shape => "it is not shaped YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)",
            Rfc3339Error::NoSuchDate => "no such date",
            Rfc3339Error::NoSuchTime => "no such time of day",
            Rfc3339Error::Zone => "the zone must be Z or ±HH:MM",
            Rfc3339Error::Fraction => "a `.` must be followed by digits",
        }
    }
}

impl std::fmt::Display for Rfc3339Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for Rfc3339Error {}

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

/// The decimal value of `len` ASCII digits at `from`, or `None`.
fn digits(b: &[u8], from: usize, len: usize) -> Option<i64> {
    let part = b.get(from..from.checked_add(len)?)?;
    part.iter().try_fold(0i64, |n, c| {
        c.is_ascii_digit()
            .then(|| n * 10 + i64::from(c.wrapping_sub(b'0')))
    })
}

/// Parses an RFC 3339 `date-time`: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, with `t`/`z`
/// in either case and a space allowed for `T` (RFC 3339 section 5.6). The zone is
/// required; `:60` (a leap second) counts as `:59`; digits beyond nanoseconds are
/// dropped. Returns seconds since the epoch (negative before 1970) and nanoseconds.
///
/// # Errors
///
/// See [`Rfc3339Error`].
pub fn parse_rfc3339(s: &str) -> Result<(i64, u32), Rfc3339Error> {
    let b = s.as_bytes();
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let shaped = at(4, b'-')
        && at(7, b'-')
        && at(13, b':')
        && at(16, b':')
        && matches!(b.get(10), Some(b'T' | b't' | b' '));
    if !shaped {
        return Err(Rfc3339Error::Shape);
    }
    let num = |from, len| digits(b, from, len).ok_or(Rfc3339Error::Shape);
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, se) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return Err(Rfc3339Error::NoSuchDate);
    }
    if h > 23 || mi > 59 || se > 60 {
        return Err(Rfc3339Error::NoSuchTime);
    }
    let mut rest = b.get(19..).ok_or(Rfc3339Error::Shape)?;
    let mut nanos: u32 = 0;
    if let Some(frac) = rest.strip_prefix(b".") {
        let count = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if count == 0 {
            return Err(Rfc3339Error::Fraction);
        }
        let mut scale = 100_000_000;
        for c in frac.iter().take(count.min(9)) {
            nanos += u32::from(c.wrapping_sub(b'0')) * scale;
            scale /= 10;
        }
        rest = frac.get(count..).ok_or(Rfc3339Error::Shape)?;
    }
    let offset = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), oh1, oh2, b':', om1, om2] => {
            let pair = [*oh1, *oh2, *om1, *om2];
            let (oh, om) = (
                digits(&pair, 0, 2).ok_or(Rfc3339Error::Zone)?,
                digits(&pair, 2, 2).ok_or(Rfc3339Error::Zone)?,
            );
            if oh > 23 || om > 59 {
                return Err(Rfc3339Error::Zone);
            }
            let sign = if *sign == b'-' { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return Err(Rfc3339Error::Zone),
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se.min(59) - offset;
    Ok((secs, nanos))
}

/// [`parse_rfc3339`] as whole seconds since the epoch; `None` when invalid or before 1970
/// (bundle `created_at`).
pub fn parse(s: &str) -> Option<u64> {
    parse_rfc3339(s)
        .ok()
        .and_then(|(secs, _)| u64::try_from(secs).ok())
}

/// A duration as Guardian shows it: `4m32s`, `2h5m`, `3d4h`.
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{}m", s / 3600, (s / 60) % 60),
        s => format!("{}d{}h", s / 86_400, (s / 3600) % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows of `tests/fixtures/rfc3339.tsv`: input, and the expected seconds and
    /// nanoseconds (`None` for an invalid input).
    fn table() -> Vec<(&'static str, Option<(i64, u32)>)> {
        include_str!("../tests/fixtures/rfc3339.tsv")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let cols: Vec<&str> = l.split('\t').collect();
                let expected = match cols[1] {
                    "invalid" => None,
                    secs => Some((secs.parse().unwrap(), cols[2].parse().unwrap())),
                };
                (cols[0], expected)
            })
            .collect()
    }

    #[test]
    fn the_shared_table() {
        let rows = table();
        assert!(rows.len() >= 40, "{}", rows.len());
        for (input, expected) in rows {
            assert_eq!(parse_rfc3339(input).ok(), expected, "{input:?}");
        }
    }

    #[test]
    fn round_trips() {
        for t in [0, 951_782_400, 1_800_000_000, 4_102_444_799] {
            assert_eq!(parse(&format(t)), Some(t), "{}", format(t));
        }
        assert_eq!(format(1_800_000_000), "2027-01-15T08:00:00Z");
        assert_eq!(parse("1969-12-31T23:59:59Z"), None);
        assert_eq!(
            parse_rfc3339("2025-02-30T00:00:00Z"),
            Err(Rfc3339Error::NoSuchDate)
        );
        assert_eq!(
            parse_rfc3339("2025-01-31T09:00:00"),
            Err(Rfc3339Error::Zone)
        );
        assert_eq!(age(272), "4m32s");
    }
}
