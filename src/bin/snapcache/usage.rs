//! Parsing the command line, with `--json` and `--color` honoured even
//! when parsing fails.
//!
//! clap reports its own errors before the program knows whether `--json`
//! was given, so the raw arguments are scanned first, with the clap
//! definition itself (no list of options here to fall out of date): the
//! scan walks into subcommands as clap does and skips what clap takes for
//! an option's value, so only what clap reads as the `--json` flag counts.
//! `--note=--json` is a note; `--note --json` is a missing note and the
//! flag (clap takes a value starting with `-` only for options that allow
//! it); after `--`, and in the command line of `--exec` (which takes every
//! argument after it), nothing is ours; grouped short flags (`-qv`) are
//! flags, unless one of them takes a value, which is then the rest of the
//! group or the next argument. The scan works on `OsString`s: an argument
//! that is not UTF-8 never stops it.

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches};

use crate::logging::ColorWhen;
use crate::output::print_json;
use crate::{Cli, exit};

/// What the raw scan found.
#[derive(Debug, PartialEq, Eq)]
struct Early {
    json: bool,
    color: ColorWhen,
}

/// Whether clap takes `next` as the value of `arg` (rather than as the
/// next option).
fn takes_as_value(arg: &clap::Arg, next: Option<&OsString>) -> bool {
    let Some(next) = next else { return false };
    let dash = next
        .to_str()
        .is_some_and(|t| t.starts_with('-') && t != "-");
    !dash || arg.is_allow_hyphen_values_set()
}

/// Whether `arg` takes every argument after it (`--exec CMD ARG...`).
fn takes_the_rest(arg: &clap::Arg) -> bool {
    arg.is_allow_hyphen_values_set()
        && arg
            .get_num_args()
            .is_some_and(|n| n.max_values() == usize::MAX)
}

fn takes_a_value(arg: &clap::Arg) -> bool {
    arg.get_num_args().is_some_and(|n| n.takes_values())
}

fn color_named(value: &str) -> ColorWhen {
    match value {
        "always" => ColorWhen::Always,
        "never" => ColorWhen::Never,
        _ => ColorWhen::Auto,
    }
}

fn scan(args: &[OsString]) -> Early {
    let mut early = Early {
        json: false,
        color: ColorWhen::Auto,
    };
    let mut root = Cli::command();
    // Propagates the global options into every subcommand.
    root.build();
    let mut command = &root;
    let mut iter = args.iter().skip(1).peekable();
    while let Some(raw) = iter.next() {
        let Some(text) = raw.to_str() else { continue };
        if text == "--" {
            break;
        }
        if let Some(long) = text.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (long, None),
            };
            let Some(arg) = command.get_arguments().find(|a| {
                a.get_long() == Some(name)
                    || a.get_all_aliases().is_some_and(|al| al.contains(&name))
            }) else {
                continue;
            };
            if !takes_a_value(arg) {
                early.json |= arg.get_id() == "json" && inline.is_none();
                continue;
            }
            if takes_the_rest(arg) {
                break;
            }
            let value = match inline {
                Some(v) => Some(v.to_string()),
                None if takes_as_value(arg, iter.peek().copied()) => {
                    iter.next().map(|v| v.to_string_lossy().into_owned())
                }
                None => None,
            };
            if arg.get_id() == "color" {
                if let Some(v) = value {
                    early.color = color_named(&v);
                }
            }
        } else if let Some(shorts) = text.strip_prefix('-').filter(|s| !s.is_empty()) {
            for (at, c) in shorts.char_indices() {
                let Some(arg) = command.get_arguments().find(|a| a.get_short() == Some(c)) else {
                    break;
                };
                if takes_a_value(arg) {
                    // The value is the rest of the group, else the next argument.
                    if at + c.len_utf8() == shorts.len()
                        && takes_as_value(arg, iter.peek().copied())
                    {
                        iter.next();
                    }
                    break;
                }
            }
        } else if let Some(sub) = command.find_subcommand(text) {
            command = sub;
        }
    }
    early
}

/// Parses `args` with `command` into a [`Cli`].
fn matched(command: clap::Command, args: &[OsString]) -> Result<Cli, clap::Error> {
    let mut matches = command.try_get_matches_from(args)?;
    Cli::from_arg_matches_mut(&mut matches)
}

/// Parses the process arguments; on `--help`/`--version` prints them and
/// exits 0, on a usage error reports it (as JSON too with `--json`) and
/// exits 2.
pub fn parse() -> Result<Cli, u8> {
    let args: Vec<OsString> = std::env::args_os().collect();
    // The common case, a command line that parses, needs neither the scan
    // nor a colour choice: clap only builds the subcommand it parses into
    // (the others are deferred, see `Command`), and nothing of clap's is
    // printed. Only when clap has something to say (help or an error) is
    // the line scanned and parsed again, with the colour asked
    // for; parsing has no side effects, so the second parse ends in the
    // same error.
    let error = match matched(Cli::command(), &args) {
        Ok(cli) => return Ok(cli),
        Err(e) => e,
    };
    if error.kind() == clap::error::ErrorKind::DisplayVersion {
        // One plain line, never coloured.
        return Err(printed(&error));
    }
    let early = scan(&args);
    let error = match matched(Cli::command().color(early.color.clap()), &args) {
        Ok(cli) => return Ok(cli),
        Err(e) => e,
    };
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Err(printed(&error)),
        _ => {
            let _ = error.print();
            if early.json {
                // The plain text of clap's message, without the "error: "
                // prefix and without the usage block.
                let rendered = error.render().to_string();
                let message = if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                {
                    "no command given; `snapcache --help` lists the commands".to_string()
                } else {
                    // Its first paragraph, on one line: "the following
                    // required arguments were not provided: <N>...".
                    let first: Vec<&str> = rendered
                        .trim_start()
                        .split("\n\n")
                        .next()
                        .unwrap_or_default()
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .collect();
                    match first.join(" ").trim_start_matches("error: ") {
                        "" => "invalid command line".to_string(),
                        message => message.to_string(),
                    }
                };
                print_json(&serde_json::json!({
                    "error": { "kind": "usage", "message": message, "exit_code": exit::USAGE }
                }));
            }
            Err(exit::USAGE)
        }
    }
}

/// Prints clap's help or version text on stdout; the exit code: 0, or 1
/// when it could not be written (`--help > /dev/full` said nothing and
/// exited 0). A reader that went away (`--help | head -1`) is no failure.
fn printed(error: &clap::Error) -> u8 {
    use std::io::Write;
    let result = error.print().and_then(|()| std::io::stdout().flush());
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            crate::output::errln!("snapcache: error: could not write to stdout: {e}");
            1
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn args(line: &[&str]) -> Vec<OsString> {
        std::iter::once("snapcache")
            .chain(line.iter().copied())
            .map(OsString::from)
            .collect()
    }

    /// Wherever clap parses a command line, the scan agrees with it about
    /// `--json` and `--color`: the scan cannot drift from the definition.
    #[test]
    fn the_scan_agrees_with_clap_on_every_line_clap_accepts() {
        let lines: &[&[&str]] = &[
            &["status"],
            &["--json", "status"],
            &["status", "--json"],
            &["refresh", "--from", "p", "--note=--json"],
            &["refresh", "--from", "p", "--note", "-", "--json"],
            &["refresh", "--from", "-", "--json"],
            &["refresh", "--exec", "echo", "--json"],
            &["refresh", "--exec", "echo", "--", "--json"],
            &["refresh", "--json", "--exec", "echo", "--json"],
            &["--store=--json", "status"],
            &["--store", "x", "-qv", "status"],
            &["-qvv", "--json", "history"],
            &["--color", "always", "status"],
            &["--color=never", "--json", "status"],
            &["status", "--color", "always"],
            &["forget", "--", "1"],
            &["forget", "--json", "1", "2"],
            &["diff", "1", "2", "--json"],
            &["gc", "--keep", "3", "--older-than", "1h", "--json"],
            &["completions", "bash"],
        ];
        for line in lines {
            let argv = args(line);
            let cli =
                Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{line:?} must parse: {e}"));
            let early = scan(&argv);
            assert_eq!(early.json, cli.json, "{line:?}");
            assert_eq!(early.color, cli.color, "{line:?}");
        }
    }

    #[test]
    fn the_scan_skips_values_and_stops_where_clap_does() {
        let json = |line: &[&str]| scan(&args(line)).json;
        assert!(!json(&["refresh", "--note=--json", "--bogus"]));
        assert!(!json(&["forget", "--", "--json"]));
        assert!(!json(&["refresh", "--exec", "sh", "--json"]));
        assert!(
            json(&["refresh", "--note", "--json"]),
            "clap: a missing note"
        );
        assert!(json(&["status", "--exec", "--json"]), "no --exec in status");
        assert!(json(&["-qv", "--json", "--bogus"]));
        assert!(json(&["--bogus", "--json"]));
        assert_eq!(
            scan(&args(&["--color", "always", "--bogus"])).color,
            ColorWhen::Always
        );
        assert_eq!(scan(&args(&["--color", "--json"])).color, ColorWhen::Auto);
    }
}
