//! Go's duration syntax (`30s`, `1m30s`, `1.5h`, `500ms`), which Consul uses in flags and config
//! files, parsed into [`Duration`] and formatted back the way Go prints it.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The largest duration Go can represent (`math.MaxInt64` nanoseconds, about 292 years). Anything
/// longer is refused, so a value Consul rejects is rejected here too.
const MAX_NANOS: u128 = i64::MAX as u128;

/// At most this many fractional digits take part in the arithmetic; later ones change the result by
/// less than a nanosecond even in hours, and capping them keeps the sum inside `u128`.
const FRACTION_DIGITS_MAX: usize = 25;

/// Parses a Go duration: one or more `<number><unit>` parts, summed (`1h2m3.5s`), where the number
/// may have a fraction (`1.5s`, `.5s`) and the unit is one of `ns`, `us` (or `µs`), `ms`, `s`, `m`,
/// `h`. A bare `0` is zero. A leading `+` is allowed, as in Go; negative durations are refused,
/// because no cairn setting means anything negative. The error says what is wrong with `s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.starts_with('-') {
        return Err(format!("negative duration {s:?}: durations must be zero or more"));
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(format!("invalid duration {s:?}: expected a number and a unit, such as 30s"));
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let (part_nanos, after) = parse_part(rest, s)?;
        total_nanos = total_nanos.saturating_add(part_nanos);
        if total_nanos > MAX_NANOS {
            return Err(format!("duration {s:?} is too long (at most about 292 years)"));
        }
        rest = after;
    }
    let nanos = u64::try_from(total_nanos).expect("total_nanos is bounded by MAX_NANOS");
    Ok(Duration::from_nanos(nanos))
}

/// Parses one `<number><unit>` part at the start of `rest`; returns its nanoseconds and what
/// follows. `whole` is the full input, for error messages.
fn parse_part<'a>(rest: &'a str, whole: &str) -> Result<(u128, &'a str), String> {
    let (integer, rest) = split_digits(rest);
    let (fraction, rest) = match rest.strip_prefix('.') {
        Some(after_dot) => split_digits(after_dot),
        None => ("", rest),
    };
    if integer.is_empty() && fraction.is_empty() {
        return Err(format!("invalid duration {whole:?}: expected a number and a unit, such as 30s"));
    }
    let unit_len = rest.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(rest.len());
    let (unit, rest) = rest.split_at(unit_len);
    if unit.is_empty() {
        return Err(format!("missing unit in duration {whole:?}: use ns, us, ms, s, m or h"));
    }
    let Some(unit_nanos) = unit_nanos(unit) else {
        return Err(format!("unknown unit {unit:?} in duration {whole:?}: use ns, us, ms, s, m or h"));
    };
    let too_long = || format!("duration {whole:?} is too long (at most about 292 years)");
    // A part longer than `MAX_NANOS` is refused before multiplying, so nothing overflows `u128`.
    let integer_value: u128 = if integer.is_empty() { 0 } else { integer.parse().map_err(|_| too_long())? };
    let integer_nanos = integer_value.checked_mul(unit_nanos).filter(|n| *n <= MAX_NANOS).ok_or_else(too_long)?;
    Ok((integer_nanos + fraction_nanos(fraction, unit_nanos), rest))
}

/// `0.<fraction>` of a unit, in whole nanoseconds (truncated, as Go does).
fn fraction_nanos(fraction: &str, unit_nanos: u128) -> u128 {
    let digits = &fraction[..fraction.len().min(FRACTION_DIGITS_MAX)];
    if digits.is_empty() {
        return 0;
    }
    let value: u128 = digits.parse().expect("split_digits returns only ASCII digits");
    let scale = 10u128.pow(u32::try_from(digits.len()).expect("at most FRACTION_DIGITS_MAX digits"));
    value * unit_nanos / scale
}

fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        // Go accepts both the micro sign (U+00B5) and the Greek letter mu (U+03BC).
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Formats a duration as Go's `time.Duration.String` does (`1h2m3.5s`, `500ms`, `1.5µs`, `0s`), so
/// what cairn prints can be pasted back into a flag or a config file.
pub fn format_duration(d: Duration) -> String {
    const MICRO: u128 = 1_000;
    const MILLI: u128 = 1_000_000;
    const SECOND: u128 = 1_000_000_000;
    const MINUTE: u128 = 60 * SECOND;
    const HOUR: u128 = 60 * MINUTE;
    let nanos = d.as_nanos();
    match nanos {
        0 => "0s".to_owned(),
        n if n < MICRO => format!("{n}ns"),
        n if n < MILLI => format!("{}\u{b5}s", decimal(n, MICRO)),
        n if n < SECOND => format!("{}ms", decimal(n, MILLI)),
        n => {
            let seconds = decimal(n % MINUTE, SECOND);
            match (n / HOUR, n / MINUTE % 60) {
                (0, 0) => format!("{seconds}s"),
                (0, minutes) => format!("{minutes}m{seconds}s"),
                (hours, minutes) => format!("{hours}h{minutes}m{seconds}s"),
            }
        }
    }
}

/// `value / unit` with exactly the fractional digits needed (no trailing zeros), `unit` a power of
/// ten.
fn decimal(value: u128, unit: u128) -> String {
    let (whole, remainder) = (value / unit, value % unit);
    if remainder == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let fraction = format!("{remainder:0width$}");
    format!("{whole}.{}", fraction.trim_end_matches('0'))
}

/// Serde adapter for optional duration fields in config files: a JSON string in Go syntax.
pub(crate) fn deserialize_optional<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let Some(text) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    parse_duration(&text).map(Some).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Each unit Go knows parses to the right length.
    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration("7us"), Ok(Duration::from_micros(7)));
        assert_eq!(parse_duration("7\u{b5}s"), Ok(Duration::from_micros(7)));
        assert_eq!(parse_duration("7\u{3bc}s"), Ok(Duration::from_micros(7)));
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    }

    /// Parts are summed and numbers may carry fractions, as in Go.
    #[test]
    fn parses_concatenations_and_fractions() {
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_duration(".5s"), Ok(ms(500)));
        assert_eq!(parse_duration("1.s"), Ok(ms(1000)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1s500ms"), Ok(ms(1500)));
        assert_eq!(parse_duration("0.000000001s"), Ok(Duration::from_nanos(1)));
        assert_eq!(parse_duration("0.0000000019s"), Ok(Duration::from_nanos(1)), "truncated, not rounded");
    }

    /// A bare zero and a leading plus are accepted, as in Go.
    #[test]
    fn accepts_zero_and_plus() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("+5s"), Ok(Duration::from_secs(5)));
    }

    /// Negative durations, missing units, unknown units and other garbage are refused.
    #[test]
    fn rejects_negatives_and_garbage() {
        for bad in [
            "-1s", "-0", "", "+", "1", "10", "s", ".s", ".", "1.5.5s", "5x", "1 s", " 1s", "1s ", "1sec", "1S", "1h-2m",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    /// Durations longer than Go's limit are refused instead of wrapping around.
    #[test]
    fn rejects_overflow() {
        assert!(parse_duration("2562047h").is_ok());
        assert!(parse_duration("2562048h").is_err());
        assert!(parse_duration("99999999999999999999999999999999999999999h").is_err());
        assert!(parse_duration("2562047h2562047h").is_err());
    }

    /// The formatter prints what Go's `Duration.String` prints.
    #[test]
    fn formats_like_go() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_nanos(7)), "7ns");
        assert_eq!(format_duration(Duration::from_nanos(1_500)), "1.5\u{b5}s");
        assert_eq!(format_duration(ms(500)), "500ms");
        assert_eq!(format_duration(Duration::from_micros(2_250)), "2.25ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format_duration(ms(3_723_500)), "1h2m3.5s");
    }

    proptest! {
        /// Formatting then parsing gives back the same duration, to the nanosecond.
        #[test]
        fn format_then_parse_round_trips(nanos in 0..=i64::MAX as u64) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        /// Small durations round-trip too (the range above rarely lands below a second).
        #[test]
        fn small_durations_round_trip(nanos in 0..10_000_000_000u64) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        /// A concatenation parses to the sum of its parts.
        #[test]
        fn concatenation_is_a_sum(h in 0..1000u64, m in 0..1000u64, s in 0..1000u64, milli in 0..1000u64) {
            let text = format!("{h}h{m}m{s}s{milli}ms");
            let expected = Duration::from_secs(h * 3600 + m * 60 + s) + ms(milli);
            prop_assert_eq!(parse_duration(&text), Ok(expected));
        }

        /// Any positive duration with a minus sign in front is refused.
        #[test]
        fn negatives_are_refused(nanos in 1..=i64::MAX as u64) {
            let text = format!("-{}", format_duration(Duration::from_nanos(nanos)));
            prop_assert!(parse_duration(&text).is_err());
        }

        /// Arbitrary input never panics, and whatever parses is within Go's range.
        #[test]
        fn garbage_never_panics(text in "\\PC{0,24}") {
            if let Ok(d) = parse_duration(&text) {
                prop_assert!(d.as_nanos() <= MAX_NANOS);
            }
        }

        /// Input built from the duration alphabet never panics either (the case above rarely
        /// produces it).
        #[test]
        fn near_miss_input_never_panics(text in "[0-9.+\\-nsuµmh]{0,24}") {
            let _ = parse_duration(&text);
        }
    }
}
