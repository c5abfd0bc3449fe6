//! Texts of `snapcache --help` beyond the per-option lines: environment
//! variables, exit codes and the JSON output (docs/reference.md has the
//! full tables; these are the summary a user needs at the prompt).

/// Heading of the options every command accepts.
pub const GLOBAL: &str = "Global options";

/// Printed after `snapcache --help` (not `-h`).
pub const AFTER_LONG_HELP: &str = "\
Environment:
  SNAPCACHE_DIR           store root, a directory or s3://BUCKET/PREFIX (below --store)
  XDG_CACHE_HOME          base of the default root, if absolute (else ~/.cache)
  SNAPCACHE_LOCK_TIMEOUT  lock budget, seconds or `infinite` (below --lock-timeout)
  SNAPCACHE_KEEP          generations kept besides the current one, 1-100 (default 5)
  SNAPCACHE_MAX_SIZE      largest payload a refresh accepts, e.g. 64M (below --max-size)
  SNAPCACHE_LOCK_BACKEND  auto, advisory or lease (below --lock-backend)
  SNAPCACHE_LEASE_SECS    lease time of the lease backend and of object stores,
                          0.3-86400 (default 30)
  SNAPCACHE_TRUSTED_OWNERS  users whose stores are read besides yours and root's
                          (names or uids, comma-separated; like git's safe.directory)
  AWS_ENDPOINT_URL        object store (s3://, built with the s3 feature): a
                          self-hosted server, path-style; AWS_ACCESS_KEY_ID,
                          AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION
  SNAPCACHE_LOG           log filter for stderr, e.g. `info` or `snapcache=debug`;
                          wins over RUST_LOG, and both over -v/-q
  RUST_LOG                log filter, used when SNAPCACHE_LOG is unset
  NO_COLOR                no colour with --color auto

Exit codes:
  0    success
  1    any other failure (damaged or missing store, failed --exec, I/O, ...)
  2    usage: bad command line or environment value
  65   payload rejected (empty, or not JSON without --raw)
  75   timed out waiting for the writer lock
  130  interrupted (Ctrl-C, SIGTERM); nothing published

JSON (--json): one object on stdout.
  error:    {\"error\": {\"kind\", \"message\", \"exit_code\"}}; kind is one of usage,
            payload-rejected, lock-timeout, interrupted, corrupt-store,
            unsupported-version, no-store, not-a-store, untrusted-path,
            unexpected-file-type, commit-conflict, pinned, error
  refresh:  generation, hash, bytes, changed, skipped, waited_ms, backend, ...
  status:   store, generation, hash, bytes, note, created_at, checked_at,
            created_age_seconds, checked_age_seconds, retained, pinned, lock
  history:  generations: [{generation, hash, bytes, created_at, note, current,
            pinned, age_seconds}]
  pin, unpin: generations, changed, pinned
  The full reference: docs/reference.md in the source repository.";
