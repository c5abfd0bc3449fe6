//! The store marker and the cache directory tag: how a directory says that
//! snapcache made it, and how snapcache tells its own stores from anything
//! else a user points it at.
//!
//! # Why
//!
//! A store root is a path the user types (`--store`, an environment
//! variable). Pointed at a home directory, a project or `/`, a writer that
//! sweeps `tmp/` and `snapshots/` would delete the user's files. So a write
//! goes ahead only in a directory that is missing, empty, or a store:
//!
//! - a *marked* store holds [`MARKER`](crate::layout::MARKER), a small file
//!   whose first line is `snapcache-store <format version>`;
//! - an *unmarked* store was written by an earlier release: no marker, but
//!   every root entry carries a snapcache name, and either `current` is a
//!   valid pointer or `tmp/` and `snapshots/` hold only snapcache names. The
//!   first write adopts it (adds the marker under the writer lock);
//! - anything else is *foreign*: writes and reads refuse it before touching
//!   anything ([`Error::NotAStore`]).
//!
//! A new or adopted store also gets a `CACHEDIR.TAG` (the Cache Directory
//! Tagging Specification, <https://bford.info/cachedir/>), so backup tools
//! that honour it skip the cache.
//!
//! ```text
//! $ cat ~/.cache/snapcache/snapcache-store
//! snapcache-store 1
//! ```

use std::ffi::OsString;
use std::fs;
use std::io;
use std::sync::Mutex;
use std::time::Duration;

use crate::durable::{Durable, FileId, fill, open_no_follow_with_metadata};
use crate::error::{Error, Result};
use crate::layout::{self, Layout};
use crate::pointer::FORMAT_VERSION;

/// The magic word that starts the marker.
pub(crate) const MARKER_MAGIC: &str = "snapcache-store";
/// The Cache Directory Tagging Specification's signature line.
pub(crate) const CACHEDIR_SIGNATURE: &str = "Signature: 8a477f597d28d172789f06886806bc55";
/// Markers are tiny; a larger file is not one.
const MAX_MARKER_BYTES: u64 = 256;
/// How many offending entries a refusal names.
const EXAMPLES: usize = 2;

/// The marker's content: `snapcache-store 1\n`.
pub(crate) fn marker_content() -> String {
    format!("{MARKER_MAGIC} {FORMAT_VERSION}\n")
}

/// The tag's content: the signature line, then comments saying what this is.
pub(crate) fn cachedir_tag_content() -> String {
    format!(
        "{CACHEDIR_SIGNATURE}\n\
         # This file is a cache directory tag created by snapcache: this directory\n\
         # is a snapcache snapshot store, a cache that its program can rebuild.\n\
         # For information about cache directory tags, see https://bford.info/cachedir/\n"
    )
}

/// What a store root turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// The root does not exist.
    Missing,
    /// An empty directory: a store may be created in it.
    Empty,
    /// The marker says it is a store.
    Marked,
    /// A store of an earlier release (no marker, only snapcache names);
    /// `current` tells whether a `current` entry exists.
    Unmarked { current: bool },
    /// Not a store: one or two of the entries that say so.
    Foreign(Vec<String>),
}

/// Identifies the directory at `layout`'s root. Reads only; creates nothing.
/// `pointer_is_valid` is asked only when the answer depends on it.
/// `root_is_dir`: the root was just seen to be a directory (followed, as
/// here: the trust check's view), so it is not looked at again; otherwise
/// it is.
/// `marker`: the marker's identity as the trust check just saw it, and
/// what this store verified before; a marker verified before under the same
/// identity is not read again.
pub(crate) fn identify_seen(
    layout: &Layout,
    root_is_dir: bool,
    marker: Option<(FileId, &VerifiedMarker)>,
    pointer_is_valid: impl FnOnce() -> bool,
) -> Result<Found> {
    if marker.is_some_and(|(seen, verified)| verified.is(seen)) {
        return Ok(Found::Marked);
    }
    let root = layout.root();
    // The root itself may be a symlink: the user chose where the store lives.
    if !root_is_dir {
        match fs::metadata(root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(Found::Foreign(Vec::new())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
            Err(e) => return Err(Error::io("inspect the store directory", root, e)),
        }
    }
    // The marker first: a marked store needs no listing (and a root that
    // readers may enter but not list still reads).
    if let Some(found) = read_marker(layout, marker)? {
        return Ok(found);
    }
    let names = list(root).map_err(|e| Error::io("list the store directory", root, e))?;
    if names.is_empty() {
        return Ok(Found::Empty);
    }
    let foreign: Vec<String> = names
        .iter()
        .filter(|n| !layout::is_store_name(n))
        .take(EXAMPLES)
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    if !foreign.is_empty() {
        return Ok(Found::Foreign(foreign));
    }
    let current = names.iter().any(|n| n == layout::CURRENT);
    if current && pointer_is_valid() {
        return Ok(Found::Unmarked { current });
    }
    // No valid pointer: ours only if every name below is ours too (a first
    // write of an earlier release that failed, or a rollback/gc that made
    // the directories).
    let mut offending = Vec::new();
    for (sub, ours) in [
        (
            layout::TMP,
            layout::is_temp_name as fn(&std::ffi::OsStr) -> bool,
        ),
        (layout::SNAPSHOTS, layout::is_snapshot_name),
    ] {
        if !names.iter().any(|n| n == sub) {
            continue;
        }
        match list(&root.join(sub)) {
            Ok(inner) => offending.extend(
                inner
                    .iter()
                    .filter(|n| !ours(n))
                    .map(|n| format!("{sub}/{}", n.to_string_lossy())),
            ),
            Err(_) => offending.push(format!("{sub} (not a directory snapcache can list)")),
        }
    }
    if offending.is_empty() {
        Ok(Found::Unmarked { current })
    } else {
        offending.truncate(EXAMPLES);
        Ok(Found::Foreign(offending))
    }
}

/// `Some(Marked)` for a valid marker, `Some(Foreign)` for a file with other
/// content at the marker's name, `None` when there is none. Anything but a
/// regular file there is refused by the open gate (never opened, no hang).
fn read_marker(
    layout: &Layout,
    remember: Option<(FileId, &VerifiedMarker)>,
) -> Result<Option<Found>> {
    let path = layout.marker();
    let bad = |why: &str| {
        Ok(Some(Found::Foreign(vec![format!(
            "{} ({why})",
            layout::MARKER
        )])))
    };
    let (file, meta) = match open_no_follow_with_metadata(&path) {
        Ok(opened) => opened,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open the store marker", &path, e)),
    };
    let bytes = read_up_to(file, meta.len().min(MAX_MARKER_BYTES))
        .map_err(|e| Error::io("read the store marker", &path, e))?;
    let text = String::from_utf8_lossy(&bytes);
    let first = text.lines().next().unwrap_or("");
    let mut fields = first.split(' ');
    if fields.next() != Some(MARKER_MAGIC) {
        return bad("not a snapcache marker");
    }
    match fields.next().and_then(|v| v.parse::<u32>().ok()) {
        Some(FORMAT_VERSION) => {
            // Remembered only when the file read is the very one the trust
            // check judged (not one renamed over it in between).
            if let Some((seen, verified)) = remember {
                if FileId::of(&meta) == Some(seen) {
                    verified.set(seen);
                }
            }
            Ok(Some(Found::Marked))
        }
        Some(found) => Err(Error::UnsupportedVersion {
            path,
            found,
            supported: FORMAT_VERSION,
        }),
        None => bad("not a snapcache marker"),
    }
}

/// The marker a store verified last, by identity (see
/// [`crate::durable::FileId`]), shared by the store's clones: a read whose
/// trust check sees that same file again skips reading it, five of a read's
/// thirty-odd system calls. The marker never changes once written, so a
/// store's reads go on finding it.
#[derive(Debug, Default)]
pub(crate) struct VerifiedMarker(Mutex<Option<FileId>>);

impl VerifiedMarker {
    fn is(&self, id: FileId) -> bool {
        // A poisoned lock holds a value as good as any: no thread panics
        // while holding it (a plain load or store).
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) == Some(id)
    }

    fn set(&self, id: FileId) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
    }
}

/// The first `len` bytes of `file` (fewer at an earlier end): one `read`
/// when the file is as long as its `fstat` said, which is what a marker
/// (replaced whole by rename, never grown in place) always is. Only its
/// first line counts, so bytes appended after the `fstat` would change
/// nothing; no probe for them.
fn read_up_to(mut file: fs::File, len: u64) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0; usize::try_from(len).unwrap_or(0)];
    let filled = fill(&mut file, &mut bytes)?;
    bytes.truncate(filled);
    Ok(bytes)
}

/// Entry names of a directory, sorted.
fn list(dir: &std::path::Path) -> io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        names.push(entry?.file_name());
    }
    names.sort();
    Ok(names)
}

/// Writes the tag (unless one is there) and then the marker, each durably
/// through a temp file in `tmp/`. The marker goes last: it is what makes
/// the directory a store, so a crash in between only leaves an unmarked
/// store that the next write adopts again. Call with the writer lock held.
pub(crate) fn mark(layout: &Layout, durable: &Durable, budget: Option<Duration>) -> Result<()> {
    let tag = layout.cachedir_tag();
    if fs::symlink_metadata(&tag).is_err() {
        durable
            .replace_file(
                &layout.tmp_dir(),
                &tag,
                cachedir_tag_content().as_bytes(),
                true,
                budget,
            )
            .map_err(|e| Error::io("write the cache directory tag", e.path, e.source))?;
    }
    durable
        .replace_file(
            &layout.tmp_dir(),
            &layout.marker(),
            marker_content().as_bytes(),
            true,
            budget,
        )
        .map_err(|e| Error::io("write the store marker", e.path, e.source))?;
    tracing::info!(root = %layout.root().display(), "marked the directory as a snapcache store");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As a caller that has not seen the root.
    fn identify(layout: &Layout, pointer_is_valid: impl FnOnce() -> bool) -> Result<Found> {
        identify_seen(layout, false, None, pointer_is_valid)
    }

    fn layout() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path().join("s"));
        (dir, layout)
    }

    #[test]
    fn missing_empty_and_marked_are_told_apart() {
        let (_dir, layout) = layout();
        assert_eq!(identify(&layout, || true).ok(), Some(Found::Missing));
        fs::create_dir(layout.root()).expect("mkdir");
        assert_eq!(identify(&layout, || true).ok(), Some(Found::Empty));
        fs::write(layout.marker(), marker_content()).expect("marker");
        fs::write(layout.root().join("anything"), b"x").expect("file");
        assert_eq!(identify(&layout, || false).ok(), Some(Found::Marked));
    }

    #[test]
    fn a_directory_with_other_names_is_foreign_and_names_two_of_them() {
        let (_dir, layout) = layout();
        fs::create_dir_all(layout.tmp_dir()).expect("mkdir");
        for name in ["a.txt", "b.txt", "c.txt"] {
            fs::write(layout.root().join(name), b"x").expect("file");
        }
        assert_eq!(
            identify(&layout, || true).ok(),
            Some(Found::Foreign(vec!["a.txt".into(), "b.txt".into()]))
        );
    }

    #[test]
    fn snapcache_names_with_foreign_contents_and_no_pointer_are_foreign() {
        let (_dir, layout) = layout();
        fs::create_dir_all(layout.tmp_dir()).expect("mkdir");
        fs::create_dir_all(layout.snapshots_dir()).expect("mkdir");
        fs::write(layout.tmp_dir().join("notes.txt"), b"x").expect("file");
        fs::write(layout.snapshots_dir().join("holiday.png"), b"x").expect("file");
        assert_eq!(
            identify(&layout, || false).ok(),
            Some(Found::Foreign(vec![
                "tmp/notes.txt".into(),
                "snapshots/holiday.png".into()
            ]))
        );
        fs::write(layout.current(), b"x").expect("file");
        assert_eq!(
            identify(&layout, || true).ok(),
            Some(Found::Unmarked { current: true }),
            "a valid pointer is evidence enough"
        );
    }

    #[test]
    fn only_snapcache_names_everywhere_is_an_unmarked_store() {
        let (_dir, layout) = layout();
        fs::create_dir_all(layout.tmp_dir()).expect("mkdir");
        fs::create_dir_all(layout.snapshots_dir()).expect("mkdir");
        fs::write(layout.lock_file(), b"").expect("lock");
        fs::write(layout.tmp_dir().join(".snapcache-1-abc"), b"x").expect("temp");
        assert_eq!(
            identify(&layout, || false).ok(),
            Some(Found::Unmarked { current: false })
        );
    }

    #[test]
    fn a_directory_at_the_marker_name_is_refused_as_such() {
        let (_dir, layout) = layout();
        fs::create_dir_all(layout.marker()).expect("mkdir");
        assert!(matches!(
            identify(&layout, || true),
            Err(Error::UnexpectedFileType { .. })
        ));
    }

    #[test]
    fn a_marker_of_another_version_or_content_is_not_taken_for_ours() {
        let (_dir, layout) = layout();
        fs::create_dir_all(layout.root()).expect("mkdir");
        fs::write(layout.marker(), "snapcache-store 9\n").expect("marker");
        assert!(matches!(
            identify(&layout, || true),
            Err(Error::UnsupportedVersion { found: 9, .. })
        ));
        fs::write(layout.marker(), "my notes\n").expect("marker");
        assert!(matches!(
            identify(&layout, || true),
            Ok(Found::Foreign(found)) if found[0].starts_with("snapcache-store (")
        ));
    }

    #[test]
    fn a_marker_reads_the_same_whatever_follows_or_is_missing() {
        let (_dir, layout) = layout();
        fs::create_dir_all(layout.root()).expect("mkdir");
        let marked = |content: &[u8]| {
            fs::write(layout.marker(), content).expect("marker");
            identify_seen(&layout, true, None, || true).ok()
        };
        assert_eq!(marked(marker_content().as_bytes()), Some(Found::Marked));
        // Longer than what is read: only the first line counts.
        let mut long = b"snapcache-store 1\n".to_vec();
        long.resize(4096, b'x');
        assert_eq!(marked(&long), Some(Found::Marked));
        // Empty, or cut inside the magic: not ours.
        for content in [&b""[..], b"snapcache-st"] {
            assert!(
                matches!(marked(content), Some(Found::Foreign(_))),
                "{content:?}"
            );
        }
        // Told the root is a directory: the marker still decides.
        fs::remove_file(layout.marker()).expect("rm");
        assert_eq!(
            identify_seen(&layout, true, None, || true).ok(),
            Some(Found::Empty)
        );
    }

    /// A marker verified under an identity is not read again under it (here
    /// the file is gone and the answer is still "marked": nothing was
    /// opened); under another identity, or before it verified, it is read.
    #[cfg(unix)]
    #[test]
    fn a_verified_marker_is_not_read_again_under_the_same_identity() {
        let (_dir, layout) = layout();
        fs::create_dir_all(layout.root()).expect("mkdir");
        fs::write(layout.marker(), marker_content()).expect("marker");
        let id = FileId::of(&fs::symlink_metadata(layout.marker()).expect("lstat"))
            .expect("an identity on Unix");
        let verified = VerifiedMarker::default();
        assert!(!verified.is(id));
        let found = identify_seen(&layout, true, Some((id, &verified)), || true);
        assert_eq!(found.ok(), Some(Found::Marked));
        assert!(verified.is(id), "remembered once read");
        fs::remove_file(layout.marker()).expect("rm");
        let found = identify_seen(&layout, true, Some((id, &verified)), || true);
        assert_eq!(found.ok(), Some(Found::Marked), "not read again");
        // A foreign file under another identity is read, and not remembered.
        fs::write(layout.marker(), b"someone else's\n").expect("write");
        let other = FileId::of(&fs::symlink_metadata(layout.marker()).expect("lstat"))
            .expect("an identity on Unix");
        assert_ne!(other, id);
        let found = identify_seen(&layout, true, Some((other, &verified)), || true);
        assert!(matches!(found, Ok(Found::Foreign(_))), "{found:?}");
        assert!(!verified.is(other) && verified.is(id));
    }

    #[test]
    fn read_up_to_stops_at_the_length_or_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        fs::write(&path, b"0123456789").expect("write");
        let read = |len| read_up_to(fs::File::open(&path).expect("open"), len).expect("read");
        assert_eq!(read(4), b"0123");
        assert_eq!(read(10), b"0123456789");
        assert_eq!(read(20), b"0123456789", "an earlier end");
        assert_eq!(read(0), b"");
    }

    #[test]
    fn mark_writes_the_tag_and_the_marker() {
        let (_dir, layout) = layout();
        fs::create_dir_all(layout.tmp_dir()).expect("mkdir");
        mark(&layout, &Durable::default(), None).expect("mark");
        assert_eq!(
            fs::read_to_string(layout.marker()).expect("marker"),
            "snapcache-store 1\n"
        );
        let tag = fs::read_to_string(layout.cachedir_tag()).expect("tag");
        assert!(tag.starts_with("Signature: 8a477f597d28d172789f06886806bc55\n# "));
        assert_eq!(identify(&layout, || false).ok(), Some(Found::Marked));
    }
}
