//! Wall-clock time as the formats on the wire want it, and ages that
//! survive the clock being wrong.
//!
//! Persisted times (`not_before`, the duplicate memory) are unix
//! milliseconds, so they survive restarts; ISO 8601 strings are made here
//! without a date crate because one civil-date conversion is all we need.
//!
//! A device without a real-time clock boots in 1970 and jumps forward by
//! decades when NTP syncs. Ages are therefore taken with [`age_ms`], never
//! by subtracting: a forward jump seen while running is not counted as time
//! that passed, and a time recorded before any plausible date (an earlier
//! boot without a clock) counts as just now. So the 24-hour duplicate
//! memory, approval expiries and retention do not all fire at once when
//! the clock is set; retry times in the past are simply due.

use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// 2026-01-01T00:00:00Z: no real clock reads earlier than this code.
pub const PLAUSIBLE_MS: u64 = 1_767_225_600_000;

/// A wall-clock step bigger than this, against the monotonic clock, is a
/// jump (NTP, a person with `date -s`), not drift.
const JUMP_MS: u64 = 60_000;

/// Where the wall clock stood against the monotonic clock, and the forward
/// jumps seen: `(wall before, wall after)`.
struct Watch {
    base: Option<(Instant, u64)>,
    jumps: Vec<(u64, u64)>,
}

static WATCH: Mutex<Watch> = Mutex::new(Watch {
    base: None,
    jumps: Vec::new(),
});

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Milliseconds since the unix epoch, noting any jump of the wall clock.
pub fn now_ms() -> u64 {
    let wall = wall_ms();
    let mono = Instant::now();
    let mut w = WATCH.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((m0, w0)) = w.base {
        let expected = w0 + mono.saturating_duration_since(m0).as_millis() as u64;
        if wall > expected + JUMP_MS {
            log::warn!(
                "the system clock jumped forward by {} s (from {} to {}); ages and expiries do not count the jump",
                (wall - expected) / 1000,
                iso8601(expected),
                iso8601(wall)
            );
            if w.jumps.len() < 64 {
                w.jumps.push((expected, wall));
            }
        } else if wall + JUMP_MS < expected {
            log::warn!(
                "the system clock jumped back by {} s, to {}",
                (expected - wall) / 1000,
                iso8601(wall)
            );
        } else {
            return wall;
        }
    }
    w.base = Some((mono, wall));
    wall
}

/// Whether the wall clock reads a plausible date (it does not after a boot
/// without a real-time clock, until NTP has synced).
pub fn plausible(now: u64) -> bool {
    now >= PLAUSIBLE_MS
}

/// How long ago `at` was, as of `now`: forward jumps of the clock seen
/// between them do not count, a time from before any plausible date counts
/// as just now once the clock is right, and a time in the future is 0 old.
pub fn age_ms(at: u64, now: u64) -> u64 {
    if !plausible(at) && plausible(now) {
        return 0;
    }
    let w = WATCH.lock().unwrap_or_else(|p| p.into_inner());
    age_with(&w.jumps, at, now)
}

fn age_with(jumps: &[(u64, u64)], at: u64, now: u64) -> u64 {
    let skipped: u64 = jumps
        .iter()
        .filter(|(before, after)| at <= *before && *after <= now)
        .map(|(before, after)| after - before)
        .sum();
    now.saturating_sub(at).saturating_sub(skipped)
}

/// Whether `span_ms` has passed since `at` ([`age_ms`]'s rules).
pub fn passed(at: u64, span_ms: u64, now: u64) -> bool {
    age_ms(at, now) >= span_ms
}

/// How long until `span_ms` after `at` ([`age_ms`]'s rules).
pub fn remaining_ms(at: u64, span_ms: u64, now: u64) -> u64 {
    span_ms.saturating_sub(age_ms(at, now))
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

    const DAY: u64 = 86_400_000;

    #[test]
    fn a_jump_from_1970_does_not_age_what_came_before() {
        // Booted at 1970 + 10 min, NTP set the clock at 1970 + 20 min.
        let before = 20 * 60_000;
        let after = PLAUSIBLE_MS + 300 * DAY;
        let jumps = [(before, after)];
        let accepted = 10 * 60_000;
        // One hour after the jump the event is 1 h 10 min old, not 57 years.
        let age = age_with(&jumps, accepted, after + 3_600_000);
        assert_eq!(age, 3_600_000 + 10 * 60_000);
        // Something recorded after the jump ages normally.
        assert_eq!(age_with(&jumps, after + 1, after + 1001), 1000);
    }

    #[test]
    fn times_from_a_clockless_boot_count_as_now_and_the_future_as_zero() {
        let now = PLAUSIBLE_MS + 5 * DAY;
        assert_eq!(age_ms(5 * 60_000, now), 0);
        assert!(!passed(5 * 60_000, DAY, now));
        assert_eq!(age_ms(now + DAY, now), 0);
        assert_eq!(age_ms(now - DAY, now), DAY);
        assert_eq!(remaining_ms(now - 1000, 5000, now), 4000);
    }

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
