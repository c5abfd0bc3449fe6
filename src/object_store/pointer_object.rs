//! The pointer object, `<prefix>/current`: the same bytes as a local
//! store's `current` file ([`crate::pointer`]: header, checksum, retained
//! generations, the `dropped` list), written only with conditional puts.
//!
//! The first pointer is created with `If-None-Match: *`, every later one
//! replaces exactly the version its writer read (`If-Match: <ETag>`). That
//! conditional put *is* the commit and the fence: a writer whose read is
//! stale (another writer committed since, or its lease expired while it
//! stalled and someone else went on) gets 412 and writes nothing; it reads
//! again and decides anew (see `super::writer`).
//!
//! A put answered with a server error (5xx) may or may not have landed. The
//! pointer is read again: it landed if the object holds exactly our bytes
//! (every pointer carries its `checked_at` in milliseconds and its commit
//! number, so two writers' pointers are never byte-equal by accident).

use std::path::Path;

use super::s3::{ETag, PutOutcome, S3Client};
use crate::error::Result;
use crate::layout::OBJECT_POINTER;
use crate::pointer::{MAX_POINTER_BYTES, Pointer};

/// The pointer as read, with the ETag a commit replaces.
pub(crate) type Read = (Pointer, ETag);

/// What a conditional put of the pointer did.
#[derive(Debug)]
pub(crate) enum Put {
    /// The pointer is ours; its new ETag.
    Committed(ETag),
    /// Another writer's pointer is there: nothing was written.
    Conflict,
}

/// Reads and checks the pointer; `None` when there is none. `url` is the
/// pointer's `s3://` URL, for errors.
pub(crate) fn load(client: &S3Client, url: &str) -> Result<Option<Read>> {
    let Some(object) = client.get_at_most(OBJECT_POINTER, MAX_POINTER_BYTES)? else {
        return Ok(None);
    };
    if object.data.len() as u64 > MAX_POINTER_BYTES {
        return Err(crate::error::Error::CorruptPointer {
            path: url.into(),
            detail: format!("it is larger than {MAX_POINTER_BYTES} bytes"),
        });
    }
    let pointer = Pointer::decode(&object.data, Path::new(url))?;
    Ok(Some((pointer, object.etag)))
}

/// Commits `pointer` over the version `base` (`None`: there is none yet).
/// `url` is the pointer's `s3://` URL, for errors.
pub(crate) fn put(
    client: &S3Client,
    pointer: &Pointer,
    base: Option<&ETag>,
    url: &str,
) -> Result<Put> {
    let bytes = pointer.encode();
    // A test hook can stop the process here, after every check and right
    // before the commit, to stage a writer stalled past its lease.
    crate::test_hooks::stall_before_commit();
    let outcome = match base {
        None => client.put_if_absent(OBJECT_POINTER, &bytes)?,
        Some(etag) => client.put_if_match(OBJECT_POINTER, &bytes, etag)?,
    };
    match outcome {
        PutOutcome::Written(etag) => Ok(Put::Committed(etag)),
        PutOutcome::ConditionFailed => Ok(Put::Conflict),
        PutOutcome::Indeterminate { status, detail } => {
            // Learn whether our put landed: never commit twice, never
            // report a commit that did not happen.
            // Never given up on: a signal must not turn a commit that
            // landed into "interrupted, nothing published".
            let there = client.get_to_settle(OBJECT_POINTER, MAX_POINTER_BYTES)?;
            let landed = there.as_ref().is_some_and(|o| o.data == bytes);
            tracing::info!(status, detail = %detail, landed, "pointer put answered with a server error; read back");
            match there {
                Some(object) if landed => Ok(Put::Committed(object.etag)),
                // Still the version we based on (or still none): nobody
                // else committed, the server failed our put. Reporting a
                // conflict would say "other writers committed" and retry
                // for the whole budget; the server's answer is the news.
                there if there.as_ref().map(|o| &o.etag) == base => {
                    Err(crate::error::Error::ObjectStoreRequest {
                        operation: "put",
                        url: url.to_string(),
                        status: Some(status),
                        detail,
                    })
                }
                _ => Ok(Put::Conflict),
            }
        }
    }
}
