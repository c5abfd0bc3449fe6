//! Parsing the command line, with `--json` and `--color` honoured even
//! when parsing fails.
//!
//! clap reports its own errors before the program knows whether `--json`
//! was given, so the raw arguments are scanned first: up to `--` or
//! `--exec` (whose arguments belong to the command it runs), a `--json`
//! anywhere means the failure is printed as `{"error":{"kind":"usage",...}}`
//! on stdout too. The scan works on `OsString`s: an argument that is not
//! UTF-8 never stops it.

use std::ffi::{OsStr, OsString};

use clap::{CommandFactory, FromArgMatches};

use crate::logging::ColorWhen;
use crate::output::print_json;
use crate::{Cli, exit};

/// What the raw scan found.
struct Early {
    json: bool,
    color: ColorWhen,
}

fn scan(args: &[OsString]) -> Early {
    let mut early = Early {
        json: false,
        color: ColorWhen::Auto,
    };
    let mut iter = args.iter().skip(1).map(OsString::as_os_str);
    while let Some(arg) = iter.next() {
        if arg == "--" || arg == "--exec" {
            break;
        }
        if arg == "--json" {
            early.json = true;
        }
        let value: Option<&OsStr> = if arg == "--color" {
            iter.next()
        } else {
            arg.to_str()
                .and_then(|a| a.strip_prefix("--color="))
                .map(OsStr::new)
        };
        if let Some(v) = value.and_then(OsStr::to_str) {
            early.color = match v {
                "always" => ColorWhen::Always,
                "never" => ColorWhen::Never,
                _ => ColorWhen::Auto,
            };
        }
    }
    early
}

/// Parses the process arguments; on `--help`/`--version` prints them and
/// exits 0, on a usage error reports it (as JSON too with `--json`) and
/// exits 2.
pub fn parse() -> Result<Cli, u8> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let early = scan(&args);
    let command = Cli::command().color(early.color.clap());
    let error = match command.try_get_matches_from(&args) {
        Ok(mut matches) => match Cli::from_arg_matches_mut(&mut matches) {
            Ok(cli) => return Ok(cli),
            Err(e) => e,
        },
        Err(e) => e,
    };
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            Err(0)
        }
        _ => {
            let _ = error.print();
            if early.json {
                // The plain text of clap's message: its first line, without
                // the "error: " prefix and without the usage block.
                let rendered = error.render().to_string();
                let message = if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                {
                    "no command given; `snapcache --help` lists the commands".to_string()
                } else {
                    rendered
                        .lines()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("invalid command line")
                        .trim_start_matches("error: ")
                        .to_string()
                };
                print_json(&serde_json::json!({
                    "error": { "kind": "usage", "message": message, "exit_code": exit::USAGE }
                }));
            }
            Err(exit::USAGE)
        }
    }
}
