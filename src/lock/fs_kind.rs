//! Which kind of filesystem the store lives on, to choose a lock backend.
//!
//! Advisory locks are unreliable on network and pass-through filesystems:
//! NFS emulates `flock` through NLM (lost on server restarts, silently local
//! with `nolock`), CIFS/SMB maps it to oplocks or not at all, 9p (WSL's
//! drvfs) and FUSE (sshfs) may accept the call and lock nothing. There the
//! lease backend is chosen. Detection uses rustix's safe `statfs`: its
//! magic number on Linux, its type name on macOS. On Windows a path on a
//! network share (`\\server\share\...`) is recognised by its prefix; a
//! share mapped to a drive letter is not (telling that needs a Win32 call,
//! hence `unsafe`). macOS and Windows are untested (docs/limitations.md).

use std::path::Path;

/// A filesystem where advisory locks cannot be trusted, by name.
pub(crate) fn unreliable_lock_filesystem(path: &Path) -> Option<&'static str> {
    detect(path)
}

#[cfg(target_os = "linux")]
fn detect(path: &Path) -> Option<&'static str> {
    classify(filesystem_magic(path)?)
}

/// macOS names the filesystem type (`f_fstypename`), as `mount` shows it.
#[cfg(target_vendor = "apple")]
fn detect(path: &Path) -> Option<&'static str> {
    for candidate in path.ancestors() {
        match rustix::fs::statfs(candidate) {
            Ok(s) => {
                // A NUL-terminated C string in a fixed array; `c_char` is
                // `i8` there, so each byte is taken as it is.
                let name: Vec<u8> = s
                    .f_fstypename
                    .iter()
                    .take_while(|&&c| c != 0)
                    .map(|&c| c as u8)
                    .collect();
                return classify_name(&String::from_utf8_lossy(&name));
            }
            Err(
                rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::ACCESS,
            ) => continue,
            Err(_) => return None,
        }
    }
    None
}

/// A path on a network share: `\\server\share\...` or its verbatim form
/// `\\?\UNC\server\share\...` (SMB, or WebDAV through the redirector).
#[cfg(windows)]
fn detect(path: &Path) -> Option<&'static str> {
    use std::path::{Component, Prefix};
    match path.components().next() {
        Some(Component::Prefix(p)) => match p.kind() {
            Prefix::UNC(..) | Prefix::VerbatimUNC(..) => Some("smb"),
            _ => None,
        },
        _ => None,
    }
}

/// Elsewhere (other Unix systems, untested): advisory locks are used unless
/// the lease backend is requested.
#[cfg(not(any(target_os = "linux", target_vendor = "apple", windows)))]
fn detect(_path: &Path) -> Option<&'static str> {
    None
}

/// Maps a filesystem type name, as macOS's `statfs` gives it, to an
/// unreliable filesystem.
#[cfg_attr(not(target_vendor = "apple"), allow(dead_code))]
pub(crate) fn classify_name(name: &str) -> Option<&'static str> {
    Some(match name {
        "nfs" => "nfs",
        "smbfs" => "smb",
        "afpfs" => "afp",
        "webdav" => "webdav",
        // macFUSE and its predecessors: "macfuse", "osxfuse", "osxfusefs".
        n if n.contains("fuse") => "fuse",
        _ => return None,
    })
}

/// Maps a `statfs` magic number (Linux) to the name of an unreliable
/// filesystem.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) fn classify(magic: i64) -> Option<&'static str> {
    // Values from linux/magic.h and statfs(2).
    Some(match magic {
        0x6969 => "nfs",
        0x517B => "smb",
        0xFF53_4D42 => "cifs",
        0xFE53_4D42 => "smb2",
        0x0102_1997 => "9p",
        0x6573_5546 => "fuse",
        0x00C3_6400 => "ceph",
        0x5346_414F => "afs",
        0x7375_7245 => "coda",
        _ => return None,
    })
}

#[cfg(target_os = "linux")]
fn filesystem_magic(path: &Path) -> Option<i64> {
    // The store may not exist yet: ask about the nearest existing ancestor.
    // It usually does (a write creates it before taking the lock), so the
    // path itself is asked first, without an existence check of its own.
    for candidate in path.ancestors() {
        match rustix::fs::statfs(candidate) {
            // `f_type` is `i64` on 64-bit targets and narrower elsewhere.
            #[allow(clippy::useless_conversion)]
            Ok(s) => return Some(i64::from(s.f_type)),
            // Not there (or not reachable): as `exists()` judged it
            // before, try the parent.
            Err(
                rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::ACCESS,
            ) => {
                continue;
            }
            Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_and_pass_through_filesystems_are_recognised() {
        assert_eq!(classify(0x6969), Some("nfs"));
        assert_eq!(classify(0xFF53_4D42), Some("cifs"));
        assert_eq!(classify(0xFE53_4D42), Some("smb2"));
        assert_eq!(classify(0x0102_1997), Some("9p"));
        assert_eq!(classify(0x6573_5546), Some("fuse"));
    }

    #[test]
    fn local_filesystems_are_not() {
        for magic in [
            0xEF53,      /* ext4 */
            0x0102_1994, /* tmpfs */
            0x5846_5342, /* xfs */
            0x9123_683E, /* btrfs */
        ] {
            assert_eq!(classify(magic), None, "{magic:#x}");
        }
    }

    #[test]
    fn macos_type_names_of_network_and_fuse_filesystems_are_recognised() {
        for (name, expected) in [
            ("nfs", Some("nfs")),
            ("smbfs", Some("smb")),
            ("afpfs", Some("afp")),
            ("webdav", Some("webdav")),
            ("macfuse", Some("fuse")),
            ("osxfuse", Some("fuse")),
            ("apfs", None),
            ("hfs", None),
            ("msdos", None),
            ("devfs", None),
            ("", None),
        ] {
            assert_eq!(classify_name(name), expected, "{name:?}");
        }
    }

    #[test]
    fn this_test_directory_is_on_a_local_filesystem() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            unreliable_lock_filesystem(&dir.path().join("not-yet-created")),
            None
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_path_not_there_yet_is_judged_by_its_nearest_existing_ancestor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let here = filesystem_magic(dir.path());
        assert!(here.is_some(), "statfs of an existing directory answers");
        assert_eq!(filesystem_magic(&dir.path().join("a/b/c")), here);
        // A file on the way (ENOTDIR) is passed over like a missing entry.
        assert_eq!(filesystem_magic(&file.join("below")), here);
        // /proc is procfs, not the temp directory's filesystem: the path
        // itself is asked, not only an ancestor.
        assert_eq!(filesystem_magic(Path::new("/proc/self")), Some(0x9fa0));
    }
}
