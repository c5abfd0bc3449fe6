//! One S3 request and its answer, owned, so that it can run on a thread of
//! its own.
//!
//! A blocking request cannot be interrupted from outside: a server that
//! accepts the connection and then says nothing holds the calling thread
//! until the client's timeout (60 s by default), whatever Ctrl-C or a cancel
//! flag says. With a cancel flag, [`send`] runs the request on a thread and
//! waits for its answer while looking at the flag: a set flag abandons the
//! request (the thread ends with the timeout, or with the process) and the
//! caller gets [`Failure::Cancelled`] at once. The answer's body is read on
//! that thread too, since a server can stall in the middle of one.
//!
//! Some requests must never be abandoned: a write whose outcome decides what
//! the store is (the pointer's compare-and-swap, the lease) may still land
//! after it was given up on, and the process would then report "nothing was
//! published" for a publish that happened. Their callers send them with
//! `cancel: None`.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use ureq::http::{HeaderMap, Method};

/// How often a caller waiting for an answer looks at its cancel flag: the
/// longest a cancelled request keeps its caller.
const CANCEL_POLL: Duration = Duration::from_millis(50);

/// Bytes of an error answer's body kept for the message.
const ERROR_BODY_BYTES: u64 = 2048;

/// A signed request, everything owned.
pub(super) struct Request {
    pub method: Method,
    /// The pre-signed URL (never shown: it carries a signature).
    pub url: String,
    /// Headers sent besides the signature's (the signed conditions).
    pub headers: Vec<(&'static str, String)>,
    /// The body of a put.
    pub body: Option<Vec<u8>>,
    /// At most this many bytes of a 2xx answer's body are read; the rest is
    /// left unread, so a caller that wants to see "too long" asks for one
    /// more than it accepts.
    pub body_limit: u64,
}

/// What the server answered.
pub(super) struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    /// Up to the request's `body_limit` bytes of a 2xx answer; up to
    /// [`ERROR_BODY_BYTES`] of any other (best effort: the status already
    /// says the request failed).
    pub body: Vec<u8>,
}

/// Why there is no answer.
#[derive(Debug)]
pub(super) enum Failure {
    /// No answer: the connection, the send or the receive failed, or timed
    /// out (ureq's words).
    Transport(String),
    /// A 2xx answer whose body could not be read.
    Body { status: u16, detail: String },
    /// The cancel flag was set before the answer came.
    Cancelled,
    /// The caller's time for it ran out before the answer came.
    Late,
}

/// How long a caller waits for an answer.
#[derive(Clone, Copy)]
pub(super) enum Wait<'a> {
    /// Until the answer or the request timeout, on the caller's thread.
    Answer,
    /// On a thread of its own, abandoned as soon as the flag is set (also
    /// when it is set already: then it is not sent).
    UntilCancelled(&'a Arc<AtomicBool>),
    /// On a thread of its own, abandoned as soon as the flag (if any) is
    /// set, as `UntilCancelled`, or at the instant given: a read inside a
    /// lock budget, or a last request on the way out (the lease's
    /// release), which must neither be skipped nor keep the process.
    CancelledOrBy(Option<&'a Arc<AtomicBool>>, std::time::Instant),
}

/// Sends `request` with `agent`, waiting as `wait` says.
pub(super) fn send(
    agent: &ureq::Agent,
    request: Request,
    wait: Wait<'_>,
) -> Result<Answer, Failure> {
    let (flag, limit) = match wait {
        Wait::Answer => return run(agent, request),
        Wait::UntilCancelled(flag) => (Some(flag), None),
        Wait::CancelledOrBy(flag, by) => (flag, Some(by)),
    };
    if flag.is_some_and(|f| f.load(Ordering::Relaxed)) {
        return Err(Failure::Cancelled);
    }
    let (tx, rx) = mpsc::channel();
    let agent = agent.clone();
    std::thread::Builder::new()
        .name("snapcache-s3-request".into())
        .spawn(move || {
            // The caller may have given up and gone: nobody to tell then.
            let _ = tx.send(run(&agent, request));
        })
        .map_err(|e| {
            Failure::Transport(format!("could not start a thread for the request: {e}"))
        })?;
    loop {
        match rx.recv_timeout(CANCEL_POLL) {
            Ok(result) => return result,
            Err(mpsc::RecvTimeoutError::Timeout)
                if flag.is_some_and(|f| f.load(Ordering::Relaxed)) =>
            {
                return Err(Failure::Cancelled);
            }
            Err(mpsc::RecvTimeoutError::Timeout)
                if limit.is_some_and(|l| std::time::Instant::now() >= l) =>
            {
                return Err(Failure::Late);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Failure::Transport(
                    "the request's thread ended without an answer".into(),
                ));
            }
        }
    }
}

fn run(agent: &ureq::Agent, request: Request) -> Result<Answer, Failure> {
    let mut builder = ureq::http::Request::builder()
        .method(request.method)
        .uri(request.url.as_str());
    for (name, value) in &request.headers {
        builder = builder.header(*name, value.as_str());
    }
    let sent = match request.body {
        Some(body) => builder.body(body).map(|r| agent.run(r)),
        None => builder.body(()).map(|r| agent.run(r)),
    };
    let mut response = sent
        .map_err(|e| Failure::Transport(format!("the request could not be built: {e}")))?
        .map_err(|e| Failure::Transport(e.to_string()))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut body = Vec::new();
    if (200..300).contains(&status) {
        response
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .reader()
            .take(request.body_limit)
            .read_to_end(&mut body)
            .map_err(|e| Failure::Body {
                status,
                detail: e.to_string(),
            })?;
    } else {
        // Best effort: the status already says the request failed.
        let _ = response
            .body_mut()
            .as_reader()
            .take(ERROR_BODY_BYTES)
            .read_to_end(&mut body);
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}
