//! Snapshot objects, `<prefix>/snapshots/<blake3 hex>`: immutable payloads
//! named by their hash.
//!
//! Uploaded with `If-None-Match: *`. When one with that name exists it is
//! reused if it holds exactly these bytes (read back: a co-user can plant
//! other bytes of the same size) and it is younger than half the snapshot
//! grace by the server's clock; otherwise (damaged, or old enough that a gc
//! elsewhere could judge it unreferenced and delete it before our pointer
//! names it) the same bytes are written over it, which refreshes its age.
//! Readers verify length and hash on every read anyway.

use std::time::Duration;

use super::s3::{PutOutcome, S3Client};
use crate::error::{Error, Result};
use crate::hash::ContentHash;
use crate::layout::object_snapshot;
use crate::pointer::Generation;

/// Makes sure `snapshots/<hash>` holds `data` and will not be collected
/// for at least `grace / 2`.
pub(crate) fn upload(
    client: &S3Client,
    hash: &ContentHash,
    data: &[u8],
    grace: Duration,
) -> Result<()> {
    let key = object_snapshot(hash);
    match client.put_if_absent(&key, data)? {
        PutOutcome::Written(_) => {
            tracing::debug!(hash = %hash, bytes = data.len(), "snapshot object uploaded");
            return Ok(());
        }
        PutOutcome::ConditionFailed | PutOutcome::Indeterminate { .. } => {}
    }
    // Reused only when it holds exactly these bytes: a size check alone let
    // anyone who can write the bucket plant other bytes of the same length
    // under the name, and a publish then committed a pointer no reader can
    // verify (and a refresh with the same content could not repair it).
    // Reading it back costs one download, on this path only.
    let reusable = client
        .get_at_most(&key, data.len() as u64)?
        .is_some_and(|object| {
            let young = match (
                object.last_modified,
                object.server_date.or_else(|| client.server_now()),
            ) {
                (Some(modified), Some(now)) => now
                    .duration_since(modified)
                    .is_ok_and(|age| age < grace / 2),
                _ => false,
            };
            object.data == data && young
        });
    if reusable {
        tracing::debug!(hash = %hash, "dedup: the snapshot object exists");
        return Ok(());
    }
    // Same name, same bytes: rewriting is safe for readers (they verify) and
    // makes the object young again for gc's age rule.
    client.put(&key, data)?;
    tracing::debug!(hash = %hash, bytes = data.len(), "snapshot object rewritten (old, or not these bytes)");
    Ok(())
}

/// A snapshot's bytes, verified against the generation's length and hash.
/// `url` is the object's `s3://` URL, for errors.
pub(crate) fn read_verified(client: &S3Client, entry: &Generation, url: &str) -> Result<Vec<u8>> {
    let key = object_snapshot(&entry.hash);
    let Some(object) = client.get_at_most(&key, entry.bytes)? else {
        return Err(Error::MissingSnapshot {
            path: url.into(),
            generation: entry.generation,
        });
    };
    if let Some(detail) = fault(&object.data, entry) {
        return Err(Error::CorruptSnapshot {
            path: url.into(),
            generation: entry.generation,
            detail,
        });
    }
    Ok(object.data)
}

/// What is wrong with `data` as the snapshot of `entry`, if anything.
pub(crate) fn fault(data: &[u8], entry: &Generation) -> Option<String> {
    if data.len() as u64 != entry.bytes {
        return Some(if data.len() as u64 > entry.bytes {
            format!(
                "it is longer than the {} bytes the pointer records",
                entry.bytes
            )
        } else {
            format!(
                "it has {} bytes, the pointer records {}",
                data.len(),
                entry.bytes
            )
        });
    }
    let found = ContentHash::of(data);
    (found != entry.hash).then(|| format!("its blake3 hash is {found}, not {}", entry.hash))
}
