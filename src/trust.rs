//! Whom a store trusts: only what its owner (or root) controls.
//!
//! # Rule (like OpenSSH's `StrictModes`, git's `safe.directory`)
//!
//! Before every read and every write, [`check_store`] looks at the store
//! root, `snapshots/`, `tmp/`, `commits/` and, when present, `current`,
//! `lock`, `lock.holder`, `lease`, `lease.break`, the marker and
//! `CACHEDIR.TAG`:
//!
//! - none of them may be writable by group or others (a reader would
//!   otherwise serve what another user planted, and a writer would write
//!   where another user points it);
//! - each must belong to the store root's owner or to root;
//! - the directories must be directories and the files regular files,
//!   judged without following a link (only the root itself may be a
//!   symlink: the user chose where the store lives);
//! - a writer must *be* the root's owner (root included): files it created
//!   would otherwise belong to someone the owner cannot overrule, and lock
//!   the owner out.
//!
//! The files the check cannot name in advance, the snapshot a read serves
//! and a commit record that is followed, are held to the first two rules
//! on their opened descriptor ([`refuse_untrusted_file`]).
//!
//! Reading a store of root's (a system-wide cache) is allowed when nobody
//! but root can write it; a store of another user's is read only when the
//! caller trusts that user (`StoreOptions::trust_owner`), as git reads a
//! repository of another user's only when `safe.directory` lists it.
//!
//! The root is judged on an opened descriptor (`O_DIRECTORY`; `O_PATH` on
//! Linux, which needs no read permission), and every entry below it by
//! `lstat` relative to that checked descriptor (`fstatat` with
//! `AT_SYMLINK_NOFOLLOW`): one system call per entry, nothing opened (a FIFO
//! or a device is never opened), and a link is seen as a link. Once the
//! directories are known to be the owner's alone, nobody else can swap the
//! entries in them after the check.
//!
//! Not checked: the directories above the root, and ACLs beyond what the
//! mode bits show (on Linux, a POSIX ACL granting write shows up in the group
//! bits, which are then refused). On Windows there are no owner and mode
//! bits to check: the check is a no-op and the store relies on the ACL of
//! the directory it lives in (by default the user's own profile).
//!
//! ```text
//! $ snapcache --store /tmp/shared show
//! snapcache: error: refusing to use /tmp/shared (owner uid 1001 (mallory), mode 0777): ...
//! ```

use std::path::Path;

use crate::durable::FileId;
use crate::error::Result;
use crate::layout::Layout;

/// What the caller is about to do with the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read only: any owner, as long as nobody else can write.
    Read,
    /// Write: the caller must also be the owner.
    Write,
}

/// Which of the store's directories the check found to be directories: the
/// root (followed, like the user's own symlink) and `snapshots/` and `tmp/`
/// (not followed). A write passes this on to the creation of the store's
/// directories, so that it does not stat again what was judged a moment
/// ago; what was not seen (missing, or a platform without the check) is
/// looked at and created there as before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) root: bool,
    pub(crate) snapshots: bool,
    pub(crate) tmp: bool,
    /// Whose files the store may serve, from the root's owner.
    pub(crate) owner: Owner,
    /// The marker's identity as the check saw it, when it is there (so a
    /// reader that verified this very file before need not read it again).
    pub(crate) marker: Option<FileId>,
}

/// Whose files a store may serve: its root's owner's, and root's. Unknown
/// (`None`) where there are no owners to check (Windows) or no root yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Owner(pub(crate) Option<u32>);

impl Owner {
    /// A writer's store: the trust check made sure the writer is the
    /// store's owner, so its own uid is the owner's.
    pub(crate) fn this_writer() -> Owner {
        imp::this_writer()
    }
}

/// Checks that the store at `layout` is controlled by its owner alone (and,
/// for `Write`, that the caller is that owner). A store that does not exist
/// yet passes (there is nothing to trust or distrust).
pub(crate) fn check_store(layout: &Layout, access: Access, trusted: &[u32]) -> Result<Seen> {
    imp::check_store(layout, access, trusted)
}

/// Refuses a store file below the checked directories that its group or
/// others can write, or that belongs to neither `owner` nor root, judged
/// on the metadata of its opened descriptor (no extra system call).
/// [`check_store`] cannot name these files in advance: a snapshot, whose
/// bytes `show` copies from the file again after they verified, and a
/// commit record, which readers follow as the pointer. Their directories
/// being the owner's alone, nobody else can add one now; this catches one
/// planted while a directory was open to others (its planter can still
/// rewrite it), and a permission the owner added by hand.
pub(crate) fn refuse_untrusted_file(
    path: &Path,
    meta: &std::fs::Metadata,
    owner: Owner,
) -> Result<()> {
    imp::refuse_untrusted_file(path, meta, owner)
}

/// Refuses to create a store's directories in `dir` (the nearest existing
/// directory above a missing store root, or one that appeared there while
/// the root was being created) unless it belongs to this process's user or
/// to root. What a writer creates is its own: root (`sudo`) making
/// `~/.cache/...` for a user would leave directories that user can no
/// longer write in, and a directory another user made on the way (in a
/// shared `/tmp`, say) is one that user can empty and refill.
pub(crate) fn refuse_foreign_parent(dir: &Path, meta: &std::fs::Metadata) -> Result<()> {
    imp::refuse_foreign_parent(dir, meta)
}

/// Refuses a symbolic link at `path` that belongs to another user (not
/// root): a store is never made where someone else's link points (one in a
/// shared `/tmp`, to a directory of root's, made root create the store
/// there). The user's own links are followed, as the user chose them.
pub(crate) fn refuse_foreign_link(path: &Path) -> Result<()> {
    imp::refuse_foreign_link(path)
}

/// Whose files the store at `layout` may serve (its root's owner, the
/// root followed like the user's symlink, as [`check_store`] judges it),
/// for a caller that did not keep [`Seen::owner`].
pub(crate) fn store_owner(layout: &Layout) -> Result<Owner> {
    imp::store_owner(layout.root())
}

/// The uid of user `name` (Unix: from `/etc/passwd`; users of NSS
/// directories are given by uid). `None` where the user is unknown, and on
/// platforms without uids.
pub(crate) fn uid_of_user(name: &str) -> Option<u32> {
    imp::uid_of_user(name)
}

#[cfg(unix)]
mod imp {
    use std::io::Read;
    use std::os::fd::{AsFd, OwnedFd};
    use std::path::Path;

    use rustix::fs::{self as rfs, FileType, Mode, OFlags, Stat};
    use rustix::io::Errno;

    use super::{Access, Owner, Seen};
    use crate::durable::{FileId, FileKind};
    use crate::error::{Error, Result};
    use crate::layout::{self, Layout};

    /// Directories directly in the root. `commits/` holds the lease
    /// backend's commit records, which readers and writers follow as the
    /// truth beyond `current`: whoever can write there could roll readers
    /// back, or hand a writer a retention list that makes it delete the
    /// owner's history.
    const DIRS: [&str; 3] = [layout::SNAPSHOTS, layout::TMP, layout::COMMITS];
    /// Files directly in the root, checked when present.
    const FILES: [&str; 7] = [
        layout::CURRENT,
        layout::LOCK,
        layout::LOCK_HOLDER,
        layout::LEASE,
        layout::LEASE_BREAK,
        layout::MARKER,
        layout::CACHEDIR_TAG,
    ];

    /// How directories are opened to be judged: on Linux `O_PATH`, which
    /// needs no read permission (a reader of a system-wide store may not be
    /// allowed to list `tmp/`) and opens nothing; elsewhere read-only.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const DIR_OPEN: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const DIR_OPEN: OFlags = OFlags::RDONLY
        .union(OFlags::DIRECTORY)
        .union(OFlags::CLOEXEC)
        .union(OFlags::NONBLOCK);

    pub(super) fn check_store(layout: &Layout, access: Access, trusted: &[u32]) -> Result<Seen> {
        let root = layout.root();
        let me = rustix::process::geteuid().as_raw();
        // The root may be a symlink (the user chose it): followed here only.
        let dir = match rfs::open(root, DIR_OPEN, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(Seen::default()),
            Err(Errno::NOTDIR) => {
                return Err(match std::fs::metadata(root) {
                    // The root itself is a file (or a FIFO, ...).
                    Ok(m) => wrong_kind(root, FileKind::of(&m), FileKind::Directory),
                    // A component on the way is a file: there is nothing
                    // at the root to call a kind of file.
                    Err(e) => Error::io("open the store directory", root, e),
                });
            }
            Err(e) => return Err(Error::io("open the store directory", root, e.into())),
        };
        let st = stat_fd(&dir, root)?;
        let owner = st.st_uid;
        refuse_writable_by_others(root, &st)?;
        // Like git's `safe.directory`: another user's store serves what
        // that user put there; it is read only when they are trusted.
        if access == Access::Read && owner != me && owner != 0 && !trusted.contains(&owner) {
            return Err(Error::OwnerNotTrusted {
                path: root.to_path_buf(),
                owner_uid: owner,
                owner_name: user_name(owner),
                reader_uid: me,
            });
        }
        if access == Access::Write && me != owner {
            return Err(untrusted(
                root,
                &st,
                format!(
                    "it belongs to {} but this process runs as {}; a writer must be the store's owner, or the files it creates would belong to another user and lock the owner out. Run the write as {}, or use another store directory",
                    who(owner),
                    who(me),
                    user_name(owner).unwrap_or_else(|| format!("uid {owner}")),
                ),
            ));
        }
        let mut seen = Seen {
            root: true,
            owner: Owner(Some(owner)),
            ..Seen::default()
        };
        // The marker's status, taken once: it decides whether the root is
        // listed below, and is judged with the other files.
        let marker = stat_entry(&dir, layout::MARKER);
        if matches!(marker, Err(Errno::NOENT)) && holds_foreign_names(root) {
            // Not a store at all (a project directory, `/`): the caller
            // says so, naming what is there. Judging its `tmp/` first would
            // advise making a store inside that directory's own tmp.
            return Ok(seen);
        }
        for name in DIRS {
            let path = root.join(name);
            // By lstat relative to the checked root, like the files: the
            // same verdict as judging an opened descriptor (which was closed
            // right after), in one call instead of three, and it needs no
            // read permission on the directory (a read-only store whose
            // tmp/ is the owner's alone).
            let st = match stat_entry(&dir, name) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(Error::io("check the store directory", &path, e.into())),
            };
            let found = kind(&st);
            if found != FileKind::Directory {
                return Err(wrong_kind(&path, found, FileKind::Directory));
            }
            judge(&path, &st, owner)?;
            match name {
                layout::SNAPSHOTS => seen.snapshots = true,
                layout::TMP => seen.tmp = true,
                _ => {}
            }
        }
        for name in FILES {
            let path = root.join(name);
            let looked = if name == layout::MARKER {
                marker
            } else {
                stat_entry(&dir, name)
            };
            let st = match looked {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(Error::io("check the store file", &path, e.into())),
            };
            let found = kind(&st);
            if found != FileKind::Regular {
                return Err(wrong_kind(&path, found, FileKind::Regular));
            }
            judge(&path, &st, owner)?;
            if name == layout::MARKER {
                seen.marker = Some(FileId::of_stat(&st));
            }
        }
        Ok(seen)
    }

    /// Whether the root holds a name a store never has (asked only of a
    /// root without a marker: stores this release made have one). A root
    /// that cannot be listed is judged entry by entry as usual.
    fn holds_foreign_names(root: &Path) -> bool {
        std::fs::read_dir(root).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| !layout::is_store_name(&e.file_name()))
        })
    }

    /// The status of an entry of `dir`, without following a link and
    /// without opening it (`fstatat` with `AT_SYMLINK_NOFOLLOW`; a FIFO or
    /// device is never opened).
    fn stat_entry(dir: &OwnedFd, name: &str) -> rustix::io::Result<Stat> {
        rfs::statat(dir, name, rfs::AtFlags::SYMLINK_NOFOLLOW)
    }

    fn stat_fd(fd: impl AsFd, path: &Path) -> Result<Stat> {
        rfs::fstat(fd).map_err(|e| Error::io("check the store directory", path, e.into()))
    }

    fn kind(st: &Stat) -> FileKind {
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => FileKind::Regular,
            FileType::Directory => FileKind::Directory,
            FileType::Symlink => FileKind::Symlink,
            FileType::Fifo => FileKind::Fifo,
            FileType::Socket => FileKind::Socket,
            FileType::CharacterDevice => FileKind::CharDevice,
            FileType::BlockDevice => FileKind::BlockDevice,
            _ => FileKind::Unknown,
        }
    }

    /// Group/other write refused; then the owner must be the store's owner
    /// or root.
    fn judge(path: &Path, st: &Stat, store_owner: u32) -> Result<()> {
        refuse_writable_by_others(path, st)?;
        if st.st_uid != store_owner && st.st_uid != 0 {
            return Err(not_the_owners(path, st.st_uid, mode_bits(st), store_owner));
        }
        Ok(())
    }

    fn not_the_owners(path: &Path, uid: u32, mode: u32, store_owner: u32) -> Error {
        untrusted_parts(
            path,
            uid,
            mode,
            format!(
                "it belongs to {}, not to the store's owner ({}) or root, so that user controls what the store reads and writes here. If the store is yours, remove it or take it over (chown), or use another store directory",
                who(uid),
                who(store_owner),
            ),
        )
    }

    pub(super) fn this_writer() -> Owner {
        Owner(Some(rustix::process::geteuid().as_raw()))
    }

    pub(super) fn refuse_untrusted_file(
        path: &Path,
        meta: &std::fs::Metadata,
        owner: Owner,
    ) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        refuse_writable(path, meta.uid(), meta.mode())?;
        match owner.0 {
            Some(owner) if meta.uid() != owner && meta.uid() != 0 => {
                Err(not_the_owners(path, meta.uid(), meta.mode(), owner))
            }
            _ => Ok(()),
        }
    }

    pub(super) fn refuse_foreign_parent(dir: &Path, meta: &std::fs::Metadata) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let me = rustix::process::geteuid().as_raw();
        let owner = meta.uid();
        if owner == me || owner == 0 {
            return Ok(());
        }
        Err(untrusted_parts(
            dir,
            owner,
            meta.mode(),
            format!(
                "a store would be created in it, but it belongs to {} and this process runs as {}: the directories created there would belong to {} and lock its owner out of their own directory (as running a user's write through sudo would). Run the write as {}, or choose a store directory under one of your own",
                who(owner),
                who(me),
                who(me),
                user_name(owner).unwrap_or_else(|| format!("uid {owner}")),
            ),
        ))
    }

    pub(super) fn refuse_foreign_link(path: &Path) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return Ok(());
        };
        let me = rustix::process::geteuid().as_raw();
        if !meta.file_type().is_symlink() || meta.uid() == me || meta.uid() == 0 {
            return Ok(());
        }
        Err(untrusted_parts(
            path,
            meta.uid(),
            meta.mode(),
            format!(
                "it is a symbolic link of {}, not yours, so that user chose where a store made through it would go; use a path without it, or a directory of your own",
                who(meta.uid())
            ),
        ))
    }

    pub(super) fn store_owner(root: &Path) -> Result<Owner> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(root)
            .map(|m| Owner(Some(m.uid())))
            .map_err(|e| Error::io("check the store directory", root, e))
    }

    /// The mode of `st` as a `u32`: `st_mode` is a `u16` on macOS.
    #[allow(clippy::useless_conversion)] // a `u32` already on Linux
    fn mode_bits(st: &Stat) -> u32 {
        u32::from(st.st_mode)
    }

    fn refuse_writable_by_others(path: &Path, st: &Stat) -> Result<()> {
        refuse_writable(path, st.st_uid, mode_bits(st))
    }

    fn refuse_writable(path: &Path, uid: u32, mode: u32) -> Result<()> {
        let mode = mode & 0o7777;
        let by = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (false, false) => return Ok(()),
            (true, false) => "its group",
            (false, true) => "others",
            (true, true) => "its group and others",
        };
        let me = rustix::process::geteuid().as_raw();
        // `chmod go-w /tmp` would break every other user of a shared
        // directory, and a directory of someone else's is theirs to change.
        let fix = if mode & 0o1000 != 0 {
            format!(
                "it is a shared directory (sticky, like /tmp), not one for a store: use a directory of your own inside it (mkdir -m 700 {}/NAME)",
                path.display()
            )
        } else if uid != me && me != 0 {
            format!(
                "it belongs to {}, so only they can remove that permission: use a directory of your own",
                who(uid)
            )
        } else {
            format!(
                "remove that permission (chmod go-w {}), or use another store directory",
                path.display()
            )
        };
        Err(untrusted_parts(
            path,
            uid,
            mode,
            format!(
                "it is writable by {by}, so another user could plant what this store serves or redirect what it writes; {fix}"
            ),
        ))
    }

    fn untrusted(path: &Path, st: &Stat, reason: String) -> Error {
        untrusted_parts(path, st.st_uid, mode_bits(st), reason)
    }

    fn untrusted_parts(path: &Path, uid: u32, mode: u32, reason: String) -> Error {
        Error::UntrustedPath {
            path: path.to_path_buf(),
            owner_uid: uid,
            owner_name: user_name(uid),
            mode: mode & 0o7777,
            reason,
        }
    }

    fn wrong_kind(path: &Path, found: FileKind, expected: FileKind) -> Error {
        Error::UnexpectedFileType {
            path: path.to_path_buf(),
            found: found.describe(),
            expected: expected.describe(),
        }
    }

    /// `uid 1000 (alice)`.
    fn who(uid: u32) -> String {
        match user_name(uid) {
            Some(name) => format!("uid {uid} ({name})"),
            None => format!("uid {uid}"),
        }
    }

    /// The user name of `uid` from `/etc/passwd` (only for messages; users
    /// from NSS directories are shown by uid alone).
    pub(super) fn user_name(uid: u32) -> Option<String> {
        passwd_entries()?
            .into_iter()
            .find_map(|(name, id)| (id == uid).then_some(name))
    }

    /// The uid of the user called `name` in `/etc/passwd`.
    pub(super) fn uid_of_user(name: &str) -> Option<u32> {
        passwd_entries()?
            .into_iter()
            .find_map(|(entry, uid)| (entry == name).then_some(uid))
    }

    /// `(name, uid)` of each well-formed line of `/etc/passwd`. Read whole,
    /// but at most 4 MiB of it: the file is the system's, yet a bound keeps
    /// a replaced or endless one (a FIFO, `/dev/zero` bind-mounted) from
    /// stalling a message.
    fn passwd_entries() -> Option<Vec<(String, u32)>> {
        let mut text = String::new();
        std::fs::File::open("/etc/passwd")
            .ok()?
            .take(4 << 20)
            .read_to_string(&mut text)
            .ok()?;
        Some(
            text.lines()
                .filter_map(|line| {
                    let mut fields = line.split(':');
                    let name = fields.next()?;
                    let uid = fields.nth(1)?.parse::<u32>().ok()?;
                    Some((name.to_string(), uid))
                })
                .collect(),
        )
    }
}

#[cfg(not(unix))]
mod imp {
    use std::path::Path;

    use super::{Access, Owner, Seen};
    use crate::error::Result;
    use crate::layout::Layout;

    /// Windows has no owner/mode bits to check; ACLs are not inspected (see
    /// docs/limitations.md). The open gate still refuses links and
    /// non-regular files.
    pub(super) fn this_writer() -> Owner {
        Owner(None)
    }

    pub(super) fn uid_of_user(_name: &str) -> Option<u32> {
        None
    }

    pub(super) fn refuse_untrusted_file(
        _path: &Path,
        _meta: &std::fs::Metadata,
        _owner: Owner,
    ) -> Result<()> {
        Ok(())
    }

    pub(super) fn refuse_foreign_parent(_dir: &Path, _meta: &std::fs::Metadata) -> Result<()> {
        Ok(())
    }

    pub(super) fn refuse_foreign_link(_path: &Path) -> Result<()> {
        Ok(())
    }

    pub(super) fn store_owner(_root: &Path) -> Result<Owner> {
        Ok(Owner(None))
    }

    pub(super) fn check_store(_layout: &Layout, _access: Access, _trusted: &[u32]) -> Result<Seen> {
        Ok(Seen::default())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn an_owner_is_trusted_by_name_or_uid_and_an_unknown_name_is_refused() {
        assert_eq!(uid_of_user("root"), Some(0));
        let options = crate::StoreOptions::new("/nonexistent")
            .trust_owner_named("root")
            .unwrap()
            .trust_owner_named("4242")
            .unwrap();
        assert_eq!(options.trusted_owners, vec![0, 4242]);
        let err = crate::StoreOptions::new("/nonexistent")
            .trust_owner_named("no-such-user-snapcache")
            .unwrap_err();
        assert!(matches!(err, crate::Error::InvalidOption(_)), "{err}");
        assert!(
            err.to_string().contains("\"no-such-user-snapcache\""),
            "{err}"
        );
    }

    #[test]
    fn root_has_a_name_in_passwd() {
        assert_eq!(super::imp::user_name(0).as_deref(), Some("root"));
    }

    #[test]
    fn the_check_says_which_directories_it_saw() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path().join("store"));
        let check = || check_store(&layout, Access::Write, &[]).expect("trusted");
        assert_eq!(check(), Seen::default(), "no root: nothing seen");
        std::fs::create_dir(layout.root()).expect("mkdir");
        // The owner is the root's: this process made it.
        let me = Owner(Some(rustix::process::geteuid().as_raw()));
        let seen = |root, snapshots, tmp| Seen {
            root,
            snapshots,
            tmp,
            owner: me,
            marker: None,
        };
        assert_eq!(check(), seen(true, false, false));
        std::fs::create_dir(layout.tmp_dir()).expect("mkdir");
        assert_eq!(check(), seen(true, false, true));
        std::fs::create_dir(layout.snapshots_dir()).expect("mkdir");
        assert_eq!(check(), seen(true, true, true));
        // The root through the user's symlink still counts as seen.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(layout.root(), &link).expect("symlink");
        assert_eq!(
            check_store(&Layout::new(link), Access::Write, &[]).expect("trusted"),
            seen(true, true, true)
        );
    }
}
