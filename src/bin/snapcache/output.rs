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

/// Writes one line on stdout, recording a failure. A newline inside the
/// text is shown as an escape too: every line of stdout is one line of the
/// result, so that a name from outside (a file planted in the store, a key
/// of a payload) cannot forge a line of its own.
pub fn line(args: fmt::Arguments<'_>) {
    let text = args.to_string();
    raw_line(&printable(&text, Newlines::Escaped));
}

/// Writes `text` and a newline on stdout as it is, recording a failure.
fn raw_line(text: &str) {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    record(write_stdout(line.as_bytes()));
}

/// Writes `bytes` to stdout's descriptor. Not through std's `Stdout`,
/// which takes `EBADF` for a closed stdout and reports success: a stdout
/// open read-only (`1<file`) then lost the whole result with exit 0.
/// (std reopens a stdout closed at start as `/dev/null`, so `EBADF` here
/// always means a descriptor that cannot be written.)
#[cfg(unix)]
fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    let mut out = std::io::stdout().lock();
    // Whatever went through std's buffer (clap's help) goes first.
    out.flush()?;
    // One duplicate of the descriptor for the whole run, not one a line.
    static FILE: std::sync::OnceLock<Option<std::fs::File>> = std::sync::OnceLock::new();
    let file = FILE.get_or_init(|| {
        out.as_fd()
            .try_clone_to_owned()
            .ok()
            .map(std::fs::File::from)
    });
    match file {
        Some(file) => (&mut &*file).write_all(bytes),
        None => out.write_all(bytes).and_then(|()| out.flush()),
    }
}

#[cfg(not(unix))]
fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|()| out.flush())
}

/// Writes one line on stderr, ignoring failures. Newlines are kept: an
/// error may quote several lines (the tail of a command's stderr).
pub fn err_line(args: fmt::Arguments<'_>) {
    let text = args.to_string();
    let text = printable(&text, Newlines::Kept);
    let mut err = std::io::stderr().lock();
    let _ = err
        .write_all(text.as_bytes())
        .and_then(|()| err.write_all(b"\n"));
}

/// Whether [`printable`] keeps newlines.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Newlines {
    Kept,
    Escaped,
}

/// `text` for people, with every control character but tab (and newline,
/// when kept) and every bidirectional-text control shown as an escape
/// (`\u{1b}`, `\u{202e}`). Some of what a line names comes from outside the
/// program: a file name in the store (`verify`'s foreign entries), a key of
/// a payload from the network (`diff`), a record another tool wrote. An ESC
/// among them would otherwise move the cursor, recolour or retitle the
/// terminal, and a right-to-left override would show the rest of the line
/// reversed. (The progress and waiting lines, which clear their own line on
/// a terminal, are written elsewhere; JSON has [`json_safe`].)
pub fn printable(text: &str, newlines: Newlines) -> std::borrow::Cow<'_, str> {
    let hidden = |c: char| {
        is_bidi_control(c)
            || (c.is_control() && c != '\t' && !(c == '\n' && newlines == Newlines::Kept))
    };
    if !text.chars().any(hidden) {
        return text.into();
    }
    let mut shown = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if hidden(c) {
            shown.extend(c.escape_unicode());
        } else {
            shown.push(c);
        }
    }
    shown.into()
}

/// The characters that reorder how the text around them is displayed
/// (Unicode's explicit directional formatting characters and marks).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Serialized JSON with DEL, the C1 controls and the bidirectional-text
/// controls written as `\uXXXX` escapes. serde_json escapes only what JSON
/// requires (U+0000 to U+001F); the rest would reach a terminal raw (C1's
/// U+009B is a CSI on some). They can only stand inside a JSON string, where
/// the escape means the same character, so the document is unchanged.
pub fn json_safe(text: &str) -> std::borrow::Cow<'_, str> {
    let hidden = |c: char| c.is_control() || is_bidi_control(c);
    if !text.chars().any(hidden) {
        return text.into();
    }
    let mut safe = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if hidden(c) {
            // All of them lie in the Basic Multilingual Plane: one escape.
            safe.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            safe.push(c);
        }
    }
    safe.into()
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
    raw_line(&json_safe(&text));
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
        // A 0.3 s lease read "lease time 0 s".
        0..=9 => format!("{:.1} s", span.as_secs_f64()),
        10..=59 => format!("{secs} s"),
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

/// Warns on stderr (unless `quiet`) about files a `gc`, `forget` or
/// `clear` was to remove but could not: otherwise "removed 0 ..." read as
/// if there had been nothing to remove. At most five are named.
pub fn warn_not_removed(quiet: bool, not_removed: &[snapcache::NotRemoved], then_run: &str) {
    if quiet || not_removed.is_empty() {
        return;
    }
    const NAMED: usize = 5;
    let mut named: Vec<String> = not_removed
        .iter()
        .take(NAMED)
        .map(|n| format!("{} ({})", n.path.display(), n.error))
        .collect();
    if not_removed.len() > NAMED {
        named.push(format!("and {} more", not_removed.len() - NAMED));
    }
    // Objects are not files: no immutable flag or directory permission
    // keeps them, and one whose delete got no answer may yet be deleted.
    let objects = not_removed
        .iter()
        .all(|n| n.path.to_string_lossy().starts_with("s3://"));
    if objects {
        errln!(
            "snapcache: warning: could not delete {} object(s): {}. Check that the credentials may delete objects under the store's prefix (an object whose delete got no answer may still be deleted by the server), then run `{then_run}`",
            not_removed.len(),
            named.join(", ")
        );
        return;
    }
    errln!(
        "snapcache: warning: could not remove {} file(s), left in place: {}. Make them removable (an immutable flag: `lsattr`, `chattr -i`; a directory without write permission), then run `{then_run}`",
        not_removed.len(),
        named.join(", ")
    );
}
