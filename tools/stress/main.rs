//! Placeholder for the stress tool (filled in next).
fn main() {}
