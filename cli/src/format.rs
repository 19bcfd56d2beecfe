//! Formatting for people: times, durations, tables.

use std::io::IsTerminal;

/// `1.25 s`, `350 ms`, `2 min 5 s`, `1 h 2 min`.
pub fn duration_ns(ns: u64) -> String {
    let ms = ns / 1_000_000;
    if ms < 1000 {
        return format!("{ms} ms");
    }
    let secs = ns as f64 / 1e9;
    if secs < 60.0 {
        return format!("{secs:.2} s");
    }
    let s = secs as u64;
    if s < 3600 {
        return format!("{} min {} s", s / 60, s % 60);
    }
    format!("{} h {} min", s / 3600, (s % 3600) / 60)
}

/// UTC date and time of day, `2026-11-28 14:03:07.123`.
pub fn timestamp(unix_nano: u64) -> String {
    let secs = (unix_nano / 1_000_000_000) as i64;
    let ms = (unix_nano / 1_000_000) % 1000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{ms:03}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Time of day only, `14:03:07.123` (UTC).
pub fn time_of_day(unix_nano: u64) -> String {
    timestamp(unix_nano)[11..].to_string()
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
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

/// The last 8 characters of an id, for tables: UUIDv7s share their leading (time) digits,
/// their random tail tells them apart.
pub fn short(id: &str) -> &str {
    let mut start = id.len().saturating_sub(8);
    while !id.is_char_boundary(start) {
        start += 1;
    }
    &id[start..]
}

/// `n` and the noun for it: "1 task", "2 tasks" (`noun` is the singular; an `s` makes the
/// plural).
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// How much of one value a text line shows before eliding the rest.
pub const MAX_SHOWN: usize = 2000;

/// Text that came from a guest or a client, made safe for a terminal: control and format
/// characters escaped, at most [`MAX_SHOWN`] bytes of it shown. JSON output never goes
/// through this.
pub fn safe(text: &str) -> String {
    safe_max(text, MAX_SHOWN)
}

/// [`safe`] with another length.
pub fn safe_max(text: &str, max: usize) -> String {
    tessera_api::limits::escape(text, max)
}

/// Whether stdout is a terminal (colour, progress bars).
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Prints rows as a left-aligned table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// Escapes every cell of rows whose cells came from guests or clients (see [`safe`]).
pub fn safe_rows(rows: Vec<Vec<String>>, max: usize) -> Vec<Vec<String>> {
    rows.into_iter()
        .map(|r| r.into_iter().map(|c| safe_max(&c, max)).collect())
        .collect()
}

/// Prints a value as pretty JSON.
pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(count(1u64, "task"), "1 task");
        assert_eq!(count(0u64, "runner"), "0 runners");
        assert_eq!(count(2u32, "span"), "2 spans");
    }

    #[test]
    fn formats_times_and_durations() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00.000");
        assert_eq!(
            timestamp(1_795_000_000_123_000_000),
            "2026-11-18 11:06:40.123"
        );
        assert_eq!(duration_ns(350_000_000), "350 ms");
        assert_eq!(duration_ns(1_250_000_000), "1.25 s");
        assert_eq!(duration_ns(125_000_000_000), "2 min 5 s");
        assert_eq!(short("01a2203a-74fa-716b-9b19-628277044f80"), "77044f80");
        assert_eq!(short("abc"), "abc");
    }
}
