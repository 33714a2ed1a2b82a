//! Local time for quiet hours: the system's time zone files, read here.
//!
//! A time-zone crate would bring its own copy of the database; every
//! machine we run on already has one (`/usr/share/zoneinfo`, or at least
//! `/etc/localtime`). So this reads TZif files (RFC 8536) directly: the
//! 64-bit table of version 2 and later (the 32-bit one of version 1 files),
//! and the POSIX TZ string in the footer for times past the table, which is
//! how zones with daylight saving keep working after the last listed
//! transition. Parsing is pure (bytes in, [`Zone`] out); [`load`] only finds
//! the file. A zone that cannot be read is an error naming it, never a
//! silent UTC.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where IANA names are looked up.
const ZONEINFO: &str = "/usr/share/zoneinfo";

/// A POSIX TZ rule: standard offset, and daylight saving when it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Posix {
    /// Seconds east of UTC in standard time.
    std: i32,
    /// Daylight saving: its offset and the rules that start and end it.
    dst: Option<(i32, Rule, Rule)>,
}

/// When a change happens: a day rule and the local time of day (seconds;
/// may be negative or past 24 h, as RFC 8536 allows).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rule {
    day: Day,
    time: i64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Day {
    /// `Jn`: day 1..=365, February 29 never counted.
    Julian(u16),
    /// `n`: day 0..=365, February 29 counted in leap years.
    Zero(u16),
    /// `Mm.w.d`: month, week 1..=5 (5 = last), weekday 0 = Sunday.
    Month(u8, u8, u8),
}

/// A time zone: UTC offsets over time.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    /// Transition times (unix seconds) and the index of the type from then on.
    transitions: Vec<(i64, usize)>,
    /// UTC offsets (seconds east) of the local time types.
    offsets: Vec<i32>,
    /// For times after the last transition (or a zone without a table).
    footer: Option<Posix>,
}

impl Zone {
    pub fn utc() -> Zone {
        Zone {
            transitions: Vec::new(),
            offsets: vec![0],
            footer: None,
        }
    }

    /// Seconds east of UTC at unix time `t`.
    pub fn offset_at(&self, t: i64) -> i32 {
        let after = self.transitions.partition_point(|(at, _)| *at <= t);
        if after == self.transitions.len() {
            if let Some(p) = &self.footer {
                return p.offset_at(t);
            }
        }
        match after.checked_sub(1) {
            Some(i) => self.offsets[self.transitions[i].1],
            // Before the first transition: the first type, by RFC 8536.
            None => self.offsets.first().copied().unwrap_or(0),
        }
    }

    /// Minutes since local midnight at unix time `t`.
    pub fn minute_of_day(&self, t: i64) -> u32 {
        let local = t + i64::from(self.offset_at(t));
        (local.rem_euclid(86_400) / 60) as u32
    }
}

fn bad(what: &str, why: impl std::fmt::Display) -> Error {
    Error::config("notifications.timezone", format!("{what}: {why}"))
}

/// Parses a TZif file.
pub fn parse_tzif(b: &[u8]) -> std::result::Result<Zone, String> {
    fn be32(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
    }
    struct Header {
        isut: usize,
        isstd: usize,
        leap: usize,
        time: usize,
        types: usize,
        chars: usize,
    }
    let header = |at: usize| -> Option<Header> {
        if b.get(at..at + 4)? != b"TZif" {
            return None;
        }
        let n = |i: usize| be32(b, at + 20 + 4 * i).map(|v| v as usize);
        Some(Header {
            isut: n(0)?,
            isstd: n(1)?,
            leap: n(2)?,
            time: n(3)?,
            types: n(4)?,
            chars: n(5)?,
        })
    };
    let h1 = header(0).ok_or("not a TZif file")?;
    let version = *b.get(4).ok_or("not a TZif file")?;
    let v1_len = h1.time * 5 + h1.types * 6 + h1.chars + h1.leap * 8 + h1.isstd + h1.isut;
    let (h, data, time_size) = if version >= b'2' {
        let at = 44 + v1_len;
        (header(at).ok_or("damaged version 2 header")?, at + 44, 8)
    } else {
        (h1, 44, 4)
    };
    if h.types == 0 {
        return Err("no local time types".into());
    }
    let times_at = data;
    let idx_at = times_at + h.time * time_size;
    let types_at = idx_at + h.time;
    let end = types_at + h.types * 6 + h.chars + h.leap * (time_size + 4) + h.isstd + h.isut;
    if b.len() < end {
        return Err("truncated".into());
    }
    let mut offsets = Vec::with_capacity(h.types);
    for i in 0..h.types {
        let o = be32(b, types_at + 6 * i).ok_or("truncated")? as i32;
        offsets.push(o);
    }
    let mut transitions = Vec::with_capacity(h.time);
    for i in 0..h.time {
        let t = if time_size == 8 {
            i64::from_be_bytes(
                b[times_at + 8 * i..times_at + 8 * i + 8]
                    .try_into()
                    .unwrap_or([0; 8]),
            )
        } else {
            i64::from(be32(b, times_at + 4 * i).ok_or("truncated")? as i32)
        };
        let ty = usize::from(b[idx_at + i]);
        if ty >= h.types {
            return Err("a transition names a type that does not exist".into());
        }
        transitions.push((t, ty));
    }
    let footer = if version >= b'2' {
        let rest = &b[end..];
        let text = std::str::from_utf8(rest).map_err(|_| "footer is not text")?;
        let s = text.trim_matches('\n');
        if s.is_empty() {
            None
        } else {
            Some(parse_posix(s)?)
        }
    } else {
        None
    };
    Ok(Zone {
        transitions,
        offsets,
        footer,
    })
}

/// Parses a POSIX TZ string such as `CET-1CEST,M3.5.0,M10.5.0/3`.
pub fn parse_posix(s: &str) -> std::result::Result<Posix, String> {
    let b = s.as_bytes();
    let mut i = 0;
    let name = |i: &mut usize| -> std::result::Result<(), String> {
        if b.get(*i) == Some(&b'<') {
            match s[*i..].find('>') {
                Some(e) => *i += e + 1,
                None => return Err(format!("unclosed <name> in TZ string {s:?}")),
            }
        } else {
            let start = *i;
            while *i < b.len() && b[*i].is_ascii_alphabetic() {
                *i += 1;
            }
            if *i - start < 3 {
                return Err(format!("no zone name in TZ string {s:?}"));
            }
        }
        Ok(())
    };
    // [+-]hh[:mm[:ss]] in seconds.
    let clock = |i: &mut usize| -> Option<i64> {
        let neg = match b.get(*i) {
            Some(b'-') => {
                *i += 1;
                true
            }
            Some(b'+') => {
                *i += 1;
                false
            }
            _ => false,
        };
        let mut total = 0i64;
        for (k, scale) in [3600i64, 60, 1].into_iter().enumerate() {
            if k > 0 {
                if b.get(*i) != Some(&b':') {
                    break;
                }
                *i += 1;
            }
            let start = *i;
            while *i < b.len() && b[*i].is_ascii_digit() {
                *i += 1;
            }
            if *i == start || *i - start > 3 {
                return None;
            }
            total += s[start..*i].parse::<i64>().ok()? * scale;
        }
        Some(if neg { -total } else { total })
    };
    name(&mut i)?;
    let std = -clock(&mut i).ok_or_else(|| format!("no UTC offset in TZ string {s:?}"))?;
    if i == b.len() {
        return Ok(Posix {
            std: std as i32,
            dst: None,
        });
    }
    name(&mut i)?;
    let mut dst = std + 3600;
    if i < b.len() && b[i] != b',' {
        dst = -clock(&mut i).ok_or_else(|| format!("bad daylight offset in TZ string {s:?}"))?;
    }
    let rule = |i: &mut usize| -> Option<Rule> {
        if b.get(*i) != Some(&b',') {
            return None;
        }
        *i += 1;
        let num = |i: &mut usize| -> Option<u16> {
            let start = *i;
            while *i < b.len() && b[*i].is_ascii_digit() {
                *i += 1;
            }
            s.get(start..*i)?.parse().ok()
        };
        let day = match b.get(*i)? {
            b'J' => {
                *i += 1;
                Day::Julian(num(i).filter(|n| (1..=365).contains(n))?)
            }
            b'M' => {
                *i += 1;
                let m = num(i).filter(|n| (1..=12).contains(n))?;
                (b.get(*i) == Some(&b'.')).then_some(())?;
                *i += 1;
                let w = num(i).filter(|n| (1..=5).contains(n))?;
                (b.get(*i) == Some(&b'.')).then_some(())?;
                *i += 1;
                let d = num(i).filter(|n| *n <= 6)?;
                Day::Month(m as u8, w as u8, d as u8)
            }
            _ => Day::Zero(num(i).filter(|n| *n <= 365)?),
        };
        let mut time = 7200;
        if b.get(*i) == Some(&b'/') {
            *i += 1;
            time = clock(i)?;
        }
        Some(Rule { day, time })
    };
    let bad_rule = || format!("bad daylight saving rule in TZ string {s:?}");
    // Without rules POSIX leaves the dates to the implementation; US rules
    // are the traditional default.
    let (start, end) = if i == b.len() {
        (
            Rule {
                day: Day::Month(3, 2, 0),
                time: 7200,
            },
            Rule {
                day: Day::Month(11, 1, 0),
                time: 7200,
            },
        )
    } else {
        let start = rule(&mut i).ok_or_else(bad_rule)?;
        let end = rule(&mut i).ok_or_else(bad_rule)?;
        (start, end)
    };
    if i != b.len() {
        return Err(bad_rule());
    }
    Ok(Posix {
        std: std as i32,
        dst: Some((dst as i32, start, end)),
    })
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn year_of_days(days: i64) -> i64 {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(m <= 2)
}

fn leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

impl Rule {
    /// Local seconds since the epoch (in the offset in force before the
    /// change) at which this rule fires in `year`.
    fn local_at(&self, year: i64) -> i64 {
        let jan1 = days_from_civil(year, 1, 1);
        let day = match self.day {
            Day::Julian(n) => {
                let n = i64::from(n);
                jan1 + n - 1 + i64::from(leap(year) && n >= 60)
            }
            Day::Zero(n) => jan1 + i64::from(n),
            Day::Month(m, w, d) => {
                let first = days_from_civil(year, u32::from(m), 1);
                // 1970-01-01 was a Thursday (4).
                let wd_first = (first + 4).rem_euclid(7);
                let mut day =
                    first + (i64::from(d) - wd_first).rem_euclid(7) + 7 * (i64::from(w) - 1);
                let next = if m == 12 {
                    days_from_civil(year + 1, 1, 1)
                } else {
                    days_from_civil(year, u32::from(m) + 1, 1)
                };
                while day >= next {
                    day -= 7;
                }
                day
            }
        };
        day * 86_400 + self.time
    }
}

impl Posix {
    pub fn offset_at(&self, t: i64) -> i32 {
        let Some((dst, start, end)) = self.dst else {
            return self.std;
        };
        let year = year_of_days((t + i64::from(self.std)).div_euclid(86_400));
        // Start is given in standard time, end in daylight time.
        let on = start.local_at(year) - i64::from(self.std);
        let off = end.local_at(year) - i64::from(dst);
        let in_dst = if on < off {
            on <= t && t < off
        } else {
            // Southern hemisphere: daylight saving spans the new year.
            !(off <= t && t < on)
        };
        if in_dst {
            dst
        } else {
            self.std
        }
    }
}

/// Whether `name` is an IANA zone name we may look up (no way out of
/// the zoneinfo directory).
pub fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"/_-+".contains(&c))
}

fn read_zone(path: &Path, what: &str) -> Result<Zone> {
    let bytes = std::fs::read(path).map_err(|e| bad(what, format!("{}: {e}", path.display())))?;
    parse_tzif(&bytes).map_err(|why| bad(what, format!("{}: {why}", path.display())))
}

/// The zone a setting names: an IANA name; `""` is `$TZ` (a name, a path
/// after `:`, or a POSIX string), else `/etc/localtime`, else UTC.
pub fn load(name: &str, env_tz: Option<&str>) -> Result<Zone> {
    if !name.is_empty() {
        if !name_ok(name) {
            return Err(bad(
                &format!("\"{name}\""),
                "expected an IANA time zone name such as \"Europe/Berlin\"",
            ));
        }
        return read_zone(&Path::new(ZONEINFO).join(name), &format!("\"{name}\""));
    }
    if let Some(tz) = env_tz.map(str::trim).filter(|t| !t.is_empty()) {
        let tz = tz.strip_prefix(':').unwrap_or(tz);
        let path = if tz.starts_with('/') {
            PathBuf::from(tz)
        } else if name_ok(tz) {
            Path::new(ZONEINFO).join(tz)
        } else {
            PathBuf::new()
        };
        if let Ok(z) = read_zone(&path, "$TZ") {
            return Ok(z);
        }
        return parse_posix(tz)
            .map(|p| Zone {
                transitions: Vec::new(),
                offsets: vec![p.std],
                footer: Some(p),
            })
            .map_err(|why| bad(&format!("$TZ={tz:?}"), why));
    }
    match std::fs::read("/etc/localtime") {
        Ok(b) => parse_tzif(&b).map_err(|why| bad("/etc/localtime", why)),
        Err(_) => Ok(Zone::utc()),
    }
}

/// A daily window of local time, in minutes since midnight: `[from, to)`,
/// wrapping past midnight when `to <= from`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub from: u32,
    pub to: u32,
}

impl Window {
    /// Parses `"22:00-07:00"`.
    pub fn parse(s: &str) -> Option<Window> {
        let hm = |p: &str| -> Option<u32> {
            let (h, m) = p.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60 && p.trim().len() <= 5).then_some(h * 60 + m)
        };
        let (a, b) = s.split_once('-')?;
        Some(Window {
            from: hm(a)?,
            to: hm(b)?,
        })
    }

    pub fn contains(&self, minute: u32) -> bool {
        if self.from < self.to {
            self.from <= minute && minute < self.to
        } else if self.from > self.to {
            minute >= self.from || minute < self.to
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix seconds of a UTC civil time.
    fn utc(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> i64 {
        days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60
    }

    fn zone(name: &str) -> Zone {
        load(name, None).unwrap_or_else(|e| panic!("{e} (is Debian's tzdata installed?)"))
    }

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(year_of_days(days_from_civil(2026, 12, 31)), 2026);
        assert_eq!(year_of_days(days_from_civil(2027, 1, 1)), 2027);
    }

    #[test]
    fn berlin_changes_at_one_utc_on_the_last_sundays() {
        let z = zone("Europe/Berlin");
        // 2026: summer time from 29 March 01:00 UTC to 25 October 01:00 UTC.
        assert_eq!(z.offset_at(utc(2026, 3, 29, 0, 59)), 3600);
        assert_eq!(z.offset_at(utc(2026, 3, 29, 1, 0)), 7200);
        assert_eq!(z.offset_at(utc(2026, 10, 25, 0, 59)), 7200);
        assert_eq!(z.offset_at(utc(2026, 10, 25, 1, 0)), 3600);
        // Far past the table: the footer's rule (2100: 28 March, 31 October).
        assert_eq!(z.offset_at(utc(2100, 3, 28, 0, 59)), 3600);
        assert_eq!(z.offset_at(utc(2100, 3, 28, 1, 0)), 7200);
        assert_eq!(z.offset_at(utc(2100, 10, 31, 1, 0)), 3600);
    }

    #[test]
    fn new_york_changes_at_two_local_on_us_sundays() {
        let z = zone("America/New_York");
        // 2026: 8 March 07:00 UTC (02:00 EST), 1 November 06:00 UTC (02:00 EDT).
        assert_eq!(z.offset_at(utc(2026, 3, 8, 6, 59)), -5 * 3600);
        assert_eq!(z.offset_at(utc(2026, 3, 8, 7, 0)), -4 * 3600);
        assert_eq!(z.offset_at(utc(2026, 11, 1, 5, 59)), -4 * 3600);
        assert_eq!(z.offset_at(utc(2026, 11, 1, 6, 0)), -5 * 3600);
    }

    #[test]
    fn quiet_hours_follow_local_time_across_a_dst_change() {
        let z = zone("Europe/Berlin");
        let w = Window::parse("22:00-07:00").unwrap();
        let quiet = |t: i64| w.contains(z.minute_of_day(t));
        // Winter: 07:00 local is 06:00 UTC.
        assert!(quiet(utc(2026, 3, 28, 5, 59)));
        assert!(!quiet(utc(2026, 3, 28, 6, 0)));
        // The night the clocks go forward: 07:00 local is 05:00 UTC.
        assert!(quiet(utc(2026, 3, 29, 4, 59)));
        assert!(!quiet(utc(2026, 3, 29, 5, 0)));
        // 22:00 local in summer is 20:00 UTC; in winter 21:00 UTC.
        assert!(quiet(utc(2026, 7, 1, 20, 0)));
        assert!(!quiet(utc(2026, 7, 1, 19, 59)));
        assert!(!quiet(utc(2026, 10, 25, 20, 59)));
        assert!(quiet(utc(2026, 10, 25, 21, 0)));
        // The night they go back: quiet ends at 07:00 CET = 06:00 UTC.
        assert!(quiet(utc(2026, 10, 25, 5, 59)));
        assert!(!quiet(utc(2026, 10, 25, 6, 0)));
    }

    #[test]
    fn posix_strings_alone() {
        let p = parse_posix("EST5EDT,M3.2.0,M11.1.0").unwrap();
        assert_eq!(p.offset_at(utc(2031, 3, 9, 6, 59)), -5 * 3600);
        assert_eq!(p.offset_at(utc(2031, 3, 9, 7, 0)), -4 * 3600);
        // Southern hemisphere: Sydney, daylight saving over the new year.
        let p = parse_posix("AEST-10AEDT,M10.1.0,M4.1.0/3").unwrap();
        assert_eq!(p.offset_at(utc(2031, 1, 15, 0, 0)), 11 * 3600);
        assert_eq!(p.offset_at(utc(2031, 7, 15, 0, 0)), 10 * 3600);
        assert_eq!(parse_posix("<+03>-3").unwrap().offset_at(0), 3 * 3600);
        assert!(parse_posix("nonsense").is_err());
        assert!(parse_posix("CET-1CEST,M3.5.0").is_err());
    }

    #[test]
    fn windows_and_names() {
        let w = Window::parse("09:30-17:00").unwrap();
        assert!(w.contains(9 * 60 + 30) && !w.contains(17 * 60) && !w.contains(0));
        assert!(Window::parse("25:00-07:00").is_none());
        assert!(Window::parse("22:00").is_none());
        assert!(!name_ok("../etc/passwd") && !name_ok("/etc/x") && name_ok("Etc/GMT+5"));
        assert!(load("Nowhere/City", None).is_err());
        assert_eq!(load("", Some("UTC0")).unwrap().offset_at(0), 0);
    }
}
