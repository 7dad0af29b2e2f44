//! Where examples go: an exported Parquet dataset, or a preview on stdout.

pub mod export;
pub mod manifest;
pub mod preview;
pub mod progress;
