//! Small helpers shared by the subcommands: sizes and durations on the command line,
//! byte counts for people, latency histograms.

use std::time::Duration;

use hdrhistogram::{CreationError, Histogram};

/// Parses `4096`, `64K`, `16MiB`, `1G`, `1.5M` (binary units: K is 1024, with or without
/// `i` and `B`); a clap value parser.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let bytes = parse_size::Config::new()
        .with_binary()
        .parse_size(s.trim())
        .map_err(|e| match e {
            parse_size::Error::PosOverflow => format!("{s:?} is too large"),
            _ => format!(
                "{s:?} is not a size: give a number and optionally a unit (B, K, M or G), \
                 e.g. 4096, 64K, 16MiB"
            ),
        })?;
    usize::try_from(bytes).map_err(|_| format!("{s:?} is too large"))
}

/// Parses `500ms`, `2s`, `1.5s`, `250us`, `1min` (a bare number is seconds), above 0 and
/// at most an hour; a clap value parser.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let with_unit = if t.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{t}s")
    } else {
        t.to_owned()
    };
    let d = humantime::parse_duration(&with_unit)
        .map_err(|e| format!("{s:?} is not a duration ({e}); try 500ms, 2s"))?;
    if d.is_zero() || d > Duration::from_secs(3600) {
        return Err(format!(
            "{s:?}: give a duration above 0 and at most an hour"
        ));
    }
    Ok(d)
}

/// `1.5 MiB`-style rendering.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Longest latency a histogram holds; longer ones are recorded as this.
const MAX_LATENCY: Duration = Duration::from_secs(3600);

/// A histogram of latencies in nanoseconds, from 1 ns to an hour, with 3 significant
/// digits (values below 2048 ns exact, larger ones within 0.1 %), sized up front so that
/// recording never allocates.
pub fn latency_histogram() -> Result<Histogram<u64>, CreationError> {
    Histogram::new_with_bounds(1, nanos(MAX_LATENCY), 3)
}

/// `d` in nanoseconds (saturating).
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes accept binary units and reject garbage with a message.
    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64kb"), Ok(64 << 10));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size(" 1 G "), Ok(1 << 30));
        assert_eq!(parse_size("8 B"), Ok(8));
        assert!(parse_size("12Q").unwrap_err().contains("unit"));
        assert!(parse_size("abc").is_err());
        assert!(parse_size("99999999999G")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size("").is_err());
    }

    /// Durations parse with and without a unit, and bad ones are refused with a message.
    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("1min"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("2h")
            .unwrap_err()
            .contains("at most an hour"));
        assert!(parse_duration("1 fortnight").is_err());
    }

    /// Percentiles pick by rank, exact below 2048 ns.
    #[test]
    fn percentiles() {
        let mut h = latency_histogram().unwrap();
        for ns in 1..=100 {
            h.record(ns).unwrap();
        }
        assert_eq!(h.value_at_quantile(0.5), 50);
        assert_eq!(h.value_at_quantile(0.99), 99);
        assert_eq!(h.min(), 1);
        let empty = latency_histogram().unwrap();
        assert_eq!(empty.value_at_quantile(0.99), 0);
        h.saturating_record(nanos(Duration::from_secs(7200)));
        assert!(h.max() >= nanos(MAX_LATENCY));
    }
}
