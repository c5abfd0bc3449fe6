//! Printing results: one JSON object on stdout with `--json`, text otherwise.
//!
//! Nothing here panics: `println!` would on a closed pipe (`snapcache
//! history | head -1`) or a full disk. A failed write to stdout is
//! remembered instead; `main` turns it into exit 1 unless the reader simply
//! went away (a broken pipe is the reader's choice).

use std::fmt;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use snapcache::Timestamp;

/// The first error writing to stdout, if any (broken pipes excluded).
static STDOUT_ERROR: Mutex<Option<String>> = Mutex::new(None);

/// `println!` that never panics (see the module doc).
macro_rules! outln {
    ($($arg:tt)*) => { $crate::output::line(format_args!($($arg)*)) };
}
/// `eprintln!` that never panics (a closed stderr loses the message).
macro_rules! errln {
    ($($arg:tt)*) => { $crate::output::err_line(format_args!($($arg)*)) };
}
pub(crate) use {errln, outln};

/// Writes one line on stdout, recording a failure.
pub fn line(args: fmt::Arguments<'_>) {
    let text = printable(args);
    let mut out = std::io::stdout().lock();
    let result = out
        .write_all(text.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    record(result);
}

/// Writes one line on stderr, ignoring failures.
pub fn err_line(args: fmt::Arguments<'_>) {
    let text = printable(args);
    let mut err = std::io::stderr().lock();
    let _ = err
        .write_all(text.as_bytes())
        .and_then(|()| err.write_all(b"\n"));
}

/// The text of a line for people, with every control character but newline
/// and tab shown as an escape (`\u{1b}`). Some of what a line names comes
/// from outside the program: a file name in the store (`verify`'s foreign
/// entries), a key of a payload from the network (`diff`), a record another
/// tool wrote. An ESC among them would otherwise move the cursor, recolour
/// or retitle the terminal. (The progress and waiting lines, which clear
/// their own line on a terminal, are written elsewhere, and JSON escapes
/// control characters itself.)
fn printable(args: fmt::Arguments<'_>) -> String {
    let text = args.to_string();
    if !text.chars().any(is_hidden_control) {
        return text;
    }
    let mut shown = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_hidden_control(c) {
            shown.extend(c.escape_unicode());
        } else {
            shown.push(c);
        }
    }
    shown
}

fn is_hidden_control(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

/// Records a failed stdout write (the first one wins).
pub fn record(result: std::io::Result<()>) {
    if let Err(e) = result {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return;
        }
        if let Ok(mut slot) = STDOUT_ERROR.lock() {
            slot.get_or_insert_with(|| e.to_string());
        }
    }
}

/// The first stdout write failure, for the exit code.
pub fn stdout_error() -> Option<String> {
    STDOUT_ERROR.lock().ok().and_then(|slot| slot.clone())
}

/// Prints `value` as one line of JSON on stdout.
pub fn print_json(value: &impl Serialize) {
    let text = match serde_json::to_string(value) {
        Ok(text) => text,
        // Only a value that cannot be JSON (a path that is not UTF-8 in a
        // library type) gets here; the CLI converts paths itself, so this
        // is a defect to report, not to hide.
        Err(e) => {
            record(Err(std::io::Error::other(format!(
                "could not encode the result as JSON: {e}"
            ))));
            return;
        }
    };
    line(format_args!("{text}"));
}

/// A path for JSON output: its text, with bytes that are not UTF-8 replaced
/// by U+FFFD (serde refuses such paths outright).
pub fn json_path(path: &std::path::Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The same path made printable as JSON (see [`json_path`]), for library
/// types that carry a `PathBuf` and derive `Serialize`.
pub fn lossy_path(path: &std::path::Path) -> std::path::PathBuf {
    std::path::PathBuf::from(json_path(path))
}

/// `1.2 MB`, `512 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `3 min ago`-style age.
pub fn human_age(age: Duration) -> String {
    format!("{} ago", human_span(age))
}

/// `3 min`-style length of time, in years past 1,000 days (a lease's
/// expiry can lie decades ahead).
pub fn human_span(span: Duration) -> String {
    let secs = span.as_secs();
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86_399 => format!("{:.1} h", secs as f64 / 3600.0),
        86_400..=86_399_999 => format!("{:.1} days", secs as f64 / 86_400.0),
        _ => format!("{:.1} years", secs as f64 / 31_557_600.0),
    }
}

/// The age of a recorded time for humans; a time ahead of this machine's
/// clock (beyond the tolerated skew) says so instead of "0 s ago".
pub fn human_time_age(t: Timestamp) -> String {
    match t.known_age() {
        Some(age) => human_age(age),
        None => format!(
            "in the future: the clock of the writer that recorded it ran ahead of this machine's by more than {} s; its age is unknown",
            snapcache::CLOCK_SKEW_TOLERANCE.as_secs()
        ),
    }
}

/// The first 12 hex digits, for human output.
pub fn short_hash(hash: &snapcache::ContentHash) -> String {
    let mut hex = hash.to_hex();
    hex.truncate(12);
    hex
}
