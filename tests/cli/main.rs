//! Integration tests: every test drives the built `snapcache` binary in
//! separate processes, as Kopi's users and scripts would.
//!
//! Unix only: they drive the binary through `sh`, signals, FIFOs, modes,
//! owners and mounts. On Windows this test binary is empty (the library's
//! unit tests still build there; docs/limitations.md).
#![cfg(unix)]
// Test helpers fail loudly by design: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backends;
mod bad_input;
mod boundary;
mod canonical;
mod clear;
mod clocks;
mod common;
mod concurrency;
mod conventions;
mod crash;
mod exec_output;
mod extremes;
mod faults;
mod features;
mod fence;
mod fuzz;
mod generations;
mod hints;
mod hostile;
mod install_and_docs;
mod locking;
mod multihost;
mod namespaces;
mod nonatomic;
mod object_store;
mod outcome_words;
mod permissions;
mod pins;
mod planted;
mod readers;
mod retention;
mod roundtrip;
mod show_stream;
mod trust;
