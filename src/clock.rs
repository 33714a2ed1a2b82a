//! Wall-clock time as the formats on the wire want it.
//!
//! Persisted times (`not_before`, the duplicate memory) are unix
//! milliseconds, so they survive restarts; ISO 8601 strings are made here
//! without a date crate because one civil-date conversion is all we need.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `2026-11-29T06:50:02.000Z` for a unix-milliseconds instant.
pub fn iso8601(ms: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(ms / 1000);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        ms % 1000
    )
}

/// `20261129_065002`, the stamp in response file names (CONTRACT section 5).
pub fn compact_stamp(ms: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(ms / 1000);
    format!("{y:04}{mo:02}{d:02}_{h:02}{mi:02}{s:02}")
}

/// `06:50 UTC` for a message footer.
pub fn hh_mm(ms: u64) -> String {
    let (_, _, _, h, mi, _) = civil(ms / 1000);
    format!("{h:02}:{mi:02} UTC")
}

/// Year, month, day, hour, minute, second in UTC (Howard Hinnant's
/// days-to-civil algorithm).
fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        // 2026-11-29T06:50:02.123Z
        assert_eq!(iso8601(1_795_935_002_123), "2026-11-29T06:50:02.123Z");
        assert_eq!(compact_stamp(1_795_935_002_123), "20261129_065002");
        // A leap day.
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
