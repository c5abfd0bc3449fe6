//! Peak resident memory of publishing and reading a big payload.
//!
//! The bench spawns itself in the hidden `--child-rss MODE STORE [FILE]`
//! mode: the child does one library call and prints its own `VmHWM` (peak
//! resident set, from `/proc/self/status`) before exiting, so the figure
//! covers exactly one process doing one thing. Modes: `idle` (the
//! process's own baseline), `publish` (`Store::publish_reader` streaming
//! the file) and `read` (`Store::read_current`, which returns the whole
//! verified snapshot in memory). When `/usr/bin/time` exists, the
//! `snapcache` CLI (`refresh --from FILE`, `show`) is measured under
//! `/usr/bin/time -v` as well.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

use snapcache::{PublishOptions, Store, StoreOptions};

use crate::contenders::Result;

/// Peak RSS of this process in bytes, from `/proc/self/status` (`VmHWM`).
pub fn own_peak_rss() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    parse_kib_field(&status, "VmHWM:").ok_or_else(|| "no VmHWM in /proc/self/status".into())
}

fn parse_kib_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// Child side: do `mode` and print `VmHWM` in bytes on stdout.
pub fn child(mode: &str, store_dir: &Path, file: Option<&Path>) -> Result<()> {
    match mode {
        "idle" => {}
        "publish" => {
            let file = file.ok_or("publish needs a payload file")?;
            let store = Store::open(StoreOptions::new(store_dir))?;
            store.publish_reader(File::open(file)?, &PublishOptions::default())?;
        }
        "read" => {
            let store = Store::open(StoreOptions::new(store_dir))?;
            let snap = store.read_current()?;
            let expected = file.map(std::fs::metadata).transpose()?.map(|m| m.len());
            if expected.is_some_and(|n| n != snap.data.len() as u64) {
                return Err("read back a snapshot of the wrong size".into());
            }
        }
        other => return Err(format!("unknown rss mode {other}").into()),
    }
    println!("{}", own_peak_rss()?);
    Ok(())
}

/// Peak RSS of the bench itself in `mode` (see [`child`]).
pub fn measure_child(
    bench_exe: &Path,
    mode: &str,
    store_dir: &Path,
    file: Option<&Path>,
) -> Result<u64> {
    let mut cmd = Command::new(bench_exe);
    cmd.arg("--child-rss").arg(mode).arg(store_dir);
    if let Some(f) = file {
        cmd.arg(f);
    }
    let out = cmd.stderr(Stdio::inherit()).output()?;
    if !out.status.success() {
        return Err(format!("rss child {mode} failed: {}", out.status).into());
    }
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

/// Peak RSS of an arbitrary command under `/usr/bin/time -v` (stdout
/// discarded); `None` when `/usr/bin/time` is missing.
pub fn measure_command(program: &Path, args: &[&std::ffi::OsStr]) -> Result<Option<u64>> {
    let time = Path::new("/usr/bin/time");
    if !time.is_file() {
        return Ok(None);
    }
    let out = crate::cli::command(time)
        .arg("-v")
        .arg(program)
        .args(args)
        .stdout(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "{} failed under /usr/bin/time: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    Ok(parse_kib_field(
        &text.replace('\t', ""),
        "Maximum resident set size (kbytes):",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status_and_time_output() {
        let status = "Name:\tx\nVmPeak:\t  1000 kB\nVmHWM:\t    2048 kB\n";
        assert_eq!(parse_kib_field(status, "VmHWM:"), Some(2048 * 1024));
        let time = "\tMaximum resident set size (kbytes): 5120\n".replace('\t', "");
        assert_eq!(
            parse_kib_field(&time, "Maximum resident set size (kbytes):"),
            Some(5120 * 1024)
        );
    }

    #[test]
    fn own_rss_is_positive() -> Result<()> {
        assert!(own_peak_rss()? > 0);
        Ok(())
    }
}
