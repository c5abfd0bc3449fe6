//! A small blocking S3 client: the requests an object-store backend needs.
//!
//! rusty-s3 signs each request (AWS Signature V4, as a pre-signed URL, sans
//! I/O) and ureq sends it: no async runtime, about 65 crates. The client
//! speaks path-style addressing to a self-hosted endpoint
//! (`AWS_ENDPOINT_URL`) and virtual-hosted style to Amazon S3.
//!
//! The two writes that matter are conditional:
//! - [`S3Client::put_if_absent`] (`If-None-Match: *`): create-only, for
//!   immutable objects and for the first pointer;
//! - [`S3Client::put_if_match`] (`If-Match: <etag>`): replace only what was
//!   read, the compare-and-swap a commit and a fence are made of.
//!
//! A server that ignores these headers would turn every commit into a blind
//! overwrite, so [`S3Client::probe_conditional_writes`] checks them once
//! and refuses such a server. Ceph RGW 16 takes `If-Match` only with the
//! ETag *without* its double quotes (the quoted form it hands out always
//! gets 412); the probe finds out which form the server accepts and the
//! client sends that one ([`EtagForm`]).
//!
//! ```no_run
//! # fn main() -> Result<(), snapcache::Error> {
//! use snapcache::object_store::s3::{PutOutcome, S3Client, S3Location, S3Settings};
//!
//! let location = S3Location::parse("s3://my-bucket/kopi/metadata")?;
//! let client = S3Client::new(location, S3Settings::from_env()?)?;
//! client.probe_conditional_writes()?;
//! if let PutOutcome::Written(etag) = client.put_if_absent("pointer", b"1")? {
//!     // Replace it only if nobody else did since.
//!     let second = client.put_if_match("pointer", b"2", &etag)?;
//!     assert!(second.is_written());
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rusty_s3::actions::{ListObjectsV2, ListObjectsV2Response};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::exchange::{self, Answer, Failure, Request};
use crate::error::{Error, Result};
use ureq::http::{HeaderMap, Method};

/// What an interrupted request reports it was doing
/// ([`Error::Interrupted`]).
pub(crate) const INTERRUPTED_DURING: &str = "waiting for the object store's answer";

/// The longest a lease release on the way out is waited for.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

/// What deletes stopped by a cancel report they were doing.
pub(crate) const INTERRUPTED_DELETING: &str =
    "deleting unreferenced objects from the object store (no request was given up on)";

/// How long a pre-signed request stays valid: it is sent at once, so this
/// only has to cover the request's own duration and some clock skew.
const SIGNATURE_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// The default time one request may take, connect to last byte.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The most bytes [`S3Client::get`] reads of an object unless told otherwise
/// (a hostile or broken server must not make the client buffer without end).
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 1 << 30;

/// The largest listing page read (S3's own pages of 1,000 keys are about
/// 300 KB).
const MAX_LISTING_PAGE_BYTES: u64 = 64 << 20;

/// The longest object key (S3's own limit is 1024 bytes).
const MAX_KEY_BYTES: usize = 1024;

/// A bucket and a key prefix, parsed from `s3://bucket/prefix`.
///
/// The prefix is normalized to end with `/` (or to be empty); every key the
/// client is given is relative to it. Names are kept to a conservative
/// alphabet so that no key can climb out of the prefix or the bucket
/// (no `..`, no empty segment, no `?`/`#`/`%`).
///
/// ```
/// use snapcache::object_store::s3::S3Location;
/// let at = S3Location::parse("s3://ci-cache/kopi/metadata")?;
/// assert_eq!((at.bucket(), at.prefix()), ("ci-cache", "kopi/metadata/"));
/// assert!(S3Location::parse("s3://ci-cache/../other").is_err());
/// # Ok::<(), snapcache::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    bucket: String,
    prefix: String,
}

impl S3Location {
    /// Parses `s3://bucket` or `s3://bucket/prefix[/]`.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| Error::ObjectStoreConfig {
            detail: format!(
                "{url:?} is not a usable s3:// location: {why}; write it as s3://BUCKET or s3://BUCKET/PREFIX"
            ),
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("it does not start with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket_name(bucket).map_err(|why| bad(&why))?;
        let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
        if !prefix.is_empty() {
            check_key(prefix).map_err(|why| bad(&format!("the prefix {why}")))?;
        }
        Ok(S3Location {
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        })
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix: empty, or ending with `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

fn check_bucket_name(name: &str) -> std::result::Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !(3..=63).contains(&name.len()) || !ok_chars || name.starts_with(['.', '-']) {
        return Err(format!(
            "the bucket name {name:?} is not 3 to 63 lowercase letters, digits, '.' or '-' (starting with a letter or digit)"
        ));
    }
    Ok(())
}

/// A key (or prefix) is `/`-separated segments of `[A-Za-z0-9._-]`, none
/// empty, `.` or `..`. Anything else is refused rather than escaped: it keeps
/// the signed path, the server's view and the listing's keys identical.
fn check_key(key: &str) -> std::result::Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "{key:?} is empty or longer than {MAX_KEY_BYTES} bytes"
        ));
    }
    for segment in key.split('/') {
        let ok = !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(format!(
                "{key:?} has a segment {segment:?} that is empty, '.', '..' or has characters other than letters, digits, '.', '_' and '-'"
            ));
        }
    }
    Ok(())
}

/// Where the server is and who the client is: endpoint, region, credentials.
///
/// ```
/// use snapcache::object_store::s3::S3Settings;
/// let vars = [
///     ("AWS_ENDPOINT_URL", "http://127.0.0.1:7480"),
///     ("AWS_ACCESS_KEY_ID", "key"),
///     ("AWS_SECRET_ACCESS_KEY", "secret"),
/// ];
/// let settings = S3Settings::from_vars(|name| {
///     vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
/// })?;
/// assert_eq!(settings.endpoint(), "http://127.0.0.1:7480/");
/// assert_eq!(settings.region(), "us-east-1");
/// # Ok::<(), snapcache::Error>(())
/// ```
#[derive(Clone)]
pub struct S3Settings {
    endpoint: url::Url,
    path_style: bool,
    region: String,
    credentials: Credentials,
    request_timeout: Duration,
}

impl fmt::Debug for S3Settings {
    // Never print the secret key or the session token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint.as_str())
            .field("path_style", &self.path_style)
            .field("region", &self.region)
            .field("access_key", &self.credentials.key())
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl S3Settings {
    /// Reads the standard AWS variables from the environment:
    /// `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (a self-hosted server,
    /// addressed path-style; unset: Amazon S3 in the region, virtual-hosted
    /// style), `AWS_REGION` or `AWS_DEFAULT_REGION` (any name; default
    /// `us-east-1`), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and the
    /// optional `AWS_SESSION_TOKEN`.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`S3Settings::from_env`], with the variables looked up by `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        let region = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_string());
        let (endpoint, path_style) =
            match var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL")) {
                Some(url) => (url, true),
                None => (format!("https://s3.{region}.amazonaws.com"), false),
            };
        let endpoint = url::Url::parse(&endpoint).map_err(|e| Error::ObjectStoreConfig {
            detail: format!("the endpoint URL {endpoint:?} does not parse ({e}); set AWS_ENDPOINT_URL to http(s)://HOST[:PORT]"),
        })?;
        let key = var("AWS_ACCESS_KEY_ID");
        let secret = var("AWS_SECRET_ACCESS_KEY");
        let (Some(key), Some(secret)) = (key, secret) else {
            return Err(Error::ObjectStoreConfig {
                detail:
                    "no credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must both be set"
                        .to_string(),
            });
        };
        let token = var("AWS_SESSION_TOKEN");
        Self::new(
            endpoint.as_str(),
            path_style,
            region,
            &key,
            &secret,
            token.as_deref(),
        )
    }

    /// Settings given explicitly: `endpoint` is `http(s)://host[:port]`,
    /// `path_style` chooses `endpoint/bucket/key` over `bucket.endpoint/key`.
    ///
    /// ```
    /// use snapcache::object_store::s3::S3Settings;
    /// let s = S3Settings::new("http://127.0.0.1:7480", true, "ceph", "key", "secret", None)?;
    /// assert_eq!(s.region(), "ceph");
    /// # Ok::<(), snapcache::Error>(())
    /// ```
    pub fn new(
        endpoint: &str,
        path_style: bool,
        region: impl Into<String>,
        access_key: &str,
        secret_key: &str,
        session_token: Option<&str>,
    ) -> Result<Self> {
        let credentials = match session_token {
            Some(token) => Credentials::new_with_token(access_key, secret_key, token),
            None => Credentials::new(access_key, secret_key),
        };
        let parsed = url::Url::parse(endpoint).map_err(|e| Error::ObjectStoreConfig {
            detail: format!("the endpoint URL {endpoint:?} does not parse ({e}); write it as http(s)://HOST[:PORT]"),
        })?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host_str().is_none()
            || parsed.query().is_some()
            || parsed.path() != "/"
        {
            return Err(Error::ObjectStoreConfig {
                detail: format!(
                    "the endpoint URL {endpoint:?} is not http(s)://HOST[:PORT] (no path, no query)"
                ),
            });
        }
        let region = region.into();
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::ObjectStoreConfig {
                detail: format!("the region {region:?} is not letters, digits, '-' and '_'"),
            });
        }
        Ok(S3Settings {
            endpoint: parsed,
            path_style,
            region,
            credentials,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// The most time one request may take (default [`DEFAULT_REQUEST_TIMEOUT`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }
}

/// An object's entity tag, as the server gave it, without its double quotes.
///
/// ```
/// use snapcache::object_store::s3::ETag;
/// assert_eq!(ETag::new("\"9a0364b9\"").as_str(), "9a0364b9");
/// assert_eq!(ETag::new("\"9a0364b9\""), ETag::new("9a0364b9"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    /// An ETag from a header or listing value, quoted or not.
    pub fn new(value: &str) -> Self {
        let value = value.trim();
        let bare = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        ETag(bare.to_string())
    }

    /// The tag without quotes.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn header_value(&self, form: EtagForm) -> String {
        match form {
            EtagForm::Bare => self.0.clone(),
            EtagForm::Quoted => format!("\"{}\"", self.0),
        }
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How an ETag is written in an `If-Match` header.
///
/// HTTP says quoted; Ceph RGW 16 compares the header with the bare tag, so
/// the quoted form never matches there (every such put gets 412). Bare is
/// the default; [`S3Client::probe_conditional_writes`] switches to quoted
/// when only that form is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtagForm {
    /// `If-Match: 9a0364b9…` (what RGW needs).
    Bare,
    /// `If-Match: "9a0364b9…"` (RFC 9110's form).
    Quoted,
}

/// What a conditional put did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum PutOutcome {
    /// The object was written; its new ETag.
    Written(ETag),
    /// The condition did not hold (HTTP 412, or 409 for a conditional write
    /// that lost a race on the server): nothing was written.
    ConditionFailed,
    /// The server failed (HTTP 5xx) on a conditional put: it may or may not
    /// have written. Re-read the object to find out, as after a conflict
    /// (a commit whose content names its writer can tell). Ceph RGW 16
    /// answers this way (500 `UnknownError`, internally `ECANCELED`) when two
    /// conditional puts race inside the server; the loser wrote nothing.
    Indeterminate {
        /// The HTTP status.
        status: u16,
        /// The server's error code or text.
        detail: String,
    },
}

impl PutOutcome {
    /// The object was written.
    pub fn is_written(&self) -> bool {
        matches!(self, PutOutcome::Written(_))
    }
}

/// An object's bytes and the ETag of exactly those bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// The content.
    pub data: Vec<u8>,
    /// Its entity tag.
    pub etag: ETag,
    /// When the server last wrote it (`Last-Modified`, by the server's
    /// clock, whole seconds), when it said.
    pub last_modified: Option<SystemTime>,
    /// The server's clock when it answered (`Date`), when it said.
    pub server_date: Option<SystemTime>,
}

/// What a head or a listing says about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key, relative to the location's prefix.
    pub key: String,
    /// Its entity tag.
    pub etag: ETag,
    /// Its size in bytes.
    pub size: u64,
    /// When the server last wrote it (by the server's clock), when it said.
    pub last_modified: Option<SystemTime>,
}

/// How a request meets the cancel flag (see [`S3Client::set_cancel_flag`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Cancel {
    /// Given up on within a poll: reads, and writes whose late landing
    /// changes nothing anyone relies on.
    Abandon,
    /// Not sent once the flag is set (nothing happened then), and never
    /// given up on once sent: the pointer's writes and deletes.
    UnlessCancelled,
    /// Sent and waited for whatever the flag says: the lease's writes
    /// whose outcome must be known, and the reads that settle a write
    /// answered with a server error.
    Never,
    /// Sent whatever the flag says, waited for a moment at most: the
    /// lease's release on the way out, whose late landing is harmless.
    Brief,
}

#[derive(Clone, Copy)]
enum Condition<'a> {
    None,
    Absent,
    Matches(&'a ETag),
}

/// A blocking client for one bucket and prefix.
///
/// Every key it takes is relative to the location's prefix and checked
/// (see [`S3Location`]); every request has a timeout and follows no
/// redirect.
pub struct S3Client {
    location: S3Location,
    bucket: Bucket,
    credentials: Credentials,
    agent: ureq::Agent,
    etag_form: EtagForm,
    max_object_bytes: u64,
    /// The server's `Date` of the last answer and when it arrived: the
    /// server's clock, for judging ages of objects (lease expiry, gc grace)
    /// without trusting this host's clock.
    server_clock: Mutex<Option<(SystemTime, Instant)>>,
    /// Set: a request still unanswered is abandoned (see
    /// [`S3Client::set_cancel_flag`]).
    cancel: Option<Arc<AtomicBool>>,
    /// A write that is never given up on ended without an answer (a
    /// timeout): the server may still apply it, so the lease must not be
    /// handed over at once (see `LeaseHold`'s drop).
    unsettled_write: AtomicU64,
}

impl fmt::Debug for S3Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Client")
            .field("url", &self.bucket.base_url().as_str())
            .field("prefix", &self.location.prefix)
            .field("etag_form", &self.etag_form)
            .finish_non_exhaustive()
    }
}

impl S3Client {
    /// A client for `location` on the server of `settings`. Sends nothing.
    pub fn new(location: S3Location, settings: S3Settings) -> Result<Self> {
        let style = if settings.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            settings.endpoint.clone(),
            style,
            location.bucket.clone(),
            settings.region.clone(),
        )
        .map_err(|e| Error::ObjectStoreConfig {
            detail: format!(
                "the endpoint {} and bucket {:?} make no URL ({e:?})",
                settings.endpoint, location.bucket
            ),
        })?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(settings.request_timeout))
            .build()
            .into();
        Ok(S3Client {
            location,
            bucket,
            credentials: settings.credentials,
            agent,
            etag_form: EtagForm::Bare,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            server_clock: Mutex::new(None),
            cancel: None,
            unsettled_write: AtomicU64::new(0),
        })
    }

    /// A flag that, once set (by a Ctrl-C handler, say), makes every read
    /// still waiting for its answer give up within 50 ms with
    /// [`Error::Interrupted`], instead of waiting out the request timeout.
    /// Each request then runs on a thread of its own.
    ///
    /// A write given up on may still land at the server later, after this
    /// process has let go of the lease and another writer has gone on. So
    /// only writes that cannot matter then are given up on: uploads of
    /// snapshot objects (named by their content: landing late writes the
    /// bytes the name stands for) and the probe's throwaway objects. The
    /// pointer's writes and every delete are not sent once the flag is set
    /// and are waited for once sent; the lease's writes (taking and
    /// renewing it, so that it stays held while such a write is waited
    /// for) and the reads that settle a write answered with a server error
    /// are always waited for; the release on the way out is waited for 2 s
    /// at most (conditional on this holder's ETag, so harmless if late). A write that ends without any answer (the request timeout)
    /// may still land, so the lease is then left to expire rather than
    /// released.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), snapcache::Error> {
    /// use std::sync::{Arc, atomic::AtomicBool};
    /// use snapcache::object_store::s3::{S3Client, S3Location, S3Settings};
    ///
    /// let stop = Arc::new(AtomicBool::new(false));
    /// let mut client = S3Client::new(S3Location::parse("s3://bucket/p")?, S3Settings::from_env()?)?;
    /// client.set_cancel_flag(Arc::clone(&stop));
    /// // Another thread: stop.store(true, Ordering::Relaxed) ends a hanging request.
    /// # Ok(()) }
    /// ```
    pub fn set_cancel_flag(&mut self, flag: Arc<AtomicBool>) {
        self.cancel = Some(flag);
    }

    /// The location this client works in.
    pub fn location(&self) -> &S3Location {
        &self.location
    }

    /// The form of ETag `If-Match` sends (bare unless the probe chose quoted).
    pub fn etag_form(&self) -> EtagForm {
        self.etag_form
    }

    /// Sets the form of ETag `If-Match` sends.
    pub fn set_etag_form(&mut self, form: EtagForm) {
        self.etag_form = form;
    }

    /// The most bytes [`S3Client::get`] accepts (default [`DEFAULT_MAX_OBJECT_BYTES`]).
    pub fn set_max_object_bytes(&mut self, max: u64) {
        self.max_object_bytes = max;
    }

    /// The server's clock now: the `Date` of its last answer plus the time
    /// elapsed here since (`None` before any answer carried a `Date`). Ages
    /// judged with it (an object's `Last-Modified` against it) do not depend
    /// on this host's wall clock, only on its monotonic clock.
    pub fn server_now(&self) -> Option<SystemTime> {
        let clock = self.server_clock.lock().ok()?;
        let (date, at) = (*clock)?;
        date.checked_add(at.elapsed())
    }

    /// Notes the answer's `Date` header as the server's clock.
    fn note_date(&self, headers: &HeaderMap) -> Option<SystemTime> {
        let date = header_time(headers, "date")?;
        if let Ok(mut clock) = self.server_clock.lock() {
            *clock = Some((date, Instant::now()));
        }
        Some(date)
    }

    fn full_key(&self, key: &str) -> Result<String> {
        check_key(key).map_err(|why| Error::ObjectStoreConfig {
            detail: format!("the object key {why}"),
        })?;
        Ok(format!("{}{key}", self.location.prefix))
    }

    /// The unsigned URL of an object, for messages.
    fn object_url(&self, full_key: &str) -> String {
        format!("{}{full_key}", self.bucket.base_url())
    }

    fn request_error(
        operation: &'static str,
        url: String,
        status: Option<u16>,
        detail: impl Into<String>,
    ) -> Error {
        Error::ObjectStoreRequest {
            operation,
            url,
            status,
            detail: detail.into(),
        }
    }

    /// Sends one request and notes the server's clock from its answer.
    /// `mode`: how the cancel flag meets it (see [`Cancel`]).
    fn send(
        &self,
        operation: &'static str,
        url: &str,
        request: Request,
        mode: Cancel,
        by: Option<Instant>,
    ) -> Result<Answer> {
        if mode == Cancel::UnlessCancelled && self.cancelled() {
            tracing::info!(operation, url = %url, "request not sent: cancelled");
            return Err(Error::Interrupted {
                during: INTERRUPTED_DURING,
            });
        }
        let write = request.method == Method::PUT || request.method == Method::DELETE;
        let wait = match (mode, self.cancel.as_ref(), by) {
            (Cancel::Abandon, flag, Some(by)) => exchange::Wait::CancelledOrBy(flag, by),
            (Cancel::Abandon, Some(flag), None) => exchange::Wait::UntilCancelled(flag),
            (Cancel::Brief, _, _) => {
                exchange::Wait::CancelledOrBy(None, Instant::now() + RELEASE_WAIT)
            }
            _ => exchange::Wait::Answer,
        };
        match exchange::send(&self.agent, request, wait) {
            Ok(answer) => {
                self.note_date(&answer.headers);
                Ok(answer)
            }
            Err(Failure::Transport(detail)) => {
                if write && matches!(mode, Cancel::UnlessCancelled | Cancel::Never) {
                    // Given up on by the timeout, not by us: it may still
                    // land, possibly after another writer went on.
                    self.unsettled_write
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(operation, url = %url, detail = %detail, "a write got no answer; the server may still apply it");
                }
                Err(Self::request_error(
                    operation,
                    url.to_string(),
                    None,
                    detail,
                ))
            }
            Err(Failure::Body { status, detail }) => Err(Self::request_error(
                operation,
                url.to_string(),
                Some(status),
                detail,
            )),
            Err(Failure::Late) => Err(Self::request_error(
                operation,
                url.to_string(),
                None,
                if mode == Cancel::Brief {
                    "no answer within 2 s; given up on the way out"
                } else {
                    "no answer before the lock budget ran out; the request was given up on"
                },
            )),
            Err(Failure::Cancelled) => {
                tracing::info!(operation, url = %url, "request abandoned: cancelled");
                Err(Error::Interrupted {
                    during: INTERRUPTED_DURING,
                })
            }
        }
    }

    /// A request without a body.
    fn request(method: Method, signed: &url::Url, body_limit: u64) -> Request {
        Request {
            method,
            url: signed.to_string(),
            headers: Vec::new(),
            body: None,
            body_limit,
        }
    }

    /// Whether a put of `key` may be given up on (see
    /// [`S3Client::set_cancel_flag`]): a snapshot's or the probe's, whose
    /// late landing changes nothing anyone relies on. A late delete could
    /// remove a snapshot another writer has since uploaded again and
    /// committed; a late pointer or lease write could undo a newer one.
    fn put_mode(key: &str) -> Cancel {
        if key.starts_with(crate::layout::OBJECT_SNAPSHOTS)
            || key.starts_with(crate::layout::OBJECT_PROBE_DIR)
        {
            Cancel::Abandon
        } else if key == crate::layout::OBJECT_LEASE {
            Cancel::Never
        } else {
            Cancel::UnlessCancelled
        }
    }

    /// How many writes of this client ended without an answer and may
    /// still be applied by the server (see `unsettled_write`).
    pub(crate) fn unsettled_writes(&self) -> u64 {
        self.unsettled_write
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the cancel flag is set: a caller about to send another
    /// request that is never given up on (a delete) stops instead.
    pub(crate) fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn etag_of(operation: &'static str, url: &str, answer: &Answer) -> Result<ETag> {
        answer
            .headers
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(ETag::new)
            .filter(|e| !e.as_str().is_empty())
            .ok_or_else(|| {
                Self::request_error(
                    operation,
                    url.to_string(),
                    Some(answer.status),
                    "the answer has no ETag header",
                )
            })
    }

    /// Reads an object and its ETag; `None` when there is none.
    pub fn get(&self, key: &str) -> Result<Option<Object>> {
        let max = self.max_object_bytes;
        match self.get_at_most(key, max)? {
            Some(object) if object.data.len() as u64 > max => Err(Self::request_error(
                "get",
                self.object_url(&self.full_key(key)?),
                Some(200),
                format!("the object is larger than the {max} bytes this client reads"),
            )),
            found => Ok(found),
        }
    }

    /// Like [`S3Client::get`], reading at most `max_bytes + 1` bytes: an
    /// object longer than `max_bytes` comes back cut at `max_bytes + 1`, so
    /// a caller that knows the length it expects sees that it is too long
    /// (a damaged object, not a transport error), with bounded memory.
    pub fn get_at_most(&self, key: &str, max_bytes: u64) -> Result<Option<Object>> {
        self.get_with(key, max_bytes, true)
    }

    /// [`S3Client::get_at_most`], never given up on: the read that learns
    /// whether a write which must be known (a pointer's or the lease's
    /// conditional put, answered with a server error) landed.
    pub(crate) fn get_to_settle(&self, key: &str, max_bytes: u64) -> Result<Option<Object>> {
        self.get_with(key, max_bytes, false)
    }

    /// [`S3Client::get_at_most`], also given up on at `by`: a read inside
    /// a lock budget (the lease, while waiting for it), which must not
    /// keep a waiter a whole request timeout past its budget.
    pub(crate) fn get_at_most_by(
        &self,
        key: &str,
        max_bytes: u64,
        by: Option<Instant>,
    ) -> Result<Option<Object>> {
        self.get_with_by(key, max_bytes, true, by)
    }

    fn get_with(&self, key: &str, max_bytes: u64, abandonable: bool) -> Result<Option<Object>> {
        self.get_with_by(key, max_bytes, abandonable, None)
    }

    fn get_with_by(
        &self,
        key: &str,
        max_bytes: u64,
        abandonable: bool,
        by: Option<Instant>,
    ) -> Result<Option<Object>> {
        let mode = if abandonable {
            Cancel::Abandon
        } else {
            Cancel::Never
        };
        let full = self.full_key(key)?;
        let url = self.object_url(&full);
        let signed = self
            .bucket
            .get_object(Some(&self.credentials), &full)
            .sign(SIGNATURE_LIFETIME);
        let request = Self::request(Method::GET, &signed, max_bytes.saturating_add(1));
        let answer = self.send("get", &url, request, mode, by)?;
        let server_date = header_time(&answer.headers, "date");
        match answer.status {
            200 => {
                let etag = Self::etag_of("get", &url, &answer)?;
                let last_modified = header_time(&answer.headers, "last-modified");
                let data = answer.body;
                tracing::debug!(key = %full, bytes = data.len(), etag = %etag, "object read");
                Ok(Some(Object {
                    data,
                    etag,
                    last_modified,
                    server_date,
                }))
            }
            404 => Ok(None),
            status => Err(Self::request_error(
                "get",
                url,
                Some(status),
                server_words(&answer.body),
            )),
        }
    }

    /// An object's ETag and size; `None` when there is none.
    pub fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let full = self.full_key(key)?;
        let url = self.object_url(&full);
        let signed = self
            .bucket
            .head_object(Some(&self.credentials), &full)
            .sign(SIGNATURE_LIFETIME);
        let answer = self.send(
            "head",
            &url,
            Self::request(Method::HEAD, &signed, 0),
            Cancel::Abandon,
            None,
        )?;
        match answer.status {
            200 => {
                let etag = Self::etag_of("head", &url, &answer)?;
                let size = answer
                    .headers
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| {
                        Self::request_error("head", url.clone(), Some(200), "no Content-Length")
                    })?;
                Ok(Some(ObjectInfo {
                    key: key.to_string(),
                    etag,
                    size,
                    last_modified: header_time(&answer.headers, "last-modified"),
                }))
            }
            404 => Ok(None),
            status => Err(Self::request_error(
                "head",
                url,
                Some(status),
                server_words(&answer.body),
            )),
        }
    }

    /// Writes an object unconditionally (last writer wins). Only for objects
    /// no commit depends on; commits use the conditional puts.
    pub fn put(&self, key: &str, data: &[u8]) -> Result<ETag> {
        match self.put_with(key, data, Condition::None, Self::put_mode(key))? {
            PutOutcome::Written(etag) => Ok(etag),
            PutOutcome::ConditionFailed | PutOutcome::Indeterminate { .. } => {
                Err(Self::request_error(
                    "put",
                    self.object_url(&self.full_key(key)?),
                    Some(412),
                    "an unconditional put was refused as a failed condition",
                ))
            }
        }
    }

    /// Creates an object only if the key is free (`If-None-Match: *`).
    pub fn put_if_absent(&self, key: &str, data: &[u8]) -> Result<PutOutcome> {
        self.put_with(key, data, Condition::Absent, Self::put_mode(key))
    }

    /// Replaces an object only if its ETag is still `etag` (`If-Match`):
    /// a compare-and-swap.
    pub fn put_if_match(&self, key: &str, data: &[u8], etag: &ETag) -> Result<PutOutcome> {
        self.put_with(key, data, Condition::Matches(etag), Self::put_mode(key))
    }

    /// [`S3Client::put_if_match`], sent whatever the cancel flag says and
    /// waited for 2 s at most: the lease's release, on the way out.
    pub(crate) fn put_if_match_briefly(
        &self,
        key: &str,
        data: &[u8],
        etag: &ETag,
    ) -> Result<PutOutcome> {
        self.put_with(key, data, Condition::Matches(etag), Cancel::Brief)
    }

    fn put_with(
        &self,
        key: &str,
        data: &[u8],
        condition: Condition<'_>,
        mode: Cancel,
    ) -> Result<PutOutcome> {
        let full = self.full_key(key)?;
        let url = self.object_url(&full);
        let mut action = self.bucket.put_object(Some(&self.credentials), &full);
        // The condition is a signed header: nothing on the way can drop it
        // without breaking the signature.
        let header = match condition {
            Condition::None => None,
            Condition::Absent => Some(("if-none-match", "*".to_string())),
            Condition::Matches(etag) => Some(("if-match", etag.header_value(self.etag_form))),
        };
        if let Some((name, value)) = &header {
            action.headers_mut().insert(*name, value.clone());
        }
        let signed = action.sign(SIGNATURE_LIFETIME);
        // Owned, for the request's own thread: one copy of the object, the
        // price of a request that Ctrl-C can abandon.
        let request = Request {
            body: Some(data.to_vec()),
            headers: header.into_iter().collect(),
            ..Self::request(Method::PUT, &signed, 0)
        };
        let answer = self.send("put", &url, request, mode, None)?;
        match answer.status {
            200 | 201 => {
                let etag = Self::etag_of("put", &url, &answer)?;
                tracing::debug!(key = %full, bytes = data.len(), etag = %etag, "object written");
                Ok(PutOutcome::Written(etag))
            }
            412 | 409 if !matches!(condition, Condition::None) => {
                tracing::debug!(key = %full, "conditional put refused");
                Ok(PutOutcome::ConditionFailed)
            }
            status @ 500..=599 if !matches!(condition, Condition::None) => {
                let detail = server_words(&answer.body);
                tracing::debug!(key = %full, status, detail = %detail, "conditional put failed on the server; outcome unknown");
                Ok(PutOutcome::Indeterminate { status, detail })
            }
            status => Err(Self::request_error(
                "put",
                url,
                Some(status),
                server_words(&answer.body),
            )),
        }
    }

    /// Deletes an object; deleting a missing one is not an error.
    pub fn delete(&self, key: &str) -> Result<()> {
        let full = self.full_key(key)?;
        let url = self.object_url(&full);
        let signed = self
            .bucket
            .delete_object(Some(&self.credentials), &full)
            .sign(SIGNATURE_LIFETIME);
        let request = Self::request(Method::DELETE, &signed, 0);
        // Never given up on once sent, and not sent once cancelled (see
        // `put_mode`): a late delete could remove what another writer has
        // uploaded since. The probe's own objects are the exception: their
        // names are this process's alone.
        let mode = if key.starts_with(crate::layout::OBJECT_PROBE_DIR) {
            Cancel::Abandon
        } else {
            Cancel::UnlessCancelled
        };
        let answer = self.send("delete", &url, request, mode, None)?;
        match answer.status {
            200 | 204 | 404 => Ok(()),
            status => Err(Self::request_error(
                "delete",
                url,
                Some(status),
                server_words(&answer.body),
            )),
        }
    }

    /// Every object whose key starts with `prefix` (relative to the
    /// location's prefix; `""` lists the whole location), in key order.
    /// A listed key that is not a well-formed key under the location is
    /// left out with a warning: the client never hands out a key it would
    /// refuse.
    pub fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        if !prefix.is_empty() {
            // A prefix may end with '/' ("snapshots/"); check it as a key.
            check_key(prefix.strip_suffix('/').unwrap_or(prefix)).map_err(|why| {
                Error::ObjectStoreConfig {
                    detail: format!("the listing prefix {why}"),
                }
            })?;
        }
        let full_prefix = format!("{}{prefix}", self.location.prefix);
        let url = format!(
            "{}?list-type=2&prefix={full_prefix}",
            self.bucket.base_url()
        );
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        // Bounded: a server that hands out continuation tokens forever must
        // not keep the client listing forever (1000 pages of up to 1000 keys).
        for _page in 0..1000 {
            let mut action: ListObjectsV2<'_> =
                self.bucket.list_objects_v2(Some(&self.credentials));
            action.with_prefix(full_prefix.as_str());
            if let Some(token) = &token {
                action.with_continuation_token(token.as_str());
            }
            let signed = action.sign(SIGNATURE_LIFETIME);
            // Every page is a request of its own, so a cancel is seen
            // between pages as well as within one.
            let request = Self::request(Method::GET, &signed, MAX_LISTING_PAGE_BYTES + 1);
            let answer = self.send("list", &url, request, Cancel::Abandon, None)?;
            if answer.status != 200 {
                let text = server_words(&answer.body);
                return Err(Self::request_error("list", url, Some(answer.status), text));
            }
            if answer.body.len() as u64 > MAX_LISTING_PAGE_BYTES {
                return Err(Self::request_error(
                    "list",
                    url,
                    Some(200),
                    format!(
                        "a listing page is larger than {MAX_LISTING_PAGE_BYTES} bytes, so it was not read on. Check that the prefix is the store's alone, or the server"
                    ),
                ));
            }
            let body = String::from_utf8(answer.body).map_err(|e| {
                Self::request_error(
                    "list",
                    url.clone(),
                    Some(200),
                    format!("the listing is not UTF-8: {e}"),
                )
            })?;
            let page = ListObjectsV2::parse_response(&body).map_err(|e| {
                Self::request_error(
                    "list",
                    url.clone(),
                    Some(200),
                    format!("the listing does not parse: {e}"),
                )
            })?;
            let ListObjectsV2Response {
                contents,
                next_continuation_token,
                ..
            } = page;
            // S3 pages hold at most 1,000 keys, and a store a few hundred
            // objects: a server that hands out more (200,000 keys a page,
            // or pages without end) must not grow this process without bound.
            if contents.len() > MAX_KEYS_PER_PAGE
                || found.len().saturating_add(contents.len()) > MAX_LISTED_KEYS
            {
                return Err(Self::request_error(
                    "list",
                    url,
                    Some(200),
                    format!(
                        "the listing holds more keys than a store can ({} in one page, {} so far; S3 pages hold at most {MAX_KEYS_PER_PAGE} and a store's listing is read only up to {MAX_LISTED_KEYS}), so it was not read on. Check that the prefix is the store's alone, or the server",
                        contents.len(),
                        found.len()
                    ),
                ));
            }
            for item in contents {
                match item.key.strip_prefix(&self.location.prefix) {
                    Some(relative) if check_key(relative).is_ok() => found.push(ObjectInfo {
                        key: relative.to_string(),
                        etag: ETag::new(&item.etag),
                        size: item.size,
                        last_modified: humantime::parse_rfc3339_weak(item.last_modified.trim())
                            .ok(),
                    }),
                    _ => {
                        tracing::warn!(key = %item.key, prefix = %full_prefix, "listing holds a key that is not a well-formed key under the prefix; left out")
                    }
                }
            }
            match next_continuation_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => return Ok(found),
            }
        }
        Err(Self::request_error(
            "list",
            url,
            Some(200),
            "the listing did not end after 1000 pages",
        ))
    }

    /// Checks that the server enforces conditional writes, and learns which
    /// ETag form its `If-Match` accepts. On a throwaway object under
    /// `.snapcache-probe/` (deleted at the end): a create-only put must
    /// succeed once and then get 412; a put with a stale ETag must get 412;
    /// a put with the current ETag must succeed (bare form first, then
    /// quoted). A server that fails any of these is refused with
    /// [`Error::ObjectStoreUnsafe`]. Takes five to six requests.
    pub fn probe_conditional_writes(&mut self) -> Result<EtagForm> {
        let key = format!("{}{}", crate::layout::OBJECT_PROBE_DIR, probe_name());
        let result = self.probe_on(&key);
        // Best effort: a probe object left behind is harmless and named as ours.
        if let Err(e) = self.delete(&key) {
            tracing::warn!(key = %key, error = %e, "could not delete the probe object");
        }
        let form = result?;
        self.etag_form = form;
        tracing::debug!(location = %self.location, form = ?form, "conditional writes enforced");
        Ok(form)
    }

    fn probe_on(&mut self, key: &str) -> Result<EtagForm> {
        let url = self.location.to_string();
        // The server asked, by its address: the bucket URL alone does not
        // say which endpoint (AWS_ENDPOINT_URL, ...) the refusal is about.
        let server = self.bucket.base_url().to_string();
        let unsafe_server = |detail: String| Error::ObjectStoreUnsafe {
            url: url.clone(),
            detail: format!("{detail} (server {server})"),
        };
        let first = match self.put_if_absent(key, b"probe 1")? {
            PutOutcome::Written(etag) => etag,
            PutOutcome::Indeterminate { status, detail } => {
                return Err(Self::request_error(
                    "probe",
                    self.object_url(&self.full_key(key)?),
                    Some(status),
                    detail,
                ));
            }
            PutOutcome::ConditionFailed => {
                return Err(unsafe_server(format!(
                    "a create-only put (If-None-Match: *) of the new key {key} was refused as if it existed"
                )));
            }
        };
        // Only a clean 412 counts: a server error proves nothing.
        if self.put_if_absent(key, b"probe 2")? != PutOutcome::ConditionFailed {
            return Err(unsafe_server(format!(
                "a create-only put (If-None-Match: *) over the existing key {key} did not get 412"
            )));
        }
        // A stale tag: the current one with its first character changed.
        let stale = ETag(flip_first(first.as_str()));
        for form in [EtagForm::Bare, EtagForm::Quoted] {
            self.etag_form = form;
            if self.put_if_match(key, b"probe 3", &stale)? != PutOutcome::ConditionFailed {
                return Err(unsafe_server(format!(
                    "a put with a stale ETag (If-Match: {}) over {key} did not get 412",
                    stale.header_value(form)
                )));
            }
        }
        for form in [EtagForm::Bare, EtagForm::Quoted] {
            self.etag_form = form;
            if self.put_if_match(key, b"probe 4", &first)?.is_written() {
                return Ok(form);
            }
        }
        Err(unsafe_server(format!(
            "a put with the object's current ETag ({first}, bare and quoted) over {key} got 412, so no compare-and-swap could succeed"
        )))
    }
}

/// A header holding an HTTP date (`Date`, `Last-Modified`).
fn header_time(headers: &HeaderMap, name: &str) -> Option<SystemTime> {
    parse_http_date(headers.get(name)?.to_str().ok()?)
}

/// Parses an HTTP date in its preferred form (RFC 9110 IMF-fixdate,
/// `Sun, 06 Nov 1994 08:49:37 GMT`), the one S3 servers send; `None` for
/// anything else.
pub(crate) fn parse_http_date(text: &str) -> Option<SystemTime> {
    let mut fields = text.split_whitespace();
    let _weekday = fields.next()?;
    let day: u32 = fields.next()?.parse().ok()?;
    let month = match fields.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: u32 = fields.next()?.parse().ok()?;
    let time = fields.next()?;
    if fields.next()? != "GMT" || fields.next().is_some() {
        return None;
    }
    humantime::parse_rfc3339(&format!("{year:04}-{month:02}-{day:02}T{time}Z")).ok()
}

fn flip_first(tag: &str) -> String {
    let mut chars = tag.chars();
    let first = match chars.next() {
        Some('0') => '1',
        Some(_) | None => '0',
    };
    std::iter::once(first).chain(chars).collect()
}

/// A name no other probe picks: pid, time and a counter, hashed.
/// Keys an S3 listing page holds at most (`max-keys` defaults to 1,000).
const MAX_KEYS_PER_PAGE: usize = 1_000;
/// Keys a listing is read up to: a store holds its pointer, lease, probe
/// leftovers and some hundreds of snapshots; this leaves room for foreign
/// objects while bounding memory (about 25 MB of entries).
const MAX_LISTED_KEYS: usize = 100_000;

/// What a server's error body says, on one line: the `<Code>` of an S3
/// XML error, else the first 200 characters. A line break (or any control)
/// in it would let a server forge lines of output, so each becomes a space.
fn server_words(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let said: String = match (text.find("<Code>"), text.find("</Code>")) {
        (Some(start), Some(end)) if start + 6 <= end => text[start + 6..end].to_string(),
        _ if text.is_empty() => "no error text".to_string(),
        _ => text.chars().take(200).collect(),
    };
    said.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn probe_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seed = format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    blake3::hash(seed.as_bytes()).to_hex()[..32].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_servers_error_text_stays_on_one_line() {
        let forged = b"<Error><Code>AccessDenied\nsnapcache: published: generation 99 is current\x1b[2J</Code></Error>";
        let said = server_words(forged);
        assert!(!said.contains('\n') && !said.contains('\x1b'), "{said:?}");
        assert!(
            said.starts_with("AccessDenied snapcache: published"),
            "{said:?}"
        );
        assert_eq!(server_words(b"  "), "no error text");
        assert_eq!(server_words(b"plain\r\ntext").as_str(), "plain  text");
    }

    #[test]
    fn locations_parse_and_normalize() {
        for (url, bucket, prefix) in [
            ("s3://bucket", "bucket", ""),
            ("s3://bucket/", "bucket", ""),
            ("s3://my.bucket-1/a", "my.bucket-1", "a/"),
            ("s3://b12/a/b_c/d.e-f/", "b12", "a/b_c/d.e-f/"),
        ] {
            let at = S3Location::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!((at.bucket(), at.prefix()), (bucket, prefix), "{url}");
        }
    }

    #[test]
    fn hostile_locations_and_keys_are_refused() {
        for url in [
            "bucket/prefix",
            "s3:/bucket",
            "https://bucket/x",
            "s3://",
            "s3://ab",
            "s3://Bucket",
            "s3://-bucket",
            "s3://bucket/../other",
            "s3://bucket/a//b",
            "s3://bucket/a/./b",
            "s3://bucket/a?x=1",
            "s3://bucket/a#b",
            "s3://bucket/a%2e%2e",
            "s3://bucket/a b",
            "s3://bucket//a",
        ] {
            let err = S3Location::parse(url).expect_err(url);
            assert!(
                matches!(err, Error::ObjectStoreConfig { .. }),
                "{url}: {err}"
            );
            assert!(err.to_string().contains("s3://BUCKET/PREFIX"), "{err}");
        }
        for key in [
            "",
            "..",
            "a/..",
            "/a",
            "a/",
            "a\nb",
            "a\\b",
            "ü",
            &"x".repeat(1025),
        ] {
            assert!(check_key(key).is_err(), "{key:?}");
        }
        for key in [
            "current",
            "snapshots/0a1b",
            ".snapcache-probe/abc",
            "a-b_c.d",
        ] {
            assert!(check_key(key).is_ok(), "{key:?}");
        }
    }

    #[test]
    fn settings_come_from_the_aws_variables() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let s = S3Settings::from_vars(vars(&[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:7480"),
            ("AWS_ENDPOINT_URL_S3", "http://127.0.0.2:9000"),
            ("AWS_DEFAULT_REGION", "ceph"),
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_SESSION_TOKEN", "t"),
        ]))
        .unwrap();
        assert_eq!(
            (s.endpoint(), s.region(), s.path_style),
            ("http://127.0.0.2:9000/", "ceph", true)
        );
        assert_eq!(s.credentials.token(), Some("t"));
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("\"s\"") && !debug.contains("\"t\""),
            "{debug}"
        );

        let aws = S3Settings::from_vars(vars(&[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_DEFAULT_REGION", "ignored"),
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
        ]))
        .unwrap();
        assert_eq!(
            (aws.endpoint(), aws.region(), aws.path_style),
            ("https://s3.eu-west-1.amazonaws.com/", "eu-west-1", false)
        );

        let missing = S3Settings::from_vars(vars(&[("AWS_ACCESS_KEY_ID", "k")])).unwrap_err();
        assert!(
            missing.to_string().contains("AWS_SECRET_ACCESS_KEY"),
            "{missing}"
        );
        for endpoint in ["ftp://h", "http://h/path", "http://h/?q", "not a url"] {
            let err = S3Settings::new(endpoint, true, "r", "k", "s", None).unwrap_err();
            assert!(
                err.to_string().contains("endpoint URL"),
                "{endpoint}: {err}"
            );
        }
    }

    #[test]
    fn etags_lose_their_quotes_and_the_form_is_chosen_when_sent() {
        let tag = ETag::new(" \"abc\" ");
        assert_eq!(tag.as_str(), "abc");
        assert_eq!(tag.header_value(EtagForm::Bare), "abc");
        assert_eq!(tag.header_value(EtagForm::Quoted), "\"abc\"");
        assert_eq!(ETag::new("W/\"x\"").as_str(), "W/\"x\"");
        assert_eq!(flip_first("0ab"), "1ab");
        assert_eq!(flip_first("9ab"), "0ab");
        assert_ne!(probe_name(), probe_name());
    }

    #[test]
    fn http_dates_parse_and_anything_else_does_not() {
        let t = parse_http_date("Tue, 01 Dec 2026 23:20:20 GMT").unwrap();
        assert_eq!(t, humantime::parse_rfc3339("2026-12-01T23:20:20Z").unwrap());
        for bad in [
            "",
            "Tue, 01 Dec 2026 23:20:20",
            "Tue, 01 Foo 2026 23:20:20 GMT",
            "Tue, 32 Dec 2026 23:20:20 GMT",
            "Tuesday, 01-Dec-26 23:20:20 GMT",
            "Tue, 01 Dec 2026 23:20:20 GMT extra",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_unreachable_server_is_a_clear_error_not_a_hang() {
        // Port 9 (discard) on loopback: nothing listens there in tests.
        let settings = S3Settings::new("http://127.0.0.1:9", true, "r", "k", "s", None)
            .unwrap()
            .request_timeout(Duration::from_secs(5));
        let client = S3Client::new(S3Location::parse("s3://bucket/p").unwrap(), settings).unwrap();
        let err = client.get("current").unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, Error::ObjectStoreRequest { status: None, .. }),
            "{text}"
        );
        assert!(
            text.contains("http://127.0.0.1:9/bucket/p/current"),
            "{text}"
        );
        assert!(text.contains("reachable"), "{text}");
    }
}
