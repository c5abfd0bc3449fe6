//! `floor`: the whole-process floor of snapcache's design, as a tiny binary
//! (std and blake3 only) that the bench runs next to the `snapcache` CLI.
//!
//! ```text
//! floor publish STORE FILE   # the durable sequence of a publish, from FILE
//! floor publish --delete-superseded STORE FILE
//!                            # the same, unlinking the snapshot it supersedes
//! floor read STORE           # verified read of the current snapshot to stdout
//! ```
//!
//! `publish` streams FILE through blake3 into `STORE/tmp/snap.<pid>`, fsyncs
//! it, renames it to `STORE/snapshots/<hash>`, fsyncs `snapshots/`, then
//! writes the pointer (`<hash> <len>\n`) to a temp file, fsyncs it, renames
//! it over `STORE/current` and fsyncs `STORE`. Nothing else: no lock, no
//! validation, no history, no sweep, no logging. `read` reads the pointer,
//! reads the whole snapshot into one buffer, checks length and blake3, and
//! only then writes it to stdout. Old snapshots are the caller's to delete
//! (the bench does it between rounds, untimed), except with
//! `--delete-superseded`: then the publish reads the pointer first and
//! unlinks the snapshot it names on a second thread, started before the
//! payload is read and joined before the process exits, as the library
//! bench's deleting floor does. That is not a budget's baseline: it shows
//! what deleting a snapshot inside a publish costs on the bench's filesystem,
//! which snapcache's own publish cannot leave out.
#![forbid(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["publish", store, file] => publish(Path::new(store), Path::new(file)),
        ["publish", "--delete-superseded", store, file] => {
            publish_deleting(Path::new(store), Path::new(file))
        }
        ["read", store] => read(Path::new(store)),
        _ => Err(io::Error::other(
            "usage: floor publish [--delete-superseded] STORE FILE | floor read STORE",
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn publish(store: &Path, file: &Path) -> io::Result<()> {
    let tmp_dir = store.join("tmp");
    let snapshots = store.join("snapshots");
    fs::create_dir_all(&tmp_dir)?;
    fs::create_dir_all(&snapshots)?;
    let pid = std::process::id();
    let tmp = tmp_dir.join(format!("snap.{pid}"));
    let mut out = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    let mut input = File::open(file)?;
    let mut hasher = blake3::Hasher::new();
    // The same 256 KiB chunks the library streams in.
    let mut buf = vec![0u8; 256 * 1024];
    let mut len = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        len += n as u64;
    }
    out.sync_all()?;
    drop(out);
    let hash = hasher.finalize().to_hex();
    fs::rename(&tmp, snapshots.join(hash.as_str()))?;
    File::open(&snapshots)?.sync_all()?;
    let ptmp = tmp_dir.join(format!("current.{pid}"));
    let mut p = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&ptmp)?;
    p.write_all(format!("{hash} {len}\n").as_bytes())?;
    p.sync_all()?;
    drop(p);
    fs::rename(&ptmp, store.join("current"))?;
    File::open(store)?.sync_all()
}

/// `publish`, with the snapshot named by the pointer it replaces unlinked
/// on a second thread from the start (none on a store's first publish).
fn publish_deleting(store: &Path, file: &Path) -> io::Result<()> {
    let superseded = match fs::read_to_string(store.join("current")) {
        Ok(pointer) => pointer
            .split_whitespace()
            .next()
            .map(|hash| store.join("snapshots").join(hash)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let Some(path) = superseded else {
        return publish(store, file);
    };
    std::thread::scope(|scope| {
        let unlink = scope.spawn(move || fs::remove_file(path));
        let written = publish(store, file);
        match unlink.join() {
            Err(_) => Err(io::Error::other("the unlinking thread panicked")),
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => written,
        }
    })
}

fn read(store: &Path) -> io::Result<()> {
    let pointer = fs::read_to_string(store.join("current"))?;
    let mut parts = pointer.split_whitespace();
    let (Some(hash), Some(len)) = (parts.next(), parts.next()) else {
        return Err(io::Error::other("malformed pointer"));
    };
    let len: u64 = len.parse().map_err(io::Error::other)?;
    let mut f = File::open(store.join("snapshots").join(hash))?;
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    f.read_to_end(&mut bytes)?;
    if bytes.len() as u64 != len || blake3::hash(&bytes).to_hex().as_str() != hash {
        return Err(io::Error::other("snapshot does not match the pointer"));
    }
    let mut stdout = io::stdout().lock();
    stdout.write_all(&bytes)?;
    stdout.flush()
}
