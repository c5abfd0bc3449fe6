//! What a user can do about an error, as data: the host program renders it
//! in its own terms (its own commands, flags and settings).
//!
//! The library's messages ([`Error`]'s `Display`) describe the remedy in
//! words that fit any program ("roll back to an intact generation"); they
//! name no snapcache command, flag or environment variable, because the
//! program showing them may have none. A program with commands for these
//! remedies maps [`Error::hint`] to them: the snapcache CLI prints
//! "hint: run `snapcache verify`", Kopi could print "run `kopi cache verify`".

use std::io;

use crate::error::Error;

/// A remedy for an [`Error`], for the host program to phrase.
///
/// ```
/// use snapcache::{Error, Hint};
/// let e = Error::NoStore { root: "/tmp/kopi/cache".into() };
/// let advice = match e.hint() {
///     Some(Hint::PublishFirst) => "run `kopi cache refresh`",
///     _ => "",
/// };
/// assert_eq!(advice, "run `kopi cache refresh`");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Hint {
    /// Nothing is published yet: publish a first snapshot (a refresh), or
    /// open the store that holds the data.
    PublishFirst,
    /// A snapshot is damaged or missing: check which retained generations
    /// are intact (verify), then roll back to one or publish a new one.
    Verify,
    /// The pointer is damaged: keep a copy of the snapshots that may be
    /// needed, move the pointer aside (keeping it) and publish again, which
    /// starts a new history. For a damaged commit record (lease backend,
    /// the error's path is `commits/<n>`): move that record aside; the
    /// history is kept.
    RepairPointer,
    /// The generation asked for is not retained: list the retained ones
    /// (history).
    History,
    /// The writer lock stayed busy: wait longer (raise the lock budget) or
    /// look at who holds it (status).
    LockTimeout,
    /// The store location cannot be used as it is (foreign, untrusted,
    /// wrong file type, newer format, no permission, read-only): choose
    /// another store directory.
    ChooseStore,
    /// The store belongs to another user, whom the caller does not trust:
    /// trust that owner if that is right, or choose a store of one's own.
    TrustOwner,
    /// The disk is full: collect unreferenced snapshots (gc), free space.
    FreeSpace,
    /// The payload is not JSON: publish it as raw bytes if that is intended.
    PublishRaw,
    /// A counter of the store is at its end (only an edited pointer gets
    /// there): clear the store, keeping a copy of what is needed, and
    /// publish again.
    ClearStore,
    /// The payload is larger than the size limit the caller set: raise the
    /// limit (and say where it is set) if the payload is meant to be this
    /// large.
    RaiseLimit,
    /// The generation is pinned (or too many are): unpin it (or another)
    /// first; the history shows which are pinned.
    Unpin,
}

impl Error {
    /// What the user can do about this error, for the host program to
    /// phrase in its own commands (see [`Hint`]); `None` when there is
    /// nothing beyond retrying or fixing the input.
    ///
    /// ```
    /// use snapcache::{Error, Hint};
    /// let e = Error::MissingSnapshot { path: "/c/snapshots/ab".into(), generation: 3 };
    /// assert_eq!(e.hint(), Some(Hint::Verify));
    /// ```
    pub fn hint(&self) -> Option<Hint> {
        // No wildcard: a new variant does not compile until it has a hint
        // (and a case in the message test below).
        match self {
            Error::NoStore { .. } => Some(Hint::PublishFirst),
            Error::CorruptPointer { .. } => Some(Hint::RepairPointer),
            Error::CorruptSnapshot { .. } | Error::MissingSnapshot { .. } => Some(Hint::Verify),
            Error::NoSuchGeneration { .. }
            | Error::NothingToRollBack { .. }
            | Error::ForgetCurrent { .. } => Some(Hint::History),
            Error::ForgetPinned { .. } | Error::PinLimit { .. } => Some(Hint::Unpin),
            Error::GenerationsExhausted { .. } | Error::CommitsExhausted { .. } => {
                Some(Hint::ClearStore)
            }
            Error::LockTimeout { .. } => Some(Hint::LockTimeout),
            Error::NotAStore { .. }
            | Error::UnsupportedVersion { .. }
            | Error::UnexpectedFileType { .. }
            | Error::UntrustedPath { .. } => Some(Hint::ChooseStore),
            Error::OwnerNotTrusted { .. } => Some(Hint::TrustOwner),
            Error::PayloadRejected { reason } if reason.contains(crate::payload::NOT_JSON) => {
                Some(Hint::PublishRaw)
            }
            Error::PayloadRejected { reason } => reason
                .starts_with(crate::payload::OVER_LIMIT)
                .then_some(Hint::RaiseLimit),
            Error::Io { source, .. } => match source.kind() {
                io::ErrorKind::PermissionDenied
                | io::ErrorKind::ReadOnlyFilesystem
                | io::ErrorKind::Unsupported => Some(Hint::ChooseStore),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Some(Hint::FreeSpace),
                _ => None,
            },
            Error::SourceFailed { .. }
            | Error::LeaseLost { .. }
            | Error::LockFileReplaced { .. }
            | Error::CommitConflict { .. }
            | Error::Interrupted { .. }
            | Error::UnexpectedShape { .. }
            | Error::InvalidOption(_)
            | Error::ObjectStoreConfig { .. }
            | Error::ObjectStoreRequest { .. }
            | Error::ObjectStoreUnsafe { .. }
            | Error::ObjectStoreConflict { .. } => None,
            Error::ObjectStoreUnsupported { .. } => Some(Hint::ChooseStore),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::lock::TimeoutSource;

    /// One of every variant (and every I/O kind with its own advice). The
    /// match has no wildcard: a new variant fails to compile here until it
    /// is added.
    fn every_error() -> Vec<Error> {
        let io = |kind| Error::Io {
            action: "create the temp file",
            path: "/c/tmp".into(),
            source: io::Error::from(kind),
            stage: crate::IoStage::BeforeCommit,
        };
        let all = vec![
            Error::NoStore { root: "/c".into() },
            Error::NotAStore {
                root: "/c".into(),
                found: vec!["notes.txt".into()],
            },
            Error::NotAStore {
                root: "/c".into(),
                found: vec![],
            },
            Error::CorruptPointer {
                path: "/c/current".into(),
                detail: "checksum mismatch".into(),
            },
            Error::UnsupportedVersion {
                path: "/c/current".into(),
                found: 9,
                supported: 1,
            },
            Error::CorruptSnapshot {
                path: "/c/snapshots/ab".into(),
                generation: 2,
                detail: "hash mismatch".into(),
            },
            Error::MissingSnapshot {
                path: "/c/snapshots/ab".into(),
                generation: 2,
            },
            Error::PayloadRejected {
                reason: crate::payload::not_json("expected value at line 1".into()),
            },
            Error::PayloadRejected {
                reason: "the payload is empty (0 bytes)".into(),
            },
            Error::SourceFailed {
                source: "upstream said 503".into(),
            },
            Error::LockTimeout {
                path: "/c/lock".into(),
                waited: Duration::from_secs(1),
                budget: Duration::from_secs(1),
                budget_source: TimeoutSource::Default,
                holder: None,
                lease: None,
            },
            Error::LockTimeout {
                path: "/c/lock".into(),
                waited: Duration::from_secs(1),
                budget: Duration::ZERO,
                budget_source: TimeoutSource::Caller,
                holder: None,
                lease: None,
            },
            Error::LeaseLost {
                path: "/c/lease".into(),
            },
            Error::LockFileReplaced {
                path: "/c/lock".into(),
            },
            Error::OwnerNotTrusted {
                path: "/srv/cache".into(),
                owner_uid: 1001,
                owner_name: Some("ci".into()),
                reader_uid: 1000,
            },
            Error::CommitConflict {
                path: "/c/commits/3".into(),
                generation: 3,
            },
            Error::Interrupted { during: "waiting" },
            Error::UnexpectedShape {
                path: "/c/snapshots/ab".into(),
                generation: 2,
                detail: "missing field".into(),
            },
            Error::NoSuchGeneration {
                root: "/c".into(),
                generation: 9,
                available: "1, 2".into(),
            },
            Error::NothingToRollBack {
                root: "/c".into(),
                current: 1,
            },
            Error::ForgetCurrent {
                root: "/c".into(),
                generation: 2,
            },
            Error::ForgetPinned {
                root: "/c".into(),
                generation: 3,
            },
            Error::PinLimit {
                root: "/c".into(),
                generation: 101,
                limit: 100,
            },
            Error::GenerationsExhausted {
                path: "/c/current".into(),
                last: u64::MAX,
            },
            Error::CommitsExhausted {
                path: "/c/current".into(),
                last: 1 << 63,
            },
            Error::InvalidOption("keep must be at least 1".into()),
            Error::UnexpectedFileType {
                path: "/c/current".into(),
                found: "a FIFO (named pipe)",
                expected: "a regular file",
            },
            Error::UntrustedPath {
                path: "/c".into(),
                owner_uid: 1000,
                owner_name: Some("kopi".into()),
                mode: 0o777,
                reason: "it is writable by others".into(),
            },
            Error::ObjectStoreConfig {
                detail:
                    "no credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must both be set"
                        .into(),
            },
            Error::ObjectStoreRequest {
                operation: "put",
                url: "http://127.0.0.1:7480/b/p/current".into(),
                status: Some(403),
                detail: "SignatureDoesNotMatch".into(),
            },
            Error::ObjectStoreRequest {
                operation: "get",
                url: "http://127.0.0.1:9/b/p/current".into(),
                status: None,
                detail: "connection refused".into(),
            },
            Error::ObjectStoreUnsupported {
                url: "s3://b/p/".into(),
            },
            Error::ObjectStoreConflict {
                url: "s3://b/p/current".into(),
                attempts: 7,
                generation: 12,
                budget: 600.0,
            },
            Error::ObjectStoreUnsafe {
                url: "s3://b/p/".into(),
                detail:
                    "a create-only put (If-None-Match: *) over the existing key k did not get 412"
                        .into(),
            },
            io(io::ErrorKind::PermissionDenied),
            io(io::ErrorKind::StorageFull),
            io(io::ErrorKind::QuotaExceeded),
            io(io::ErrorKind::ReadOnlyFilesystem),
            io(io::ErrorKind::NotFound),
            io(io::ErrorKind::Other),
        ];
        for e in &all {
            match e {
                Error::NoStore { .. }
                | Error::NotAStore { .. }
                | Error::CorruptPointer { .. }
                | Error::UnsupportedVersion { .. }
                | Error::CorruptSnapshot { .. }
                | Error::MissingSnapshot { .. }
                | Error::PayloadRejected { .. }
                | Error::SourceFailed { .. }
                | Error::LockTimeout { .. }
                | Error::LeaseLost { .. }
                | Error::LockFileReplaced { .. }
                | Error::OwnerNotTrusted { .. }
                | Error::CommitConflict { .. }
                | Error::Interrupted { .. }
                | Error::UnexpectedShape { .. }
                | Error::NoSuchGeneration { .. }
                | Error::NothingToRollBack { .. }
                | Error::ForgetCurrent { .. }
                | Error::ForgetPinned { .. }
                | Error::PinLimit { .. }
                | Error::GenerationsExhausted { .. }
                | Error::CommitsExhausted { .. }
                | Error::InvalidOption(_)
                | Error::UnexpectedFileType { .. }
                | Error::UntrustedPath { .. }
                | Error::ObjectStoreConfig { .. }
                | Error::ObjectStoreRequest { .. }
                | Error::ObjectStoreUnsafe { .. }
                | Error::ObjectStoreUnsupported { .. }
                | Error::ObjectStoreConflict { .. }
                | Error::Io { .. } => {}
            }
        }
        all
    }

    /// Words a message may not contain: the embedding program has no such
    /// commands, flags or variables.
    const CLI_WORDS: &[&str] = &[
        "`snapcache",
        "snapcache refresh",
        "snapcache show",
        "snapcache status",
        "snapcache history",
        "snapcache rollback",
        "snapcache gc",
        "snapcache forget",
        "snapcache pin",
        "snapcache unpin",
        "snapcache verify",
        "snapcache clear",
        "--",
        "SNAPCACHE_",
    ];

    #[test]
    fn no_message_names_a_cli_command_flag_or_variable() {
        let all = every_error();
        // Every variant is there (the count of distinct variants above).
        let variants: std::collections::HashSet<_> =
            all.iter().map(std::mem::discriminant).collect();
        assert_eq!(variants.len(), 31);
        for e in &all {
            let message = e.to_string();
            for word in CLI_WORDS {
                assert!(!message.contains(word), "{word:?} in {message:?}");
            }
            assert!(
                message.len() > 30,
                "says what failed and what to do: {message}"
            );
        }
    }

    #[test]
    fn hints_follow_the_variant() {
        let hints: Vec<Option<Hint>> = every_error().iter().map(Error::hint).collect();
        use Hint::*;
        assert_eq!(
            hints,
            vec![
                Some(PublishFirst),
                Some(ChooseStore),
                Some(ChooseStore),
                Some(RepairPointer),
                Some(ChooseStore),
                Some(Verify),
                Some(Verify),
                Some(PublishRaw),
                None,
                None,
                Some(LockTimeout),
                Some(LockTimeout),
                None,
                None,
                Some(TrustOwner),
                None,
                None,
                None,
                Some(History),
                Some(History),
                Some(History),
                Some(Unpin),
                Some(Unpin),
                Some(ClearStore),
                Some(ClearStore),
                None,
                Some(ChooseStore),
                Some(ChooseStore),
                None,
                None,
                None,
                Some(ChooseStore),
                None,
                None,
                Some(ChooseStore),
                Some(FreeSpace),
                Some(FreeSpace),
                Some(ChooseStore),
                None,
                None,
            ]
        );
    }
}
