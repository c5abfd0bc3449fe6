//! The test environment of a store on an object store, shared by the
//! library's unit tests, `tests/s3.rs` and the CLI's `object_store` tests
//! (each includes this file with `#[path]`): where the server is comes from
//! `tools/s3-server env` (`AWS_ENDPOINT_URL`, the keys,
//! `SNAPCACHE_TEST_BUCKET`).

/// A fresh `s3://` URL under `area/` of the test bucket, unique to this
/// process and moment, or `None` when no server is configured (then it
/// prints `SKIPPED <test>` and why).
pub(crate) fn fresh_url(area: &str, test: &str) -> Option<String> {
    let (Ok(bucket), Ok(_)) = (
        std::env::var("SNAPCACHE_TEST_BUCKET"),
        std::env::var("AWS_ENDPOINT_URL"),
    ) else {
        eprintln!(
            "SKIPPED {test}: SNAPCACHE_TEST_BUCKET and AWS_ENDPOINT_URL are not set (start a server with tools/s3-server start)"
        );
        return None;
    };
    // Before the epoch only on a broken clock; the process id still
    // separates concurrent runs.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Some(format!(
        "s3://{bucket}/{area}/{test}-{}-{nanos}",
        std::process::id()
    ))
}
