//! Creating a store's root directory and the missing directories above it.
//!
//! `mkdir -p` accepts whatever it finds on the way. A writer must not: a
//! directory another user made there a moment earlier (in a shared `/tmp`)
//! is one that user can empty and refill, and directories root creates in
//! a user's home (`sudo`, with `~` expanded by the user's shell) lock that
//! user out of it. So [`create`] starts from the nearest directory that
//! exists, which must be this user's or root's
//! ([`trust::refuse_foreign_parent`]), and makes each missing directory
//! itself, one `mkdir` at a time, exactly `0700` whatever the umask. One it
//! finds made by someone else meanwhile is held to the same rule; the root
//! itself then goes through the store's full trust check again, since what
//! the writer judged before was nothing at all.
//!
//! ```text
//! $ sudo snapcache --store ~alice/.cache/kopi refresh --from metadata.json
//! snapcache: error: refusing to use /home/alice/.cache (owner uid 1000 (alice), mode 0755): a store would be created in it, but ...
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::durable::Durable;
use crate::error::{Error, Result};
use crate::trust;

const ACTION: &str = "create the store directory";

/// Creates the directory `root` (missing when the writer looked) and every
/// missing directory above it. Returns with `root` a directory, made here
/// or by someone else meanwhile: the caller judges it again either way.
pub(crate) fn create(root: &Path, durable: &Durable) -> Result<()> {
    // `newdir/.` names `newdir`; made as written, its `mkdir` would fail
    // (the `.` of a directory not made yet). Components drop such dots.
    let root: PathBuf = root.components().collect();
    let root = root.as_path();
    let missing = missing_below_existing(root)?;
    // `newdir/..` would make `newdir`, then find its `..` (the directory
    // above) and leave `newdir` behind whatever became of the store. A
    // `..` is only meaningful through a directory that exists.
    if let Some(dir) = missing
        .iter()
        .find(|d| d.components().next_back() == Some(std::path::Component::ParentDir))
    {
        return Err(Error::io(
            ACTION,
            root,
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the path goes up (`..`) from {}, which does not exist, so nothing was created; give the store's path without `..`",
                    dir.parent().map_or(dir.as_path(), |p| p).display()
                ),
            ),
        ));
    }
    crate::test_hooks::stall_before_root_creation();
    for dir in missing.iter().rev() {
        match durable.make_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Made by someone else since it was found missing (or a
                // link planted there): judge it like the existing parent.
                let meta = existing_dir(dir)?;
                trust::refuse_foreign_link(dir)?;
                if dir != root {
                    trust::refuse_foreign_parent(dir, &meta)?;
                }
            }
            Err(e) => return Err(Error::io(ACTION, dir.as_path(), e)),
        }
    }
    Ok(())
}

/// The directories from `root` up to (not including) the nearest one that
/// exists, nearest-to-root first, once that existing one has passed
/// [`trust::refuse_foreign_parent`].
fn missing_below_existing(root: &Path) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut at = root.to_path_buf();
    loop {
        match fs::metadata(&at) {
            Ok(meta) if meta.is_dir() => {
                trust::refuse_foreign_link(&at)?;
                trust::refuse_foreign_parent(&at, &meta)?;
                return Ok(missing);
            }
            Ok(_) => return Err(Error::io(ACTION, at, not_a_directory())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(target) = dangling_link(&at) {
                    return Err(Error::io(ACTION, at, dangling(&target)));
                }
            }
            Err(e) => return Err(Error::io(ACTION, at, e)),
        }
        let parent = match at.parent() {
            // A relative path's first component lies in the working directory.
            Some(p) if p.as_os_str().is_empty() => PathBuf::from("."),
            Some(p) => p.to_path_buf(),
            // `/` itself missing: nothing above to create it in.
            None => return Err(Error::io(ACTION, at, io::ErrorKind::NotFound.into())),
        };
        missing.push(std::mem::replace(&mut at, parent));
    }
}

/// The metadata of `dir`, which must now be a directory (followed: the
/// user's own link to it counts).
fn existing_dir(dir: &Path) -> Result<fs::Metadata> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(meta),
        Ok(_) => Err(Error::io(ACTION, dir, not_a_directory())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => match dangling_link(dir) {
            Some(target) => Err(Error::io(ACTION, dir, dangling(&target))),
            None => Err(Error::io(ACTION, dir, e)),
        },
        Err(e) => Err(Error::io(ACTION, dir, e)),
    }
}

/// Where `path` points, when it is a symbolic link to nothing.
fn dangling_link(path: &Path) -> Option<PathBuf> {
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_symlink() {
        return None;
    }
    fs::read_link(path).ok()
}

fn dangling(target: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "it is a symbolic link to {}, which does not exist (a store is created only in a directory that exists or can be made, never through a link); create that directory, or point the link at one",
            target.display()
        ),
    )
}

fn not_a_directory() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotADirectory,
        "it exists but is not a directory",
    )
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn durable() -> Durable {
        Durable::default()
    }

    #[test]
    fn dot_components_of_a_missing_path_are_understood_and_dot_dot_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dotted = dir.path().join("new/./store/.");
        create(&dotted, &durable()).expect("created");
        assert!(dir.path().join("new/store").is_dir());
        for up in ["other/..", "up/../store"] {
            let err = create(&dir.path().join(up), &durable()).unwrap_err();
            let message = err.to_string();
            assert!(message.contains("without `..`"), "{up}: {message}");
            let first = up.split('/').next().unwrap();
            assert!(!dir.path().join(first).exists(), "{up}: {first} made");
        }
    }

    #[test]
    fn every_missing_directory_is_made_owner_only_whatever_the_umask() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("a/b/store");
        create(&root, &durable()).expect("created");
        for d in ["a", "a/b", "a/b/store"] {
            let mode = fs::metadata(dir.path().join(d))
                .expect("made")
                .permissions()
                .mode();
            assert_eq!(mode & 0o7777, 0o700, "{d}");
        }
    }

    #[test]
    fn a_dangling_link_at_the_root_is_named_with_its_target() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("store");
        std::os::unix::fs::symlink("missing/there", &root).expect("symlink");
        let err = create(&root, &durable()).expect_err("dangling");
        let text = err.to_string();
        assert!(text.contains("symbolic link to missing/there"), "{text}");
        assert!(!dir.path().join("missing").exists(), "nothing created");
    }

    #[test]
    fn a_file_on_the_way_is_not_a_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("f"), b"x").expect("file");
        let err = create(&dir.path().join("f/store"), &durable()).expect_err("file");
        assert!(err.to_string().contains("not a directory"), "{err}");
    }
}
