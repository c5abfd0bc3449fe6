//! Placeholder: filled in by the metadata generator work.
