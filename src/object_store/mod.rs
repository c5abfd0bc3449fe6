//! Object stores: the groundwork of a store that lives beyond one machine.
//!
//! Only the S3 client exists so far ([`s3`], cargo feature `s3`): objects
//! got, listed and deleted, and written with the two conditional puts a
//! store on an object store will build on, create-only (`If-None-Match: *`)
//! for immutable snapshots and compare-and-swap (`If-Match: <etag>`) for the
//! pointer. [`Store`](crate::Store) does not use it yet: a store is still a
//! directory.

pub mod s3;
