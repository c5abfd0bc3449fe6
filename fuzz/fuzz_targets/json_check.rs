//! The JSON check against serde_json on arbitrary bytes, fed in arbitrary
//! chunks: it never panics, and it accepts exactly what serde_json accepts
//! into a `Value`, except what only serde_json's recursion limit (128
//! levels) or its f64 range refuses, which the check accepts (it has no
//! nesting limit and checks number syntax only; docs/limitations.md). The
//! oracle is `Value`, as in the property tests, not `IgnoredAny`: serde_json
//! skips an ignored string without checking its UTF-8 (the first thing this
//! target found), where the check refuses invalid UTF-8 anywhere.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snapcache::JsonCheck;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size (1..=256), the rest is the document.
    let Some((&size, doc)) = data.split_first() else {
        return;
    };
    let size = usize::from(size) + 1;
    let mut check = JsonCheck::default();
    let mut verdict = Ok(());
    for chunk in doc.chunks(size) {
        verdict = check.feed(chunk);
        if verdict.is_err() {
            break;
        }
    }
    let ours = verdict.and_then(|()| check.finish());
    match serde_json::from_slice::<serde_json::Value>(doc) {
        Ok(_) => assert!(ours.is_ok(), "serde_json accepts, the check says {ours:?}"),
        Err(e)
            if e.to_string().contains("recursion limit")
                || e.to_string().contains("out of range") => {}
        Err(e) => assert!(ours.is_err(), "serde_json refuses ({e}), the check accepts"),
    }
});
