//! Where examples go: an exported Parquet dataset, or a preview on stdout.

pub mod export;
pub mod manifest;
mod parts;
pub mod preview;
pub mod progress;
pub mod run;
pub mod target;

/// Version of the export layout, part of every fingerprint: bump it when the bytes an export
/// writes for the same input change.
pub const FORMAT_VERSION: u32 = 1;
