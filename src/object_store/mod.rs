//! Stores on an object store (cargo feature `s3`): `s3://bucket/prefix`.
//!
//! snapcache has three backends behind one [`Store`](crate::Store) and
//! [`Writer`](crate::Writer):
//!
//! | backend | where | mutual exclusion | commit |
//! | --- | --- | --- | --- |
//! | local advisory | a local directory | an advisory lock (`lock`) | rename of `current` |
//! | local lease | a directory on NFS/SMB/9p/FUSE | a lease file (`lease`) | create-only commit record, then rename (`crate::commit_record`) |
//! | object store | `s3://bucket/prefix` | a lease object (`lease_object`) | conditional put of `current` (`pointer_object`) |
//!
//! On an object store, under the prefix:
//!
//! - `snapshots/<blake3>` (`snapshot_object`): immutable payloads, created
//!   with `If-None-Match: *`;
//! - `current` (`pointer_object`): the pointer, in the local pointer's
//!   encoding; created with `If-None-Match: *`, replaced with
//!   `If-Match: <ETag read>`. That conditional put is the commit and the
//!   fence; a writer that loses it re-reads and rebases (`writer`);
//! - `lease` (`lease_object`): who is refreshing, for the run-once
//!   promise of `max_age`, with expiry judged by the server's clock;
//! - `.snapcache-probe/<random>`: the probe's throwaway object.
//!
//! A store opened on an object store probes the server once
//! ([`s3::S3Client::probe_conditional_writes`]) and refuses one that does
//! not enforce conditional writes ([`Error::ObjectStoreUnsafe`](crate::Error::ObjectStoreUnsafe)).
//!
//! ```no_run
//! # fn main() -> Result<(), snapcache::Error> {
//! use snapcache::{PublishOptions, Store, StoreOptions};
//! // Endpoint and credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...
//! let store = Store::open(StoreOptions::new("s3://ci-cache/kopi/metadata"))?;
//! store.publish_bytes(br#"{"packages":[]}"#, &PublishOptions::default())?;
//! assert_eq!(store.read_current()?.data, br#"{"packages":[]}"#);
//! # Ok(()) }
//! ```

mod exchange;
mod lease_object;
mod pointer_object;
mod remote;
pub mod s3;
mod snapshot_object;
#[cfg(test)]
mod tests;
mod writer;

pub(crate) use lease_object::LeaseHold;
pub(crate) use remote::ObjectStore;
pub(crate) use writer::{ObjectState, take_writer};
