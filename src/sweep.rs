//! Leftovers: temp files in `tmp/` and snapshot files no retained generation
//! references.
//!
//! # Crash story
//!
//! A writer killed mid-publish leaves at most a temp file (killed before the
//! snapshot rename) or an unreferenced snapshot (killed after it, before the
//! pointer swap). Both are harmless to readers, who only follow the pointer.
//! Every write sweeps them at its start, while holding the lock: only a lock
//! holder creates files in `tmp/`, so nothing in there belongs to an active
//! writer. `verify` lists the same leftovers as reclaimable without touching
//! them.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::durable::Durable;
use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::layout::Layout;

/// What kind of leftover a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LeftoverKind {
    /// Anything in `tmp/`.
    TempFile,
    /// A file in `snapshots/` that no retained generation references.
    UnreferencedSnapshot,
}

/// One reclaimable file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leftover {
    /// Where it is.
    pub path: PathBuf,
    /// What it is.
    pub kind: LeftoverKind,
    /// Its size (what removing it frees).
    pub bytes: u64,
}

/// Lists leftovers. `referenced == None` means the retained set is unknown
/// (no pointer): then no snapshot is listed, because none can be proven
/// unreferenced.
///
/// With `spare_live_writers` (the lease backend), temp files named after a
/// live process on this host other than us are not listed: a lease can
/// expire under a stalled writer that is still alive, and its files are not
/// ours to delete. (With advisory locks the kernel guarantees that no other
/// writer is alive while we hold the lock.)
pub(crate) fn list(
    layout: &Layout,
    referenced: Option<&HashSet<ContentHash>>,
    spare_live_writers: bool,
) -> Result<Vec<Leftover>> {
    let mut out = Vec::new();
    for (path, bytes) in entries(&layout.tmp_dir())? {
        if spare_live_writers && belongs_to_live_writer(&path) {
            tracing::info!(path = %path.display(), "kept a temp file of a live writer");
            continue;
        }
        out.push(Leftover {
            path,
            kind: LeftoverKind::TempFile,
            bytes,
        });
    }
    if let Some(referenced) = referenced {
        for (path, bytes) in entries(&layout.snapshots_dir())? {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let is_referenced = ContentHash::parse(name).is_some_and(|h| referenced.contains(&h));
            if !is_referenced {
                out.push(Leftover {
                    path,
                    kind: LeftoverKind::UnreferencedSnapshot,
                    bytes,
                });
            }
        }
    }
    Ok(out)
}

/// Removes the given leftovers and returns what was removed.
pub(crate) fn remove(durable: &Durable, leftovers: Vec<Leftover>) -> Result<Vec<Leftover>> {
    let mut removed = Vec::with_capacity(leftovers.len());
    for leftover in leftovers {
        let is_dir = fs::symlink_metadata(&leftover.path)
            .map(|m| m.is_dir())
            .unwrap_or(false);
        let result = if is_dir {
            durable.remove_tree(&leftover.path)
        } else {
            durable.remove_file(&leftover.path)
        };
        match result {
            Ok(()) => {
                tracing::info!(path = %leftover.path.display(), kind = ?leftover.kind, bytes = leftover.bytes, "removed leftover");
                removed.push(leftover);
            }
            Err(e) => return Err(Error::io("remove the leftover file", &leftover.path, e)),
        }
    }
    // No directory fsync: a removal lost in a crash only brings back an
    // unreferenced file, which the next sweep removes again. Skipping it
    // saves an fsync on every publish.
    Ok(removed)
}

/// Whether a temp file's name (`.snapcache-<pid>-...`) names a live process
/// on this host other than the current one.
fn belongs_to_live_writer(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let pid = name
        .strip_prefix(crate::layout::TEMP_PREFIX)
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse::<u32>().ok());
    pid.is_some_and(|pid| pid != std::process::id() && crate::lock::process_alive(pid))
}

/// Files (and stray directories) directly in `dir`, with their sizes.
fn entries(dir: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let read = match fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list the directory", dir, e)),
    };
    let mut out = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| Error::io("list the directory", dir, e))?;
        // symlink_metadata: a planted link's size is the link's, and it is
        // never followed.
        let bytes = entry
            .path()
            .symlink_metadata()
            .map(|m| m.len())
            .unwrap_or(0);
        out.push((entry.path(), bytes));
    }
    out.sort();
    Ok(out)
}
