//! Integration tests: every test drives the built `snapcache` binary in
//! separate processes, as Kopi's users and scripts would.

mod bad_input;
mod common;
mod concurrency;
mod crash;
mod readers;
mod roundtrip;
