//! `metagen --bytes N [--seed S] [--out PATH]`: write a Kopi-shaped metadata
//! document of about N bytes to stdout (or PATH). N accepts the suffixes
//! `K`/`KiB`, `M`/`MiB` and `G`/`GiB` (powers of 1024).
#![forbid(unsafe_code)]

use std::io::{BufWriter, Write};
use std::process::ExitCode;

fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1024,
        "m" | "mib" => 1024 * 1024,
        "g" | "gib" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

const USAGE: &str = "usage: metagen --bytes N[K|M|G] [--seed S] [--out PATH]";

fn main() -> ExitCode {
    let mut bytes = None;
    let mut seed = 0u64;
    let mut out_path = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--bytes" | "--seed" | "--out" => args.next(),
            _ => {
                eprintln!("unknown argument {arg}\n{USAGE}");
                return ExitCode::from(2);
            }
        };
        let Some(value) = value else {
            eprintln!("{arg} needs a value\n{USAGE}");
            return ExitCode::from(2);
        };
        match arg.as_str() {
            "--bytes" => bytes = parse_size(&value),
            "--seed" => match value.parse() {
                Ok(s) => seed = s,
                Err(_) => {
                    eprintln!("bad seed {value}");
                    return ExitCode::from(2);
                }
            },
            _ => out_path = Some(value),
        }
    }
    let Some(bytes) = bytes else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match out_path {
        Some(path) => std::fs::File::create(&path).and_then(|f| {
            let mut w = BufWriter::new(f);
            snapcache_metagen::write_to(&mut w, bytes, seed)?;
            w.flush()
        }),
        None => {
            let stdout = std::io::stdout();
            let mut w = BufWriter::new(stdout.lock());
            snapcache_metagen::write_to(&mut w, bytes, seed).and_then(|_| w.flush())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("metagen: {e}");
            ExitCode::FAILURE
        }
    }
}
