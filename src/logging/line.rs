//! The access line, formatted without tracing-subscriber's general machinery.
//!
//! One access line per request is the one log line on the hot path. tracing-subscriber
//! formats it the general way: `write!` through `core::fmt` for every part, a style
//! object painted around every field name and `=` even with colour off, the field
//! visitor's `Debug` of each value (~10 k instructions a line, most of the access log's
//! cost). [`Fast`] wraps tracing-subscriber's own formatter and writes events of
//! [`ACCESS_TARGET`] itself, byte for byte as that formatter would (the compact and the
//! flattened JSON form; `tests` compare the two on the same events); every other
//! event, and the access line on a colour terminal or inside a span, goes to the
//! wrapped formatter unchanged.

use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The target of the access line (`rotagate::access`).
pub const ACCESS_TARGET: &str = "rotagate::access";

/// Which of tracing-subscriber's formats the line is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `fmt::format::Compact`: `TIME LEVEL target: message k=v k=v`.
    Compact,
    /// `fmt::format::Json` with `flatten_event(true)`.
    Json,
}

/// An event formatter: the access line written here, everything else by `inner`.
#[derive(Debug)]
pub struct Fast<F> {
    inner: F,
    form: Form,
}

impl<F> Fast<F> {
    /// Wraps `inner`, which must be tracing-subscriber's formatter of `form` with its
    /// defaults (the layer's `compact()` or `json().flatten_event(true)`).
    pub fn new(inner: F, form: Form) -> Fast<F> {
        Fast { inner, form }
    }
}

impl<S, N, F> FormatEvent<S, N> for Fast<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // colours and span context are what the wrapped formatter adds around the
        // fields; the access line has neither in production (no spans, no terminal
        // for a log shipper), and where it does, the general path is exact
        let plain = event.metadata().target() == ACCESS_TARGET
            && !writer.has_ansi_escapes()
            && event.parent().is_none()
            && ctx.lookup_current().is_none();
        if plain && write_line(self.form, SystemTime::now(), &mut writer, event)? {
            #[cfg(test)]
            FAST_LINES.with(|n| n.set(n.get() + 1));
            return Ok(());
        }
        self.inner.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
thread_local! {
    /// Lines this thread wrote by the fast path (tests check it is the one taken).
    pub static FAST_LINES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Writes `event` as tracing-subscriber's `form` writes it at time `now`, without span
/// context or colour. `Ok(false)` (nothing written): a time the fast path does not
/// spell (before 1970, after 9999), left to the general formatter.
fn write_line<W: Write>(
    form: Form,
    now: SystemTime,
    w: &mut W,
    event: &Event<'_>,
) -> Result<bool, fmt::Error> {
    let Some(stamp) = Timestamp::of(now) else {
        return Ok(false);
    };
    let meta = event.metadata();
    match form {
        Form::Compact => {
            w.write_str(stamp.as_str())?;
            w.write_char(' ')?;
            w.write_str(level_padded(meta.level()))?;
            w.write_char(' ')?;
            w.write_str(meta.target())?;
            w.write_str(": ")?;
            let mut v = CompactFields {
                w,
                result: Ok(()),
                first: true,
            };
            event.record(&mut v);
            v.result?;
            v.w.write_char('\n')?;
        }
        Form::Json => {
            w.write_str("{\"timestamp\":\"")?;
            w.write_str(stamp.as_str())?;
            w.write_str("\",\"level\":\"")?;
            w.write_str(meta.level().as_str())?;
            w.write_char('"')?;
            let mut v = JsonFields { w, result: Ok(()) };
            event.record(&mut v);
            v.result?;
            v.w.write_str(",\"target\":")?;
            json_str(v.w, meta.target())?;
            v.w.write_str("}\n")?;
        }
    }
    Ok(true)
}

/// The compact format's level column (`pad` of its level names, right-aligned to 5).
fn level_padded(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

/// tracing-subscriber's `DefaultVisitor` (compact fields): `message` bare, others
/// `name=value` with the value's `Debug`, separated by one space.
struct CompactFields<'w, W> {
    w: &'w mut W,
    result: fmt::Result,
    first: bool,
}

impl<W: Write> CompactFields<'_, W> {
    /// The space before every field but the first.
    fn separate(&mut self) -> fmt::Result {
        if std::mem::take(&mut self.first) {
            Ok(())
        } else {
            self.w.write_char(' ')
        }
    }

    /// The separator and `name=` of a field other than `message`.
    fn start(&mut self, field: &Field) -> fmt::Result {
        self.separate()?;
        let name = field.name();
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.w.write_str(name)?;
        self.w.write_char('=')
    }

    fn message(&mut self, value: fmt::Arguments<'_>) -> fmt::Result {
        self.separate()?;
        // the wrapped formatter escapes terminal control characters in the message
        write!(Sanitised(self.w), "{value}")
    }

    /// An integer field, as its `Debug` spells it (decimal).
    fn integer(&mut self, field: &Field, value: impl itoa::Integer) {
        if self.result.is_ok() {
            self.result = self
                .start(field)
                .and_then(|()| self.w.write_str(itoa::Buffer::new().format(value)));
        }
    }
}

impl<W: Write> Visit for CompactFields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        self.result = if field.name() == "message" {
            self.message(format_args!("{value}"))
        } else {
            self.start(field).and_then(|()| debug_str(self.w, value))
        };
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.integer(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.integer(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        self.result = if field.name() == "message" {
            self.message(format_args!("{value:?}"))
        } else {
            self.start(field).and_then(|()| write!(self.w, "{value:?}"))
        };
    }
}

/// `Debug` of a `str` (quoted, escaped), without `core::fmt` for the usual plain value.
fn debug_str<W: Write>(w: &mut W, s: &str) -> fmt::Result {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        w.write_char('"')?;
        w.write_str(s)?;
        w.write_char('"')
    } else {
        write!(w, "{s:?}")
    }
}

/// tracing-subscriber's `EscapeGuard` writer: terminal control characters in the
/// message written as escapes.
struct Sanitised<'w, W>(&'w mut W);

impl<W: Write> Write for Sanitised<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, ch) in s.char_indices() {
            let esc = match ch {
                '\x1b' => "\\x1b",
                '\x07' => "\\x07",
                '\x08' => "\\x08",
                '\x0c' => "\\x0c",
                '\x7f' => "\\x7f",
                '\u{80}'..='\u{9f}' => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if esc.is_empty() {
                write!(self.0, "\\u{{{:x}}}", ch as u32)?;
            } else {
                self.0.write_str(esc)?;
            }
            plain = i + ch.len_utf8();
        }
        self.0.write_str(&s[plain..])
    }
}

/// tracing-serde's map visitor under serde_json: `,"name":value`, strings and `Debug`
/// output as JSON strings, numbers as JSON numbers (non-finite floats as `null`).
struct JsonFields<'w, W> {
    w: &'w mut W,
    result: fmt::Result,
}

impl<W: Write> JsonFields<'_, W> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        self.w.write_char(',')?;
        json_str(self.w, field.name())?;
        self.w.write_char(':')
    }

    fn field(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| value(self.w));
        }
    }
}

impl<W: Write> Visit for JsonFields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |w| json_str(w, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(field, |w| json_f64(w, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |w| {
            w.write_char('"')?;
            write!(JsonEscaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// An `f64` as serde_json writes it: zmij's shortest digits, `null` if not finite.
fn json_f64<W: Write>(w: &mut W, v: f64) -> fmt::Result {
    if v.is_finite() {
        w.write_str(zmij::Buffer::new().format_finite(v))
    } else {
        w.write_str("null")
    }
}

/// A JSON string as serde_json writes it.
fn json_str<W: Write>(w: &mut W, s: &str) -> fmt::Result {
    w.write_char('"')?;
    JsonEscaped(w).write_str(s)?;
    w.write_char('"')
}

/// serde_json's string escaping: `"` and `\`, the short forms `\b \f \n \r \t`, other
/// control characters as `\u00XX`; everything else as it is.
struct JsonEscaped<'w, W>(&'w mut W);

impl<W: Write> Write for JsonEscaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut plain = 0;
        for (i, b) in s.bytes().enumerate() {
            let short = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                0x08 => "\\b",
                0x0c => "\\f",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if short.is_empty() {
                self.0.write_str("\\u00")?;
                self.0.write_char(char::from(HEX[usize::from(b >> 4)]))?;
                self.0.write_char(char::from(HEX[usize::from(b & 0xf)]))?;
            } else {
                self.0.write_str(short)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, UTC, as tracing-subscriber's `SystemTime` timer
/// spells it for years 1970 to 9999.
struct Timestamp([u8; 27]);

impl Timestamp {
    /// The timestamp of `t`; `None` before 1970 or after 9999.
    fn of(t: SystemTime) -> Option<Timestamp> {
        let since = t.duration_since(UNIX_EPOCH).ok()?;
        let secs = since.as_secs();
        let (y, m, d) = civil_from_days(secs / 86_400);
        if y > 9999 {
            return None;
        }
        let in_day = secs % 86_400;
        let mut b = *b"0000-00-00T00:00:00.000000Z";
        let put = |b: &mut [u8; 27], at: usize, width: usize, mut v: u64| {
            for i in (at..at + width).rev() {
                // v % 10 < 10: the cast keeps the digit
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(&mut b, 0, 4, y);
        put(&mut b, 5, 2, m);
        put(&mut b, 8, 2, d);
        put(&mut b, 11, 2, in_day / 3600);
        put(&mut b, 14, 2, in_day / 60 % 60);
        put(&mut b, 17, 2, in_day % 60);
        put(&mut b, 20, 6, u64::from(since.subsec_micros()));
        Some(Timestamp(b))
    }

    /// The spelled timestamp.
    fn as_str(&self) -> &str {
        // only ASCII digits and separators are ever written into it
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Against a calendar walked day by day from 1970 (an independent oracle): every
    /// day to 2200, and the last day the fast path spells.
    #[test]
    fn civil_dates_match_a_walked_calendar() {
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let (mut y, mut m, mut d) = (1970, 1, 1);
        for days in 0..(231 * 366) {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > len {
                (d, m) = (1, m + 1);
                if m > 12 {
                    (m, y) = (1, y + 1);
                }
            }
        }
        assert_eq!(civil_from_days(2_932_896), (9999, 12, 31));
    }

    /// `json_f64` spells every value as serde_json does: odd values, non-finite ones,
    /// and a sweep of magnitudes with pseudo-random digits.
    #[test]
    fn floats_are_spelled_as_serde_json_spells_them() {
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            0.5,
            1e-4,
            9.999_999_999_999_999e-5,
            1e16,
            9_999_999_999_999_998.0,
            0.1 + 0.2,
            1.0 / 3.0,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            1e-7,
            123_456.789,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for e in -30..30 {
            for _ in 0..200 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let mantissa = 1.0 + (x >> 11) as f64 / (1u64 << 53) as f64;
                values.push(mantissa * 10f64.powi(e));
                values.push(-mantissa * 10f64.powi(e));
            }
        }
        for v in values {
            let mut ours = String::new();
            json_f64(&mut ours, v).unwrap();
            assert_eq!(ours, serde_json::to_string(&v).unwrap(), "{v:e}");
        }
    }

    #[test]
    fn timestamps_are_spelled_as_rfc3339_micros() {
        let at = |s: u64, us: u64| {
            Timestamp::of(UNIX_EPOCH + Duration::from_secs(s) + Duration::from_micros(us))
                .map(|t| t.as_str().to_string())
        };
        assert_eq!(at(0, 0).unwrap(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_825_599, 7).unwrap(), "2000-02-29T11:59:59.000007Z");
        assert_eq!(
            at(1_796_593_537, 123_456).unwrap(),
            "2026-12-06T21:45:37.123456Z"
        );
        assert_eq!(
            at(253_402_300_799, 999_999).unwrap(),
            "9999-12-31T23:59:59.999999Z"
        );
        assert_eq!(at(253_402_300_800, 0), None);
        assert!(Timestamp::of(UNIX_EPOCH - Duration::from_secs(1)).is_none());
    }
}
