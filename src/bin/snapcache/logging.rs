//! Colour and log setup for stderr: the only place that installs a
//! `tracing` subscriber.
//!
//! Human messages (`snapcache: error: ...`) are the CLI's own lines; the
//! library's `tracing` events are extra detail, shown only when asked for
//! (`-v`, `SNAPCACHE_LOG` or `RUST_LOG`), so that each message appears once
//! at the default verbosity.

use std::io::IsTerminal;

use crate::output::errln;

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorWhen {
    /// Colour only when stderr is a terminal and `NO_COLOR` is unset or empty
    #[default]
    Auto,
    /// Always colour (even into a file or pipe)
    Always,
    /// Never colour
    Never,
}

impl ColorWhen {
    /// Whether escape codes may be written to stderr.
    pub fn enabled(self) -> bool {
        match self {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::io::stderr().is_terminal()
            }
        }
    }

    /// The same choice for clap's own help and error output.
    pub fn clap(self) -> clap::ColorChoice {
        if self.enabled() {
            clap::ColorChoice::Always
        } else {
            clap::ColorChoice::Never
        }
    }
}

/// The log filter variables, the more specific first: `SNAPCACHE_LOG` wins
/// over `RUST_LOG` when both are set.
pub const FILTER_VARIABLES: [&str; 2] = ["SNAPCACHE_LOG", "RUST_LOG"];

/// Characters of a variable's value a warning repeats.
const QUOTED_CHARS: usize = 100;

/// `text` quoted with its control characters escaped, cut after
/// [`QUOTED_CHARS`] characters (a variable can hold 128 KiB) with how long
/// it was in all.
fn quoted_start(text: &str) -> String {
    let chars = text.chars().count();
    if chars <= QUOTED_CHARS {
        return format!("{text:?}");
    }
    let start: String = text.chars().take(QUOTED_CHARS).collect();
    format!("{start:?}… ({chars} characters in all)")
}

/// Installs the stderr subscriber, or none at all when nothing asked for
/// log lines. A filter variable that does not parse is reported (once) and
/// ignored, falling back to the next variable or to `-v`.
pub fn init(verbose: u8, quiet: bool, color: bool) {
    use tracing_subscriber::EnvFilter;
    let mut filter = None;
    for name in FILTER_VARIABLES {
        let Some(value) = std::env::var_os(name).filter(|v| !v.is_empty()) else {
            continue;
        };
        let text = value.to_string_lossy();
        match EnvFilter::builder().parse(&*text) {
            Ok(f) => {
                filter = Some(f);
                break;
            }
            Err(e) => errln!(
                "snapcache: warning: {name}={} is not a valid log filter ({e}); it is ignored. Use e.g. `info`, `debug` or `snapcache=debug`",
                quoted_start(&text)
            ),
        }
    }
    let filter = match filter {
        Some(f) => f,
        None => {
            let level = match (quiet, verbose) {
                // No subscriber: the library's events are not printed.
                (true, _) | (false, 0) => return,
                (false, 1) => "info",
                (false, 2) => "debug",
                _ => "trace",
            };
            EnvFilter::new(level)
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(color)
        .fmt_fields(printable_fields())
        .with_writer(std::io::stderr)
        .try_init();
}

/// How a log line shows its fields: as the default formatter does
/// (`message` bare, then `name=value`, strings quoted), but with control
/// characters, newlines included, and bidirectional-text controls escaped.
/// A field's value may be a name from the store (`path=` of a leftover
/// someone planted in `tmp/`): the default formatter writes a displayed
/// value as it is, so an ESC there reached the terminal and a newline
/// forged a log line of its own.
fn printable_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = format!("{value:?}");
        let text = crate::output::printable(&text, crate::output::Newlines::Escaped);
        if field.name() == "message" {
            write!(writer, "{text}")
        } else {
            write!(writer, "{field}={text}")
        }
    })
    .delimited(" ")
}
